// Blackbox store: the only module that knows RocksDB.
//
// A Store is one RocksDB database holding, per recording:
//   - the recording's metadata (RecordingInfo, JSON),
//   - the QEMU record/replay log as a chain of zstd-compressed chunks, each
//     cut at an event boundary, with an index entry (byte range, guest icount
//     range, wall-time range, hashes),
//   - the serial console as timestamped pieces,
//   - events (QMP events and recorder lifecycle) as timestamped JSON;
// and per switch capture:
//   - the capture's metadata (JSON owned by the caller),
//   - the frames the switch handled, as a chain of zstd-compressed batches,
//     each with an index entry (wall-time range, ports, counts, hashes),
//   - flow records (JSON from the flow table), ordered by end time;
// and alerts (deviations from a VM's manifest, docs/manifest.md), ordered by
// time, for every VM.
// Key encoding and value formats are documented in docs/store-format.md.
//
// This stays one header: callers include one contract, whatever column families they use. The
// implementation is split by column family: store.cc (Open, CatchUp, Flush, GetUsage),
// recordings.cc (recordings, rr chunks, console, events), captures.cc (switch captures,
// frame batches, flows) and alerts.cc, over two headers internal to store/: store_encoding.h
// (keys and encodings, defined in store_encoding.cc) and store_impl.h (Store::Impl and the
// hash-chained-log code rr chunks and frame batches share).
//
// Durability: every write goes through RocksDB's write-ahead log. With
// StoreOptions::sync_writes == false (the default) a write that returned OK
// survives a crash of the writing process (kill -9), but not a power loss
// or kernel crash. With sync_writes == true each write is fsync'ed first.
//
// Thread safety: a Store may be used from several threads at once.
// Only one process may open a Store for writing at a time (RocksDB's LOCK);
// others may open it read-only (StoreOptions::read_only) and see the state
// as of their Open, or as a secondary (StoreOptions::secondary_path) that
// follows the writer with CatchUp().
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/hash.h"
#include "common/status.h"

namespace blackbox {

struct StoreOptions {
  // Directory of the RocksDB database.
  std::string path;
  // Create the database (and its column families) when it does not exist.
  // Default: true.
  bool create_if_missing = true;
  // Open read-only (no LOCK taken; sees the state as of Open).
  // Default: false.
  bool read_only = false;
  // Non-empty: open as a read-only secondary of a store another process is
  // writing (RocksDB's secondary instance), keeping its own small state in
  // this directory (created if missing). Unlike read_only it can follow the
  // writer: CatchUp() makes later writes visible. Implies read_only.
  // Default: "" (not a secondary).
  std::string secondary_path;
  // fsync the WAL before each write returns (survives power loss).
  // Default: false (survives process crashes only).
  bool sync_writes = false;
  // zstd level used for rr chunks and frame batches.
  // Default: 3.
  int zstd_level = 3;
};

// Where one rr-log chunk sits in the log and in time. Written by the recorder
// through AppendRrChunk; every field is covered by the chunk's chain hash.
struct RrChunkInfo {
  uint64_t seq = 0;            // 0, 1, 2, ... without gaps
  uint64_t raw_offset = 0;     // offset of the chunk's first byte in the log file
  uint32_t raw_size = 0;       // bytes of log in the chunk (uncompressed)
  uint32_t stored_size = 0;    // bytes of compressed payload
  uint64_t first_icount = 0;   // guest icount before the chunk's first event
  uint64_t last_icount = 0;    // guest icount after the chunk's last event
  int64_t first_wall_ns = 0;   // wall time the first byte was read from QEMU
  int64_t last_wall_ns = 0;    // wall time the last byte was read from QEMU
  uint32_t event_count = 0;    // events in the chunk
  uint32_t console_bytes = 0;  // bytes the guest wrote to serial in this chunk (CHAR_WRITE sums)
  Sha256Digest raw_sha256{};   // of the uncompressed bytes
  Sha256Digest prev_chain{};   // chain hash of chunk seq-1 (all zero for seq 0)
  Sha256Digest chain{};        // SHA-256 over prev_chain and every field above
};

// Computes RrChunkInfo::chain from the other fields.
Sha256Digest ComputeChunkChain(const RrChunkInfo& info);

struct ConsolePiece {
  uint64_t offset = 0;  // offset of bytes[0] in the console stream
  int64_t wall_ns = 0;  // when the recorder read it
  std::string bytes;
};

struct StoredEvent {
  int64_t wall_ns = 0;
  uint32_t seq = 0;     // tie-breaker for events with the same wall time
  nlohmann::json body;  // {"kind": "...", ...}
};

// One frame the switch handled.
struct CapturedFrame {
  int64_t wall_ns = 0;           // when the switch read it (ns since the Unix epoch)
  uint32_t ingress = 0;          // switch port id it came in on
  std::vector<uint32_t> egress;  // ports it was forwarded to, ascending; empty when dropped
                                 // (stored as given, at most 65535 entries)
  std::string drop_reason;       // "" when forwarded, else one line saying why; stored cut to at
                                 // most 255 bytes (at a UTF-8 character boundary)
  std::string bytes;             // the whole Ethernet frame, at most 256 KiB
};

// Index entry of one zstd-compressed batch of frames. Batches of a capture are
// numbered 0, 1, 2, ... and hash-chained like rr chunks. Computed by
// AppendFrameBatch; every field but stored_size is covered by the chain hash.
struct FrameBatchInfo {
  uint64_t seq = 0;
  int64_t first_wall_ns = 0;  // min wall_ns in the batch
  int64_t last_wall_ns = 0;   // max wall_ns in the batch
  uint32_t frame_count = 0;
  uint32_t dropped_count = 0;   // frames with a drop_reason
  uint32_t raw_size = 0;        // encoded batch bytes before compression
  uint32_t stored_size = 0;     // compressed bytes
  std::vector<uint32_t> ports;  // every port id appearing as ingress or egress, ascending, unique
  Sha256Digest raw_sha256{};    // of the encoded batch
  Sha256Digest prev_chain{};    // chain hash of batch seq-1 (all zero for seq 0)
  Sha256Digest chain{};         // SHA-256 over prev_chain and every field above but stored_size
};

// Builds one frame batch in its stored layout (docs/store-format.md,
// "frames") a frame at a time, keeping the batch summary as it goes, so a
// capture needs no CapturedFrame (and no allocation) per frame. Clear() keeps
// the buffer's capacity for the next batch.
class FrameBatchEncoder {
 public:
  // Appends one frame. InvalidArgument, and nothing added, for a frame over
  // 256 KiB or more than 65535 egress ports. egress is stored as given; the
  // drop reason ("" when forwarded) is cut like CapturedFrame::drop_reason.
  Status Add(int64_t wall_ns, uint32_t ingress, std::span<const uint32_t> egress,
             std::string_view drop_reason, std::span<const uint8_t> bytes);
  Status Add(const CapturedFrame& frame);
  // Appends every frame of `other`, in order.
  void Append(const FrameBatchEncoder& other);
  void Clear();

  bool empty() const { return frame_count_ == 0; }
  uint32_t frame_count() const { return frame_count_; }
  // The encoded frames; the last added frame's bytes are its last bytes.
  const std::string& raw() const { return raw_; }
  // first/last_wall_ns, frame_count, dropped_count and ports; the rest is left
  // to Store::AppendFrameBatch.
  FrameBatchInfo Summary() const;

 private:
  void AddPort(uint32_t port);

  std::string raw_;
  int64_t first_wall_ns_ = std::numeric_limits<int64_t>::max();
  int64_t last_wall_ns_ = std::numeric_limits<int64_t>::min();
  uint32_t frame_count_ = 0;
  uint32_t dropped_count_ = 0;
  std::vector<uint32_t> ports_;  // ascending, unique
};

// Computes FrameBatchInfo::chain from the other fields.
Sha256Digest ComputeFrameBatchChain(const FrameBatchInfo& info);

// Which frames Store::ReadFrames passes on.
struct FrameQuery {
  int64_t since_ns = std::numeric_limits<int64_t>::min();  // inclusive
  int64_t until_ns = std::numeric_limits<int64_t>::max();  // inclusive
  std::vector<uint32_t> ports;  // empty: all; else a frame matches if its ingress or any egress
                                // port is listed
};

// One stored alert.
struct StoredAlert {
  std::string id;  // "<wall_ns>-<seq>": unique, sorts like the time
  int64_t wall_ns = 0;
  nlohmann::json body;  // {"vm": ..., "kind": ..., ...} as given to PutAlert
};

// Metadata of one recording. Stored as JSON; unknown fields are preserved in
// `extra` so older binaries do not drop what newer ones wrote.
struct RecordingInfo {
  std::string id;
  std::string vm_name;
  std::string state;  // "recording", "complete", "interrupted"
  int64_t started_wall_ns = 0;
  int64_t ended_wall_ns = 0;                        // 0 while recording
  nlohmann::json extra = nlohmann::json::object();  // spec, inputs, overlays, snapshots, stats ...

  nlohmann::json ToJson() const;
  static StatusOr<RecordingInfo> FromJson(const nlohmann::json& j);
};

class Store {
 public:
  // Opens (and, if allowed, creates) the store at options.path.
  // Errors: IOError if RocksDB cannot open it (e.g. another writer holds the
  // LOCK: the message says so), Corruption if the schema version is unknown.
  static StatusOr<std::unique_ptr<Store>> Open(const StoreOptions& options);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // ---- recordings ----
  // Inserts or replaces the metadata of info.id.
  Status PutRecording(const RecordingInfo& info);
  // NotFound names the id.
  StatusOr<RecordingInfo> GetRecording(const std::string& id) const;
  // All recordings, oldest first.
  StatusOr<std::vector<RecordingInfo>> ListRecordings() const;
  // Resolves a full id or a unique prefix of one. NotFound / InvalidArgument
  // ("ambiguous: a, b") otherwise.
  StatusOr<std::string> ResolveRecordingId(const std::string& id_or_prefix) const;
  // The same for capture ids.
  StatusOr<std::string> ResolveCaptureId(const std::string& id_or_prefix) const;

  // ---- rr log chunks ----
  // Compresses `raw` with zstd, fills in raw_size, stored_size, raw_sha256 and
  // chain of `info` (the caller sets seq, raw_offset, icount/wall ranges,
  // event_count, console_bytes and prev_chain), and writes index entry and
  // payload atomically. Writing an existing seq again replaces it (the
  // recorder grows its newest chunk in place until it is sealed).
  // Returns the completed info.
  // Refuses what would break the chain: FailedPrecondition unless seq is 0 on an
  // empty recording, the newest seq (replace) or newest + 1; InvalidArgument unless
  // prev_chain and raw_offset continue chunk seq-1 (zero prev_chain for seq 0);
  // ResourceExhausted above 64 MiB of raw.
  // `zstd_level` 0 uses StoreOptions::zstd_level; the recorder compresses a
  // chunk it will rewrite soon fast and the sealed chunk hard.
  StatusOr<RrChunkInfo> AppendRrChunk(const std::string& recording_id, RrChunkInfo info,
                                      std::string_view raw, int zstd_level = 0);
  // Index entries of a recording, by seq. Reads no payloads.
  StatusOr<std::vector<RrChunkInfo>> ListRrChunks(const std::string& recording_id) const;
  // Reads, decompresses and checks one chunk: raw_sha256 and the chain hash
  // recomputed from the index entry. Corruption names the recording and seq.
  StatusOr<std::string> ReadRrChunk(const std::string& recording_id, uint64_t seq) const;

  struct ChainReport {
    uint64_t chunks = 0;
    uint64_t raw_bytes = 0;
    Sha256Digest head{};                // chain hash of the last chunk
    std::optional<uint64_t> first_bad;  // seq of the first chunk that fails
    std::string problem;                // what failed there, one line
  };
  // Walks every chunk in order: payload decompresses, raw_sha256 matches,
  // prev_chain equals the previous chunk's chain, chain recomputes, seq and
  // raw_offset are contiguous. Stops at the first failure and reports it
  // (a failure is a report, not an error Status; errors are for I/O).
  StatusOr<ChainReport> VerifyRrChain(const std::string& recording_id) const;

  // Streams the verified raw log bytes of all chunks in order to `sink`
  // (which may return an error to stop). Fails with Corruption at the first
  // bad chunk, naming it.
  Status ReadRrLog(const std::string& recording_id,
                   const std::function<Status(const RrChunkInfo&, std::string_view)>& sink) const;

  // ---- console ----
  Status AppendConsole(const std::string& recording_id, const ConsolePiece& piece);
  StatusOr<std::vector<ConsolePiece>> ReadConsole(const std::string& recording_id) const;

  // ---- events ----
  // Stores body (an object with at least "kind") at wall_ns; seq is assigned.
  // InvalidArgument for a negative wall_ns or a body without a string "kind".
  // The id need not name a stored recording: a capture id works the same way
  // (events of a recording and a capture with the same id share one list).
  Status PutEvent(const std::string& recording_id, int64_t wall_ns, const nlohmann::json& body);
  StatusOr<std::vector<StoredEvent>> ListEvents(const std::string& recording_id) const;

  // ---- switch captures ----
  // A capture is everything one switch run saw (one `blackbox record` of a lab).
  // Capture ids follow the rules of recording ids (1 to 128 of [A-Za-z0-9._-];
  // InvalidArgument otherwise) and live in their own namespace, except for events.

  // Inserts or replaces the metadata of a capture: a JSON object (ports, VMs,
  // recordings, state...) owned by the caller. InvalidArgument if meta is not an
  // object; ResourceExhausted above 16 MiB serialised.
  Status PutCapture(const std::string& capture_id, const nlohmann::json& meta);
  // NotFound names the id.
  StatusOr<nlohmann::json> GetCapture(const std::string& capture_id) const;
  // All captures with their metadata, ordered by id.
  StatusOr<std::vector<std::pair<std::string, nlohmann::json>>> ListCaptures() const;

  // Appends the next batch (seq = number of batches so far): encodes `frames` in
  // the order given, compresses with zstd (`zstd_level` 0 uses
  // StoreOptions::zstd_level), computes the summary, hashes and chain, and writes
  // index entry and payload atomically (one WriteBatch). Returns the index entry.
  // InvalidArgument for an empty span, a frame over 256 KiB, more than 65535
  // egress ports on a frame, more than 4096 distinct ports in the batch, more
  // than 64 MiB of encoded batch, or a zstd level out of range. Corruption if the
  // newest stored index entry (read once per capture, then cached) is bad.
  // Meant for one writer thread per capture; concurrent calls for one capture
  // are serialised, calls for different captures run in parallel.
  StatusOr<FrameBatchInfo> AppendFrameBatch(const std::string& capture_id,
                                            std::span<const CapturedFrame> frames,
                                            int zstd_level = 0);
  // The same for a batch built with FrameBatchEncoder (no copy of its frames).
  StatusOr<FrameBatchInfo> AppendFrameBatch(const std::string& capture_id,
                                            const FrameBatchEncoder& batch, int zstd_level = 0);
  // Index entries of a capture, by seq. Reads no payloads.
  StatusOr<std::vector<FrameBatchInfo>> ListFrameBatches(const std::string& capture_id) const;
  // Calls sink for every frame matching the query, in stored order (batch by
  // batch, each in the order it was appended). Only batches whose
  // [first_wall_ns, last_wall_ns] overlaps the range and whose ports intersect
  // the query's ports are read and decompressed. Every index entry is checked
  // like VerifyFrameChain does (so a removed batch is noticed even outside the
  // range); each batch read is checked fully (decompresses, raw_sha256, frames
  // decode and agree with the index summary). Corruption names the capture and
  // batch seq; sink may have been called for earlier frames. sink may return an
  // error to stop; that error is returned. An unknown capture has no frames.
  Status ReadFrames(const std::string& capture_id, const FrameQuery& query,
                    const std::function<Status(const CapturedFrame&)>& sink) const;
  // Walks every batch like VerifyRrChain (chunks = batches): index entries,
  // chain, payloads, and the frames decoded against the index summary.
  StatusOr<ChainReport> VerifyFrameChain(const std::string& capture_id) const;

  // Flow records: JSON objects produced by the flow table with at least the
  // integers "start_wall_ns" and "end_wall_ns" (InvalidArgument otherwise;
  // ResourceExhausted above 1 MiB serialised). Stored as given.
  Status PutFlow(const std::string& capture_id, const nlohmann::json& flow);
  // Flows with end_wall_ns >= since_ns and start_wall_ns <= until_ns, ordered by
  // end_wall_ns, then by insertion.
  StatusOr<std::vector<nlohmann::json>> ListFlows(
      const std::string& capture_id, int64_t since_ns = std::numeric_limits<int64_t>::min(),
      int64_t until_ns = std::numeric_limits<int64_t>::max()) const;

  // ---- alerts ----
  // Stores an alert at wall_ns (>= 0) and returns its id. `body` must be an
  // object with string "vm" and "kind" (InvalidArgument otherwise);
  // ResourceExhausted above 1 MiB serialised. Alerts at the same wall_ns keep
  // insertion order.
  StatusOr<std::string> PutAlert(int64_t wall_ns, const nlohmann::json& body);
  // Alerts with since_ns <= wall_ns <= until_ns, oldest first; at most `limit`
  // of them (0: no limit), the oldest ones.
  StatusOr<std::vector<StoredAlert>> ListAlerts(
      int64_t since_ns = std::numeric_limits<int64_t>::min(),
      int64_t until_ns = std::numeric_limits<int64_t>::max(), size_t limit = 0) const;
  // NotFound names the id; InvalidArgument for a malformed id.
  StatusOr<StoredAlert> GetAlert(const std::string& alert_id) const;

  // Secondary stores only (StoreOptions::secondary_path): catches up with
  // what the writer has written since Open or the last CatchUp.
  // FailedPrecondition on a store that is not a secondary.
  Status CatchUp();

  // Flushes memtables to SST files (used before measuring stored size).
  Status Flush();
  // Approximate bytes on disk used by a recording's rr chunks (sum of
  // stored_size) and by everything else of it.
  struct Usage {
    uint64_t rr_raw_bytes = 0;
    uint64_t rr_stored_bytes = 0;
    uint64_t console_bytes = 0;
    uint64_t events = 0;
  };
  StatusOr<Usage> GetUsage(const std::string& recording_id) const;

 private:
  struct Impl;
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace blackbox
