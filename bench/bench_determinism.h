// `blackbox bench determinism`: records and verifies every test workload
// many times under varied host load, and counts how often the replay ends
// exactly where the recording did (console, final disks, final RAM). A
// soak, not a timing: it belongs here rather than in the test command,
// which runs each combination once (SpineLoadTest).
//
// Workloads (the test guest): cpu, disk-writer, idle (recorded 6 s, then
// stopped by Blackbox), and http (a web and a client guest on the switch,
// both recorded). Host load: none; a busy process (a shell loop) that the
// kernel schedules freely; the busy process and Blackbox with its QEMUs
// pinned to one CPU. Every combination runs `runs` times, the loads
// interleaved round by round.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace blackbox::bench {

struct DeterminismBenchOptions {
  std::string guest_dir;    // kernel + initrd from guest/build-guest.sh
  std::string qemu_binary;  // empty: DefaultQemuBinary()
  int runs = 3;             // per workload and load
  // Subsets, by name; empty: all.
  std::vector<std::string> workloads;  // cpu, disk-writer, idle, http
  std::vector<std::string> loads;      // none, busy, pinned
};

StatusOr<nlohmann::json> RunDeterminismBench(const DeterminismBenchOptions& options);

}  // namespace blackbox::bench
