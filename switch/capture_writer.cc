#include "switch/capture_writer.h"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "common/clock.h"
#include "switch/frame.h"

namespace blackbox {

namespace {

int64_t MonoNow() { return RealClock::Get().MonotonicNanos(); }

// Processed staging buffers kept for reuse (each up to about
// CaptureWriter::kMaxStagedBytes).
constexpr size_t kMaxFreeStaged = 32;

bool IsPolicyDrop(L2Switch::Drop drop) {
  switch (drop) {
    case L2Switch::Drop::kMalformed:
    case L2Switch::Drop::kSpoofedMac:
    case L2Switch::Drop::kSpoofedIp:
    case L2Switch::Drop::kBlockedEthertype:
    case L2Switch::Drop::kPolicy:
      return true;
    default:
      return false;
  }
}

}  // namespace

CaptureWriter::CaptureWriter(Store* store, std::string capture_id, Options options,
                             int64_t wall_offset_ns)
    : store_(store),
      capture_id_(std::move(capture_id)),
      options_(options),
      wall_offset_ns_(wall_offset_ns),
      flows_(options.flows) {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "bb-capture");
    Run();
  });
}

CaptureWriter::~CaptureWriter() { Close().IgnoreError(); }

void CaptureWriter::SetPortInfo(uint32_t port, PortInfo info) {
  std::lock_guard lock(mu_);
  ports_[port] = std::move(info);
}

CaptureWriter::PortInfo CaptureWriter::Port(uint32_t port) const {
  std::lock_guard lock(mu_);
  auto it = ports_.find(port);
  if (it != ports_.end()) return it->second;
  return PortInfo{"port" + std::to_string(port), ""};
}

void CaptureWriter::Staged::Clear() {
  encoded.Clear();
  frames.clear();
  reasons.clear();
  frame_bytes = 0;
}

CaptureWriter::StagedPtr CaptureWriter::TakeFreeLocked() {
  if (free_.empty()) return std::make_unique<Staged>();
  StagedPtr s = std::move(free_.back());
  free_.pop_back();
  return s;
}

void CaptureWriter::OnFrame(uint32_t ingress, std::span<const uint8_t> frame,
                            const L2Switch::Decision& decision, int64_t mono_ns) {
  if (!staged_) {
    std::lock_guard lock(mu_);
    staged_ = TakeFreeLocked();
  }
  Staged& s = *staged_;
  const int64_t wall_ns = mono_ns + wall_offset_ns_;
  reason_buffer_.clear();
  if (decision.drop != L2Switch::Drop::kNone) {
    reason_buffer_ = L2Switch::DropName(decision.drop);
    if (!decision.reason.empty()) reason_buffer_ += ": " + decision.reason;
  }
  Status added = s.encoded.Add(wall_ns, ingress, decision.egress, reason_buffer_, frame);
  if (!added.ok()) {  // over the store's caps, which the switch's own limits keep below
    NoteError(added.WithContext("capturing a frame of port " + std::to_string(ingress)));
    return;
  }
  uint32_t reason = 0;
  if (IsPolicyDrop(decision.drop)) {
    reason = static_cast<uint32_t>(s.reasons.size());
    s.reasons.push_back(decision.reason);
  }
  s.frames.push_back({wall_ns, static_cast<uint32_t>(s.encoded.raw().size() - frame.size()),
                      static_cast<uint32_t>(frame.size()), ingress, reason, decision.drop});
  s.frame_bytes += frame.size();
  if (s.frames.size() >= kMaxStaged || s.encoded.raw().size() >= kMaxStagedBytes) FlushStaged();
}

void CaptureWriter::FlushStaged() {
  if (!staged_ || staged_->frames.empty()) return;
  Staged& s = *staged_;
  const size_t bytes = s.encoded.raw().size();
  std::unique_lock lock(mu_);
  if (closing_) {
    s.Clear();
    return;
  }
  auto has_room = [&] { return queued_bytes_ + bytes <= options_.max_queued_bytes; };
  if (!has_room() && !shedding_ && options_.max_block_ns > 0) {
    const int64_t start = MonoNow();
    room_cv_.wait_for(lock, std::chrono::nanoseconds(options_.max_block_ns),
                      [&] { return closing_ || has_room(); });
    ++stats_.waits;
    stats_.wait_ns += MonoNow() - start;
    if (closing_) {
      s.Clear();
      return;
    }
  }
  if (!has_room()) {
    stats_.shed_frames += s.frames.size();
    stats_.shed_bytes += s.frame_bytes;
    shed_in_episode_ += s.frames.size();
    if (!shedding_) {
      shedding_ = true;
      events_.push_back(
          {s.frames.front().wall_ns,
           0,
           {{"kind", "switch"},
            {"what", "capture_shed"},
            {"detail", "capture queue full (" + std::to_string(options_.max_queued_bytes) +
                           " bytes): frames are forwarded but not stored"}}});
    }
    s.Clear();
    return;
  }
  const bool wake = queue_.empty();
  queue_.push_back(std::move(staged_));
  queued_bytes_ += bytes;
  staged_ = TakeFreeLocked();
  lock.unlock();
  if (wake) cv_.notify_one();
}

void CaptureWriter::OnEvent(const std::string& kind, uint32_t port, const std::string& detail,
                            int64_t mono_ns) {
  {
    std::lock_guard lock(mu_);
    if (closing_ || events_.size() >= 10000) return;
    events_.push_back({mono_ns + wall_offset_ns_,
                       port,
                       {{"kind", "switch"}, {"what", kind}, {"detail", detail}}});
  }
  cv_.notify_one();
}

void CaptureWriter::NoteError(const Status& s) {
  if (s.ok()) return;
  std::lock_guard lock(mu_);
  if (stats_.first_error.empty()) {
    stats_.first_error = s.message();
    spdlog::error("capture {}: {}", capture_id_, s.message());
  }
}

void CaptureWriter::StoreEvent(int64_t wall_ns, uint32_t port, nlohmann::json body) {
  if (port != 0) {
    PortInfo info = Port(port);
    body["port"] = info.name;
    if (!info.recording_id.empty()) {
      NoteError(store_->PutEvent(info.recording_id, wall_ns, body));
    }
  }
  NoteError(store_->PutEvent(capture_id_, wall_ns, body));
  std::lock_guard lock(mu_);
  ++stats_.events;
}

void CaptureWriter::FlushDropWindow(uint32_t port, DropWindow& w) {
  if (w.suppressed == 0) return;
  StoreEvent(last_wall_ns_, port,
             {{"kind", "switch"},
              {"what", "drop_suppressed"},
              {"frames", w.suppressed},
              {"detail", std::to_string(w.suppressed) +
                             " more dropped frames in that second (see the capture)"}});
  std::lock_guard lock(mu_);
  stats_.suppressed_drop_events += w.suppressed;
  w.suppressed = 0;
}

void CaptureWriter::DropEvent(const Staged::Frame& f, const std::string& detail) {
  DropWindow& w = drop_windows_[f.ingress];
  int64_t second = f.wall_ns / 1'000'000'000;
  if (second != w.second) {
    FlushDropWindow(f.ingress, w);
    w.second = second;
    w.stored = 0;
  }
  if (w.stored >= options_.drop_events_per_second) {
    ++w.suppressed;
    return;
  }
  ++w.stored;
  StoreEvent(f.wall_ns, f.ingress,
             {{"kind", "switch"},
              {"what", "drop"},
              {"reason", L2Switch::DropName(f.drop)},
              {"detail", detail},
              {"frame_bytes", f.size}});
}

void CaptureWriter::Process(Staged& staged) {
  const auto* raw = reinterpret_cast<const uint8_t*>(staged.encoded.raw().data());
  for (const Staged::Frame& f : staged.frames) {
    last_wall_ns_ = std::max(last_wall_ns_, f.wall_ns);
    auto parsed = ParseFrame(std::span(raw + f.offset, f.size));
    if (parsed.ok()) {
      flows_.Observe(*parsed, f.size, f.ingress, last_wall_ns_, f.drop == L2Switch::Drop::kNone);
    }
    if (IsPolicyDrop(f.drop)) DropEvent(f, staged.reasons[f.reason]);
  }
  if (batch_.empty()) {
    batch_started_mono_ = MonoNow();
    std::swap(batch_, staged.encoded);  // no copy; staged keeps the old buffer for reuse
  } else {
    batch_.Append(staged.encoded);
  }
  batch_frame_bytes_ += staged.frame_bytes;
  if (batch_.raw().size() >= options_.batch_max_bytes) StoreBatch();
}

void CaptureWriter::StoreBatch() {
  if (batch_.empty()) return;
  auto info = store_->AppendFrameBatch(capture_id_, batch_, options_.zstd_level);
  if (!info.ok()) {
    NoteError(info.status().WithContext("storing frames"));
  } else {
    std::lock_guard lock(mu_);
    stats_.frames += batch_.frame_count();
    stats_.frame_bytes += batch_frame_bytes_;
    ++stats_.batches;
    stats_.stored_bytes += info->stored_size;
  }
  batch_.Clear();
  batch_frame_bytes_ = 0;
}

void CaptureWriter::StoreFlows(std::vector<FlowRecord> records) {
  for (const FlowRecord& r : records) {
    nlohmann::json j = r.ToJson();
    j["start_wall_ns"] = r.start_ns;
    j["end_wall_ns"] = r.end_ns;
    nlohmann::json recordings = nlohmann::json::array();
    for (auto [key, port] :
         {std::pair{"port_a", r.ingress_port_a}, std::pair{"port_b", r.ingress_port_b}}) {
      if (!port) {
        j[key] = nullptr;
        continue;
      }
      PortInfo info = Port(*port);
      j[key] = info.name;
      if (!info.recording_id.empty()) recordings.push_back(info.recording_id);
    }
    j["recordings"] = recordings;
    Status s = store_->PutFlow(capture_id_, j);
    NoteError(s);
    if (s.ok()) {
      std::lock_guard lock(mu_);
      ++stats_.flows;
    }
  }
}

void CaptureWriter::Run() {
  std::vector<StagedPtr> work;
  std::vector<PendingEvent> events;
  int64_t last_expire = MonoNow();
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait_for(lock, std::chrono::milliseconds(50),
                 [&] { return closing_ || !queue_.empty() || !events_.empty(); });
    work.swap(queue_);
    events.swap(events_);
    queued_bytes_ = 0;
    room_cv_.notify_all();
    if (shedding_) {
      shedding_ = false;
      events.push_back({last_wall_ns_,
                        0,
                        {{"kind", "switch"},
                         {"what", "capture_shed_end"},
                         {"frames", shed_in_episode_},
                         {"detail", std::to_string(shed_in_episode_) +
                                        " frames were forwarded but not stored"}}});
      shed_in_episode_ = 0;
    }
    bool closing = closing_;
    lock.unlock();

    for (StagedPtr& staged : work) {
      Process(*staged);
      staged->Clear();
    }
    for (PendingEvent& e : events) StoreEvent(e.wall_ns, e.port, std::move(e.body));
    events.clear();
    int64_t now = MonoNow();
    if (!batch_.empty() && now - batch_started_mono_ >= options_.batch_max_age_ns) StoreBatch();
    if (now - last_expire >= options_.flow_expire_interval_ns) {
      last_expire = now;
      last_wall_ns_ = std::max(last_wall_ns_, now + wall_offset_ns_);
      StoreFlows(flows_.Expire(last_wall_ns_));
    }

    lock.lock();
    // Keep enough buffers for a full queue's worth of bursts; free the rest.
    for (StagedPtr& staged : work) {
      if (free_.size() < kMaxFreeStaged) free_.push_back(std::move(staged));
    }
    work.clear();
    if (closing && queue_.empty() && events_.empty()) break;
  }
  lock.unlock();
  StoreBatch();
  last_wall_ns_ = std::max(last_wall_ns_, MonoNow() + wall_offset_ns_);
  StoreFlows(flows_.Flush(last_wall_ns_));
  for (auto& [port, w] : drop_windows_) FlushDropWindow(port, w);
}

Status CaptureWriter::Close() {
  if (closed_) return close_status_;
  closed_ = true;
  FlushStaged();
  {
    std::lock_guard lock(mu_);
    closing_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
  std::lock_guard lock(mu_);
  if (!stats_.first_error.empty()) close_status_ = IOError(stats_.first_error);
  return close_status_;
}

CaptureWriter::Stats CaptureWriter::GetStats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

}  // namespace blackbox
