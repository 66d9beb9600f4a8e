#include "store/store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <signal.h>
#include <unistd.h>
#include <zstd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <thread>

#include "common/files.h"

// These tests reach under the Store to corrupt what it wrote, so they link RocksDB and zstd
// directly and re-implement the documented formats (docs/store-format.md) independently.

namespace blackbox {
namespace {

using ::testing::HasSubstr;

// ---- the documented formats, written out independently of store.cc ----

// The column families of a store written before captures existed.
const char* const kCfs[] = {"meta", "recordings", "rr_index", "rr_chunks", "console", "events"};

void PutBE(std::string* out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void SetBE(std::string* v, size_t off, uint64_t x, int bytes) {
  for (int i = 0; i < bytes; ++i)
    (*v)[off + i] = static_cast<char>((x >> (8 * (bytes - 1 - i))) & 0xff);
}
std::string Digest(const Sha256Digest& d) { return std::string(d.begin(), d.end()); }

std::string SeqKey(const std::string& id, uint64_t seq) {
  std::string k = id;
  k.push_back('\0');
  PutBE(&k, seq, 8);
  return k;
}

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

// Opens the database under a (closed) Store directly.
class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    std::vector<std::string> names;
    EXPECT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), path, &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> descs;
    for (const auto& n : names) descs.emplace_back(n, rocksdb::ColumnFamilyOptions());
    rocksdb::Status s = rocksdb::DB::Open(rocksdb::DBOptions(), path, descs, &handles_, &db_);
    EXPECT_TRUE(s.ok()) << s.ToString();
    for (size_t i = 0; i < names.size(); ++i) cfs_[names[i]] = handles_[i];
  }
  ~RawDb() {
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    db_->Close().PermitUncheckedError();
    delete db_;
  }
  std::string Get(const std::string& cf, const std::string& key) {
    std::string v;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cfs_.at(cf), key, &v);
    EXPECT_TRUE(s.ok()) << cf << " " << s.ToString();
    return v;
  }
  bool Has(const std::string& cf, const std::string& key) {
    std::string v;
    return db_->Get(rocksdb::ReadOptions(), cfs_.at(cf), key, &v).ok();
  }
  void Put(const std::string& cf, const std::string& key, const std::string& value) {
    EXPECT_TRUE(db_->Put(rocksdb::WriteOptions(), cfs_.at(cf), key, value).ok());
  }
  void Delete(const std::string& cf, const std::string& key) {
    EXPECT_TRUE(db_->Delete(rocksdb::WriteOptions(), cfs_.at(cf), key).ok());
  }
  std::set<std::string> CfNames() const {
    std::set<std::string> out;
    for (const auto& [n, h] : cfs_) out.insert(n);
    return out;
  }

 private:
  rocksdb::DB* db_ = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::map<std::string, rocksdb::ColumnFamilyHandle*> cfs_;
};

// ---- helpers ----

// Compressible but not trivial: a pseudo-random line pattern with a counter.
std::string MakeRaw(uint64_t salt, size_t size) {
  std::string out;
  out.reserve(size);
  uint64_t x = 0x9e3779b97f4a7c15ull ^ salt;
  while (out.size() < size) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    char line[64];
    int n = std::snprintf(line, sizeof line, "ev %02x ic %llu\n", static_cast<unsigned>(x & 0x7),
                          static_cast<unsigned long long>(out.size()));
    out.append(line, static_cast<size_t>(n));
  }
  out.resize(size);
  return out;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("store_test");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    dir_.emplace(std::move(dir).value());
    path_ = dir_->path() + "/db";
    Reopen();
  }
  void TearDown() override { store_.reset(); }

  void Reopen(StoreOptions opts = {}) {
    store_.reset();
    opts.path = path_;
    auto s = Store::Open(opts);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
  }
  void Close() { store_.reset(); }

  // Appends n chunks of `size` bytes each; returns the completed infos and raws.
  void AppendChunks(const std::string& id, int n, size_t size,
                    std::vector<RrChunkInfo>* infos = nullptr,
                    std::vector<std::string>* raws = nullptr) {
    Sha256Digest prev{};
    uint64_t offset = 0;
    uint64_t start = 0;
    auto existing = store_->ListRrChunks(id);
    ASSERT_TRUE(existing.ok());
    if (!existing->empty()) {
      prev = existing->back().chain;
      offset = existing->back().raw_offset + existing->back().raw_size;
      start = existing->back().seq + 1;
    }
    for (uint64_t seq = start; seq < start + n; ++seq) {
      RrChunkInfo info;
      info.seq = seq;
      info.raw_offset = offset;
      info.first_icount = seq * 1000;
      info.last_icount = seq * 1000 + 999;
      info.first_wall_ns = 1'700'000'000'000'000'000 + static_cast<int64_t>(seq) * 1000;
      info.last_wall_ns = info.first_wall_ns + 999;
      info.event_count = static_cast<uint32_t>(seq + 1);
      info.console_bytes = static_cast<uint32_t>(seq * 2);
      info.prev_chain = prev;
      std::string raw = MakeRaw(seq, size);
      auto r = store_->AppendRrChunk(id, info, raw);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      prev = r->chain;
      offset += raw.size();
      if (infos) infos->push_back(*r);
      if (raws) raws->push_back(raw);
    }
  }

  std::optional<TempDir> dir_;
  std::string path_;
  std::unique_ptr<Store> store_;
};

RecordingInfo MakeRecording(const std::string& id, int64_t started) {
  RecordingInfo r;
  r.id = id;
  r.vm_name = "vm-" + id;
  r.state = "recording";
  r.started_wall_ns = started;
  r.extra = {{"spec", {{"memory_mb", 256}}}, {"inputs", {"a", "b"}}};
  return r;
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

TEST_F(StoreTest, Usage) {
  AppendChunks("rec", 3, 1000);
  ASSERT_TRUE(store_->AppendConsole("rec", {0, 1, "hello"}).ok());
  ASSERT_TRUE(store_->AppendConsole("rec", {5, 2, "world!"}).ok());
  ASSERT_TRUE(store_->PutEvent("rec", 1, {{"kind", "a"}}).ok());
  ASSERT_TRUE(store_->PutEvent("rec", 1, {{"kind", "b"}}).ok());
  ASSERT_TRUE(store_->Flush().ok());
  auto u = store_->GetUsage("rec");
  ASSERT_TRUE(u.ok());
  uint64_t stored = 0;
  auto chunks = store_->ListRrChunks("rec");
  ASSERT_TRUE(chunks.ok());
  for (const auto& c : *chunks) stored += c.stored_size;
  EXPECT_EQ(u->rr_raw_bytes, 3000u);
  EXPECT_EQ(u->rr_stored_bytes, stored);
  EXPECT_EQ(u->console_bytes, 11u);
  EXPECT_EQ(u->events, 2u);
  auto none = store_->GetUsage("other");
  EXPECT_EQ(none->rr_raw_bytes + none->console_bytes + none->events, 0u);
}

// ---- switch captures ----

// The documented frame formats, written out independently of store.cc.

// Field offsets of a frame_index value.
constexpr size_t kFiSeq = 5, kFiFirst = 13, kFiLast = 21, kFiFrameCount = 29, kFiDropped = 33,
                 kFiRawSize = 37, kFiStoredSize = 41, kFiRawSha = 45, kFiPrevChain = 77,
                 kFiChain = 109, kFiPortCount = 141, kFiPorts = 145;

std::string EncodeFrameIndex(const FrameBatchInfo& i) {
  std::string v = "BBFI";
  v.push_back(1);
  PutBE(&v, i.seq, 8);
  PutBE(&v, static_cast<uint64_t>(i.first_wall_ns), 8);
  PutBE(&v, static_cast<uint64_t>(i.last_wall_ns), 8);
  PutBE(&v, i.frame_count, 4);
  PutBE(&v, i.dropped_count, 4);
  PutBE(&v, i.raw_size, 4);
  PutBE(&v, i.stored_size, 4);
  v += Digest(i.raw_sha256) + Digest(i.prev_chain) + Digest(i.chain);
  PutBE(&v, i.ports.size(), 4);
  for (uint32_t p : i.ports) PutBE(&v, p, 4);
  v += Digest(Sha256Of(v));
  return v;
}
void ResealFrameIndex(std::string* v) {
  v->resize(v->size() - 32);
  *v += Digest(Sha256Of(*v));
}

std::string EncodeFramesRaw(const std::vector<CapturedFrame>& frames) {
  std::string raw;
  for (const auto& f : frames) {
    PutBE(&raw, static_cast<uint64_t>(f.wall_ns), 8);
    PutBE(&raw, f.ingress, 4);
    PutBE(&raw, f.egress.size(), 2);
    for (uint32_t e : f.egress) PutBE(&raw, e, 4);
    raw.push_back(static_cast<char>(f.drop_reason.size()));
    raw += f.drop_reason;
    PutBE(&raw, f.bytes.size(), 4);
    raw += f.bytes;
  }
  return raw;
}

// Times, counts and ports of a batch, as the index entry documents them.
FrameBatchInfo SummaryOf(const std::vector<CapturedFrame>& frames) {
  FrameBatchInfo s;
  std::set<uint32_t> ports;
  s.first_wall_ns = frames.at(0).wall_ns;
  s.last_wall_ns = frames.at(0).wall_ns;
  for (const auto& f : frames) {
    s.first_wall_ns = std::min(s.first_wall_ns, f.wall_ns);
    s.last_wall_ns = std::max(s.last_wall_ns, f.wall_ns);
    s.dropped_count += f.drop_reason.empty() ? 0 : 1;
    ports.insert(f.ingress);
    ports.insert(f.egress.begin(), f.egress.end());
  }
  s.frame_count = static_cast<uint32_t>(frames.size());
  s.ports.assign(ports.begin(), ports.end());
  return s;
}

std::string FramePayload(const std::string& raw) {
  std::string frame(ZSTD_compressBound(raw.size()), '\0');
  frame.resize(ZSTD_compress(frame.data(), frame.size(), raw.data(), raw.size(), 3));
  return std::string("BBFB\x01\x01", 6) + frame;
}

// Stores batch 0 of capture `id` with payload `raw` directly: the index carries summary's
// times, counts and ports, with sizes, hashes and chain made consistent with raw (what someone
// forging a batch would do).
void PutRawBatch(RawDb* db, const std::string& id, const std::string& raw, FrameBatchInfo info) {
  std::string payload = FramePayload(raw);
  info.seq = 0;
  info.prev_chain = {};
  info.raw_size = static_cast<uint32_t>(raw.size());
  info.stored_size = static_cast<uint32_t>(payload.size() - 6);
  info.raw_sha256 = Sha256Of(raw);
  info.chain = ComputeFrameBatchChain(info);
  db->Put("frame_index", SeqKey(id, 0), EncodeFrameIndex(info));
  db->Put("frames", SeqKey(id, 0), payload);
}

CapturedFrame MakeFrame(int64_t wall_ns, uint32_t ingress, std::vector<uint32_t> egress,
                        std::string drop_reason = "", size_t size = 64) {
  CapturedFrame f;
  f.wall_ns = wall_ns;
  f.ingress = ingress;
  f.egress = std::move(egress);
  f.drop_reason = std::move(drop_reason);
  f.bytes = MakeRaw(static_cast<uint64_t>(wall_ns) * 31 + ingress, size);
  return f;
}

bool SameFrame(const CapturedFrame& a, const CapturedFrame& b) {
  return a.wall_ns == b.wall_ns && a.ingress == b.ingress && a.egress == b.egress &&
         a.drop_reason == b.drop_reason && a.bytes == b.bytes;
}

// Four batches: ports {1,2,3}, {7,8}, {1,2,4} (times out of order within it), {1,2,3,9,10}
// (port 10 only ever an egress port).
std::vector<std::vector<CapturedFrame>> LabBatches() {
  return {
      {MakeFrame(1000, 1, {2}), MakeFrame(1100, 2, {1}), MakeFrame(1200, 1, {2, 3}),
       MakeFrame(1300, 3, {}, "source MAC 02:00:00:00:00:09 is not port 3's"),
       MakeFrame(1900, 1, {2}, "", 1514)},
      {MakeFrame(2000, 7, {8}), MakeFrame(2500, 8, {7}), MakeFrame(2900, 7, {8})},
      {MakeFrame(3500, 1, {2}), MakeFrame(3000, 2, {1}), MakeFrame(3900, 4, {}, "port 4 is down")},
      {MakeFrame(4000, 9, {1, 2, 3, 10}, "", 60)},
  };
}

class CaptureTest : public StoreTest {
 protected:
  // Appends LabBatches() to `id`; keeps the frames (in stored order) and the infos.
  void AppendLab(const std::string& id = "cap") {
    for (const auto& batch : LabBatches()) {
      auto r = store_->AppendFrameBatch(id, batch);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      infos_.push_back(*r);
      frames_.insert(frames_.end(), batch.begin(), batch.end());
    }
  }
  // The frames ReadFrames passes to its sink, and its status.
  std::pair<Status, std::vector<CapturedFrame>> Read(const std::string& id,
                                                     const FrameQuery& q = {}) {
    std::vector<CapturedFrame> got;
    Status s = store_->ReadFrames(id, q, [&](const CapturedFrame& f) {
      got.push_back(f);
      return Status::Ok();
    });
    return {s, got};
  }
  // wall_ns of the frames a query returns; fails the test on an error.
  std::vector<int64_t> Times(const FrameQuery& q) {
    auto [s, got] = Read("cap", q);
    EXPECT_TRUE(s.ok()) << s.ToString();
    std::vector<int64_t> out;
    for (const auto& f : got) out.push_back(f.wall_ns);
    return out;
  }
  std::vector<FrameBatchInfo> infos_;
  std::vector<CapturedFrame> frames_;
};

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
  invalid({MakeFrame(1, 1, {}), MakeFrame(2, 1, {}, "", kMaxFrame + 1)}, "frame 1: a frame of 262145 bytes");
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

// ---- alerts ----

nlohmann::json Alert(const std::string& vm, const std::string& kind, const std::string& name) {
  return {{"vm", vm}, {"kind", kind}, {"name", name}, {"detail", {{"port", 22}}}};
}

// The "name" of each alert, in the order returned; fails the test on an error.
std::vector<std::string> AlertNames(const StatusOr<std::vector<StoredAlert>>& alerts) {
  EXPECT_TRUE(alerts.ok()) << alerts.status().ToString();
  std::vector<std::string> out;
  if (!alerts.ok()) return out;
  for (const auto& a : *alerts) out.push_back(a.body.value("name", "?"));
  return out;
}

// The documented key of an alert: wall_ns u64 | seq u32, no id prefix.
std::string AlertKey(uint64_t wall_ns, uint32_t seq) {
  std::string k;
  PutBE(&k, wall_ns, 8);
  PutBE(&k, seq, 4);
  return k;
}

constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

TEST_F(StoreTest, AlertsPutListGetInTimeOrder) {
  using V = std::vector<std::string>;
  auto put = [&](int64_t wall_ns, const std::string& name) {
    auto id = store_->PutAlert(wall_ns, Alert("web", "unexpected-port", name));
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    return id.ok() ? *id : "";
  };
  EXPECT_EQ(put(300, "a"), "300-0");
  EXPECT_EQ(put(100, "b"), "100-0");
  EXPECT_EQ(put(300, "c"), "300-1");  // same time: after a
  EXPECT_EQ(put(100, "d"), "100-1");
  EXPECT_EQ(put(256, "e"), "256-0");
  EXPECT_EQ(put(0, "f"), "0-0");
  EXPECT_EQ(put(1000, "g"), "1000-0");  // sorts by time, not like its id's text
  EXPECT_EQ(put(255, "h"), "255-0");
  EXPECT_EQ(put(300, "i"), "300-2");
  // Events at the same times are another list and take no alert seqs.
  ASSERT_TRUE(store_->PutEvent("rec", 300, {{"kind", "x"}}).ok());

  auto all = store_->ListAlerts();
  EXPECT_EQ(AlertNames(all), (V{"f", "b", "d", "h", "e", "a", "c", "i", "g"}));
  ASSERT_EQ(all->size(), 9u);
  EXPECT_EQ((*all)[2].id, "100-1");
  EXPECT_EQ((*all)[2].wall_ns, 100);
  EXPECT_EQ((*all)[2].body, Alert("web", "unexpected-port", "d"));  // the whole body comes back

  // Inclusive ranges.
  EXPECT_EQ(AlertNames(store_->ListAlerts(100, 256)), (V{"b", "d", "h", "e"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(101, 299)), (V{"h", "e"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(300, 300)), (V{"a", "c", "i"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(kMin, 99)), (V{"f"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(kMin, 0)), (V{"f"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(301)), (V{"g"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(1001)), V{});
  EXPECT_EQ(AlertNames(store_->ListAlerts(kMin, -1)), V{});
  EXPECT_EQ(AlertNames(store_->ListAlerts(200, 100)), V{});  // inverted
  // Limits keep the oldest.
  EXPECT_EQ(AlertNames(store_->ListAlerts(kMin, kMax, 2)), (V{"f", "b"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(100, kMax, 3)), (V{"b", "d", "h"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(300, 300, 2)), (V{"a", "c"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(300, 300, 1)), (V{"a"}));
  EXPECT_EQ(store_->ListAlerts(kMin, kMax, 100)->size(), 9u);
  EXPECT_EQ(store_->ListAlerts(kMin, kMax, 0)->size(), 9u);

  auto got = store_->GetAlert("300-1");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->id, "300-1");
  EXPECT_EQ(got->wall_ns, 300);
  EXPECT_EQ(got->body, Alert("web", "unexpected-port", "c"));
  EXPECT_EQ(store_->GetAlert("0-0")->body["name"], "f");
  // Every listed id gets its alert back.
  for (const auto& a : *all) EXPECT_EQ(store_->GetAlert(a.id)->body, a.body) << a.id;

  // seq assignment continues after a reopen; extreme times work.
  Reopen();
  EXPECT_EQ(put(300, "j"), "300-3");
  EXPECT_EQ(put(1700000000123456789, "k"), "1700000000123456789-0");
  EXPECT_EQ(put(kMax, "l"), "9223372036854775807-0");
  EXPECT_EQ(AlertNames(store_->ListAlerts(300, 300)), (V{"a", "c", "i", "j"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(1001)), (V{"k", "l"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(kMax, kMax)), (V{"l"}));
  EXPECT_EQ(store_->GetAlert("9223372036854775807-0")->body["name"], "l");
}

TEST_F(StoreTest, ConcurrentAlertsGetDistinctIds) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        EXPECT_TRUE(store_->PutAlert(42, Alert("vm", "k", std::to_string(t))).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  auto alerts = store_->ListAlerts();
  ASSERT_EQ(alerts->size(), 100u);
  for (uint32_t i = 0; i < 100; ++i) EXPECT_EQ((*alerts)[i].id, "42-" + std::to_string(i));
}

TEST_F(StoreTest, InvalidAlertsAreRejected) {
  auto invalid = [&](int64_t wall_ns, const nlohmann::json& body, const std::string& what) {
    auto r = store_->PutAlert(wall_ns, body);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << body;
    EXPECT_THAT(r.status().message(), HasSubstr(what)) << body;
    EXPECT_EQ(r.status().message().find('\n'), std::string::npos) << r.status().message();
  };
  invalid(1, nlohmann::json::array(), "JSON object");
  invalid(1, "web", "JSON object");
  invalid(1, nullptr, "JSON object");
  invalid(1, {{"kind", "x"}}, "'vm'");
  invalid(1, {{"vm", "web"}}, "'kind'");
  invalid(1, {{"vm", 7}, {"kind", "x"}}, "'vm'");
  invalid(1, {{"vm", "web"}, {"kind", nullptr}}, "'kind'");
  invalid(1, {{"vm", "web"}, {"kind", {"x"}}}, "'kind'");
  invalid(-1, Alert("web", "x", "neg"), "negative");
  invalid(kMin, Alert("web", "x", "neg"), "negative");
  nlohmann::json big = Alert("web", "x", "big");
  big["pad"] = std::string(1u << 20, 'x');
  EXPECT_EQ(store_->PutAlert(1, big).status().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(store_->ListAlerts()->empty());
  // Just under the cap is fine.
  nlohmann::json fits = Alert("web", "x", "fits");
  fits["pad"] = "";
  fits["pad"] = std::string((1u << 20) - fits.dump().size(), 'x');
  ASSERT_EQ(fits.dump().size(), 1u << 20);
  EXPECT_TRUE(store_->PutAlert(1, fits).ok());
  EXPECT_EQ(store_->ListAlerts()->size(), 1u);
}

TEST_F(StoreTest, MalformedAndUnknownAlertIds) {
  std::vector<std::string> malformed = {"", "abc", "5", "5-", "-0", "-5-0", "5-0-0", "5--1"};
  // Not exactly as PutAlert writes ids: leading zeros, signs, spaces, other separators.
  for (const char* bad : {"05-0", "5-00", "5-01", "+5-0", "5-+0", " 5-0", "5-0 ", "5 -0"}) {
    malformed.push_back(bad);
  }
  for (const char* bad : {"5_0", "5-0\n", "0x5-0", "5.0-0"}) malformed.push_back(bad);
  // Out of range: wall_ns above int64, seq above uint32.
  for (const char* bad : {"9223372036854775808-0", "99999999999999999999999-0", "5-4294967296"}) {
    malformed.push_back(bad);
  }
  for (const std::string& bad : malformed) {
    auto r = store_->GetAlert(bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << "'" << bad << "'";
    EXPECT_THAT(r.status().message(), HasSubstr("(expected <wall_ns>-<seq>)")) << bad;
  }
  EXPECT_EQ(store_->GetAlert("abc").status().message(),
            "malformed alert id 'abc' (expected <wall_ns>-<seq>)");
  // Control characters are escaped, so the message stays one line.
  EXPECT_EQ(store_->GetAlert("5-0\n").status().message(),
            "malformed alert id '5-0\\x0a' (expected <wall_ns>-<seq>)");

  auto not_found = [&](const std::string& id) {
    auto r = store_->GetAlert(id);
    EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << id;
    EXPECT_THAT(r.status().message(), HasSubstr("'" + id + "'"));
  };
  not_found("5-0");
  ASSERT_EQ(*store_->PutAlert(5, Alert("web", "x", "five")), "5-0");
  EXPECT_TRUE(store_->GetAlert("5-0").ok());
  not_found("5-1");
  not_found("4-0");
  not_found("0-0");
  not_found("9223372036854775807-4294967295");
}

TEST_F(StoreTest, AlertValuesMatchTheDocumentedLayoutAndAreChecked) {
  ASSERT_TRUE(store_->PutAlert(5, Alert("web", "x", "a")).ok());
  ASSERT_TRUE(store_->PutAlert(5, Alert("db", "y", "b")).ok());
  ASSERT_TRUE(store_->PutAlert(9, Alert("web", "z", "c")).ok());
  Close();
  {
    RawDb raw(path_);
    std::string v = raw.Get("alerts", AlertKey(5, 1));
    ASSERT_GT(v.size(), 1u);
    EXPECT_EQ(v[0], '\x01');  // format version
    EXPECT_EQ(nlohmann::json::parse(v.substr(1)), Alert("db", "y", "b"));
    EXPECT_TRUE(raw.Has("alerts", AlertKey(9, 0)));
    raw.Put("alerts", AlertKey(5, 1), "\x01{oops");
  }
  Reopen();
  auto expect_corrupt = [&](const std::string& id, const std::string& what) {
    auto list = store_->ListAlerts();
    EXPECT_EQ(list.status().code(), StatusCode::kCorruption) << what;
    EXPECT_THAT(list.status().message(), HasSubstr(what));
    if (id.empty()) return;
    auto one = store_->GetAlert(id);
    EXPECT_EQ(one.status().code(), StatusCode::kCorruption) << what;
    EXPECT_THAT(one.status().message(), HasSubstr(what));
  };
  // The message names the alert and its key.
  expect_corrupt("5-1", "alert 5-1 (key 000000000000000500000001): stored JSON does not parse");
  // Reads that do not reach the bad alert still work.
  EXPECT_EQ(AlertNames(store_->ListAlerts(6)), (std::vector<std::string>{"c"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(kMin, kMax, 1)), (std::vector<std::string>{"a"}));
  EXPECT_EQ(store_->GetAlert("5-0")->body["name"], "a");

  auto store_raw = [&](const std::string& key, const std::string& value) {
    Close();
    {
      RawDb raw(path_);
      raw.Put("alerts", key, value);
    }
    Reopen();
  };
  store_raw(AlertKey(5, 1), "");
  expect_corrupt("5-1", "alert 5-1 (key 000000000000000500000001): bad value header");
  store_raw(AlertKey(5, 1), "\x02" + Alert("db", "y", "b").dump());
  expect_corrupt("5-1", "alert 5-1 (key 000000000000000500000001): bad value header");
  store_raw(AlertKey(5, 1), Alert("db", "y", "b").dump());  // no header
  expect_corrupt("5-1", "alert 5-1 (key 000000000000000500000001): bad value header");
  store_raw(AlertKey(5, 1), "\x01" + nlohmann::json({{"vm", "db"}}).dump());
  expect_corrupt("5-1", "alert 5-1 (key 000000000000000500000001): stored alert: ");
  store_raw(AlertKey(5, 1), "\x01[]");
  expect_corrupt("5-1", "alert 5-1 (key 000000000000000500000001): stored alert: ");
  store_raw(AlertKey(5, 1), "\x01" + Alert("db", "y", "b").dump());  // repaired
  EXPECT_EQ(store_->ListAlerts()->size(), 3u);
  // A key of the wrong length.
  store_raw(std::string("\x00\x00\x00\x00\x00\x00\x00\x07\x00", 9), "\x01{}");
  expect_corrupt("", "malformed alerts key 000000000000000700");
  EXPECT_EQ(store_->ListAlerts(kMin, 6)->size(), 2u);
}

TEST_F(StoreTest, ReadOnlyStoreWithoutAlertsListsNone) {
  ASSERT_TRUE(store_->PutRecording(MakeRecording("rec", 1)).ok());
  Close();
  StoreOptions ro;
  ro.read_only = true;
  Reopen(ro);
  EXPECT_TRUE(store_->ListAlerts()->empty());
  EXPECT_EQ(store_->GetAlert("1-0").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->PutAlert(1, Alert("web", "x", "a")).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST_F(StoreTest, StoreWithoutAlertsFamilyOpens) {
  // A store as written before alerts existed: every other column family, a recording and a
  // flow.
  Close();
  const std::string old_path = dir_->path() + "/old";
  {
    rocksdb::DBOptions o;
    o.create_if_missing = true;
    o.create_missing_column_families = true;
    std::vector<rocksdb::ColumnFamilyDescriptor> descs;
    descs.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
    for (const char* n : kCfs) descs.emplace_back(n, rocksdb::ColumnFamilyOptions());
    for (const char* n : {"captures", "frame_index", "frames", "flows"}) {
      descs.emplace_back(n, rocksdb::ColumnFamilyOptions());
    }
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
  // A reader and a secondary see no alerts.
  StoreOptions ro;
  ro.read_only = true;
  Reopen(ro);
  EXPECT_TRUE(store_->GetRecording("old").ok());
  EXPECT_TRUE(store_->ListAlerts()->empty());
  EXPECT_EQ(store_->GetAlert("1-0").status().code(), StatusCode::kNotFound);
  StoreOptions sec;
  sec.secondary_path = dir_->path() + "/old-secondary";
  Reopen(sec);
  EXPECT_TRUE(store_->GetRecording("old").ok());
  EXPECT_TRUE(store_->ListAlerts()->empty());
  EXPECT_EQ(store_->GetAlert("1-0").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store_->CatchUp().ok());
  // A writer adds the family, even without create_if_missing.
  StoreOptions rw;
  rw.create_if_missing = false;
  Reopen(rw);
  EXPECT_EQ(*store_->PutAlert(1, Alert("web", "x", "a")), "1-0");
  Close();
  {
    RawDb raw(path_);
    EXPECT_TRUE(raw.CfNames().count("alerts"));
  }
  Reopen(ro);
  EXPECT_EQ(AlertNames(store_->ListAlerts()), (std::vector<std::string>{"a"}));
}

// ---- secondary ----

class SecondaryTest : public StoreTest {
 protected:
  StatusOr<std::unique_ptr<Store>> OpenSecondary(const std::string& name = "secondary") {
    StoreOptions opts;
    opts.path = path_;
    opts.secondary_path = dir_->path() + "/" + name;
    return Store::Open(opts);
  }
};

TEST_F(SecondaryTest, FollowsTheWriterOnlyWhenItCatchesUp) {
  ASSERT_EQ(*store_->PutAlert(10, Alert("web", "x", "before")), "10-0");
  ASSERT_TRUE(store_->PutRecording(MakeRecording("rec", 1)).ok());
  AppendChunks("rec", 2, 3000);
  const std::string sec_dir = dir_->path() + "/secondary";
  ASSERT_FALSE(PathExists(sec_dir));
  auto opened = OpenSecondary();
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::unique_ptr<Store> sec = std::move(opened).value();
  EXPECT_TRUE(PathExists(sec_dir));  // created

  // What the writer wrote before the open (still in its memtables) is there.
  EXPECT_EQ(AlertNames(sec->ListAlerts()), (std::vector<std::string>{"before"}));
  EXPECT_TRUE(sec->GetRecording("rec").ok());
  EXPECT_EQ(sec->VerifyRrChain("rec")->chunks, 2u);

  // A new alert is not seen until CatchUp.
  ASSERT_EQ(*store_->PutAlert(10, Alert("web", "x", "after")), "10-1");
  ASSERT_TRUE(store_->PutRecording(MakeRecording("later", 2)).ok());
  AppendChunks("rec", 1, 3000);
  EXPECT_EQ(AlertNames(sec->ListAlerts()), (std::vector<std::string>{"before"}));
  EXPECT_EQ(sec->GetAlert("10-1").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(sec->GetRecording("later").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(sec->CatchUp().ok());
  EXPECT_EQ(AlertNames(sec->ListAlerts()), (std::vector<std::string>{"before", "after"}));
  EXPECT_EQ(sec->GetAlert("10-1")->body["name"], "after");
  EXPECT_TRUE(sec->GetRecording("later").ok());

  // Reads that take several steps (one snapshot elsewhere) work on a secondary.
  auto report = sec->VerifyRrChain("rec");
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->chunks, 3u);
  EXPECT_FALSE(report->first_bad.has_value()) << report->problem;
  EXPECT_TRUE(sec->ReadRrChunk("rec", 2).ok());
  EXPECT_EQ(sec->GetUsage("rec")->rr_raw_bytes, 9000u);

  // Also across a flush of the writer's memtables to table files.
  ASSERT_TRUE(store_->Flush().ok());
  ASSERT_EQ(*store_->PutAlert(20, Alert("db", "y", "flushed")), "20-0");
  EXPECT_EQ(sec->ListAlerts()->size(), 2u);
  ASSERT_TRUE(sec->CatchUp().ok());
  EXPECT_EQ(AlertNames(sec->ListAlerts(15)), (std::vector<std::string>{"flushed"}));
  EXPECT_EQ(AlertNames(sec->ListAlerts()),
            (std::vector<std::string>{"before", "after", "flushed"}));

  // And after the writer has gone.
  Close();
  ASSERT_TRUE(sec->CatchUp().ok());
  EXPECT_EQ(sec->ListAlerts()->size(), 3u);
}

TEST_F(SecondaryTest, RefusesWrites) {
  auto opened = OpenSecondary();
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  Store& sec = **opened;
  auto fp = [](const Status& s) {
    EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
    EXPECT_THAT(s.message(), HasSubstr("read-only"));
  };
  fp(sec.PutAlert(1, Alert("web", "x", "a")).status());
  fp(sec.PutRecording(MakeRecording("x", 1)));
  fp(sec.AppendRrChunk("x", RrChunkInfo{}, "x").status());
  fp(sec.AppendConsole("x", {0, 0, "x"}));
  fp(sec.PutEvent("x", 0, {{"kind", "x"}}));
  fp(sec.PutCapture("cap", nlohmann::json::object()));
  CapturedFrame frame;
  frame.bytes = "frame";
  fp(sec.AppendFrameBatch("cap", std::span<const CapturedFrame>(&frame, 1)).status());
  fp(sec.PutFlow("cap", {{"start_wall_ns", 1}, {"end_wall_ns", 2}}));
  EXPECT_TRUE(sec.Flush().ok());  // nothing of its own to flush
  ASSERT_TRUE(sec.CatchUp().ok());
  EXPECT_TRUE(sec.ListAlerts()->empty());
  EXPECT_TRUE(sec.ListRecordings()->empty());
  EXPECT_TRUE(sec.ListCaptures()->empty());
}

TEST_F(SecondaryTest, CatchUpNeedsASecondary) {
  Status s = store_->CatchUp();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("not open as a secondary"));
  Close();
  StoreOptions ro;
  ro.read_only = true;
  Reopen(ro);
  EXPECT_EQ(store_->CatchUp().code(), StatusCode::kFailedPrecondition);
}

TEST_F(SecondaryTest, OpenErrors) {
  StoreOptions opts;
  opts.path = dir_->path() + "/absent";
  opts.secondary_path = dir_->path() + "/absent-secondary";
  EXPECT_EQ(Store::Open(opts).status().code(), StatusCode::kIOError);  // create_if_missing
  EXPECT_FALSE(PathExists(opts.path));
  opts.path = path_;
  opts.secondary_path = path_;
  EXPECT_EQ(Store::Open(opts).status().code(), StatusCode::kInvalidArgument);
  // Two secondaries follow one writer side by side.
  auto a = OpenSecondary("a");
  auto b = OpenSecondary("b");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_TRUE(store_->PutAlert(1, Alert("web", "x", "a")).ok());
  ASSERT_TRUE((*a)->CatchUp().ok());
  EXPECT_EQ((*a)->ListAlerts()->size(), 1u);
  EXPECT_EQ((*b)->ListAlerts()->size(), 0u);
}

TEST_F(SecondaryTest, CatchUpWhileReadingAGrowingChunk) {
  // The writer grows chunk 1 in place while one thread catches up and another verifies the
  // chain: every walk sees one consistent state.
  AppendChunks("rec", 1, 2000);
  auto chunks = store_->ListRrChunks("rec");
  ASSERT_TRUE(chunks.ok());
  const RrChunkInfo first = chunks->at(0);
  auto opened = OpenSecondary();
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  Store& sec = **opened;
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (size_t n = 1; n <= 60; ++n) {
      RrChunkInfo info;
      info.seq = 1;
      info.raw_offset = first.raw_offset + first.raw_size;
      info.prev_chain = first.chain;
      EXPECT_TRUE(store_->AppendRrChunk("rec", info, MakeRaw(n, 100 * n)).ok());
      EXPECT_TRUE(store_->PutAlert(static_cast<int64_t>(n), Alert("web", "x", "n")).ok());
    }
    done = true;
  });
  std::thread follower([&] {
    while (!done) EXPECT_TRUE(sec.CatchUp().ok());
  });
  int walks = 0;
  while (!done || walks < 5) {
    auto report = sec.VerifyRrChain("rec");
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_FALSE(report->first_bad.has_value()) << report->problem;
    ++walks;
  }
  writer.join();
  follower.join();
  ASSERT_TRUE(sec.CatchUp().ok());
  EXPECT_EQ(sec.ListAlerts()->size(), 60u);
  EXPECT_EQ(sec.ReadRrChunk("rec", 1)->size(), 6000u);
}

// ---- open, reopen, read-only, locking, durability ----

TEST_F(StoreTest, ReopenKeepsEverything) {
  ASSERT_TRUE(store_->PutRecording(MakeRecording("rec", 1)).ok());
  std::vector<std::string> raws;
  AppendChunks("rec", 3, 3000, nullptr, &raws);
  ASSERT_TRUE(store_->AppendConsole("rec", {0, 1, "boot"}).ok());
  ASSERT_TRUE(store_->PutEvent("rec", 1, {{"kind", "start"}}).ok());
  Close();
  StoreOptions opts;
  opts.create_if_missing = false;
  Reopen(opts);
  EXPECT_EQ(store_->GetRecording("rec")->vm_name, "vm-rec");
  EXPECT_EQ(*store_->ReadRrChunk("rec", 1), raws[1]);
  EXPECT_EQ(store_->VerifyRrChain("rec")->chunks, 3u);
  EXPECT_EQ(store_->ReadConsole("rec")->at(0).bytes, "boot");
  EXPECT_EQ(store_->ListEvents("rec")->at(0).body["kind"], "start");
}

TEST_F(StoreTest, MissingStoreIsNotCreatedUnlessAsked) {
  StoreOptions opts;
  opts.path = dir_->path() + "/absent";
  opts.create_if_missing = false;
  EXPECT_EQ(Store::Open(opts).status().code(), StatusCode::kIOError);
  opts.create_if_missing = true;
  opts.read_only = true;
  EXPECT_EQ(Store::Open(opts).status().code(), StatusCode::kIOError);
  EXPECT_FALSE(PathExists(opts.path));
  opts.path = dir_->path() + "/nested/dirs/db";
  opts.read_only = false;
  EXPECT_TRUE(Store::Open(opts).ok());
  opts.zstd_level = 1000;
  EXPECT_EQ(Store::Open(opts).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, ReadOnlySeesDataAndRefusesWrites) {
  ASSERT_TRUE(store_->PutRecording(MakeRecording("rec", 1)).ok());
  AppendChunks("rec", 2, 1000);
  // A reader opened while the writer is live sees the state as of its Open.
  StoreOptions ro;
  ro.path = path_;
  ro.read_only = true;
  auto reader = Store::Open(ro);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  ASSERT_TRUE(store_->PutRecording(MakeRecording("later", 2)).ok());
  EXPECT_TRUE((*reader)->GetRecording("rec").ok());
  EXPECT_EQ((*reader)->GetRecording("later").status().code(), StatusCode::kNotFound);
  EXPECT_EQ((*reader)->VerifyRrChain("rec")->chunks, 2u);

  auto fp = [](const Status& s) { EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition); };
  fp((*reader)->PutRecording(MakeRecording("x", 1)));
  fp((*reader)->AppendRrChunk("x", RrChunkInfo{}, "x").status());
  fp((*reader)->AppendConsole("x", {0, 0, "x"}));
  fp((*reader)->PutEvent("x", 0, {{"kind", "x"}}));
  EXPECT_TRUE((*reader)->Flush().ok());
  reader->reset();

  Close();
  Reopen(ro);
  EXPECT_TRUE(store_->GetRecording("later").ok());
}

TEST_F(StoreTest, SecondWriterInThisProcessGetsAClearError) {
  StoreOptions opts;
  opts.path = path_;
  auto second = Store::Open(opts);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kIOError);
  EXPECT_THAT(second.status().message(),
              HasSubstr("store " + path_ + " is in use by another Blackbox process"));
}

TEST_F(StoreTest, SyncWritesRoundTrip) {
  StoreOptions opts;
  opts.sync_writes = true;
  opts.zstd_level = 19;
  Reopen(opts);
  AppendChunks("rec", 2, 5000);
  EXPECT_FALSE(store_->VerifyRrChain("rec")->first_bad.has_value());
}

// The cross-process tests re-run this binary with a child-mode test selected by environment.
std::string SelfExe() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "";
  return std::string(buf, static_cast<size_t>(n));
}

// Runs the child test with BB_STORE_CHILD=mode:path; returns its exit status and output.
std::pair<int, std::string> RunChild(const std::string& mode, const std::string& path) {
  std::string cmd = "BB_STORE_CHILD='" + mode + ":" + path + "' '" + SelfExe() +
                    "' --gtest_also_run_disabled_tests --gtest_filter=StoreChild.DISABLED_Run 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return {-1, ""};
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = ::pclose(p);
  return {status, out};
}

TEST(StoreChild, DISABLED_Run) {
  const char* env = std::getenv("BB_STORE_CHILD");
  if (env == nullptr) GTEST_SKIP() << "only run by the cross-process tests";
  std::string arg = env;
  std::string mode = arg.substr(0, arg.find(':'));
  StoreOptions opts;
  opts.path = arg.substr(arg.find(':') + 1);
  auto store = Store::Open(opts);
  if (mode == "lock") {
    ASSERT_FALSE(store.ok());
    std::printf("CHILD-STATUS %s\n", store.status().ToString().c_str());
    std::fflush(stdout);
    return;
  }
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_TRUE((*store)->PutRecording(MakeRecording("crashed", 1)).ok());
  ASSERT_TRUE((*store)->AppendRrChunk("crashed", RrChunkInfo{}, MakeRaw(1, 10000)).ok());
  ASSERT_TRUE((*store)->PutEvent("crashed", 1, {{"kind", "last words"}}).ok());
  std::fflush(stdout);
  ::kill(::getpid(), SIGKILL);  // no close, no flush
}

TEST_F(StoreTest, SecondWriterProcessGetsAClearError) {
  auto [status, out] = RunChild("lock", path_);
  EXPECT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("CHILD-STATUS I/O error: store " + path_ +
                             " is in use by another Blackbox process"));
}

TEST_F(StoreTest, WritesSurviveAKilledWriter) {
  Close();
  auto [status, out] = RunChild("crash", path_);
  EXPECT_NE(status, 0) << out;  // killed
  Reopen();
  EXPECT_TRUE(store_->GetRecording("crashed").ok());
  auto report = store_->VerifyRrChain("crashed");
  EXPECT_EQ(report->chunks, 1u);
  EXPECT_FALSE(report->first_bad.has_value());
  EXPECT_EQ(store_->ListEvents("crashed")->size(), 1u);
}

}  // namespace
}  // namespace blackbox
