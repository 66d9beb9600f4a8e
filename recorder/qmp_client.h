// QmpClient: an asynchronous client for the QEMU Machine Protocol (QMP).
//
// QMP (QEMU docs/interop/qmp-spec.rst) is newline-delimited JSON over a
// stream socket. The client is a strict state machine:
//
//   kNew --Start()--> kAwaitingGreeting --{"QMP":{...}}--> kNegotiating
//       --qmp_capabilities returns--> kReady --EOF/error/Close()--> kClosed
//
// In kReady, Execute() sends {"execute": C, "arguments": A, "id": N} with a
// unique N and completes its callback with the reply carrying the same id.
// Asynchronous events ({"event": ...}) go to the event handler only; QEMU
// rate-limits some events, so the event stream is not a complete log. Events
// are accepted in every state, including before the greeting: QEMU 7.2 can
// send one first when a client connects to a listening (server=on,wait=off)
// monitor during start-up. The same start-up race once left a test without
// any greeting (it ends in the greeting timeout). A QEMU that connects to
// Blackbox (server=off), or that waits for its client (server=on,wait=on),
// sets up the connection before the monitor starts and does not race.
//
// Framing: one JSON object per line. QEMU ends lines with "\r\n"; a trailing
// '\r' is ignored, and so are empty lines. QMP's "pretty" mode (multi-line
// JSON) is not supported.
//
// Failure handling (QEMU input is untrusted: a buggy or compromised QEMU must
// not crash Blackbox):
//   - a line longer than Options::max_message_bytes closes the connection
//     with ResourceExhausted;
//   - malformed JSON, a message that is not a JSON object, a first non-event
//     message that is not the greeting {"QMP": {...}}, or a message that is
//     neither a reply ("return" / "error") nor an event closes the connection
//     with InvalidArgument;
//   - a reply whose id is unknown (including replies to calls that already
//     timed out, and error replies without an id) is logged and ignored.
//
// QMP error replies {"error": {"class": C, "desc": D}} become a Status whose
// message is "QMP command 'X' failed: C: D". The code is FailedPrecondition
// for classes that describe the VM's state (DeviceNotActive, KVMMissingCap)
// and InvalidArgument for everything else (GenericError, CommandNotFound,
// DeviceNotFound, and unknown classes): QEMU refused the request as given.
//
// Thread safety: none. A QmpClient lives on one io_context: every method must
// be called from the thread running that io_context (or before it runs), and
// every callback is invoked from that io_context. Callbacks are never invoked
// re-entrantly from inside a QmpClient method; errors detected inside a method
// are delivered via boost::asio::post. Callbacks may call back into the client
// (including Close()) and must not throw.
//
// Lifetime: asynchronous operations hold a shared_ptr to the client, so it
// stays alive until the connection is closed and its handlers have run. The
// client drops its event and disconnect handlers when the connection ends, so
// handlers that capture the client's shared_ptr do not leak it.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "common/status.h"

namespace blackbox {

// Options for QmpClient (also spelled QmpClient::Options).
struct QmpClientOptions {
  // Longest accepted message (one line, excluding its '\n'). A longer line
  // closes the connection with ResourceExhausted before it is parsed, so a
  // misbehaving QEMU cannot make the client buffer without bound. QEMU 7.2's
  // largest ordinary reply (query-qmp-schema) is about 200 KiB.
  // Default: 1 MiB
  size_t max_message_bytes = 1 << 20;

  // Time allowed from Start() until the handshake is complete: the greeting
  // has arrived and qmp_capabilities has been acknowledged. On expiry
  // on_ready receives DeadlineExceeded and the connection is closed.
  // Default: 10 s
  std::chrono::milliseconds greeting_timeout{std::chrono::seconds(10)};

  // Time allowed for a reply when Execute() is called without a timeout.
  // On expiry the call fails with DeadlineExceeded; the connection stays
  // open and a late reply is dropped.
  // Default: 10 s
  std::chrono::milliseconds command_timeout{std::chrono::seconds(10)};

  // Ask for out-of-band execution (qmp_capabilities {"enable": ["oob"]})
  // when QEMU's greeting offers it, so that ExecuteOutOfBand() works. A
  // command sent out of band runs in QEMU's monitor thread at once, even
  // while the main loop is blocked (e.g. a followed replay that waits for
  // its log with the BQL held); only commands QEMU marks allow-oob can.
  // Default: false (QEMU's default behaviour).
  bool out_of_band = false;
};

class QmpClient : public std::enable_shared_from_this<QmpClient> {
 public:
  // Defined outside the class so that `Options options = {}` can be a default
  // argument (a nested struct's member initializers are not usable there).
  using Options = QmpClientOptions;

  using ReadyCallback = std::function<void(Status)>;
  using ReplyCallback = std::function<void(StatusOr<nlohmann::json>)>;
  using EventHandler = std::function<void(const nlohmann::json&)>;
  using DisconnectHandler = std::function<void(Status)>;

  // Creates an idle client whose timers and callbacks run on `io`.
  static std::shared_ptr<QmpClient> Create(boost::asio::io_context& io, Options options = {});

  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;
  ~QmpClient();

  // Takes ownership of an already-connected socket (on the same io_context)
  // and runs the handshake: reads the greeting, sends qmp_capabilities and
  // waits for its reply. Then calls on_ready(OK) exactly once; from then on
  // the end of the connection is reported to the disconnect handler.
  //
  // If the handshake fails, on_ready receives the reason (DeadlineExceeded on
  // timeout, InvalidArgument for a bad greeting or malformed JSON,
  // ResourceExhausted for an oversize line, Unavailable if the peer closes,
  // the mapped QMP error if qmp_capabilities is refused, Cancelled if Close()
  // is called), the connection is closed and the disconnect handler is not
  // called. Calling Start() twice, or after Close(), posts
  // on_ready(FailedPrecondition).
  void Start(boost::asio::local::stream_protocol::socket connected_socket, ReadyCallback on_ready);

  // Sends a command and calls `done` exactly once with the reply's "return"
  // value or an error:
  //   - the mapped QMP error (see the file comment) if QEMU replies "error";
  //   - DeadlineExceeded if no reply arrives within `timeout` (default:
  //     Options::command_timeout);
  //   - Unavailable ("QMP connection closed: ...") if the connection ends
  //     first; Cancelled if Close() is called first;
  //   - FailedPrecondition if the client is not ready (before the handshake
  //     completes or after the connection ended);
  //   - InvalidArgument if `command` is empty or `arguments` is neither an
  //     object nor null, or cannot be serialized (invalid UTF-8).
  // Errors detected here are posted, never delivered from inside Execute().
  // Commands are written in call order, one write in flight at a time.
  void Execute(std::string command, nlohmann::json arguments, ReplyCallback done,
               std::optional<std::chrono::milliseconds> timeout = {});
  // The same, sent as {"exec-oob": ...}. FailedPrecondition (posted) when
  // out-of-band execution was not negotiated (Options::out_of_band, and
  // QEMU offered it).
  void ExecuteOutOfBand(std::string command, nlohmann::json arguments, ReplyCallback done,
                        std::optional<std::chrono::milliseconds> timeout = {});

  // Receives each event message (the whole object: "event", "data",
  // "timestamp"). Events without a handler are dropped.
  void SetEventHandler(EventHandler handler);

  // Called at most once, after the handshake succeeded, when the connection
  // ends for any reason other than Close(): Unavailable on EOF or a socket
  // error, ResourceExhausted on an oversize line, InvalidArgument on a
  // protocol violation. Pending calls have already failed when it runs.
  void SetDisconnectHandler(DisconnectHandler handler);

  // Closes the socket. Pending calls (and on_ready, if the handshake is still
  // running) receive Cancelled via post; the disconnect handler is not
  // called. Idempotent.
  void Close();

  // True between on_ready(OK) and the end of the connection.
  bool IsReady() const { return state_ == State::kReady; }

 private:
  enum class State { kNew, kAwaitingGreeting, kNegotiating, kReady, kClosed };

  struct PendingCall {
    std::string command;
    ReplyCallback done;
    std::chrono::milliseconds timeout{0};
    std::unique_ptr<boost::asio::steady_timer> timer;  // null: no timeout
  };

  QmpClient(boost::asio::io_context& io, Options options);

  // Queues the command without checking state_; used by Execute() and the
  // handshake.
  void Send(std::string command, const nlohmann::json& arguments, ReplyCallback done,
            std::optional<std::chrono::milliseconds> timeout, bool out_of_band = false);
  void Submit(std::string command, nlohmann::json arguments, ReplyCallback done,
              std::optional<std::chrono::milliseconds> timeout, bool out_of_band);
  void StartWrite();
  void StartRead();
  void OnRead(const boost::system::error_code& ec, size_t bytes);
  void HandleLine(std::string_view line);
  void HandleGreeting(const nlohmann::json& message, std::string_view line);
  void HandleReply(nlohmann::json& message, std::string_view line);
  void OnCommandTimeout(uint64_t id);
  void OnCapabilitiesReply(StatusOr<nlohmann::json> reply);
  // Ends the connection because of `reason` (not Close()).
  void Fail(Status reason);
  void CloseSocket();
  void Post(std::function<void()> fn);

  boost::asio::io_context& io_;
  const Options options_;
  State state_ = State::kNew;
  boost::asio::local::stream_protocol::socket socket_;
  boost::asio::steady_timer handshake_timer_;
  ReadyCallback on_ready_;
  EventHandler event_handler_;
  DisconnectHandler disconnect_handler_;

  bool oob_enabled_ = false;  // negotiated in the handshake
  uint64_t next_id_ = 1;
  std::map<uint64_t, PendingCall> pending_;
  // Recently timed-out ids, so that their late replies are recognized
  // (logged at debug level) rather than reported as unknown. Bounded.
  std::deque<uint64_t> timed_out_order_;
  std::set<uint64_t> timed_out_;

  std::deque<std::string> write_queue_;
  bool writing_ = false;

  std::string read_buffer_;  // bytes received but not yet consumed as lines
  size_t scan_from_ = 0;     // read_buffer_[0, scan_from_) holds no '\n'
  std::unique_ptr<char[]> read_chunk_;
};

// A blocking QMP client for command-line tools. It connects to a QEMU that
// listens on a unix socket (-chardev socket,server=on,...), runs its own
// io_context and drives a QmpClient until each call completes. Events are
// dropped. Connecting while QEMU is still starting with wait=off can race (see
// the top of this file); connect once QEMU is up, or use wait=on.
//
// Thread safety: none; use one QmpSyncClient from one thread at a time.
class QmpSyncClient {
 public:
  // Connects and completes the QMP handshake within `timeout`.
  // Errors: InvalidArgument (path too long for a unix socket), Unavailable
  // (cannot connect), DeadlineExceeded, or a handshake error.
  static StatusOr<QmpSyncClient> Connect(const std::string& unix_path,
                                         std::chrono::milliseconds timeout,
                                         QmpClientOptions options = {});

  QmpSyncClient(QmpSyncClient&&) noexcept;
  QmpSyncClient& operator=(QmpSyncClient&&) noexcept;
  ~QmpSyncClient();

  // Runs one command; see QmpClient::Execute() for the errors. After the
  // connection ends (e.g. after "quit") every call fails with
  // FailedPrecondition.
  StatusOr<nlohmann::json> Execute(const std::string& cmd, nlohmann::json args = nullptr,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Out of band (QmpClient::ExecuteOutOfBand; connect with
  // options.out_of_band).
  StatusOr<nlohmann::json> ExecuteOutOfBand(
      const std::string& cmd, nlohmann::json args = nullptr,
      std::chrono::milliseconds timeout = std::chrono::seconds(10));

 private:
  QmpSyncClient(std::unique_ptr<boost::asio::io_context> io, std::shared_ptr<QmpClient> client);
  void Reset();
  StatusOr<nlohmann::json> Run(const std::string& cmd, nlohmann::json args,
                               std::chrono::milliseconds timeout, bool out_of_band);

  // Declared in this order so that client_ is released before io_.
  std::unique_ptr<boost::asio::io_context> io_;
  std::shared_ptr<QmpClient> client_;
};

}  // namespace blackbox
