// `blackbox bench record`: what recording through Blackbox costs, measured
// against its baselines in the same run (see docs/BENCHMARKS.md).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"

namespace blackbox::bench {

struct RecordBenchOptions {
  std::string guest_dir;  // kernel + initrd from guest/build-guest.sh
  std::string qemu_binary = "qemu-system-x86_64";
  // Rounds. CPU workload: each round runs plain, QEMU rr and Blackbox back
  // to back (reversed every other round); values are medians of the rounds,
  // ratios the median [min-max] of the per-round ratios. Idle: runs.
  int runs = 1;
  int idle_seconds = 30;  // how long the idle guest is recorded
  bool cpu = true;
  bool idle = true;
};

// Runs the benchmark, prints a table to stdout, returns the figures as JSON.
StatusOr<nlohmann::json> RunRecordBench(const RecordBenchOptions& options);

}  // namespace blackbox::bench
