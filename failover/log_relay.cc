#include "failover/log_relay.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/clock.h"
#include "common/files.h"

namespace blackbox {

namespace {

constexpr int kPollMs = 50;  // how often a blocked relay looks at Abort()

// Opens a FIFO (or file), waiting for the FIFO's other end unless aborted.
// Abort() unblocks a waiting open() by opening the other end itself.
UniqueFd OpenEnd(const std::string& path, int flags, const std::atomic<bool>& abort) {
  while (!abort.load()) {
    int fd = ::open(path.c_str(), flags | O_CLOEXEC);
    if (fd >= 0) return UniqueFd(fd);
    if (errno != EINTR) break;
  }
  return UniqueFd();
}

// Waits until fd is ready for `events` or the relay is aborted.
bool WaitReady(int fd, short events, const std::atomic<bool>& abort) {
  while (!abort.load()) {
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, kPollMs);
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
  return false;
}

}  // namespace

LogRelay::LogRelay(std::string from, std::string to, Options options)
    : from_(std::move(from)), to_(std::move(to)), options_(options) {
  thread_ = std::thread([this] {
    // A follower that goes away must not kill the process: its write fails
    // with EPIPE instead (SIGPIPE is sent to the writing thread).
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
    Run();
    done_.store(true);
  });
}

LogRelay::~LogRelay() {
  if (!done_.load()) Abort();
  Join();
}

void LogRelay::Join() {
  if (thread_.joinable()) thread_.join();
}

void LogRelay::Abort() {
  abort_.store(true);
  // A relay blocked opening one end of a FIFO: open the other end ourselves
  // (non-blocking, so nothing waits here), which lets its open() return.
  int w = ::open(from_.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (w >= 0) ::close(w);
  if (!to_.empty()) {
    int r = ::open(to_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (r >= 0) ::close(r);
  }
}

int64_t LogRelay::ArrivalNanos(uint64_t offset) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::upper_bound(arrivals_.begin(), arrivals_.end(), offset,
                             [](uint64_t off, const auto& a) { return off < a.first; });
  return it == arrivals_.end() ? -1 : it->second;
}

std::vector<std::pair<uint64_t, int64_t>> LogRelay::Arrivals() const {
  std::lock_guard<std::mutex> lock(mu_);
  return arrivals_;
}

void LogRelay::Run() {
  UniqueFd in = OpenEnd(from_, O_RDONLY, abort_);
  if (!in.valid()) return;
  UniqueFd out;
  if (!to_.empty()) {
    out = OpenEnd(to_, O_WRONLY, abort_);
    if (!out.valid()) return;
  }
  // From here on the relay polls, so that Abort() is seen within kPollMs.
  ::fcntl(in.get(), F_SETFL, ::fcntl(in.get(), F_GETFL) | O_NONBLOCK);
  if (out.valid()) ::fcntl(out.get(), F_SETFL, ::fcntl(out.get(), F_GETFL) | O_NONBLOCK);
  std::vector<char> buf(1 << 16);
  Clock& clock = RealClock::Get();
  while (true) {
    if (!WaitReady(in.get(), POLLIN, abort_)) return;
    ssize_t n = ::read(in.get(), buf.data(), buf.size());
    if (n == 0) break;  // the writer closed the log
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return;
    }
    const int64_t now = clock.MonotonicNanos();
    {
      std::lock_guard<std::mutex> lock(mu_);
      arrivals_.emplace_back(bytes_.load() + static_cast<uint64_t>(n), now);
      if (options_.keep_copy) copy_.append(buf.data(), static_cast<size_t>(n));
    }
    bytes_.fetch_add(static_cast<uint64_t>(n));
    for (ssize_t off = 0; out.valid() && off < n;) {
      if (!WaitReady(out.get(), POLLOUT, abort_)) return;
      ssize_t w = ::write(out.get(), buf.data() + off, static_cast<size_t>(n - off));
      if (w < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return;  // the follower went away
      }
      off += w;
    }
  }
  // The end of the stream is when the source ended: noted before the
  // follower can see it (closing `to`), so that no go-live precedes it.
  end_wall_ns_.store(clock.WallNanos());
  out.Reset();
  ok_.store(true);
}

}  // namespace blackbox
