// `blackbox bench switch`: what Blackbox's switch and its capture cost,
// measured against baselines in the same run (see docs/BENCHMARKS.md).
//
// 1. Load generator: a client speaking QEMU's stream wire protocol pushes
//    64-byte and 1500-byte frames from one switch port to another as fast as
//    the switch takes them, with capture off (the baseline) and on (frames,
//    flows and events into a real store). Reported: frames/s and Gbit/s per
//    CPU core used by the switch (and its capture writer), the wall rate,
//    and capture on / off per core, per round.
// 2. Guests: two test guests (not rr-recorded) transfer a file over HTTP
//    through the switch with capture on, and over a direct QEMU socket link
//    (the baseline); the transfer time comes from the client's console
//    markers. Reported: MB/s each way and the ratio, per pair.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"
#include "switch/l2_switch.h"

namespace blackbox::bench {

struct SwitchBenchOptions {
  std::string guest_dir;  // kernel + initrd from guest/build-guest.sh
  std::string qemu_binary = "qemu-system-x86_64";
  double load_seconds = 3;  // per load-generator measurement
  // Rounds: each runs every load row (capture off and on back to back) and
  // both guest transfers (direct and through the switch back to back), the
  // order alternating. Medians are reported; ratios are the median
  // [min-max] of the per-round ratios.
  int runs = 1;
  int file_mib = 32;  // size of the file the guests transfer
  bool load = true;
  bool guests = true;
};

struct LoadResult {
  double wall_s = 0;
  double cpu_s = 0;  // switch + capture threads
  uint64_t sent = 0;
  uint64_t delivered = 0;
  uint64_t queue_drops = 0;
  uint64_t stored_frames = 0;
  uint64_t shed = 0;
  double wait_ms = 0;  // the switch thread waiting for room in the capture queue
  uint64_t flows = 0;
  // With toggle_ms > 0: one entry per slice, the policy on or off in turn.
  struct Slice {
    bool policy_on = false;
    double cpu_s = 0;     // the switch thread's CPU seconds in the slice
    uint64_t frames = 0;  // frames it wrote to the sink in the slice
  };
  std::vector<Slice> slices;
};

// One load-generator measurement: a switch with ports "generator"
// (MAC 02:00:00:00:00:01, 10.9.0.1) and "sink" (..:02, 10.9.0.2), 256 UDP
// flows from the generator to the sink's port 5001 in `frame_size`-byte
// frames for `seconds` (each flow sends `frames_per_flow` frames in a row,
// so 256 / frames_per_flow flows), with capture into a real store or not,
// and with `policy` (may be null) as the switch's FramePolicy. Port ids are
// 1 and 2. With `toggle_ms` > 0 the switch thread sets and clears `policy`
// every toggle_ms (starting without it) and records each slice's frames and
// CPU time (LoadResult::slices): checking on and off measured in the same
// process, sockets and load, interleaved, so slow drifts of the machine's
// speed cancel out.
StatusOr<LoadResult> RunSwitchLoad(size_t frame_size, bool capture, double seconds,
                                   FramePolicy* policy = nullptr, int frames_per_flow = 1,
                                   double toggle_ms = 0);

// Runs the benchmark, prints a table to stdout, returns the figures as JSON.
StatusOr<nlohmann::json> RunSwitchBench(const SwitchBenchOptions& options);

}  // namespace blackbox::bench
