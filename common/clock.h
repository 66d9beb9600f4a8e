// Time sources. Code that needs the time takes a Clock&, so tests can inject a
// FakeClock and get deterministic timestamps.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace blackbox {

// Nanoseconds since the Unix epoch (wall clock) or since an arbitrary origin
// (monotonic). Thread safety: implementations are thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t WallNanos() = 0;
  virtual int64_t MonotonicNanos() = 0;
};

// The system clocks (CLOCK_REALTIME, CLOCK_MONOTONIC).
class RealClock final : public Clock {
 public:
  int64_t WallNanos() override;
  int64_t MonotonicNanos() override;
  static RealClock& Get();
};

// A clock that only moves when told to. Both readings advance together.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_wall_ns = 1'700'000'000'000'000'000) : wall_(start_wall_ns) {}
  int64_t WallNanos() override { return wall_.load(); }
  int64_t MonotonicNanos() override { return wall_.load() - base_; }
  void Advance(int64_t ns) { wall_ += ns; }

 private:
  std::atomic<int64_t> wall_;
  int64_t base_ = wall_.load();
};

// "2026-11-21T22:10:05.123Z" (UTC, millisecond precision).
std::string FormatWallTime(int64_t wall_ns);
// Parses "30s", "2m", "1h", "500ms", "1.5s"; returns -1 on a malformed value.
int64_t ParseDurationNanos(const std::string& text);
// Parses an RFC 3339 UTC time ("2026-11-21T22:10:05Z", fractional seconds allowed)
// or a number of seconds relative to a base ("+12.5"); returns -1 if malformed.
int64_t ParseTimeNanos(const std::string& text, int64_t base_wall_ns);

}  // namespace blackbox
