#include "recorder/rr_log.h"

#include <gtest/gtest.h>

namespace blackbox::rr {
namespace {

// Builds log bodies the way QEMU's replay_put_* functions do (big-endian).
class LogWriter {
 public:
  LogWriter& U8(uint8_t v) {
    s_.push_back(static_cast<char>(v));
    return *this;
  }
  LogWriter& U32(uint32_t v) {
    for (int i = 3; i >= 0; --i) U8(static_cast<uint8_t>(v >> (8 * i)));
    return *this;
  }
  LogWriter& U64(uint64_t v) {
    U32(static_cast<uint32_t>(v >> 32));
    return U32(static_cast<uint32_t>(v));
  }
  LogWriter& Array(const std::string& data) {
    U32(static_cast<uint32_t>(data.size()));
    s_ += data;
    return *this;
  }
  LogWriter& Instructions(uint32_t n) { return U8(kInstruction).U32(n); }
  LogWriter& Clock(uint64_t v) { return U8(kClock).U64(v); }
  LogWriter& CharWrite(uint32_t res) { return U8(kCharWrite).U32(res).U32(res); }
  LogWriter& Net(const std::string& frame) {
    return U8(kAsync + kAsyncNet).U8(0).U32(0).Array(frame);
  }
  LogWriter& Checkpoint(uint8_t n) { return U8(kCheckpoint + n); }
  const std::string& str() const { return s_; }

 private:
  std::string s_;
};

std::string SampleBody() {
  LogWriter w;
  w.Clock(123456789).Checkpoint(7).Instructions(1000).CharWrite(1).Instructions(500).CharWrite(1);
  w.U8(kAsync + kAsyncBh).U64(42).U8(kAsync + kAsyncBlock).U64(7);
  w.U8(kAsync + kAsyncInput).U32(0).U32(1).U32(30).U8(1);  // key qcode down
  w.U8(kAsync + kAsyncCharRead).U8(0).Array("ls\n");
  w.Net(std::string(60, 'x')).U8(kRandom).U32(0).Array("rand").U8(kInterrupt).U8(kException);
  w.U8(kShutdown + 2).U8(kEnd);
  return w.str();
}

TEST(RrLogTest, RemembersTheLastCompleteEvent) {
  LogWriter w;
  w.Instructions(10).CharWrite(3);
  Parser p;
  ASSERT_TRUE(p.Parse(w.str()).ok());
  EXPECT_EQ(p.stats().last_event, kCharWrite);
  EXPECT_EQ(p.stats().last_console_bytes, 3u);
  LogWriter more;
  more.Instructions(5).U8(kCharWrite).U32(1);  // the last write is cut short
  auto used = p.Parse(more.str());
  ASSERT_TRUE(used.ok());
  EXPECT_EQ(p.stats().last_event, kInstruction);
  EXPECT_EQ(p.stats().last_console_bytes, 0u);
  EXPECT_EQ(Parser().stats().last_event, -1);
}

TEST(RrLogTest, ParsesEveryEventKindAndCounts) {
  std::string body = SampleBody();
  auto scan = ScanBody(body);
  ASSERT_TRUE(scan.ok()) << scan.status().ToString();
  EXPECT_EQ(scan->complete_bytes, body.size());
  EXPECT_EQ(scan->stats.icount, 1500u);
  EXPECT_EQ(scan->stats.console_bytes, 2u);
  EXPECT_EQ(scan->stats.net_frames, 1u);
  EXPECT_EQ(scan->stats.events, 16u);
  EXPECT_TRUE(scan->stats.saw_end);
  EXPECT_EQ(scan->stats.shutdown_cause, 2);
}

TEST(RrLogTest, EveryTruncationStopsAtAnEventBoundary) {
  std::string body = SampleBody();
  // Collect the true event boundaries by feeding one byte more each time.
  size_t previous = 0;
  for (size_t cut = 0; cut <= body.size(); ++cut) {
    auto scan = ScanBody(std::string_view(body).substr(0, cut));
    ASSERT_TRUE(scan.ok()) << "cut " << cut << ": " << scan.status().ToString();
    EXPECT_LE(scan->complete_bytes, cut);
    EXPECT_GE(scan->complete_bytes, previous) << "boundaries never move backwards";
    previous = scan->complete_bytes;
    // Re-scanning exactly the complete prefix consumes all of it.
    auto again = ScanBody(std::string_view(body).substr(0, scan->complete_bytes));
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->complete_bytes, scan->complete_bytes);
  }
}

TEST(RrLogTest, IncrementalFeedEqualsWholeScan) {
  std::string body = SampleBody();
  for (size_t step : {1u, 3u, 7u, 64u}) {
    Parser p;
    std::string pending;
    size_t total = 0;
    for (size_t i = 0; i < body.size(); i += step) {
      pending += body.substr(i, step);
      auto n = p.Parse(pending);
      ASSERT_TRUE(n.ok()) << n.status().ToString();
      total += *n;
      pending.erase(0, *n);
    }
    EXPECT_EQ(total, body.size());
    EXPECT_TRUE(pending.empty());
    EXPECT_EQ(p.stats().icount, 1500u);
  }
}

TEST(RrLogTest, UnknownEventCodeIsCorruptionWithOffset) {
  LogWriter w;
  w.Instructions(5).U8(200);
  auto scan = ScanBody(w.str());
  ASSERT_FALSE(scan.ok());
  EXPECT_EQ(scan.status().code(), StatusCode::kCorruption);
  EXPECT_NE(scan.status().message().find("unknown event code 200"), std::string::npos);
  EXPECT_NE(scan.status().message().find("offset 17"), std::string::npos);  // 12 header + 5
}

TEST(RrLogTest, OversizedArrayIsCorruptionNotAWait) {
  LogWriter w;
  w.U8(kAsync + kAsyncNet).U8(0).U32(0).U32(kMaxArrayBytes + 1);
  auto scan = ScanBody(w.str());
  ASSERT_FALSE(scan.ok());
  EXPECT_NE(scan.status().message().find("size cap"), std::string::npos);
}

TEST(RrLogTest, DataAfterEndIsCorruption) {
  LogWriter w;
  w.U8(kEnd).Instructions(1);
  EXPECT_EQ(ScanBody(w.str()).status().code(), StatusCode::kCorruption);
}

TEST(RrLogTest, HeaderChecks) {
  EXPECT_TRUE(CheckHeader(MakeHeader()).ok());
  EXPECT_EQ(MakeHeader().substr(0, 4), std::string("\x00\xe0\x20\x0c", 4));
  EXPECT_EQ(CheckHeader(std::string(12, '\0')).code(), StatusCode::kFailedPrecondition);
  std::string bad = MakeHeader();
  bad[3] = 0x0d;
  EXPECT_EQ(CheckHeader(bad).code(), StatusCode::kCorruption);
  EXPECT_EQ(CheckHeader("short").code(), StatusCode::kCorruption);
}

TEST(RrLogTest, EventNames) {
  EXPECT_EQ(EventName(kAsync + kAsyncNet), "async:net");
  EXPECT_EQ(EventName(kCheckpoint + 7), "checkpoint:init");
  EXPECT_EQ(EventName(kEnd), "end");
  EXPECT_EQ(EventName(250), "unknown(250)");
}

}  // namespace
}  // namespace blackbox::rr
