#include "store/store.h"

#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/snapshot.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <span>
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
constexpr size_t kMaxCaptureJsonSize = 16u << 20;    // serialised JSON of one capture's metadata
constexpr size_t kMaxFlowSize = 1u << 20;            // serialised JSON of one flow record
constexpr size_t kMaxAlertSize = 1u << 20;           // serialised JSON of one alert
constexpr uint32_t kMaxBatchRawSize = 64u << 20;     // encoded bytes of one frame batch
constexpr size_t kMaxFrameSize = 256u << 10;         // bytes of one captured frame
constexpr size_t kMaxDropReasonSize = 255;           // stored bytes of a drop reason
constexpr size_t kMaxEgressPorts = 65535;            // egress ports of one frame
constexpr uint32_t kMaxBatchPorts = 4096;            // distinct ports of one frame batch

// Every binary index entry is "magic | version | fields | SHA-256 of everything before it".
constexpr size_t kChecksumSize = 32;

// rr_index value: "BBRI" | version | fields (big-endian) | checksum.
constexpr char kIndexMagic[4] = {'B', 'B', 'R', 'I'};
constexpr uint8_t kIndexVersion = 1;
constexpr size_t kIndexBodySize = 4 + 1 + 8 + 8 + 4 + 4 + 8 + 8 + 8 + 8 + 4 + 4 + 32 + 32 + 32;
static_assert(kIndexBodySize == 165);

// frame_index value: "BBFI" | version | fixed fields | port_count | ports (big-endian) | checksum.
constexpr char kFrameIndexMagic[4] = {'B', 'B', 'F', 'I'};
constexpr uint8_t kFrameIndexVersion = 1;
constexpr size_t kFrameIndexFixedSize = 4 + 1 + 8 + 8 + 8 + 4 + 4 + 4 + 4 + 32 + 32 + 32 + 4;
static_assert(kFrameIndexFixedSize == 145);

// rr_chunks and frames values: magic | version | codec | zstd frame.
constexpr char kChunkMagic[4] = {'B', 'B', 'R', 'C'};
constexpr char kFrameBatchMagic[4] = {'B', 'B', 'F', 'B'};
constexpr uint8_t kPayloadVersion = 1;
constexpr uint8_t kCodecZstd = 1;
constexpr size_t kPayloadHeaderSize = 6;

// One encoded frame: wall_ns i64 | ingress u32 | egress_count u16 | egress u32 * count |
// reason_len u8 | reason | frame_len u32 | frame.
constexpr size_t kMinEncodedFrameSize = 8 + 4 + 2 + 1 + 4;

// console value: version | wall_ns (i64 BE) | bytes.
constexpr uint8_t kConsoleVersion = 1;
constexpr size_t kConsoleHeaderSize = 9;

// flows value: version | start_wall_ns (i64 BE) | JSON.
constexpr uint8_t kFlowVersion = 1;
constexpr size_t kFlowHeaderSize = 9;

// alerts value: version | JSON.
constexpr uint8_t kAlertVersion = 1;
constexpr size_t kAlertHeaderSize = 1;

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
constexpr const char* kCfNames[kNumCfs] = {"meta",    "recordings", "rr_index", "rr_chunks",
                                           "console", "events",     "captures", "frame_index",
                                           "frames",  "flows",      "alerts"};
// How error messages name each column family.
constexpr const char* kCfWhat[kNumCfs] = {"meta",    "recordings", "rr index", "rr chunks",
                                          "console", "events",     "captures", "frame index",
                                          "frames",  "flows",      "alerts"};
// A read-only (or secondary) open accepts a store written before these existed and sees them
// empty.
constexpr int kFirstOptionalCf = kCaptures;

// What owns the keys of a column family, for error messages. (Alert keys have no owner id.)
const char* OwnerOf(Cf c) {
  if (c == kAlerts) return "store";
  return c >= kCaptures ? "capture" : "recording";
}

// ---- bytes ----

void PutBE64(std::string* out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutBE32(std::string* out, uint32_t v) {
  for (int i = 3; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutBE16(std::string* out, uint16_t v) {
  out->push_back(static_cast<char>(v >> 8));
  out->push_back(static_cast<char>(v & 0xff));
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
uint16_t GetBE16(const char* p) {
  return static_cast<uint16_t>(static_cast<uint8_t>(p[0]) << 8 | static_cast<uint8_t>(p[1]));
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

// id 0x00: every per-recording and per-capture key starts with it. Ids never contain 0x00, so
// the prefix of "ab" never matches keys of "abc".
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
// Key of an event, flow or alert: `prefix` is KeyPrefix(id) ("" for alerts, which belong to
// no id), `time` is already mapped to an order-preserving u64 (EventTime, FlowTime).
std::string TimeKey(std::string prefix, uint64_t time, uint32_t seq) {
  PutBE64(&prefix, time);
  PutBE32(&prefix, seq);
  return prefix;
}
// Event times are refused when negative, so their two's complement orders like the times.
uint64_t EventTime(int64_t wall_ns) { return static_cast<uint64_t>(wall_ns); }
// Flow times may be any int64: offset binary (sign bit flipped) orders like the times.
uint64_t FlowTime(int64_t wall_ns) { return static_cast<uint64_t>(wall_ns) ^ (uint64_t{1} << 63); }
int64_t FlowTimeToNs(uint64_t key_time) {
  return static_cast<int64_t>(key_time ^ (uint64_t{1} << 63));
}

// ---- sealed index entries ----

// Appends the SHA-256 of *v to it: the checksum that ends every binary index entry.
void Seal(std::string* v) { PutDigest(v, Sha256Of(*v)); }

// Checks the envelope of an index entry whose fields take body_size bytes (magic and version
// included): magic, version, size and checksum. Returns what is wrong, or "" when it is good.
std::string CheckSealed(std::string_view v, const char (&magic)[4], uint8_t version,
                        size_t body_size) {
  if (v.size() < 5 || std::memcmp(v.data(), magic, 4) != 0) {
    return "index entry has bad magic (index corrupted)";
  }
  if (static_cast<uint8_t>(v[4]) != version) {
    return "index entry has unsupported format version " +
           std::to_string(static_cast<uint8_t>(v[4]));
  }
  if (v.size() != body_size + kChecksumSize) {
    return "index entry is " + std::to_string(v.size()) + " bytes, expected " +
           std::to_string(body_size + kChecksumSize) + " (index corrupted)";
  }
  if (Sha256Of(v.substr(0, body_size)) != GetDigest(v.data() + body_size)) {
    return "index entry checksum mismatch (index corrupted)";
  }
  return "";
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

std::string EncodeRrIndex(const RrChunkInfo& i) {
  std::string v;
  v.reserve(kIndexBodySize + kChecksumSize);
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
  Seal(&v);
  return v;
}

// Decodes an rr index value; returns what is wrong with it, or "" when it is good.
std::string DecodeRrIndex(std::string_view v, RrChunkInfo* out) {
  std::string problem = CheckSealed(v, kIndexMagic, kIndexVersion, kIndexBodySize);
  if (!problem.empty()) return problem;
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

// ---- frame index entries ----

void AppendFrameChainFields(std::string* out, const FrameBatchInfo& i) {
  PutBE64(out, i.seq);
  PutBE64(out, static_cast<uint64_t>(i.first_wall_ns));
  PutBE64(out, static_cast<uint64_t>(i.last_wall_ns));
  PutBE32(out, i.frame_count);
  PutBE32(out, i.dropped_count);
  PutBE32(out, i.raw_size);
  PutBE32(out, static_cast<uint32_t>(i.ports.size()));
  for (uint32_t port : i.ports) PutBE32(out, port);
  PutDigest(out, i.raw_sha256);
}

std::string EncodeFrameIndex(const FrameBatchInfo& i) {
  std::string v;
  v.reserve(kFrameIndexFixedSize + 4 * i.ports.size() + kChecksumSize);
  v.append(kFrameIndexMagic, 4);
  v.push_back(static_cast<char>(kFrameIndexVersion));
  PutBE64(&v, i.seq);
  PutBE64(&v, static_cast<uint64_t>(i.first_wall_ns));
  PutBE64(&v, static_cast<uint64_t>(i.last_wall_ns));
  PutBE32(&v, i.frame_count);
  PutBE32(&v, i.dropped_count);
  PutBE32(&v, i.raw_size);
  PutBE32(&v, i.stored_size);
  PutDigest(&v, i.raw_sha256);
  PutDigest(&v, i.prev_chain);
  PutDigest(&v, i.chain);
  PutBE32(&v, static_cast<uint32_t>(i.ports.size()));
  for (uint32_t port : i.ports) PutBE32(&v, port);
  Seal(&v);
  return v;
}

// Decodes a frame index value; returns what is wrong with it, or "" when it is good.
std::string DecodeFrameIndex(std::string_view v, FrameBatchInfo* out) {
  // The port count sits just before the ports; a value too short to hold it is reported by
  // CheckSealed as having the wrong size.
  const uint64_t port_count =
      v.size() >= kFrameIndexFixedSize ? GetBE32(v.data() + kFrameIndexFixedSize - 4) : 0;
  std::string problem =
      CheckSealed(v, kFrameIndexMagic, kFrameIndexVersion, kFrameIndexFixedSize + 4 * port_count);
  if (!problem.empty()) return problem;
  if (port_count > kMaxBatchPorts) {
    return "index entry lists " + std::to_string(port_count) + " ports, above the cap of " +
           std::to_string(kMaxBatchPorts) + " (index corrupted)";
  }
  const char* p = v.data() + 5;
  FrameBatchInfo i;
  i.seq = GetBE64(p), p += 8;
  i.first_wall_ns = static_cast<int64_t>(GetBE64(p)), p += 8;
  i.last_wall_ns = static_cast<int64_t>(GetBE64(p)), p += 8;
  i.frame_count = GetBE32(p), p += 4;
  i.dropped_count = GetBE32(p), p += 4;
  i.raw_size = GetBE32(p), p += 4;
  i.stored_size = GetBE32(p), p += 4;
  i.raw_sha256 = GetDigest(p), p += 32;
  i.prev_chain = GetDigest(p), p += 32;
  i.chain = GetDigest(p), p += 32;
  p += 4;  // port_count
  i.ports.reserve(port_count);
  for (uint64_t k = 0; k < port_count; ++k, p += 4) i.ports.push_back(GetBE32(p));
  *out = std::move(i);
  return "";
}

// ---- frame batches ----

// The summary fields of a batch's index entry (times, counts, ports) computed from its frames.
FrameBatchInfo Summarize(std::span<const CapturedFrame> frames) {
  FrameBatchInfo s;
  if (frames.empty()) return s;
  s.first_wall_ns = std::numeric_limits<int64_t>::max();
  s.last_wall_ns = std::numeric_limits<int64_t>::min();
  for (const CapturedFrame& f : frames) {
    s.first_wall_ns = std::min(s.first_wall_ns, f.wall_ns);
    s.last_wall_ns = std::max(s.last_wall_ns, f.wall_ns);
    if (!f.drop_reason.empty()) s.dropped_count++;
    s.ports.push_back(f.ingress);
    s.ports.insert(s.ports.end(), f.egress.begin(), f.egress.end());
  }
  s.frame_count = static_cast<uint32_t>(frames.size());
  std::sort(s.ports.begin(), s.ports.end());
  s.ports.erase(std::unique(s.ports.begin(), s.ports.end()), s.ports.end());
  return s;
}

// The first n bytes of s or fewer, cut at a UTF-8 character boundary (unless s has no boundary
// there at all, as in invalid UTF-8).
std::string_view CutUtf8(std::string_view s, size_t n) {
  if (s.size() <= n) return s;
  size_t cut = n;
  while (cut > 0 && (static_cast<uint8_t>(s[cut]) & 0xc0) == 0x80) --cut;
  return s.substr(0, cut > 0 ? cut : n);
}

// Decodes an encoded batch that should hold frame_count frames into *out. Bounds-checked
// throughout: returns what is wrong, or "" when the bytes are exactly frame_count frames.
std::string DecodeFrames(std::string_view raw, uint32_t frame_count,
                         std::vector<CapturedFrame>* out) {
  out->clear();
  out->reserve(std::min<size_t>(frame_count, raw.size() / kMinEncodedFrameSize));
  ByteReader r(raw);
  while (!r.empty()) {
    const size_t at = raw.size() - r.remaining();
    auto truncated = [&] {
      return "frame " + std::to_string(out->size()) + " (at byte " + std::to_string(at) +
             ") is truncated (payload malformed)";
    };
    if (out->size() == frame_count) {
      return "payload holds more than the " + std::to_string(frame_count) +
             " frames of the index (" + std::to_string(r.remaining()) +
             " bytes left over; payload malformed)";
    }
    CapturedFrame f;
    uint64_t wall_ns = 0;
    uint16_t egress_count = 0;
    uint8_t reason_len = 0;
    uint32_t frame_len = 0;
    std::string_view bytes;
    if (!r.BE64(&wall_ns) || !r.BE32(&f.ingress) || !r.BE16(&egress_count)) return truncated();
    f.wall_ns = static_cast<int64_t>(wall_ns);
    if (r.remaining() < size_t{4} * egress_count) return truncated();
    f.egress.resize(egress_count);
    for (uint32_t& port : f.egress) r.BE32(&port);
    if (!r.U8(&reason_len) || !r.Take(reason_len, &bytes)) return truncated();
    f.drop_reason.assign(bytes);
    if (!r.BE32(&frame_len)) return truncated();
    if (frame_len > kMaxFrameSize) {
      return "frame " + std::to_string(out->size()) + " claims " + std::to_string(frame_len) +
             " bytes, above the cap of " + std::to_string(kMaxFrameSize) + " (payload malformed)";
    }
    if (!r.Take(frame_len, &bytes)) return truncated();
    f.bytes.assign(bytes);
    out->push_back(std::move(f));
  }
  if (out->size() != frame_count) {
    return "payload holds " + std::to_string(out->size()) + " frames but the index says " +
           std::to_string(frame_count);
  }
  return "";
}

// Compares the summary in an index entry with the one computed from the batch's frames.
// Returns the first field that differs, or "" when they agree.
std::string CompareSummary(const FrameBatchInfo& index, const FrameBatchInfo& frames) {
  auto differs = [](const char* field, const std::string& in_index, const std::string& actual) {
    return std::string("index says ") + field + " " + in_index + " but the frames have " + actual +
           " (index altered)";
  };
  if (index.frame_count == 0) return "index entry has no frames (index altered)";
  if (index.first_wall_ns != frames.first_wall_ns) {
    return differs("first_wall_ns", std::to_string(index.first_wall_ns),
                   std::to_string(frames.first_wall_ns));
  }
  if (index.last_wall_ns != frames.last_wall_ns) {
    return differs("last_wall_ns", std::to_string(index.last_wall_ns),
                   std::to_string(frames.last_wall_ns));
  }
  if (index.dropped_count != frames.dropped_count) {
    return differs("dropped_count", std::to_string(index.dropped_count),
                   std::to_string(frames.dropped_count));
  }
  if (index.ports != frames.ports) {
    auto list = [](const std::vector<uint32_t>& ports) {
      std::string t = "[";
      for (size_t k = 0; k < ports.size() && k < 16; ++k) {
        t += (k > 0 ? "," : "") + std::to_string(ports[k]);
      }
      return t + (ports.size() > 16 ? ",...]" : "]");
    };
    return differs("ports", list(index.ports), list(frames.ports));
  }
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

// `owner` says whose field it is in the message ("recording", "flow").
StatusOr<int64_t> JsonInt64(const nlohmann::json& v, const char* field,
                            const char* owner = "recording") {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return InvalidArgument(std::string(owner) + " field '" + field + "' is out of range");
    }
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  return InvalidArgument(std::string(owner) + " field '" + field + "' must be an integer");
}

StatusOr<std::string> JsonString(const nlohmann::json& v, const char* field) {
  if (!v.is_string()) {
    return InvalidArgument(std::string("recording field '") + field + "' must be a string");
  }
  return v.get<std::string>();
}

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

constexpr char kChainMismatch[] = "chain hash mismatch (index entry altered)";

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

// Checks that a flow record is an object with integers start_wall_ns and end_wall_ns and
// returns them. InvalidArgument says what is wrong. (start > end is kept as given: wall clocks
// can step back during a flow.)
StatusOr<std::pair<int64_t, int64_t>> FlowTimes(const nlohmann::json& flow) {
  if (!flow.is_object()) return InvalidArgument("a flow must be a JSON object");
  std::pair<int64_t, int64_t> times;
  for (auto [field, out] :
       {std::pair{"start_wall_ns", &times.first}, std::pair{"end_wall_ns", &times.second}}) {
    auto it = flow.find(field);
    if (it == flow.end()) return InvalidArgument(std::string("flow has no '") + field + "'");
    ASSIGN_OR_RETURN(*out, JsonInt64(*it, field, "flow"));
  }
  return times;
}

struct StoredFlow {
  int64_t start_wall_ns = 0;
  int64_t end_wall_ns = 0;
  std::string_view json;  // points into the value
};

// Splits a flows value without parsing its JSON (ListFlows filters on start_wall_ns first).
StatusOr<StoredFlow> SplitFlow(const std::string& id, rocksdb::Slice key_suffix,
                               rocksdb::Slice value) {
  if (key_suffix.size() != 12) {
    return Corruption("capture " + id + ": malformed flows key " + KeyHex(id, key_suffix));
  }
  StoredFlow f;
  f.end_wall_ns = FlowTimeToNs(GetBE64(key_suffix.data()));
  if (value.size() < kFlowHeaderSize || static_cast<uint8_t>(value[0]) != kFlowVersion) {
    return Corruption("capture " + id + " flow ending at " + std::to_string(f.end_wall_ns) +
                      " seq " + std::to_string(GetBE32(key_suffix.data() + 8)) +
                      ": bad value header");
  }
  f.start_wall_ns = static_cast<int64_t>(GetBE64(value.data() + 1));
  f.json = View(value).substr(kFlowHeaderSize);
  return f;
}

// Parses a flow split by SplitFlow and checks that its JSON agrees with key and header.
StatusOr<nlohmann::json> ParseFlow(const std::string& id, rocksdb::Slice key_suffix,
                                   const StoredFlow& f) {
  const std::string what = "capture " + id + " flow ending at " + std::to_string(f.end_wall_ns) +
                           " seq " + std::to_string(GetBE32(key_suffix.data() + 8));
  ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(f.json, kMaxFlowSize, what));
  StatusOr<std::pair<int64_t, int64_t>> times = FlowTimes(j);
  if (!times.ok()) return Corruption(what + ": stored flow: " + times.status().message());
  if (times->first != f.start_wall_ns || times->second != f.end_wall_ns) {
    return Corruption(what + ": stored flow's times differ from its key and header (altered)");
  }
  return j;
}

// ---- alerts ----

// Key of an alert: wall_ns (refused when negative, so its two's complement orders like the
// time, as for events) | seq. Alerts belong to no recording or capture: no id prefix.
std::string AlertKey(int64_t wall_ns, uint32_t seq) { return TimeKey("", EventTime(wall_ns), seq); }
std::string AlertId(int64_t wall_ns, uint32_t seq) {
  return std::to_string(wall_ns) + "-" + std::to_string(seq);
}

// Checks that an alert body is an object with string "vm" and "kind". InvalidArgument says
// what is wrong, in one line.
Status CheckAlertBody(const nlohmann::json& body) {
  if (!body.is_object()) return InvalidArgument("an alert must be a JSON object");
  for (const char* field : {"vm", "kind"}) {
    auto it = body.find(field);
    if (it == body.end() || !it->is_string()) {
      return InvalidArgument(std::string("an alert must have a string '") + field + "'");
    }
  }
  return Status::Ok();
}

// Parses an alert id exactly as AlertId writes it: "<wall_ns>-<seq>", both decimal without
// sign, spaces or leading zeros, wall_ns within int64 and seq within uint32.
bool ParseAlertId(std::string_view id, int64_t* wall_ns, uint32_t* seq) {
  auto number = [](std::string_view s, uint64_t max, uint64_t* out) {
    if (s.empty() || (s.size() > 1 && s[0] == '0')) return false;
    if (!std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return false;
    }
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
    return ec == std::errc() && end == s.data() + s.size() && *out <= max;
  };
  const size_t dash = id.find('-');
  if (dash == std::string_view::npos) return false;
  uint64_t w = 0;
  uint64_t q = 0;
  if (!number(id.substr(0, dash), std::numeric_limits<int64_t>::max(), &w) ||
      !number(id.substr(dash + 1), std::numeric_limits<uint32_t>::max(), &q)) {
    return false;
  }
  *wall_ns = static_cast<int64_t>(w);
  *seq = static_cast<uint32_t>(q);
  return true;
}

// Decodes one stored alert (key and value of the alerts column family). Corruption names the
// alert and its key.
StatusOr<StoredAlert> DecodeAlert(rocksdb::Slice key, rocksdb::Slice value) {
  if (key.size() != 12) return Corruption("malformed alerts key " + ToHex(View(key)));
  const uint64_t time = GetBE64(key.data());
  const uint32_t seq = GetBE32(key.data() + 8);
  if (time > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return Corruption("alerts key " + ToHex(View(key)) + " has a negative time");
  }
  StoredAlert a;
  a.wall_ns = static_cast<int64_t>(time);
  a.id = AlertId(a.wall_ns, seq);
  const std::string what = "alert " + a.id + " (key " + ToHex(View(key)) + ")";
  if (value.size() < kAlertHeaderSize) return Corruption(what + ": bad value header (empty)");
  if (static_cast<uint8_t>(value[0]) != kAlertVersion) {
    return Corruption(what + ": bad value header (format version " +
                      std::to_string(static_cast<uint8_t>(value[0])) + ", this binary knows " +
                      std::to_string(kAlertVersion) + ")");
  }
  ASSIGN_OR_RETURN(a.body, ParseJson(View(value).substr(kAlertHeaderSize), kMaxAlertSize, what));
  Status body = CheckAlertBody(a.body);
  if (!body.ok()) return Corruption(what + ": stored alert: " + body.message());
  return a;
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

Sha256Digest ComputeFrameBatchChain(const FrameBatchInfo& info) {
  std::string buf;
  buf.reserve(32 + 40 + 4 * info.ports.size() + 32);
  PutDigest(&buf, info.prev_chain);
  AppendFrameChainFields(&buf, info);
  return Sha256Of(buf);
}

// ---- Store::Impl ----

namespace {

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
ZSTD_CCtx* CreateCctx() {
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

}  // namespace

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
  // Returned locked by *lock.
  StatusOr<CaptureHead*> LockHead(const std::string& id, std::unique_lock<std::mutex>* lock) {
    std::shared_ptr<CaptureHead> head;
    {
      std::lock_guard<std::mutex> l(heads_mu);
      std::shared_ptr<CaptureHead>& slot = heads[id];
      if (slot == nullptr) slot = std::make_shared<CaptureHead>();
      head = slot;  // entries are never removed, so the pointer outlives this call
    }
    *lock = std::unique_lock<std::mutex>(head->mu);
    if (!head->loaded) {
      ASSIGN_OR_RETURN(std::optional<uint64_t> newest, NewestSeq(kFrameIndex, id));
      if (newest) {
        ASSIGN_OR_RETURN(FrameBatchInfo last,
                         GetIndex<FrameBatchInfo>(rocksdb::ReadOptions(), id, *newest));
        if (ComputeFrameBatchChain(last) != last.chain) {
          return Corruption(ItemName<FrameBatchInfo>(id, last.seq) + ": " + kChainMismatch +
                            "; not appending to a broken chain");
        }
        head->next_seq = last.seq + 1;
        head->chain = last.chain;
      }
      head->loaded = true;
    }
    return head.get();
  }

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

// ---- Store ----

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;

StatusOr<std::unique_ptr<Store>> Store::Open(const StoreOptions& options) {
  if (options.path.empty()) return InvalidArgument("store path is empty");
  if (options.zstd_level < ZSTD_minCLevel() || options.zstd_level > ZSTD_maxCLevel()) {
    return InvalidArgument("zstd level " + std::to_string(options.zstd_level) + " is out of range");
  }
  const std::string& path = options.path;
  const bool secondary = !options.secondary_path.empty();
  // A secondary is read-only: everything below that says read_only applies to it as well.
  const bool read_only = options.read_only || secondary;
  if (secondary && options.secondary_path == path) {
    return InvalidArgument("store " + path + ": the secondary path must differ from the store's");
  }
  const bool existed = PathExists(path + "/CURRENT");
  if (!existed && (read_only || !options.create_if_missing)) {
    return IOError("store " + path + " does not exist");
  }
  if (!existed) RETURN_IF_ERROR(MakeDirs(path));
  if (secondary) RETURN_IF_ERROR(MakeDirs(options.secondary_path));

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = options.create_if_missing;
  // A writer adds the column families a store written by an older binary lacks (only a store
  // that exists gets here without create_if_missing).
  db_options.create_missing_column_families = !read_only;
  db_options.keep_log_file_num = 5;
  // A secondary keeps every table file open: it must not lose one the writer deletes between
  // its catch-ups (RocksDB requires this).
  if (secondary) db_options.max_open_files = -1;

  rocksdb::ColumnFamilyOptions small_cf;
  small_cf.compression = rocksdb::kZSTD;
  rocksdb::ColumnFamilyOptions chunk_cf;
  chunk_cf.compression = rocksdb::kNoCompression;  // payloads are zstd frames already
  chunk_cf.write_buffer_size = 64 << 20;

  // RocksDB requires a writer to open every column family the database has, and a reader to
  // open only ones it has.
  std::set<std::string> have;
  std::vector<std::string> extra_names;
  if (existed) {
    std::vector<std::string> names;
    rocksdb::Status s = rocksdb::DB::ListColumnFamilies(db_options, path, &names);
    if (!s.ok()) return FromRocks(s, "cannot open store " + path);
    have.insert(names.begin(), names.end());
    for (int c = 0; c < kFirstOptionalCf; ++c) {
      if (read_only && !have.count(kCfNames[c])) {
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
  // Order: ours (by Cf, without the optional ones a reader does not find), default, extras.
  std::vector<rocksdb::ColumnFamilyDescriptor> all;
  std::vector<int> slot;  // the Cf of all[i], or -1
  for (int c = 0; c < kNumCfs; ++c) {
    if (read_only && !have.count(kCfNames[c])) continue;
    all.emplace_back(kCfNames[c], c == kRrChunks || c == kFrames ? chunk_cf : small_cf);
    slot.push_back(c);
  }
  all.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
  for (const auto& n : extra_names) all.emplace_back(n, rocksdb::ColumnFamilyOptions());
  slot.resize(all.size(), -1);

  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->options.read_only = read_only;
  impl->secondary = secondary;
  impl->write_options.sync = options.sync_writes;
  impl->write_options.disableWAL = false;

  rocksdb::Status s;
  std::vector<rocksdb::ColumnFamilyHandle*> opened;
  if (secondary) {
    s = rocksdb::DB::OpenAsSecondary(db_options, path, options.secondary_path, all, &opened,
                                     &impl->db);
  } else if (read_only) {
    s = rocksdb::DB::OpenForReadOnly(db_options, path, all, &opened, &impl->db,
                                     /*error_if_wal_file_exists=*/false);
  } else {
    s = rocksdb::DB::Open(db_options, path, all, &opened, &impl->db);
  }
  if (s.ok()) {
    impl->handles.assign(kNumCfs, nullptr);
    for (size_t i = 0; i < opened.size(); ++i) {
      if (slot[i] >= 0) {
        impl->handles[slot[i]] = opened[i];
      } else {
        impl->handles.push_back(opened[i]);
      }
    }
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
    if (read_only) {
      return Corruption("store " + path + " has no schema version (not a Blackbox store?)");
    }
    // A fresh database (or one whose creation stopped before this write) gets stamped;
    // an existing one with data but no version is not ours to claim.
    if (existed) {
      for (int c = kRecordings; c < kNumCfs; ++c) {
        std::unique_ptr<rocksdb::Iterator> it =
            impl->NewIterator(rocksdb::ReadOptions(), static_cast<Cf>(c));
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

// A full key of family `c`, or the only key starting with the prefix;
// `what` ("recording", "capture") names it in errors.
StatusOr<std::string> Store::Impl::ResolveKey(Cf c, const std::string& what,
                                              const std::string& id_or_prefix) const {
  const std::string field = what + " id or prefix";
  RETURN_IF_ERROR(ValidateId(id_or_prefix, field.c_str()));
  std::string value;
  rocksdb::Status s = Get(rocksdb::ReadOptions(), c, id_or_prefix, &value);
  if (s.ok()) return id_or_prefix;
  if (!s.IsNotFound()) return FromRocks(s, what + " " + id_or_prefix);

  std::vector<std::string> matches;
  size_t count = 0;
  std::unique_ptr<rocksdb::Iterator> it = NewIterator(rocksdb::ReadOptions(), c);
  for (it->Seek(id_or_prefix); it->Valid() && StartsWith(it->key(), id_or_prefix); it->Next()) {
    if (matches.size() < 10) matches.push_back(it->key().ToString());
    ++count;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "resolving " + id_or_prefix);
  if (count == 0) return NotFound("no " + what + " '" + id_or_prefix + "'");
  if (count == 1) return matches[0];
  std::string list;
  for (const auto& m : matches) list += (list.empty() ? "" : ", ") + m;
  if (count > matches.size()) list += ", ... (" + std::to_string(count) + " in all)";
  return InvalidArgument(what + " prefix '" + id_or_prefix + "' is ambiguous: " + list);
}

StatusOr<std::string> Store::ResolveRecordingId(const std::string& id_or_prefix) const {
  return impl_->ResolveKey(kRecordings, "recording", id_or_prefix);
}

StatusOr<std::string> Store::ResolveCaptureId(const std::string& id_or_prefix) const {
  return impl_->ResolveKey(kCaptures, "capture", id_or_prefix);
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
  ASSIGN_OR_RETURN(std::optional<uint64_t> newest, impl_->NewestSeq(kRrIndex, id));
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
    ASSIGN_OR_RETURN(RrChunkInfo prev,
                     impl_->GetIndex<RrChunkInfo>(rocksdb::ReadOptions(), id, info.seq - 1));
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

  std::string value;
  RETURN_IF_ERROR(impl_->Compress(raw, zstd_level, kChunkMagic, where, &value));
  info.raw_size = static_cast<uint32_t>(raw.size());
  info.stored_size = static_cast<uint32_t>(value.size() - kPayloadHeaderSize);
  info.raw_sha256 = Sha256Of(raw);
  info.chain = ComputeChunkChain(info);

  const std::string key = SeqKey(id, info.seq);
  rocksdb::WriteBatch batch;
  batch.Put(impl_->cf(kRrIndex), key, EncodeRrIndex(info));
  batch.Put(impl_->cf(kRrChunks), key, value);
  RETURN_IF_ERROR(impl_->Write(&batch, where));
  return info;
}

StatusOr<std::vector<RrChunkInfo>> Store::ListRrChunks(const std::string& recording_id) const {
  RETURN_IF_ERROR(ValidateId(recording_id));
  return impl_->DecodeAll(kRrIndex, recording_id, DecodeIndexEntry<RrChunkInfo>);
}

StatusOr<std::string> Store::ReadRrChunk(const std::string& recording_id, uint64_t seq) const {
  RETURN_IF_ERROR(ValidateId(recording_id));
  const std::string& id = recording_id;
  const std::string where = "recording " + id + " chunk " + std::to_string(seq);
  // One snapshot, so a concurrent replacement of the newest chunk is seen whole or not at all.
  ReadScope scope = impl_->Scope();
  const rocksdb::ReadOptions& ro = scope.options();
  ASSIGN_OR_RETURN(RrChunkInfo info, impl_->GetIndex<RrChunkInfo>(ro, id, seq));
  if (ComputeChunkChain(info) != info.chain) return Corruption(where + ": " + kChainMismatch);
  std::string raw;
  std::string problem;
  RETURN_IF_ERROR(impl_->LoadPayload(ro, id, info, &raw, &problem));
  if (!problem.empty()) return Corruption(where + ": " + problem);
  return raw;
}

StatusOr<Store::ChainReport> Store::VerifyRrChain(const std::string& recording_id) const {
  RETURN_IF_ERROR(ValidateId(recording_id));
  ChainReport report;
  RETURN_IF_ERROR(impl_->WalkChain<RrChunkInfo>(recording_id, nullptr, nullptr, &report));
  return report;
}

Status Store::ReadRrLog(
    const std::string& recording_id,
    const std::function<Status(const RrChunkInfo&, std::string_view)>& sink) const {
  RETURN_IF_ERROR(ValidateId(recording_id));
  std::function<Status(const RrChunkInfo&, const std::string_view&)> visit;
  if (sink) visit = [&](const RrChunkInfo& info, std::string_view raw) { return sink(info, raw); };
  ChainReport report;
  RETURN_IF_ERROR(impl_->WalkChain<RrChunkInfo>(recording_id, nullptr, visit, &report));
  if (report.first_bad) return Corruption(report.problem);
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
  return impl_->PutTimed(kEvents, id, EventTime(wall_ns), wall_ns, value, "recording " + id);
}

StatusOr<std::vector<StoredEvent>> Store::ListEvents(const std::string& recording_id) const {
  RETURN_IF_ERROR(ValidateId(recording_id));
  return impl_->DecodeAll(kEvents, recording_id, DecodeEvent);
}

// ---- switch captures ----

namespace {

StatusOr<nlohmann::json> ParseCapture(std::string_view key, std::string_view value) {
  const std::string what = "capture '" + Printable(key) + "'";
  ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(value, kMaxCaptureJsonSize, what));
  if (!j.is_object()) return Corruption(what + ": stored metadata is not a JSON object");
  return j;
}

}  // namespace

Status Store::PutCapture(const std::string& capture_id, const nlohmann::json& meta) {
  RETURN_IF_ERROR(impl_->CheckWritable());
  RETURN_IF_ERROR(ValidateId(capture_id, "capture id"));
  if (!meta.is_object()) {
    return InvalidArgument("capture " + capture_id + ": metadata must be a JSON object");
  }
  std::string value = DumpJson(meta);
  if (value.size() > kMaxCaptureJsonSize) {
    return ResourceExhausted("capture " + capture_id + ": metadata is " +
                             std::to_string(value.size()) + " bytes, above the cap of " +
                             std::to_string(kMaxCaptureJsonSize));
  }
  rocksdb::WriteBatch batch;
  batch.Put(impl_->cf(kCaptures), capture_id, value);
  return impl_->Write(&batch, "capture " + capture_id);
}

StatusOr<nlohmann::json> Store::GetCapture(const std::string& capture_id) const {
  RETURN_IF_ERROR(ValidateId(capture_id, "capture id"));
  std::string value;
  rocksdb::Status s = impl_->Get(rocksdb::ReadOptions(), kCaptures, capture_id, &value);
  if (s.IsNotFound()) return NotFound("no capture '" + capture_id + "'");
  if (!s.ok()) return FromRocks(s, "capture " + capture_id);
  return ParseCapture(capture_id, value);
}

StatusOr<std::vector<std::pair<std::string, nlohmann::json>>> Store::ListCaptures() const {
  std::vector<std::pair<std::string, nlohmann::json>> out;
  std::unique_ptr<rocksdb::Iterator> it = impl_->NewIterator(rocksdb::ReadOptions(), kCaptures);
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    ASSIGN_OR_RETURN(nlohmann::json meta, ParseCapture(View(it->key()), View(it->value())));
    out.emplace_back(it->key().ToString(), std::move(meta));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "listing captures");
  return out;
}

Status FrameBatchEncoder::Add(int64_t wall_ns, uint32_t ingress, std::span<const uint32_t> egress,
                              std::string_view drop_reason, std::span<const uint8_t> bytes) {
  if (bytes.size() > kMaxFrameSize) {
    return InvalidArgument("a frame of " + std::to_string(bytes.size()) +
                           " bytes is above the cap of " + std::to_string(kMaxFrameSize));
  }
  if (egress.size() > kMaxEgressPorts) {
    return InvalidArgument("a frame with " + std::to_string(egress.size()) +
                           " egress ports is above the cap of " + std::to_string(kMaxEgressPorts));
  }
  const std::string_view reason = CutUtf8(drop_reason, kMaxDropReasonSize);
  PutBE64(&raw_, static_cast<uint64_t>(wall_ns));
  PutBE32(&raw_, ingress);
  PutBE16(&raw_, static_cast<uint16_t>(egress.size()));
  for (uint32_t port : egress) PutBE32(&raw_, port);
  raw_.push_back(static_cast<char>(reason.size()));
  raw_.append(reason);
  PutBE32(&raw_, static_cast<uint32_t>(bytes.size()));
  raw_.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());

  first_wall_ns_ = std::min(first_wall_ns_, wall_ns);
  last_wall_ns_ = std::max(last_wall_ns_, wall_ns);
  ++frame_count_;
  if (!reason.empty()) ++dropped_count_;
  AddPort(ingress);
  for (uint32_t port : egress) AddPort(port);
  return Status::Ok();
}

Status FrameBatchEncoder::Add(const CapturedFrame& f) {
  return Add(f.wall_ns, f.ingress, f.egress, f.drop_reason,
             std::span(reinterpret_cast<const uint8_t*>(f.bytes.data()), f.bytes.size()));
}

void FrameBatchEncoder::AddPort(uint32_t port) {
  // Batches see a handful of ports: the common case is a hit near the front.
  auto it = std::lower_bound(ports_.begin(), ports_.end(), port);
  if (it == ports_.end() || *it != port) ports_.insert(it, port);
}

void FrameBatchEncoder::Append(const FrameBatchEncoder& other) {
  if (other.empty()) return;
  raw_ += other.raw_;
  first_wall_ns_ = std::min(first_wall_ns_, other.first_wall_ns_);
  last_wall_ns_ = std::max(last_wall_ns_, other.last_wall_ns_);
  frame_count_ += other.frame_count_;
  dropped_count_ += other.dropped_count_;
  for (uint32_t port : other.ports_) AddPort(port);
}

void FrameBatchEncoder::Clear() {
  raw_.clear();
  first_wall_ns_ = std::numeric_limits<int64_t>::max();
  last_wall_ns_ = std::numeric_limits<int64_t>::min();
  frame_count_ = 0;
  dropped_count_ = 0;
  ports_.clear();
}

FrameBatchInfo FrameBatchEncoder::Summary() const {
  FrameBatchInfo s;
  if (empty()) return s;
  s.first_wall_ns = first_wall_ns_;
  s.last_wall_ns = last_wall_ns_;
  s.frame_count = frame_count_;
  s.dropped_count = dropped_count_;
  s.ports = ports_;
  return s;
}

StatusOr<FrameBatchInfo> Store::AppendFrameBatch(const std::string& capture_id,
                                                 std::span<const CapturedFrame> frames,
                                                 int zstd_level) {
  FrameBatchEncoder batch;
  for (size_t k = 0; k < frames.size(); ++k) {
    Status s = batch.Add(frames[k]);
    if (!s.ok()) {
      return s.WithContext("capture " + capture_id + ": frame " + std::to_string(k));
    }
  }
  return AppendFrameBatch(capture_id, batch, zstd_level);
}

StatusOr<FrameBatchInfo> Store::AppendFrameBatch(const std::string& capture_id,
                                                 const FrameBatchEncoder& batch,
                                                 int zstd_level) {
  RETURN_IF_ERROR(impl_->CheckWritable());
  RETURN_IF_ERROR(ValidateId(capture_id, "capture id"));
  const std::string& id = capture_id;
  if (batch.empty()) return InvalidArgument("capture " + id + ": a frame batch cannot be empty");
  const std::string& raw = batch.raw();
  if (raw.size() > kMaxBatchRawSize) {
    return InvalidArgument("capture " + id + ": frame batch encodes to " +
                           std::to_string(raw.size()) + " bytes, above the cap of " +
                           std::to_string(kMaxBatchRawSize));
  }
  FrameBatchInfo info = batch.Summary();
  if (info.ports.size() > kMaxBatchPorts) {
    return InvalidArgument("capture " + id + ": frame batch uses " +
                           std::to_string(info.ports.size()) +
                           " distinct ports, above the cap of " + std::to_string(kMaxBatchPorts));
  }

  std::unique_lock<std::mutex> lock;
  ASSIGN_OR_RETURN(Impl::CaptureHead * head, impl_->LockHead(id, &lock));
  info.seq = head->next_seq;
  info.prev_chain = head->chain;
  const std::string where = ItemName<FrameBatchInfo>(id, info.seq);
  std::string value;
  RETURN_IF_ERROR(impl_->Compress(raw, zstd_level, kFrameBatchMagic, where, &value));
  info.raw_size = static_cast<uint32_t>(raw.size());
  info.stored_size = static_cast<uint32_t>(value.size() - kPayloadHeaderSize);
  info.raw_sha256 = Sha256Of(raw);
  info.chain = ComputeFrameBatchChain(info);

  const std::string key = SeqKey(id, info.seq);
  rocksdb::WriteBatch wb;
  wb.Put(impl_->cf(kFrameIndex), key, EncodeFrameIndex(info));
  wb.Put(impl_->cf(kFrames), key, value);
  RETURN_IF_ERROR(impl_->Write(&wb, where));
  head->next_seq = info.seq + 1;
  head->chain = info.chain;
  return info;
}

StatusOr<std::vector<FrameBatchInfo>> Store::ListFrameBatches(const std::string& capture_id) const {
  RETURN_IF_ERROR(ValidateId(capture_id, "capture id"));
  return impl_->DecodeAll(kFrameIndex, capture_id, DecodeIndexEntry<FrameBatchInfo>);
}

Status Store::ReadFrames(const std::string& capture_id, const FrameQuery& query,
                         const std::function<Status(const CapturedFrame&)>& sink) const {
  RETURN_IF_ERROR(ValidateId(capture_id, "capture id"));
  std::vector<uint32_t> ports = query.ports;
  std::sort(ports.begin(), ports.end());
  ports.erase(std::unique(ports.begin(), ports.end()), ports.end());
  auto listed = [&](uint32_t port) { return std::binary_search(ports.begin(), ports.end(), port); };

  auto want = [&](const FrameBatchInfo& b) {
    if (b.last_wall_ns < query.since_ns || b.first_wall_ns > query.until_ns) return false;
    return ports.empty() || std::any_of(b.ports.begin(), b.ports.end(), listed);
  };
  auto visit = [&](const FrameBatchInfo&, const std::vector<CapturedFrame>& frames) -> Status {
    for (const CapturedFrame& f : frames) {
      if (f.wall_ns < query.since_ns || f.wall_ns > query.until_ns) continue;
      if (!ports.empty() && !listed(f.ingress) &&
          std::none_of(f.egress.begin(), f.egress.end(), listed)) {
        continue;
      }
      RETURN_IF_ERROR(sink(f));
    }
    return Status::Ok();
  };
  ChainReport report;
  RETURN_IF_ERROR(impl_->WalkChain<FrameBatchInfo>(capture_id, want, visit, &report));
  if (report.first_bad) return Corruption(report.problem);
  return Status::Ok();
}

StatusOr<Store::ChainReport> Store::VerifyFrameChain(const std::string& capture_id) const {
  RETURN_IF_ERROR(ValidateId(capture_id, "capture id"));
  ChainReport report;
  RETURN_IF_ERROR(impl_->WalkChain<FrameBatchInfo>(capture_id, nullptr, nullptr, &report));
  return report;
}

Status Store::PutFlow(const std::string& capture_id, const nlohmann::json& flow) {
  RETURN_IF_ERROR(impl_->CheckWritable());
  RETURN_IF_ERROR(ValidateId(capture_id, "capture id"));
  const std::string& id = capture_id;
  StatusOr<std::pair<int64_t, int64_t>> times = FlowTimes(flow);
  if (!times.ok()) return times.status().WithContext("capture " + id);
  std::string value;
  value.push_back(static_cast<char>(kFlowVersion));
  PutBE64(&value, static_cast<uint64_t>(times->first));
  value += DumpJson(flow);
  if (value.size() - kFlowHeaderSize > kMaxFlowSize) {
    return ResourceExhausted("capture " + id + ": flow of " +
                             std::to_string(value.size() - kFlowHeaderSize) +
                             " bytes, above the cap of " + std::to_string(kMaxFlowSize));
  }
  return impl_->PutTimed(kFlows, id, FlowTime(times->second), times->second, value,
                         "capture " + id);
}

StatusOr<std::vector<nlohmann::json>> Store::ListFlows(const std::string& capture_id,
                                                       int64_t since_ns, int64_t until_ns) const {
  RETURN_IF_ERROR(ValidateId(capture_id, "capture id"));
  const std::string& id = capture_id;
  std::vector<nlohmann::json> out;
  // Keys are ordered by end time, so the scan starts at the first flow ending at since_ns;
  // start times are not ordered, so it goes on to the last flow.
  std::string from;
  PutBE64(&from, FlowTime(since_ns));
  RETURN_IF_ERROR(impl_->ForEachKeyOf(
      rocksdb::ReadOptions(), kFlows, id,
      [&](rocksdb::Slice key_suffix, rocksdb::Slice value) -> Status {
        ASSIGN_OR_RETURN(StoredFlow f, SplitFlow(id, key_suffix, value));
        if (f.start_wall_ns > until_ns) return Status::Ok();
        ASSIGN_OR_RETURN(nlohmann::json j, ParseFlow(id, key_suffix, f));
        out.push_back(std::move(j));
        return Status::Ok();
      },
      from));
  return out;
}

// ---- alerts ----

StatusOr<std::string> Store::PutAlert(int64_t wall_ns, const nlohmann::json& body) {
  RETURN_IF_ERROR(impl_->CheckWritable());
  if (wall_ns < 0) {
    return InvalidArgument("alert time " + std::to_string(wall_ns) + " is negative");
  }
  RETURN_IF_ERROR(CheckAlertBody(body));
  std::string value;
  value.push_back(static_cast<char>(kAlertVersion));
  value += DumpJson(body);
  if (value.size() - kAlertHeaderSize > kMaxAlertSize) {
    return ResourceExhausted("alert of " + std::to_string(value.size() - kAlertHeaderSize) +
                             " bytes, above the cap of " + std::to_string(kMaxAlertSize));
  }
  const std::string where = "alert at " + std::to_string(wall_ns);
  ASSIGN_OR_RETURN(uint32_t seq,
                   impl_->PutTimedKey(kAlerts, "", EventTime(wall_ns), wall_ns, value, where));
  return AlertId(wall_ns, seq);
}

StatusOr<std::vector<StoredAlert>> Store::ListAlerts(int64_t since_ns, int64_t until_ns,
                                                     size_t limit) const {
  std::vector<StoredAlert> out;
  // Stored times are never negative.
  since_ns = std::max<int64_t>(since_ns, 0);
  if (until_ns < since_ns) return out;
  std::unique_ptr<rocksdb::Iterator> it = impl_->NewIterator(rocksdb::ReadOptions(), kAlerts);
  for (it->Seek(AlertKey(since_ns, 0)); it->Valid(); it->Next()) {
    if (limit != 0 && out.size() == limit) break;
    // Keys order by time first; a malformed key shorter than a time is reported by DecodeAlert.
    if (it->key().size() >= 8 && GetBE64(it->key().data()) > EventTime(until_ns)) break;
    ASSIGN_OR_RETURN(StoredAlert a, DecodeAlert(it->key(), it->value()));
    out.push_back(std::move(a));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "listing alerts");
  return out;
}

StatusOr<StoredAlert> Store::GetAlert(const std::string& alert_id) const {
  int64_t wall_ns = 0;
  uint32_t seq = 0;
  if (!ParseAlertId(alert_id, &wall_ns, &seq)) {
    return InvalidArgument("malformed alert id '" + Printable(alert_id) +
                           "' (expected <wall_ns>-<seq>)");
  }
  const std::string key = AlertKey(wall_ns, seq);
  std::string value;
  rocksdb::Status s = impl_->Get(rocksdb::ReadOptions(), kAlerts, key, &value);
  if (s.IsNotFound()) return NotFound("no alert '" + alert_id + "'");
  if (!s.ok()) return FromRocks(s, "alert " + alert_id);
  return DecodeAlert(key, value);
}

// ---- secondary ----

Status Store::CatchUp() {
  if (!impl_->secondary) {
    return FailedPrecondition("store " + impl_->options.path +
                              " is not open as a secondary (StoreOptions::secondary_path): "
                              "there is nothing to catch up with");
  }
  std::unique_lock<std::shared_mutex> lock(impl_->catchup_mu);
  rocksdb::Status s = impl_->db->TryCatchUpWithPrimary();
  if (!s.ok()) {
    return FromRocks(s, "store " + impl_->options.path + ": catching up with the writer");
  }
  return Status::Ok();
}

// ---- maintenance ----

Status Store::Flush() {
  if (impl_->options.read_only) return Status::Ok();  // nothing of ours in the memtables
  rocksdb::FlushOptions fo;
  fo.wait = true;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs;
  for (int c = 0; c < kNumCfs; ++c) {
    if (impl_->cf(static_cast<Cf>(c)) != nullptr) cfs.push_back(impl_->cf(static_cast<Cf>(c)));
  }
  rocksdb::Status s = impl_->db->Flush(fo, cfs);
  if (!s.ok()) return FromRocks(s, "flushing store " + impl_->options.path);
  return Status::Ok();
}

StatusOr<Store::Usage> Store::GetUsage(const std::string& recording_id) const {
  RETURN_IF_ERROR(ValidateId(recording_id));
  const std::string& id = recording_id;
  ReadScope scope = impl_->Scope();
  const rocksdb::ReadOptions& ro = scope.options();
  Usage u;
  RETURN_IF_ERROR(impl_->ForEachKeyOf(
      ro, kRrIndex, id, [&](rocksdb::Slice key_suffix, rocksdb::Slice value) -> Status {
        RrChunkInfo info;
        std::string problem = DecodeRrIndex(View(value), &info);
        if (!problem.empty()) {
          return Corruption("recording " + id + " rr index key " + KeyHex(id, key_suffix) + ": " +
                            problem);
        }
        u.rr_raw_bytes += info.raw_size;
        u.rr_stored_bytes += info.stored_size;
        return Status::Ok();
      }));
  RETURN_IF_ERROR(
      impl_->ForEachKeyOf(ro, kConsole, id, [&](rocksdb::Slice, rocksdb::Slice value) -> Status {
        size_t n = value.size();
        u.console_bytes += n > kConsoleHeaderSize ? n - kConsoleHeaderSize : 0;
        return Status::Ok();
      }));
  RETURN_IF_ERROR(
      impl_->ForEachKeyOf(ro, kEvents, id, [&](rocksdb::Slice, rocksdb::Slice) -> Status {
        u.events++;
        return Status::Ok();
      }));
  return u;
}

}  // namespace blackbox
