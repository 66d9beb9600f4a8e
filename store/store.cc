#include "store/store.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/snapshot.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <limits>
#include <mutex>
#include <set>
#include <utility>

#include "common/files.h"

namespace blackbox {
namespace {

// ---- formats (docs/store-format.md) ----

constexpr char kSchemaKey[] = "schema_version";
constexpr char kSchemaVersion[] = "1";

constexpr size_t kMaxIdLength = 128;

// Caps, checked before anything is allocated or parsed.
constexpr uint32_t kMaxChunkRawSize = 64u << 20;     // raw bytes of one rr chunk
constexpr size_t kMaxConsolePieceSize = 4u << 20;    // bytes of one console piece
constexpr size_t kMaxEventSize = 1u << 20;           // serialised JSON of one event
constexpr size_t kMaxRecordingJsonSize = 16u << 20;  // serialised JSON of one RecordingInfo

// rr_index value: "BBRI" | version | fields (big-endian) | SHA-256 of everything before it.
constexpr char kIndexMagic[4] = {'B', 'B', 'R', 'I'};
constexpr uint8_t kIndexVersion = 1;
constexpr size_t kIndexBodySize = 4 + 1 + 8 + 8 + 4 + 4 + 8 + 8 + 8 + 8 + 4 + 4 + 32 + 32 + 32;
constexpr size_t kIndexEntrySize = kIndexBodySize + 32;
static_assert(kIndexBodySize == 165);

// rr_chunks value: "BBRC" | version | codec | zstd frame.
constexpr char kChunkMagic[4] = {'B', 'B', 'R', 'C'};
constexpr uint8_t kChunkVersion = 1;
constexpr uint8_t kCodecZstd = 1;
constexpr size_t kChunkHeaderSize = 6;

// console value: version | wall_ns (i64 BE) | bytes.
constexpr uint8_t kConsoleVersion = 1;
constexpr size_t kConsoleHeaderSize = 9;

enum Cf { kMeta = 0, kRecordings, kRrIndex, kRrChunks, kConsole, kEvents, kNumCfs };
constexpr const char* kCfNames[kNumCfs] = {"meta",      "recordings", "rr_index",
                                           "rr_chunks", "console",    "events"};
// How error messages name each column family.
constexpr const char* kCfWhat[kNumCfs] = {"meta",      "recordings", "rr index",
                                          "rr chunks", "console",    "events"};

// ---- bytes ----

void PutBE64(std::string* out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutBE32(std::string* out, uint32_t v) {
  for (int i = 3; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t GetBE64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | static_cast<uint8_t>(p[i]);
  return v;
}
uint32_t GetBE32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = v << 8 | static_cast<uint8_t>(p[i]);
  return v;
}
void PutDigest(std::string* out, const Sha256Digest& d) {
  out->append(reinterpret_cast<const char*>(d.data()), d.size());
}
Sha256Digest GetDigest(const char* p) {
  Sha256Digest d{};
  std::memcpy(d.data(), p, d.size());
  return d;
}
bool IsZero(const Sha256Digest& d) {
  return std::all_of(d.begin(), d.end(), [](uint8_t b) { return b == 0; });
}
bool StartsWith(rocksdb::Slice s, std::string_view prefix) {
  return s.size() >= prefix.size() && std::memcmp(s.data(), prefix.data(), prefix.size()) == 0;
}
std::string_view View(const rocksdb::Slice& s) { return {s.data(), s.size()}; }

// Quotes untrusted text for an error message: printable ASCII kept, the rest escaped, long
// strings cut.
std::string Printable(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 80; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      static const char* kDigits = "0123456789abcdef";
      out += "\\x";
      out.push_back(kDigits[c >> 4]);
      out.push_back(kDigits[c & 15]);
    }
  }
  if (s.size() > 80) out += "...";
  return out;
}

// ---- ids and keys ----

bool IsIdChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

Status ValidateId(const std::string& id, const char* what = "recording id") {
  if (id.empty() || id.size() > kMaxIdLength) {
    return InvalidArgument(std::string(what) + " must be 1 to 128 characters, got " +
                           std::to_string(id.size()));
  }
  for (char c : id) {
    if (!IsIdChar(c)) {
      return InvalidArgument(std::string(what) + " '" + Printable(id) +
                             "' may only contain A-Z a-z 0-9 . _ -");
    }
  }
  return Status::Ok();
}

// id 0x00: every per-recording key starts with it. Ids never contain 0x00, so the prefix of
// "ab" never matches keys of "abc".
std::string KeyPrefix(const std::string& id) {
  std::string k = id;
  k.push_back('\0');
  return k;
}
// First key after every key with KeyPrefix(id).
std::string KeyPrefixEnd(const std::string& id) {
  std::string k = id;
  k.push_back('\x01');
  return k;
}
// Hex of the key KeyPrefix(id) + key_suffix, for error messages.
std::string KeyHex(const std::string& id, rocksdb::Slice key_suffix) {
  return ToHex(KeyPrefix(id) + key_suffix.ToString());
}
std::string SeqKey(const std::string& id, uint64_t seq) {
  std::string k = KeyPrefix(id);
  PutBE64(&k, seq);
  return k;
}
std::string EventKey(const std::string& id, int64_t wall_ns, uint32_t seq) {
  std::string k = KeyPrefix(id);
  PutBE64(&k, static_cast<uint64_t>(wall_ns));
  PutBE32(&k, seq);
  return k;
}

// ---- rr index entries ----

void AppendChainFields(std::string* out, const RrChunkInfo& i) {
  PutBE64(out, i.seq);
  PutBE64(out, i.raw_offset);
  PutBE32(out, i.raw_size);
  PutBE64(out, i.first_icount);
  PutBE64(out, i.last_icount);
  PutBE64(out, static_cast<uint64_t>(i.first_wall_ns));
  PutBE64(out, static_cast<uint64_t>(i.last_wall_ns));
  PutBE32(out, i.event_count);
  PutBE32(out, i.console_bytes);
  PutDigest(out, i.raw_sha256);
}

std::string EncodeIndex(const RrChunkInfo& i) {
  std::string v;
  v.reserve(kIndexEntrySize);
  v.append(kIndexMagic, 4);
  v.push_back(static_cast<char>(kIndexVersion));
  PutBE64(&v, i.seq);
  PutBE64(&v, i.raw_offset);
  PutBE32(&v, i.raw_size);
  PutBE32(&v, i.stored_size);
  PutBE64(&v, i.first_icount);
  PutBE64(&v, i.last_icount);
  PutBE64(&v, static_cast<uint64_t>(i.first_wall_ns));
  PutBE64(&v, static_cast<uint64_t>(i.last_wall_ns));
  PutBE32(&v, i.event_count);
  PutBE32(&v, i.console_bytes);
  PutDigest(&v, i.raw_sha256);
  PutDigest(&v, i.prev_chain);
  PutDigest(&v, i.chain);
  PutDigest(&v, Sha256Of(v));
  return v;
}

// Decodes an index value; returns what is wrong with it, or "" when it is good.
std::string DecodeIndex(std::string_view v, RrChunkInfo* out) {
  if (v.size() < 5 || std::memcmp(v.data(), kIndexMagic, 4) != 0) {
    return "index entry has bad magic (index corrupted)";
  }
  if (static_cast<uint8_t>(v[4]) != kIndexVersion) {
    return "index entry has unsupported format version " +
           std::to_string(static_cast<uint8_t>(v[4]));
  }
  if (v.size() != kIndexEntrySize) {
    return "index entry is " + std::to_string(v.size()) + " bytes, expected " +
           std::to_string(kIndexEntrySize) + " (index corrupted)";
  }
  if (Sha256Of(v.substr(0, kIndexBodySize)) != GetDigest(v.data() + kIndexBodySize)) {
    return "index entry checksum mismatch (index corrupted)";
  }
  const char* p = v.data() + 5;
  RrChunkInfo i;
  i.seq = GetBE64(p), p += 8;
  i.raw_offset = GetBE64(p), p += 8;
  i.raw_size = GetBE32(p), p += 4;
  i.stored_size = GetBE32(p), p += 4;
  i.first_icount = GetBE64(p), p += 8;
  i.last_icount = GetBE64(p), p += 8;
  i.first_wall_ns = static_cast<int64_t>(GetBE64(p)), p += 8;
  i.last_wall_ns = static_cast<int64_t>(GetBE64(p)), p += 8;
  i.event_count = GetBE32(p), p += 4;
  i.console_bytes = GetBE32(p), p += 4;
  i.raw_sha256 = GetDigest(p), p += 32;
  i.prev_chain = GetDigest(p), p += 32;
  i.chain = GetDigest(p);
  *out = i;
  return "";
}

// ---- status conversion ----

Status FromRocks(const rocksdb::Status& s, const std::string& context) {
  std::string m = context + ": " + s.ToString();
  if (s.IsNotFound()) return NotFound(m);
  if (s.IsCorruption()) return Corruption(m);
  if (s.IsInvalidArgument()) return InvalidArgument(m);
  if (s.IsNotSupported()) return FailedPrecondition(m);
  if (s.IsBusy() || s.IsTryAgain() || s.IsTimedOut()) return Unavailable(m);
  return IOError(m);
}

bool ContainsNoCase(std::string haystack, std::string needle) {
  auto lower = [](std::string& s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  };
  lower(haystack);
  lower(needle);
  return haystack.find(needle) != std::string::npos;
}

std::string DumpJson(const nlohmann::json& j) {
  // `replace` never throws on invalid UTF-8 coming from a guest.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

StatusOr<nlohmann::json> ParseJson(std::string_view text, size_t cap, const std::string& what) {
  if (text.size() > cap) {
    return Corruption(what + ": stored JSON is " + std::to_string(text.size()) +
                      " bytes, above the cap of " + std::to_string(cap));
  }
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return Corruption(what + ": stored JSON does not parse: " + e.what());
  }
}

StatusOr<int64_t> JsonInt64(const nlohmann::json& v, const char* field) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return InvalidArgument(std::string("recording field '") + field + "' is out of range");
    }
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  return InvalidArgument(std::string("recording field '") + field + "' must be an integer");
}

StatusOr<std::string> JsonString(const nlohmann::json& v, const char* field) {
  if (!v.is_string()) {
    return InvalidArgument(std::string("recording field '") + field + "' must be a string");
  }
  return v.get<std::string>();
}

// ---- per-recording values ----

// Decodes the rr index value of chunk `seq` of recording `id`.
StatusOr<RrChunkInfo> DecodeIndexOf(const std::string& id, uint64_t seq, std::string_view value) {
  RrChunkInfo info;
  std::string problem = DecodeIndex(value, &info);
  if (problem.empty() && info.seq != seq) {
    problem = "index entry belongs to chunk " + std::to_string(info.seq) + " (index altered)";
  }
  if (!problem.empty()) {
    return Corruption("recording " + id + " chunk " + std::to_string(seq) + ": " + problem);
  }
  return info;
}

// The decoders below take a key of recording `id` without KeyPrefix(id) and its value.

StatusOr<RrChunkInfo> DecodeRrIndexEntry(const std::string& id, rocksdb::Slice key_suffix,
                                         rocksdb::Slice value) {
  if (key_suffix.size() != 8) {
    return Corruption("recording " + id + ": malformed rr index key " + KeyHex(id, key_suffix));
  }
  return DecodeIndexOf(id, GetBE64(key_suffix.data()), View(value));
}

StatusOr<ConsolePiece> DecodeConsolePiece(const std::string& id, rocksdb::Slice key_suffix,
                                          rocksdb::Slice value) {
  if (key_suffix.size() != 8) {
    return Corruption("recording " + id + ": malformed console key " + KeyHex(id, key_suffix));
  }
  ConsolePiece piece;
  piece.offset = GetBE64(key_suffix.data());
  if (value.size() < kConsoleHeaderSize || static_cast<uint8_t>(value[0]) != kConsoleVersion ||
      value.size() - kConsoleHeaderSize > kMaxConsolePieceSize) {
    return Corruption("recording " + id + " console piece at offset " +
                      std::to_string(piece.offset) + ": bad value header or size");
  }
  piece.wall_ns = static_cast<int64_t>(GetBE64(value.data() + 1));
  piece.bytes.assign(value.data() + kConsoleHeaderSize, value.size() - kConsoleHeaderSize);
  return piece;
}

StatusOr<StoredEvent> DecodeEvent(const std::string& id, rocksdb::Slice key_suffix,
                                  rocksdb::Slice value) {
  if (key_suffix.size() != 12) {
    return Corruption("recording " + id + ": malformed event key " + KeyHex(id, key_suffix));
  }
  StoredEvent e;
  e.wall_ns = static_cast<int64_t>(GetBE64(key_suffix.data()));
  e.seq = GetBE32(key_suffix.data() + 8);
  ASSIGN_OR_RETURN(e.body, ParseJson(View(value), kMaxEventSize,
                                     "recording " + id + " event at " + std::to_string(e.wall_ns) +
                                         " seq " + std::to_string(e.seq)));
  return e;
}

}  // namespace

// ---- RecordingInfo ----

nlohmann::json RecordingInfo::ToJson() const {
  nlohmann::json j = nlohmann::json::object();
  if (extra.is_object()) {
    for (const auto& [k, v] : extra.items()) j[k] = v;
  }
  // The named fields win over a same-named key in extra.
  j["id"] = id;
  j["vm_name"] = vm_name;
  j["state"] = state;
  j["started_wall_ns"] = started_wall_ns;
  j["ended_wall_ns"] = ended_wall_ns;
  return j;
}

StatusOr<RecordingInfo> RecordingInfo::FromJson(const nlohmann::json& j) {
  if (!j.is_object()) return InvalidArgument("recording metadata must be a JSON object");
  RecordingInfo r;
  bool have_id = false;
  for (const auto& [k, v] : j.items()) {
    if (k == "id") {
      ASSIGN_OR_RETURN(r.id, JsonString(v, "id"));
      have_id = true;
    } else if (k == "vm_name") {
      ASSIGN_OR_RETURN(r.vm_name, JsonString(v, "vm_name"));
    } else if (k == "state") {
      ASSIGN_OR_RETURN(r.state, JsonString(v, "state"));
    } else if (k == "started_wall_ns") {
      ASSIGN_OR_RETURN(r.started_wall_ns, JsonInt64(v, "started_wall_ns"));
    } else if (k == "ended_wall_ns") {
      ASSIGN_OR_RETURN(r.ended_wall_ns, JsonInt64(v, "ended_wall_ns"));
    } else {
      r.extra[k] = v;
    }
  }
  if (!have_id) return InvalidArgument("recording metadata has no field 'id'");
  return r;
}

// ---- chain ----

Sha256Digest ComputeChunkChain(const RrChunkInfo& info) {
  std::string buf;
  buf.reserve(32 + 92);
  PutDigest(&buf, info.prev_chain);
  AppendChainFields(&buf, info);
  return Sha256Of(buf);
}

// ---- Store::Impl ----

struct Store::Impl {
  StoreOptions options;
  rocksdb::DB* db = nullptr;
  // Our column families first (index = Cf), then any unknown ones the database already had.
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::WriteOptions write_options;

  std::mutex rr_mu;  // guards cctx and serialises AppendRrChunk's check-then-write
  ZSTD_CCtx* cctx = nullptr;
  int zstd_level = 3;  // StoreOptions::zstd_level

  std::mutex events_mu;  // serialises event seq assignment

  std::mutex dctx_mu;
  std::vector<ZSTD_DCtx*> dctx_pool;

  ~Impl() {
    if (db != nullptr) {
      for (auto* h : handles) db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
      rocksdb::Status s = db->Close();
      if (!s.ok()) spdlog::warn("closing store {}: {}", options.path, s.ToString());
      delete db;
    }
    ZSTD_freeCCtx(cctx);
    for (auto* d : dctx_pool) ZSTD_freeDCtx(d);
  }

  rocksdb::ColumnFamilyHandle* cf(Cf c) const { return handles[c]; }

  // Calls fn(key_suffix, value) for every key of recording `id` in column family `c`, in key
  // order; key_suffix is the key without KeyPrefix(id). Reads with `ro` (e.g. its snapshot),
  // bounded to the recording's keys. Stops at and returns the first error of fn.
  Status ForEachRecordingKey(
      const rocksdb::ReadOptions& ro, Cf c, const std::string& id,
      const std::function<Status(rocksdb::Slice key_suffix, rocksdb::Slice value)>& fn) const {
    const std::string prefix = KeyPrefix(id);
    const std::string end = KeyPrefixEnd(id);
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions bounded = ro;
    bounded.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(bounded, cf(c)));
    for (it->Seek(prefix); it->Valid(); it->Next()) {
      rocksdb::Slice key_suffix = it->key();
      key_suffix.remove_prefix(prefix.size());
      RETURN_IF_ERROR(fn(key_suffix, it->value()));
    }
    if (!it->status().ok()) {
      return FromRocks(it->status(), "recording " + id + " " + kCfWhat[c]);
    }
    return Status::Ok();
  }

  // Every value of recording `id` in column family `c`, in key order, each decoded by
  // decode(id, key_suffix, value). Fails with the first error of decode.
  template <typename T>
  StatusOr<std::vector<T>> DecodeAll(Cf c, const std::string& id,
                                     StatusOr<T> (*decode)(const std::string& id,
                                                           rocksdb::Slice key_suffix,
                                                           rocksdb::Slice value)) const {
    std::vector<T> out;
    RETURN_IF_ERROR(
        ForEachRecordingKey(rocksdb::ReadOptions(), c, id,
                            [&](rocksdb::Slice key_suffix, rocksdb::Slice value) -> Status {
                              ASSIGN_OR_RETURN(T item, decode(id, key_suffix, value));
                              out.push_back(std::move(item));
                              return Status::Ok();
                            }));
    return out;
  }

  Status CheckWritable() const {
    if (options.read_only) {
      return FailedPrecondition("store " + options.path + " is open read-only");
    }
    return Status::Ok();
  }

  Status Write(rocksdb::WriteBatch* batch, const std::string& context) {
    rocksdb::Status s = db->Write(write_options, batch);
    if (!s.ok()) return FromRocks(s, context);
    return Status::Ok();
  }

  // Decompression contexts are pooled so that readers on several threads do not serialise.
  ZSTD_DCtx* TakeDctx() {
    {
      std::lock_guard<std::mutex> l(dctx_mu);
      if (!dctx_pool.empty()) {
        ZSTD_DCtx* d = dctx_pool.back();
        dctx_pool.pop_back();
        return d;
      }
    }
    return ZSTD_createDCtx();
  }
  void GiveDctx(ZSTD_DCtx* d) {
    if (d == nullptr) return;
    std::lock_guard<std::mutex> l(dctx_mu);
    if (dctx_pool.size() < 8) {
      dctx_pool.push_back(d);
    } else {
      ZSTD_freeDCtx(d);
    }
  }

  // Checks a stored payload against its index entry and decompresses it into *raw.
  // Returns what is wrong, or "" when the payload is good.
  std::string DecodePayload(const RrChunkInfo& info, std::string_view value, std::string* raw) {
    if (value.size() < kChunkHeaderSize || std::memcmp(value.data(), kChunkMagic, 4) != 0) {
      return "payload has bad magic (stored chunk corrupted)";
    }
    if (static_cast<uint8_t>(value[4]) != kChunkVersion) {
      return "payload has unsupported format version " +
             std::to_string(static_cast<uint8_t>(value[4]));
    }
    if (static_cast<uint8_t>(value[5]) != kCodecZstd) {
      return "payload has unknown codec " + std::to_string(static_cast<uint8_t>(value[5]));
    }
    std::string_view frame = value.substr(kChunkHeaderSize);
    if (frame.size() != info.stored_size) {
      return "payload is " + std::to_string(frame.size()) + " bytes but the index says " +
             std::to_string(info.stored_size) + " (stored chunk truncated or altered)";
    }
    if (info.raw_size > kMaxChunkRawSize) {
      return "index claims raw_size " + std::to_string(info.raw_size) + ", above the cap of " +
             std::to_string(kMaxChunkRawSize) + " bytes";
    }
    raw->assign(info.raw_size, '\0');
    ZSTD_DCtx* dctx = TakeDctx();
    if (dctx == nullptr) return "cannot allocate a zstd decompression context";
    size_t n = ZSTD_decompressDCtx(dctx, raw->data(), raw->size(), frame.data(), frame.size());
    GiveDctx(dctx);
    if (ZSTD_isError(n)) {
      raw->clear();
      if (ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall) {
        return "payload decompresses to more than raw_size " + std::to_string(info.raw_size) +
               " bytes (size mismatch: stored chunk altered)";
      }
      return std::string("payload does not decompress: ") + ZSTD_getErrorName(n) +
             " (stored chunk corrupted)";
    }
    if (n != info.raw_size) {
      raw->clear();
      return "payload decompresses to " + std::to_string(n) + " bytes but raw_size is " +
             std::to_string(info.raw_size) + " (size mismatch: stored chunk altered)";
    }
    if (Sha256Of(*raw) != info.raw_sha256) {
      raw->clear();
      return "payload hash mismatch (stored chunk corrupted or altered)";
    }
    return "";
  }

  // Reads and decodes the index entry of (id, seq). NotFound when absent.
  StatusOr<RrChunkInfo> GetIndex(const rocksdb::ReadOptions& ro, const std::string& id,
                                 uint64_t seq) {
    std::string value;
    rocksdb::Status s = db->Get(ro, cf(kRrIndex), SeqKey(id, seq), &value);
    if (s.IsNotFound()) {
      return NotFound("recording " + id + " has no chunk " + std::to_string(seq));
    }
    if (!s.ok()) return FromRocks(s, "recording " + id + " chunk " + std::to_string(seq));
    return DecodeIndexOf(id, seq, value);
  }

  struct ChunkFailure {
    uint64_t seq = 0;
    std::string message;  // "recording X chunk N: ..."
  };

  // Walks the chunks of `id` in seq order in one snapshot and checks everything
  // VerifyRrChain documents. Calls visit(info, raw) for each good chunk. Stops at the first
  // bad chunk and describes it in *failure; I/O errors and visit's errors are returned.
  Status WalkChain(const std::string& id,
                   const std::function<Status(const RrChunkInfo&, std::string_view)>& visit,
                   Store::ChainReport* report, std::optional<ChunkFailure>* failure) {
    rocksdb::ManagedSnapshot snap(db);
    rocksdb::ReadOptions ro;
    ro.snapshot = snap.snapshot();
    const std::string prefix = KeyPrefix(id);

    // Records the failure in *failure. The error it returns only stops ForEachRecordingKey;
    // WalkChain itself then returns OK.
    auto fail = [&](uint64_t seq, const std::string& what) {
      *failure =
          ChunkFailure{seq, "recording " + id + " chunk " + std::to_string(seq) + ": " + what};
      return Corruption((*failure)->message);
    };

    uint64_t expected = 0;
    RrChunkInfo prev;
    std::string raw;
    Status walked = ForEachRecordingKey(
        ro, kRrIndex, id, [&](rocksdb::Slice key_suffix, rocksdb::Slice index) -> Status {
          if (key_suffix.size() != 8) {
            return fail(expected, "malformed index key " + KeyHex(id, key_suffix));
          }
          uint64_t seq = GetBE64(key_suffix.data());
          if (seq != expected) {
            return fail(expected, "chunk " + std::to_string(expected) +
                                      " is missing (next stored chunk is " + std::to_string(seq) +
                                      ")");
          }
          RrChunkInfo info;
          std::string problem = DecodeIndex(View(index), &info);
          if (!problem.empty()) return fail(seq, problem);
          if (info.seq != seq) {
            return fail(seq, "index entry belongs to chunk " + std::to_string(info.seq) +
                                 " (index altered)");
          }
          if (seq == 0) {
            if (!IsZero(info.prev_chain)) return fail(seq, "first chunk has a non-zero prev_chain");
          } else {
            uint64_t prev_end = prev.raw_offset + prev.raw_size;
            if (prev_end < prev.raw_offset || info.raw_offset != prev_end) {
              return fail(seq, "raw_offset " + std::to_string(info.raw_offset) +
                                   " is not contiguous (chunk " + std::to_string(seq - 1) +
                                   " ends at " + std::to_string(prev_end) + ")");
            }
            if (info.prev_chain != prev.chain) {
              return fail(seq, "prev_chain does not match the chain of chunk " +
                                   std::to_string(seq - 1) +
                                   " (chain broken: a chunk was removed, inserted or altered)");
            }
          }
          if (ComputeChunkChain(info) != info.chain) {
            return fail(seq, "chain hash mismatch (index entry altered)");
          }
          std::string value;
          rocksdb::Status s = db->Get(ro, cf(kRrChunks), SeqKey(id, seq), &value);
          if (s.IsNotFound()) {
            return fail(seq, "payload missing (index entry without stored chunk)");
          }
          if (!s.ok()) return FromRocks(s, "recording " + id + " chunk " + std::to_string(seq));
          problem = DecodePayload(info, value, &raw);
          if (!problem.empty()) return fail(seq, problem);
          if (visit) RETURN_IF_ERROR(visit(info, raw));
          report->chunks++;
          report->raw_bytes += info.raw_size;
          report->head = info.chain;
          prev = info;
          expected = seq + 1;
          return Status::Ok();
        });
    if (*failure) return Status::Ok();
    RETURN_IF_ERROR(walked);
    // A payload after the last index entry means index entries were removed from the end.
    const std::string end = KeyPrefixEnd(id);
    rocksdb::Slice upper(end);
    ro.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> pit(db->NewIterator(ro, cf(kRrChunks)));
    pit->Seek(SeqKey(id, expected));
    if (pit->Valid() && StartsWith(pit->key(), prefix)) {
      uint64_t seq = pit->key().size() == prefix.size() + 8
                         ? GetBE64(pit->key().data() + prefix.size())
                         : expected;
      fail(seq, "payload stored without an index entry (index entries removed)").IgnoreError();
      return Status::Ok();
    }
    if (!pit->status().ok()) return FromRocks(pit->status(), "recording " + id + " rr chunks");
    return Status::Ok();
  }
};

// ---- Store ----

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;

StatusOr<std::unique_ptr<Store>> Store::Open(const StoreOptions& options) {
  if (options.path.empty()) return InvalidArgument("store path is empty");
  if (options.zstd_level < ZSTD_minCLevel() || options.zstd_level > ZSTD_maxCLevel()) {
    return InvalidArgument("zstd level " + std::to_string(options.zstd_level) + " is out of range");
  }
  const std::string& path = options.path;
  const bool existed = PathExists(path + "/CURRENT");
  if (!existed && (options.read_only || !options.create_if_missing)) {
    return IOError("store " + path + " does not exist");
  }
  if (!existed) RETURN_IF_ERROR(MakeDirs(path));

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = options.create_if_missing;
  db_options.create_missing_column_families = options.create_if_missing;
  db_options.keep_log_file_num = 5;

  rocksdb::ColumnFamilyOptions small_cf;
  small_cf.compression = rocksdb::kZSTD;
  rocksdb::ColumnFamilyOptions chunk_cf;
  chunk_cf.compression = rocksdb::kNoCompression;  // payloads are zstd frames already
  chunk_cf.write_buffer_size = 64 << 20;

  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyDescriptor> ours;
  for (int c = 0; c < kNumCfs; ++c) {
    ours.emplace_back(kCfNames[c], c == kRrChunks ? chunk_cf : small_cf);
  }
  // RocksDB requires a writer to open every column family the database has.
  std::vector<std::string> extra_names;
  if (existed) {
    std::vector<std::string> names;
    rocksdb::Status s = rocksdb::DB::ListColumnFamilies(db_options, path, &names);
    if (!s.ok()) return FromRocks(s, "cannot open store " + path);
    std::set<std::string> have(names.begin(), names.end());
    for (int c = 0; c < kNumCfs; ++c) {
      if (options.read_only && !have.count(kCfNames[c])) {
        return Corruption("store " + path + " has no column family '" + kCfNames[c] +
                          "' (not a Blackbox store?)");
      }
    }
    for (const auto& n : names) {
      bool known = n == rocksdb::kDefaultColumnFamilyName;
      for (int c = 0; c < kNumCfs; ++c) known = known || n == kCfNames[c];
      if (!known) extra_names.push_back(n);
    }
  }
  // Order: ours (index = Cf), default, extras.
  std::vector<rocksdb::ColumnFamilyDescriptor> all = ours;
  all.push_back(descriptors[0]);
  for (const auto& n : extra_names) all.emplace_back(n, rocksdb::ColumnFamilyOptions());

  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->write_options.sync = options.sync_writes;
  impl->write_options.disableWAL = false;

  rocksdb::Status s;
  if (options.read_only) {
    s = rocksdb::DB::OpenForReadOnly(db_options, path, all, &impl->handles, &impl->db,
                                     /*error_if_wal_file_exists=*/false);
  } else {
    s = rocksdb::DB::Open(db_options, path, all, &impl->handles, &impl->db);
  }
  if (!s.ok()) {
    impl->db = nullptr;
    impl->handles.clear();
    if (s.IsIOError() && ContainsNoCase(s.ToString(), "lock")) {
      return IOError("store " + path + " is in use by another Blackbox process (" + s.ToString() +
                     ")");
    }
    return FromRocks(s, "cannot open store " + path);
  }

  // Schema version.
  std::string version;
  s = impl->db->Get(rocksdb::ReadOptions(), impl->cf(kMeta), kSchemaKey, &version);
  if (s.ok()) {
    if (version != kSchemaVersion) {
      return Corruption("store " + path + " has unknown schema version '" + Printable(version) +
                        "' (this binary knows " + kSchemaVersion + ")");
    }
  } else if (s.IsNotFound()) {
    if (options.read_only) {
      return Corruption("store " + path + " has no schema version (not a Blackbox store?)");
    }
    // A fresh database (or one whose creation stopped before this write) gets stamped;
    // an existing one with data but no version is not ours to claim.
    if (existed) {
      for (int c = kRecordings; c < kNumCfs; ++c) {
        std::unique_ptr<rocksdb::Iterator> it(
            impl->db->NewIterator(rocksdb::ReadOptions(), impl->cf(static_cast<Cf>(c))));
        it->SeekToFirst();
        if (it->Valid()) {
          return Corruption("store " + path + " has data but no schema version");
        }
      }
    }
    rocksdb::WriteOptions wo;
    wo.sync = true;
    s = impl->db->Put(wo, impl->cf(kMeta), kSchemaKey, kSchemaVersion);
    if (!s.ok()) return FromRocks(s, "store " + path + ": writing schema version");
  } else {
    return FromRocks(s, "store " + path + ": reading schema version");
  }

  impl->zstd_level = options.zstd_level;
  impl->cctx = ZSTD_createCCtx();
  if (impl->cctx == nullptr) return Internal("cannot allocate a zstd compression context");
  size_t r = ZSTD_CCtx_setParameter(impl->cctx, ZSTD_c_compressionLevel, options.zstd_level);
  if (!ZSTD_isError(r)) r = ZSTD_CCtx_setParameter(impl->cctx, ZSTD_c_checksumFlag, 1);
  if (!ZSTD_isError(r)) r = ZSTD_CCtx_setParameter(impl->cctx, ZSTD_c_contentSizeFlag, 1);
  if (ZSTD_isError(r)) {
    return InvalidArgument(std::string("zstd parameters: ") + ZSTD_getErrorName(r));
  }
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

// ---- recordings ----

namespace {

StatusOr<RecordingInfo> ParseRecording(std::string_view key, std::string_view value) {
  const std::string what = "recording '" + Printable(key) + "'";
  ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(value, kMaxRecordingJsonSize, what));
  StatusOr<RecordingInfo> info = RecordingInfo::FromJson(j);
  if (!info.ok()) return Corruption(what + ": stored metadata: " + info.status().message());
  if (info->id != key) {
    return Corruption(what + ": stored metadata has id '" + Printable(info->id) + "'");
  }
  return info;
}

}  // namespace

Status Store::PutRecording(const RecordingInfo& info) {
  RETURN_IF_ERROR(impl_->CheckWritable());
  RETURN_IF_ERROR(ValidateId(info.id));
  if (!info.extra.is_object() && !info.extra.is_null()) {
    return InvalidArgument("recording " + info.id + ": extra must be a JSON object");
  }
  std::string value = DumpJson(info.ToJson());
  if (value.size() > kMaxRecordingJsonSize) {
    return ResourceExhausted("recording " + info.id + ": metadata is " +
                             std::to_string(value.size()) + " bytes, above the cap of " +
                             std::to_string(kMaxRecordingJsonSize));
  }
  rocksdb::WriteBatch batch;
  batch.Put(impl_->cf(kRecordings), info.id, value);
  return impl_->Write(&batch, "recording " + info.id);
}

StatusOr<RecordingInfo> Store::GetRecording(const std::string& id) const {
  RETURN_IF_ERROR(ValidateId(id));
  std::string value;
  rocksdb::Status s = impl_->db->Get(rocksdb::ReadOptions(), impl_->cf(kRecordings), id, &value);
  if (s.IsNotFound()) return NotFound("no recording '" + id + "'");
  if (!s.ok()) return FromRocks(s, "recording " + id);
  return ParseRecording(id, value);
}

StatusOr<std::vector<RecordingInfo>> Store::ListRecordings() const {
  std::vector<RecordingInfo> out;
  std::unique_ptr<rocksdb::Iterator> it(
      impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(kRecordings)));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    ASSIGN_OR_RETURN(RecordingInfo info, ParseRecording(View(it->key()), View(it->value())));
    out.push_back(std::move(info));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "listing recordings");
  std::stable_sort(out.begin(), out.end(), [](const RecordingInfo& a, const RecordingInfo& b) {
    return a.started_wall_ns != b.started_wall_ns ? a.started_wall_ns < b.started_wall_ns
                                                  : a.id < b.id;
  });
  return out;
}

StatusOr<std::string> Store::ResolveRecordingId(const std::string& id_or_prefix) const {
  RETURN_IF_ERROR(ValidateId(id_or_prefix, "recording id or prefix"));
  std::string value;
  rocksdb::Status s =
      impl_->db->Get(rocksdb::ReadOptions(), impl_->cf(kRecordings), id_or_prefix, &value);
  if (s.ok()) return id_or_prefix;
  if (!s.IsNotFound()) return FromRocks(s, "recording " + id_or_prefix);

  std::vector<std::string> matches;
  size_t count = 0;
  std::unique_ptr<rocksdb::Iterator> it(
      impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(kRecordings)));
  for (it->Seek(id_or_prefix); it->Valid() && StartsWith(it->key(), id_or_prefix); it->Next()) {
    if (matches.size() < 10) matches.push_back(it->key().ToString());
    ++count;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "resolving " + id_or_prefix);
  if (count == 0) return NotFound("no recording '" + id_or_prefix + "'");
  if (count == 1) return matches[0];
  std::string list;
  for (const auto& m : matches) list += (list.empty() ? "" : ", ") + m;
  if (count > matches.size()) list += ", ... (" + std::to_string(count) + " in all)";
  return InvalidArgument("recording prefix '" + id_or_prefix + "' is ambiguous: " + list);
}

// ---- rr log chunks ----

StatusOr<RrChunkInfo> Store::AppendRrChunk(const std::string& recording_id, RrChunkInfo info,
                                           std::string_view raw, int zstd_level) {
  RETURN_IF_ERROR(impl_->CheckWritable());
  RETURN_IF_ERROR(ValidateId(recording_id));
  const std::string& id = recording_id;
  const std::string where = "recording " + id + " chunk " + std::to_string(info.seq);
  if (raw.size() > kMaxChunkRawSize) {
    return ResourceExhausted(where + ": " + std::to_string(raw.size()) +
                             " raw bytes, above the cap of " + std::to_string(kMaxChunkRawSize));
  }

  std::lock_guard<std::mutex> lock(impl_->rr_mu);
  // Only the next seq may be appended and only the newest replaced, each continuing the chain,
  // so that what is stored always verifies.
  std::optional<uint64_t> newest;
  {
    const std::string prefix = KeyPrefix(id);
    rocksdb::ReadOptions ro;
    rocksdb::Slice lower(prefix);
    ro.iterate_lower_bound = &lower;
    std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->cf(kRrIndex)));
    it->SeekForPrev(SeqKey(id, std::numeric_limits<uint64_t>::max()));
    if (it->Valid() && StartsWith(it->key(), prefix) && it->key().size() == prefix.size() + 8) {
      newest = GetBE64(it->key().data() + prefix.size());
    }
    if (!it->status().ok()) return FromRocks(it->status(), where);
  }
  if (!newest) {
    if (info.seq != 0) {
      return FailedPrecondition(where + ": the recording has no chunks yet, the first is seq 0");
    }
  } else if (info.seq < *newest) {
    return FailedPrecondition(where + ": is sealed (only the newest chunk, " +
                              std::to_string(*newest) + ", may be replaced)");
  } else if (info.seq > *newest + 1) {
    return FailedPrecondition(where + ": would leave a gap (the newest chunk is " +
                              std::to_string(*newest) + ")");
  }
  if (info.seq == 0) {
    if (!IsZero(info.prev_chain)) return InvalidArgument(where + ": prev_chain must be zero");
  } else {
    ASSIGN_OR_RETURN(RrChunkInfo prev, impl_->GetIndex(rocksdb::ReadOptions(), id, info.seq - 1));
    if (info.prev_chain != prev.chain) {
      return InvalidArgument(where + ": prev_chain is not the chain of chunk " +
                             std::to_string(prev.seq));
    }
    uint64_t prev_end = prev.raw_offset + prev.raw_size;
    if (info.raw_offset != prev_end) {
      return InvalidArgument(where + ": raw_offset " + std::to_string(info.raw_offset) +
                             " does not continue chunk " + std::to_string(prev.seq) + " (ends at " +
                             std::to_string(prev_end) + ")");
    }
  }

  std::string value(kChunkHeaderSize, '\0');
  std::memcpy(value.data(), kChunkMagic, 4);
  value[4] = static_cast<char>(kChunkVersion);
  value[5] = static_cast<char>(kCodecZstd);
  const size_t bound = ZSTD_compressBound(raw.size());
  value.resize(kChunkHeaderSize + bound);
  const int level = zstd_level != 0 ? zstd_level : impl_->zstd_level;
  if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()) {
    return InvalidArgument(where + ": zstd level " + std::to_string(level) + " is out of range");
  }
  size_t lr = ZSTD_CCtx_setParameter(impl_->cctx, ZSTD_c_compressionLevel, level);
  if (ZSTD_isError(lr)) return Internal(where + ": zstd level: " + ZSTD_getErrorName(lr));
  size_t n =
      ZSTD_compress2(impl_->cctx, value.data() + kChunkHeaderSize, bound, raw.data(), raw.size());
  if (ZSTD_isError(n)) {
    return Internal(where + ": zstd compression failed: " + ZSTD_getErrorName(n));
  }
  value.resize(kChunkHeaderSize + n);

  info.raw_size = static_cast<uint32_t>(raw.size());
  info.stored_size = static_cast<uint32_t>(n);
  info.raw_sha256 = Sha256Of(raw);
  info.chain = ComputeChunkChain(info);

  const std::string key = SeqKey(id, info.seq);
  rocksdb::WriteBatch batch;
  batch.Put(impl_->cf(kRrIndex), key, EncodeIndex(info));
  batch.Put(impl_->cf(kRrChunks), key, value);
  RETURN_IF_ERROR(impl_->Write(&batch, where));
  return info;
}

StatusOr<std::vector<RrChunkInfo>> Store::ListRrChunks(const std::string& recording_id) const {
  RETURN_IF_ERROR(ValidateId(recording_id));
  return impl_->DecodeAll(kRrIndex, recording_id, DecodeRrIndexEntry);
}

StatusOr<std::string> Store::ReadRrChunk(const std::string& recording_id, uint64_t seq) const {
  RETURN_IF_ERROR(ValidateId(recording_id));
  const std::string& id = recording_id;
  const std::string where = "recording " + id + " chunk " + std::to_string(seq);
  // One snapshot, so a concurrent replacement of the newest chunk is seen whole or not at all.
  rocksdb::ManagedSnapshot snap(impl_->db);
  rocksdb::ReadOptions ro;
  ro.snapshot = snap.snapshot();
  ASSIGN_OR_RETURN(RrChunkInfo info, impl_->GetIndex(ro, id, seq));
  if (ComputeChunkChain(info) != info.chain) {
    return Corruption(where + ": chain hash mismatch (index entry altered)");
  }
  std::string value;
  rocksdb::Status s = impl_->db->Get(ro, impl_->cf(kRrChunks), SeqKey(id, seq), &value);
  if (s.IsNotFound()) {
    return Corruption(where + ": payload missing (index entry without stored chunk)");
  }
  if (!s.ok()) return FromRocks(s, where);
  std::string raw;
  std::string problem = impl_->DecodePayload(info, value, &raw);
  if (!problem.empty()) return Corruption(where + ": " + problem);
  return raw;
}

StatusOr<Store::ChainReport> Store::VerifyRrChain(const std::string& recording_id) const {
  RETURN_IF_ERROR(ValidateId(recording_id));
  ChainReport report;
  std::optional<Impl::ChunkFailure> failure;
  RETURN_IF_ERROR(impl_->WalkChain(recording_id, nullptr, &report, &failure));
  if (failure) {
    report.first_bad = failure->seq;
    report.problem = failure->message;
  }
  return report;
}

Status Store::ReadRrLog(
    const std::string& recording_id,
    const std::function<Status(const RrChunkInfo&, std::string_view)>& sink) const {
  RETURN_IF_ERROR(ValidateId(recording_id));
  ChainReport report;
  std::optional<Impl::ChunkFailure> failure;
  RETURN_IF_ERROR(impl_->WalkChain(recording_id, sink, &report, &failure));
  if (failure) return Corruption(failure->message);
  return Status::Ok();
}

// ---- console ----

Status Store::AppendConsole(const std::string& recording_id, const ConsolePiece& piece) {
  RETURN_IF_ERROR(impl_->CheckWritable());
  RETURN_IF_ERROR(ValidateId(recording_id));
  if (piece.bytes.size() > kMaxConsolePieceSize) {
    return ResourceExhausted("recording " + recording_id + ": console piece of " +
                             std::to_string(piece.bytes.size()) + " bytes, above the cap of " +
                             std::to_string(kMaxConsolePieceSize));
  }
  std::string value;
  value.reserve(kConsoleHeaderSize + piece.bytes.size());
  value.push_back(static_cast<char>(kConsoleVersion));
  PutBE64(&value, static_cast<uint64_t>(piece.wall_ns));
  value += piece.bytes;
  rocksdb::WriteBatch batch;
  batch.Put(impl_->cf(kConsole), SeqKey(recording_id, piece.offset), value);
  return impl_->Write(&batch, "recording " + recording_id + " console");
}

StatusOr<std::vector<ConsolePiece>> Store::ReadConsole(const std::string& recording_id) const {
  RETURN_IF_ERROR(ValidateId(recording_id));
  return impl_->DecodeAll(kConsole, recording_id, DecodeConsolePiece);
}

// ---- events ----

Status Store::PutEvent(const std::string& recording_id, int64_t wall_ns,
                       const nlohmann::json& body) {
  RETURN_IF_ERROR(impl_->CheckWritable());
  RETURN_IF_ERROR(ValidateId(recording_id));
  const std::string& id = recording_id;
  if (wall_ns < 0) {
    return InvalidArgument("recording " + id + ": event time " + std::to_string(wall_ns) +
                           " is negative");
  }
  if (!body.is_object() || !body.contains("kind") || !body["kind"].is_string()) {
    return InvalidArgument("recording " + id + ": an event must be an object with a string 'kind'");
  }
  std::string value = DumpJson(body);
  if (value.size() > kMaxEventSize) {
    return ResourceExhausted("recording " + id + ": event of " + std::to_string(value.size()) +
                             " bytes, above the cap of " + std::to_string(kMaxEventSize));
  }
  std::lock_guard<std::mutex> lock(impl_->events_mu);
  // seq = 1 + the highest seq already stored at this wall time.
  uint32_t seq = 0;
  {
    const std::string same_time = EventKey(id, wall_ns, 0).substr(0, id.size() + 1 + 8);
    rocksdb::ReadOptions ro;
    rocksdb::Slice lower(same_time);
    ro.iterate_lower_bound = &lower;
    std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->cf(kEvents)));
    it->SeekForPrev(EventKey(id, wall_ns, std::numeric_limits<uint32_t>::max()));
    if (it->Valid() && StartsWith(it->key(), same_time) &&
        it->key().size() == same_time.size() + 4) {
      uint32_t last = GetBE32(it->key().data() + same_time.size());
      if (last == std::numeric_limits<uint32_t>::max()) {
        return ResourceExhausted("recording " + id + ": too many events at wall time " +
                                 std::to_string(wall_ns));
      }
      seq = last + 1;
    }
    if (!it->status().ok()) return FromRocks(it->status(), "recording " + id + " events");
  }
  rocksdb::WriteBatch batch;
  batch.Put(impl_->cf(kEvents), EventKey(id, wall_ns, seq), value);
  return impl_->Write(&batch, "recording " + id + " event");
}

StatusOr<std::vector<StoredEvent>> Store::ListEvents(const std::string& recording_id) const {
  RETURN_IF_ERROR(ValidateId(recording_id));
  return impl_->DecodeAll(kEvents, recording_id, DecodeEvent);
}

// ---- maintenance ----

Status Store::Flush() {
  if (impl_->options.read_only) return Status::Ok();  // nothing of ours in the memtables
  rocksdb::FlushOptions fo;
  fo.wait = true;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs(impl_->handles.begin(),
                                                impl_->handles.begin() + kNumCfs);
  rocksdb::Status s = impl_->db->Flush(fo, cfs);
  if (!s.ok()) return FromRocks(s, "flushing store " + impl_->options.path);
  return Status::Ok();
}

StatusOr<Store::Usage> Store::GetUsage(const std::string& recording_id) const {
  RETURN_IF_ERROR(ValidateId(recording_id));
  const std::string& id = recording_id;
  rocksdb::ManagedSnapshot snap(impl_->db);
  rocksdb::ReadOptions ro;
  ro.snapshot = snap.snapshot();
  Usage u;
  RETURN_IF_ERROR(impl_->ForEachRecordingKey(
      ro, kRrIndex, id, [&](rocksdb::Slice key_suffix, rocksdb::Slice value) -> Status {
        RrChunkInfo info;
        std::string problem = DecodeIndex(View(value), &info);
        if (!problem.empty()) {
          return Corruption("recording " + id + " rr index key " + KeyHex(id, key_suffix) + ": " +
                            problem);
        }
        u.rr_raw_bytes += info.raw_size;
        u.rr_stored_bytes += info.stored_size;
        return Status::Ok();
      }));
  RETURN_IF_ERROR(impl_->ForEachRecordingKey(
      ro, kConsole, id, [&](rocksdb::Slice, rocksdb::Slice value) -> Status {
        size_t n = value.size();
        u.console_bytes += n > kConsoleHeaderSize ? n - kConsoleHeaderSize : 0;
        return Status::Ok();
      }));
  RETURN_IF_ERROR(
      impl_->ForEachRecordingKey(ro, kEvents, id, [&](rocksdb::Slice, rocksdb::Slice) -> Status {
        u.events++;
        return Status::Ok();
      }));
  return u;
}

}  // namespace blackbox
