// `blackbox bench standby`: what Blackbox's QEMU patch series (qemu-patches/)
// is for, measured against Debian's stock QEMU in the same run: the cost of
// a streamed record log, replay speed against record speed (CPU, idle and
// network workloads), how far a hot standby that follows the log lags
// behind its primary, and how long it takes to go live when the primary
// dies (docs/BENCHMARKS.md).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"

namespace blackbox::bench {

struct StandbyBenchOptions {
  std::string guest_dir;                          // kernel + initrd from guest/build-guest.sh
  std::string patched_qemu;                       // qemu-patches/build.sh's binary
  std::string stock_qemu = "qemu-system-x86_64";  // Debian's
  // Runs of each figure; medians are reported. Every ratio of a subject to
  // its baseline (Blackbox's QEMU to stock, streamed record to a file,
  // governed primary to a free one) is the median [min-max] of per-pair
  // ratios, each pair run back to back, the order alternating.
  int runs = 3;
  int cpu_rounds = 10;      // CPU workload: rounds of the test guest's `cpu` role
  int idle_seconds = 30;    // idle workload: how long the idle guest is recorded (boot included)
  int net_mib = 8;          // network workload: size of the file fetched over HTTP
  int follow_seconds = 15;  // go-live: how long the counter guest is followed first
  bool speed = true;        // record overhead and replay speed
  bool follow = true;       // follow lag and go-live
  // Follow runs with primary and follower on the same CPUs ("shared"), each
  // QEMU pinned to its own CPU ("pinned", as on two hosts), or "both".
  std::string placement = "both";
  // Follow runs with the primary never held ("off"), held by a LagGovernor
  // while its follower is more than hold_ms behind ("on"), or "both".
  std::string governor = "both";
  int hold_ms = 30;
  // How the governor holds the primary: "qmp" (QMP stop/cont: its vCPU
  // stops, its main loop goes on writing and flushing the log) or "signal"
  // (SIGSTOP/SIGCONT to its QEMU: everything stops, unflushed bytes too).
  std::string hold_by = "qmp";
  // If set, every lag sample of the follow runs goes to this CSV file.
  std::string lag_trace;
  // If set, each follow run's log, the times its pieces reached the relay
  // and both consoles are kept in this directory (for looking into lag).
  std::string keep_logs;
};

// Runs the benchmark, prints tables to stdout, returns the figures as JSON.
StatusOr<nlohmann::json> RunStandbyBench(const StandbyBenchOptions& options);

}  // namespace blackbox::bench
