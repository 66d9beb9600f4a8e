// Holds a primary back while its hot standby lags too far behind.
//
// A standby replays its primary's log on its own CPU; when that CPU is
// slower, busier or simply unlucky for a while, the standby falls behind, and
// a standby that is seconds behind makes a failover that waits seconds for
// the backlog. VMware FT's answer, used here: slow the primary down (it held
// the primary's CPU back) until the standby has caught up. The governor is
// told the standby's lag (the age of the oldest byte of the log it has not
// replayed) as often as it is measured; once the lag exceeds `hold_ns` it
// holds the primary (the hold action: QMP `stop` to its QEMU, whose vCPU
// then stops while its main loop goes on writing and flushing the log), and
// once the lag is down to `release_ns` it lets it go (`cont`). The primary
// loses the time it is held; its guest does not notice beyond the time gap
// (record/replay keeps the execution deterministic).
//
// A hold never lasts longer than `max_hold_ns`, whatever the lag figures
// say or fail to say: the follower may have died or hung, or the hold may
// be one that keeps bytes the follower needs from it (SIGSTOP stops the
// primary's log flusher too, and then the follower cannot catch up, or
// answer how far it got, until the primary runs again). A watchdog thread
// releases such a hold.
//
// Thread safety: all members may be called from any thread; the actions run
// under the governor's lock, never concurrently with each other.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

namespace blackbox {

class LagGovernor {
 public:
  struct Options {
    int64_t hold_ns = 30'000'000;       // hold the primary once the lag is above this
    int64_t release_ns = 15'000'000;    // and release it once the lag is down to this
    int64_t max_hold_ns = 120'000'000;  // and in any case after this long
  };

  LagGovernor(Options options, std::function<void()> hold, std::function<void()> release);
  // Stop()s (a primary is never left held).
  ~LagGovernor();
  LagGovernor(const LagGovernor&) = delete;
  LagGovernor& operator=(const LagGovernor&) = delete;

  // The standby's lag measured at `now_ns` (CLOCK_MONOTONIC, as
  // RealClock::MonotonicNanos; the watchdog uses it too).
  void Observe(int64_t lag_ns, int64_t now_ns);
  // Releases the primary if it is held and stops governing: Observe() does
  // nothing from then on.
  void Stop(int64_t now_ns);

  bool held() const;
  // How many times the primary was held (and of those, released by the
  // watchdog after max_hold_ns), and for how long in all.
  uint64_t holds() const;
  uint64_t forced_releases() const;
  int64_t held_ns(int64_t now_ns) const;

 private:
  void ReleaseLocked(int64_t now_ns);
  void Watch();

  const Options options_;
  const std::function<void()> hold_, release_;
  mutable std::mutex mu_;
  std::condition_variable changed_;  // held_ or stopped_ changed
  bool stopped_ = false;
  bool held_ = false;
  int64_t held_since_ns_ = 0;
  int64_t held_total_ns_ = 0;
  uint64_t holds_ = 0;
  uint64_t forced_ = 0;
  std::thread watchdog_;
};

}  // namespace blackbox
