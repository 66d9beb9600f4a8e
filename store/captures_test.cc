// Tests of switch captures: metadata, frame batches and flows.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <zstd.h>

#include <atomic>
#include <functional>
#include <limits>
#include <thread>

#include "store/captures_test_util.h"
#include "store/store.h"
#include "store/store_test_util.h"

namespace blackbox::store_test {
namespace {

using ::testing::HasSubstr;

// ---- switch captures ----

TEST_F(CaptureTest, MetadataPutGetList) {
  nlohmann::json lab1 = {{"state", "recording"}, {"ports", {{{"id", 1}, {"vm", "web"}}}}};
  ASSERT_TRUE(store_->PutCapture("lab-1", lab1).ok());
  ASSERT_TRUE(store_->PutCapture("lab-0", {{"state", "complete"}}).ok());
  EXPECT_EQ(*store_->GetCapture("lab-1"), lab1);
  lab1["state"] = "complete";
  ASSERT_TRUE(store_->PutCapture("lab-1", lab1).ok());  // replace
  EXPECT_EQ(store_->GetCapture("lab-1")->at("state"), "complete");
  ASSERT_TRUE(store_->PutCapture("lab-2", nlohmann::json::object()).ok());

  auto list = store_->ListCaptures();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->size(), 3u);
  EXPECT_EQ((*list)[0].first, "lab-0");
  EXPECT_EQ((*list)[0].second["state"], "complete");
  EXPECT_EQ((*list)[1].first, "lab-1");
  EXPECT_EQ((*list)[1].second, lab1);
  EXPECT_EQ((*list)[2].first, "lab-2");

  auto missing = store_->GetCapture("lab-9");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("lab-9"));
  // Captures and recordings are separate namespaces.
  EXPECT_EQ(store_->GetRecording("lab-1").status().code(), StatusCode::kNotFound);

  for (const nlohmann::json& bad :
       {nlohmann::json::array(), nlohmann::json("x"), nlohmann::json(), nlohmann::json(3)}) {
    EXPECT_EQ(store_->PutCapture("lab-3", bad).code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(store_->PutCapture("", nlohmann::json::object()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->GetCapture("lab-3").status().code(), StatusCode::kNotFound);

  Reopen();
  EXPECT_EQ(*store_->GetCapture("lab-1"), lab1);
}

TEST_F(CaptureTest, StoredMetadataThatIsNotAnObjectIsCorruptionNamingKey) {
  ASSERT_TRUE(store_->PutCapture("good", {{"a", 1}}).ok());
  Close();
  {
    RawDb raw(path_);
    raw.Put("captures", "broken", "{oops");
    raw.Put("captures", "array", "[1,2]");
  }
  Reopen();
  for (const char* id : {"broken", "array"}) {
    auto r = store_->GetCapture(id);
    EXPECT_EQ(r.status().code(), StatusCode::kCorruption);
    EXPECT_THAT(r.status().message(), HasSubstr(std::string("capture '") + id + "'"));
  }
  EXPECT_EQ(store_->ListCaptures().status().code(), StatusCode::kCorruption);
  EXPECT_TRUE(store_->GetCapture("good").ok());
}

TEST_F(CaptureTest, FrameBatchesRoundTrip) {
  AppendLab();
  auto list = store_->ListFrameBatches("cap");
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->size(), 4u);
  auto batches = LabBatches();
  for (size_t i = 0; i < 4; ++i) {
    SCOPED_TRACE(i);
    const FrameBatchInfo& a = (*list)[i];
    const FrameBatchInfo want = SummaryOf(batches[i]);
    EXPECT_EQ(a.seq, i);
    EXPECT_EQ(a.first_wall_ns, want.first_wall_ns);
    EXPECT_EQ(a.last_wall_ns, want.last_wall_ns);
    EXPECT_EQ(a.frame_count, want.frame_count);
    EXPECT_EQ(a.dropped_count, want.dropped_count);
    EXPECT_EQ(a.ports, want.ports);
    const std::string raw = EncodeFramesRaw(batches[i]);
    EXPECT_EQ(a.raw_size, raw.size());
    EXPECT_EQ(a.raw_sha256, Sha256Of(raw));
    EXPECT_EQ(a.stored_size, infos_[i].stored_size);
    EXPECT_GT(a.stored_size, 0u);
    EXPECT_EQ(a.prev_chain, i == 0 ? Sha256Digest{} : infos_[i - 1].chain);
    EXPECT_EQ(a.chain, ComputeFrameBatchChain(a));
    EXPECT_EQ(a.chain, infos_[i].chain);
  }
  EXPECT_EQ((*list)[0].ports, (std::vector<uint32_t>{1, 2, 3}));
  EXPECT_EQ((*list)[0].dropped_count, 1u);
  EXPECT_EQ((*list)[2].first_wall_ns, 3000);  // min, though not the first frame
  EXPECT_EQ((*list)[2].last_wall_ns, 3900);
  EXPECT_EQ((*list)[3].ports, (std::vector<uint32_t>{1, 2, 3, 9, 10}));

  auto [s, got] = Read("cap");
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(got.size(), frames_.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(SameFrame(got[i], frames_[i])) << i;

  auto report = store_->VerifyFrameChain("cap");
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->chunks, 4u);
  uint64_t raw_bytes = 0;
  for (const auto& b : batches) raw_bytes += EncodeFramesRaw(b).size();
  EXPECT_EQ(report->raw_bytes, raw_bytes);
  EXPECT_EQ(report->head, infos_.back().chain);
  EXPECT_FALSE(report->first_bad.has_value());
  EXPECT_EQ(report->problem, "");

  // An unknown capture has no batches, no frames and an empty, valid chain.
  EXPECT_TRUE(store_->ListFrameBatches("none")->empty());
  EXPECT_TRUE(Read("none").second.empty());
  EXPECT_EQ(store_->VerifyFrameChain("none")->chunks, 0u);
}

TEST_F(CaptureTest, QueriesByTimeAndPort) {
  AppendLab();
  using V = std::vector<int64_t>;
  auto q = [](int64_t since, int64_t until, std::vector<uint32_t> ports = {}) {
    FrameQuery f;
    f.since_ns = since;
    f.until_ns = until;
    f.ports = std::move(ports);
    return f;
  };
  const int64_t kMin = std::numeric_limits<int64_t>::min();
  const int64_t kMax = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(Times({}), (V{1000, 1100, 1200, 1300, 1900, 2000, 2500, 2900, 3500, 3000, 3900, 4000}));
  // Both bounds are inclusive.
  EXPECT_EQ(Times(q(1100, 2000)), (V{1100, 1200, 1300, 1900, 2000}));
  EXPECT_EQ(Times(q(3000, 3500)), (V{3500, 3000}));  // stored order, not time order
  EXPECT_EQ(Times(q(3950, 3999)), V{});              // between batches
  EXPECT_EQ(Times(q(4001, kMax)), V{});
  EXPECT_EQ(Times(q(kMin, 999)), V{});
  EXPECT_EQ(Times(q(2000, 1000)), V{});  // empty range
  // Ports: ingress or any egress port.
  EXPECT_EQ(Times(q(kMin, kMax, {3})), (V{1200, 1300, 4000}));
  EXPECT_EQ(Times(q(kMin, kMax, {10})), (V{4000}));  // egress only
  EXPECT_EQ(Times(q(kMin, kMax, {8})), (V{2000, 2500, 2900}));
  EXPECT_EQ(Times(q(kMin, kMax, {4, 3, 4})), (V{1200, 1300, 3900, 4000}));  // unsorted, repeated
  EXPECT_EQ(Times(q(3000, 3999, {4})), (V{3900}));
  EXPECT_EQ(Times(q(kMin, kMax, {99})), V{});
  EXPECT_EQ(Times(q(1000, 1000, {2})), (V{1000}));
}

TEST_F(CaptureTest, BatchesOutsideTheQueryAreNotRead) {
  AppendLab();
  Close();
  {
    // Break batch 1 (ports 7 and 8, times 2000-2900) without touching its index entry.
    RawDb raw(path_);
    std::string v = raw.Get("frames", SeqKey("cap", 1));
    v[6 + v.size() / 2] ^= 0x40;
    raw.Put("frames", SeqKey("cap", 1), v);
  }
  Reopen();
  FrameQuery by_port;
  by_port.ports = {1};
  EXPECT_EQ(Times(by_port).size(), 7u);  // batch 1 has no port 1: skipped by its index entry
  FrameQuery by_time;
  by_time.since_ns = 3000;
  EXPECT_EQ(Times(by_time).size(), 4u);
  FrameQuery before;
  before.until_ns = 1999;
  EXPECT_EQ(Times(before).size(), 5u);

  for (FrameQuery bad : {FrameQuery{}, FrameQuery{2500, 2500, {}}, FrameQuery{0, 5000, {8}}}) {
    auto [s, got] = Read("cap", bad);
    EXPECT_EQ(s.code(), StatusCode::kCorruption);
    EXPECT_THAT(s.message(), HasSubstr("capture cap batch 1: "));
  }
}

TEST_F(CaptureTest, SinkErrorStopsReading) {
  AppendLab();
  int calls = 0;
  Status s = store_->ReadFrames("cap", {}, [&](const CapturedFrame&) {
    return ++calls == 6 ? Cancelled("enough") : Status::Ok();
  });
  EXPECT_EQ(s.code(), StatusCode::kCancelled);
  EXPECT_EQ(calls, 6);
}

TEST(FrameBatchEncoderTest, AppendedPiecesEncodeLikeOneBatch) {
  std::vector<CapturedFrame> frames = {MakeFrame(30, 3, {1, 2}), MakeFrame(10, 1, {}, "spoofed"),
                                       MakeFrame(20, 7, {3}), MakeFrame(25, 2, {1}, "", 1500)};
  FrameBatchEncoder a, b, whole;
  for (size_t i = 0; i < frames.size(); ++i) {
    ASSERT_TRUE((i < 2 ? a : b).Add(frames[i]).ok());
    ASSERT_TRUE(whole.Add(frames[i]).ok());
  }
  a.Append(b);
  EXPECT_EQ(a.raw(), EncodeFramesRaw(frames));
  EXPECT_EQ(whole.raw(), a.raw());
  FrameBatchInfo s = a.Summary();
  EXPECT_EQ(s.first_wall_ns, 10);
  EXPECT_EQ(s.last_wall_ns, 30);
  EXPECT_EQ(s.frame_count, 4u);
  EXPECT_EQ(s.dropped_count, 1u);
  EXPECT_EQ(s.ports, (std::vector<uint32_t>{1, 2, 3, 7}));
  EXPECT_EQ(s.ports, SummaryOf(frames).ports);

  // A frame over the cap adds nothing; Clear() empties the summary too.
  CapturedFrame huge = MakeFrame(40, 1, {}, "", (256u << 10) + 1);
  EXPECT_EQ(a.Add(huge).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a.frame_count(), 4u);
  a.Clear();
  EXPECT_TRUE(a.empty());
  EXPECT_TRUE(a.raw().empty());
  EXPECT_TRUE(a.Summary().ports.empty());
}

TEST_F(CaptureTest, FrameValuesMatchTheDocumentedLayout) {
  AppendLab();
  ASSERT_TRUE(store_->PutCapture("cap", {{"k", 1}}).ok());
  Close();
  RawDb raw(path_);
  auto batches = LabBatches();
  for (size_t i = 0; i < infos_.size(); ++i) {
    const FrameBatchInfo& info = infos_[i];
    std::string v = raw.Get("frame_index", SeqKey("cap", info.seq));
    EXPECT_EQ(v.size(), 177 + 4 * info.ports.size());
    EXPECT_EQ(v, EncodeFrameIndex(info));
    std::string p = raw.Get("frames", SeqKey("cap", info.seq));
    EXPECT_EQ(p.substr(0, 6), std::string("BBFB\x01\x01", 6));
    EXPECT_EQ(p.size(), 6 + info.stored_size);
    std::string out(info.raw_size, '\0');
    size_t n = ZSTD_decompress(out.data(), out.size(), p.data() + 6, p.size() - 6);
    ASSERT_EQ(n, info.raw_size);
    EXPECT_EQ(out, EncodeFramesRaw(batches[i]));
  }
  EXPECT_EQ(nlohmann::json::parse(raw.Get("captures", "cap")), nlohmann::json({{"k", 1}}));
  EXPECT_FALSE(raw.Has("frame_index", SeqKey("cap", 4)));
}

TEST_F(CaptureTest, FrameChainHashDefinition) {
  FrameBatchInfo i;
  i.seq = 7;
  i.first_wall_ns = -3;
  i.last_wall_ns = 0x0102030405060708;
  i.frame_count = 5;
  i.dropped_count = 2;
  i.raw_size = 0x11223344;
  i.stored_size = 99;
  i.ports = {1, 0x0a0b0c0d};
  i.raw_sha256 = Sha256Of("raw");
  i.prev_chain = Sha256Of("prev");
  std::string buf = Digest(i.prev_chain);
  PutBE(&buf, 7, 8);
  PutBE(&buf, static_cast<uint64_t>(int64_t{-3}), 8);
  PutBE(&buf, 0x0102030405060708, 8);
  PutBE(&buf, 5, 4);
  PutBE(&buf, 2, 4);
  PutBE(&buf, 0x11223344, 4);
  PutBE(&buf, 2, 4);
  PutBE(&buf, 1, 4);
  PutBE(&buf, 0x0a0b0c0d, 4);
  buf += Digest(i.raw_sha256);
  EXPECT_EQ(ComputeFrameBatchChain(i), Sha256Of(buf));
  FrameBatchInfo j = i;
  j.stored_size = 12345;  // not covered
  EXPECT_EQ(ComputeFrameBatchChain(j), ComputeFrameBatchChain(i));
  for (auto change : std::vector<std::function<void(FrameBatchInfo*)>>{
           [](FrameBatchInfo* b) { b->dropped_count++; },
           [](FrameBatchInfo* b) { b->ports.push_back(9); },
           [](FrameBatchInfo* b) { b->ports[1]++; },
           [](FrameBatchInfo* b) { b->first_wall_ns++; },
       }) {
    j = i;
    change(&j);
    EXPECT_NE(ComputeFrameBatchChain(j), ComputeFrameBatchChain(i));
  }
}

TEST_F(CaptureTest, ReopenKeepsSeqContinuity) {
  auto batches = LabBatches();
  auto b0 = store_->AppendFrameBatch("cap", batches[0]);
  auto b1 = store_->AppendFrameBatch("cap", batches[1]);
  ASSERT_TRUE(b0.ok() && b1.ok());
  EXPECT_EQ(b1->seq, 1u);
  EXPECT_EQ(b1->prev_chain, b0->chain);

  StoreOptions opts;
  opts.create_if_missing = false;
  Reopen(opts);
  auto b2 = store_->AppendFrameBatch("cap", batches[2]);
  ASSERT_TRUE(b2.ok()) << b2.status().ToString();
  EXPECT_EQ(b2->seq, 2u);
  EXPECT_EQ(b2->prev_chain, b1->chain);
  // Another capture starts at 0 independently.
  EXPECT_EQ(store_->AppendFrameBatch("other", batches[3])->seq, 0u);
  Reopen();
  auto b3 = store_->AppendFrameBatch("cap", batches[3]);
  ASSERT_TRUE(b3.ok());
  EXPECT_EQ(b3->seq, 3u);
  auto report = store_->VerifyFrameChain("cap");
  EXPECT_EQ(report->chunks, 4u);
  EXPECT_FALSE(report->first_bad.has_value()) << report->problem;
  EXPECT_EQ(report->head, b3->chain);
  EXPECT_EQ(Read("cap").second.size(), 12u);
}

TEST_F(CaptureTest, OversizedAndEmptyInputsAreRejected) {
  auto invalid = [&](std::vector<CapturedFrame> frames, const std::string& what, int level = 0) {
    auto r = store_->AppendFrameBatch("cap", frames, level);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
    EXPECT_THAT(r.status().message(), HasSubstr(what));
    EXPECT_THAT(r.status().message(), HasSubstr("capture cap"));
  };
  invalid({}, "empty");
  const size_t kMaxFrame = 256u << 10;
  invalid({MakeFrame(1, 1, {}), MakeFrame(2, 1, {}, "", kMaxFrame + 1)},
          "frame 1: a frame of 262145 bytes");
  {
    std::vector<CapturedFrame> big(257, MakeFrame(1, 1, {2}, "", kMaxFrame));
    invalid(std::move(big), "above the cap of 67108864");
  }
  {
    CapturedFrame f = MakeFrame(1, 1, {});
    f.egress.assign(65536, 2);
    invalid({f}, "65536 egress ports");
    f.egress.clear();
    for (uint32_t p = 0; p < 4096; ++p) f.egress.push_back(p + 2);  // with ingress: 4097
    invalid({f}, "4097 distinct ports");
    f.egress.pop_back();
    EXPECT_TRUE(store_->AppendFrameBatch("ports", std::vector<CapturedFrame>{f}).ok());
  }
  invalid({MakeFrame(1, 1, {})}, "zstd level", 1000);
  EXPECT_TRUE(store_->ListFrameBatches("cap")->empty());  // nothing was written

  // The largest frame is accepted, and a long drop reason is cut at a character boundary.
  std::string reason = std::string(254, 'a') + "\xc3\xa9" + "zzz";  // 'é' straddles byte 255
  std::vector<CapturedFrame> ok = {MakeFrame(5, 1, {2}, "", kMaxFrame), MakeFrame(6, 1, {}, reason),
                                   MakeFrame(7, 1, {}, std::string(300, 'x'))};
  auto r = store_->AppendFrameBatch("cap", ok);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->seq, 0u);
  EXPECT_EQ(r->dropped_count, 2u);
  auto got = Read("cap").second;
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].bytes.size(), kMaxFrame);
  EXPECT_EQ(got[1].drop_reason, std::string(254, 'a'));
  EXPECT_EQ(got[2].drop_reason, std::string(255, 'x'));
}

TEST_F(CaptureTest, BadCaptureIdsAreRejectedEverywhere) {
  std::vector<CapturedFrame> frames = {MakeFrame(1, 1, {})};
  for (const std::string& id : {std::string(""), std::string(129, 'a'), std::string("a/b"),
                                std::string("a\0b", 3), std::string("../x")}) {
    SCOPED_TRACE(id);
    auto expect_invalid = [](const Status& s) {
      EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    };
    expect_invalid(store_->PutCapture(id, nlohmann::json::object()));
    expect_invalid(store_->GetCapture(id).status());
    expect_invalid(store_->AppendFrameBatch(id, frames).status());
    expect_invalid(store_->ListFrameBatches(id).status());
    expect_invalid(store_->ReadFrames(id, {}, [](const CapturedFrame&) { return Status::Ok(); }));
    expect_invalid(store_->VerifyFrameChain(id).status());
    expect_invalid(store_->PutFlow(id, {{"start_wall_ns", 1}, {"end_wall_ns", 2}}));
    expect_invalid(store_->ListFlows(id).status());
  }
}

TEST_F(CaptureTest, EventsWorkWithACaptureId) {
  ASSERT_TRUE(store_->PutCapture("lab", nlohmann::json::object()).ok());
  ASSERT_TRUE(store_->PutEvent("lab", 5, {{"kind", "port-up"}, {"port", 1}}).ok());
  ASSERT_TRUE(store_->PutEvent("lab", 5, {{"kind", "port-down"}, {"port", 1}}).ok());
  auto events = store_->ListEvents("lab");
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[1].body["kind"], "port-down");
  EXPECT_EQ(store_->GetRecording("lab").status().code(), StatusCode::kNotFound);
}

TEST_F(CaptureTest, ReadOnlyRefusesCaptureWrites) {
  AppendLab();
  ASSERT_TRUE(store_->PutFlow("cap", {{"start_wall_ns", 1}, {"end_wall_ns", 2}}).ok());
  Close();
  StoreOptions ro;
  ro.read_only = true;
  Reopen(ro);
  auto fp = [](const Status& s) { EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition); };
  fp(store_->PutCapture("cap", nlohmann::json::object()));
  fp(store_->AppendFrameBatch("cap", LabBatches()[0]).status());
  fp(store_->PutFlow("cap", {{"start_wall_ns", 1}, {"end_wall_ns", 2}}));
  EXPECT_EQ(Read("cap").second.size(), 12u);
  EXPECT_EQ(store_->ListFlows("cap")->size(), 1u);
}

TEST_F(CaptureTest, StoreWithoutCaptureFamiliesOpens) {
  // A store as written before captures existed: six column families and a recording.
  Close();
  const std::string old_path = dir_->path() + "/old";
  {
    rocksdb::DBOptions o;
    o.create_if_missing = true;
    o.create_missing_column_families = true;
    std::vector<rocksdb::ColumnFamilyDescriptor> descs;
    descs.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
    for (const char* n : kCfs) descs.emplace_back(n, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* db = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(o, old_path, descs, &handles, &db).ok());
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), handles[1], "schema_version", "1").ok());
    ASSERT_TRUE(
        db->Put(rocksdb::WriteOptions(), handles[2], "old", MakeRecording("old", 1).ToJson().dump())
            .ok());
    for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
    ASSERT_TRUE(db->Close().ok());
    delete db;
  }
  path_ = old_path;
  // A reader sees no captures.
  StoreOptions ro;
  ro.read_only = true;
  Reopen(ro);
  EXPECT_TRUE(store_->GetRecording("old").ok());
  EXPECT_TRUE(store_->ListCaptures()->empty());
  EXPECT_EQ(store_->GetCapture("cap").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store_->ListFrameBatches("cap")->empty());
  EXPECT_TRUE(Read("cap").first.ok());
  EXPECT_EQ(store_->VerifyFrameChain("cap")->chunks, 0u);
  EXPECT_TRUE(store_->ListFlows("cap")->empty());
  EXPECT_TRUE(store_->Flush().ok());
  // A writer adds the missing families, even without create_if_missing.
  StoreOptions rw;
  rw.create_if_missing = false;
  Reopen(rw);
  AppendLab();
  ASSERT_TRUE(store_->PutCapture("cap", {{"state", "complete"}}).ok());
  ASSERT_TRUE(store_->PutFlow("cap", {{"start_wall_ns", 1}, {"end_wall_ns", 2}}).ok());
  ASSERT_TRUE(store_->Flush().ok());
  Reopen(ro);
  EXPECT_EQ(Read("cap").second.size(), 12u);
  EXPECT_EQ(store_->ListCaptures()->size(), 1u);
  EXPECT_TRUE(store_->GetRecording("old").ok());
}

TEST_F(CaptureTest, CapturesAppendInParallel) {
  const std::vector<std::string> ids = {"cap", "cap.1", "cap1", "cap-x"};
  std::atomic<bool> done{false};
  std::atomic<int> bad{0};
  std::thread reader([&] {
    while (!done) {
      auto report = store_->VerifyFrameChain("cap");
      if (!report.ok() || report->first_bad) ++bad;
      Status s = store_->ReadFrames("cap.1", {}, [](const CapturedFrame&) { return Status::Ok(); });
      if (!s.ok()) ++bad;
    }
  });
  std::vector<std::thread> writers;
  for (uint32_t t = 0; t < ids.size(); ++t) {
    writers.emplace_back([&, t] {
      for (int b = 0; b < 30; ++b) {
        std::vector<CapturedFrame> frames;
        for (int k = 0; k < 5; ++k) frames.push_back(MakeFrame(b * 10 + k, t, {t + 100}));
        auto r = store_->AppendFrameBatch(ids[t], frames);
        EXPECT_TRUE(r.ok()) << r.status().ToString();
        EXPECT_EQ(r->seq, static_cast<uint64_t>(b));
      }
    });
  }
  for (auto& w : writers) w.join();
  done = true;
  reader.join();
  EXPECT_EQ(bad, 0);
  for (uint32_t t = 0; t < ids.size(); ++t) {
    auto report = store_->VerifyFrameChain(ids[t]);
    EXPECT_EQ(report->chunks, 30u);
    EXPECT_FALSE(report->first_bad.has_value()) << report->problem;
    auto frames = Read(ids[t]).second;
    ASSERT_EQ(frames.size(), 150u);
    for (const auto& f : frames) EXPECT_EQ(f.ingress, t);
  }
}

// ---- flows ----

nlohmann::json Flow(const std::string& name, int64_t start, int64_t end) {
  return {{"name", name},
          {"start_wall_ns", start},
          {"end_wall_ns", end},
          {"community_id", "1:" + name},
          {"bytes", {{"a_to_b", 10}, {"b_to_a", 20}}}};
}

std::vector<std::string> Names(const StatusOr<std::vector<nlohmann::json>>& flows) {
  EXPECT_TRUE(flows.ok()) << flows.status().ToString();
  std::vector<std::string> out;
  if (flows.ok()) {
    for (const auto& f : *flows) out.push_back(f["name"]);
  }
  return out;
}

TEST_F(CaptureTest, FlowsPutAndListWithRanges) {
  using V = std::vector<std::string>;
  ASSERT_TRUE(store_->PutFlow("cap", Flow("a", 100, 500)).ok());
  ASSERT_TRUE(store_->PutFlow("cap", Flow("b", 200, 300)).ok());
  ASSERT_TRUE(store_->PutFlow("cap", Flow("c", 50, 300)).ok());  // same end: after b
  ASSERT_TRUE(store_->PutFlow("cap", Flow("neg", -20, -10)).ok());
  ASSERT_TRUE(store_->PutFlow("cap", Flow("d", 600, 900)).ok());
  ASSERT_TRUE(store_->PutFlow("cap", Flow("point", 700, 700)).ok());
  // A wall clock that stepped back during the flow: kept as given.
  ASSERT_TRUE(store_->PutFlow("cap", Flow("stepped", 1000, 950)).ok());
  ASSERT_TRUE(store_->PutFlow("other", Flow("x", 1, 2)).ok());

  auto all = store_->ListFlows("cap");
  EXPECT_EQ(Names(all), (V{"neg", "b", "c", "a", "point", "d", "stepped"}));
  EXPECT_EQ((*all)[3], Flow("a", 100, 500));  // the whole object comes back
  EXPECT_EQ(Names(store_->ListFlows("cap", 300, 550)), (V{"b", "c", "a"}));
  EXPECT_EQ(Names(store_->ListFlows("cap", 501)), (V{"point", "d", "stepped"}));
  EXPECT_EQ(Names(store_->ListFlows("cap", std::numeric_limits<int64_t>::min(), 99)),
            (V{"neg", "c"}));
  // An inverted range still applies both conditions.
  EXPECT_EQ(Names(store_->ListFlows("cap", 400, 150)), (V{"a"}));
  EXPECT_EQ(Names(store_->ListFlows("cap", 700, 700)), (V{"point", "d"}));
  EXPECT_EQ(Names(store_->ListFlows("cap", 901)), (V{"stepped"}));
  EXPECT_EQ(Names(store_->ListFlows("cap", 951, 999)), V{});
  EXPECT_EQ(Names(store_->ListFlows("cap", -15, -15)), (V{"neg"}));
  EXPECT_EQ(Names(store_->ListFlows("none")), V{});

  // Insertion order at one end time continues after a reopen.
  Reopen();
  ASSERT_TRUE(store_->PutFlow("cap", Flow("e", 0, 300)).ok());
  EXPECT_EQ(Names(store_->ListFlows("cap", 300, 300)), (V{"b", "c", "e", "a"}));
}

TEST_F(CaptureTest, InvalidFlowsAreRejected) {
  auto invalid = [&](const nlohmann::json& flow, const std::string& what) {
    Status s = store_->PutFlow("cap", flow);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << flow;
    EXPECT_THAT(s.message(), HasSubstr(what)) << flow;
  };
  invalid(nlohmann::json::array(), "JSON object");
  invalid({{"end_wall_ns", 5}}, "start_wall_ns");
  invalid({{"start_wall_ns", 5}}, "end_wall_ns");
  invalid({{"start_wall_ns", "5"}, {"end_wall_ns", 6}}, "start_wall_ns");
  invalid({{"start_wall_ns", 5}, {"end_wall_ns", 6.5}}, "end_wall_ns");
  invalid({{"start_wall_ns", 5}, {"end_wall_ns", std::numeric_limits<uint64_t>::max()}},
          "out of range");
  nlohmann::json big = Flow("big", 1, 2);
  big["pad"] = std::string(1u << 20, 'x');
  EXPECT_EQ(store_->PutFlow("cap", big).code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(store_->ListFlows("cap")->empty());
}

TEST_F(CaptureTest, FlowValuesMatchTheDocumentedLayoutAndAreChecked) {
  ASSERT_TRUE(store_->PutFlow("cap", Flow("a", 200, 300)).ok());
  ASSERT_TRUE(store_->PutFlow("cap", Flow("b", 250, 300)).ok());
  Close();
  auto key = [](int64_t end, uint32_t seq) {
    std::string k = "cap";
    k.push_back('\0');
    PutBE(&k, static_cast<uint64_t>(end) ^ (1ull << 63), 8);
    PutBE(&k, seq, 4);
    return k;
  };
  {
    RawDb raw(path_);
    std::string v = raw.Get("flows", key(300, 1));
    ASSERT_GT(v.size(), 9u);
    EXPECT_EQ(v.substr(0, 9), std::string("\x01\x00\x00\x00\x00\x00\x00\x00\xfa", 9));
    EXPECT_EQ(nlohmann::json::parse(v.substr(9)), Flow("b", 250, 300));
    // A flow whose JSON disagrees with its key.
    std::string forged = v.substr(0, 9) + Flow("b", 250, 301).dump();
    raw.Put("flows", key(300, 7), forged);
  }
  Reopen();
  auto flows = store_->ListFlows("cap");
  EXPECT_EQ(flows.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(flows.status().message(), HasSubstr("capture cap flow ending at 300 seq 7"));
  Close();
  {
    RawDb raw(path_);
    raw.Delete("flows", key(300, 7));
    raw.Put("flows", key(-5, 0), "{}");
  }
  Reopen();
  flows = store_->ListFlows("cap");
  EXPECT_EQ(flows.status().code(), StatusCode::kCorruption);
  EXPECT_THAT(flows.status().message(), HasSubstr("flow ending at -5 seq 0: bad value header"));
  EXPECT_EQ(Names(store_->ListFlows("cap", 0)), (std::vector<std::string>{"a", "b"}));
}

}  // namespace
}  // namespace blackbox::store_test
