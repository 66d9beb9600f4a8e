// The recordings' column families: recordings (RecordingInfo JSON), rr_index and rr_chunks
// (the rr log as a hash chain of chunks; the chain code shared with frame batches is in
// store_impl.h), console and events.
#include <rocksdb/slice.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <optional>

#include "store/store.h"
#include "store/store_impl.h"

namespace blackbox {
namespace {

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

}  // namespace

namespace store_internal {

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

}  // namespace store_internal

namespace {

// ---- console and events ----

// Like DecodeIndexEntry (store_impl.h), these take a key of recording `id` without
// KeyPrefix(id) and its value.

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
  return impl_->ResolveKey(kRecordings, "recording", id_or_prefix);
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

}  // namespace blackbox
