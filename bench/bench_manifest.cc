#include "bench/bench_manifest.h"

#include <chrono>
#include <cstdio>
#include <random>

#include "bench/bench_switch.h"
#include "bench/bench_util.h"
#include "manifest/manifest_policy.h"
#include "switch/frame_builder.h"

namespace blackbox::bench {

namespace {

using Clock = std::chrono::steady_clock;

MacAddr BenchMac(uint8_t last) { return MacAddr{{0x02, 0, 0, 0, 0, last}}; }
IpAddr BenchIp(uint8_t last) { return IpAddr::V4(std::array<uint8_t, 4>{10, 9, 0, last}); }

// A manifest of `n` rules for the bench VM `vm`: n-1 rules for other peers
// and ports (a mix of UDP and TCP, host and /24 peers, single ports and
// ranges), then the one the traffic matches (UDP port 5001 between the
// generator and the sink), then the default: deny.
std::string ManifestText(const std::string& vm, int n, bool sender) {
  std::string y =
      "manifest: 1\nvm: " + vm + "\nmode: enforce\nnetwork:\n  default: [alert, drop]\n  rules:\n";
  for (int i = 0; i + 1 < n; ++i) {
    const int a = i / 250, b = i % 250 + 1;
    std::string peer = i % 7 == 0 ? "10.8." + std::to_string(a % 250) + ".0/24"
                                  : "10.8." + std::to_string(a % 250) + "." + std::to_string(b);
    std::string ports = i % 5 == 0 ? std::to_string(20000 + i) + "-" + std::to_string(20000 + i + 3)
                                   : std::to_string(10000 + i % 50000);
    y += "    - {direction: " + std::string(sender ? "out" : "in") + ", peer: '" + peer +
         "', proto: " + (i % 10 == 0 ? "tcp" : "udp") + ", ports: [" + ports +
         "], action: allow}\n";
  }
  // Both ways: the load generator's sink also sends one frame to port 5001.
  y += "    - {name: bench, direction: both, peer: '10.9.0." + std::string(sender ? "2" : "1") +
       "', proto: udp, ports: [5001], action: allow}\n";
  return y;
}

struct Setup {
  std::unique_ptr<ManifestPolicy> policy;
  std::shared_ptr<uint64_t> violations = std::make_shared<uint64_t>(0);
  double parse_ms = 0;
};

StatusOr<Setup> MakePolicy(int n, size_t max_cached) {
  Setup s;
  ManifestPolicy::Options o;
  o.max_cached = max_cached;
  o.flow_idle_ns = int64_t{1} << 62;  // nothing expires during a measurement
  s.policy = std::make_unique<ManifestPolicy>(
      o, [violations = s.violations](ManifestPolicy::Violation&&) { ++*violations; });
  RuleSet::VmAddresses vms = {{"generator", {BenchIp(1)}}, {"sink", {BenchIp(2)}}};
  const auto t0 = Clock::now();
  for (int side = 0; side < 2; ++side) {
    const std::string name = side == 0 ? "generator" : "sink";
    auto m = ParseManifest(ManifestText(name, n, side == 0), nullptr);
    if (!m.ok()) return m.status().WithContext("bench manifest");
    ManifestPolicy::VmPolicy vp;
    vp.name = name;
    vp.manifest = std::make_shared<const Manifest>(std::move(*m));
    vp.rules = RuleSet::Compile(*vp.manifest, vms);
    vp.ports = {static_cast<uint32_t>(side + 1)};
    vp.macs = {BenchMac(static_cast<uint8_t>(side + 1))};
    s.policy->AddVm(std::move(vp));
  }
  s.parse_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  return s;
}

struct Frame {
  frames::Bytes bytes;
  ParsedFrame parsed;
};

std::vector<Frame> Frames(int count, uint16_t first_port) {
  std::vector<Frame> out;
  out.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    // New flows differ in source port and address (10.9.x.y is not
    // anti-spoofed here: Check is called directly).
    std::array<uint8_t, 4> src = {10, 9, static_cast<uint8_t>(i >> 16), 1};
    Frame f;
    f.bytes = frames::Udp4(BenchMac(2), BenchMac(1), IpAddr::V4(src), BenchIp(2), 64,
                           static_cast<uint16_t>(first_port + (i & 0xffff)), 5001);
    f.parsed = ParseFrame(f.bytes).value();
    out.push_back(std::move(f));
  }
  return out;
}

// ns per call of `check(frame)` over `total` calls cycling through `frames`.
template <typename Fn>
double TimePerFrame(const std::vector<Frame>& frames, int total, Fn&& check) {
  uint64_t sink = 0;
  const auto t0 = Clock::now();
  for (int i = 0; i < total; ++i) sink += check(frames[static_cast<size_t>(i) % frames.size()]);
  const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
  if (sink == 0xdeadbeef) std::printf(" ");  // keeps the loop
  return ns / total;
}

}  // namespace

StatusOr<nlohmann::json> RunManifestBench(const ManifestBenchOptions& o) {
  nlohmann::json out = {{"benchmark", "manifest"}};
  if (o.decisions) {
    std::printf(
        "\nmanifest benchmark: decision cost per frame (ns), two VMs with manifests, the "
        "traffic's rule last\n");
    std::printf("  %8s %10s %12s %12s %12s %12s %12s %12s %10s\n", "RULES", "L2 ONLY",
                "L2+MANIFEST", "CHECK KNOWN", "SAME FLOW", "CHECK NEW", "EVAL INDEX", "EVAL LINEAR",
                "PARSE MS");
    nlohmann::json rows = nlohmann::json::array();
    const std::vector<Frame> known = Frames(256, 10000);
    for (int n : o.rule_counts) {
      // Known flows, through the whole L2 decision, with and without checks.
      L2Switch sw;
      const uint32_t p1 = sw.AddPort({"generator", "bench", BenchMac(1), {}});
      const uint32_t p2 = sw.AddPort({"sink", "bench", BenchMac(2), {}});
      (void)p2;
      L2Switch::Decision d;
      auto l2 = [&](const Frame& f) {
        sw.Process(p1, f.bytes, 1, &d);
        return d.egress.size();
      };
      sw.Process(2, frames::Udp4(BenchMac(1), BenchMac(2), BenchIp(2), BenchIp(1)), 0,
                 &d);  // learn
      const double l2_only = TimePerFrame(known, o.frames, l2);
      ASSIGN_OR_RETURN(Setup s, MakePolicy(n, 65536));
      sw.SetPolicy(s.policy.get());
      for (const Frame& f : known) l2(f);  // warm the verdict cache
      const double l2_checked = TimePerFrame(known, o.frames, l2);
      sw.SetPolicy(nullptr);

      // Check() alone on known flows.
      std::vector<uint32_t> egress;
      std::string reason;
      auto check = [&](const Frame& f) {
        egress.assign(1, 2);
        return static_cast<uint64_t>(s.policy->Check(1, f.parsed, f.bytes, 1, &egress, &reason));
      };
      const double check_known = TimePerFrame(known, o.frames, check);
      // The same flow frame after frame (a TCP window, a bulk transfer):
      // the port's last verdict is reused without a lookup.
      const std::vector<Frame> one(known.begin(), known.begin() + 1);
      const double check_repeat = TimePerFrame(one, o.frames, check);
      if (*s.violations != 0) return Internal("the bench traffic raised a violation");

      // New flows: every frame starts one (both VMs' rules evaluated and
      // their verdicts cached).
      // As many as the default cache holds (65,536 verdicts: two per flow).
      const int fresh_count = std::min(o.frames, 32'000);
      const std::vector<Frame> fresh = Frames(fresh_count, 1024);
      ASSIGN_OR_RETURN(Setup s2, MakePolicy(n, 65536));
      auto check_new = [&](const Frame& f) {
        egress.assign(1, 2);
        return static_cast<uint64_t>(s2.policy->Check(1, f.parsed, f.bytes, 1, &egress, &reason));
      };
      const double new_flow = TimePerFrame(fresh, fresh_count, check_new);
      if (s2.policy->stats().judged != 2 * static_cast<uint64_t>(fresh_count) ||
          *s2.violations != 0) {
        return Internal("new-flow frames were not all judged by both VMs and allowed");
      }

      // One rule evaluation: index vs linear scan.
      auto m = ParseManifest(ManifestText("generator", n, true), nullptr);
      if (!m.ok()) return m.status();
      RuleSet rs = RuleSet::Compile(*m, {});
      FlowFacts ff{Direction::kOut, BenchIp(2), kIpProtoUdp, 5001};
      const int evals = std::max(1000, o.frames / (n >= 10000 ? 200 : 20));
      auto time_eval = [&](bool linear, int count) {
        int64_t acc = 0;
        const auto t0 = Clock::now();
        for (int i = 0; i < count; ++i)
          acc += (linear ? rs.EvaluateLinear(ff) : rs.Evaluate(ff)).rule;
        const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
        if (acc == 42) std::printf(" ");
        return ns / count;
      };
      if (rs.Evaluate(ff).rule != n - 1 || rs.EvaluateLinear(ff).rule != n - 1) {
        return Internal("the bench flow does not match the last rule");
      }
      const double eval_index = time_eval(false, o.frames);
      const double eval_linear = time_eval(true, evals);

      std::printf("  %8d %10.1f %12.1f %12.1f %12.1f %12.1f %12.1f %12.1f %10.1f\n", n, l2_only,
                  l2_checked, check_known, check_repeat, new_flow, eval_index, eval_linear,
                  s.parse_ms);
      rows.push_back({{"rules", n},
                      {"l2_only_ns", l2_only},
                      {"l2_with_manifest_ns", l2_checked},
                      {"check_known_flow_ns", check_known},
                      {"check_same_flow_ns", check_repeat},
                      {"check_new_flow_ns", new_flow},
                      {"evaluate_index_ns", eval_index},
                      {"evaluate_linear_ns", eval_linear},
                      {"parse_compile_ms", s.parse_ms},
                      {"ratio_l2_with_manifest", l2_checked / l2_only}});
    }
    out["decisions"] = rows;
    const auto& last = rows.back();
    Row("target: <= 100 ns per frame at 10,000 rules",
        F(last["check_known_flow_ns"].get<double>(), "%.1f") + " ns (known flow)",
        std::string(last["check_known_flow_ns"].get<double>() <= 100 ? "met" : "NOT met") +
            "; a frame that starts a flow: " + F(last["check_new_flow_ns"].get<double>(), "%.0f") +
            " ns");
  }
  if (o.load) {
    const int n = o.rule_counts.empty() ? 10000 : o.rule_counts.back();
    std::printf(
        "\nmanifest benchmark: switch throughput, capture off, %d rules per VM; checking off "
        "(baseline) and on in alternate %.0f ms slices of one run; per core = frames per CPU "
        "second of the switch thread; %d run(s): per core, the median of the runs; ON/OFF, "
        "the median [min-max] of the runs' ratios (each over its pairs of neighbouring "
        "slices); cost = 1 - the median ON/OFF\n",
        n, o.slice_ms, o.runs);
    std::printf("  %-36s %14s %14s %-24s %8s %8s\n", "TRAFFIC", "OFF PER CORE", "ON PER CORE",
                "ON/OFF", "COST", "PAIRS");
    struct Case {
      const char* name;
      size_t size;
      int per_flow;
    };
    const Case cases[] = {{"64 B, 256 flows interleaved", 64, 1},
                          {"64 B, 8 flows, 32 frames in a row", 64, 32},
                          {"1500 B, 256 flows interleaved", 1500, 1}};
    nlohmann::json rows = nlohmann::json::array();
    double worst = 0;
    for (const Case& c : cases) {
      std::vector<double> off_core, on_core, ratio;
      size_t pairs = 0;
      for (int r = 0; r < o.runs; ++r) {
        std::fprintf(stderr, "bench: switch load, %s, checking off/on in turn, run %d/%d...\n",
                     c.name, r + 1, o.runs);
        ASSIGN_OR_RETURN(Setup s, MakePolicy(n, 65536));
        ASSIGN_OR_RETURN(LoadResult lr, RunSwitchLoad(c.size, false, o.load_seconds, s.policy.get(),
                                                      c.per_flow, o.slice_ms));
        if (*s.violations != 0) return Internal("the load raised violations");
        // Pairs of neighbouring slices, one on and one off; the first slice
        // warms up.
        double off_frames = 0, off_cpu = 0, on_frames = 0, on_cpu = 0;
        std::vector<double> pair_ratio;
        for (size_t i = 1; i + 1 < lr.slices.size(); i += 2) {
          const bool first_on = lr.slices[i].policy_on;
          const auto& off = lr.slices[first_on ? i + 1 : i];
          const auto& on = lr.slices[first_on ? i : i + 1];
          if (off.policy_on || !on.policy_on || off.cpu_s <= 0 || on.cpu_s <= 0 ||
              off.frames == 0 || on.frames == 0) {
            continue;
          }
          off_frames += static_cast<double>(off.frames);
          off_cpu += off.cpu_s;
          on_frames += static_cast<double>(on.frames);
          on_cpu += on.cpu_s;
          pair_ratio.push_back((on.frames / on.cpu_s) / (off.frames / off.cpu_s));
        }
        if (pair_ratio.size() < 3) {
          return Internal("the load gave too few slices to compare (" +
                          std::to_string(lr.slices.size()) + ")");
        }
        pairs += pair_ratio.size();
        off_core.push_back(off_frames / off_cpu);
        on_core.push_back(on_frames / on_cpu);
        ratio.push_back(on_core.back() / off_core.back());
      }
      const double cost = 1.0 - Median(ratio);
      worst = std::max(worst, cost);
      std::printf("  %-36s %13.2fM %13.2fM %-24s %7.1f%% %8zu\n", c.name, Median(off_core) / 1e6,
                  Median(on_core) / 1e6, PairRatioText(ratio, "%.3f").c_str(), cost * 100, pairs);
      rows.push_back({{"traffic", c.name},
                      {"frame_bytes", c.size},
                      {"frames_per_flow", c.per_flow},
                      {"off_frames_per_core_s", off_core},
                      {"on_frames_per_core_s", on_core},
                      {"ratio", PairRatioJson(ratio)},
                      {"slice_pairs", pairs},
                      {"cost", cost}});
    }
    Row("target: < 5% throughput cost", F(worst * 100, "%.1f") + "% (worst row)",
        worst < 0.05 ? "met" : "NOT met");
    out["load"] = {{"rules", n}, {"slice_ms", o.slice_ms}, {"rows", rows}};
  }
  return out;
}

}  // namespace blackbox::bench
