#include "recorder/rr_chunker.h"

#include <gtest/gtest.h>

#include "common/files.h"

namespace blackbox {
namespace {

std::string Instr(uint32_t n) {
  std::string s(1, '\0');
  for (int i = 3; i >= 0; --i) s.push_back(static_cast<char>(n >> (8 * i)));
  return s;
}
std::string CharWrite() { return std::string("\x16\x00\x00\x00\x01\x00\x00\x00\x01", 9); }

class RrChunkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("bb-chunker-test");
    ASSERT_TRUE(dir.ok());
    dir_.emplace(std::move(*dir));
    StoreOptions o;
    o.path = dir_->path() + "/store";
    auto store = Store::Open(o);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(*store);
    RecordingInfo info;
    info.id = "rec-1";
    info.vm_name = "vm";
    info.state = "recording";
    ASSERT_TRUE(store_->PutRecording(info).ok());
  }
  std::string StoredLog() {
    std::string out;
    Status s = store_->ReadRrLog("rec-1", [&](const RrChunkInfo&, std::string_view raw) {
      out.append(raw);
      return Status::Ok();
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  std::optional<TempDir> dir_;
  std::unique_ptr<Store> store_;
  FakeClock clock_;
};

TEST_F(RrChunkerTest, PartialEventsWaitAndChunksEndOnBoundaries) {
  ChunkerOptions o;
  o.max_chunk_raw_bytes = 50;
  RrChunker c(store_.get(), "rec-1", o, &clock_);
  std::string log;
  for (int i = 0; i < 40; ++i) log += Instr(100) + CharWrite();
  // Feed in awkward 7-byte pieces: events straddle every feed.
  for (size_t i = 0; i < log.size(); i += 7) ASSERT_TRUE(c.Feed(log.substr(i, 7)).ok());
  ASSERT_TRUE(c.Finish().ok());
  EXPECT_EQ(c.trailing_bytes(), 0u);
  EXPECT_EQ(StoredLog(), log);
  auto chunks = store_->ListRrChunks("rec-1");
  ASSERT_TRUE(chunks.ok());
  ASSERT_GT(chunks->size(), 5u);
  uint64_t console = 0;
  for (const auto& ch : *chunks) {
    EXPECT_EQ(ch.raw_size % 14, 0u) << "chunk " << ch.seq << " cuts an event";
    console += ch.console_bytes;
    EXPECT_EQ(ch.last_icount - ch.first_icount, (ch.raw_size / 14) * 100);
  }
  EXPECT_EQ(console, 40u);
  EXPECT_EQ(c.stats().icount, 4000u);
  auto report = store_->VerifyRrChain("rec-1");
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->first_bad.has_value()) << report->problem;
  EXPECT_EQ(report->head, c.head());
}

TEST_F(RrChunkerTest, TrailingPartialEventIsCountedNotStored) {
  RrChunker c(store_.get(), "rec-1", ChunkerOptions{}, &clock_);
  std::string log = Instr(5) + Instr(6);
  ASSERT_TRUE(c.Feed(log + Instr(7).substr(0, 3)).ok());
  ASSERT_TRUE(c.Finish().ok());
  EXPECT_EQ(c.trailing_bytes(), 3u);
  EXPECT_EQ(StoredLog(), log);
}

TEST_F(RrChunkerTest, OpenChunkIsPersistedOnIntervalAndSealedByAge) {
  ChunkerOptions o;
  o.persist_interval_ns = 1'000'000'000;
  o.max_chunk_age_ns = 10'000'000'000;
  RrChunker c(store_.get(), "rec-1", o, &clock_);
  ASSERT_TRUE(c.Feed(Instr(1)).ok());
  clock_.Advance(1'000'000'001);
  ASSERT_TRUE(c.Tick().ok());
  // A crash now would keep the first event: it is in the store.
  EXPECT_EQ(StoredLog(), Instr(1));
  ASSERT_TRUE(c.Feed(Instr(2)).ok());
  ASSERT_TRUE(c.Tick().ok());  // not due yet
  EXPECT_EQ(StoredLog(), Instr(1));
  clock_.Advance(1'000'000'001);
  ASSERT_TRUE(c.Tick().ok());
  EXPECT_EQ(StoredLog(), Instr(1) + Instr(2));
  EXPECT_EQ(store_->ListRrChunks("rec-1")->size(), 1u) << "grown in place, same seq";
  clock_.Advance(10'000'000'000);
  ASSERT_TRUE(c.Tick().ok());  // sealed by age
  ASSERT_TRUE(c.Feed(Instr(3)).ok());
  ASSERT_TRUE(c.Finish().ok());
  auto chunks = store_->ListRrChunks("rec-1");
  ASSERT_EQ(chunks->size(), 2u);
  EXPECT_EQ((*chunks)[1].prev_chain, (*chunks)[0].chain);
  EXPECT_EQ(StoredLog(), Instr(1) + Instr(2) + Instr(3));
}

TEST_F(RrChunkerTest, GarbageFromQemuIsAnError) {
  RrChunker c(store_.get(), "rec-1", ChunkerOptions{}, &clock_);
  Status s = c.Feed(Instr(1) + std::string(1, '\xee'));
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_NE(s.message().find("offset 17"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace blackbox
