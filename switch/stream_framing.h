// The switch wire protocol: Ethernet frames over a QEMU `-netdev stream` socket.
//
// QEMU's stream netdev (net/stream.c, the same framing as `-netdev socket`)
// carries one Ethernet frame (no FCS) per record:
//
//   record := length:uint32 big-endian, frame:byte[length]
//
// Example: a 60-byte ARP request is sent as 00 00 00 3c followed by its 60
// bytes. There is no magic, version or checksum: the stream is a local unix
// socket and the format is QEMU's, not ours.
//
// The peer is a guest-controlled QEMU process, so the decoder treats the
// length field as hostile: a length above the cap is rejected before any
// buffer is sized from it. QEMU itself refuses records larger than NET_BUFSIZE
// (4096 + 65536); our default cap is kMaxFrameSize (65535 + 14), the largest
// frame ParseFrame() accepts, so nothing bigger could be forwarded anyway.
//
// Thread safety: StreamDecoder is not thread-safe (one owner, normally the
// port's reader). EncodeStreamFrame() is a free function, safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "switch/frame.h"

namespace blackbox {

// Size of the big-endian length prefix.
inline constexpr size_t kStreamHeaderSize = 4;

// Incremental decoder for one stream connection.
class StreamDecoder {
 public:
  // max_frame: largest accepted frame length in bytes (the length field, not
  // counting the 4-byte prefix). Default: kMaxFrameSize (65549).
  explicit StreamDecoder(size_t max_frame = kMaxFrameSize);

  // Consumes `bytes` (any split of the stream: a partial header, a partial
  // frame, several frames) and calls `on_frame` once per complete non-empty
  // frame, in stream order. The span passed to on_frame is valid only during
  // the call. Incomplete trailing data is kept for the next Feed().
  //
  // Zero-length records are skipped (counted in zero_length_frames()).
  // A length above max_frame returns ResourceExhausted without buffering the
  // frame; frames completed earlier in the same call have already been
  // delivered. The error is sticky: every later Feed() returns it again and
  // delivers nothing, because the stream has lost framing; the caller should
  // disconnect the port.
  Status Feed(std::span<const uint8_t> bytes,
              const std::function<void(std::span<const uint8_t>)>& on_frame);

  // Counters (since construction).
  uint64_t frames() const { return frames_; }  // frames delivered
  uint64_t bytes() const { return bytes_; }    // frame bytes delivered (no prefixes)
  uint64_t zero_length_frames() const { return zero_length_frames_; }

  // Bytes held from an incomplete record (prefix and frame).
  size_t buffered() const {
    return (have_length_ ? kStreamHeaderSize : header_fill_) + pending_.size();
  }
  // Bytes allocated for partial frames (at most max_frame; for memory accounting).
  size_t buffer_capacity() const { return pending_.capacity(); }

  size_t max_frame() const { return max_frame_; }

 private:
  const size_t max_frame_;
  Status error_;  // sticky once not OK

  uint8_t header_[kStreamHeaderSize] = {};
  size_t header_fill_ = 0;        // bytes of header_ received
  bool have_length_ = false;      // header complete; reading frame bytes
  size_t frame_length_ = 0;       // valid if have_length_
  std::vector<uint8_t> pending_;  // partial frame, only when split across Feed()s

  uint64_t frames_ = 0;
  uint64_t bytes_ = 0;
  uint64_t zero_length_frames_ = 0;
};

// Returns the record for `frame`: its length as 4 big-endian bytes, then the
// frame. The caller ensures frame.size() fits in uint32 (Ethernet frames do).
std::string EncodeStreamFrame(std::span<const uint8_t> frame);
// Appends the record (4-byte big-endian length + frame) to *out.
void AppendStreamFrame(std::string* out, std::span<const uint8_t> frame);

}  // namespace blackbox
