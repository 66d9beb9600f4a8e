// Internal to store/: what the store's .cc files share beyond the encodings
// (store_encoding.h): Store::Impl, the zstd context pools, ReadScope, and the hash-chained-log
// machinery that writes, reads and walks rr chunks and frame batches alike. Nobody outside
// store/ includes it; everything else talks to store/store.h.
#pragma once

#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/snapshot.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "store/store.h"
#include "store/store_encoding.h"

namespace blackbox {
namespace store_internal {

// ---- index and payload codecs of the chained logs ----

// Defined in recordings.cc.
// Decodes an rr index value; returns what is wrong with it, or "" when it is good.
std::string DecodeRrIndex(std::string_view v, RrChunkInfo* out);

// Defined in captures.cc.
// Decodes a frame index value; returns what is wrong with it, or "" when it is good.
std::string DecodeFrameIndex(std::string_view v, FrameBatchInfo* out);
// The summary fields of a batch's index entry (times, counts, ports) computed from its frames.
FrameBatchInfo Summarize(std::span<const CapturedFrame> frames);
// Decodes an encoded batch that should hold frame_count frames into *out. Bounds-checked
// throughout: returns what is wrong, or "" when the bytes are exactly frame_count frames.
std::string DecodeFrames(std::string_view raw, uint32_t frame_count,
                         std::vector<CapturedFrame>* out);
// Compares the summary in an index entry with the one computed from the batch's frames.
// Returns the first field that differs, or "" when they agree.
std::string CompareSummary(const FrameBatchInfo& index, const FrameBatchInfo& frames);

// ---- hash-chained logs ----

// rr chunks and frame batches are both logs of zstd payloads numbered 0, 1, 2, ... whose
// index entries are hash-chained. ChainTraits<Info> says what differs between them; the code
// that writes, reads and walks them is shared.
template <typename Info>
struct ChainTraits;

template <>
struct ChainTraits<RrChunkInfo> {
  static constexpr Cf kIndexCf = kRrIndex;
  static constexpr Cf kPayloadCf = kRrChunks;
  static constexpr const char* kOwner = "recording";
  static constexpr const char* kItem = "chunk";
  static constexpr const char* kPayloadMagic = kChunkMagic;
  static constexpr uint32_t kMaxRawSize = kMaxChunkRawSize;
  // What a chunk's raw bytes decode to: themselves.
  using Content = std::string_view;

  static std::string DecodeIndex(std::string_view v, RrChunkInfo* out) {
    return DecodeRrIndex(v, out);
  }
  static Sha256Digest Chain(const RrChunkInfo& info) { return ComputeChunkChain(info); }
  // Checks that info continues prev beyond the chain hash; "" when it does.
  static std::string Continues(const RrChunkInfo& prev, const RrChunkInfo& info) {
    uint64_t prev_end = prev.raw_offset + prev.raw_size;
    if (prev_end < prev.raw_offset || info.raw_offset != prev_end) {
      return "raw_offset " + std::to_string(info.raw_offset) + " is not contiguous (chunk " +
             std::to_string(prev.seq) + " ends at " + std::to_string(prev_end) + ")";
    }
    return "";
  }
  static std::string DecodeContent(const RrChunkInfo&, std::string_view raw, Content* out) {
    *out = raw;
    return "";
  }
};

template <>
struct ChainTraits<FrameBatchInfo> {
  static constexpr Cf kIndexCf = kFrameIndex;
  static constexpr Cf kPayloadCf = kFrames;
  static constexpr const char* kOwner = "capture";
  static constexpr const char* kItem = "batch";
  static constexpr const char* kPayloadMagic = kFrameBatchMagic;
  static constexpr uint32_t kMaxRawSize = kMaxBatchRawSize;
  using Content = std::vector<CapturedFrame>;

  static std::string DecodeIndex(std::string_view v, FrameBatchInfo* out) {
    return DecodeFrameIndex(v, out);
  }
  static Sha256Digest Chain(const FrameBatchInfo& info) { return ComputeFrameBatchChain(info); }
  static std::string Continues(const FrameBatchInfo&, const FrameBatchInfo&) { return ""; }
  // Decodes the frames and checks them against the index summary.
  static std::string DecodeContent(const FrameBatchInfo& info, std::string_view raw, Content* out) {
    std::string problem = DecodeFrames(raw, info.frame_count, out);
    if (problem.empty()) problem = CompareSummary(info, Summarize(*out));
    if (!problem.empty()) out->clear();
    return problem;
  }
};

// "recording web-01 chunk 7", "capture lab-1 batch 3".
template <typename Info>
std::string ItemName(const std::string& id, uint64_t seq) {
  using T = ChainTraits<Info>;
  return std::string(T::kOwner) + " " + id + " " + T::kItem + " " + std::to_string(seq);
}

inline constexpr char kChainMismatch[] = "chain hash mismatch (index entry altered)";

// Decodes the index value of item `seq` of `id`.
template <typename Info>
StatusOr<Info> DecodeIndexOf(const std::string& id, uint64_t seq, std::string_view value) {
  using T = ChainTraits<Info>;
  Info info;
  std::string problem = T::DecodeIndex(value, &info);
  if (problem.empty() && info.seq != seq) {
    problem = std::string("index entry belongs to ") + T::kItem + " " + std::to_string(info.seq) +
              " (index altered)";
  }
  if (!problem.empty()) return Corruption(ItemName<Info>(id, seq) + ": " + problem);
  return info;
}

// The decoders below take a key of recording or capture `id` without KeyPrefix(id) and its
// value.

template <typename Info>
StatusOr<Info> DecodeIndexEntry(const std::string& id, rocksdb::Slice key_suffix,
                                rocksdb::Slice value) {
  using T = ChainTraits<Info>;
  if (key_suffix.size() != 8) {
    return Corruption(std::string(T::kOwner) + " " + id + ": malformed " + kCfWhat[T::kIndexCf] +
                      " key " + KeyHex(id, key_suffix));
  }
  return DecodeIndexOf<Info>(id, GetBE64(key_suffix.data()), View(value));
}

// ---- Store::Impl ----

// zstd contexts kept for reuse, so that threads compressing or decompressing at once neither
// serialise nor allocate a context per call.
template <typename Ctx, Ctx* (*Create)(), size_t (*Free)(Ctx*)>
class ZstdContextPool {
 public:
  ZstdContextPool() = default;
  ZstdContextPool(const ZstdContextPool&) = delete;
  ZstdContextPool& operator=(const ZstdContextPool&) = delete;
  ~ZstdContextPool() {
    for (Ctx* c : free_) Free(c);
  }
  // A context, or nullptr when none can be allocated. Give it back when done.
  Ctx* Take() {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!free_.empty()) {
        Ctx* c = free_.back();
        free_.pop_back();
        return c;
      }
    }
    return Create();
  }
  void Give(Ctx* c) {
    if (c == nullptr) return;
    std::lock_guard<std::mutex> l(mu_);
    if (free_.size() < 8) {
      free_.push_back(c);
    } else {
      Free(c);
    }
  }

 private:
  std::mutex mu_;
  std::vector<Ctx*> free_;
};

// A compression context that writes the content size and a content checksum into every frame.
inline ZSTD_CCtx* CreateCctx() {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  if (c == nullptr) return nullptr;
  size_t r = ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
  if (!ZSTD_isError(r)) r = ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1);
  if (ZSTD_isError(r)) {
    ZSTD_freeCCtx(c);
    return nullptr;
  }
  return c;
}

// A consistent view for reads of several steps (an index entry, then its payload...). On a
// writer or a read-only store it is a RocksDB snapshot. A secondary's iterators refuse
// snapshots (NotSupported), but its view only moves in CatchUp, so there the scope holds
// CatchUp off instead (catchup_mu is that store's, nullptr elsewhere).
class ReadScope {
 public:
  ReadScope(rocksdb::DB* db, std::shared_mutex* catchup_mu) {
    if (catchup_mu != nullptr) {
      hold_ = std::shared_lock<std::shared_mutex>(*catchup_mu);
    } else {
      snap_.emplace(db);
      options_.snapshot = snap_->snapshot();
    }
  }
  ReadScope(const ReadScope&) = delete;
  ReadScope& operator=(const ReadScope&) = delete;
  const rocksdb::ReadOptions& options() const { return options_; }

 private:
  std::shared_lock<std::shared_mutex> hold_;
  std::optional<rocksdb::ManagedSnapshot> snap_;
  rocksdb::ReadOptions options_;
};

}  // namespace store_internal

// This header and the .cc files including it are store/'s own: they use the helpers above and
// those of store_encoding.h unqualified.
using namespace store_internal;  // NOLINT(build/namespaces)

struct Store::Impl {
  StoreOptions options;    // read_only is set for a secondary too
  bool secondary = false;  // opened with StoreOptions::secondary_path
  rocksdb::DB* db = nullptr;
  // Our column families first (index = Cf; nullptr for an optional one a read-only open did
  // not find), then the default one and any unknown ones the database already had.
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::WriteOptions write_options;

  int zstd_level = 3;  // StoreOptions::zstd_level
  ZstdContextPool<ZSTD_CCtx, CreateCctx, ZSTD_freeCCtx> cctx_pool;
  ZstdContextPool<ZSTD_DCtx, ZSTD_createDCtx, ZSTD_freeDCtx> dctx_pool;

  std::mutex rr_mu;  // serialises AppendRrChunk's check-then-write

  std::mutex timed_mu;  // serialises seq assignment of events, flows and alerts

  // Secondary only: CatchUp holds it exclusively, ReadScopes shared.
  std::shared_mutex catchup_mu;
  ReadScope Scope() { return ReadScope(db, secondary ? &catchup_mu : nullptr); }

  // Where the frame chain of a capture ends, so that AppendFrameBatch does not rescan.
  struct CaptureHead {
    std::mutex mu;  // serialises appends to the capture and guards the fields below
    bool loaded = false;
    uint64_t next_seq = 0;
    Sha256Digest chain{};  // of batch next_seq - 1; zero when there is none
  };
  std::mutex heads_mu;  // guards heads (not the CaptureHeads themselves)
  std::map<std::string, std::shared_ptr<CaptureHead>> heads;

  ~Impl() {
    if (db != nullptr) {
      for (auto* h : handles) {
        if (h != nullptr) db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
      }
      rocksdb::Status s = db->Close();
      if (!s.ok()) spdlog::warn("closing store {}: {}", options.path, s.ToString());
      delete db;
    }
  }

  rocksdb::ColumnFamilyHandle* cf(Cf c) const { return handles[c]; }

  // Reads go through these two, which treat a missing optional column family as empty.
  rocksdb::Status Get(const rocksdb::ReadOptions& ro, Cf c, const std::string& key,
                      std::string* value) const {
    if (cf(c) == nullptr) return rocksdb::Status::NotFound();
    return db->Get(ro, cf(c), key, value);
  }
  std::unique_ptr<rocksdb::Iterator> NewIterator(const rocksdb::ReadOptions& ro, Cf c) const {
    if (cf(c) == nullptr) return std::unique_ptr<rocksdb::Iterator>(rocksdb::NewEmptyIterator());
    return std::unique_ptr<rocksdb::Iterator>(db->NewIterator(ro, cf(c)));
  }

  // Calls fn(key_suffix, value) for every key of recording or capture `id` in column family
  // `c`, in key order, starting at KeyPrefix(id) + from_suffix; key_suffix is the key without
  // KeyPrefix(id). Reads with `ro` (e.g. its snapshot), bounded to the id's keys. Stops at and
  // returns the first error of fn.
  Status ForEachKeyOf(
      const rocksdb::ReadOptions& ro, Cf c, const std::string& id,
      const std::function<Status(rocksdb::Slice key_suffix, rocksdb::Slice value)>& fn,
      std::string_view from_suffix = {}) const {
    const std::string prefix = KeyPrefix(id);
    const std::string end = KeyPrefixEnd(id);
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions bounded = ro;
    bounded.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it = NewIterator(bounded, c);
    for (it->Seek(prefix + std::string(from_suffix)); it->Valid(); it->Next()) {
      rocksdb::Slice key_suffix = it->key();
      key_suffix.remove_prefix(prefix.size());
      RETURN_IF_ERROR(fn(key_suffix, it->value()));
    }
    if (!it->status().ok()) {
      return FromRocks(it->status(), std::string(OwnerOf(c)) + " " + id + " " + kCfWhat[c]);
    }
    return Status::Ok();
  }

  // Every value of recording or capture `id` in column family `c`, in key order, each decoded
  // by decode(id, key_suffix, value). Fails with the first error of decode.
  template <typename T>
  StatusOr<std::vector<T>> DecodeAll(Cf c, const std::string& id,
                                     StatusOr<T> (*decode)(const std::string& id,
                                                           rocksdb::Slice key_suffix,
                                                           rocksdb::Slice value)) const {
    std::vector<T> out;
    RETURN_IF_ERROR(ForEachKeyOf(rocksdb::ReadOptions(), c, id,
                                 [&](rocksdb::Slice key_suffix, rocksdb::Slice value) -> Status {
                                   ASSIGN_OR_RETURN(T item, decode(id, key_suffix, value));
                                   out.push_back(std::move(item));
                                   return Status::Ok();
                                 }));
    return out;
  }

  Status CheckWritable() const {
    if (options.read_only) {
      return FailedPrecondition("store " + options.path + " is open read-only" +
                                (secondary ? " (as a secondary)" : ""));
    }
    return Status::Ok();
  }

  Status Write(rocksdb::WriteBatch* batch, const std::string& context) {
    rocksdb::Status s = db->Write(write_options, batch);
    if (!s.ok()) return FromRocks(s, context);
    return Status::Ok();
  }

  // Builds a payload value (magic | version | codec | zstd frame of raw) in *value.
  // `level` 0 means StoreOptions::zstd_level; InvalidArgument when out of zstd's range.
  // `where` names the item in errors.
  Status Compress(std::string_view raw, int level, const char* magic, const std::string& where,
                  std::string* value) {
    if (level == 0) level = zstd_level;
    if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()) {
      return InvalidArgument(where + ": zstd level " + std::to_string(level) + " is out of range");
    }
    value->assign(kPayloadHeaderSize, '\0');
    std::memcpy(value->data(), magic, 4);
    (*value)[4] = static_cast<char>(kPayloadVersion);
    (*value)[5] = static_cast<char>(kCodecZstd);
    const size_t bound = ZSTD_compressBound(raw.size());
    value->resize(kPayloadHeaderSize + bound);
    ZSTD_CCtx* cctx = cctx_pool.Take();
    if (cctx == nullptr) return Internal(where + ": cannot allocate a zstd compression context");
    size_t n = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
    if (!ZSTD_isError(n)) {
      n = ZSTD_compress2(cctx, value->data() + kPayloadHeaderSize, bound, raw.data(), raw.size());
    }
    cctx_pool.Give(cctx);
    if (ZSTD_isError(n)) {
      return Internal(where + ": zstd compression failed: " + ZSTD_getErrorName(n));
    }
    value->resize(kPayloadHeaderSize + n);
    return Status::Ok();
  }

  // Checks a stored payload against its index entry and decompresses it into *raw.
  // Returns what is wrong, or "" when the payload is good.
  template <typename Info>
  std::string DecodePayload(const Info& info, std::string_view value, std::string* raw) {
    using T = ChainTraits<Info>;
    const std::string stored = std::string("stored ") + T::kItem;
    if (value.size() < kPayloadHeaderSize || std::memcmp(value.data(), T::kPayloadMagic, 4) != 0) {
      return "payload has bad magic (" + stored + " corrupted)";
    }
    if (static_cast<uint8_t>(value[4]) != kPayloadVersion) {
      return "payload has unsupported format version " +
             std::to_string(static_cast<uint8_t>(value[4]));
    }
    if (static_cast<uint8_t>(value[5]) != kCodecZstd) {
      return "payload has unknown codec " + std::to_string(static_cast<uint8_t>(value[5]));
    }
    std::string_view frame = value.substr(kPayloadHeaderSize);
    if (frame.size() != info.stored_size) {
      return "payload is " + std::to_string(frame.size()) + " bytes but the index says " +
             std::to_string(info.stored_size) + " (" + stored + " truncated or altered)";
    }
    if (info.raw_size > T::kMaxRawSize) {
      return "index claims raw_size " + std::to_string(info.raw_size) + ", above the cap of " +
             std::to_string(T::kMaxRawSize) + " bytes";
    }
    raw->assign(info.raw_size, '\0');
    ZSTD_DCtx* dctx = dctx_pool.Take();
    if (dctx == nullptr) return "cannot allocate a zstd decompression context";
    size_t n = ZSTD_decompressDCtx(dctx, raw->data(), raw->size(), frame.data(), frame.size());
    dctx_pool.Give(dctx);
    if (ZSTD_isError(n)) {
      raw->clear();
      if (ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall) {
        return "payload decompresses to more than raw_size " + std::to_string(info.raw_size) +
               " bytes (size mismatch: " + stored + " altered)";
      }
      return std::string("payload does not decompress: ") + ZSTD_getErrorName(n) + " (" + stored +
             " corrupted)";
    }
    if (n != info.raw_size) {
      raw->clear();
      return "payload decompresses to " + std::to_string(n) + " bytes but raw_size is " +
             std::to_string(info.raw_size) + " (size mismatch: " + stored + " altered)";
    }
    if (Sha256Of(*raw) != info.raw_sha256) {
      raw->clear();
      return "payload hash mismatch (" + stored + " corrupted or altered)";
    }
    return "";
  }

  // Reads the payload of an item whose index entry is `info` and checks it with
  // DecodePayload: *problem says what is wrong ("" when the raw bytes in *raw are good).
  // Errors are for I/O.
  template <typename Info>
  Status LoadPayload(const rocksdb::ReadOptions& ro, const std::string& id, const Info& info,
                     std::string* raw, std::string* problem) {
    using T = ChainTraits<Info>;
    std::string value;
    rocksdb::Status s = Get(ro, T::kPayloadCf, SeqKey(id, info.seq), &value);
    if (s.IsNotFound()) {
      *problem = std::string("payload missing (index entry without stored ") + T::kItem + ")";
      return Status::Ok();
    }
    if (!s.ok()) return FromRocks(s, ItemName<Info>(id, info.seq));
    *problem = DecodePayload(info, value, raw);
    return Status::Ok();
  }

  // Reads and decodes the index entry of (id, seq). NotFound when absent.
  template <typename Info>
  StatusOr<Info> GetIndex(const rocksdb::ReadOptions& ro, const std::string& id, uint64_t seq) {
    using T = ChainTraits<Info>;
    std::string value;
    rocksdb::Status s = Get(ro, T::kIndexCf, SeqKey(id, seq), &value);
    if (s.IsNotFound()) {
      return NotFound(std::string(T::kOwner) + " " + id + " has no " + T::kItem + " " +
                      std::to_string(seq));
    }
    if (!s.ok()) return FromRocks(s, ItemName<Info>(id, seq));
    return DecodeIndexOf<Info>(id, seq, value);
  }

  // The highest seq with an index key of `id` in index column family `c`, if any.
  StatusOr<std::optional<uint64_t>> NewestSeq(Cf c, const std::string& id) {
    const std::string prefix = KeyPrefix(id);
    rocksdb::ReadOptions ro;
    rocksdb::Slice lower(prefix);
    ro.iterate_lower_bound = &lower;
    std::unique_ptr<rocksdb::Iterator> it = NewIterator(ro, c);
    it->SeekForPrev(SeqKey(id, std::numeric_limits<uint64_t>::max()));
    std::optional<uint64_t> newest;
    if (it->Valid() && StartsWith(it->key(), prefix) && it->key().size() == prefix.size() + 8) {
      newest = GetBE64(it->key().data() + prefix.size());
    }
    if (!it->status().ok()) {
      return FromRocks(it->status(), std::string(OwnerOf(c)) + " " + id + " " + kCfWhat[c]);
    }
    return newest;
  }

  // The head of capture `id`'s frame chain, loaded from its newest index entry on first use.
  // Returned locked by *lock. (Defined in captures.cc.)
  StatusOr<CaptureHead*> LockHead(const std::string& id, std::unique_lock<std::mutex>* lock);

  // Defined in store.cc.
  StatusOr<std::string> ResolveKey(Cf c, const std::string& what,
                                   const std::string& id_or_prefix) const;

  // Stores value under TimeKey(id, time, seq) in column family c (events or flows) with seq
  // one more than the highest already stored at that time for id (0 when none), so that equal
  // times keep insertion order. `where` names the owner in errors; `wall_ns` is the time as
  // shown to people.
  Status PutTimed(Cf c, const std::string& id, uint64_t time, int64_t wall_ns,
                  std::string_view value, const std::string& where) {
    return PutTimedKey(c, KeyPrefix(id), time, wall_ns, value, where).status();
  }

  // PutTimed for keys `prefix | time:u64 | seq:u32` with any prefix ("" for alerts). Returns
  // the seq assigned.
  StatusOr<uint32_t> PutTimedKey(Cf c, const std::string& prefix, uint64_t time, int64_t wall_ns,
                                 std::string_view value, const std::string& where) {
    std::lock_guard<std::mutex> lock(timed_mu);
    uint32_t seq = 0;
    const std::string same_time = TimeKey(prefix, time, 0).substr(0, prefix.size() + 8);
    {
      rocksdb::ReadOptions ro;
      rocksdb::Slice lower(same_time);
      ro.iterate_lower_bound = &lower;
      std::unique_ptr<rocksdb::Iterator> it = NewIterator(ro, c);
      it->SeekForPrev(TimeKey(prefix, time, std::numeric_limits<uint32_t>::max()));
      if (it->Valid() && StartsWith(it->key(), same_time) &&
          it->key().size() == same_time.size() + 4) {
        uint32_t last = GetBE32(it->key().data() + same_time.size());
        if (last == std::numeric_limits<uint32_t>::max()) {
          return ResourceExhausted(where + ": too many " + kCfWhat[c] + " at wall time " +
                                   std::to_string(wall_ns));
        }
        seq = last + 1;
      }
      if (!it->status().ok()) return FromRocks(it->status(), where + " " + kCfWhat[c]);
    }
    rocksdb::WriteBatch batch;
    batch.Put(cf(c), TimeKey(prefix, time, seq), rocksdb::Slice(value.data(), value.size()));
    RETURN_IF_ERROR(Write(&batch, where + " " + kCfWhat[c]));
    return seq;
  }

  // Walks the chunks or batches of `id` in seq order in one snapshot and checks everything
  // VerifyRrChain documents: every index entry and the chain always; the payload and its
  // decoded content (ChainTraits::DecodeContent) of those for which want(info) is true (all
  // when want is empty), then calls visit(info, content) for them. Stops at the first bad item
  // and describes it in report->first_bad and report->problem ("recording X chunk N: ...");
  // I/O errors and visit's errors are returned. The counts in *report cover every good item
  // walked, read or not.
  template <typename Info>
  Status WalkChain(
      const std::string& id, const std::function<bool(const Info&)>& want,
      const std::function<Status(const Info&, const typename ChainTraits<Info>::Content&)>& visit,
      Store::ChainReport* report) {
    using T = ChainTraits<Info>;
    const std::string item = T::kItem;
    ReadScope scope = Scope();
    rocksdb::ReadOptions ro = scope.options();
    const std::string prefix = KeyPrefix(id);

    // Records the failure in *report. The error it returns only stops ForEachKeyOf;
    // WalkChain itself then returns OK.
    auto fail = [&](uint64_t seq, const std::string& what) {
      report->first_bad = seq;
      report->problem = ItemName<Info>(id, seq) + ": " + what;
      return Corruption(report->problem);
    };

    uint64_t expected = 0;
    Info prev;
    std::string raw;
    typename T::Content content;
    Status walked = ForEachKeyOf(
        ro, T::kIndexCf, id, [&](rocksdb::Slice key_suffix, rocksdb::Slice index) -> Status {
          if (key_suffix.size() != 8) {
            return fail(expected, "malformed index key " + KeyHex(id, key_suffix));
          }
          uint64_t seq = GetBE64(key_suffix.data());
          if (seq != expected) {
            return fail(expected, item + " " + std::to_string(expected) +
                                      " is missing (next stored " + item + " is " +
                                      std::to_string(seq) + ")");
          }
          Info info;
          std::string problem = T::DecodeIndex(View(index), &info);
          if (!problem.empty()) return fail(seq, problem);
          if (info.seq != seq) {
            return fail(seq, "index entry belongs to " + item + " " + std::to_string(info.seq) +
                                 " (index altered)");
          }
          if (seq == 0) {
            if (!IsZero(info.prev_chain)) {
              return fail(seq, "first " + item + " has a non-zero prev_chain");
            }
          } else {
            problem = T::Continues(prev, info);
            if (!problem.empty()) return fail(seq, problem);
            if (info.prev_chain != prev.chain) {
              return fail(seq, "prev_chain does not match the chain of " + item + " " +
                                   std::to_string(seq - 1) + " (chain broken: a " + item +
                                   " was removed, inserted or altered)");
            }
          }
          if (T::Chain(info) != info.chain) return fail(seq, kChainMismatch);
          if (!want || want(info)) {
            RETURN_IF_ERROR(LoadPayload(ro, id, info, &raw, &problem));
            if (!problem.empty()) return fail(seq, problem);
            problem = T::DecodeContent(info, raw, &content);
            if (!problem.empty()) return fail(seq, problem);
            if (visit) RETURN_IF_ERROR(visit(info, content));
          }
          report->chunks++;
          report->raw_bytes += info.raw_size;
          report->head = info.chain;
          prev = std::move(info);
          expected = seq + 1;
          return Status::Ok();
        });
    if (report->first_bad) return Status::Ok();
    RETURN_IF_ERROR(walked);
    // A payload after the last index entry means index entries were removed from the end.
    const std::string end = KeyPrefixEnd(id);
    rocksdb::Slice upper(end);
    ro.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> pit = NewIterator(ro, T::kPayloadCf);
    pit->Seek(SeqKey(id, expected));
    if (pit->Valid() && StartsWith(pit->key(), prefix)) {
      uint64_t seq = pit->key().size() == prefix.size() + 8
                         ? GetBE64(pit->key().data() + prefix.size())
                         : expected;
      fail(seq, "payload stored without an index entry (index entries removed)").IgnoreError();
      return Status::Ok();
    }
    if (!pit->status().ok()) {
      return FromRocks(pit->status(),
                       std::string(T::kOwner) + " " + id + " " + kCfWhat[T::kPayloadCf]);
    }
    return Status::Ok();
  }
};

}  // namespace blackbox
