// `blackbox bench manifest`: what checking frames against manifests costs
// (see docs/BENCHMARKS.md).
//
// 1. Decision cost: two VMs with manifests of 10, 1,000 and 10,000 rules
//    (the traffic's rule last), frames handed to ManifestPolicy::Check as
//    the switch does: frames of known flows (the common case: a cached
//    verdict per flow and VM), frames that each start a new flow (both VMs'
//    rules evaluated, verdicts cached), and one rule evaluation by the index
//    against a linear scan of the rules. Baseline: the L2 switch's own
//    decision for the same frames, without a policy.
// 2. Throughput: the switch benchmark's load generator (64-byte frames,
//    capture off) with checking off (the baseline) and on (10,000 rules).
#pragma once

#include <nlohmann/json.hpp>
#include <vector>

#include "common/status.h"

namespace blackbox::bench {

struct ManifestBenchOptions {
  std::vector<int> rule_counts = {10, 1000, 10000};
  int frames = 2'000'000;   // per decision-cost figure
  double load_seconds = 6;  // per throughput run
  double slice_ms = 100;    // throughput: checking on and off in turn, this long each
  int runs = 3;             // throughput: runs per row, medians reported
  bool decisions = true;
  bool load = true;
};

// Runs the benchmark, prints tables to stdout, returns the figures as JSON.
StatusOr<nlohmann::json> RunManifestBench(const ManifestBenchOptions& options);

}  // namespace blackbox::bench
