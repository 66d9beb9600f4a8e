// The recorder: runs one VM under QEMU record/replay and streams its rr log,
// serial console and QMP events into the store while it runs.
//
// Lifecycle of a recording (RecordingInfo::state):
//   "recording"   while the recorder runs (a recorder that died leaves this;
//                 `blackbox ls` shows it as interrupted when its pid is gone)
//   "complete"    QEMU ended normally: the log has its header and end event
//   "interrupted" QEMU died or was killed: the log ends at the last complete
//                 event that reached the store
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "common/clock.h"
#include "common/status.h"
#include "recorder/rr_chunker.h"
#include "recorder/vm_spec.h"
#include "store/store.h"

namespace blackbox {

struct RecorderOptions {
  // Where recordings keep their disk overlays and snapshot images.
  std::string data_dir;
  // QEMU binary. Default: qemu-system-x86_64 from PATH.
  std::string qemu_binary = "qemu-system-x86_64";
  // Stop (QMP quit) after this long; 0 records until the guest powers off or
  // the recorder is asked to stop. Default: 0.
  int64_t duration_ns = 0;
  // Take a VM snapshot this often (0: only the initial one), so replay can
  // start near a time and reverse debugging has points to go back to.
  // Default: 10 s.
  int64_t snapshot_interval_ns = 10'000'000'000;
  // Copy the guest's console to stdout as it arrives. Default: false.
  bool echo_console = false;
  // Print a progress line to stderr this often (0: never). Default: 5 s.
  int64_t progress_interval_ns = 5'000'000'000;
  // Keep QEMU's raw log file after the recording is stored. Default: false.
  bool keep_raw_log = false;
  // Run QEMU under -sandbox with every restriction. Default: true.
  bool sandbox = true;
  // How often the log file is polled for new bytes. Default: 20 ms.
  int64_t poll_interval_ns = 20'000'000;
  ChunkerOptions chunker;
  // Optional: called once with the recording id as soon as it exists.
  std::function<void(const std::string&)> on_started;
};

// Records `spec` until it ends. Returns the final RecordingInfo (also when
// QEMU died: state "interrupted"); an error only when nothing usable could be
// recorded (QEMU failed to start, the store failed).
StatusOr<RecordingInfo> RecordVm(Store* store, const VmSpec& spec, const RecorderOptions& options);

// Asks every RecordVm running in this process to stop cleanly (QMP quit),
// as Ctrl-C does. Async-signal-safe.
void RequestStopAllRecordings();

// Creates a fresh recording id for a VM: "<name>-YYYYMMDD-HHMMSS[-N]".
StatusOr<std::string> NewRecordingId(Store* store, const std::string& vm_name, int64_t wall_ns);

}  // namespace blackbox
