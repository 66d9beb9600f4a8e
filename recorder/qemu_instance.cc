#include "recorder/qemu_instance.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>

namespace blackbox {

namespace asio = boost::asio;
using Endpoint = asio::local::stream_protocol::endpoint;
using Acceptor = asio::local::stream_protocol::acceptor;
using Socket = asio::local::stream_protocol::socket;

QemuInstance::QemuInstance(asio::io_context& io, Callbacks callbacks)
    : io_(io),
      cb_(std::move(callbacks)),
      sigchld_(io, SIGCHLD),
      connect_timer_(io),
      kill_timer_(io),
      serial_timer_(io) {}

QemuInstance::~QemuInstance() {
  if (child_ && child_->running()) child_->Kill();
}

Status QemuInstance::Prepare() {
  ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("bb-qemu"));
  run_dir_.emplace(std::move(dir));
  qmp_path_ = run_dir_->path() + "/qmp.sock";
  serial_path_ = run_dir_->path() + "/serial.out";
  boost::system::error_code ec;
  qmp_acceptor_ = std::make_unique<Acceptor>(io_);
  qmp_acceptor_->open(asio::local::stream_protocol(), ec);
  if (!ec) qmp_acceptor_->bind(Endpoint(qmp_path_), ec);
  if (!ec) qmp_acceptor_->listen(1, ec);
  if (ec) return IOError("cannot listen on " + qmp_path_ + ": " + ec.message());
  // Created here so the tail can open it before QEMU starts writing.
  serial_fd_ = UniqueFd(::open(serial_path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!serial_fd_.valid()) return ErrnoError("cannot create " + serial_path_, errno);
  return Status::Ok();
}

void QemuInstance::ArmSignals() {
  sigchld_.async_wait([this](const boost::system::error_code& ec, int) {
    if (ec || exited_) return;
    if (auto st = child_->Poll()) {
      OnChildExit(*st);
      return;
    }
    ArmSignals();
  });
}

Status QemuInstance::Start(const std::vector<std::string>& argv, const std::string& output_path,
                           std::chrono::seconds connect_timeout,
                           const std::vector<int>& inherit_fds) {
  ArmSignals();
  ASSIGN_OR_RETURN(ChildProcess child, ChildProcess::Spawn(argv, output_path, inherit_fds));
  child_.emplace(std::move(child));

  if (cb_.poll_serial) ArmSerialTimer();
  auto qmp_socket = std::make_shared<Socket>(io_);
  qmp_acceptor_->async_accept(*qmp_socket, [this, qmp_socket](const boost::system::error_code& ec) {
    if (ec) return;
    qmp_acceptor_->close();
    qmp_ = QmpClient::Create(io_);
    qmp_->SetEventHandler([this](const nlohmann::json& ev) {
      if (cb_.on_event) cb_.on_event(ev);
    });
    qmp_->SetDisconnectHandler([](Status) {});
    qmp_->Start(std::move(*qmp_socket), [this](Status s) {
      if (!s.ok()) {
        if (cb_.on_error) cb_.on_error(s.WithContext("QMP handshake with QEMU"));
        return;
      }
      qmp_ready_ = true;
      connect_timer_.cancel();
      if (quitting_) Quit();
      if (cb_.on_qmp_ready) cb_.on_qmp_ready();
    });
  });
  connect_timer_.expires_after(connect_timeout);
  connect_timer_.async_wait([this, connect_timeout](const boost::system::error_code& ec) {
    if (ec || qmp_ready_ || exited_) return;
    if (cb_.on_error) {
      cb_.on_error(DeadlineExceeded("QEMU did not connect its QMP socket within " +
                                    std::to_string(connect_timeout.count()) + " s"));
    }
  });
  // The child may already have exited before SIGCHLD was being waited for.
  if (auto st = child_->Poll()) OnChildExit(*st);
  return Status::Ok();
}

void QemuInstance::ReadSerial() {
  while (serial_fd_.valid()) {
    ssize_t n =
        ::pread(serial_fd_.get(), buf_.data(), buf_.size(), static_cast<off_t>(serial_pos_));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    serial_pos_ += static_cast<uint64_t>(n);
    if (cb_.on_serial) cb_.on_serial(std::string_view(buf_.data(), static_cast<size_t>(n)));
  }
}

void QemuInstance::ArmSerialTimer() {
  // A console line reaches the store within this poll interval.
  serial_timer_.expires_after(std::chrono::milliseconds(20));
  serial_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || exited_) return;
    ReadSerial();
    ArmSerialTimer();
  });
}

void QemuInstance::OnChildExit(int status) {
  if (exited_) return;
  exited_ = true;
  wait_status_ = status;
  connect_timer_.cancel();
  kill_timer_.cancel();
  serial_timer_.cancel();
  sigchld_.cancel();
  qmp_acceptor_->close();
  if (qmp_) qmp_->Close();
  // QEMU is gone, so the console file is final: read its last bytes.
  ReadSerial();
  if (cb_.on_exit) cb_.on_exit(wait_status_);
}

void QemuInstance::Quit(std::chrono::seconds grace) {
  if (exited_ || !child_) return;
  quitting_ = true;
  kill_timer_.expires_after(grace);
  kill_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || exited_) return;
    spdlog::warn("QEMU (pid {}) did not exit after quit; killing it", child_->pid());
    child_->Signal(SIGKILL);
  });
  if (qmp_ready_) {
    qmp_->Execute(
        "quit", nullptr, [](StatusOr<nlohmann::json>) {}, std::chrono::seconds(10));
  } else if (!qmp_) {
    child_->Signal(SIGTERM);
  }
}

void QemuInstance::Kill() {
  if (child_ && !exited_) child_->Signal(SIGKILL);
}

}  // namespace blackbox
