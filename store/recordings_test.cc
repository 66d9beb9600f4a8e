// Tests of RecordingInfo, recordings, rr chunks (and their corruption), console and events.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zstd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <limits>
#include <set>
#include <thread>

#include "store/store.h"
#include "store/store_test_util.h"

namespace blackbox::store_test {
namespace {

using ::testing::HasSubstr;

// Field offsets of an rr_index value.
constexpr size_t kOffSeq = 5, kOffRawOffset = 13, kOffRawSize = 21, kOffStoredSize = 25,
                 kOffFirstIcount = 29, kOffRawSha = 69, kOffPrevChain = 101, kOffChain = 133,
                 kOffChecksum = 165, kIndexSize = 197;

std::string EncodeIndex(const RrChunkInfo& i) {
  std::string v = "BBRI";
  v.push_back(1);
  PutBE(&v, i.seq, 8);
  PutBE(&v, i.raw_offset, 8);
  PutBE(&v, i.raw_size, 4);
  PutBE(&v, i.stored_size, 4);
  PutBE(&v, i.first_icount, 8);
  PutBE(&v, i.last_icount, 8);
  PutBE(&v, static_cast<uint64_t>(i.first_wall_ns), 8);
  PutBE(&v, static_cast<uint64_t>(i.last_wall_ns), 8);
  PutBE(&v, i.event_count, 4);
  PutBE(&v, i.console_bytes, 4);
  v += Digest(i.raw_sha256) + Digest(i.prev_chain) + Digest(i.chain);
  v += Digest(Sha256Of(v));
  return v;
}
void Reseal(std::string* v) {
  Sha256Digest d = Sha256Of(std::string_view(*v).substr(0, kOffChecksum));
  v->replace(kOffChecksum, 32, Digest(d));
}

// ---- RecordingInfo JSON ----

TEST(RecordingInfoTest, JsonRoundTripKeepsExtra) {
  RecordingInfo r = MakeRecording("r1", 5);
  r.ended_wall_ns = 9;
  nlohmann::json j = r.ToJson();
  EXPECT_EQ(j["id"], "r1");
  EXPECT_EQ(j["vm_name"], "vm-r1");
  EXPECT_EQ(j["state"], "recording");
  EXPECT_EQ(j["started_wall_ns"], 5);
  EXPECT_EQ(j["ended_wall_ns"], 9);
  EXPECT_EQ(j["spec"]["memory_mb"], 256);  // extra merged at top level
  auto back = RecordingInfo::FromJson(j);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->id, "r1");
  EXPECT_EQ(back->ended_wall_ns, 9);
  EXPECT_EQ(back->extra, r.extra);
  EXPECT_FALSE(back->extra.contains("id"));
}

TEST(RecordingInfoTest, NamedFieldsWinOverExtra) {
  RecordingInfo r = MakeRecording("r1", 5);
  r.extra["id"] = "other";
  EXPECT_EQ(r.ToJson()["id"], "r1");
}

TEST(RecordingInfoTest, FromJsonValidatesTypes) {
  nlohmann::json good = MakeRecording("r1", 5).ToJson();
  for (const char* field : {"id", "vm_name", "state"}) {
    nlohmann::json j = good;
    j[field] = 7;
    auto r = RecordingInfo::FromJson(j);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr(field));
  }
  for (const char* field : {"started_wall_ns", "ended_wall_ns"}) {
    for (nlohmann::json bad : {nlohmann::json("5"), nlohmann::json(1.5),
                               nlohmann::json(std::numeric_limits<uint64_t>::max())}) {
      nlohmann::json j = good;
      j[field] = bad;
      auto r = RecordingInfo::FromJson(j);
      ASSERT_FALSE(r.ok()) << field << " " << bad;
      EXPECT_THAT(r.status().message(), HasSubstr(field));
    }
  }
  nlohmann::json no_id = good;
  no_id.erase("id");
  EXPECT_THAT(RecordingInfo::FromJson(no_id).status().message(), HasSubstr("id"));
  EXPECT_FALSE(RecordingInfo::FromJson(nlohmann::json::array()).ok());
}

// ---- recordings ----

TEST_F(StoreTest, RecordingRoundTripAndList) {
  ASSERT_TRUE(store_->PutRecording(MakeRecording("newer", 200)).ok());
  ASSERT_TRUE(store_->PutRecording(MakeRecording("older", 100)).ok());
  auto got = store_->GetRecording("older");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->vm_name, "vm-older");
  EXPECT_EQ(got->started_wall_ns, 100);
  EXPECT_EQ(got->extra["inputs"], nlohmann::json({"a", "b"}));

  RecordingInfo changed = MakeRecording("older", 100);
  changed.state = "complete";
  changed.ended_wall_ns = 150;
  ASSERT_TRUE(store_->PutRecording(changed).ok());
  EXPECT_EQ(store_->GetRecording("older")->state, "complete");

  auto list = store_->ListRecordings();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].id, "older");
  EXPECT_EQ((*list)[1].id, "newer");

  auto missing = store_->GetRecording("nope");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("nope"));

  RecordingInfo bad_extra = MakeRecording("x", 1);
  bad_extra.extra = nlohmann::json::array();
  EXPECT_EQ(store_->PutRecording(bad_extra).code(), StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, ResolveRecordingId) {
  for (const char* id : {"abc", "abcd", "abx-1", "zzz"}) {
    ASSERT_TRUE(store_->PutRecording(MakeRecording(id, 1)).ok());
  }
  EXPECT_EQ(store_->ResolveRecordingId("abc").value(), "abc");  // exact wins over prefix
  EXPECT_EQ(store_->ResolveRecordingId("abcd").value(), "abcd");
  EXPECT_EQ(store_->ResolveRecordingId("abx").value(), "abx-1");
  EXPECT_EQ(store_->ResolveRecordingId("z").value(), "zzz");

  auto amb = store_->ResolveRecordingId("ab");
  EXPECT_EQ(amb.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(amb.status().message(), "recording prefix 'ab' is ambiguous: abc, abcd, abx-1");

  auto none = store_->ResolveRecordingId("q");
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(none.status().message(), "no recording 'q'");

  EXPECT_EQ(store_->ResolveRecordingId("").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, StoredRecordingThatIsNotJsonIsCorruptionNamingKey) {
  ASSERT_TRUE(store_->PutRecording(MakeRecording("good", 1)).ok());
  Close();
  {
    RawDb raw(path_);
    raw.Put("recordings", "broken", "{not json");
    raw.Put("recordings", "wrongtype", R"({"id":"wrongtype","started_wall_ns":"x"})");
  }
  Reopen();
  auto r = store_->GetRecording("broken");
  EXPECT_EQ(r.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(r.status().message(), HasSubstr("broken"));
  auto w = store_->GetRecording("wrongtype");
  EXPECT_EQ(w.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(w.status().message(), HasSubstr("wrongtype"));
  EXPECT_THAT(w.status().message(), HasSubstr("started_wall_ns"));
  EXPECT_EQ(store_->ListRecordings().status().code(), StatusCode::kCorruption);
  EXPECT_TRUE(store_->GetRecording("good").ok());
}

// ---- ids ----

TEST_F(StoreTest, BadRecordingIdsAreRejectedEverywhere) {
  std::vector<std::string> bad = {"",    std::string(129, 'a'), "a/b",  std::string("a\0b", 3),
                                  "a b", "caf\xc3\xa9",         "../x", "a\n"};
  ConsolePiece piece{0, 1, "x"};
  for (const auto& id : bad) {
    SCOPED_TRACE(id);
    auto expect_invalid = [](const Status& s) {
      EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    };
    RecordingInfo r = MakeRecording(id, 1);
    expect_invalid(store_->PutRecording(r));
    expect_invalid(store_->GetRecording(id).status());
    expect_invalid(store_->ResolveRecordingId(id).status());
    expect_invalid(store_->AppendRrChunk(id, RrChunkInfo{}, "x").status());
    expect_invalid(store_->ListRrChunks(id).status());
    expect_invalid(store_->ReadRrChunk(id, 0).status());
    expect_invalid(store_->VerifyRrChain(id).status());
    expect_invalid(
        store_->ReadRrLog(id, [](const RrChunkInfo&, std::string_view) { return Status::Ok(); }));
    expect_invalid(store_->AppendConsole(id, piece));
    expect_invalid(store_->ReadConsole(id).status());
    expect_invalid(store_->PutEvent(id, 1, {{"kind", "x"}}));
    expect_invalid(store_->ListEvents(id).status());
    expect_invalid(store_->GetUsage(id).status());
  }
  std::string longest(128, 'a');
  EXPECT_TRUE(store_->PutRecording(MakeRecording(longest, 1)).ok());
  EXPECT_TRUE(store_->PutRecording(MakeRecording("A-z_0.9", 1)).ok());
}

TEST_F(StoreTest, RecordingsWithCommonPrefixesDoNotMix) {
  for (const char* id : {"a", "a.b", "ab"}) {
    AppendChunks(id, 2, 100);
    ASSERT_TRUE(store_->AppendConsole(id, {0, 1, id}).ok());
    ASSERT_TRUE(store_->PutEvent(id, 1, {{"kind", id}}).ok());
  }
  for (const char* id : {"a", "a.b", "ab"}) {
    EXPECT_EQ(store_->ListRrChunks(id)->size(), 2u);
    EXPECT_TRUE(store_->VerifyRrChain(id)->first_bad == std::nullopt);
    auto console = store_->ReadConsole(id);
    ASSERT_EQ(console->size(), 1u);
    EXPECT_EQ((*console)[0].bytes, id);
    auto events = store_->ListEvents(id);
    ASSERT_EQ(events->size(), 1u);
    EXPECT_EQ((*events)[0].body["kind"], id);
  }
}

// ---- rr chunks ----

TEST_F(StoreTest, RrChunksRoundTripAndVerify) {
  std::vector<RrChunkInfo> infos;
  std::vector<std::string> raws;
  AppendChunks("rec", 5, 10000, &infos, &raws);

  auto list = store_->ListRrChunks("rec");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    const RrChunkInfo& a = (*list)[i];
    const RrChunkInfo& b = infos[i];
    EXPECT_EQ(a.seq, i);
    EXPECT_EQ(a.raw_offset, i * 10000);
    EXPECT_EQ(a.raw_size, 10000u);
    EXPECT_EQ(a.stored_size, b.stored_size);
    EXPECT_LT(a.stored_size, a.raw_size);
    EXPECT_EQ(a.first_icount, b.first_icount);
    EXPECT_EQ(a.last_icount, b.last_icount);
    EXPECT_EQ(a.first_wall_ns, b.first_wall_ns);
    EXPECT_EQ(a.last_wall_ns, b.last_wall_ns);
    EXPECT_EQ(a.event_count, b.event_count);
    EXPECT_EQ(a.console_bytes, b.console_bytes);
    EXPECT_EQ(a.raw_sha256, Sha256Of(raws[i]));
    EXPECT_EQ(a.chain, ComputeChunkChain(a));
    EXPECT_EQ(a.prev_chain, i == 0 ? Sha256Digest{} : infos[i - 1].chain);
    auto raw = store_->ReadRrChunk("rec", i);
    ASSERT_TRUE(raw.ok()) << raw.status().ToString();
    EXPECT_EQ(*raw, raws[i]);
  }
  EXPECT_EQ(store_->ReadRrChunk("rec", 5).status().code(), StatusCode::kNotFound);

  auto report = store_->VerifyRrChain("rec");
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->chunks, 5u);
  EXPECT_EQ(report->raw_bytes, 50000u);
  EXPECT_EQ(report->head, infos.back().chain);
  EXPECT_FALSE(report->first_bad.has_value());
  EXPECT_EQ(report->problem, "");

  std::string log;
  uint64_t next = 0;
  ASSERT_TRUE(store_
                  ->ReadRrLog("rec",
                              [&](const RrChunkInfo& info, std::string_view raw) {
                                EXPECT_EQ(info.seq, next++);
                                log.append(raw);
                                return Status::Ok();
                              })
                  .ok());
  std::string expected;
  for (const auto& r : raws) expected += r;
  EXPECT_EQ(log, expected);

  // The sink can stop the stream with its own error.
  int calls = 0;
  Status stopped = store_->ReadRrLog("rec", [&](const RrChunkInfo&, std::string_view) {
    return ++calls == 2 ? Cancelled("enough") : Status::Ok();
  });
  EXPECT_EQ(stopped.code(), StatusCode::kCancelled);
  EXPECT_EQ(calls, 2);

  // An unknown recording has an empty, valid chain.
  EXPECT_EQ(store_->VerifyRrChain("none")->chunks, 0u);
  EXPECT_TRUE(store_->ListRrChunks("none")->empty());
}

TEST_F(StoreTest, IndexValueMatchesTheDocumentedLayout) {
  std::vector<RrChunkInfo> infos;
  AppendChunks("rec", 2, 5000, &infos);
  Close();
  RawDb raw(path_);
  for (const auto& info : infos) {
    std::string v = raw.Get("rr_index", SeqKey("rec", info.seq));
    EXPECT_EQ(v.size(), kIndexSize);
    EXPECT_EQ(v, EncodeIndex(info));
    std::string p = raw.Get("rr_chunks", SeqKey("rec", info.seq));
    EXPECT_EQ(p.substr(0, 6), std::string("BBRC\x01\x01", 6));
    EXPECT_EQ(p.size(), 6 + info.stored_size);
    std::string out(info.raw_size, '\0');
    size_t n = ZSTD_decompress(out.data(), out.size(), p.data() + 6, p.size() - 6);
    EXPECT_EQ(n, info.raw_size);
    EXPECT_EQ(Sha256Of(out), info.raw_sha256);
  }
  EXPECT_EQ(raw.Get("meta", "schema_version"), "1");
  EXPECT_EQ(raw.CfNames(), (std::set<std::string>{"default", "meta", "recordings", "rr_index",
                                                  "rr_chunks", "console", "events", "captures",
                                                  "frame_index", "frames", "flows", "alerts"}));
}

TEST_F(StoreTest, ChainHashDefinition) {
  RrChunkInfo i;
  i.seq = 7;
  i.raw_offset = 0x0102030405060708;
  i.raw_size = 0x11223344;
  i.stored_size = 99;
  i.first_icount = 1;
  i.last_icount = 2;
  i.first_wall_ns = 3;
  i.last_wall_ns = -4;
  i.event_count = 5;
  i.console_bytes = 6;
  i.raw_sha256 = Sha256Of("raw");
  i.prev_chain = Sha256Of("prev");
  std::string buf = Digest(i.prev_chain);
  PutBE(&buf, 7, 8);
  PutBE(&buf, 0x0102030405060708, 8);
  PutBE(&buf, 0x11223344, 4);
  PutBE(&buf, 1, 8);
  PutBE(&buf, 2, 8);
  PutBE(&buf, 3, 8);
  PutBE(&buf, static_cast<uint64_t>(int64_t{-4}), 8);
  PutBE(&buf, 5, 4);
  PutBE(&buf, 6, 4);
  buf += Digest(i.raw_sha256);
  EXPECT_EQ(ComputeChunkChain(i), Sha256Of(buf));
  RrChunkInfo j = i;
  j.stored_size = 12345;  // not covered
  EXPECT_EQ(ComputeChunkChain(j), ComputeChunkChain(i));
  j = i;
  j.console_bytes = 7;
  EXPECT_NE(ComputeChunkChain(j), ComputeChunkChain(i));
}

TEST_F(StoreTest, ManyChunksStayInNumericOrder) {
  AppendChunks("rec", 300, 64);
  auto list = store_->ListRrChunks("rec");
  ASSERT_EQ(list->size(), 300u);
  for (size_t i = 0; i < list->size(); ++i) EXPECT_EQ((*list)[i].seq, i);
  auto report = store_->VerifyRrChain("rec");
  EXPECT_EQ(report->chunks, 300u);
  EXPECT_FALSE(report->first_bad.has_value()) << report->problem;
}

TEST_F(StoreTest, ReplacingTheNewestChunkGrowsIt) {
  std::vector<RrChunkInfo> infos;
  AppendChunks("rec", 3, 1000, &infos);
  RrChunkInfo grown = infos[2];
  grown.event_count = 50;
  std::string bigger = MakeRaw(99, 5000);
  auto r = store_->AppendRrChunk("rec", grown, bigger);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->raw_size, 5000u);
  EXPECT_NE(r->chain, infos[2].chain);
  EXPECT_EQ(*store_->ReadRrChunk("rec", 2), bigger);
  auto list = store_->ListRrChunks("rec");
  ASSERT_EQ(list->size(), 3u);
  EXPECT_EQ((*list)[2].raw_size, 5000u);
  EXPECT_EQ((*list)[2].event_count, 50u);
  auto report = store_->VerifyRrChain("rec");
  EXPECT_FALSE(report->first_bad.has_value()) << report->problem;
  EXPECT_EQ(report->raw_bytes, 7000u);
  EXPECT_EQ(report->head, r->chain);
  // The next chunk continues from the grown one.
  AppendChunks("rec", 1, 1000);
  EXPECT_EQ(store_->ListRrChunks("rec")->back().raw_offset, 7000u);
  EXPECT_FALSE(store_->VerifyRrChain("rec")->first_bad.has_value());
}

TEST_F(StoreTest, AppendRejectsWritesThatWouldBreakTheChain) {
  RrChunkInfo info;
  info.seq = 1;
  EXPECT_EQ(store_->AppendRrChunk("rec", info, "x").status().code(),
            StatusCode::kFailedPrecondition);
  info.seq = 0;
  info.prev_chain = Sha256Of("x");
  EXPECT_EQ(store_->AppendRrChunk("rec", info, "x").status().code(), StatusCode::kInvalidArgument);

  std::vector<RrChunkInfo> infos;
  AppendChunks("rec", 3, 100, &infos);
  RrChunkInfo next;
  next.seq = 3;
  next.raw_offset = 300;
  next.prev_chain = infos[2].chain;
  // gap
  RrChunkInfo gap = next;
  gap.seq = 4;
  auto s = store_->AppendRrChunk("rec", gap, "x").status();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("chunk 4"));
  // sealed
  RrChunkInfo sealed = infos[1];
  s = store_->AppendRrChunk("rec", sealed, "x").status();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("sealed"));
  // wrong prev_chain
  RrChunkInfo wrong = next;
  wrong.prev_chain = infos[1].chain;
  EXPECT_EQ(store_->AppendRrChunk("rec", wrong, "x").status().code(), StatusCode::kInvalidArgument);
  // wrong raw_offset
  wrong = next;
  wrong.raw_offset = 301;
  EXPECT_EQ(store_->AppendRrChunk("rec", wrong, "x").status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(store_->AppendRrChunk("rec", next, "x").ok());
  EXPECT_FALSE(store_->VerifyRrChain("rec")->first_bad.has_value());
}

TEST_F(StoreTest, LargeChunkCompressesOverHundredfold) {
  const size_t kSize = 8u << 20;
  std::string block = MakeRaw(1, 4096);
  std::string raw;
  raw.reserve(kSize);
  for (uint64_t i = 0; raw.size() < kSize; ++i) {
    std::string b = block;
    std::memcpy(b.data(), &i, sizeof i);  // each block differs a little
    raw += b;
  }
  raw.resize(kSize);
  auto r = store_->AppendRrChunk("big", RrChunkInfo{}, raw);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->raw_size, kSize);
  EXPECT_GT(r->raw_size / r->stored_size, 100u) << r->stored_size;
  EXPECT_EQ(*store_->ReadRrChunk("big", 0), raw);
  auto usage = store_->GetUsage("big");
  EXPECT_EQ(usage->rr_raw_bytes, kSize);
  EXPECT_EQ(usage->rr_stored_bytes, r->stored_size);
}

TEST_F(StoreTest, ChunkAboveCapIsRefused) {
  std::string raw((64u << 20) + 1, 'a');
  auto r = store_->AppendRrChunk("big", RrChunkInfo{}, raw);
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  raw.pop_back();
  EXPECT_TRUE(store_->AppendRrChunk("big", RrChunkInfo{}, raw).ok());
}

TEST_F(StoreTest, ConcurrentReadersSeeWholeReplacements) {
  AppendChunks("rec", 1, 1000);
  RrChunkInfo base = store_->ListRrChunks("rec")->front();
  std::atomic<bool> done{false};
  std::atomic<int> bad{0};
  std::thread reader([&] {
    while (!done) {
      auto raw = store_->ReadRrChunk("rec", 0);
      if (!raw.ok()) ++bad;
      auto report = store_->VerifyRrChain("rec");
      if (!report.ok() || report->first_bad) ++bad;
    }
  });
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(store_->AppendRrChunk("rec", base, MakeRaw(0, 1000 + 10 * i)).ok());
  }
  done = true;
  reader.join();
  EXPECT_EQ(bad, 0);
}

// ---- corruption detection ----

class CorruptionTest : public StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    AppendChunks("rec", 5, 20000, &infos_, &raws_);
    Close();
  }
  // Reopens and checks that VerifyRrChain, ReadRrLog (and, when chunk_local, ReadRrChunk)
  // all blame chunk `seq` with `what`.
  void ExpectBad(uint64_t seq, const std::string& what, bool chunk_local = true) {
    Reopen();
    const std::string prefix = "recording rec chunk " + std::to_string(seq) + ": ";
    auto report = store_->VerifyRrChain("rec");
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    ASSERT_TRUE(report->first_bad.has_value());
    EXPECT_EQ(*report->first_bad, seq) << report->problem;
    EXPECT_THAT(report->problem, HasSubstr(prefix));
    EXPECT_THAT(report->problem, HasSubstr(what));
    EXPECT_EQ(report->chunks, seq);

    uint64_t streamed = 0;
    Status s = store_->ReadRrLog("rec", [&](const RrChunkInfo& info, std::string_view raw) {
      EXPECT_EQ(raw, raws_[info.seq]);
      ++streamed;
      return Status::Ok();
    });
    EXPECT_EQ(s.code(), StatusCode::kCorruption);
    EXPECT_EQ(s.message(), report->problem);
    EXPECT_EQ(streamed, seq);

    if (chunk_local) {
      auto one = store_->ReadRrChunk("rec", seq);
      EXPECT_EQ(one.status().code(), StatusCode::kCorruption);
      EXPECT_THAT(one.status().message(), HasSubstr(prefix));
      EXPECT_THAT(one.status().message(), HasSubstr(what));
      if (seq > 0) {
        EXPECT_TRUE(store_->ReadRrChunk("rec", seq - 1).ok());
      }
    }
  }
  // Rewrites the index entry of `seq` with f applied, recomputing chain and checksum the way
  // someone altering the store consistently would.
  void AlterIndex(uint64_t seq, const std::function<void(RrChunkInfo*)>& f) {
    RawDb raw(path_);
    RrChunkInfo info = infos_[seq];
    f(&info);
    info.chain = ComputeChunkChain(info);
    raw.Put("rr_index", SeqKey("rec", seq), EncodeIndex(info));
  }
  std::vector<RrChunkInfo> infos_;
  std::vector<std::string> raws_;
};

TEST_F(CorruptionTest, FlippedPayloadByteFailsToDecompress) {
  {
    RawDb raw(path_);
    std::string v = raw.Get("rr_chunks", SeqKey("rec", 2));
    v[6 + v.size() / 2] ^= 0x40;
    raw.Put("rr_chunks", SeqKey("rec", 2), v);
  }
  ExpectBad(2, "payload does not decompress");
}

TEST_F(CorruptionTest, MissingPayload) {
  { RawDb(path_).Delete("rr_chunks", SeqKey("rec", 3)); }
  ExpectBad(3, "payload missing");
}

TEST_F(CorruptionTest, BadPayloadMagic) {
  {
    RawDb raw(path_);
    std::string v = raw.Get("rr_chunks", SeqKey("rec", 0));
    v[0] = 'X';
    raw.Put("rr_chunks", SeqKey("rec", 0), v);
  }
  ExpectBad(0, "bad magic");
}

TEST_F(CorruptionTest, TruncatedPayload) {
  {
    RawDb raw(path_);
    std::string v = raw.Get("rr_chunks", SeqKey("rec", 1));
    v.pop_back();
    raw.Put("rr_chunks", SeqKey("rec", 1), v);
  }
  ExpectBad(1, "truncated or altered");
}

TEST_F(CorruptionTest, ReplacedPayloadFailsTheHash) {
  // Someone swaps in a different, valid payload of the same raw size and fixes stored_size.
  {
    RawDb raw(path_);
    std::string other = raws_[2];
    other[100] ^= 1;
    std::string frame(ZSTD_compressBound(other.size()), '\0');
    frame.resize(ZSTD_compress(frame.data(), frame.size(), other.data(), other.size(), 3));
    raw.Put("rr_chunks", SeqKey("rec", 2), std::string("BBRC\x01\x01", 6) + frame);
    std::string idx = raw.Get("rr_index", SeqKey("rec", 2));
    SetBE(&idx, kOffStoredSize, frame.size(), 4);
    Reseal(&idx);
    raw.Put("rr_index", SeqKey("rec", 2), idx);
  }
  ExpectBad(2, "payload hash mismatch (stored chunk corrupted or altered)");
}

TEST_F(CorruptionTest, RawSizeSmallerThanPayload) {
  AlterIndex(4, [](RrChunkInfo* i) { i->raw_size -= 1; });
  ExpectBad(4, "size mismatch");
}

TEST_F(CorruptionTest, RawSizeLargerThanPayload) {
  AlterIndex(4, [](RrChunkInfo* i) { i->raw_size += 1; });
  ExpectBad(4, "size mismatch");
}

TEST_F(CorruptionTest, RawSizeAboveCapIsRefusedBeforeDecompressing) {
  AlterIndex(4, [](RrChunkInfo* i) { i->raw_size = 100u << 20; });
  ExpectBad(4, "above the cap");
}

TEST_F(CorruptionTest, FlippedIndexByteFailsTheChecksum) {
  {
    RawDb raw(path_);
    std::string idx = raw.Get("rr_index", SeqKey("rec", 1));
    idx[kOffFirstIcount + 7] ^= 1;
    raw.Put("rr_index", SeqKey("rec", 1), idx);
  }
  ExpectBad(1, "checksum mismatch");
  EXPECT_EQ(store_->ListRrChunks("rec").status().code(), StatusCode::kCorruption);
}

TEST_F(CorruptionTest, AlteredIndexFieldFailsTheChain) {
  {
    RawDb raw(path_);
    std::string idx = raw.Get("rr_index", SeqKey("rec", 1));
    idx[kOffFirstIcount + 7] ^= 1;
    Reseal(&idx);  // a consistent edit, not bit rot
    raw.Put("rr_index", SeqKey("rec", 1), idx);
  }
  ExpectBad(1, "chain hash mismatch");
}

TEST_F(CorruptionTest, AlteredRawShaWithRecomputedChainFailsTheHash) {
  AlterIndex(3, [](RrChunkInfo* i) { i->raw_sha256 = Sha256Of("something else"); });
  ExpectBad(3, "payload hash mismatch");
}

TEST_F(CorruptionTest, BrokenPrevChain) {
  AlterIndex(2, [](RrChunkInfo* i) { i->prev_chain = Sha256Of("forged"); });
  ExpectBad(2, "prev_chain does not match", /*chunk_local=*/false);
}

TEST_F(CorruptionTest, NonContiguousRawOffset) {
  AlterIndex(2, [](RrChunkInfo* i) { i->raw_offset += 1; });
  ExpectBad(2, "not contiguous", /*chunk_local=*/false);
}

TEST_F(CorruptionTest, GapInSeq) {
  {
    RawDb raw(path_);
    raw.Delete("rr_index", SeqKey("rec", 2));
    raw.Delete("rr_chunks", SeqKey("rec", 2));
  }
  ExpectBad(2, "chunk 2 is missing (next stored chunk is 3)", /*chunk_local=*/false);
}

TEST_F(CorruptionTest, MovedIndexEntry) {
  {
    RawDb raw(path_);
    raw.Put("rr_index", SeqKey("rec", 2), raw.Get("rr_index", SeqKey("rec", 3)));
  }
  ExpectBad(2, "belongs to chunk 3");
}

TEST_F(CorruptionTest, RemovedTailIndexEntry) {
  { RawDb(path_).Delete("rr_index", SeqKey("rec", 4)); }
  ExpectBad(4, "payload stored without an index entry", /*chunk_local=*/false);
}

TEST_F(CorruptionTest, UnknownSchemaVersionIsRefused) {
  { RawDb(path_).Put("meta", "schema_version", "2"); }
  StoreOptions opts;
  opts.path = path_;
  auto s = Store::Open(opts);
  EXPECT_EQ(s.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(s.status().message(), HasSubstr("schema version '2'"));
  opts.read_only = true;
  EXPECT_EQ(Store::Open(opts).status().code(), StatusCode::kCorruption);
}

// ---- console and events ----

TEST_F(StoreTest, ConsoleRoundTripInOffsetOrder) {
  ASSERT_TRUE(store_->AppendConsole("rec", {300, 30, "third"}).ok());
  ASSERT_TRUE(store_->AppendConsole("rec", {0, 10, std::string("fi\0rst\xff", 7)}).ok());
  ASSERT_TRUE(store_->AppendConsole("rec", {7, 20, "second"}).ok());
  auto pieces = store_->ReadConsole("rec");
  ASSERT_TRUE(pieces.ok());
  ASSERT_EQ(pieces->size(), 3u);
  EXPECT_EQ((*pieces)[0].offset, 0u);
  EXPECT_EQ((*pieces)[0].wall_ns, 10);
  EXPECT_EQ((*pieces)[0].bytes, std::string("fi\0rst\xff", 7));
  EXPECT_EQ((*pieces)[1].offset, 7u);
  EXPECT_EQ((*pieces)[1].bytes, "second");
  EXPECT_EQ((*pieces)[2].offset, 300u);
  EXPECT_EQ((*pieces)[2].wall_ns, 30);
  EXPECT_TRUE(store_->ReadConsole("other")->empty());
  EXPECT_EQ(store_->AppendConsole("rec", {400, 1, std::string((4u << 20) + 1, 'x')}).code(),
            StatusCode::kResourceExhausted);
}

TEST_F(StoreTest, EventsAreOrderedByTimeThenSeq) {
  ASSERT_TRUE(store_->PutEvent("rec", 300, {{"kind", "c"}}).ok());
  ASSERT_TRUE(store_->PutEvent("rec", 1, {{"kind", "a0"}}).ok());
  ASSERT_TRUE(store_->PutEvent("rec", 256, {{"kind", "b"}, {"n", 2}}).ok());
  ASSERT_TRUE(store_->PutEvent("rec", 1, {{"kind", "a1"}}).ok());
  ASSERT_TRUE(store_->PutEvent("rec", 1, {{"kind", "a2"}}).ok());
  auto events = store_->ListEvents("rec");
  ASSERT_TRUE(events.ok());
  std::vector<std::tuple<int64_t, uint32_t, std::string>> got;
  for (const auto& e : *events) got.emplace_back(e.wall_ns, e.seq, e.body["kind"]);
  std::vector<std::tuple<int64_t, uint32_t, std::string>> want = {
      {1, 0, "a0"}, {1, 1, "a1"}, {1, 2, "a2"}, {256, 0, "b"}, {300, 0, "c"}};
  EXPECT_EQ(got, want);
  EXPECT_EQ((*events)[3].body["n"], 2);

  // seq assignment continues after a reopen.
  Reopen();
  ASSERT_TRUE(store_->PutEvent("rec", 1, {{"kind", "a3"}}).ok());
  events = store_->ListEvents("rec");
  ASSERT_EQ(events->size(), 6u);
  EXPECT_EQ((*events)[3].seq, 3u);
  EXPECT_EQ((*events)[3].body["kind"], "a3");

  EXPECT_EQ(store_->PutEvent("rec", 1, {{"no_kind", 1}}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->PutEvent("rec", 1, nlohmann::json::array()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->PutEvent("rec", -1, {{"kind", "x"}}).code(), StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, ConcurrentEventsGetDistinctSeqs) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        EXPECT_TRUE(store_->PutEvent("rec", 42, {{"kind", "x"}, {"t", t}, {"i", i}}).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  auto events = store_->ListEvents("rec");
  ASSERT_EQ(events->size(), 400u);
  for (uint32_t i = 0; i < 400; ++i) EXPECT_EQ((*events)[i].seq, i);
}

TEST_F(StoreTest, StoredEventThatIsNotJsonIsCorruption) {
  ASSERT_TRUE(store_->PutEvent("rec", 5, {{"kind", "x"}}).ok());
  Close();
  {
    RawDb raw(path_);
    std::string k = "rec";
    k.push_back('\0');
    PutBE(&k, 5, 8);
    PutBE(&k, 0, 4);
    raw.Put("events", k, "{oops");
  }
  Reopen();
  auto events = store_->ListEvents("rec");
  EXPECT_EQ(events.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(events.status().message(), HasSubstr("recording rec event at 5 seq 0"));
}

}  // namespace
}  // namespace blackbox::store_test
