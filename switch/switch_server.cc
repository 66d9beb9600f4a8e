#include "switch/switch_server.h"

#include <sys/un.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <chrono>
#include <deque>
#include <vector>

#include "common/clock.h"
#include "switch/stream_framing.h"

namespace blackbox {

namespace asio = boost::asio;
using Endpoint = asio::local::stream_protocol::endpoint;
using Acceptor = asio::local::stream_protocol::acceptor;
using Socket = asio::local::stream_protocol::socket;

namespace {
// Delay before re-arming accept after an error (EMFILE and the like), so a
// persistent error does not spin.
constexpr auto kAcceptRetryDelay = std::chrono::milliseconds(100);
}  // namespace

struct SwitchServer::Connection {
  Connection(Socket s, uint32_t port, size_t max_frame, size_t read_size)
      : socket(std::move(s)), port_id(port), decoder(max_frame), read_buffer(read_size) {}

  Socket socket;
  uint32_t port_id;
  StreamDecoder decoder;
  std::vector<uint8_t> read_buffer;
  // Encoded records waiting for the next write, and those of the write in
  // flight. Each write takes everything pending, so a busy port is drained
  // with few large writes.
  std::string pending;
  size_t pending_frames = 0;
  std::string writing;
  size_t writing_frames = 0;
  bool write_in_flight = false;
  size_t queued_bytes() const { return pending.size() + writing.size(); }
  bool closed = false;
  bool dropping = false;  // in a congestion episode ("queue_drop" reported)
};

struct SwitchServer::Port {
  Port(asio::io_context& io, uint32_t port_id, std::string socket_path)
      : id(port_id), path(std::move(socket_path)), acceptor(io), retry_timer(io) {}

  uint32_t id;
  std::string path;
  Acceptor acceptor;
  asio::steady_timer retry_timer;
  std::shared_ptr<Connection> conn;  // null when not connected
  PortStats stats;
};

SwitchServer::SwitchServer(asio::io_context& io, Options options, std::function<int64_t()> now_ns)
    : io_(io),
      options_(std::move(options)),
      now_ns_(std::move(now_ns)),
      switch_(options_.switch_options) {
  if (!now_ns_) {
    now_ns_ = [] { return RealClock::Get().MonotonicNanos(); };
  }
}

SwitchServer::~SwitchServer() {
  Close();
  alive_.reset();
}

StatusOr<uint32_t> SwitchServer::AddPort(const L2Switch::PortConfig& config,
                                         const std::string& socket_path) {
  if (closed_) return FailedPrecondition("switch server is closed");
  if (socket_path.empty() || socket_path.size() >= sizeof(sockaddr_un::sun_path)) {
    return InvalidArgument("unix socket path is empty or longer than " +
                           std::to_string(sizeof(sockaddr_un::sun_path) - 1) +
                           " bytes: " + socket_path);
  }
  // The id is only known after L2Switch::AddPort; bind first so a failure
  // leaves the switch untouched.
  auto port = std::make_unique<Port>(io_, 0, socket_path);
  boost::system::error_code ec;
  port->acceptor.open(asio::local::stream_protocol(), ec);
  if (!ec) port->acceptor.bind(Endpoint(socket_path), ec);
  if (!ec) port->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return IOError("cannot listen on " + socket_path + ": " + ec.message());

  port->id = switch_.AddPort(config);
  Port& p = *port;
  ports_[p.id] = std::move(port);
  Accept(p);
  return p.id;
}

std::optional<SwitchServer::PortStats> SwitchServer::RemovePort(uint32_t port_id) {
  if (closed_) return std::nullopt;
  auto it = ports_.find(port_id);
  if (it == ports_.end()) return std::nullopt;
  Port& port = *it->second;
  PortStats stats = port.stats;
  stats.queued_bytes = port.conn ? port.conn->queued_bytes() : 0;
  boost::system::error_code ignored;
  port.retry_timer.cancel();
  port.acceptor.close(ignored);
  ::unlink(port.path.c_str());
  if (std::shared_ptr<Connection> conn = port.conn) Disconnect(conn, "port removed", true);
  switch_.RemovePort(port_id);
  // Handlers still queued look the port up by id and find nothing.
  removed_.push_back(std::move(it->second));
  ports_.erase(it);
  return stats;
}

SwitchServer::Port* SwitchServer::FindPort(uint32_t id) {
  auto it = ports_.find(id);
  return it == ports_.end() ? nullptr : it->second.get();
}

void SwitchServer::Accept(Port& port) {
  std::weak_ptr<int> alive = alive_;
  const uint32_t id = port.id;
  port.acceptor.async_accept([this, alive, id](const boost::system::error_code& ec, Socket s) {
    if (alive.expired() || closed_) return;
    Port* p = FindPort(id);
    if (p == nullptr || ec == asio::error::operation_aborted) return;
    if (ec) {
      Report("accept_error", id, ec.message());
      ScheduleAccept(id);
      return;
    }
    if (p->conn) {
      boost::system::error_code ignored;
      s.close(ignored);
      ++p->stats.refused;
      Report("refused", id, "port " + std::to_string(id) + " already has a connection");
    } else {
      p->conn = std::make_shared<Connection>(std::move(s), id, options_.max_frame,
                                             options_.read_buffer_size);
      p->stats.connected = true;
      ++p->stats.connects;
      Report("connect", id, "peer connected to " + p->path);
      Read(p->conn);
      // Report or Read may have closed the server from an observer.
      if (closed_) return;
    }
    Accept(*p);
  });
}

void SwitchServer::ScheduleAccept(uint32_t port_id) {
  Port* p = FindPort(port_id);
  if (p == nullptr) return;
  std::weak_ptr<int> alive = alive_;
  p->retry_timer.expires_after(kAcceptRetryDelay);
  p->retry_timer.async_wait([this, alive, port_id](const boost::system::error_code& ec) {
    if (ec || alive.expired() || closed_) return;
    if (Port* p = FindPort(port_id)) Accept(*p);
  });
}

void SwitchServer::Read(const std::shared_ptr<Connection>& conn) {
  std::weak_ptr<int> alive = alive_;
  conn->socket.async_read_some(
      asio::buffer(conn->read_buffer),
      [this, alive, conn](const boost::system::error_code& ec, size_t n) {
        if (alive.expired() || closed_ || conn->closed) return;
        if (ec) {
          Disconnect(conn, ec == asio::error::eof ? "peer closed the connection" : ec.message(),
                     /*report=*/true);
          return;
        }
        const int64_t now = now_ns_();
        Status st = conn->decoder.Feed(std::span<const uint8_t>(conn->read_buffer.data(), n),
                                       [this, &conn, now](std::span<const uint8_t> frame) {
                                         if (!closed_) OnFrame(conn->port_id, frame, now);
                                       });
        if (batch_observer_ && !closed_) batch_observer_();
        if (closed_ || conn->closed) return;
        if (!st.ok()) {
          if (Port* p = FindPort(conn->port_id)) ++p->stats.oversize_frames;
          Report("oversize_frame", conn->port_id, st.message());
          Disconnect(conn, "closed after an oversize frame", /*report=*/true);
          return;
        }
        Read(conn);
      });
}

void SwitchServer::OnFrame(uint32_t ingress, std::span<const uint8_t> frame, int64_t now) {
  switch_.Process(ingress, frame, now, &decision_);
  for (uint32_t egress : decision_.egress) {
    if (closed_) break;
    if (Port* p = FindPort(egress)) Enqueue(*p, frame);
  }
  if (frame_observer_ && !closed_) frame_observer_(ingress, frame, decision_, now);
}

void SwitchServer::Enqueue(Port& port, std::span<const uint8_t> frame) {
  const std::shared_ptr<Connection>& conn = port.conn;
  if (!conn) {
    ++port.stats.unconnected_drops;
    return;
  }
  const size_t record_size = kStreamHeaderSize + frame.size();
  if (conn->queued_bytes() + record_size > options_.max_queued_bytes) {
    ++port.stats.queue_drops;
    port.stats.queue_drop_bytes += frame.size();
    if (!conn->dropping) {
      conn->dropping = true;
      Report("queue_drop", port.id,
             "output queue full (" + std::to_string(conn->queued_bytes()) +
                 " bytes queued); dropping frames, " + std::to_string(port.stats.queue_drops) +
                 " dropped so far on this port");
    }
    return;
  }
  conn->dropping = false;
  AppendStreamFrame(&conn->pending, frame);
  ++conn->pending_frames;
  if (!conn->write_in_flight) Write(conn);
}

void SwitchServer::Write(const std::shared_ptr<Connection>& conn) {
  // `writing` is empty here; the swap hands its capacity to `pending`.
  conn->writing.swap(conn->pending);
  conn->writing_frames = conn->pending_frames;
  conn->pending_frames = 0;
  conn->write_in_flight = true;
  std::weak_ptr<int> alive = alive_;
  // `writing` lives in the connection, which the handler keeps alive, and is
  // not touched until the handler runs.
  asio::async_write(conn->socket, asio::buffer(conn->writing),
                    [this, alive, conn](const boost::system::error_code& ec, size_t) {
                      if (alive.expired() || closed_ || conn->closed) return;
                      if (ec) {
                        Disconnect(conn, "write failed: " + ec.message(), /*report=*/true);
                        return;
                      }
                      if (Port* p = FindPort(conn->port_id)) {
                        p->stats.written_frames += conn->writing_frames;
                      }
                      conn->writing.clear();
                      conn->writing_frames = 0;
                      conn->write_in_flight = false;
                      if (!conn->pending.empty()) Write(conn);
                    });
}

void SwitchServer::Disconnect(const std::shared_ptr<Connection>& conn, const std::string& why,
                              bool report) {
  if (conn->closed) return;
  conn->closed = true;
  boost::system::error_code ignored;
  conn->socket.shutdown(Socket::shutdown_both, ignored);
  conn->socket.close(ignored);
  // The buffers are left alone: a cancelled write may still reference them
  // until its handler runs; they are freed with the last reference to `conn`.
  Port* p = FindPort(conn->port_id);
  if (p != nullptr && p->conn == conn) {
    p->conn.reset();
    p->stats.connected = false;
    ++p->stats.disconnects;
  }
  if (report) Report("disconnect", conn->port_id, why);
}

void SwitchServer::Report(const std::string& kind, uint32_t port, const std::string& detail) {
  if (event_observer_ && !closed_) event_observer_(kind, port, detail);
}

void SwitchServer::Close() {
  if (closed_) return;
  closed_ = true;
  for (auto& [id, port] : ports_) {
    boost::system::error_code ignored;
    port->retry_timer.cancel();
    port->acceptor.close(ignored);
    ::unlink(port->path.c_str());
    if (port->conn) Disconnect(port->conn, "switch closed", /*report=*/false);
    switch_.RemovePort(id);
  }
  // Ports (acceptors, timers) are kept until destruction: Close() may run
  // inside one of their handlers.
}

std::optional<SwitchServer::PortStats> SwitchServer::GetPortStats(uint32_t port) const {
  if (closed_) return std::nullopt;
  auto it = ports_.find(port);
  if (it == ports_.end()) return std::nullopt;
  PortStats stats = it->second->stats;
  stats.queued_bytes = it->second->conn ? it->second->conn->queued_bytes() : 0;
  return stats;
}

}  // namespace blackbox
