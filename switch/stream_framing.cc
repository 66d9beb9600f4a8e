#include "switch/stream_framing.h"

#include <algorithm>
#include <cassert>
#include <string>

namespace blackbox {

StreamDecoder::StreamDecoder(size_t max_frame) : max_frame_(max_frame) {}

Status StreamDecoder::Feed(std::span<const uint8_t> bytes,
                           const std::function<void(std::span<const uint8_t>)>& on_frame) {
  if (!error_.ok()) return error_;
  while (!bytes.empty()) {
    if (!have_length_) {
      size_t n = std::min(kStreamHeaderSize - header_fill_, bytes.size());
      std::copy_n(bytes.begin(), n, header_ + header_fill_);
      header_fill_ += n;
      bytes = bytes.subspan(n);
      if (header_fill_ < kStreamHeaderSize) break;
      header_fill_ = 0;
      uint32_t length = (uint32_t{header_[0]} << 24) | (uint32_t{header_[1]} << 16) |
                        (uint32_t{header_[2]} << 8) | uint32_t{header_[3]};
      if (length == 0) {
        ++zero_length_frames_;
        continue;
      }
      if (length > max_frame_) {
        // Checked before anything is sized from the length.
        error_ = ResourceExhausted("stream frame length " + std::to_string(length) +
                                   " exceeds cap " + std::to_string(max_frame_));
        return error_;
      }
      have_length_ = true;
      frame_length_ = length;
    }

    if (pending_.empty() && bytes.size() >= frame_length_) {
      // Whole frame in this chunk: deliver in place, no copy.
      ++frames_;
      bytes_ += frame_length_;
      on_frame(bytes.first(frame_length_));
      bytes = bytes.subspan(frame_length_);
      have_length_ = false;
      continue;
    }

    if (pending_.empty()) pending_.reserve(frame_length_);  // <= max_frame_
    size_t n = std::min(frame_length_ - pending_.size(), bytes.size());
    pending_.insert(pending_.end(), bytes.begin(), bytes.begin() + n);
    bytes = bytes.subspan(n);
    if (pending_.size() < frame_length_) break;
    assert(pending_.size() == frame_length_);
    ++frames_;
    bytes_ += frame_length_;
    on_frame(pending_);
    pending_.clear();
    have_length_ = false;
  }
  return Status::Ok();
}

void AppendStreamFrame(std::string* out, std::span<const uint8_t> frame) {
  assert(frame.size() <= UINT32_MAX);
  uint32_t length = static_cast<uint32_t>(frame.size());
  const char prefix[kStreamHeaderSize] = {
      static_cast<char>(length >> 24), static_cast<char>(length >> 16),
      static_cast<char>(length >> 8), static_cast<char>(length)};
  out->append(prefix, kStreamHeaderSize);
  out->append(reinterpret_cast<const char*>(frame.data()), frame.size());
}

std::string EncodeStreamFrame(std::span<const uint8_t> frame) {
  std::string out;
  out.reserve(kStreamHeaderSize + frame.size());
  AppendStreamFrame(&out, frame);
  return out;
}

}  // namespace blackbox
