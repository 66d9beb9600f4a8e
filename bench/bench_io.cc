#include "bench/bench_io.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <utility>
#include <vector>

#include "bench/bench_util.h"
#include "common/files.h"
#include "recorder/lab.h"
#include "recorder/recorder.h"
#include "recorder/vm_spec.h"
#include "replay/replay.h"
#include "store/store.h"
#include "switch/exchange_timing.h"

namespace blackbox::bench {

namespace {

int64_t MonoNow() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

enum class Variant { kUnrecorded, kStock, kPatched };
constexpr Variant kVariants[] = {Variant::kUnrecorded, Variant::kStock, Variant::kPatched};

// Row label and JSON key of each variant, in kVariants order.
constexpr struct {
  const char* name;
  const char* key;
} kVariantNames[] = {{"unrecorded", "unrecorded"},
                     {"recorded, stock QEMU", "stock"},
                     {"recorded, patched QEMU", "patched"}};
const char* Name(Variant v) { return kVariantNames[static_cast<int>(v)].name; }
const char* Key(Variant v) { return kVariantNames[static_cast<int>(v)].key; }

RecorderOptions BaseRecorder(const IoBenchOptions& o, Variant v, const std::string& dir) {
  RecorderOptions ro;
  ro.data_dir = dir;
  ro.qemu_binary = v == Variant::kStock ? o.stock_qemu : o.patched_qemu;
  ro.rr = v != Variant::kUnrecorded;
  ro.progress_interval_ns = 0;
  ro.snapshot_interval_ns = 0;
  ro.duration_ns = 900'000'000'000;
  return ro;
}

std::string ConsoleOf(const Store& store, const std::string& id) {
  auto pieces = store.ReadConsole(id);
  std::string all;
  if (pieces.ok()) {
    for (const auto& p : *pieces) all += p.bytes;
  }
  return all;
}

std::string Tail(const std::string& s, size_t n = 600) {
  return s.size() > n ? "..." + s.substr(s.size() - n) : s;
}

// Wall time the recorder read the console line that starts with `marker`, or -1.
int64_t MarkerWallNs(const std::vector<ConsolePiece>& pieces, const std::string& marker) {
  std::string all;
  for (const auto& p : pieces) {
    all += p.bytes;
    if (all.find(marker) != std::string::npos) return p.wall_ns;
  }
  return -1;
}

struct NetRun {
  std::vector<double> exchange_ms;  // one per HTTP exchange, in order
  std::vector<double> ping_ms;      // one per answered ping
  int pings_lost = 0;
  double seconds = 0;  // the lab's wall time
  // Patched variant only: verify time / record time (QEMU start to exit) of
  // each guest's recording, web then client; verified byte-exact or not.
  std::vector<double> verify_vs_record;
  bool verified = true;
};

StatusOr<NetRun> RunNet(const IoBenchOptions& o, Variant v) {
  ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("bb-bench-io"));
  StoreOptions so;
  so.path = dir.path() + "/store";
  ASSIGN_OR_RETURN(auto store, Store::Open(so));
  ASSIGN_OR_RETURN(VmSpec web, ParseVmSpec(GuestSpec(o.guest_dir, "web", "http-server", "10.0.0.1",
                                                     "52:54:00:00:00:01", "bb.bigsize=1"),
                                           o.guest_dir));
  ASSIGN_OR_RETURN(
      VmSpec client,
      ParseVmSpec(GuestSpec(o.guest_dir, "client", "http-loop", "10.0.0.2", "52:54:00:00:00:02",
                            "bb.peer=10.0.0.1 bb.poweroff=1 bb.count=" + std::to_string(o.count)),
                  o.guest_dir));
  const bool rr = v != Variant::kUnrecorded;
  LabSpec lab;
  lab.name = "bench-io";
  lab.stop_when = LabSpec::StopWhen::kFirstExit;
  lab.vms = {{web, rr}, {client, rr}};
  LabOptions lo;
  lo.recorder = BaseRecorder(o, v, dir.path());
  const int64_t t0 = MonoNow();
  ASSIGN_OR_RETURN(LabResult result, RunLab(store.get(), lab, lo));
  NetRun run;
  run.seconds = (MonoNow() - t0) / 1e9;
  if (!result.failures.empty()) return Internal("lab failed: " + result.failures.front());
  std::string client_id;
  for (const auto& r : result.recordings) {
    if (r.vm_name == "client") client_id = r.id;
  }
  if (client_id.empty() || result.capture_id.empty()) return Internal("the client did not run");
  const std::string console = ConsoleOf(*store, client_id);
  const std::string want =
      "BB-LOOP-GETS " + std::to_string(o.count) + "/" + std::to_string(o.count);
  if (console.find(want) == std::string::npos) {
    return Internal(std::string(Name(v)) + ": the client did not complete its exchanges; " +
                    "its console ends:\n" + Tail(console));
  }

  // The exchanges as the switch saw them; the last `count` connections are
  // the loop's (earlier ones are the client waiting for the server to come up).
  ASSIGN_OR_RETURN(ExchangeTimes t,
                   TimeExchanges(*store, result.capture_id, "10.0.0.2", "10.0.0.1", 80));
  if (t.exchange_ms.size() < static_cast<size_t>(o.count)) {
    return Internal(std::string(Name(v)) + ": " + std::to_string(t.exchange_ms.size()) +
                    " HTTP connections on the switch, expected at least " +
                    std::to_string(o.count));
  }
  run.exchange_ms.assign(t.exchange_ms.end() - o.count, t.exchange_ms.end());
  run.ping_ms = std::move(t.ping_ms);
  run.pings_lost = t.pings_lost;
  if (v == Variant::kPatched) {
    for (const auto& r : result.recordings) {
      std::fprintf(stderr, "bench io: ... verify %s (headless replay)\n", r.vm_name.c_str());
      ReplayOptions ro;
      ro.qemu_binary = o.patched_qemu;
      ASSIGN_OR_RETURN(VerifyReport report, VerifyRecording(*store, r.id, ro));
      ASSIGN_OR_RETURN(RecordingInfo info, store->GetRecording(r.id));
      const double recorded = info.extra.value("qemu_run_seconds", 0.0);
      if (!report.ok) {
        std::fprintf(stderr, "bench io: verify failed: %s\n", report.summary.c_str());
        run.verified = false;
      }
      if (recorded > 0) run.verify_vs_record.push_back(report.replay.qemu_seconds / recorded);
    }
  }
  return run;
}

// Records one guest (spec_text) in variant v into a fresh store and returns
// the seconds between the console markers `from` and `to` ("" for `from`:
// the first console byte). `what` names the guest in an error.
StatusOr<double> TimeBetweenMarkers(const IoBenchOptions& o, Variant v,
                                    const std::string& spec_text, const std::string& what,
                                    const std::string& from, const std::string& to) {
  ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("bb-bench-io"));
  StoreOptions so;
  so.path = dir.path() + "/store";
  ASSIGN_OR_RETURN(auto store, Store::Open(so));
  ASSIGN_OR_RETURN(VmSpec spec, ParseVmSpec(spec_text, o.guest_dir));
  ASSIGN_OR_RETURN(RecordingInfo info, RecordVm(store.get(), spec, BaseRecorder(o, v, dir.path())));
  ASSIGN_OR_RETURN(std::vector<ConsolePiece> pieces, store->ReadConsole(info.id));
  const int64_t start = from.empty() ? (pieces.empty() ? -1 : pieces.front().wall_ns)
                                     : MarkerWallNs(pieces, from);
  const int64_t done = MarkerWallNs(pieces, to);
  if (start < 0 || done < 0) {
    return Internal(std::string(Name(v)) + ": the " + what + " did not print " + to +
                    "; its console ends:\n" + Tail(ConsoleOf(*store, info.id)));
  }
  return (done - start) / 1e9;
}

StatusOr<double> RunDisk(const IoBenchOptions& o, Variant v) {
  const std::string spec_text =
      "name: disk-sync\nkernel: " + o.guest_dir + "/vmlinuz\ninitrd: " + o.guest_dir +
      "/initrd.img\nappend: console=ttyS0 quiet panic=-1 "
      "bb.role=disk-sync bb.poweroff=1 bb.records=" +
      std::to_string(o.records) + "\nmemory: 256M\ndisks:\n  - name: data\n    size: 16M\n";
  return TimeBetweenMarkers(o, v, spec_text, "disk-sync guest", "BB-SYNC-START", "BB-SYNC-DONE");
}

// Seconds from the first console byte to BB-SYSTEMD-READY.
StatusOr<double> RunBoot(const IoBenchOptions& o, Variant v) {
  const std::string spec_text =
      "name: debian\nkernel: " + o.guest_dir + "/vmlinuz\ninitrd: " + o.guest_dir +
      "/initrd.img\nappend: console=ttyS0 panic=-1 bb.role=switch-root fsck.mode=skip "
      "systemd.show_status=0\nmemory: 512M\ndisks:\n  - name: root\n    base: " +
      o.debian_dir + "/debian.raw\n    format: raw\n";
  return TimeBetweenMarkers(o, v, spec_text, "Debian guest", "", "BB-SYSTEMD-READY");
}

// Prints one row per variant of per-run seconds, with the per-round ratio to
// the unrecorded run; returns the JSON of it.
nlohmann::json PrintSecondsTable(const std::map<Variant, std::vector<double>>& runs,
                                 int per_unit, const char* unit) {
  std::printf("  %-24s %12s %12s   %-24s\n", "", "median s",
              per_unit > 0 ? (std::string("ms / ") + unit).c_str() : "", "time / unrecorded");
  nlohmann::json j;
  const auto& base = runs.at(Variant::kUnrecorded);
  for (Variant v : kVariants) {
    const auto& s = runs.at(v);
    const auto r = PairRatios(s, base);
    std::printf("  %-24s %12.2f %12s   %-24s\n", Name(v), Median(s),
                per_unit > 0 ? F(Median(s) * 1000 / per_unit, "%.1f").c_str() : "",
                v == Variant::kUnrecorded ? "" : PairRatioText(r).c_str());
    j[Key(v)] = {{"seconds", s}, {"median_s", Median(s)}};
    if (v != Variant::kUnrecorded) j[Key(v)]["ratio"] = {{"median", Median(r)}, {"per_round", r}};
  }
  return j;
}

struct Figures {
  std::vector<double> samples;   // pooled over the rounds
  std::vector<double> p50, p99;  // per round
  nlohmann::json ToJson() const {
    return {{"p50", Percentile(samples, 50)},
            {"p99", Percentile(samples, 99)},
            {"round_p50", p50},
            {"round_p99", p99},
            {"samples", samples}};
  }
};

void PrintLatencyTable(const char* what, const std::map<Variant, Figures>& fig,
                       nlohmann::json* out) {
  std::printf("\n  %s\n", what);
  std::printf("  %-24s %10s %10s   %-24s %-24s\n", "", "p50 ms", "p99 ms", "p50 / unrecorded",
              "p99 / unrecorded");
  const Figures& base = fig.at(Variant::kUnrecorded);
  for (Variant v : kVariants) {
    const Figures& f = fig.at(v);
    const auto r50 = PairRatios(f.p50, base.p50), r99 = PairRatios(f.p99, base.p99);
    std::printf("  %-24s %10.1f %10.1f   %-24s %-24s\n", Name(v), Percentile(f.samples, 50),
                Percentile(f.samples, 99),
                v == Variant::kUnrecorded ? "" : PairRatioText(r50).c_str(),
                v == Variant::kUnrecorded ? "" : PairRatioText(r99).c_str());
    nlohmann::json j = f.ToJson();
    if (v != Variant::kUnrecorded) {
      j["p50_ratio"] = {{"median", Median(r50)}, {"per_round", r50}};
      j["p99_ratio"] = {{"median", Median(r99)}, {"per_round", r99}};
    }
    (*out)[Key(v)] = j;
  }
}

}  // namespace

StatusOr<nlohmann::json> RunIoBench(const IoBenchOptions& o) {
  nlohmann::json out = {{"benchmark", "io"},          {"runs", o.runs},
                        {"count", o.count},           {"records", o.records},
                        {"stock_qemu", o.stock_qemu}, {"patched_qemu", o.patched_qemu}};
  std::printf(
      "\nio benchmark: %d round(s); each runs every variant once, in an order that rotates\n"
      "  unrecorded = patched QEMU, record: false (same -icount); stock = Debian's QEMU, rr;\n"
      "  patched = Blackbox's QEMU, rr. Ratios: median [min-max] of the per-round ratios.\n",
      o.runs);
  std::map<Variant, Figures> http, ping;
  std::map<Variant, std::vector<double>> disk, boot;
  std::map<Variant, int> lost;
  std::vector<double> lab_verify_ratio;
  bool lab_verified = true;
  for (int round = 0; round < o.runs; ++round) {
    for (int i = 0; i < 3; ++i) {
      const Variant v = kVariants[(round + i) % 3];
      if (o.net) {
        std::fprintf(stderr, "bench io: round %d/%d, net, %s\n", round + 1, o.runs, Name(v));
        ASSIGN_OR_RETURN(NetRun r, RunNet(o, v));
        Figures& h = http[v];
        h.samples.insert(h.samples.end(), r.exchange_ms.begin(), r.exchange_ms.end());
        h.p50.push_back(Percentile(r.exchange_ms, 50));
        h.p99.push_back(Percentile(r.exchange_ms, 99));
        Figures& p = ping[v];
        p.samples.insert(p.samples.end(), r.ping_ms.begin(), r.ping_ms.end());
        p.p50.push_back(Percentile(r.ping_ms, 50));
        p.p99.push_back(Percentile(r.ping_ms, 99));
        lost[v] += r.pings_lost;
        lab_verify_ratio.insert(lab_verify_ratio.end(), r.verify_vs_record.begin(),
                                r.verify_vs_record.end());
        lab_verified = lab_verified && r.verified;
      }
      if (o.disk) {
        std::fprintf(stderr, "bench io: round %d/%d, disk, %s\n", round + 1, o.runs, Name(v));
        ASSIGN_OR_RETURN(double s, RunDisk(o, v));
        disk[v].push_back(s);
      }
      if (o.boot) {
        std::fprintf(stderr, "bench io: round %d/%d, boot, %s\n", round + 1, o.runs, Name(v));
        ASSIGN_OR_RETURN(double s, RunBoot(o, v));
        boot[v].push_back(s);
      }
    }
  }
  if (o.net) {
    nlohmann::json hj, pj;
    PrintLatencyTable(("HTTP exchange (connect, GET /, close) between two guests on the switch, " +
                       std::to_string(o.count) + " per run")
                          .c_str(),
                      http, &hj);
    PrintLatencyTable(("ping RTT, " + std::to_string(o.count) + " per run").c_str(), ping, &pj);
    for (Variant v : kVariants) {
      pj[Key(v)]["lost"] = lost[v];
      if (lost[v] > 0) std::printf("  (%s: %d pings unanswered)\n", Name(v), lost[v]);
    }
    out["http_exchange_ms"] = hj;
    out["ping_rtt_ms"] = pj;
    std::printf(
        "\n  HTTP lab recorded by the patched QEMU: verify (headless replay) time / record time "
        "(QEMU start\n  to exit), per recording (web and client of every round): %s (target <= "
        "1.0x)%s\n",
        PairRatioText(lab_verify_ratio).c_str(), lab_verified ? "" : "; NOT ALL VERIFIED");
    out["http_lab_verify_vs_record"] = PairRatioJson(lab_verify_ratio);
    out["http_lab_verified"] = lab_verified;
  }
  if (o.disk) {
    std::printf("\n  %d synchronous 512-byte disk writes (O_DIRECT + fsync each)\n", o.records);
    out["disk_sync_writes"] = PrintSecondsTable(disk, o.records, "write");
  }
  if (o.boot) {
    std::printf(
        "\n  boot of a Debian 12 guest (systemd, nginx-light, ext4 root on virtio) to nginx "
        "started\n");
    out["boot_to_nginx"] = PrintSecondsTable(boot, 0, "");
  }
  return out;
}

}  // namespace blackbox::bench
