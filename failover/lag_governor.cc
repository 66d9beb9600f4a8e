#include "failover/lag_governor.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "common/clock.h"

namespace blackbox {

LagGovernor::LagGovernor(Options options, std::function<void()> hold, std::function<void()> release)
    : options_(options), hold_(std::move(hold)), release_(std::move(release)) {
  watchdog_ = std::thread([this] { Watch(); });
}

LagGovernor::~LagGovernor() {
  Stop(RealClock::Get().MonotonicNanos());
  watchdog_.join();
}

void LagGovernor::Observe(int64_t lag_ns, int64_t now_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopped_) return;
  if (!held_ && lag_ns > options_.hold_ns) {
    held_ = true;
    held_since_ns_ = now_ns;
    ++holds_;
    hold_();
    changed_.notify_all();
  } else if (held_ && lag_ns <= options_.release_ns) {
    ReleaseLocked(now_ns);
  }
}

void LagGovernor::Stop(int64_t now_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  if (held_) ReleaseLocked(now_ns);
  stopped_ = true;
  changed_.notify_all();
}

void LagGovernor::ReleaseLocked(int64_t now_ns) {
  held_ = false;
  held_total_ns_ += std::max<int64_t>(0, now_ns - held_since_ns_);
  release_();
  changed_.notify_all();
}

void LagGovernor::Watch() {
  Clock& clock = RealClock::Get();
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopped_) {
    if (!held_) {
      changed_.wait(lock);
      continue;
    }
    const int64_t since = held_since_ns_;
    const int64_t left = since + options_.max_hold_ns - clock.MonotonicNanos();
    if (left > 0) {
      changed_.wait_for(lock, std::chrono::nanoseconds(left));
      continue;
    }
    ++forced_;
    ReleaseLocked(clock.MonotonicNanos());
  }
}

bool LagGovernor::held() const {
  std::lock_guard<std::mutex> lock(mu_);
  return held_;
}

uint64_t LagGovernor::holds() const {
  std::lock_guard<std::mutex> lock(mu_);
  return holds_;
}

uint64_t LagGovernor::forced_releases() const {
  std::lock_guard<std::mutex> lock(mu_);
  return forced_;
}

int64_t LagGovernor::held_ns(int64_t now_ns) const {
  std::lock_guard<std::mutex> lock(mu_);
  return held_total_ns_ + (held_ ? std::max<int64_t>(0, now_ns - held_since_ns_) : 0);
}

}  // namespace blackbox
