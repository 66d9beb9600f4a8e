// The switch captures' column families: captures (metadata JSON), frame_index and frames
// (the frames as a hash chain of batches; the chain code shared with rr chunks is in
// store_impl.h), and flows.
#include <rocksdb/slice.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <utility>

#include "store/store.h"
#include "store/store_impl.h"

namespace blackbox {
namespace {

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

// The first n bytes of s or fewer, cut at a UTF-8 character boundary (unless s has no boundary
// there at all, as in invalid UTF-8).
std::string_view CutUtf8(std::string_view s, size_t n) {
  if (s.size() <= n) return s;
  size_t cut = n;
  while (cut > 0 && (static_cast<uint8_t>(s[cut]) & 0xc0) == 0x80) --cut;
  return s.substr(0, cut > 0 ? cut : n);
}

// ---- flows ----

// Like DecodeIndexEntry (store_impl.h), SplitFlow and ParseFlow take a key of capture `id`
// without KeyPrefix(id).

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

}  // namespace

namespace store_internal {

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

}  // namespace store_internal

// ---- chain ----

Sha256Digest ComputeFrameBatchChain(const FrameBatchInfo& info) {
  std::string buf;
  buf.reserve(32 + 40 + 4 * info.ports.size() + 32);
  PutDigest(&buf, info.prev_chain);
  AppendFrameChainFields(&buf, info);
  return Sha256Of(buf);
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

StatusOr<std::string> Store::ResolveCaptureId(const std::string& id_or_prefix) const {
  return impl_->ResolveKey(kCaptures, "capture", id_or_prefix);
}

// ---- frame batches ----

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

// The head of capture `id`'s frame chain, loaded from its newest index entry on first use.
// Returned locked by *lock.
StatusOr<Store::Impl::CaptureHead*> Store::Impl::LockHead(const std::string& id,
                                                          std::unique_lock<std::mutex>* lock) {
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
                                                 const FrameBatchEncoder& batch, int zstd_level) {
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

// ---- flows ----

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

}  // namespace blackbox
