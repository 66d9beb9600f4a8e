#include "recorder/qmp_client.h"

#include <spdlog/spdlog.h>
#include <sys/un.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/system/system_error.hpp>
#include <utility>

namespace blackbox {
namespace {

namespace asio = boost::asio;
using nlohmann::json;
using stream_protocol = asio::local::stream_protocol;

constexpr size_t kReadChunkBytes = 64 * 1024;
constexpr size_t kMaxRememberedTimeouts = 1024;
constexpr size_t kLogExcerptBytes = 200;

// A printable, bounded excerpt of untrusted input for log and error messages.
std::string Excerpt(std::string_view text) {
  std::string out;
  const size_t n = std::min(text.size(), kLogExcerptBytes);
  out.reserve(n + 32);
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    out.push_back(c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '?');
  }
  if (text.size() > n) out += "... (" + std::to_string(text.size()) + " bytes)";
  return out;
}

Status QmpErrorToStatus(const std::string& command, const std::string& error_class,
                        const std::string& desc) {
  std::string message = "QMP command '" + command + "' failed: " + error_class + ": " + desc;
  if (error_class == "DeviceNotActive" || error_class == "KVMMissingCap") {
    return FailedPrecondition(std::move(message));
  }
  return InvalidArgument(std::move(message));
}

std::string Millis(std::chrono::milliseconds ms) { return std::to_string(ms.count()) + " ms"; }

}  // namespace

std::shared_ptr<QmpClient> QmpClient::Create(asio::io_context& io, Options options) {
  return std::shared_ptr<QmpClient>(new QmpClient(io, options));
}

QmpClient::QmpClient(asio::io_context& io, Options options)
    : io_(io),
      options_(options),
      socket_(io),
      handshake_timer_(io),
      read_chunk_(new char[kReadChunkBytes]) {}

QmpClient::~QmpClient() = default;

void QmpClient::Post(std::function<void()> fn) { asio::post(io_, std::move(fn)); }

void QmpClient::Start(stream_protocol::socket connected_socket, ReadyCallback on_ready) {
  if (!on_ready) on_ready = [](Status) {};
  if (state_ != State::kNew) {
    Post([on_ready = std::move(on_ready)] {
      on_ready(FailedPrecondition("QmpClient::Start() called twice or after Close()"));
    });
    return;
  }
  if (!connected_socket.is_open()) {
    state_ = State::kClosed;
    Post([on_ready = std::move(on_ready)] {
      on_ready(InvalidArgument("QmpClient::Start(): socket is not open"));
    });
    return;
  }
  socket_ = std::move(connected_socket);
  on_ready_ = std::move(on_ready);
  state_ = State::kAwaitingGreeting;
  handshake_timer_.expires_after(options_.greeting_timeout);
  handshake_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec) return;  // cancelled: the handshake finished or the client closed
    if (self->state_ == State::kAwaitingGreeting) {
      self->Fail(
          DeadlineExceeded("no QMP greeting within " + Millis(self->options_.greeting_timeout)));
    } else if (self->state_ == State::kNegotiating) {
      self->Fail(DeadlineExceeded("QMP handshake (qmp_capabilities) did not complete within " +
                                  Millis(self->options_.greeting_timeout)));
    }
  });
  StartRead();
}

void QmpClient::Execute(std::string command, json arguments, ReplyCallback done,
                        std::optional<std::chrono::milliseconds> timeout) {
  Submit(std::move(command), std::move(arguments), std::move(done), timeout, false);
}

void QmpClient::ExecuteOutOfBand(std::string command, json arguments, ReplyCallback done,
                                 std::optional<std::chrono::milliseconds> timeout) {
  Submit(std::move(command), std::move(arguments), std::move(done), timeout, true);
}

void QmpClient::Submit(std::string command, json arguments, ReplyCallback done,
                       std::optional<std::chrono::milliseconds> timeout, bool out_of_band) {
  if (!done) done = [](StatusOr<json>) {};
  if (out_of_band && state_ == State::kReady && !oob_enabled_) {
    Post([done = std::move(done), command] {
      done(FailedPrecondition("cannot execute QMP command '" + command +
                              "' out of band: not negotiated (QEMU did not offer it, or the "
                              "client was not asked to)"));
    });
    return;
  }
  if (state_ != State::kReady) {
    const char* why = state_ == State::kClosed ? "the QMP connection is closed"
                                               : "the QMP handshake has not completed";
    Post([done = std::move(done), command, why] {
      done(FailedPrecondition("cannot execute QMP command '" + command + "': " + why));
    });
    return;
  }
  if (command.empty() || !(arguments.is_null() || arguments.is_object())) {
    Post([done = std::move(done), command] {
      done(InvalidArgument("QMP command '" + command +
                           "': the name must be non-empty and the arguments an object or null"));
    });
    return;
  }
  Send(std::move(command), arguments, std::move(done), timeout.value_or(options_.command_timeout),
       out_of_band);
}

void QmpClient::Send(std::string command, const json& arguments, ReplyCallback done,
                     std::optional<std::chrono::milliseconds> timeout, bool out_of_band) {
  const uint64_t id = next_id_++;
  std::string wire;
  try {
    json request = json::object();
    request[out_of_band ? "exec-oob" : "execute"] = command;
    if (!arguments.is_null()) request["arguments"] = arguments;
    request["id"] = id;
    // dump() escapes control characters, so the message is a single line.
    wire = request.dump();
  } catch (const json::exception& e) {
    Post([done = std::move(done), command, what = std::string(e.what())] {
      done(InvalidArgument("QMP command '" + command + "' cannot be serialized: " + what));
    });
    return;
  }
  wire.push_back('\n');

  PendingCall call;
  call.command = std::move(command);
  call.done = std::move(done);
  if (timeout) {
    call.timeout = *timeout;
    call.timer = std::make_unique<asio::steady_timer>(io_, *timeout);
    call.timer->async_wait([self = shared_from_this(), id](const boost::system::error_code& ec) {
      if (!ec) self->OnCommandTimeout(id);
    });
  }
  pending_.emplace(id, std::move(call));
  write_queue_.push_back(std::move(wire));
  if (!writing_) StartWrite();
}

void QmpClient::StartWrite() {
  writing_ = true;
  asio::async_write(
      socket_, asio::buffer(write_queue_.front()),
      [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
        if (self->state_ == State::kClosed) return;
        if (ec) {
          self->Fail(Unavailable("QMP connection closed: write failed: " + ec.message()));
          return;
        }
        self->write_queue_.pop_front();
        if (self->write_queue_.empty()) {
          self->writing_ = false;
        } else {
          self->StartWrite();
        }
      });
}

void QmpClient::StartRead() {
  socket_.async_read_some(asio::buffer(read_chunk_.get(), kReadChunkBytes),
                          [self = shared_from_this()](const boost::system::error_code& ec,
                                                      size_t bytes) { self->OnRead(ec, bytes); });
}

void QmpClient::OnRead(const boost::system::error_code& ec, size_t bytes) {
  if (state_ == State::kClosed) return;
  if (ec) {
    if (ec == asio::error::eof) {
      Fail(Unavailable("QMP connection closed by peer"));
    } else {
      Fail(Unavailable("QMP connection closed: read failed: " + ec.message()));
    }
    return;
  }
  read_buffer_.append(read_chunk_.get(), bytes);
  size_t line_start = 0;
  while (state_ != State::kClosed) {
    const size_t newline = read_buffer_.find('\n', scan_from_);
    if (newline == std::string::npos) break;
    const size_t length = newline - line_start;
    if (length > options_.max_message_bytes) {
      Fail(ResourceExhausted("QMP message of " + std::to_string(length) + " bytes exceeds the " +
                             std::to_string(options_.max_message_bytes) + "-byte limit"));
      return;
    }
    // Nothing touches read_buffer_ while the line is handled (callbacks run
    // inside HandleLine but cannot reach the buffer), so the view stays valid.
    HandleLine(std::string_view(read_buffer_).substr(line_start, length));
    line_start = newline + 1;
    scan_from_ = line_start;
  }
  if (state_ == State::kClosed) return;
  read_buffer_.erase(0, line_start);
  scan_from_ = read_buffer_.size();
  if (read_buffer_.size() > options_.max_message_bytes) {
    Fail(ResourceExhausted("QMP message exceeds the " + std::to_string(options_.max_message_bytes) +
                           "-byte limit (no newline after " + std::to_string(read_buffer_.size()) +
                           " bytes)"));
    return;
  }
  StartRead();
}

void QmpClient::HandleLine(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty()) return;

  json message;
  try {
    message = json::parse(line.begin(), line.end(), /*cb=*/nullptr, /*allow_exceptions=*/false);
  } catch (const json::exception&) {
    message = json::value_t::discarded;
  }
  if (message.is_discarded()) {
    Fail(InvalidArgument("malformed JSON from QMP peer: " + Excerpt(line)));
    return;
  }
  if (!message.is_object()) {
    Fail(InvalidArgument("QMP message is not a JSON object: " + Excerpt(line)));
    return;
  }
  // Events are accepted even before the greeting: QEMU 7.2 can emit one (e.g.
  // RESUME) ahead of it when a client connects to a server=on,wait=off
  // monitor while QEMU is still starting.
  if (auto it = message.find("event"); it != message.end()) {
    if (!it->is_string()) {
      Fail(InvalidArgument("QMP event name is not a string: " + Excerpt(line)));
      return;
    }
    spdlog::debug("qmp: event {}{}", it->get_ref<const std::string&>(),
                  state_ == State::kAwaitingGreeting ? " (before the greeting)" : "");
    // A copy, so that the handler may replace itself or Close() the client.
    EventHandler handler = event_handler_;
    if (handler) handler(message);
    return;
  }
  if (state_ == State::kAwaitingGreeting) {
    HandleGreeting(message, line);
    return;
  }
  if (message.contains("return") || message.contains("error")) {
    HandleReply(message, line);
    return;
  }
  Fail(InvalidArgument("QMP message is neither a reply nor an event: " + Excerpt(line)));
}

void QmpClient::HandleGreeting(const json& message, std::string_view line) {
  auto it = message.find("QMP");
  if (it == message.end() || !it->is_object()) {
    Fail(InvalidArgument("expected a QMP greeting {\"QMP\": {...}}, got: " + Excerpt(line)));
    return;
  }
  spdlog::debug("qmp: greeting {}", Excerpt(line));
  state_ = State::kNegotiating;
  json capabilities = nullptr;
  if (options_.out_of_band) {
    const json offered = (*it).value("capabilities", json::array());
    if (offered.is_array() && std::find(offered.begin(), offered.end(), "oob") != offered.end()) {
      capabilities = {{"enable", json::array({"oob"})}};
      oob_enabled_ = true;
    }
  }
  // No per-call timer: the handshake timer also covers this reply.
  Send(
      "qmp_capabilities", capabilities,
      [self = shared_from_this()](StatusOr<json> reply) {
        self->OnCapabilitiesReply(std::move(reply));
      },
      std::nullopt);
}

void QmpClient::OnCapabilitiesReply(StatusOr<json> reply) {
  if (state_ != State::kNegotiating) return;  // the connection already ended
  if (!reply.ok()) {
    Fail(reply.status());
    return;
  }
  state_ = State::kReady;
  handshake_timer_.cancel();
  ReadyCallback on_ready = std::move(on_ready_);
  on_ready_ = nullptr;
  on_ready(Status::Ok());
}

void QmpClient::HandleReply(json& message, std::string_view line) {
  auto return_it = message.find("return");
  auto error_it = message.find("error");
  std::string error_class;
  std::string error_desc;
  if (return_it != message.end() && error_it != message.end()) {
    Fail(InvalidArgument("QMP reply has both \"return\" and \"error\": " + Excerpt(line)));
    return;
  }
  if (error_it != message.end()) {
    auto class_it = error_it->is_object() ? error_it->find("class") : error_it->end();
    auto desc_it = error_it->is_object() ? error_it->find("desc") : error_it->end();
    if (!error_it->is_object() || class_it == error_it->end() || !class_it->is_string() ||
        desc_it == error_it->end() || !desc_it->is_string()) {
      Fail(InvalidArgument("malformed QMP error reply: " + Excerpt(line)));
      return;
    }
    error_class = class_it->get<std::string>();
    error_desc = desc_it->get<std::string>();
  }

  auto id_it = message.find("id");
  if (id_it == message.end() || !id_it->is_number_unsigned()) {
    // QEMU omits the id when it cannot parse a request at all.
    spdlog::warn("qmp: ignoring reply without a known id: {}", Excerpt(line));
    return;
  }
  const uint64_t id = id_it->get<uint64_t>();
  auto node = pending_.extract(id);
  if (node.empty()) {
    if (timed_out_.erase(id) > 0) {
      spdlog::debug("qmp: dropping late reply to timed-out call {}", id);
    } else {
      spdlog::warn("qmp: ignoring reply with unknown id: {}", Excerpt(line));
    }
    return;
  }
  PendingCall call = std::move(node.mapped());
  if (call.timer) call.timer->cancel();
  if (error_it != message.end()) {
    call.done(QmpErrorToStatus(call.command, error_class, error_desc));
  } else {
    call.done(std::move(*return_it));
  }
}

void QmpClient::OnCommandTimeout(uint64_t id) {
  auto node = pending_.extract(id);
  if (node.empty()) return;  // answered or failed while the expiry was queued
  timed_out_.insert(id);
  timed_out_order_.push_back(id);
  if (timed_out_order_.size() > kMaxRememberedTimeouts) {
    timed_out_.erase(timed_out_order_.front());
    timed_out_order_.pop_front();
  }
  PendingCall call = std::move(node.mapped());
  spdlog::debug("qmp: call {} ('{}') timed out", id, call.command);
  call.done(DeadlineExceeded("QMP command '" + call.command + "' got no reply within " +
                             Millis(call.timeout)));
}

void QmpClient::Fail(Status reason) {
  if (state_ == State::kClosed) return;
  const bool was_ready = state_ == State::kReady;
  state_ = State::kClosed;
  if (was_ready) {
    spdlog::debug("qmp: connection ended: {}", reason.ToString());
  } else {
    spdlog::warn("qmp: handshake failed: {}", reason.ToString());
  }
  CloseSocket();
  handshake_timer_.cancel();

  std::map<uint64_t, PendingCall> pending = std::move(pending_);
  pending_.clear();
  ReadyCallback on_ready = std::move(on_ready_);
  on_ready_ = nullptr;
  DisconnectHandler on_disconnect = std::move(disconnect_handler_);
  disconnect_handler_ = nullptr;
  event_handler_ = nullptr;

  const Status call_status = reason.code() == StatusCode::kUnavailable
                                 ? reason
                                 : Unavailable("QMP connection closed: " + reason.ToString());
  for (auto& [id, call] : pending) {
    if (call.timer) call.timer->cancel();
    call.done(call_status);
  }
  if (!was_ready) {
    if (on_ready) on_ready(reason);
  } else if (on_disconnect) {
    on_disconnect(reason);
  }
}

void QmpClient::Close() {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  CloseSocket();
  handshake_timer_.cancel();
  std::map<uint64_t, PendingCall> pending = std::move(pending_);
  pending_.clear();
  for (auto& [id, call] : pending) {
    if (call.timer) call.timer->cancel();
    Post([done = std::move(call.done)] { done(Cancelled("QMP client closed")); });
  }
  if (on_ready_) {
    Post([on_ready = std::move(on_ready_)] { on_ready(Cancelled("QMP client closed")); });
    on_ready_ = nullptr;
  }
  event_handler_ = nullptr;
  disconnect_handler_ = nullptr;
}

void QmpClient::SetEventHandler(EventHandler handler) {
  if (state_ == State::kClosed) return;  // would never run; avoid keeping captures alive
  event_handler_ = std::move(handler);
}

void QmpClient::SetDisconnectHandler(DisconnectHandler handler) {
  if (state_ == State::kClosed) return;
  disconnect_handler_ = std::move(handler);
}

void QmpClient::CloseSocket() {
  boost::system::error_code ignored;
  // shutdown() first: the peer sees EOF even if the descriptor was duplicated.
  socket_.shutdown(stream_protocol::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

// ---------------------------------------------------------------------------
// QmpSyncClient

QmpSyncClient::QmpSyncClient(std::unique_ptr<asio::io_context> io,
                             std::shared_ptr<QmpClient> client)
    : io_(std::move(io)), client_(std::move(client)) {}

QmpSyncClient::QmpSyncClient(QmpSyncClient&& other) noexcept = default;

QmpSyncClient& QmpSyncClient::operator=(QmpSyncClient&& other) noexcept {
  if (this != &other) {
    Reset();
    io_ = std::move(other.io_);
    client_ = std::move(other.client_);
  }
  return *this;
}

QmpSyncClient::~QmpSyncClient() { Reset(); }

void QmpSyncClient::Reset() {
  if (client_) client_->Close();
  if (io_) {
    io_->restart();
    while (io_->poll() > 0) {
    }
  }
  client_.reset();
  io_.reset();
}

StatusOr<QmpSyncClient> QmpSyncClient::Connect(const std::string& unix_path,
                                               std::chrono::milliseconds timeout,
                                               QmpClientOptions options) {
  if (unix_path.empty() || unix_path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return InvalidArgument("bad unix socket path for QMP: '" + unix_path + "'");
  }
  stream_protocol::endpoint endpoint;
  try {
    endpoint = stream_protocol::endpoint(unix_path);
  } catch (const boost::system::system_error& e) {
    return InvalidArgument("bad unix socket path for QMP: '" + unix_path + "': " + e.what());
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto io = std::make_unique<asio::io_context>();
  std::shared_ptr<QmpClient> client;

  // Every I/O object of the connect phase lives in this lambda, so that it is
  // destroyed before `io` (which `sync` below may destroy on an error path).
  const Status status = [&]() -> Status {
    stream_protocol::socket socket(*io);
    boost::system::error_code connect_error;
    bool timed_out = false;
    {
      asio::steady_timer timer(*io, deadline);
      socket.async_connect(endpoint, [&](const boost::system::error_code& ec) {
        connect_error = ec;
        timer.cancel();
      });
      timer.async_wait([&](const boost::system::error_code& ec) {
        if (ec) return;
        timed_out = true;
        boost::system::error_code ignored;
        socket.close(ignored);
      });
      io->run();  // until both handlers have run
    }
    if (timed_out) {
      return DeadlineExceeded("connecting to QMP socket " + unix_path + " timed out");
    }
    if (connect_error) {
      return Unavailable("cannot connect to QMP socket " + unix_path + ": " +
                         connect_error.message());
    }

    options.greeting_timeout = std::max(std::chrono::milliseconds(0),
                                        std::chrono::duration_cast<std::chrono::milliseconds>(
                                            deadline - std::chrono::steady_clock::now()));
    client = QmpClient::Create(*io, options);
    auto ready = std::make_shared<std::optional<Status>>();
    client->Start(std::move(socket), [ready](Status s) { *ready = std::move(s); });
    io->restart();
    while (!ready->has_value() && io->run_one() > 0) {
    }
    if (!ready->has_value()) return Internal("QMP handshake stopped without a result");
    return ready->value().WithContext("QMP socket " + unix_path);
  }();

  QmpSyncClient sync(std::move(io), std::move(client));  // cleans up on the error path
  if (!status.ok()) return status;
  return sync;
}

StatusOr<nlohmann::json> QmpSyncClient::Execute(const std::string& cmd, nlohmann::json args,
                                                std::chrono::milliseconds timeout) {
  return Run(cmd, std::move(args), timeout, false);
}

StatusOr<nlohmann::json> QmpSyncClient::ExecuteOutOfBand(const std::string& cmd,
                                                         nlohmann::json args,
                                                         std::chrono::milliseconds timeout) {
  return Run(cmd, std::move(args), timeout, true);
}

StatusOr<nlohmann::json> QmpSyncClient::Run(const std::string& cmd, nlohmann::json args,
                                            std::chrono::milliseconds timeout, bool out_of_band) {
  if (!client_) return FailedPrecondition("QmpSyncClient has been moved from");
  auto result = std::make_shared<std::optional<StatusOr<json>>>();
  auto done = [result](StatusOr<json> reply) { result->emplace(std::move(reply)); };
  if (out_of_band) {
    client_->ExecuteOutOfBand(cmd, std::move(args), done, timeout);
  } else {
    client_->Execute(cmd, std::move(args), done, timeout);
  }
  io_->restart();
  while (!result->has_value() && io_->run_one() > 0) {
  }
  if (!result->has_value()) return Internal("QMP call '" + cmd + "' stopped without a result");
  return std::move(**result);
}

}  // namespace blackbox
