// The link between a primary and its hot standby: copies a record/replay log
// as the primary's QEMU writes it (a FIFO, patch 0001 of qemu-patches/) to
// the FIFO a following QEMU reads (__org.blackbox_follow=on, patch 0002),
// and notes when each piece arrived so that the follower's lag can be told.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace blackbox {

class LogRelay {
 public:
  struct Options {
    // Keep every relayed byte (copy()); otherwise only counts are kept.
    bool keep_copy = false;
  };

  // Starts the relay thread. It opens `from` for reading and, unless `to` is
  // empty (the log is read and dropped), `to` for writing; opening a FIFO
  // waits for its other end, so both QEMUs may start in any order. The copy
  // ends when the writer of `from` closes it (the primary exited or died);
  // `to` is closed then, which tells the follower the log ended.
  LogRelay(std::string from, std::string to, Options options);
  LogRelay(std::string from, std::string to)
      : LogRelay(std::move(from), std::move(to), Options{}) {}
  // Abort()s and joins.
  ~LogRelay();
  LogRelay(const LogRelay&) = delete;
  LogRelay& operator=(const LogRelay&) = delete;

  // Waits until the copy ended.
  void Join();
  // Ends the copy now, also while an open still waits for the other end.
  void Abort();

  // True once the copy ended, whether complete (ok()) or not.
  bool done() const { return done_.load(); }
  // After Join(): the whole log was relayed (false after an error or Abort()).
  bool ok() const { return ok_.load(); }
  // After Join(), with keep_copy: the bytes relayed.
  const std::string& copy() const { return copy_; }

  // Thread-safe while the relay runs:
  // bytes read from `from` so far;
  uint64_t bytes() const { return bytes_.load(); }
  // the monotonic time (ns) at which the byte at `offset` arrived, -1 if it
  // has not yet;
  int64_t ArrivalNanos(uint64_t offset) const;
  // every piece so far: (offset just past it, monotonic ns it arrived), in
  // order;
  std::vector<std::pair<uint64_t, int64_t>> Arrivals() const;
  // the wall time (ns, CLOCK_REALTIME) at which the source ended (taken
  // just before `to` is closed), 0 before.
  int64_t end_wall_ns() const { return end_wall_ns_.load(); }

 private:
  void Run();

  const std::string from_, to_;
  const Options options_;
  std::atomic<bool> abort_{false}, done_{false}, ok_{false};
  std::atomic<uint64_t> bytes_{0};
  std::atomic<int64_t> end_wall_ns_{0};
  mutable std::mutex mu_;
  // (offset just past a piece, its arrival time), in order.
  std::vector<std::pair<uint64_t, int64_t>> arrivals_;
  std::string copy_;
  std::thread thread_;
};

}  // namespace blackbox
