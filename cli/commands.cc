#include "cli/commands.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "bench/bench_daemon.h"
#include "bench/bench_determinism.h"
#include "bench/bench_io.h"
#include "bench/bench_manifest.h"
#include "bench/bench_record.h"
#include "bench/bench_standby.h"
#include "bench/bench_switch.h"
#include "cli/capture_commands.h"
#include "cli/manifest_commands.h"
#include "cli/util.h"
#include "cli/vm_commands.h"
#include "common/clock.h"
#include "common/files.h"
#include "common/hash.h"
#include "recorder/lab.h"
#include "recorder/qemu_binary.h"
#include "recorder/recorder.h"
#include "recorder/vm_spec.h"
#include "replay/replay.h"
#include "store/store.h"

namespace blackbox::cli {

namespace {

void InstallStopHandler() {
  struct sigaction sa {};
  sa.sa_handler = [](int) {
    RequestStopAllRecordings();
    RequestStopAllReplays();
  };
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

struct RecordArgs {
  std::string spec;
  std::string duration;
  std::string snapshot_every;  // "": 10s for VMs without a NIC, off for VMs with one
  bool console = false;
  bool keep_raw = false;
  bool no_sandbox = false;
  bool quiet = false;
  std::string qemu;  // empty: DefaultQemuBinary()
  std::string chunk_age = "60s";
  std::vector<std::string> manifests;  // VM=FILE
};

int RunRecord(const GlobalOptions& g, const RecordArgs& a) {
  RecorderOptions o;
  o.data_dir = g.data_dir;
  o.qemu_binary = a.qemu;
  o.echo_console = a.console;
  o.keep_raw_log = a.keep_raw;
  o.sandbox = !a.no_sandbox;
  if (!a.duration.empty()) {
    o.duration_ns = ParseDurationNanos(a.duration);
    if (o.duration_ns <= 0)
      return Report(
          InvalidArgument("--for: '" + a.duration + "' is not a duration like 30s or 2m"));
  }
  o.snapshot_interval_ns = ParseDurationNanos(a.snapshot_every.empty() ? "10s" : a.snapshot_every);
  if (o.snapshot_interval_ns < 0) {
    return Report(
        InvalidArgument("--snapshot-every: '" + a.snapshot_every + "' is not a duration"));
  }
  o.chunker.max_chunk_age_ns = ParseDurationNanos(a.chunk_age);
  if (o.chunker.max_chunk_age_ns <= 0) {
    return Report(InvalidArgument("--chunk-age: '" + a.chunk_age + "' is not a duration"));
  }
  if (a.quiet) o.progress_interval_ns = 0;
  auto lab = LoadLabSpec(a.spec);
  if (!lab.ok()) return Report(lab.status());
  for (const LabVm& vm : lab->vms) {
    if (Status s = CheckSpecFiles(vm.spec); !s.ok()) return Report(s.WithContext(vm.spec.name));
  }
  if (std::string pid; DaemonServes(g, &pid)) {
    return Report(FailedPrecondition("a Blackbox daemon (pid " + pid + ") owns " + g.data_dir +
                                     "; start the VM through it: blackbox vm start " + a.spec +
                                     " (or stop the daemon first)"));
  }
  auto store = OpenStore(g, false);
  if (!store.ok()) return Report(store.status());
  LabOptions lo;
  for (const std::string& m : a.manifests) {
    const size_t eq = m.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == m.size()) {
      return Report(InvalidArgument("--manifest: '" + m + "' is not VM=FILE"));
    }
    lo.manifests[m.substr(0, eq)] = std::filesystem::absolute(m.substr(eq + 1)).string();
  }
  lo.on_alert = [&a](const StoredAlert& alert) {
    if (!a.quiet) std::fprintf(stderr, "blackbox: ALERT %s\n", FormatAlert(alert).c_str());
  };
  lo.recorder = o;
  lo.snapshot_networked_vms = !a.snapshot_every.empty();
  lo.recorder.on_started = [&](const std::string& id) {
    if (!a.quiet)
      std::fprintf(stderr, "blackbox: recording %s (Ctrl-C stops and finalises)\n", id.c_str());
  };
  lo.on_capture = [&](const std::string& id) {
    if (!a.quiet) std::fprintf(stderr, "blackbox: switch capture %s\n", id.c_str());
  };
  const int64_t start_wall = RealClock::Get().WallNanos();
  auto result = RunLab(store->get(), *lab, lo);
  if (!result.ok()) return Report(result.status());
  bool all_complete = result->failures.empty();
  for (const RecordingInfo& info : result->recordings) {
    const auto& rr = info.extra["rr"];
    double raw = rr.value("raw_bytes", 0.0), stored = rr.value("stored_bytes", 0.0);
    if (rr.value("enabled", true)) {
      std::printf(
          "%s %s: %s; log %s raw -> %s stored (%.0fx), %llu chunks, icount %llu, console %llu "
          "bytes\n",
          info.id.c_str(), info.state.c_str(), info.extra.value("end_reason", "").c_str(),
          HumanBytes(raw).c_str(), HumanBytes(stored).c_str(), stored > 0 ? raw / stored : 0.0,
          static_cast<unsigned long long>(rr.value("chunks", 0)),
          static_cast<unsigned long long>(rr.value("icount", 0ull)),
          static_cast<unsigned long long>(info.extra.value("console_bytes", 0ull)));
    } else {
      std::printf("%s %s: %s; not rr-recorded, console %llu bytes\n", info.id.c_str(),
                  info.state.c_str(), info.extra.value("end_reason", "").c_str(),
                  static_cast<unsigned long long>(info.extra.value("console_bytes", 0ull)));
    }
    all_complete = all_complete && info.state == "complete";
  }
  for (const std::string& f : result->failures) std::printf("failed: %s\n", f.c_str());
  if (!result->capture_id.empty()) {
    const CaptureWriter::Stats& c = result->capture;
    uint64_t dropped = 0;
    for (const auto& p : result->capture_meta["ports"]) {
      for (const auto& [reason, n] : p["counters"]["drops"].items()) dropped += n.get<uint64_t>();
    }
    std::printf(
        "%s capture %s: %llu frames (%llu dropped by the switch), %s -> %s stored, "
        "%llu flows, %llu events%s\n",
        result->capture_id.c_str(), result->capture_meta.value("state", "").c_str(),
        static_cast<unsigned long long>(c.frames), static_cast<unsigned long long>(dropped),
        HumanBytes(c.frame_bytes).c_str(), HumanBytes(c.stored_bytes).c_str(),
        static_cast<unsigned long long>(c.flows), static_cast<unsigned long long>(c.events),
        c.shed_frames ? (", " + std::to_string(c.shed_frames) + " frames shed").c_str() : "");
    all_complete = all_complete && c.first_error.empty();
  }
  if (result->alerts.alerts > 0) {
    std::printf("%llu alert%s raised (blackbox alerts --since %s)\n",
                static_cast<unsigned long long>(result->alerts.alerts),
                result->alerts.alerts == 1 ? "" : "s", FormatWallTime(start_wall).c_str());
  }
  return all_complete ? kExitOk : kExitFailed;
}

int RunLs(const GlobalOptions& g, bool json) {
  auto store = OpenStore(g, true);
  if (!store.ok()) {
    if (store.status().code() == StatusCode::kNotFound) {
      if (!json) std::printf("no recordings\n");  // --json: no lines
      return kExitOk;
    }
    return Report(store.status());
  }
  auto list = (*store)->ListRecordings();
  if (!list.ok()) return Report(list.status());
  if (json) {
    for (const auto& r : *list) {
      auto j = r.ToJson();
      j["state"] = EffectiveState(r);
      std::printf("%s\n", j.dump().c_str());
    }
    return kExitOk;
  }
  std::printf("%-36s %-14s %-13s %-24s %8s %10s %9s %9s %7s\n", "ID", "VM", "STATE",
              "STARTED (UTC)", "SECONDS", "ICOUNT", "LOG RAW", "STORED", "RATIO");
  for (const auto& r : *list) {
    const auto rr = r.extra.value("rr", nlohmann::json::object());
    double raw = rr.value("raw_bytes", 0.0), stored = rr.value("stored_bytes", 0.0);
    double secs = r.ended_wall_ns > 0 ? (r.ended_wall_ns - r.started_wall_ns) / 1e9 : 0;
    std::printf("%-36s %-14s %-13s %-24s %8.1f %10.3g %9s %9s %6.0fx\n", r.id.c_str(),
                r.vm_name.c_str(), EffectiveState(r).c_str(),
                FormatWallTime(r.started_wall_ns).c_str(), secs, rr.value("icount", 0.0),
                HumanBytes(raw).c_str(), HumanBytes(stored).c_str(),
                stored > 0 ? raw / stored : 0.0);
  }
  if (list->empty()) std::printf("(no recordings)\n");
  for (const auto& r : *list) {
    if (EffectiveState(r) == "interrupted*") {
      std::printf(
          "* its recorder stopped without finalising it; it replays up to its last stored chunk\n");
      break;
    }
  }
  return kExitOk;
}

int RunShow(const GlobalOptions& g, const std::string& id_arg, bool json) {
  auto opened = OpenRecording(g, id_arg);
  if (!opened.ok()) return Report(opened.status());
  auto& store = opened->first;
  const std::string* id = &opened->second;
  auto info = store->GetRecording(*id);
  if (!info.ok()) return Report(info.status());
  auto chunks = store->ListRrChunks(*id);
  if (!chunks.ok()) return Report(chunks.status());
  auto events = store->ListEvents(*id);
  if (!events.ok()) return Report(events.status());
  nlohmann::json j = info->ToJson();
  j["state"] = EffectiveState(*info);
  if (json) {
    nlohmann::json cj = nlohmann::json::array();
    for (const auto& c : *chunks) {
      cj.push_back({{"seq", c.seq},
                    {"raw_offset", c.raw_offset},
                    {"raw_size", c.raw_size},
                    {"stored_size", c.stored_size},
                    {"first_icount", c.first_icount},
                    {"last_icount", c.last_icount},
                    {"first_wall_ns", c.first_wall_ns},
                    {"last_wall_ns", c.last_wall_ns},
                    {"events", c.event_count},
                    {"console_bytes", c.console_bytes},
                    {"chain", ToHex(c.chain)}});
    }
    j["chunks"] = cj;
    nlohmann::json ej = nlohmann::json::array();
    for (const auto& e : *events) ej.push_back({{"wall_ns", e.wall_ns}, {"event", e.body}});
    j["events"] = ej;
    std::printf("%s\n", j.dump(2).c_str());
    return kExitOk;
  }
  std::printf("recording  %s\nvm         %s\nstate      %s (%s)\n", info->id.c_str(),
              info->vm_name.c_str(), j["state"].get<std::string>().c_str(),
              info->extra.value("end_reason", "").c_str());
  std::printf("started    %s\n", FormatWallTime(info->started_wall_ns).c_str());
  if (info->ended_wall_ns)
    std::printf("ended      %s\n", FormatWallTime(info->ended_wall_ns).c_str());
  if (info->extra.contains("qemu")) {
    const nlohmann::json& q = info->extra["qemu"];
    std::string line = q.value("version", "");
    if (q.contains("sha256") && q["sha256"].is_string()) {
      line += ", " + q.value("resolved", q.value("binary", "")) +
              " sha256:" + q["sha256"].get<std::string>().substr(0, 16);
    }
    std::printf("qemu       %s\n", line.c_str());
  }
  for (const auto& in : info->extra.value("inputs", nlohmann::json::array())) {
    std::printf("input      %-8s %s sha256:%s\n", in.value("role", "").c_str(),
                in.value("path", "").c_str(), in.value("sha256", "").substr(0, 16).c_str());
  }
  const auto rr = info->extra.value("rr", nlohmann::json::object());
  std::printf("rr log     %zu chunks, %s raw, %s stored, icount %llu, %s\n", chunks->size(),
              HumanBytes(rr.value("raw_bytes", 0.0)).c_str(),
              HumanBytes(rr.value("stored_bytes", 0.0)).c_str(),
              static_cast<unsigned long long>(rr.value("icount", 0ull)),
              rr.value("complete", false) ? "complete (header and end event)" : "incomplete");
  std::printf("console    %llu bytes\n",
              static_cast<unsigned long long>(info->extra.value("console_bytes", 0ull)));
  for (const auto& s : info->extra.value("snapshots", nlohmann::json::array())) {
    std::printf("snapshot   %-6s %s icount %lld\n", s.value("name", "").c_str(),
                FormatWallTime(s.value("wall_ns", int64_t{0})).c_str(),
                static_cast<long long>(s.value("icount", int64_t{-1})));
  }
  std::printf("events     %zu (blackbox show --json lists them)\n", events->size());
  return kExitOk;
}

int RunConsole(const GlobalOptions& g, const std::string& id_arg) {
  auto opened = OpenRecording(g, id_arg);
  if (!opened.ok()) return Report(opened.status());
  auto& store = opened->first;
  const std::string* id = &opened->second;
  auto pieces = store->ReadConsole(*id);
  if (!pieces.ok()) return Report(pieces.status());
  for (const auto& p : *pieces) std::fwrite(p.bytes.data(), 1, p.bytes.size(), stdout);
  return kExitOk;
}

int RunExport(const GlobalOptions& g, const std::string& id_arg, const std::string& rr_path) {
  auto opened = OpenRecording(g, id_arg);
  if (!opened.ok()) return Report(opened.status());
  auto& store = opened->first;
  const std::string* id = &opened->second;
  if (Status s = ExportRrLog(*store, *id, rr_path); !s.ok()) return Report(s);
  std::fprintf(stderr,
               "blackbox: wrote %s (QEMU 7.2 rr log, replay with -icount rr=replay,rrfile=%s)\n",
               rr_path.c_str(), rr_path.c_str());
  return kExitOk;
}

struct ReplayArgs {
  std::string id;
  std::string from;
  int gdb = 0;
  bool quiet = false;
  bool no_input_check = false;
  bool no_sandbox = false;
  bool force_qemu = false;
  std::string stall = "30s";
  std::string qemu;
  std::string keep;
};

StatusOr<ReplayOptions> MakeReplayOptions(const ReplayArgs& a, const RecordingInfo& info) {
  ReplayOptions o;
  o.qemu_binary = a.qemu;
  o.gdb_port = a.gdb;
  o.check_inputs = !a.no_input_check;
  o.force_qemu = a.force_qemu;
  o.sandbox = !a.no_sandbox;
  o.work_dir = a.keep;
  o.stall_timeout_ns = ParseDurationNanos(a.stall);
  if (o.stall_timeout_ns < 0)
    return InvalidArgument("--stall-timeout: '" + a.stall + "' is not a duration");
  if (a.gdb < 0 || a.gdb > 65535) return InvalidArgument("--gdb: port must be 1..65535");
  if (!a.from.empty()) {
    o.from_wall_ns = ParseTimeNanos(a.from, info.started_wall_ns);
    if (o.from_wall_ns < 0) {
      return InvalidArgument("--from: '" + a.from +
                             "' is not a time (2026-11-21T02:10:00Z or +SECONDS from the start)");
    }
  }
  return o;
}

int RunReplay(const GlobalOptions& g, const ReplayArgs& a, bool verify) {
  auto opened = OpenRecording(g, a.id);
  if (!opened.ok()) return Report(opened.status());
  auto& store = opened->first;
  const std::string* id = &opened->second;
  auto info = store->GetRecording(*id);
  if (!info.ok()) return Report(info.status());
  auto opts = MakeReplayOptions(a, *info);
  if (!opts.ok()) return Report(opts.status());
  InstallStopHandler();
  if (verify) {
    const bool tty = ::isatty(STDERR_FILENO) != 0;
    if (!a.quiet) {
      // On a terminal the line is redrawn every second; in a log, one line
      // every 10 s is enough to show the replay is alive.
      auto calls = std::make_shared<int>(0);
      opts->on_progress = [tty, calls](uint64_t icount, uint64_t console) {
        if (!tty && (*calls)++ % 10 != 0) return;
        std::fprintf(stderr,
                     tty ? "\rblackbox: verifying... icount %.3g, console %llu bytes   "
                         : "blackbox: verifying... icount %.3g, console %llu bytes\n",
                     static_cast<double>(icount), static_cast<unsigned long long>(console));
      };
    }
    auto report = VerifyRecording(*store, *id, *opts);
    if (!a.quiet && tty) std::fprintf(stderr, "\n");
    if (!report.ok()) return Report(report.status());
    std::printf("%s: %s\n", id->c_str(), report->summary.c_str());
    return report->ok ? kExitOk : kExitFailed;
  }
  opts->echo_console = !a.quiet;
  if (a.gdb > 0) {
    std::fprintf(stderr,
                 "blackbox: replay of %s paused; attach with: gdb -ex 'target remote 127.0.0.1:%d' "
                 "(reverse-stepi / reverse-continue work)\n",
                 id->c_str(), a.gdb);
  }
  auto result = ReplayRecording(*store, *id, *opts);
  if (!result.ok()) return Report(result.status());
  std::fprintf(stderr, "blackbox: replay of %s from snapshot '%s' ended after %.1f s: %s\n",
               id->c_str(), result->snapshot.c_str(), result->wall_seconds,
               result->stop_reason.c_str());
  return result->stalled ? kExitFailed : kExitOk;
}

// The test guest directory: --guest, else $BLACKBOX_GUEST_DIR.
StatusOr<std::string> BenchGuestDir(const std::string& given) {
  std::string dir = given;
  if (dir.empty()) {
    const char* g = std::getenv("BLACKBOX_GUEST_DIR");
    dir = g ? g : "";
  }
  if (dir.empty() || !PathExists(dir + "/vmlinuz")) {
    return InvalidArgument("--guest: no test guest at '" + dir +
                           "' (build it with guest/build-guest.sh DIR, or set BLACKBOX_GUEST_DIR)");
  }
  // Specs resolve relative paths against their own directory, not ours.
  return std::filesystem::absolute(dir).lexically_normal().string();
}

int FinishBench(const StatusOr<nlohmann::json>& result, const std::string& json_path) {
  if (!result.ok()) return Report(result.status());
  std::printf("\n%s\n", result->dump().c_str());
  if (!json_path.empty()) {
    if (Status s = WriteFileAtomic(json_path, result->dump(2) + "\n"); !s.ok()) return Report(s);
  }
  return kExitOk;
}

int RunBenchDaemon(const bench::DaemonBenchOptions& o, const std::string& json_path) {
  bench::DaemonBenchOptions opts = o;
  for (int n : opts.vms) {
    if (n < 1 || n > 64) return Report(InvalidArgument("--vms: each 1..64"));
  }
  if (opts.window_seconds < 5 || opts.window_seconds > 600) {
    return Report(InvalidArgument("--window: 5..600 seconds"));
  }
  auto dir = BenchGuestDir(opts.guest_dir);
  if (!dir.ok()) return Report(dir.status());
  opts.guest_dir = *dir;
  opts.blackbox_binary = std::filesystem::read_symlink("/proc/self/exe").string();
  return FinishBench(bench::RunDaemonBench(opts), json_path);
}

int RunBenchDeterminism(const bench::DeterminismBenchOptions& o, const std::string& json_path) {
  bench::DeterminismBenchOptions opts = o;
  if (opts.runs < 1 || opts.runs > 100) return Report(InvalidArgument("--runs: 1..100"));
  for (const auto& w : opts.workloads) {
    if (w != "cpu" && w != "disk-writer" && w != "idle" && w != "http") {
      return Report(
          InvalidArgument("--workload: '" + w + "' is not cpu, disk-writer, idle or http"));
    }
  }
  for (const auto& l : opts.loads) {
    if (l != "none" && l != "busy" && l != "pinned") {
      return Report(InvalidArgument("--load: '" + l + "' is not none, busy or pinned"));
    }
  }
  auto dir = BenchGuestDir(opts.guest_dir);
  if (!dir.ok()) return Report(dir.status());
  opts.guest_dir = *dir;
  return FinishBench(bench::RunDeterminismBench(opts), json_path);
}

int RunBenchRecord(const bench::RecordBenchOptions& o, const std::string& workload,
                   const std::string& json_path) {
  bench::RecordBenchOptions opts = o;
  if (workload != "cpu" && workload != "idle" && workload != "all") {
    return Report(InvalidArgument("--workload: '" + workload + "' is not cpu, idle or all"));
  }
  opts.cpu = workload != "idle";
  opts.idle = workload != "cpu";
  if (opts.runs < 1 || opts.runs > 20) return Report(InvalidArgument("--runs: 1..20"));
  auto dir = BenchGuestDir(opts.guest_dir);
  if (!dir.ok()) return Report(dir.status());
  opts.guest_dir = *dir;
  return FinishBench(bench::RunRecordBench(opts), json_path);
}

int RunBenchSwitch(const bench::SwitchBenchOptions& o, const std::string& part,
                   const std::string& json_path) {
  bench::SwitchBenchOptions opts = o;
  if (part != "load" && part != "guests" && part != "all") {
    return Report(InvalidArgument("--part: '" + part + "' is not load, guests or all"));
  }
  opts.load = part != "guests";
  opts.guests = part != "load";
  if (opts.runs < 1 || opts.runs > 20) return Report(InvalidArgument("--runs: 1..20"));
  if (opts.load_seconds <= 0 || opts.load_seconds > 600) {
    return Report(InvalidArgument("--seconds: 0..600"));
  }
  if (opts.file_mib < 1 || opts.file_mib > 1024) return Report(InvalidArgument("--mib: 1..1024"));
  if (opts.guests) {
    auto dir = BenchGuestDir(opts.guest_dir);
    if (!dir.ok()) return Report(dir.status());
    opts.guest_dir = *dir;
  }
  return FinishBench(bench::RunSwitchBench(opts), json_path);
}

int RunBenchIo(const bench::IoBenchOptions& o, const std::string& part,
               const std::string& json_path) {
  bench::IoBenchOptions opts = o;
  if (part != "net" && part != "disk" && part != "boot" && part != "all") {
    return Report(InvalidArgument("--part: '" + part + "' is not net, disk, boot or all"));
  }
  opts.net = part == "net" || part == "all";
  opts.disk = part == "disk" || part == "all";
  opts.boot = part == "boot" || (part == "all" && !opts.debian_dir.empty());
  if (opts.boot) {
    if (opts.debian_dir.empty()) opts.debian_dir = "build/debian-guest";
    if (::access((opts.debian_dir + "/debian.raw").c_str(), R_OK) != 0) {
      return Report(FailedPrecondition(
          "--debian: no " + opts.debian_dir +
          "/debian.raw; build it with: sudo bench/build-debian-guest.sh " + opts.debian_dir));
    }
    char* abs = ::realpath(opts.debian_dir.c_str(), nullptr);
    if (abs != nullptr) {
      opts.debian_dir = abs;
      std::free(abs);
    }
  }
  if (opts.runs < 1 || opts.runs > 20) return Report(InvalidArgument("--runs: 1..20"));
  if (opts.count < 1 || opts.count > 1000) return Report(InvalidArgument("--count: 1..1000"));
  if (opts.records < 1 || opts.records > 20000) {
    return Report(InvalidArgument("--records: 1..20000"));
  }
  auto dir = BenchGuestDir(opts.guest_dir);
  if (!dir.ok()) return Report(dir.status());
  opts.guest_dir = *dir;
  return FinishBench(bench::RunIoBench(opts), json_path);
}

int RunBenchStandby(const bench::StandbyBenchOptions& o, const std::string& part,
                    const std::string& json_path) {
  bench::StandbyBenchOptions opts = o;
  if (part != "speed" && part != "follow" && part != "all") {
    return Report(InvalidArgument("--part: '" + part + "' is not speed, follow or all"));
  }
  opts.speed = part != "follow";
  opts.follow = part != "speed";
  if (opts.runs < 1 || opts.runs > 20) return Report(InvalidArgument("--runs: 1..20"));
  if (opts.placement != "shared" && opts.placement != "pinned" && opts.placement != "both") {
    return Report(
        InvalidArgument("--placement: '" + opts.placement + "' is not shared, pinned or both"));
  }
  if (opts.governor != "off" && opts.governor != "on" && opts.governor != "both") {
    return Report(InvalidArgument("--governor: '" + opts.governor + "' is not off, on or both"));
  }
  if (opts.hold_by != "qmp" && opts.hold_by != "signal") {
    return Report(InvalidArgument("--hold-by: '" + opts.hold_by + "' is not qmp or signal"));
  }
  if (opts.hold_ms < 2 || opts.hold_ms > 10000)
    return Report(InvalidArgument("--hold-ms: 2..10000"));
  if (opts.cpu_rounds < 1 || opts.cpu_rounds > 200) {
    return Report(InvalidArgument("--cpu-rounds: 1..200"));
  }
  if (opts.idle_seconds < 5 || opts.idle_seconds > 600) {
    return Report(InvalidArgument("--idle-seconds: 5..600"));
  }
  if (opts.net_mib < 1 || opts.net_mib > 256) return Report(InvalidArgument("--mib: 1..256"));
  if (opts.follow_seconds < 1 || opts.follow_seconds > 600) {
    return Report(InvalidArgument("--follow-seconds: 1..600"));
  }
  if (!PathExists(opts.patched_qemu)) {
    return Report(InvalidArgument("--qemu: no patched QEMU at '" + opts.patched_qemu +
                                  "' (build it with qemu-patches/build.sh)"));
  }
  auto dir = BenchGuestDir(opts.guest_dir);
  if (!dir.ok()) return Report(dir.status());
  opts.guest_dir = *dir;
  return FinishBench(bench::RunStandbyBench(opts), json_path);
}

int RunBenchManifest(const bench::ManifestBenchOptions& o, const std::string& part,
                     const std::string& rules, const std::string& json_path) {
  bench::ManifestBenchOptions opts = o;
  if (part != "decisions" && part != "load" && part != "all") {
    return Report(InvalidArgument("--part: '" + part + "' is not decisions, load or all"));
  }
  opts.decisions = part != "load";
  opts.load = part != "decisions";
  opts.rule_counts.clear();
  size_t at = 0;
  while (at <= rules.size()) {
    size_t comma = rules.find(',', at);
    std::string item =
        rules.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    char* end = nullptr;
    long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < 1 || v > 100000) {
      return Report(InvalidArgument("--rules: '" + rules + "' is not a list of counts 1..100000"));
    }
    opts.rule_counts.push_back(static_cast<int>(v));
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  if (opts.frames < 1000 || opts.frames > 100'000'000) {
    return Report(InvalidArgument("--frames: 1000..100000000"));
  }
  if (opts.runs < 1 || opts.runs > 20) return Report(InvalidArgument("--runs: 1..20"));
  if (!(opts.load_seconds >= 0.5 && opts.load_seconds <= 60)) {
    return Report(InvalidArgument("--seconds: 0.5..60"));
  }
  if (!(opts.slice_ms >= 10 && opts.slice_ms * 8 <= opts.load_seconds * 1000)) {
    return Report(InvalidArgument("--slice-ms: 10 ms or more, and at least 8 slices per run"));
  }
  return FinishBench(bench::RunManifestBench(opts), json_path);
}

}  // namespace

void RegisterCommands(CLI::App& app, GlobalOptions& global,
                      std::vector<std::function<int()>>& runners) {
  auto rec_args = std::make_shared<RecordArgs>();
  auto* rec = app.add_subcommand(
      "record",
      "start a VM (or a lab of VMs and the switch between them) and record it into the store");
  rec->add_option("spec", rec_args->spec, "VM spec or lab (YAML; see docs/lab-spec.md)")
      ->required();
  rec->add_option("--for", rec_args->duration,
                  "stop after this long (30s, 2m); default: until the guest powers off or Ctrl-C");
  rec->add_option("--snapshot-every", rec_args->snapshot_every,
                  "take a VM snapshot this often for replay --from and reverse debugging (0: "
                  "off; default: 10s for VMs without a NIC, off for VMs with one)");
  rec->add_option("--chunk-age", rec_args->chunk_age, "seal a log chunk after this long at most")
      ->capture_default_str();
  rec->add_option("--manifest", rec_args->manifests,
                  "check VM against this manifest (VM=FILE; repeatable; overrides the spec's "
                  "manifest:)");
  rec->add_flag("--console", rec_args->console, "copy the guest console to stdout");
  rec->add_flag("--keep-raw", rec_args->keep_raw,
                "keep QEMU's raw rr log file beside the recording");
  rec->add_flag("--no-sandbox", rec_args->no_sandbox, "do not run QEMU under -sandbox");
  rec->add_flag("-q,--quiet", rec_args->quiet, "no progress lines");
  rec->add_option("--qemu", rec_args->qemu,
                  "QEMU binary (default: Blackbox's, $BLACKBOX_QEMU or " + DefaultQemuBinary() +
                      "); stored with the recording");
  runners.push_back(
      [rec, rec_args, &global]() { return rec->parsed() ? RunRecord(global, *rec_args) : -1; });

  RegisterManifestCommands(app, global, runners);
  RegisterVmCommands(app, global, runners);

  auto ls_json = std::make_shared<bool>(false);
  auto* ls = app.add_subcommand("ls", "list recordings");
  ls->add_flag("--json", *ls_json, "one JSON object per line");
  runners.push_back(
      [ls, ls_json, &global]() { return ls->parsed() ? RunLs(global, *ls_json) : -1; });

  auto show_id = std::make_shared<std::string>();
  auto show_json = std::make_shared<bool>(false);
  auto* show = app.add_subcommand("show", "show one recording: inputs, log, snapshots, events");
  show->add_option("id", *show_id, "recording id (or a unique prefix)")->required();
  show->add_flag("--json", *show_json, "everything as JSON, with the chunk index and events");
  runners.push_back([show, show_id, show_json, &global]() {
    return show->parsed() ? RunShow(global, *show_id, *show_json) : -1;
  });

  auto console_id = std::make_shared<std::string>();
  auto* console = app.add_subcommand("console", "print a recording's serial console as recorded");
  console->add_option("id", *console_id, "recording id (or a unique prefix)")->required();
  runners.push_back([console, console_id, &global]() {
    return console->parsed() ? RunConsole(global, *console_id) : -1;
  });

  auto exp_sel = std::make_shared<CaptureSelection>();
  auto exp_rr = std::make_shared<std::string>();
  auto exp_pcap = std::make_shared<std::string>();
  auto* exp = app.add_subcommand("export", "export a recording's data");
  exp->add_option("id", exp_sel->id,
                  "recording id (or a unique prefix); for --pcapng also a VM name or capture id")
      ->required();
  exp->add_option("--rr", *exp_rr, "write the rr log as a QEMU-replayable file");
  exp->add_option("--pcapng", *exp_pcap,
                  "write the frames the switch saw (of the recording's ports, or all of a "
                  "capture) as pcapng");
  exp->add_option("--port", exp_sel->ports, "--pcapng: only this port (vm/nic or id); repeatable");
  exp->add_option("--since", exp_sel->since,
                  "--pcapng: from this time (RFC 3339 UTC, or +SECONDS from the capture's start)");
  exp->add_option("--until", exp_sel->until, "--pcapng: up to this time");
  runners.push_back([exp, exp_sel, exp_rr, exp_pcap, &global]() {
    if (!exp->parsed()) return -1;
    if (exp_rr->empty() == exp_pcap->empty()) {
      return Report(InvalidArgument("export: give exactly one of --rr FILE or --pcapng FILE"));
    }
    if (!exp_rr->empty()) return RunExport(global, exp_sel->id, *exp_rr);
    return RunExportPcapng(global, *exp_sel, *exp_pcap);
  });

  auto flows_sel = std::make_shared<CaptureSelection>();
  auto flows_json = std::make_shared<bool>(false);
  auto* flows = app.add_subcommand(
      "flows", "list the flows the switch saw: a recording's, a VM's latest, or a whole capture's");
  flows->add_option("id", flows_sel->id, "recording id or prefix, VM name, or capture id")
      ->required();
  flows->add_option("--since", flows_sel->since,
                    "flows that had frames at or after this time (RFC 3339 UTC, or +SECONDS "
                    "from the capture's start)");
  flows->add_option("--until", flows_sel->until, "flows that started at or before this time");
  flows->add_option("--port", flows_sel->ports, "only flows of this port (vm/nic or id)");
  flows->add_flag("--json", *flows_json, "one JSON flow record per line");
  runners.push_back([flows, flows_sel, flows_json, &global]() {
    return flows->parsed() ? RunFlows(global, *flows_sel, *flows_json) : -1;
  });

  auto* bench_cmd =
      app.add_subcommand("bench", "benchmarks; each prints a table and JSON with its baseline");
  bench_cmd->require_subcommand(1);
  auto bench_opts = std::make_shared<bench::RecordBenchOptions>();
  bench_opts->qemu_binary = DefaultQemuBinary();
  auto bench_workload = std::make_shared<std::string>("all");
  auto bench_json = std::make_shared<std::string>();
  auto* bench_rec = bench_cmd->add_subcommand("record",
                                              "record the test guest as plain TCG+icount, QEMU rr "
                                              "to a file, and through Blackbox; replay it");
  bench_rec->add_option("--guest", bench_opts->guest_dir,
                        "test guest directory (default $BLACKBOX_GUEST_DIR)");
  bench_rec->add_option("--workload", *bench_workload, "cpu, idle or all")->capture_default_str();
  bench_rec
      ->add_option("--runs", bench_opts->runs,
                   "rounds, each running every mode back to back; medians, and ratios as "
                   "median [min-max] of per-round ratios")
      ->capture_default_str();
  bench_rec
      ->add_option("--idle-seconds", bench_opts->idle_seconds, "how long to record the idle guest")
      ->capture_default_str();
  bench_rec->add_option("--qemu", bench_opts->qemu_binary, "QEMU binary")->capture_default_str();
  bench_rec->add_option("--json", *bench_json, "also write the figures to this file");
  runners.push_back([bench_rec, bench_opts, bench_workload, bench_json]() {
    return bench_rec->parsed() ? RunBenchRecord(*bench_opts, *bench_workload, *bench_json) : -1;
  });

  auto sw_opts = std::make_shared<bench::SwitchBenchOptions>();
  sw_opts->qemu_binary = DefaultQemuBinary();
  auto sw_part = std::make_shared<std::string>("all");
  auto sw_json = std::make_shared<std::string>();
  auto* bench_sw = bench_cmd->add_subcommand(
      "switch",
      "push 64/1500-byte frames through the switch with capture off and on; transfer a file "
      "between two guests through the switch and over a direct link");
  bench_sw->add_option("--part", *sw_part, "load, guests or all")->capture_default_str();
  bench_sw->add_option("--seconds", sw_opts->load_seconds, "load generator: seconds per row")
      ->capture_default_str();
  bench_sw
      ->add_option("--runs", sw_opts->runs,
                   "rounds, each running baseline and subject back to back (load rows, guest "
                   "transfers); medians, and ratios as median [min-max] of per-round ratios")
      ->capture_default_str();
  bench_sw->add_option("--mib", sw_opts->file_mib, "size of the file the guests transfer")
      ->capture_default_str();
  bench_sw->add_option("--guest", sw_opts->guest_dir,
                       "test guest directory (default $BLACKBOX_GUEST_DIR)");
  bench_sw->add_option("--qemu", sw_opts->qemu_binary, "QEMU binary")->capture_default_str();
  bench_sw->add_option("--json", *sw_json, "also write the figures to this file");
  runners.push_back([bench_sw, sw_opts, sw_part, sw_json]() {
    return bench_sw->parsed() ? RunBenchSwitch(*sw_opts, *sw_part, *sw_json) : -1;
  });

  auto sb_opts = std::make_shared<bench::StandbyBenchOptions>();
  sb_opts->patched_qemu = DefaultQemuBinary();
  auto sb_part = std::make_shared<std::string>("all");
  auto sb_json = std::make_shared<std::string>();
  auto* bench_sb = bench_cmd->add_subcommand(
      "standby",
      "Blackbox's QEMU patches against stock QEMU: record overhead of the streamed log, replay "
      "speed (cpu, idle, network), follow lag of a hot standby and its time to go live");
  bench_sb->add_option("--part", *sb_part, "speed, follow or all")->capture_default_str();
  bench_sb
      ->add_option("--runs", sb_opts->runs,
                   "runs per figure; medians, and ratios as median [min-max] of per-pair "
                   "ratios (pairs run back to back)")
      ->capture_default_str();
  bench_sb->add_option("--cpu-rounds", sb_opts->cpu_rounds, "rounds of the CPU workload")
      ->capture_default_str();
  bench_sb->add_option("--idle-seconds", sb_opts->idle_seconds, "how long the idle guest runs")
      ->capture_default_str();
  bench_sb->add_option("--mib", sb_opts->net_mib, "network workload: MiB fetched over HTTP")
      ->capture_default_str();
  bench_sb
      ->add_option("--follow-seconds", sb_opts->follow_seconds,
                   "go-live: seconds the counter guest is followed before its primary is killed")
      ->capture_default_str();
  bench_sb
      ->add_option("--placement", sb_opts->placement,
                   "follow: shared (both QEMUs on the same CPUs), pinned (each on its own CPU) "
                   "or both")
      ->capture_default_str();
  bench_sb
      ->add_option("--governor", sb_opts->governor,
                   "follow: off (the primary runs free), on (held while its follower lags "
                   "more than --hold-ms) or both")
      ->capture_default_str();
  bench_sb
      ->add_option("--hold-ms", sb_opts->hold_ms,
                   "governor: hold the primary above this lag, release it at half of it")
      ->capture_default_str();
  bench_sb
      ->add_option("--hold-by", sb_opts->hold_by,
                   "governor: hold the primary by qmp (stop/cont: its log stays flushed) or "
                   "signal (SIGSTOP/SIGCONT)")
      ->capture_default_str();
  bench_sb->add_option("--lag-trace", sb_opts->lag_trace,
                       "follow: write every lag sample (bytes replayed, lag, primary held) to "
                       "this CSV file");
  bench_sb
      ->add_option("--keep-logs", sb_opts->keep_logs,
                   "follow: keep each run's log, its arrival times and consoles in this "
                   "directory")
      ->check(CLI::ExistingDirectory);
  bench_sb->add_option("--guest", sb_opts->guest_dir,
                       "test guest directory (default $BLACKBOX_GUEST_DIR)");
  bench_sb
      ->add_option("--qemu", sb_opts->patched_qemu,
                   "Blackbox's patched QEMU (default: $BLACKBOX_QEMU or the build's)")
      ->capture_default_str();
  bench_sb->add_option("--stock-qemu", sb_opts->stock_qemu, "Debian's QEMU, the baseline")
      ->capture_default_str();
  bench_sb->add_option("--json", *sb_json, "also write the figures to this file");
  runners.push_back([bench_sb, sb_opts, sb_part, sb_json]() {
    return bench_sb->parsed() ? RunBenchStandby(*sb_opts, *sb_part, *sb_json) : -1;
  });

  auto io_opts = std::make_shared<bench::IoBenchOptions>();
  io_opts->patched_qemu = sb_opts->patched_qemu;
  auto io_part = std::make_shared<std::string>("all");
  auto io_json = std::make_shared<std::string>();
  auto* bench_io = bench_cmd->add_subcommand(
      "io",
      "how promptly a recorded VM takes network and disk I/O: HTTP exchanges, pings and "
      "synchronous disk writes, unrecorded vs recorded by stock and by patched QEMU");
  bench_io->add_option("--part", *io_part, "net, disk, boot or all (boot only with --debian)")
      ->capture_default_str();
  bench_io->add_option("--debian", io_opts->debian_dir,
                       "boot: directory of debian.raw from bench/build-debian-guest.sh "
                       "(default for --part boot: build/debian-guest)");
  bench_io->add_option("--runs", io_opts->runs, "rounds; each runs every variant once")
      ->capture_default_str();
  bench_io->add_option("--count", io_opts->count, "net: HTTP exchanges, and pings, per run")
      ->capture_default_str();
  bench_io->add_option("--records", io_opts->records, "disk: synchronous 512-byte writes per run")
      ->capture_default_str();
  bench_io->add_option("--guest", io_opts->guest_dir,
                       "test guest directory (default $BLACKBOX_GUEST_DIR)");
  bench_io
      ->add_option("--qemu", io_opts->patched_qemu,
                   "Blackbox's patched QEMU (default: $BLACKBOX_QEMU or the build's)")
      ->capture_default_str();
  bench_io->add_option("--stock-qemu", io_opts->stock_qemu, "Debian's QEMU")->capture_default_str();
  bench_io->add_option("--json", *io_json, "also write the figures to this file");
  runners.push_back([bench_io, io_opts, io_part, io_json]() {
    return bench_io->parsed() ? RunBenchIo(*io_opts, *io_part, *io_json) : -1;
  });

  auto det_opts = std::make_shared<bench::DeterminismBenchOptions>();
  auto det_json = std::make_shared<std::string>();
  auto* bench_det = bench_cmd->add_subcommand(
      "determinism",
      "record and verify every test workload many times under host load (none, a busy process, "
      "pinned to its CPU): how often console, final disks and final RAM replay identically");
  bench_det->add_option("--runs", det_opts->runs, "runs per workload and load")
      ->capture_default_str();
  bench_det
      ->add_option("--workload", det_opts->workloads, "cpu, disk-writer, idle, http (default: all)")
      ->delimiter(',');
  bench_det->add_option("--load", det_opts->loads, "none, busy, pinned (default: all)")
      ->delimiter(',');
  bench_det->add_option("--guest", det_opts->guest_dir,
                        "test guest directory (default $BLACKBOX_GUEST_DIR)");
  bench_det->add_option("--qemu", det_opts->qemu_binary,
                        "QEMU (default: $BLACKBOX_QEMU or the build's patched one)");
  bench_det->add_option("--json", *det_json, "also write the figures to this file");
  runners.push_back([bench_det, det_opts, det_json]() {
    return bench_det->parsed() ? RunBenchDeterminism(*det_opts, *det_json) : -1;
  });

  auto dm_opts = std::make_shared<bench::DaemonBenchOptions>();
  auto dm_json = std::make_shared<std::string>();
  auto* bench_dm = bench_cmd->add_subcommand(
      "daemon",
      "N idle guests under one blackbox daemon: its own CPU and store writes per VM (against one "
      "blackbox record), and the largest N whose recordings all verify byte-exact");
  bench_dm->add_option("--vms", dm_opts->vms, "guest counts (default 1,2,4,8)")->delimiter(',');
  bench_dm->add_option("--window", dm_opts->window_seconds, "seconds measured once all booted")
      ->capture_default_str();
  bench_dm->add_flag("!--no-verify", dm_opts->verify, "skip verifying the recordings");
  bench_dm->add_option("--guest", dm_opts->guest_dir,
                       "test guest directory (default $BLACKBOX_GUEST_DIR)");
  bench_dm->add_option("--qemu", dm_opts->qemu_binary,
                       "QEMU (default: $BLACKBOX_QEMU or the build's patched one)");
  bench_dm->add_option("--json", *dm_json, "also write the figures to this file");
  runners.push_back([bench_dm, dm_opts, dm_json]() {
    return bench_dm->parsed() ? RunBenchDaemon(*dm_opts, *dm_json) : -1;
  });

  auto mb_opts = std::make_shared<bench::ManifestBenchOptions>();
  auto mb_part = std::make_shared<std::string>("all");
  auto mb_rules = std::make_shared<std::string>("10,1000,10000");
  auto mb_json = std::make_shared<std::string>();
  auto* bench_mb = bench_cmd->add_subcommand(
      "manifest",
      "what checking frames against manifests costs: per-frame decision time at 10, 1,000 and "
      "10,000 rules, and switch throughput with checking off and on");
  bench_mb->add_option("--part", *mb_part, "decisions, load or all")->capture_default_str();
  bench_mb->add_option("--rules", *mb_rules, "rule counts, comma-separated")->capture_default_str();
  bench_mb->add_option("--frames", mb_opts->frames, "frames per decision figure")
      ->capture_default_str();
  bench_mb->add_option("--seconds", mb_opts->load_seconds, "load generator: seconds per run")
      ->capture_default_str();
  bench_mb
      ->add_option("--slice-ms", mb_opts->slice_ms,
                   "load: checking on and off in turn, this many ms each")
      ->capture_default_str();
  bench_mb
      ->add_option("--runs", mb_opts->runs,
                   "load runs per row; medians, and on/off as median [min-max] of the runs")
      ->capture_default_str();
  bench_mb->add_option("--json", *mb_json, "also write the figures to this file");
  runners.push_back([bench_mb, mb_opts, mb_part, mb_rules, mb_json]() {
    return bench_mb->parsed() ? RunBenchManifest(*mb_opts, *mb_part, *mb_rules, *mb_json) : -1;
  });

  for (bool verify : {false, true}) {
    auto args = std::make_shared<ReplayArgs>();
    auto* cmd =
        verify ? app.add_subcommand("verify",
                                    "check the chunk chain and replay headless: the console must "
                                    "match the recording byte for byte (exit 0 only then)")
               : app.add_subcommand("replay", "replay a recording under QEMU, showing its console");
    cmd->add_option("id", args->id, "recording id (or a unique prefix)")->required();
    if (!verify) {
      cmd->add_option(
          "--from", args->from,
          "start from the latest snapshot at or before this time (RFC 3339 UTC, or +SECONDS "
          "from the recording's start)");
      cmd->add_option("--gdb", args->gdb, "serve QEMU's gdbstub on 127.0.0.1:PORT, start paused");
    }
    cmd->add_option("--stall-timeout", args->stall,
                    "fail when the replay makes no progress this long (0: never)")
        ->capture_default_str();
    cmd->add_flag("--no-input-check", args->no_input_check,
                  "replay even if kernel/initrd/disks differ from the recorded hashes");
    cmd->add_flag("--no-sandbox", args->no_sandbox, "do not run QEMU under -sandbox");
    cmd->add_option("--qemu", args->qemu,
                    "QEMU binary (default: the one that recorded, found by its SHA-256)");
    cmd->add_flag("--force-qemu", args->force_qemu,
                  "replay with --qemu (or the default QEMU) though it is not the binary that "
                  "recorded; the replay may diverge");
    cmd->add_option("--keep", args->keep, "rebuild into this directory and keep it");
    cmd->add_flag("-q,--quiet", args->quiet,
                  verify ? "no progress line" : "do not print the console");
    runners.push_back([cmd, args, verify, &global]() {
      return cmd->parsed() ? RunReplay(global, *args, verify) : -1;
    });
  }
}

}  // namespace blackbox::cli
