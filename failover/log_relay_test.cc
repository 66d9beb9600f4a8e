#include "failover/log_relay.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "common/clock.h"
#include "common/files.h"

namespace blackbox {
namespace {

class LogRelayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("bb-log-relay-test");
    ASSERT_TRUE(dir.ok());
    dir_.emplace(std::move(dir).value());
    from_ = dir_->path() + "/from.fifo";
    to_ = dir_->path() + "/to.fifo";
    ASSERT_EQ(::mkfifo(from_.c_str(), 0600), 0);
    ASSERT_EQ(::mkfifo(to_.c_str(), 0600), 0);
  }

  // Reads `path` to its end.
  static std::string ReadAll(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    std::string out;
    char buf[4096];
    ssize_t n;
    while (fd.valid() && (n = ::read(fd.get(), buf, sizeof(buf))) > 0) out.append(buf, n);
    return out;
  }

  std::optional<TempDir> dir_;
  std::string from_, to_;
};

TEST_F(LogRelayTest, CopiesTheLogUntilTheWriterClosesAndNotesArrivals) {
  LogRelay relay(from_, to_, {.keep_copy = true});
  std::string received;
  std::thread reader([&] { received = ReadAll(to_); });
  const int64_t before = RealClock::Get().MonotonicNanos();
  {
    UniqueFd w(::open(from_.c_str(), O_WRONLY | O_CLOEXEC));
    ASSERT_TRUE(w.valid());
    ASSERT_TRUE(WriteAll(w.get(), "header-", "from").ok());
    // The first piece is relayed before the second is written.
    while (relay.bytes() < 7) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_TRUE(WriteAll(w.get(), std::string(200000, 'x'), "from").ok());
  }
  relay.Join();
  reader.join();  // ends only because the relay closed `to`
  EXPECT_TRUE(relay.ok());
  EXPECT_TRUE(relay.done());
  EXPECT_EQ(relay.bytes(), 200007u);
  EXPECT_EQ(received, "header-" + std::string(200000, 'x'));
  EXPECT_EQ(relay.copy(), received);
  const int64_t first = relay.ArrivalNanos(0), last = relay.ArrivalNanos(200006);
  EXPECT_GE(first, before);
  EXPECT_GE(last - first, 20'000'000) << "the second piece arrived after the pause";
  EXPECT_EQ(relay.ArrivalNanos(6), first);
  EXPECT_EQ(relay.ArrivalNanos(200007), -1) << "past the end";
  EXPECT_GT(relay.end_wall_ns(), 0);
}

TEST_F(LogRelayTest, WithoutADestinationTheLogIsCountedAndDropped) {
  LogRelay relay(from_, "");
  {
    UniqueFd w(::open(from_.c_str(), O_WRONLY | O_CLOEXEC));
    ASSERT_TRUE(WriteAll(w.get(), std::string(70000, 'y'), "from").ok());
  }
  relay.Join();
  EXPECT_TRUE(relay.ok());
  EXPECT_EQ(relay.bytes(), 70000u);
  EXPECT_TRUE(relay.copy().empty());
}

TEST_F(LogRelayTest, AbortEndsARelayWhoseWriterNeverCame) {
  LogRelay relay(from_, to_);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  relay.Abort();
  relay.Join();
  EXPECT_TRUE(relay.done());
  EXPECT_FALSE(relay.ok());
}

TEST_F(LogRelayTest, AFollowerThatGoesAwayEndsTheRelayWithoutKillingTheProcess) {
  // This test's own writes fail once the relay stopped reading.
  ::signal(SIGPIPE, SIG_IGN);
  LogRelay relay(from_, to_);
  std::thread reader([&] {
    UniqueFd r(::open(to_.c_str(), O_RDONLY | O_CLOEXEC));
    char c;
    ASSERT_EQ(::read(r.get(), &c, 1), 1);
  });  // closes its end after one byte
  UniqueFd w(::open(from_.c_str(), O_WRONLY | O_CLOEXEC));
  ASSERT_TRUE(w.valid());
  const std::string piece(65536, 'z');
  ASSERT_TRUE(WriteAll(w.get(), piece, "from").ok());
  reader.join();
  // Keep writing until the relay noticed (EPIPE) and stopped reading.
  while (!relay.done()) {
    if (!WriteAll(w.get(), piece, "from").ok()) break;
  }
  relay.Join();
  EXPECT_FALSE(relay.ok());
}

}  // namespace
}  // namespace blackbox
