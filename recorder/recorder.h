// The recorder: runs one VM under QEMU record/replay and streams its rr log,
// serial console and QMP events into the store while it runs.
//
// Lifecycle of a recording (RecordingInfo::state):
//   "recording"   while the recorder runs (a recorder that died leaves this;
//                 `blackbox ls` shows it as interrupted when its pid is gone)
//   "complete"    QEMU ended normally: the log has its header and end event
//   "interrupted" QEMU died or was killed: the log ends at the last complete
//                 event that reached the store
// With RecorderOptions::rr == false there is no log: "complete" means QEMU
// exited cleanly (or was stopped by Blackbox), "interrupted" that it died.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "manifest/alerts.h"
#include "manifest/manifest.h"
#include "recorder/rr_chunker.h"
#include "recorder/vm_spec.h"
#include "store/store.h"

namespace blackbox {

// Figures of a running recording, updated every 100 ms (readable from any
// thread; the daemon's `vm list` shows them).
struct RecorderLiveStats {
  std::atomic<uint64_t> raw_bytes{0};      // rr log stored, uncompressed
  std::atomic<uint64_t> stored_bytes{0};   // rr log stored, compressed
  std::atomic<uint64_t> console_bytes{0};  // serial console read
  std::atomic<uint64_t> icount{0};         // guest instructions at the last stored chunk
};

struct RecorderOptions {
  // Where recordings keep their disk overlays and snapshot images.
  std::string data_dir;
  // QEMU binary. Default (empty): DefaultQemuBinary(), Blackbox's patched
  // QEMU. Its identity is stored with the recording (recorder/qemu_binary.h).
  std::string qemu_binary;
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
  // Record the VM's execution (QEMU rr). false: run it with the same command
  // line minus rr, keeping only console and events (a VM on the switch that is
  // not protected itself). Default: true.
  bool rr = true;
  // Switch port sockets of the spec's NICs, in order (QemuRunPaths::nic_sockets).
  std::vector<std::string> nic_sockets;
  // QemuRunPaths::nic_listen (benchmarks only).
  std::vector<bool> nic_listen;
  // Merged into RecordingInfo::extra when the recording is created (the lab
  // runner stores the capture id and switch ports here).
  nlohmann::json extra = nlohmann::json::object();
  // Optional: set to true to stop this recording cleanly (QMP quit), like
  // RequestStopAllRecordings() does for all. Checked every 100 ms.
  std::shared_ptr<std::atomic<bool>> stop;
  // The end reason `stop` records. Default: "stopped with its lab".
  std::string stop_reason = "stopped with its lab";
  // Optional: kept up to date while the recording runs.
  std::shared_ptr<RecorderLiveStats> live;
  // Optional: called once with the recording id as soon as it exists.
  std::function<void(const std::string&)> on_started;
  // The VM's manifest (null: none). With one, the recording keeps its text
  // and hash, the boot chain is attested before QEMU starts (a mismatch in
  // enforce mode refuses the start: RecordVm fails with FailedPrecondition
  // and the recording's state is "refused"), and the QMP events the
  // manifest judges (guest panic, device changes, shutdowns, resets and
  // stops Blackbox did not ask for) raise alerts through `alerts`.
  std::shared_ptr<const Manifest> manifest;
  // Where alerts go (not owned; must outlive RecordVm). Null: alerts are
  // only logged.
  AlertWriter* alerts = nullptr;
  // Attached while QEMU runs, so manifest responses can pause, snapshot or
  // power off the VM. Optional.
  std::shared_ptr<VmControl> control;
};

// Records `spec` until it ends. Returns the final RecordingInfo (also when
// QEMU died: state "interrupted"); an error only when nothing usable could be
// recorded (QEMU failed to start, the store failed).
StatusOr<RecordingInfo> RecordVm(Store* store, const VmSpec& spec, const RecorderOptions& options);

// Asks every RecordVm running in this process to stop cleanly (QMP quit),
// as Ctrl-C does. Async-signal-safe.
void RequestStopAllRecordings();

// "<name>-YYYYMMDD-HHMMSS" (UTC), with "-N" appended while `taken` says the
// id is in use.
StatusOr<std::string> NewTimestampedId(
    const std::string& name, int64_t wall_ns,
    const std::function<StatusOr<bool>(const std::string&)>& taken);

// Creates a fresh recording id for a VM: "<name>-YYYYMMDD-HHMMSS[-N]".
StatusOr<std::string> NewRecordingId(Store* store, const std::string& vm_name, int64_t wall_ns);

}  // namespace blackbox
