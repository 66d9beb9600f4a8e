#include "recorder/rr_chunker.h"

namespace blackbox {

RrChunker::RrChunker(Store* store, std::string recording_id, ChunkerOptions options, Clock* clock)
    : store_(store), id_(std::move(recording_id)), options_(options), clock_(clock) {}

Status RrChunker::Feed(std::string_view bytes) {
  if (bytes.empty()) return Status::Ok();
  pending_.append(bytes);
  rr::Stats before = parser_.stats();
  uint64_t base = next_offset_ + open_raw_.size();
  ASSIGN_OR_RETURN(size_t consumed, parser_.Parse(pending_, base));
  if (consumed == 0) return Status::Ok();
  const rr::Stats& after = parser_.stats();
  int64_t now_wall = clock_->WallNanos();
  if (open_raw_.empty()) {
    open_ = RrChunkInfo{};
    open_.seq = next_seq_;
    open_.raw_offset = next_offset_;
    open_.first_icount = before.icount;
    open_.first_wall_ns = now_wall;
    open_.prev_chain = head_;
    open_started_mono_ = clock_->MonotonicNanos();
  }
  open_raw_.append(pending_, 0, consumed);
  pending_.erase(0, consumed);
  open_.last_icount = after.icount;
  open_.last_wall_ns = now_wall;
  open_.event_count += static_cast<uint32_t>(after.events - before.events);
  open_.console_bytes += static_cast<uint32_t>(after.console_bytes - before.console_bytes);
  open_dirty_ = true;
  if (open_raw_.size() >= options_.max_chunk_raw_bytes) return Seal();
  return Status::Ok();
}

Status RrChunker::Persist(int zstd_level) {
  if (!open_dirty_) return Status::Ok();
  ASSIGN_OR_RETURN(RrChunkInfo written, store_->AppendRrChunk(id_, open_, open_raw_, zstd_level));
  open_ = written;
  stored_raw_bytes_ += open_raw_.size() - open_persisted_raw_;
  stored_bytes_ += written.stored_size;
  stored_bytes_ -= open_stored_bytes_;
  open_stored_bytes_ = written.stored_size;
  open_persisted_raw_ = open_raw_.size();
  open_dirty_ = false;
  last_persist_mono_ = clock_->MonotonicNanos();
  return Status::Ok();
}

Status RrChunker::Seal() {
  if (open_raw_.empty()) return Status::Ok();
  open_dirty_ = true;  // rewrite at the sealed level even if the open copy is current
  RETURN_IF_ERROR(Persist(options_.sealed_zstd_level));
  head_ = open_.chain;
  next_seq_ += 1;
  next_offset_ += open_raw_.size();
  open_raw_.clear();
  open_stored_bytes_ = 0;
  open_persisted_raw_ = 0;
  return Status::Ok();
}

Status RrChunker::Tick() {
  if (open_raw_.empty()) return Status::Ok();
  int64_t now = clock_->MonotonicNanos();
  if (now - open_started_mono_ >= options_.max_chunk_age_ns) return Seal();
  if (open_dirty_ && now - last_persist_mono_ >= options_.persist_interval_ns)
    return Persist(options_.open_zstd_level);
  return Status::Ok();
}

Status RrChunker::Finish() { return Seal(); }

}  // namespace blackbox
