// Parser for the record/replay log written by QEMU 7.2 (`-icount rr=record`).
// The format is documented in docs/rr-log-format.md.
//
// The parser is incremental: the recorder feeds it the bytes QEMU has written
// so far (QEMU writes through a stdio buffer, so the file usually ends in the
// middle of an event) and it reports how far the log consists of complete
// events. Chunks are only ever cut at such event boundaries.
//
// Thread safety: none; one parser per log.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace blackbox::rr {

// The log header: a big-endian version dword and a reserved qword. QEMU writes
// it last, when recording ends (it seeks back to offset 0).
inline constexpr uint32_t kLogVersion = 0xe0200c;
inline constexpr size_t kHeaderSize = 12;
// Largest payload array accepted (network frames, serial input, random bytes).
inline constexpr uint32_t kMaxArrayBytes = 1 << 20;

// Event codes (QEMU 7.2 replay/replay-internal.h, enum ReplayEvents).
enum EventCode : uint8_t {
  kInstruction = 0,  // + u32 instruction count
  kInterrupt = 1,
  kException = 2,
  kAsync = 3,  // 3..9: + async kind payload
  kAsyncLast = 9,
  kShutdown = 10,  // 10..21: cause = code - 10
  kShutdownLast = 21,
  kCharWrite = 22,         // + u32 result, u32 offset
  kCharReadAll = 23,       // + array
  kCharReadAllError = 24,  // + u32
  kAudioOut = 25,          // + u64
  kAudioIn = 26,           // + u64 recorded, u64 wpos, recorded * (u64, u64)
  kRandom = 27,            // + u32 ret, array
  kClock = 28,             // 28..29: + u64 value (host, virtual_rt)
  kClockLast = 29,
  kCheckpoint = 30,  // 30..38
  kCheckpointLast = 38,
  kEnd = 39,
  kEventCount = 40,
};

// Async event kinds (enum ReplayAsyncEventKind), code = kAsync + kind.
enum AsyncKind : uint8_t {
  kAsyncBh = 0,         // + u64 id
  kAsyncBhOneshot = 1,  // + u64 id
  kAsyncInput = 2,      // + input event
  kAsyncInputSync = 3,
  kAsyncCharRead = 4,  // + u8 chardev id, array
  kAsyncBlock = 5,     // + u64 id
  kAsyncNet = 6,       // + u8 filter id, u32 flags, array (the frame)
};

// QEMU's ShutdownCause name ("guest-shutdown", "host-qmp-quit", ...).
std::string ShutdownCauseName(int cause);

// Human-readable name of an event code ("instruction", "async:net", ...).
std::string EventName(uint8_t code);

// Counters over a run of parsed events.
struct Stats {
  uint64_t events = 0;
  uint64_t icount = 0;         // guest instructions executed (sum of kInstruction)
  uint64_t console_bytes = 0;  // sum of kCharWrite results (bytes the guest wrote to serial)
  uint64_t net_frames = 0;     // frames delivered to the guest
  uint64_t checkpoints = 0;
  bool saw_end = false;             // kEnd parsed; nothing may follow it
  int shutdown_cause = -1;          // first shutdown cause seen, -1 if none
  int last_event = -1;              // code of the last complete event, -1 if none
  uint64_t last_console_bytes = 0;  // its bytes if it is a kCharWrite
};

// Parses the event stream that follows the header.
class Parser {
 public:
  // Parses as many complete events from `data` as possible, starting at its
  // beginning. Returns the number of bytes consumed (a prefix of data that
  // ends at an event boundary) and adds to stats(). Bytes after the last
  // complete event are left for the next call (pass them again, followed by
  // more). Corruption (with the offset relative to `base_offset`) for an
  // unknown event code, an oversized array, or data after kEnd.
  StatusOr<size_t> Parse(std::string_view data, uint64_t base_offset = kHeaderSize);

  const Stats& stats() const { return stats_; }

 private:
  Stats stats_;
};

// Result of scanning a whole log body (everything after the header).
struct ScanResult {
  size_t complete_bytes = 0;  // body bytes up to the last complete event
  Stats stats;
};
// Scans a whole log body; a trailing partial event is not an error (it is
// what QEMU leaves when killed), an unknown event code is.
StatusOr<ScanResult> ScanBody(std::string_view body);

// The header QEMU writes for a finished log.
std::string MakeHeader();
// Checks a 12-byte header. An all-zero header means "recording did not finish".
Status CheckHeader(std::string_view header);

}  // namespace blackbox::rr
