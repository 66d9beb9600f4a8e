// CaptureWriter: takes every frame the switch handles and persists it, off the
// switch's thread.
//
// The switch thread calls OnFrame() for each frame and FlushStaged() after
// each burst: frames are encoded straight into the stored batch layout
// (FrameBatchEncoder), and the burst is moved into a bounded queue under one
// short mutex hold (never I/O). A writer thread drains the queue and
//   - stores the frames as zstd-compressed batches (Store::AppendFrameBatch),
//     a batch at Options::batch_max_bytes or Options::batch_max_age_ns,
//   - feeds them to a FlowTable and stores each finished flow record
//     (Store::PutFlow), expiring flows every Options::flow_expire_interval_ns,
//   - stores switch events and drop events (Store::PutEvent) under the capture
//     id and, when the port belongs to a recording, under that recording too.
//
// Back-pressure and shedding: when the queue holds Options::max_queued_bytes
// of frames, the switch thread waits up to Options::max_block_ns for room (so a
// writer that is merely slower than the switch slows forwarding a little
// instead of losing frames). If there is still no room, the burst is not
// captured (it is still forwarded) and is counted in Stats::shed_frames, and
// no further waits happen until the writer has caught up. The start of such an episode is stored as
// event {"what":"capture_shed"} and its end, with the count, as
// {"what":"capture_shed_end","frames":N}. At the benchmark rates there is none.
//
// Drop events: a frame the switch dropped for a policy reason (spoofed MAC or
// IP, blocked ethertype, malformed, a manifest) becomes an event {"kind":"switch",
// "what":"drop", "port", "reason", "detail"}, at most
// Options::drop_events_per_second per port and second; the rest of a second
// is summarised in one {"what":"drop_suppressed","frames":N} event. Frames
// dropped because nobody else is on the segment are captured, not events.
//
// Time: the switch passes RealClock::MonotonicNanos() (the writer reads the
// same clock for its timers); frames and flows are stored at
// mono + wall_offset_ns, a wall time that never goes backwards.
//
// Thread safety: OnFrame and FlushStaged from one thread (the switch's);
// OnEvent, SetPortInfo and GetStats from any thread; Close from one thread,
// once everything feeding it has stopped (it hands over staged frames first).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "store/store.h"
#include "switch/flow_table.h"
#include "switch/l2_switch.h"

namespace blackbox {

class CaptureWriter {
 public:
  struct Options {
    // Frame bytes waiting for the writer thread. Default: 64 MiB.
    size_t max_queued_bytes = size_t{64} << 20;
    // When the queue is full, the switch thread waits at most this long for
    // the writer to make room before shedding the burst; while shedding it
    // does not wait again. Bounds how long capture can hold up forwarding.
    // Default: 100 ms.
    int64_t max_block_ns = 100'000'000;
    // Frame bytes per stored batch. Default: 1 MiB.
    size_t batch_max_bytes = size_t{1} << 20;
    // A batch with frames is stored at least this often. Default: 250 ms.
    int64_t batch_max_age_ns = 250'000'000;
    // zstd level of frame batches: fast, frames are stored as they come.
    // Default: 1.
    int zstd_level = 1;
    // How often idle/active flow timeouts are checked. Default: 1 s.
    int64_t flow_expire_interval_ns = 1'000'000'000;
    FlowTable::Options flows;
    // Drop events stored per port and second. Default: 10.
    int drop_events_per_second = 10;
  };

  struct Stats {
    uint64_t frames = 0;       // frames stored
    uint64_t frame_bytes = 0;  // their bytes
    uint64_t batches = 0;
    uint64_t stored_bytes = 0;  // compressed batch payloads
    uint64_t shed_frames = 0;
    uint64_t shed_bytes = 0;
    uint64_t waits = 0;   // times the switch thread waited for room in the queue
    int64_t wait_ns = 0;  // and for how long in all
    uint64_t flows = 0;   // flow records stored
    uint64_t events = 0;
    uint64_t suppressed_drop_events = 0;
    std::string first_error;  // first store error, "" if none
  };

  // What the writer knows of a port, for flow records and events.
  struct PortInfo {
    std::string name;          // "vm/nic"
    std::string recording_id;  // recording of the VM, "" if none
  };

  CaptureWriter(Store* store, std::string capture_id, Options options, int64_t wall_offset_ns);
  // Calls Close().
  ~CaptureWriter();
  CaptureWriter(const CaptureWriter&) = delete;
  CaptureWriter& operator=(const CaptureWriter&) = delete;

  void SetPortInfo(uint32_t port, PortInfo info);

  // The switch's frame observer (see SwitchServer::FrameObserver). Frames are
  // encoded into a staging batch without locking and handed to the writer
  // thread by FlushStaged() (the switch's batch observer), or by OnFrame
  // itself at kMaxStaged frames or kMaxStagedBytes. OnFrame and FlushStaged
  // must be called from one thread.
  void OnFrame(uint32_t ingress, std::span<const uint8_t> frame, const L2Switch::Decision& decision,
               int64_t mono_ns);
  void FlushStaged();
  static constexpr size_t kMaxStaged = 1024;
  static constexpr size_t kMaxStagedBytes = size_t{256} << 10;
  // The switch's event observer, with the time it happened.
  void OnEvent(const std::string& kind, uint32_t port, const std::string& detail, int64_t mono_ns);

  // Stores everything queued, ends every flow (reason "flush"), stops the
  // thread. Returns the first store error. Idempotent; later frames are ignored.
  Status Close();

  Stats GetStats() const;

 private:
  struct PendingEvent {
    int64_t wall_ns;
    uint32_t port;
    nlohmann::json body;
  };
  struct DropWindow {
    int64_t second = -1;
    int stored = 0;
    uint64_t suppressed = 0;
  };
  // Frames handed from the switch thread to the writer thread in one piece,
  // already in the stored batch layout. Recycled, so steady traffic allocates
  // nothing per frame.
  struct Staged {
    struct Frame {
      int64_t wall_ns;
      uint32_t offset;  // of the frame's bytes in encoded.raw()
      uint32_t size;
      uint32_t ingress;
      uint32_t reason;  // index in reasons (policy drops only)
      L2Switch::Drop drop;
    };
    FrameBatchEncoder encoded;
    std::vector<Frame> frames;
    std::vector<std::string> reasons;  // the switch's detail of each policy drop
    size_t frame_bytes = 0;
    void Clear();
  };
  using StagedPtr = std::unique_ptr<Staged>;

  void Run();
  void Process(Staged& staged);
  void StoreBatch();
  void StoreFlows(std::vector<FlowRecord> records);
  void StoreEvent(int64_t wall_ns, uint32_t port, nlohmann::json body);
  void DropEvent(const Staged::Frame& f, const std::string& detail);
  void FlushDropWindow(uint32_t port, DropWindow& w);
  void NoteError(const Status& s);
  PortInfo Port(uint32_t port) const;
  // Under mu_: a cleared Staged from the free list, or a new one.
  StagedPtr TakeFreeLocked();

  Store* store_;
  const std::string capture_id_;
  const Options options_;
  const int64_t wall_offset_ns_;

  mutable std::mutex mu_;
  std::condition_variable cv_;       // wakes the writer thread
  std::condition_variable room_cv_;  // wakes a switch thread waiting for queue room
  std::vector<StagedPtr> queue_;
  std::vector<StagedPtr> free_;  // processed, cleared, ready for reuse
  std::vector<PendingEvent> events_;
  size_t queued_bytes_ = 0;
  bool shedding_ = false;
  uint64_t shed_in_episode_ = 0;
  bool closing_ = false;
  Stats stats_;
  std::map<uint32_t, PortInfo> ports_;

  // Switch thread only (OnFrame, FlushStaged).
  StagedPtr staged_;
  std::string reason_buffer_;

  // Writer thread only.
  FlowTable flows_;
  FrameBatchEncoder batch_;
  size_t batch_frame_bytes_ = 0;
  int64_t batch_started_mono_ = 0;
  int64_t last_wall_ns_ = 0;
  std::map<uint32_t, DropWindow> drop_windows_;

  std::thread thread_;
  bool closed_ = false;
  Status close_status_;
};

}  // namespace blackbox
