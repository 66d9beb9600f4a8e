#include "recorder/capture_writer.h"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "common/clock.h"
#include "recorder/frame.h"

namespace blackbox {

namespace {

int64_t MonoNow() { return RealClock::Get().MonotonicNanos(); }

bool IsPolicyDrop(L2Switch::Drop drop) {
  switch (drop) {
    case L2Switch::Drop::kMalformed:
    case L2Switch::Drop::kSpoofedMac:
    case L2Switch::Drop::kSpoofedIp:
    case L2Switch::Drop::kBlockedEthertype:
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

void CaptureWriter::OnFrame(uint32_t ingress, std::span<const uint8_t> frame,
                            const L2Switch::Decision& decision, int64_t mono_ns) {
  CapturedFrame& f = staged_.emplace_back();
  f.wall_ns = mono_ns + wall_offset_ns_;
  f.ingress = ingress;
  f.egress = decision.egress;
  if (decision.drop != L2Switch::Drop::kNone) {
    f.drop_reason = std::string(L2Switch::DropName(decision.drop));
    if (!decision.reason.empty()) f.drop_reason += ": " + decision.reason;
  }
  f.bytes.assign(reinterpret_cast<const char*>(frame.data()), frame.size());
  staged_drops_.push_back(static_cast<uint8_t>(decision.drop));
  staged_bytes_ += frame.size();
  if (staged_.size() >= kMaxStaged) FlushStaged();
}

void CaptureWriter::FlushStaged() {
  if (staged_.empty()) return;
  std::unique_lock lock(mu_);
  if (closing_) {
    staged_.clear();
    staged_drops_.clear();
    staged_bytes_ = 0;
    return;
  }
  if (queued_bytes_ + staged_bytes_ > options_.max_queued_bytes) {
    stats_.shed_frames += staged_.size();
    stats_.shed_bytes += staged_bytes_;
    shed_in_episode_ += staged_.size();
    if (!shedding_) {
      shedding_ = true;
      events_.push_back({staged_.front().wall_ns, 0,
                         {{"kind", "switch"},
                          {"what", "capture_shed"},
                          {"detail", "capture queue full (" +
                                         std::to_string(options_.max_queued_bytes) +
                                         " bytes): frames are forwarded but not stored"}}});
    }
    staged_.clear();
    staged_drops_.clear();
    staged_bytes_ = 0;
    return;
  }
  bool wake = queue_.empty();
  if (queue_.empty()) {
    queue_.swap(staged_);
    queue_drops_.swap(staged_drops_);
  } else {
    std::move(staged_.begin(), staged_.end(), std::back_inserter(queue_));
    queue_drops_.insert(queue_drops_.end(), staged_drops_.begin(), staged_drops_.end());
  }
  queued_bytes_ += staged_bytes_;
  staged_.clear();
  staged_drops_.clear();
  staged_bytes_ = 0;
  lock.unlock();
  if (wake) cv_.notify_one();
}

void CaptureWriter::OnEvent(const std::string& kind, uint32_t port, const std::string& detail,
                            int64_t mono_ns) {
  {
    std::lock_guard lock(mu_);
    if (closing_ || events_.size() >= 10000) return;
    events_.push_back(
        {mono_ns + wall_offset_ns_, port, {{"kind", "switch"}, {"what", kind}, {"detail", detail}}});
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

void CaptureWriter::DropEvent(const CapturedFrame& f, L2Switch::Drop drop) {
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
  std::string detail = f.drop_reason;
  if (size_t colon = detail.find(": "); colon != std::string::npos) detail = detail.substr(colon + 2);
  StoreEvent(f.wall_ns, f.ingress,
             {{"kind", "switch"},
              {"what", "drop"},
              {"reason", L2Switch::DropName(drop)},
              {"detail", detail},
              {"frame_bytes", f.bytes.size()}});
}

void CaptureWriter::Process(std::vector<CapturedFrame>& frames, std::vector<uint8_t>& drops) {
  for (size_t i = 0; i < frames.size(); ++i) {
    CapturedFrame& f = frames[i];
    auto drop = static_cast<L2Switch::Drop>(drops[i]);
    last_wall_ns_ = std::max(last_wall_ns_, f.wall_ns);
    auto parsed = ParseFrame(
        std::span(reinterpret_cast<const uint8_t*>(f.bytes.data()), f.bytes.size()));
    if (parsed.ok()) {
      flows_.Observe(*parsed, f.bytes.size(), f.ingress, last_wall_ns_,
                     drop == L2Switch::Drop::kNone);
    }
    if (IsPolicyDrop(drop)) DropEvent(f, drop);
    if (batch_.empty()) batch_started_mono_ = MonoNow();
    batch_bytes_ += f.bytes.size();
    batch_.push_back(std::move(f));
    if (batch_bytes_ >= options_.batch_max_bytes) StoreBatch();
  }
  frames.clear();
  drops.clear();
}

void CaptureWriter::StoreBatch() {
  if (batch_.empty()) return;
  auto info = store_->AppendFrameBatch(capture_id_, batch_, options_.zstd_level);
  if (!info.ok()) {
    NoteError(info.status().WithContext("storing frames"));
  } else {
    std::lock_guard lock(mu_);
    stats_.frames += batch_.size();
    stats_.frame_bytes += batch_bytes_;
    ++stats_.batches;
    stats_.stored_bytes += info->stored_size;
  }
  batch_.clear();
  batch_bytes_ = 0;
}

void CaptureWriter::StoreFlows(std::vector<FlowRecord> records) {
  for (const FlowRecord& r : records) {
    nlohmann::json j = r.ToJson();
    j["start_wall_ns"] = r.start_ns;
    j["end_wall_ns"] = r.end_ns;
    nlohmann::json recordings = nlohmann::json::array();
    for (auto [key, port] : {std::pair{"port_a", r.ingress_port_a},
                             std::pair{"port_b", r.ingress_port_b}}) {
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
  std::vector<CapturedFrame> frames;
  std::vector<uint8_t> drops;
  std::vector<PendingEvent> events;
  int64_t last_expire = MonoNow();
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait_for(lock, std::chrono::milliseconds(50),
                 [&] { return closing_ || !queue_.empty() || !events_.empty(); });
    frames.swap(queue_);
    drops.swap(queue_drops_);
    events.swap(events_);
    queued_bytes_ = 0;
    if (shedding_) {
      shedding_ = false;
      events.push_back({last_wall_ns_, 0,
                        {{"kind", "switch"},
                         {"what", "capture_shed_end"},
                         {"frames", shed_in_episode_},
                         {"detail", std::to_string(shed_in_episode_) +
                                        " frames were forwarded but not stored"}}});
      shed_in_episode_ = 0;
    }
    bool closing = closing_;
    lock.unlock();

    Process(frames, drops);
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
