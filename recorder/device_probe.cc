#include "recorder/device_probe.h"

#include <boost/asio.hpp>
#include <optional>

#include "common/files.h"
#include "manifest/attestation.h"
#include "recorder/qemu_instance.h"

namespace blackbox {

StatusOr<std::vector<std::string>> ProbeDevices(const VmSpec& spec, const QemuRunPaths& given,
                                                const std::string& qemu_binary) {
  boost::asio::io_context io;
  std::optional<StatusOr<std::vector<std::string>>> result;
  std::unique_ptr<QemuInstance> qemu;
  QemuInstance::Callbacks cb;
  cb.on_qmp_ready = [&] {
    qemu->qmp()->Execute("query-pci", nullptr, [&](StatusOr<nlohmann::json> r) {
      if (r.ok()) {
        result = DescribeDevices(*r);
      } else {
        result = r.status().WithContext("query-pci");
      }
      qemu->Quit(std::chrono::seconds(5));
    });
  };
  cb.on_exit = [&](int) { io.stop(); };
  cb.on_error = [&](Status s) {
    if (!result) result = s;
    qemu->Kill();
    io.stop();
  };
  qemu = std::make_unique<QemuInstance>(io, std::move(cb));
  RETURN_IF_ERROR(qemu->Prepare());
  ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("bb-probe"));
  QemuRunPaths paths = given;
  paths.qmp_socket = qemu->qmp_socket();
  paths.serial_file = qemu->serial_file();
  paths.start_paused = true;
  paths.gdb_port = 0;
  paths.state_image.clear();
  paths.nic_sockets.assign(spec.nics.size(), dir.path() + "/nobody.sock");
  paths.nic_listen.clear();
  const std::vector<std::string> argv = BuildQemuArgs(spec, RrMode::kNone, paths, qemu_binary);
  const std::string out = dir.path() + "/qemu.out";
  RETURN_IF_ERROR(qemu->Start(argv, out));
  boost::asio::steady_timer deadline(io, std::chrono::seconds(60));
  deadline.async_wait([&](const boost::system::error_code& ec) {
    if (ec) return;
    if (!result)
      result = DeadlineExceeded("QEMU did not answer within 60 s: " + TailOfFile(out, 3));
    qemu->Kill();
    io.stop();
  });
  io.run();
  if (!qemu->exited()) qemu->Kill();
  if (!result) return Internal("device probe ended without an answer: " + TailOfFile(out, 3));
  return std::move(*result);
}

}  // namespace blackbox
