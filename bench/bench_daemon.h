// `blackbox bench daemon`: what the appliance daemon costs per VM it runs.
// For each N, N idle test guests run under one real `blackbox daemon`
// process; over a window after they have all booted it measures the daemon's
// own CPU (its threads, not its QEMUs) and what it writes (the store), then
// stops them and verifies every recording. The baseline, measured in the same
// run: one `blackbox record` of one idle guest over the same window.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace blackbox::bench {

struct DaemonBenchOptions {
  std::string blackbox_binary;  // the `blackbox` to run as daemon and recorder
  std::string guest_dir;        // kernel + initrd from guest/build-guest.sh
  std::string qemu_binary;      // empty: the daemon's default
  std::vector<int> vms = {1, 2, 4, 8};
  int window_seconds = 20;
  bool verify = true;  // replay every recording byte-exact (the max-N figure)
};

// Runs the benchmark, prints a table to stdout, returns the figures as JSON.
StatusOr<nlohmann::json> RunDaemonBench(const DaemonBenchOptions& options);

}  // namespace blackbox::bench
