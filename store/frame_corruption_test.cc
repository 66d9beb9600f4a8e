// Tests that damaged frame batches and their index entries are reported, never trusted.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>

#include "store/captures_test_util.h"
#include "store/store.h"
#include "store/store_test_util.h"

namespace blackbox::store_test {
namespace {

using ::testing::HasSubstr;

// ---- frame corruption ----

class FrameCorruptionTest : public CaptureTest {
 protected:
  void SetUp() override {
    CaptureTest::SetUp();
    AppendLab();
    Close();
  }
  // Reopens and checks that VerifyFrameChain and ReadFrames both blame batch `seq` with `what`.
  void ExpectBad(uint64_t seq, const std::string& what) {
    Reopen();
    const std::string prefix = "capture cap batch " + std::to_string(seq) + ": ";
    auto report = store_->VerifyFrameChain("cap");
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    ASSERT_TRUE(report->first_bad.has_value());
    EXPECT_EQ(*report->first_bad, seq) << report->problem;
    EXPECT_THAT(report->problem, HasSubstr(prefix));
    EXPECT_THAT(report->problem, HasSubstr(what));
    EXPECT_EQ(report->chunks, seq);

    auto [s, got] = Read("cap");
    EXPECT_EQ(s.code(), StatusCode::kCorruption);
    EXPECT_EQ(s.message(), report->problem);
    size_t before = 0;  // frames of the batches before seq
    auto batches = LabBatches();
    for (uint64_t i = 0; i < seq; ++i) before += batches[i].size();
    ASSERT_EQ(got.size(), before);
    for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(SameFrame(got[i], frames_[i]));
  }
  // Rewrites the index entry of `seq` with f applied, recomputing chain and checksum the way
  // someone altering the store consistently would.
  void AlterIndex(uint64_t seq, const std::function<void(FrameBatchInfo*)>& f) {
    RawDb raw(path_);
    FrameBatchInfo info = infos_[seq];
    f(&info);
    info.chain = ComputeFrameBatchChain(info);
    raw.Put("frame_index", SeqKey("cap", seq), EncodeFrameIndex(info));
  }
};

TEST_F(FrameCorruptionTest, FlippedPayloadByte) {
  {
    RawDb raw(path_);
    std::string v = raw.Get("frames", SeqKey("cap", 2));
    v[6 + v.size() / 2] ^= 0x40;
    raw.Put("frames", SeqKey("cap", 2), v);
  }
  ExpectBad(2, "payload does not decompress");
}

TEST_F(FrameCorruptionTest, TruncatedPayload) {
  {
    RawDb raw(path_);
    std::string v = raw.Get("frames", SeqKey("cap", 1));
    v.pop_back();
    raw.Put("frames", SeqKey("cap", 1), v);
  }
  ExpectBad(1, "truncated or altered");
}

TEST_F(FrameCorruptionTest, MissingPayload) {
  { RawDb(path_).Delete("frames", SeqKey("cap", 3)); }
  ExpectBad(3, "payload missing (index entry without stored batch)");
}

TEST_F(FrameCorruptionTest, BadPayloadMagic) {
  {
    RawDb raw(path_);
    // An rr chunk's magic on a frame batch.
    std::string v = raw.Get("frames", SeqKey("cap", 0));
    v[2] = 'R';
    v[3] = 'C';
    raw.Put("frames", SeqKey("cap", 0), v);
  }
  ExpectBad(0, "bad magic");
}

TEST_F(FrameCorruptionTest, FlippedIndexByteFailsTheChecksum) {
  {
    RawDb raw(path_);
    std::string idx = raw.Get("frame_index", SeqKey("cap", 1));
    idx[kFiFirst + 7] ^= 1;
    raw.Put("frame_index", SeqKey("cap", 1), idx);
  }
  ExpectBad(1, "checksum mismatch");
  EXPECT_EQ(store_->ListFrameBatches("cap").status().code(), StatusCode::kCorruption);
  EXPECT_THAT(store_->ListFrameBatches("cap").status().message(), HasSubstr("capture cap batch 1"));
}

TEST_F(FrameCorruptionTest, AlteredIndexFieldFailsTheChain) {
  {
    RawDb raw(path_);
    std::string idx = raw.Get("frame_index", SeqKey("cap", 2));
    idx[kFiPorts + 3] ^= 1;  // first port
    ResealFrameIndex(&idx);  // a consistent edit, not bit rot
    raw.Put("frame_index", SeqKey("cap", 2), idx);
  }
  ExpectBad(2, "chain hash mismatch");
}

TEST_F(FrameCorruptionTest, IndexEntryClaimingTooManyPorts) {
  {
    RawDb raw(path_);
    std::string idx = raw.Get("frame_index", SeqKey("cap", 3));
    SetBE(&idx, kFiPortCount, 1u << 30, 4);  // claims a billion ports
    ResealFrameIndex(&idx);
    raw.Put("frame_index", SeqKey("cap", 3), idx);
  }
  ExpectBad(3, "index corrupted");
}

TEST_F(FrameCorruptionTest, IndexSummaryThatDisagreesWithTheFrames) {
  // Each altered consistently (chain recomputed) on the last batch, so only the frames tell.
  struct Case {
    std::function<void(FrameBatchInfo*)> alter;
    std::string what;
  };
  for (const Case& c : std::vector<Case>{
           {[](FrameBatchInfo* b) { b->frame_count = 2; },
            "payload holds 1 frames but the index says 2"},
           {[](FrameBatchInfo* b) { b->frame_count = 0; }, "payload holds more than the 0 frames"},
           {[](FrameBatchInfo* b) { b->dropped_count = 1; }, "dropped_count 1"},
           {[](FrameBatchInfo* b) { b->first_wall_ns = 3999; }, "first_wall_ns 3999"},
           {[](FrameBatchInfo* b) { b->last_wall_ns = 9999; }, "last_wall_ns 9999"},
           {[](FrameBatchInfo* b) {
              b->ports = {1, 2, 3, 10};
            },
            "ports [1,2,3,10]"},
       }) {
    SCOPED_TRACE(c.what);
    AlterIndex(3, c.alter);
    ExpectBad(3, c.what);
    Close();
  }
  // ReadFrames checks the summary of every batch it reads (VerifyFrameChain, of all).
  AlterIndex(3, [](FrameBatchInfo* b) { b->ports = {1, 2, 3, 10}; });
  Reopen();
  FrameQuery q;
  q.ports = {1};
  EXPECT_EQ(Read("cap", q).first.code(), StatusCode::kCorruption);
}

TEST_F(FrameCorruptionTest, DeletedMiddleBatch) {
  {
    RawDb raw(path_);
    raw.Delete("frame_index", SeqKey("cap", 2));
    raw.Delete("frames", SeqKey("cap", 2));
  }
  ExpectBad(2, "batch 2 is missing (next stored batch is 3)");
  // Even a query that would not read batch 2 or 3 notices: the index chain is always walked.
  FrameQuery q;
  q.until_ns = 1500;
  EXPECT_EQ(Read("cap", q).first.code(), StatusCode::kCorruption);
}

TEST_F(FrameCorruptionTest, MovedIndexEntry) {
  {
    RawDb raw(path_);
    raw.Put("frame_index", SeqKey("cap", 1), raw.Get("frame_index", SeqKey("cap", 2)));
  }
  ExpectBad(1, "belongs to batch 2");
}

TEST_F(FrameCorruptionTest, BrokenPrevChain) {
  AlterIndex(2, [](FrameBatchInfo* i) { i->prev_chain = Sha256Of("forged"); });
  ExpectBad(2, "prev_chain does not match the chain of batch 1");
}

TEST_F(FrameCorruptionTest, RemovedTailIndexEntry) {
  { RawDb(path_).Delete("frame_index", SeqKey("cap", 3)); }
  ExpectBad(3, "payload stored without an index entry");
}

TEST_F(FrameCorruptionTest, AppendRefusesToExtendABrokenHead) {
  {
    RawDb raw(path_);
    std::string idx = raw.Get("frame_index", SeqKey("cap", 3));
    idx[kFiFrameCount] ^= 1;
    raw.Put("frame_index", SeqKey("cap", 3), idx);
  }
  Reopen();
  auto r = store_->AppendFrameBatch("cap", LabBatches()[0]);
  EXPECT_EQ(r.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(r.status().message(), HasSubstr("capture cap batch 3"));
}

TEST_F(CaptureTest, MalformedPayloadsAreCorruption) {
  const std::vector<CapturedFrame> base = {MakeFrame(10, 1, {2, 3}), MakeFrame(20, 2, {}, "why")};
  const std::string raw = EncodeFramesRaw(base);
  const FrameBatchInfo summary = SummaryOf(base);
  std::string f1 = EncodeFramesRaw({base[1]});
  SetBE(&f1, 8 + 4 + 2 + 1 + 3, 0x7fffffff, 4);  // frame 1's frame_len
  const std::string huge_frame = EncodeFramesRaw({base[0]}) + f1;
  std::string many_egress = raw;
  SetBE(&many_egress, 8 + 4, 0xffff, 2);  // frame 0 claims 65535 egress ports
  struct Case {
    std::string id, raw, what;
    FrameBatchInfo summary;
  };
  FrameBatchInfo empty_summary;
  std::vector<Case> cases = {
      {"trailing", raw + std::string(1, '\0'), "payload holds more than the 2 frames", summary},
      {"cut", raw.substr(0, raw.size() - 1), "frame 1 (at byte 91) is truncated", summary},
      {"huge", huge_frame, "frame 1 claims 2147483647 bytes, above the cap", summary},
      {"egress", many_egress, "frame 0 (at byte 0) is truncated", summary},
      {"fewer", EncodeFramesRaw({base[0]}), "payload holds 1 frames but the index says 2", summary},
      {"none", "", "index entry has no frames", empty_summary},
  };
  Close();
  {
    RawDb db(path_);
    for (const auto& c : cases) PutRawBatch(&db, c.id, c.raw, c.summary);
    PutRawBatch(&db, "control", raw, summary);
  }
  Reopen();
  for (const auto& c : cases) {
    SCOPED_TRACE(c.id);
    auto [s, got] = Read(c.id);
    EXPECT_EQ(s.code(), StatusCode::kCorruption);
    EXPECT_THAT(s.message(), HasSubstr("capture " + c.id + " batch 0: " + c.what));
    EXPECT_TRUE(got.empty());
    EXPECT_EQ(store_->VerifyFrameChain(c.id)->problem, s.message());
  }
  auto [s, got] = Read("control");
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_TRUE(SameFrame(got[1], base[1]));
}

TEST_F(CaptureTest, MutatedPayloadsWithRecomputedHashesNeverCrash) {
  std::vector<CapturedFrame> base = {MakeFrame(10, 1, {2, 3}, "", 40),
                                     MakeFrame(20, 2, {}, "no such port", 30),
                                     MakeFrame(30, 3, {1}, "", 0), MakeFrame(15, 1, {2}, "", 50)};
  const std::string raw = EncodeFramesRaw(base);
  const FrameBatchInfo summary = SummaryOf(base);
  uint64_t x = 0x243f6a8885a308d3ull;
  auto rnd = [&](uint64_t n) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return n == 0 ? 0 : x % n;
  };
  const int kCases = 400;
  std::vector<std::string> mutated;
  for (int i = 0; i < kCases; ++i) {
    std::string m = raw;
    for (int k = 0, n = 1 + static_cast<int>(rnd(3)); k < n && i > 0; ++k) {
      switch (rnd(7)) {
        case 0:  // flip a bit
          if (!m.empty()) m[rnd(m.size())] ^= static_cast<char>(1 << rnd(8));
          break;
        case 1:  // a random byte
          if (!m.empty()) m[rnd(m.size())] = static_cast<char>(rnd(256));
          break;
        case 2:  // truncate
          m.resize(rnd(m.size() + 1));
          break;
        case 3:  // append garbage
          for (uint64_t j = 0, g = 1 + rnd(30); j < g; ++j)
            m.push_back(static_cast<char>(rnd(256)));
          break;
        case 4:  // a length-sized field at a random place: big, small or random
          if (m.size() >= 4) {
            uint64_t at = rnd(m.size() - 3);
            uint64_t v = rnd(3) == 0 ? 0xffffffff : rnd(3) == 0 ? rnd(8) : rnd(1ull << 32);
            SetBE(&m, at, v, 4);
          }
          break;
        case 5:  // insert bytes
          m.insert(rnd(m.size() + 1), std::string(1 + rnd(8), static_cast<char>(rnd(256))));
          break;
        case 6:  // delete a range
          if (!m.empty()) {
            uint64_t at = rnd(m.size());
            m.erase(at, 1 + rnd(12));
          }
          break;
      }
    }
    mutated.push_back(m);
  }
  Close();
  {
    RawDb db(path_);
    for (int i = 0; i < kCases; ++i)
      PutRawBatch(&db, "fz" + std::to_string(i), mutated[i], summary);
  }
  Reopen();
  int corrupt = 0;
  for (int i = 0; i < kCases; ++i) {
    const std::string id = "fz" + std::to_string(i);
    SCOPED_TRACE(id);
    auto [s, got] = Read(id);
    auto report = store_->VerifyFrameChain(id);
    ASSERT_TRUE(report.ok());
    if (s.ok()) {
      // Whatever decodes is exactly what the bytes say, and agrees with the index.
      EXPECT_EQ(EncodeFramesRaw(got), mutated[i]);
      EXPECT_FALSE(report->first_bad.has_value());
    } else {
      ++corrupt;
      EXPECT_EQ(s.code(), StatusCode::kCorruption);
      EXPECT_THAT(s.message(), HasSubstr("capture " + id + " batch 0: "));
      EXPECT_EQ(report->problem, s.message());
      EXPECT_TRUE(got.empty());
    }
  }
  EXPECT_TRUE(Read("fz0").first.ok());  // the unmutated control
  EXPECT_GT(corrupt, kCases / 4);
  EXPECT_LT(corrupt, kCases);
}

}  // namespace
}  // namespace blackbox::store_test
