// SwitchServer: the I/O half of Blackbox's userspace Ethernet switch.
//
// Each switch port is a unix stream socket that SwitchServer listens on. A VM
// NIC attaches with QEMU's
//
//   -netdev stream,id=n0,server=off,addr.type=unix,addr.path=SOCK
//
// (QEMU is the client.) Frames arrive in the stream wire format (see
// stream_framing.h), are decided by an L2Switch (forwarding, learning,
// anti-spoofing; see l2_switch.h) and are written unmodified to the
// connections of the egress ports.
//
// Connections:
//   - A port has at most one connection at a time. While it is connected, a
//     further connection to its socket is accepted and closed at once
//     (counted in PortStats::refused, event "refused"). After a disconnect the
//     port accepts a new connection (a restarted QEMU).
//   - A length field above Options::max_frame means a hostile or broken peer:
//     the connection is closed (PortStats::oversize_frames, event
//     "oversize_frame", then "disconnect"); the port stays available and other
//     ports are unaffected.
//
// Output: each connection has a bounded buffer of encoded records and at most
// one async write in flight, which takes everything buffered so far. The
// bound counts bytes buffered and in flight; a
// frame that would take it past Options::max_queued_bytes is dropped for that
// port only (PortStats::queue_drops, event "queue_drop" once per congestion
// episode). A peer that stops reading therefore never blocks the switch or
// other ports. Frames to an egress port with no connection are counted in
// PortStats::unconnected_drops. Nothing applies backpressure to senders: the
// server reads every port as fast as it can.
//
// Observers run synchronously on the io_context thread and must not block.
// The frame observer sees every frame read from any port, forwarded or
// dropped by the L2Switch, after it has been queued to the egress ports.
// Queue drops are not frame-observer events (the L2 decision was to forward);
// they are reported to the event observer. Observers may call Close(), but
// must not destroy the SwitchServer.
//
// Event kinds (stable strings): "connect", "disconnect", "refused",
// "oversize_frame", "queue_drop", "accept_error". `detail` is human-readable.
//
// Thread safety: none. Everything runs on the single io_context given at
// construction; call every method from the thread running it. The server
// never runs the io_context itself.
#pragma once

#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "common/status.h"
#include "switch/l2_switch.h"

namespace blackbox {

class SwitchServer {
 public:
  struct Options {
    // Largest number of bytes (records with their 4-byte prefixes, including
    // the write in flight) waiting to be written to one port's connection.
    // Frames beyond it are dropped for that port.
    // Default: 4 MiB.
    size_t max_queued_bytes = size_t{4} << 20;

    // Largest accepted frame length from a peer; a larger length field closes
    // the connection.
    // Default: kMaxFrameSize (65549), the largest frame ParseFrame() accepts.
    size_t max_frame = kMaxFrameSize;

    // Bytes read from a socket per read call (one buffer per connection).
    // Default: 64 KiB.
    size_t read_buffer_size = size_t{64} << 10;

    // Passed to the L2Switch.
    // Default: L2Switch::Options{} (300 s MAC ageing).
    L2Switch::Options switch_options;
  };

  // Per-port I/O counters (frame counters are in L2Switch::GetCounters()).
  struct PortStats {
    bool connected = false;
    uint64_t connects = 0;           // connections accepted
    uint64_t disconnects = 0;        // connections closed (by peer, error or us)
    uint64_t refused = 0;            // connections refused: port already connected
    uint64_t oversize_frames = 0;    // connections closed for a length > max_frame
    uint64_t queue_drops = 0;        // frames to this port dropped: queue full
    uint64_t queue_drop_bytes = 0;   // their frame bytes
    uint64_t unconnected_drops = 0;  // frames to this port while it had no connection
    uint64_t written_frames = 0;     // frames fully written to the connection
    size_t queued_bytes = 0;         // currently queued (0 if not connected)
  };

  using FrameObserver = std::function<void(uint32_t ingress, std::span<const uint8_t> frame,
                                           const L2Switch::Decision& decision, int64_t now_ns)>;
  using EventObserver =
      std::function<void(const std::string& kind, uint32_t port, const std::string& detail)>;

  // `now_ns` is the monotonic clock passed to L2Switch::Process; empty means
  // RealClock::MonotonicNanos(). It is read once per read from a socket: the
  // frames of one read share that time. `io` must outlive the server.
  SwitchServer(boost::asio::io_context& io, Options options,
               std::function<int64_t()> now_ns = nullptr);
  // Calls Close(). Handlers still queued on the io_context afterwards do
  // nothing, so the io_context may keep running (or be destroyed) later.
  ~SwitchServer();

  SwitchServer(const SwitchServer&) = delete;
  SwitchServer& operator=(const SwitchServer&) = delete;

  // Adds a port to the L2Switch and listens on `socket_path` for its peer.
  // Returns the port id (L2Switch's). Fails with InvalidArgument if the path is
  // too long for a unix socket, IOError if it cannot be bound (an existing
  // file at the path is not removed), FailedPrecondition after Close(). On
  // failure no port is added.
  StatusOr<uint32_t> AddPort(const L2Switch::PortConfig& config, const std::string& socket_path);

  // Detaches a port: stops listening, closes its connection (reporting a
  // "disconnect" event), removes its socket file and its L2Switch port, so
  // frames to or from it are no longer forwarded. Its last stats are
  // returned; nullopt for an unknown id (or after Close()). Must run on the
  // io_context's thread, outside the port's own handlers.
  std::optional<PortStats> RemovePort(uint32_t port);

  // Called for every frame read from a port. Replaces any previous observer.
  void SetFrameObserver(FrameObserver observer) { frame_observer_ = std::move(observer); }
  // Called after the frames of one read from a port have all been handled
  // (each passed to the frame observer), so an observer can hand over what it
  // collected once per read rather than once per frame. Replaces any previous.
  void SetBatchObserver(std::function<void()> observer) { batch_observer_ = std::move(observer); }
  // The L2Switch's FramePolicy (see l2_switch.h, rule 7); null for none. Not
  // owned; must outlive the server's use of it.
  void SetPolicy(FramePolicy* policy) { switch_.SetPolicy(policy); }
  // Called for connection and queue events. Replaces any previous observer.
  void SetEventObserver(EventObserver observer) { event_observer_ = std::move(observer); }

  // Stops listening, closes every connection (without events) and removes the
  // socket files. Idempotent; AddPort fails afterwards.
  void Close();

  // I/O counters of a port; nullopt if unknown (or after Close()).
  std::optional<PortStats> GetPortStats(uint32_t port) const;

  // The forwarding state and its counters (read-only).
  const L2Switch& l2() const { return switch_; }

 private:
  struct Port;
  struct Connection;

  void Accept(Port& port);
  void ScheduleAccept(uint32_t port_id);
  void Read(const std::shared_ptr<Connection>& conn);
  void OnFrame(uint32_t ingress, std::span<const uint8_t> frame, int64_t now_ns);
  void Enqueue(Port& port, std::span<const uint8_t> frame);
  void Write(const std::shared_ptr<Connection>& conn);
  void Disconnect(const std::shared_ptr<Connection>& conn, const std::string& why, bool report);
  void Report(const std::string& kind, uint32_t port, const std::string& detail);
  Port* FindPort(uint32_t id);

  boost::asio::io_context& io_;
  const Options options_;
  std::function<int64_t()> now_ns_;
  L2Switch switch_;
  std::map<uint32_t, std::unique_ptr<Port>> ports_;
  std::vector<std::unique_ptr<Port>> removed_;  // kept until destruction, like Close()'s
  FrameObserver frame_observer_;
  L2Switch::Decision decision_;  // reused by OnFrame: no allocation per frame
  std::function<void()> batch_observer_;
  EventObserver event_observer_;
  bool closed_ = false;
  // Handlers hold a weak_ptr to this and do nothing once it has expired, so
  // they never touch a destroyed server.
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

}  // namespace blackbox
