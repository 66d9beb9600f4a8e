// Cuts the rr log QEMU is writing into chunks at event boundaries and writes
// them to the store as it goes.
//
// The newest chunk is "open": it grows as QEMU writes and is re-written in
// the store (same seq) at most every persist_interval, so a crash loses at
// most that much. It is sealed when it reaches max_chunk_raw_bytes or
// max_chunk_age; a sealed chunk is never written again and the next chunk
// chains to it. Large chunks compress far better (the idle guest's log is
// mostly repeated clock and checkpoint events).
//
// Thread safety: none; owned by the recorder's event loop.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/status.h"
#include "recorder/rr_log.h"
#include "store/store.h"

namespace blackbox {

struct ChunkerOptions {
  // Seal the open chunk once it holds this many raw log bytes.
  // Default: 4 MiB.
  size_t max_chunk_raw_bytes = 4 << 20;
  // Seal the open chunk once its first byte is this old (monotonic time).
  // Default: 60 s.
  int64_t max_chunk_age_ns = 60'000'000'000;
  // Re-write the open chunk when it changed and was last written this long
  // ago: the most a recorder crash can lose.
  // Default: 500 ms.
  int64_t persist_interval_ns = 500'000'000;
  // zstd level for the open chunk, which is rewritten every persist_interval.
  // Default: 1.
  int open_zstd_level = 1;
  // zstd level for a sealed chunk, written once. Level 19 stores the CPU
  // workload's log about 1.27x smaller than level 3 for ~15 ms per raw MB.
  // Default: 19.
  int sealed_zstd_level = 19;
};

class RrChunker {
 public:
  RrChunker(Store* store, std::string recording_id, ChunkerOptions options, Clock* clock);

  // Adds log body bytes (the log after its 12-byte header, in order).
  // Corruption if QEMU wrote something the parser does not understand.
  Status Feed(std::string_view bytes);
  // Persists the open chunk if due, seals it if full or old.
  Status Tick();
  // Persists and seals everything complete. Bytes of a trailing partial event
  // (a log cut by a crash) stay unstored and are counted in trailing_bytes().
  Status Finish();

  const rr::Stats& stats() const { return parser_.stats(); }
  uint64_t chunks() const { return open_raw_.empty() ? next_seq_ : next_seq_ + 1; }
  uint64_t stored_raw_bytes() const { return stored_raw_bytes_; }
  uint64_t stored_bytes() const { return stored_bytes_; }
  uint64_t trailing_bytes() const { return pending_.size(); }
  const Sha256Digest& head() const { return head_; }

 private:
  Status Persist(int zstd_level);
  Status Seal();

  Store* store_;
  std::string id_;
  ChunkerOptions options_;
  Clock* clock_;
  rr::Parser parser_;
  std::string pending_;   // bytes not yet forming a complete event
  std::string open_raw_;  // complete events of the open chunk
  RrChunkInfo open_;      // its index fields so far
  bool open_dirty_ = false;
  int64_t open_started_mono_ = 0;
  int64_t last_persist_mono_ = 0;
  uint64_t next_seq_ = 0;  // seq of the open chunk
  uint64_t next_offset_ = rr::kHeaderSize;
  Sha256Digest head_{};            // chain of the last sealed chunk
  uint64_t stored_raw_bytes_ = 0;  // raw bytes in sealed chunks + open chunk as persisted
  uint64_t stored_bytes_ = 0;
  uint64_t open_stored_bytes_ = 0;
  uint64_t open_persisted_raw_ = 0;
};

}  // namespace blackbox
