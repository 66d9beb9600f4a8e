// One running QEMU process as Blackbox drives it: Blackbox listens on a QMP
// socket in a private run directory, starts QEMU (which connects during
// start-up), tails the file QEMU writes the serial console to (a file, not a
// socket: see QemuRunPaths::serial_file), speaks QMP, and notices when QEMU
// exits.
//
// Used by the recorder and by replay. Thread safety: everything runs on the
// io_context given at construction; call methods from that thread only.
#pragma once

#include <boost/asio.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/files.h"
#include "common/process.h"
#include "common/status.h"
#include "recorder/qmp_client.h"

namespace blackbox {

class QemuInstance {
 public:
  struct Callbacks {
    std::function<void(std::string_view)> on_serial;      // console bytes, in order
    std::function<void()> on_qmp_ready;                   // handshake done
    std::function<void(const nlohmann::json&)> on_event;  // QMP events
    std::function<void(int wait_status)> on_exit;         // after the console drained
    std::function<void(Status)> on_error;                 // start-up failures
    // Read the console file every 20 ms. False when the owner calls
    // ReadSerial() on its own schedule (the recorder does, to order console
    // and log reads), so the file is not read twice as often.
    bool poll_serial = true;
  };

  QemuInstance(boost::asio::io_context& io, Callbacks callbacks);
  ~QemuInstance();

  // Creates the run directory, the QMP listening socket and the (empty)
  // console file.
  Status Prepare();
  const std::string& qmp_socket() const { return qmp_path_; }
  const std::string& serial_file() const { return serial_path_; }

  // Starts QEMU with `argv`; its stdout/stderr go to `output_path`.
  // QEMU must connect to qmp_socket() within
  // `connect_timeout` or on_error gets DeadlineExceeded.
  // `inherit_fds` are passed on to QEMU (ChildProcess::Spawn).
  Status Start(const std::vector<std::string>& argv, const std::string& output_path,
               std::chrono::seconds connect_timeout = std::chrono::seconds(60),
               const std::vector<int>& inherit_fds = {});

  bool qmp_ready() const { return qmp_ready_; }
  bool exited() const { return exited_; }
  pid_t pid() const { return child_ ? child_->pid() : -1; }
  // Null until the QMP handshake is done.
  QmpClient* qmp() { return qmp_ready_ ? qmp_.get() : nullptr; }

  // Asks QEMU to quit over QMP (or SIGTERM before QMP is up) and kills it if
  // it has not exited after `grace`.
  void Quit(std::chrono::seconds grace = std::chrono::seconds(15));
  // Delivers to on_serial whatever QEMU appended to the console file since
  // the last call. Also runs every 20 ms by itself when Callbacks::poll_serial.
  void ReadSerial();
  void Kill();

 private:
  void ArmSerialTimer();
  void OnChildExit(int status);
  void ArmSignals();

  boost::asio::io_context& io_;
  Callbacks cb_;
  std::optional<TempDir> run_dir_;
  std::string qmp_path_, serial_path_;
  std::unique_ptr<boost::asio::local::stream_protocol::acceptor> qmp_acceptor_;
  UniqueFd serial_fd_;
  uint64_t serial_pos_ = 0;
  std::shared_ptr<QmpClient> qmp_;
  boost::asio::signal_set sigchld_;
  boost::asio::steady_timer connect_timer_, kill_timer_, serial_timer_;
  std::optional<ChildProcess> child_;
  std::array<char, 65536> buf_{};
  bool qmp_ready_ = false;
  bool exited_ = false;
  bool quitting_ = false;
  int wait_status_ = 0;
};

}  // namespace blackbox
