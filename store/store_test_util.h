// Fixtures and helpers shared by the store's tests (store_test.cc, recordings_test.cc,
// captures_test.cc, frame_corruption_test.cc, alerts_test.cc), which are one test binary.
//
// These tests reach under the Store to corrupt what it wrote, so they link RocksDB and zstd
// directly and re-implement the documented formats (docs/store-format.md) independently.
#pragma once

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/files.h"
#include "common/hash.h"
#include "store/store.h"

namespace blackbox::store_test {

// ---- the documented formats, written out independently of the store's code ----

// The column families of a store written before captures existed.
inline const char* const kCfs[] = {"meta",      "recordings", "rr_index",
                                   "rr_chunks", "console",    "events"};

inline void PutBE(std::string* out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
inline void SetBE(std::string* v, size_t off, uint64_t x, int bytes) {
  for (int i = 0; i < bytes; ++i)
    (*v)[off + i] = static_cast<char>((x >> (8 * (bytes - 1 - i))) & 0xff);
}
inline std::string Digest(const Sha256Digest& d) { return std::string(d.begin(), d.end()); }

inline std::string SeqKey(const std::string& id, uint64_t seq) {
  std::string k = id;
  k.push_back('\0');
  PutBE(&k, seq, 8);
  return k;
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
inline std::string MakeRaw(uint64_t salt, size_t size) {
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

inline RecordingInfo MakeRecording(const std::string& id, int64_t started) {
  RecordingInfo r;
  r.id = id;
  r.vm_name = "vm-" + id;
  r.state = "recording";
  r.started_wall_ns = started;
  r.extra = {{"spec", {{"memory_mb", 256}}}, {"inputs", {"a", "b"}}};
  return r;
}

// ---- alerts ----

inline nlohmann::json Alert(const std::string& vm, const std::string& kind,
                            const std::string& name) {
  return {{"vm", vm}, {"kind", kind}, {"name", name}, {"detail", {{"port", 22}}}};
}

// The "name" of each alert, in the order returned; fails the test on an error.
inline std::vector<std::string> AlertNames(const StatusOr<std::vector<StoredAlert>>& alerts) {
  EXPECT_TRUE(alerts.ok()) << alerts.status().ToString();
  std::vector<std::string> out;
  if (!alerts.ok()) return out;
  for (const auto& a : *alerts) out.push_back(a.body.value("name", "?"));
  return out;
}

}  // namespace blackbox::store_test
