// PcapngWriter: exports Ethernet frames as a pcapng file (draft-ietf-opsawg-pcapng).
//
// The file is one section: a Section Header Block (shb_userappl "Blackbox"),
// then one Interface Description Block per AddInterface() call (LINKTYPE_ETHERNET,
// if_tsresol = 9, i.e. nanosecond timestamps), then one Enhanced Packet Block per
// WritePacket() call. Everything is written little-endian. The layout Blackbox
// writes is documented in docs/pcapng-export.md.
//
// Errors: a failed write to the stream is sticky. AddInterface() cannot report
// it (it returns the id the interface would have); the next WritePacket() and
// Finish() return it. Input errors (unknown interface id, oversized frame,
// negative timestamp) are returned by WritePacket() and leave the file valid.
//
// Thread safety: none; a writer must be used from one thread at a time.
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <ostream>
#include <span>
#include <string>

#include "common/status.h"

namespace blackbox {

// Largest frame WritePacket() accepts; also the snaplen written in every IDB.
inline constexpr uint32_t kPcapngMaxFrameBytes = 256 * 1024;

// Options longer than this (the 16-bit option length, rounded down to a
// multiple of 4) are truncated at a UTF-8 character boundary.
inline constexpr size_t kPcapngMaxOptionBytes = 65532;

class PcapngWriter {
 public:
  // Writes to `out`, which must outlive the writer. The Section Header Block is
  // written at once.
  explicit PcapngWriter(std::ostream* out);

  // Creates (truncating) the file at `path` and writes the Section Header Block.
  // IOError if the file cannot be opened.
  static StatusOr<std::unique_ptr<PcapngWriter>> OpenFile(const std::string& path);

  PcapngWriter(const PcapngWriter&) = delete;
  PcapngWriter& operator=(const PcapngWriter&) = delete;

  // Writes an Interface Description Block with if_name `name` and (when
  // non-empty) if_description `description`. Returns the interface id
  // (0, 1, 2, ... in call order) to pass to WritePacket().
  uint32_t AddInterface(const std::string& name, const std::string& description);

  // Writes an Enhanced Packet Block for `frame` (a whole Ethernet frame, without
  // FCS) captured on `interface_id` at `wall_ns` nanoseconds since the Unix
  // epoch. A non-empty `comment` becomes an opt_comment option (Blackbox writes
  // "dropped: <reason>" for frames its switch dropped). `original_length`
  // is the frame's length on the wire when `frame` holds only a prefix of it;
  // it defaults to frame.size().
  //
  // InvalidArgument for an unknown interface id, a negative timestamp, a frame
  // larger than kPcapngMaxFrameBytes or an original_length below frame.size();
  // nothing is written then. Otherwise returns any stream error so far.
  Status WritePacket(uint32_t interface_id, int64_t wall_ns, std::span<const uint8_t> frame,
                     const std::string& comment = "", std::optional<uint32_t> original_length = {});

  // Flushes the stream (and closes the file when opened with OpenFile()).
  // Returns the first stream error seen, if any. Nothing may be written after.
  Status Finish();

  uint32_t interface_count() const { return interface_count_; }

 private:
  PcapngWriter(std::unique_ptr<std::ofstream> file, std::string path);

  void WriteSectionHeader();
  // Appends the block's trailing length, patches the leading one, writes it.
  void EmitBlock(std::string* block);

  std::unique_ptr<std::ofstream> file_;  // set when opened with OpenFile()
  std::ostream* out_;
  std::string description_;  // for error messages: the path or "stream"
  uint32_t interface_count_ = 0;
  bool finished_ = false;
  Status status_;
};

}  // namespace blackbox
