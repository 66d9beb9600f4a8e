#include "recorder/rr_log.h"

#include <array>

namespace blackbox::rr {

namespace {

constexpr std::array<const char*, 7> kAsyncNames = {
    "bh", "bh-oneshot", "input", "input-sync", "char-read", "block", "net"};
constexpr std::array<const char*, 9> kCheckpointNames = {"clock-warp-start",
                                                         "clock-warp-account",
                                                         "reset-requested",
                                                         "suspend-requested",
                                                         "clock-virtual",
                                                         "clock-host",
                                                         "clock-virtual-rt",
                                                         "init",
                                                         "reset"};

// Reads big-endian integers from a bounded buffer. `ok` turns false when the
// buffer ends first, which means "incomplete event" to the caller.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  bool ok() const { return ok_; }
  size_t pos() const { return pos_; }
  uint64_t Get(size_t width) {
    if (!ok_ || data_.size() - pos_ < width) {
      ok_ = false;
      return 0;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < width; ++i) v = v << 8 | static_cast<uint8_t>(data_[pos_ + i]);
    pos_ += width;
    return v;
  }
  uint8_t U8() { return static_cast<uint8_t>(Get(1)); }
  uint32_t U32() { return static_cast<uint32_t>(Get(4)); }
  uint64_t U64() { return Get(8); }
  // Skips an array (u32 size + bytes); returns its size.
  uint32_t Array() {
    uint32_t size = U32();
    Skip(size);
    return size;
  }
  void Skip(uint64_t n) {
    if (!ok_ || data_.size() - pos_ < n) {
      ok_ = false;
      return;
    }
    pos_ += n;
  }

 private:
  std::string_view data_;
  size_t pos_ = 0;
  bool ok_ = true;
};

enum class Outcome { kComplete, kIncomplete, kBad };

struct EventResult {
  Outcome outcome = Outcome::kIncomplete;
  size_t size = 0;
  std::string problem;
};

// Parses one event at the start of `data`, updating `stats` only when complete.
EventResult ParseOne(std::string_view data, Stats& stats) {
  Reader r(data);
  uint8_t code = r.U8();
  if (!r.ok()) return {};
  Stats delta;
  auto array_ok = [&](uint32_t size) { return size <= kMaxArrayBytes; };
  auto bad = [&](std::string why) { return EventResult{Outcome::kBad, 0, std::move(why)}; };
  // Peeks an array size before skipping so an absurd size is reported as
  // corruption rather than waited for forever.
  auto checked_array = [&]() -> bool {
    Reader peek = r;
    uint32_t size = peek.U32();
    if (peek.ok() && !array_ok(size)) return false;
    r.Array();
    return true;
  };

  if (code == kInstruction) {
    delta.icount = r.U32();
  } else if (code == kInterrupt || code == kException) {
  } else if (code >= kAsync && code <= kAsyncLast) {
    switch (code - kAsync) {
      case kAsyncBh:
      case kAsyncBhOneshot:
      case kAsyncBlock:
        r.U64();
        break;
      case kAsyncInput: {
        uint32_t type = r.U32();
        if (!r.ok()) return {};
        switch (type) {
          case 0: {  // key
            uint32_t key_type = r.U32();
            if (!r.ok()) return {};
            if (key_type == 0) {
              r.U64();
            } else if (key_type == 1) {
              r.U32();
            } else {
              return bad("input key of unknown type " + std::to_string(key_type));
            }
            r.U8();
            break;
          }
          case 1:  // button
            r.U32();
            r.U8();
            break;
          case 2:  // rel
          case 3:  // abs
            r.U32();
            r.U64();
            break;
          default:
            return bad("input event of unknown type " + std::to_string(type));
        }
        break;
      }
      case kAsyncInputSync:
        break;
      case kAsyncCharRead:
        r.U8();
        if (!checked_array()) return bad("serial input array over the size cap");
        break;
      case kAsyncNet:
        r.U8();
        r.U32();
        if (!checked_array()) return bad("network frame array over the size cap");
        delta.net_frames = 1;
        break;
    }
  } else if (code >= kShutdown && code <= kShutdownLast) {
    delta.shutdown_cause = code - kShutdown;
  } else if (code == kCharWrite) {
    uint32_t res = r.U32();
    r.U32();
    // The result is an int; negative values are errors that wrote nothing.
    if (static_cast<int32_t>(res) > 0) delta.console_bytes = res;
  } else if (code == kCharReadAll) {
    if (!checked_array()) return bad("serial read array over the size cap");
  } else if (code == kCharReadAllError) {
    r.U32();
  } else if (code == kAudioOut) {
    r.U64();
  } else if (code == kAudioIn) {
    uint64_t recorded = r.U64();
    r.U64();
    if (r.ok() && recorded > kMaxArrayBytes / 16) return bad("audio input over the size cap");
    r.Skip(recorded * 16);
  } else if (code == kRandom) {
    r.U32();
    if (!checked_array()) return bad("random bytes array over the size cap");
  } else if (code >= kClock && code <= kClockLast) {
    r.U64();
  } else if (code >= kCheckpoint && code <= kCheckpointLast) {
    delta.checkpoints = 1;
  } else if (code == kEnd) {
    delta.saw_end = true;
  } else {
    return bad("unknown event code " + std::to_string(code));
  }
  if (!r.ok()) return {};

  stats.events += 1;
  stats.icount += delta.icount;
  stats.console_bytes += delta.console_bytes;
  stats.net_frames += delta.net_frames;
  stats.checkpoints += delta.checkpoints;
  if (delta.saw_end) stats.saw_end = true;
  stats.last_event = code;
  stats.last_console_bytes = delta.console_bytes;
  // QEMU appends a host-signal shutdown when it finishes any recording; the
  // first cause is the one that ended the run.
  if (delta.shutdown_cause >= 0 && stats.shutdown_cause < 0)
    stats.shutdown_cause = delta.shutdown_cause;
  return {Outcome::kComplete, r.pos(), {}};
}

}  // namespace

std::string ShutdownCauseName(int cause) {
  static constexpr std::array<const char*, 11> kNames = {
      "none",        "host-error",      "host-qmp-quit",  "host-qmp-system-reset",
      "host-signal", "host-ui",         "guest-shutdown", "guest-reset",
      "guest-panic", "subsystem-reset", "snapshot-load"};
  if (cause < 0 || cause >= static_cast<int>(kNames.size())) return "unknown";
  return kNames[static_cast<size_t>(cause)];
}

std::string EventName(uint8_t code) {
  if (code == kInstruction) return "instruction";
  if (code == kInterrupt) return "interrupt";
  if (code == kException) return "exception";
  if (code >= kAsync && code <= kAsyncLast)
    return std::string("async:") + kAsyncNames[code - kAsync];
  if (code >= kShutdown && code <= kShutdownLast) {
    return "shutdown:" + ShutdownCauseName(code - kShutdown);
  }
  if (code == kCharWrite) return "char-write";
  if (code == kCharReadAll) return "char-read-all";
  if (code == kCharReadAllError) return "char-read-all-error";
  if (code == kAudioOut) return "audio-out";
  if (code == kAudioIn) return "audio-in";
  if (code == kRandom) return "random";
  if (code == kClock) return "clock:host";
  if (code == kClockLast) return "clock:virtual-rt";
  if (code >= kCheckpoint && code <= kCheckpointLast) {
    return std::string("checkpoint:") + kCheckpointNames[code - kCheckpoint];
  }
  if (code == kEnd) return "end";
  return "unknown(" + std::to_string(code) + ")";
}

StatusOr<size_t> Parser::Parse(std::string_view data, uint64_t base_offset) {
  size_t pos = 0;
  while (pos < data.size()) {
    if (stats_.saw_end) {
      return Corruption("data after the end event at log offset " +
                        std::to_string(base_offset + pos));
    }
    EventResult ev = ParseOne(data.substr(pos), stats_);
    if (ev.outcome == Outcome::kIncomplete) break;
    if (ev.outcome == Outcome::kBad) {
      return Corruption(ev.problem + " at log offset " + std::to_string(base_offset + pos));
    }
    pos += ev.size;
  }
  return pos;
}

StatusOr<ScanResult> ScanBody(std::string_view body) {
  Parser parser;
  ASSIGN_OR_RETURN(size_t consumed, parser.Parse(body));
  return ScanResult{consumed, parser.stats()};
}

std::string MakeHeader() {
  std::string h(kHeaderSize, '\0');
  h[0] = static_cast<char>(kLogVersion >> 24);
  h[1] = static_cast<char>(kLogVersion >> 16);
  h[2] = static_cast<char>(kLogVersion >> 8);
  h[3] = static_cast<char>(kLogVersion);
  return h;
}

Status CheckHeader(std::string_view header) {
  if (header.size() != kHeaderSize) return Corruption("rr log header is not 12 bytes");
  if (header == std::string(kHeaderSize, '\0')) {
    return FailedPrecondition("rr log header not written (QEMU did not finish the recording)");
  }
  if (header != MakeHeader()) {
    return Corruption("rr log header has version " +
                      std::to_string(static_cast<uint8_t>(header[1])) +
                      "... not QEMU 7.2's 0xe0200c");
  }
  return Status::Ok();
}

}  // namespace blackbox::rr
