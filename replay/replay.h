// Replay: rebuilds a recording from the store into what QEMU needs (the rr
// log file, copies of the disk overlays and the snapshot image), runs QEMU
// in replay mode, and verifies that the replay reproduces the recording.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "store/store.h"

namespace blackbox {

struct ReplayOptions {
  // QEMU binary. Default: the one the recording was made with (same
  // SHA-256), found at its recorded path or as DefaultQemuBinary().
  std::string qemu_binary;
  // Replay with a QEMU other than the one that recorded (refused otherwise:
  // the replay may diverge). Default: false.
  bool force_qemu = false;
  // Start from the latest snapshot taken at or before this wall time (ns)
  // instead of from boot. 0: from boot. Default: 0.
  int64_t from_wall_ns = 0;
  // >0: expose QEMU's gdbstub on 127.0.0.1:PORT and start paused.
  // Default: 0.
  int gdb_port = 0;
  // Copy the replayed console to stdout as it arrives. Default: false.
  bool echo_console = false;
  // Fail when the guest's instruction count has not moved for this long (a
  // replay whose inputs differ from the recording's spins without output).
  // 0 disables the watchdog. Default: 30 s.
  int64_t stall_timeout_ns = 30'000'000'000;
  // Refuse to replay when kernel, initrd or base disks differ from the
  // recorded hashes. Default: true.
  bool check_inputs = true;
  // Run QEMU under -sandbox. Default: true.
  bool sandbox = true;
  // Keep the rebuilt files here instead of a temporary directory.
  // Default: empty (temporary, removed afterwards).
  std::string work_dir;
  // After QEMU exits, compare each disk's guest-visible contents with the
  // overlay the recording ended with (`qemu-img compare`). Verify sets it.
  // Default: false.
  bool compare_final_disks = false;
  // Keep the guest's RAM in a file and hash it after QEMU exits
  // (ReplayResult::final_ram_sha256). Verify sets it when the recording
  // stored its final RAM hash. Default: false.
  bool hash_final_ram = false;
  // Optional progress callback, called about once a second: icount so far.
  std::function<void(uint64_t icount, uint64_t console_bytes)> on_progress;
};

struct ReplayResult {
  std::string console;   // bytes the replayed guest wrote to serial
  std::string snapshot;  // snapshot replay started from
  int qemu_wait_status = 0;
  std::string qemu_exit;  // "exited with status 0"
  std::string qemu_stderr_tail;
  std::string stop_reason;  // why it ended ("end of log", "stalled at icount N", ...)
  bool stalled = false;
  uint64_t last_icount = 0;  // as QEMU last reported it
  double wall_seconds = 0;
  // QEMU's start to its exit (as a recording's qemu_run_seconds): without the
  // disk comparison and RAM hash that wall_seconds includes.
  double qemu_seconds = 0;
  // With ReplayOptions::compare_final_disks: one per disk, in spec order.
  struct DiskCheck {
    std::string name;
    bool identical = false;
    std::string detail;  // what differs, or why it could not be compared
  };
  std::vector<DiskCheck> disks;
  // With ReplayOptions::hash_final_ram, once QEMU has exited: hex SHA-256 of
  // the guest's RAM, or empty with final_ram_problem saying why.
  std::string final_ram_sha256;
  std::string final_ram_problem;
};

// Writes the recording's rr log (header + verified chunks) to `path`.
// For an interrupted recording the header QEMU never wrote is supplied and
// the log ends at the last complete stored event.
Status ExportRrLog(const Store& store, const std::string& recording_id, const std::string& path);

// Checks that the recorded inputs (kernel, initrd, base disks) still hash the
// same. FailedPrecondition names the first that differs.
Status CheckInputs(const RecordingInfo& info);

// FailedPrecondition for a recording made without rr (RecorderOptions::rr
// false): it has nothing to replay. Replay, verify and export --rr check it.
Status CheckReplayable(const RecordingInfo& info);

// Replays a recording to its end (or until stopped / stalled).
StatusOr<ReplayResult> ReplayRecording(const Store& store, const std::string& recording_id,
                                       const ReplayOptions& options);

struct VerifyReport {
  bool ok = false;
  std::string summary;  // one line, printed by `blackbox verify`
  Store::ChainReport chain;
  uint64_t recorded_console = 0;  // bytes in the stored console
  uint64_t expected_console = 0;  // bytes the stored log says the guest wrote
  uint64_t replayed_console = 0;
  std::optional<uint64_t> first_difference;  // offset of the first differing console byte
  // Final disks: "N identical", "none", or "not compared (why)".
  std::string disks;
  // Final RAM: "identical (N MiB)" or "not compared (why)".
  std::string ram;
  ReplayResult replay;
};

// Verifies a recording: the chunk chain is intact, and a headless replay
// writes exactly the recorded console (for an interrupted recording: the
// part of it covered by the stored log). For a complete recording it also
// ends with the same guest-visible disk contents and, where the recording
// stored one, the same RAM hash.
StatusOr<VerifyReport> VerifyRecording(const Store& store, const std::string& recording_id,
                                       ReplayOptions options);

// Stops every replay running in this process (Ctrl-C). Async-signal-safe.
void RequestStopAllReplays();

}  // namespace blackbox
