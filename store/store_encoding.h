// Internal to store/: the key and value encodings the store's .cc files share (store.cc,
// recordings.cc, captures.cc, alerts.cc). Nobody outside store/ includes it; everything else
// talks to store/store.h. The formats are documented in docs/store-format.md.
//
// Constants and the byte helpers (on every frame's path) are inline here; the rest is defined
// in store_encoding.cc.
#pragma once

#include <rocksdb/slice.h>
#include <rocksdb/status.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/hash.h"
#include "common/status.h"

namespace blackbox::store_internal {

// ---- formats (docs/store-format.md) ----

inline constexpr char kSchemaKey[] = "schema_version";
inline constexpr char kSchemaVersion[] = "1";

inline constexpr size_t kMaxIdLength = 128;

// Caps, checked before anything is allocated or parsed.
inline constexpr uint32_t kMaxChunkRawSize = 64u << 20;     // raw bytes of one rr chunk
inline constexpr size_t kMaxConsolePieceSize = 4u << 20;    // bytes of one console piece
inline constexpr size_t kMaxEventSize = 1u << 20;           // serialised JSON of one event
inline constexpr size_t kMaxRecordingJsonSize = 16u << 20;  // serialised JSON of one RecordingInfo
inline constexpr size_t kMaxCaptureJsonSize = 16u << 20;    // serialised JSON of capture metadata
inline constexpr size_t kMaxFlowSize = 1u << 20;            // serialised JSON of one flow record
inline constexpr size_t kMaxAlertSize = 1u << 20;           // serialised JSON of one alert
inline constexpr uint32_t kMaxBatchRawSize = 64u << 20;     // encoded bytes of one frame batch
inline constexpr size_t kMaxFrameSize = 256u << 10;         // bytes of one captured frame
inline constexpr size_t kMaxDropReasonSize = 255;           // stored bytes of a drop reason
inline constexpr size_t kMaxEgressPorts = 65535;            // egress ports of one frame
inline constexpr uint32_t kMaxBatchPorts = 4096;            // distinct ports of one frame batch

// Every binary index entry is "magic | version | fields | SHA-256 of everything before it".
inline constexpr size_t kChecksumSize = 32;

// rr_index value: "BBRI" | version | fields (big-endian) | checksum.
inline constexpr char kIndexMagic[4] = {'B', 'B', 'R', 'I'};
inline constexpr uint8_t kIndexVersion = 1;
inline constexpr size_t kIndexBodySize =
    4 + 1 + 8 + 8 + 4 + 4 + 8 + 8 + 8 + 8 + 4 + 4 + 32 + 32 + 32;
static_assert(kIndexBodySize == 165);

// frame_index value: "BBFI" | version | fixed fields | port_count | ports (big-endian) | checksum.
inline constexpr char kFrameIndexMagic[4] = {'B', 'B', 'F', 'I'};
inline constexpr uint8_t kFrameIndexVersion = 1;
inline constexpr size_t kFrameIndexFixedSize = 4 + 1 + 8 + 8 + 8 + 4 + 4 + 4 + 4 + 32 + 32 + 32 + 4;
static_assert(kFrameIndexFixedSize == 145);

// rr_chunks and frames values: magic | version | codec | zstd frame.
inline constexpr char kChunkMagic[4] = {'B', 'B', 'R', 'C'};
inline constexpr char kFrameBatchMagic[4] = {'B', 'B', 'F', 'B'};
inline constexpr uint8_t kPayloadVersion = 1;
inline constexpr uint8_t kCodecZstd = 1;
inline constexpr size_t kPayloadHeaderSize = 6;

// One encoded frame: wall_ns i64 | ingress u32 | egress_count u16 | egress u32 * count |
// reason_len u8 | reason | frame_len u32 | frame.
inline constexpr size_t kMinEncodedFrameSize = 8 + 4 + 2 + 1 + 4;

// console value: version | wall_ns (i64 BE) | bytes.
inline constexpr uint8_t kConsoleVersion = 1;
inline constexpr size_t kConsoleHeaderSize = 9;

// flows value: version | start_wall_ns (i64 BE) | JSON.
inline constexpr uint8_t kFlowVersion = 1;
inline constexpr size_t kFlowHeaderSize = 9;

// alerts value: version | JSON.
inline constexpr uint8_t kAlertVersion = 1;
inline constexpr size_t kAlertHeaderSize = 1;

enum Cf {
  kMeta = 0,
  kRecordings,
  kRrIndex,
  kRrChunks,
  kConsole,
  kEvents,
  kCaptures,  // the capture families, added after schema version 1 was first released
  kFrameIndex,
  kFrames,
  kFlows,
  kAlerts,  // added after the capture families
  kNumCfs
};
inline constexpr const char* kCfNames[kNumCfs] = {
    "meta",     "recordings",  "rr_index", "rr_chunks", "console", "events",
    "captures", "frame_index", "frames",   "flows",     "alerts"};
// How error messages name each column family.
inline constexpr const char* kCfWhat[kNumCfs] = {"meta",    "recordings", "rr index", "rr chunks",
                                                 "console", "events",     "captures", "frame index",
                                                 "frames",  "flows",      "alerts"};
// A read-only (or secondary) open accepts a store written before these existed and sees them
// empty.
inline constexpr int kFirstOptionalCf = kCaptures;

// What owns the keys of a column family, for error messages. (Alert keys have no owner id.)
const char* OwnerOf(Cf c);

// ---- bytes ----

inline void PutBE64(std::string* out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
inline void PutBE32(std::string* out, uint32_t v) {
  for (int i = 3; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
inline void PutBE16(std::string* out, uint16_t v) {
  out->push_back(static_cast<char>(v >> 8));
  out->push_back(static_cast<char>(v & 0xff));
}
inline uint64_t GetBE64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | static_cast<uint8_t>(p[i]);
  return v;
}
inline uint32_t GetBE32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = v << 8 | static_cast<uint8_t>(p[i]);
  return v;
}
inline uint16_t GetBE16(const char* p) {
  return static_cast<uint16_t>(static_cast<uint8_t>(p[0]) << 8 | static_cast<uint8_t>(p[1]));
}
inline void PutDigest(std::string* out, const Sha256Digest& d) {
  out->append(reinterpret_cast<const char*>(d.data()), d.size());
}
inline Sha256Digest GetDigest(const char* p) {
  Sha256Digest d{};
  std::memcpy(d.data(), p, d.size());
  return d;
}
inline bool IsZero(const Sha256Digest& d) {
  return std::all_of(d.begin(), d.end(), [](uint8_t b) { return b == 0; });
}
inline bool StartsWith(rocksdb::Slice s, std::string_view prefix) {
  return s.size() >= prefix.size() && std::memcmp(s.data(), prefix.data(), prefix.size()) == 0;
}
inline std::string_view View(const rocksdb::Slice& s) { return {s.data(), s.size()}; }

// Reads fixed-width fields off the front of untrusted bytes; every Take fails instead of
// reading past the end.
class ByteReader {
 public:
  explicit ByteReader(std::string_view bytes) : rest_(bytes) {}
  bool empty() const { return rest_.empty(); }
  size_t remaining() const { return rest_.size(); }
  bool Take(size_t n, std::string_view* out) {
    if (rest_.size() < n) return false;
    *out = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return true;
  }
  bool U8(uint8_t* v) {
    std::string_view b;
    if (!Take(1, &b)) return false;
    *v = static_cast<uint8_t>(b[0]);
    return true;
  }
  bool BE16(uint16_t* v) {
    std::string_view b;
    if (!Take(2, &b)) return false;
    *v = GetBE16(b.data());
    return true;
  }
  bool BE32(uint32_t* v) {
    std::string_view b;
    if (!Take(4, &b)) return false;
    *v = GetBE32(b.data());
    return true;
  }
  bool BE64(uint64_t* v) {
    std::string_view b;
    if (!Take(8, &b)) return false;
    *v = GetBE64(b.data());
    return true;
  }

 private:
  std::string_view rest_;
};

// Quotes untrusted text for an error message: printable ASCII kept, the rest escaped, long
// strings cut.
std::string Printable(std::string_view s);

// ---- ids and keys ----

// InvalidArgument unless id is 1 to 128 of [A-Za-z0-9._-]; `what` names it in the message.
Status ValidateId(const std::string& id, const char* what = "recording id");

// id 0x00: every per-recording and per-capture key starts with it. Ids never contain 0x00, so
// the prefix of "ab" never matches keys of "abc".
std::string KeyPrefix(const std::string& id);
// First key after every key with KeyPrefix(id).
std::string KeyPrefixEnd(const std::string& id);
// Hex of the key KeyPrefix(id) + key_suffix, for error messages.
std::string KeyHex(const std::string& id, rocksdb::Slice key_suffix);
std::string SeqKey(const std::string& id, uint64_t seq);
// Key of an event, flow or alert: `prefix` is KeyPrefix(id) ("" for alerts, which belong to
// no id), `time` is already mapped to an order-preserving u64 (EventTime, FlowTime).
std::string TimeKey(std::string prefix, uint64_t time, uint32_t seq);
// Event times are refused when negative, so their two's complement orders like the times.
uint64_t EventTime(int64_t wall_ns);
// Flow times may be any int64: offset binary (sign bit flipped) orders like the times.
uint64_t FlowTime(int64_t wall_ns);
int64_t FlowTimeToNs(uint64_t key_time);

// ---- sealed index entries ----

// Appends the SHA-256 of *v to it: the checksum that ends every binary index entry.
void Seal(std::string* v);

// Checks the envelope of an index entry whose fields take body_size bytes (magic and version
// included): magic, version, size and checksum. Returns what is wrong, or "" when it is good.
std::string CheckSealed(std::string_view v, const char (&magic)[4], uint8_t version,
                        size_t body_size);

// ---- status conversion ----

Status FromRocks(const rocksdb::Status& s, const std::string& context);

bool ContainsNoCase(std::string haystack, std::string needle);

// ---- JSON ----

std::string DumpJson(const nlohmann::json& j);

// Parses stored JSON of at most `cap` bytes; Corruption, naming `what`, otherwise.
StatusOr<nlohmann::json> ParseJson(std::string_view text, size_t cap, const std::string& what);

// `owner` says whose field it is in the message ("recording", "flow").
StatusOr<int64_t> JsonInt64(const nlohmann::json& v, const char* field,
                            const char* owner = "recording");

StatusOr<std::string> JsonString(const nlohmann::json& v, const char* field);

}  // namespace blackbox::store_internal
