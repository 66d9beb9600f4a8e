#include "recorder/qemu_instance.h"

#include <signal.h>

#include <spdlog/spdlog.h>

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
      drain_timer_(io) {}

QemuInstance::~QemuInstance() {
  if (child_ && child_->running()) child_->Kill();
}

Status QemuInstance::Prepare() {
  ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("bb-qemu"));
  run_dir_.emplace(std::move(dir));
  qmp_path_ = run_dir_->path() + "/qmp.sock";
  serial_path_ = run_dir_->path() + "/serial.sock";
  boost::system::error_code ec;
  qmp_acceptor_ = std::make_unique<Acceptor>(io_);
  serial_acceptor_ = std::make_unique<Acceptor>(io_);
  for (auto [acceptor, path] : {std::pair{qmp_acceptor_.get(), &qmp_path_},
                                std::pair{serial_acceptor_.get(), &serial_path_}}) {
    acceptor->open(asio::local::stream_protocol(), ec);
    if (!ec) acceptor->bind(Endpoint(*path), ec);
    if (!ec) acceptor->listen(1, ec);
    if (ec) return IOError("cannot listen on " + *path + ": " + ec.message());
  }
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
                           std::chrono::seconds connect_timeout) {
  ArmSignals();
  ASSIGN_OR_RETURN(ChildProcess child, ChildProcess::Spawn(argv, output_path));
  child_.emplace(std::move(child));

  serial_ = std::make_unique<Socket>(io_);
  serial_acceptor_->async_accept(*serial_, [this](const boost::system::error_code& ec) {
    if (ec) return;
    serial_acceptor_->close();
    ReadSerial();
  });
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
  serial_->async_read_some(asio::buffer(buf_), [this](const boost::system::error_code& ec, size_t n) {
    if (n > 0 && cb_.on_serial) cb_.on_serial(std::string_view(buf_.data(), n));
    if (ec) {
      serial_eof_ = true;
      if (exited_) OnChildExit(wait_status_);
      return;
    }
    ReadSerial();
  });
}

void QemuInstance::OnChildExit(int status) {
  if (exit_reported_) return;
  if (!exited_) {
    exited_ = true;
    wait_status_ = status;
    connect_timer_.cancel();
    kill_timer_.cancel();
    qmp_acceptor_->close();
    serial_acceptor_->close();
    if (qmp_) qmp_->Close();
    // The console socket reaches EOF now that QEMU is gone; let the last
    // bytes arrive before reporting the exit (bounded in case a descendant
    // still holds the socket).
    bool serial_open = serial_ && serial_->is_open() && !serial_eof_;
    if (serial_open) {
      drain_timer_.expires_after(std::chrono::seconds(2));
      drain_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (ec) return;
        serial_eof_ = true;
        OnChildExit(wait_status_);
      });
      return;
    }
  }
  if (!serial_eof_ && serial_ && serial_->is_open()) return;
  exit_reported_ = true;
  drain_timer_.cancel();
  sigchld_.cancel();
  if (serial_) serial_->close();
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
    qmp_->Execute("quit", nullptr, [](StatusOr<nlohmann::json>) {}, std::chrono::seconds(10));
  } else if (!qmp_) {
    child_->Signal(SIGTERM);
  }
}

void QemuInstance::Kill() {
  if (child_ && !exited_) child_->Signal(SIGKILL);
}

}  // namespace blackbox
