#include "bench/bench_determinism.h"

#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>

#include "bench/bench_util.h"
#include "common/files.h"
#include "common/process.h"
#include "recorder/lab.h"
#include "recorder/recorder.h"
#include "recorder/vm_spec.h"
#include "replay/replay.h"
#include "store/store.h"

namespace blackbox::bench {

namespace {

const char* const kWorkloads[] = {"cpu", "disk-writer", "idle", "http"};
const char* const kLoads[] = {"none", "busy", "pinned"};

bool Wanted(const std::vector<std::string>& subset, const std::string& name) {
  return subset.empty() || std::find(subset.begin(), subset.end(), name) != subset.end();
}

// The host load of one run: a busy process, and for "pinned" this process
// (so Blackbox's QEMUs too) on the busy process's CPU. Undone on destruction.
class HostLoad {
 public:
  static StatusOr<std::unique_ptr<HostLoad>> Start(const std::string& load,
                                                   const std::string& dir) {
    auto l = std::unique_ptr<HostLoad>(new HostLoad());
    if (load == "none") return l;
    std::vector<std::string> spin = {"sh", "-c", "while :; do :; done"};
    if (load == "pinned") {
      spin.insert(spin.begin(), {"taskset", "-c", "0"});
      if (::sched_getaffinity(0, sizeof l->saved_, &l->saved_) != 0) {
        return ErrnoError("sched_getaffinity", errno);
      }
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(0, &one);
      if (::sched_setaffinity(0, sizeof one, &one) != 0) {
        return ErrnoError("sched_setaffinity", errno);
      }
      l->pinned_ = true;
    }
    ASSIGN_OR_RETURN(auto busy, ChildProcess::Spawn(spin, dir + "/busy.out"));
    l->busy_ = std::move(busy);
    return l;
  }
  ~HostLoad() {
    if (busy_) busy_->Kill();
    if (pinned_) ::sched_setaffinity(0, sizeof saved_, &saved_);
  }

 private:
  HostLoad() = default;
  std::optional<ChildProcess> busy_;
  cpu_set_t saved_{};
  bool pinned_ = false;
};

std::string SpecText(const DeterminismBenchOptions& o, const std::string& role,
                     const std::string& extra) {
  return "name: soak-" + role + "\nkernel: " + o.guest_dir + "/vmlinuz\ninitrd: " + o.guest_dir +
         "/initrd.img\nappend: console=ttyS0 quiet panic=-1 bb.role=" + role + " " + extra +
         "\nmemory: 256M\n";
}

// Records the workload into a fresh store; returns the recording ids.
StatusOr<std::vector<std::string>> Record(const DeterminismBenchOptions& o,
                                          const std::string& workload, Store* store,
                                          const std::string& dir) {
  RecorderOptions ro;
  ro.data_dir = dir;
  ro.qemu_binary = o.qemu_binary;
  ro.progress_interval_ns = 0;
  if (workload == "http") {
    ASSIGN_OR_RETURN(VmSpec web, ParseVmSpec(GuestSpec(o.guest_dir, "web", "http-server",
                                                       "10.0.0.1", "52:54:00:00:00:01",
                                                       "bb.bigsize=1"),
                                             o.guest_dir));
    ASSIGN_OR_RETURN(
        VmSpec client,
        ParseVmSpec(GuestSpec(o.guest_dir, "client", "http-loop", "10.0.0.2",
                              "52:54:00:00:00:02", "bb.peer=10.0.0.1 bb.poweroff=1 bb.count=10"),
                    o.guest_dir));
    LabSpec lab;
    lab.name = "soak";
    lab.stop_when = LabSpec::StopWhen::kFirstExit;
    lab.vms = {{web, true}, {client, true}};
    LabOptions lo;
    lo.recorder = ro;
    ASSIGN_OR_RETURN(LabResult result, RunLab(store, lab, lo));
    if (!result.failures.empty()) return Internal("lab: " + result.failures.front());
    std::vector<std::string> ids;
    for (const auto& r : result.recordings) ids.push_back(r.id);
    return ids;
  }
  std::string text;
  if (workload == "cpu") text = SpecText(o, "cpu", "bb.poweroff=1");
  if (workload == "disk-writer") {
    text = SpecText(o, "disk-writer", "bb.poweroff=1") + "disks:\n  - name: data\n    size: 16M\n";
  }
  if (workload == "idle") {
    text = SpecText(o, "idle", "");
    ro.duration_ns = 6'000'000'000;
  }
  ASSIGN_OR_RETURN(VmSpec spec, ParseVmSpec(text, o.guest_dir));
  ASSIGN_OR_RETURN(RecordingInfo info, RecordVm(store, spec, ro));
  return std::vector<std::string>{info.id};
}

struct Cell {
  int recordings = 0, verified = 0, ram_identical = 0, ram_compared = 0;
  std::vector<double> verify_vs_record;
  std::vector<std::string> failures;
};

}  // namespace

StatusOr<nlohmann::json> RunDeterminismBench(const DeterminismBenchOptions& o) {
  std::map<std::pair<std::string, std::string>, Cell> cells;
  for (int run = 0; run < o.runs; ++run) {
    for (const char* workload : kWorkloads) {
      if (!Wanted(o.workloads, workload)) continue;
      for (int k = 0; k < 3; ++k) {
        const std::string load = kLoads[(run + k) % 3];  // rotating order
        if (!Wanted(o.loads, load)) continue;
        std::fprintf(stderr, "bench determinism: run %d/%d, %s, load %s\n", run + 1, o.runs,
                     workload, load.c_str());
        ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("bb-bench-det"));
        StoreOptions so;
        so.path = dir.path() + "/store";
        ASSIGN_OR_RETURN(auto store, Store::Open(so));
        std::vector<std::string> ids;
        {
          ASSIGN_OR_RETURN(auto host_load, HostLoad::Start(load, dir.path()));
          ASSIGN_OR_RETURN(ids, Record(o, workload, store.get(), dir.path()));
        }
        Cell& cell = cells[{workload, load}];
        for (const std::string& id : ids) {
          ASSIGN_OR_RETURN(RecordingInfo info, store->GetRecording(id));
          ++cell.recordings;
          if (info.state != "complete") {
            cell.failures.push_back(id + ": recording " + info.state);
            continue;
          }
          ReplayOptions ro;
          ro.qemu_binary = o.qemu_binary;
          ASSIGN_OR_RETURN(VerifyReport report, VerifyRecording(*store, id, ro));
          if (report.ok) {
            ++cell.verified;
          } else {
            cell.failures.push_back(id + ": " + report.summary);
          }
          if (report.ram.rfind("identical", 0) == 0) ++cell.ram_identical;
          if (info.extra.contains("final_ram")) ++cell.ram_compared;
          const double recorded = info.extra.value("qemu_run_seconds", 0.0);
          if (recorded > 0) cell.verify_vs_record.push_back(report.replay.qemu_seconds / recorded);
        }
      }
    }
  }

  std::printf(
      "\ndeterminism benchmark: each workload recorded and verified %d time(s) per host load "
      "(loads in\n  rotating order). verified = console, final disks and final RAM identical "
      "(blackbox verify).\n  verify / record time: the replay's QEMU start to exit over the "
      "recording's; loads busy and pinned\n  are on the recording only.\n",
      o.runs);
  std::printf("  %-12s %-8s %10s %10s %14s   %s\n", "WORKLOAD", "LOAD", "RECORDINGS", "VERIFIED",
              "RAM IDENTICAL", "VERIFY / RECORD TIME");
  nlohmann::json rows = nlohmann::json::array();
  int total = 0, ok = 0;
  for (const auto& [key, c] : cells) {
    std::printf("  %-12s %-8s %10d %10d %8d of %-3d   %s\n", key.first.c_str(), key.second.c_str(),
                c.recordings, c.verified, c.ram_identical, c.ram_compared,
                MedianSpread(c.verify_vs_record, "%.2f", "x").c_str());
    for (const auto& f : c.failures) std::printf("      FAIL %s\n", f.c_str());
    total += c.recordings;
    ok += c.verified;
    rows.push_back({{"workload", key.first},
                    {"load", key.second},
                    {"recordings", c.recordings},
                    {"verified", c.verified},
                    {"ram_identical", c.ram_identical},
                    {"ram_compared", c.ram_compared},
                    {"verify_vs_record", c.verify_vs_record},
                    {"failures", c.failures}});
  }
  std::printf("  all: %d of %d recordings verified\n", ok, total);
  return nlohmann::json{{"benchmark", "determinism"},
                        {"runs", o.runs},
                        {"rows", rows},
                        {"recordings", total},
                        {"verified", ok}};
}

}  // namespace blackbox::bench
