#include "bench/bench_record.h"

#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <cstdio>
#include <memory>
#include <optional>
#include <vector>

#include "bench/bench_util.h"
#include "common/clock.h"
#include "common/files.h"
#include "common/process.h"
#include "recorder/qemu_instance.h"
#include "recorder/recorder.h"
#include "recorder/vm_spec.h"
#include "replay/replay.h"
#include "store/store.h"

namespace blackbox::bench {

namespace {

StatusOr<VmSpec> Spec(const RecordBenchOptions& o, const std::string& role) {
  std::string yaml = "name: bench-" + role + "\nkernel: " + o.guest_dir +
                     "/vmlinuz\ninitrd: " + o.guest_dir +
                     "/initrd.img\nappend: console=ttyS0 quiet panic=-1 bb.role=" + role +
                     (role == "cpu" ? " bb.poweroff=1" : "") + "\nmemory: 256M\n";
  return ParseVmSpec(yaml, o.guest_dir);
}

// Runs QEMU directly (no Blackbox reading the log) until the guest powers
// off, or for `seconds` if > 0. Returns wall seconds; fills log_bytes.
StatusOr<double> RunQemuAlone(const VmSpec& spec, RrMode mode, const RecordBenchOptions& o,
                              double seconds, uint64_t* log_bytes) {
  ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("bb-bench"));
  boost::asio::io_context io;
  Status error;
  int exit_status = 0;
  QemuInstance::Callbacks cb;
  cb.on_exit = [&](int st) {
    exit_status = st;
    io.stop();
  };
  cb.on_error = [&](Status s) { error = s; };
  QemuInstance qemu(io, cb);
  RETURN_IF_ERROR(qemu.Prepare());
  QemuRunPaths paths;
  paths.rr_log = dir.path() + "/rr.log";
  paths.rr_snapshot = mode == RrMode::kNone ? "" : "init";
  paths.qmp_socket = qemu.qmp_socket();
  paths.serial_file = qemu.serial_file();
  paths.state_image = dir.path() + "/state.qcow2";
  RETURN_IF_ERROR(CreateStateImage(paths.state_image));
  auto args = BuildQemuArgs(spec, mode, paths, o.qemu_binary);
  int64_t start = RealClock::Get().MonotonicNanos();
  RETURN_IF_ERROR(qemu.Start(args, dir.path() + "/qemu.log"));
  boost::asio::steady_timer stop(io);
  if (seconds > 0) {
    stop.expires_after(std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
    stop.async_wait([&](const boost::system::error_code& ec) {
      if (!ec) qemu.Quit();
    });
  }
  io.run();
  double wall = (RealClock::Get().MonotonicNanos() - start) / 1e9;
  RETURN_IF_ERROR(error);
  if (exit_status != 0) {
    return Internal("QEMU " + ChildProcess::DescribeWaitStatus(exit_status) + ": " +
                    TailOfFile(dir.path() + "/qemu.log", 2));
  }
  struct stat st {};
  *log_bytes = ::stat(paths.rr_log.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  return wall;
}

// A recording through Blackbox; its data directory (and store) is kept until
// it is verified.
struct BlackboxRun {
  double wall = 0, qemu_run = 0, cpu = 0;
  uint64_t raw = 0, stored = 0;
  std::optional<TempDir> dir;
  std::string id;
};

StoreOptions StoreIn(const TempDir& dir) {
  StoreOptions so;
  so.path = dir.path() + "/store";
  return so;
}

// The store is closed on return, so that none of its background work runs
// into the runs that follow.
StatusOr<BlackboxRun> RunBlackbox(const VmSpec& spec, const RecordBenchOptions& o, double seconds) {
  ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("bb-bench"));
  ASSIGN_OR_RETURN(auto store, Store::Open(StoreIn(dir)));
  RecorderOptions ro;
  ro.data_dir = dir.path();
  ro.qemu_binary = o.qemu_binary;
  ro.duration_ns = static_cast<int64_t>(seconds * 1e9);
  ro.progress_interval_ns = 0;
  ro.snapshot_interval_ns = 0;  // the baselines take no periodic snapshots either
  BlackboxRun run;
  double cpu0 = CpuSeconds();
  int64_t start = RealClock::Get().MonotonicNanos();
  ASSIGN_OR_RETURN(RecordingInfo info, RecordVm(store.get(), spec, ro));
  run.wall = (RealClock::Get().MonotonicNanos() - start) / 1e9;
  run.cpu = CpuSeconds() - cpu0;
  if (info.state != "complete") return Internal("recording ended " + info.state);
  run.id = info.id;
  run.qemu_run = info.extra.value("qemu_run_seconds", 0.0);
  run.raw = info.extra["rr"].value("raw_bytes", uint64_t{0});
  run.stored = info.extra["rr"].value("stored_bytes", uint64_t{0});
  store.reset();
  run.dir.emplace(std::move(dir));
  return run;
}

// Replays `run` headless and compares its console; returns the replay
// QEMU's start to exit (as the recording's qemu_run_seconds: without the
// final disk and RAM comparisons), sets *verified.
StatusOr<double> Verify(const BlackboxRun& run, bool* verified) {
  ASSIGN_OR_RETURN(auto store, Store::Open(StoreIn(*run.dir)));
  ASSIGN_OR_RETURN(VerifyReport report, VerifyRecording(*store, run.id, ReplayOptions{}));
  *verified = report.ok;
  if (!report.ok) std::fprintf(stderr, "bench: verify failed: %s\n", report.summary.c_str());
  return report.replay.qemu_seconds;
}

// v / 1e3 or / 1e6, for printing.
std::vector<double> Scaled(std::vector<double> v, double by) {
  for (double& x : v) x /= by;
  return v;
}

}  // namespace

StatusOr<nlohmann::json> RunRecordBench(const RecordBenchOptions& o) {
  nlohmann::json out = {{"benchmark", "record"}, {"runs", o.runs}};
  if (o.cpu) {
    ASSIGN_OR_RETURN(VmSpec spec, Spec(o, "cpu"));
    std::vector<double> plain, rr, bb, bb_qemu, bb_cpu, replay, raw, stored, rr_bytes;
    bool all_verified = true;
    enum Mode { kPlain, kRr, kBlackbox };
    // QEMU rr runs between the other two, so that each ratio below is of
    // two runs made back to back; every other round the order is reversed.
    constexpr Mode kOrder[2][3] = {{kPlain, kRr, kBlackbox}, {kBlackbox, kRr, kPlain}};
    for (int i = 0; i < o.runs; ++i) {
      std::optional<BlackboxRun> b;
      for (Mode m : kOrder[i % 2]) {
        std::fprintf(stderr, "bench: cpu workload, round %d/%d: %s...\n", i + 1, o.runs,
                     m == kPlain ? "plain TCG+icount"
                     : m == kRr  ? "QEMU rr to a local file"
                                 : "rr through Blackbox into the store");
        if (m == kBlackbox) {
          ASSIGN_OR_RETURN(BlackboxRun r, RunBlackbox(spec, o, 0));
          b.emplace(std::move(r));
          continue;
        }
        uint64_t bytes = 0;
        ASSIGN_OR_RETURN(
            double s, RunQemuAlone(spec, m == kRr ? RrMode::kRecord : RrMode::kNone, o, 0, &bytes));
        if (m == kRr) {
          rr.push_back(s);
          rr_bytes.push_back(static_cast<double>(bytes));
        } else {
          plain.push_back(s);
        }
      }
      // Verified after the round, so that the replay does not come between
      // the runs of a pair.
      std::fprintf(stderr, "bench: ... verify the Blackbox recording (headless replay)...\n");
      bool verified = false;
      ASSIGN_OR_RETURN(double rep, Verify(*b, &verified));
      bb.push_back(b->wall);
      bb_qemu.push_back(b->qemu_run);
      bb_cpu.push_back(b->cpu);
      raw.push_back(static_cast<double>(b->raw));
      stored.push_back(static_cast<double>(b->stored));
      replay.push_back(rep);
      all_verified = all_verified && verified;
    }
    // Each ratio is per round: of two runs made back to back, or of two
    // figures of one run.
    const auto rr_vs_plain = PairRatios(rr, plain), bb_vs_rr = PairRatios(bb_qemu, rr),
               cmd_vs_rr = PairRatios(bb, rr), replay_vs_record = PairRatios(replay, bb_qemu),
               compression = PairRatios(raw, stored), raw_rate = PairRatios(raw, bb),
               stored_rate = PairRatios(stored, bb),
               cpu_per_mb = PairRatios(bb_cpu, Scaled(raw, 1e6));
    out["cpu"] = {{"plain_icount_s", plain},
                  {"qemu_rr_file_s", rr},
                  {"blackbox_s", bb},
                  {"blackbox_qemu_run_s", bb_qemu},
                  {"replay_s", replay},
                  {"recorder_cpu_s", bb_cpu},
                  {"raw_log_bytes", raw},
                  {"qemu_rr_log_bytes", rr_bytes},
                  {"stored_bytes", stored},
                  {"medians",
                   {{"plain_icount_s", Median(plain)},
                    {"qemu_rr_file_s", Median(rr)},
                    {"blackbox_s", Median(bb)},
                    {"blackbox_qemu_run_s", Median(bb_qemu)},
                    {"replay_s", Median(replay)},
                    {"recorder_cpu_s", Median(bb_cpu)},
                    {"raw_log_bytes", Median(raw)},
                    {"stored_bytes", Median(stored)}}},
                  {"qemu_rr_vs_plain", PairRatioJson(rr_vs_plain)},
                  {"blackbox_vs_qemu_rr", PairRatioJson(bb_vs_rr)},
                  {"blackbox_end_to_end_vs_qemu_rr", PairRatioJson(cmd_vs_rr)},
                  {"replay_vs_record", PairRatioJson(replay_vs_record)},
                  {"compression", PairRatioJson(compression)},
                  {"raw_bytes_per_s", PairRatioJson(raw_rate)},
                  {"stored_bytes_per_s", PairRatioJson(stored_rate)},
                  {"recorder_cpu_s_per_raw_mb", PairRatioJson(cpu_per_mb)},
                  {"replay_verified", all_verified}};
    std::printf(
        "\nrecord benchmark, CPU workload (guest boots, computes, powers off); %d round(s), each "
        "running the\n  three modes back to back (plain, QEMU rr, Blackbox; reversed every other "
        "round), then verifying\n  the Blackbox recording. Values: median of the rounds. Ratios "
        "and rates: median [min-max]\n  of the per-round figures.\n",
        o.runs);
    Row("plain TCG + icount (baseline)", F(Median(plain)) + " s");
    Row("QEMU rr writing a local file", F(Median(rr)) + " s",
        PairRatioText(rr_vs_plain, "%.3f") + " plain");
    Row("rr through Blackbox: QEMU start to exit", F(Median(bb_qemu)) + " s",
        PairRatioText(bb_vs_rr, "%.3f") + " QEMU rr (target <= 1.02x)");
    Row("rr through Blackbox: whole command", F(Median(bb)) + " s",
        PairRatioText(cmd_vs_rr, "%.3f") + " QEMU rr (adds hashing inputs, overlays, finalising)");
    Row("raw log", F(Median(raw) / 1e6) + " MB",
        "rounds: " + Joined(Scaled(raw, 1e6)) + " MB; " +
            MedianSpread(Scaled(raw_rate, 1e6), "%.2f", " MB/s") + " of the whole command");
    Row("stored (zstd chunks)", F(Median(stored) / 1e3) + " KB",
        "rounds: " + Joined(Scaled(stored, 1e3), "%.1f") + " KB; " +
            MedianSpread(Scaled(stored_rate, 1e3), "%.2f", " KB/s"));
    Row("compression (raw / stored, per round)", PairRatioText(compression, "%.0f"),
        "(target >= 100x)");
    Row("recorder CPU", F(Median(bb_cpu)) + " s",
        MedianSpread(cpu_per_mb, "%.3f", " s") + " per raw MB");
    Row("replay (verify, byte-exact)", F(Median(replay)) + " s",
        PairRatioText(replay_vs_record) + " record time (QEMU start to exit; target <= 1.0x)" +
            (all_verified ? "" : " NOT VERIFIED"));
  }
  if (o.idle) {
    ASSIGN_OR_RETURN(VmSpec spec, Spec(o, "idle"));
    std::vector<double> raw, stored, wall, cpu_s, qemu_run, replay;
    bool all_verified = true;
    for (int i = 0; i < o.runs; ++i) {
      std::fprintf(stderr, "bench: idle workload, run %d/%d: %d s through Blackbox...\n", i + 1,
                   o.runs, o.idle_seconds);
      ASSIGN_OR_RETURN(BlackboxRun b, RunBlackbox(spec, o, o.idle_seconds));
      raw.push_back(static_cast<double>(b.raw));
      stored.push_back(static_cast<double>(b.stored));
      wall.push_back(b.wall);
      cpu_s.push_back(b.cpu);
      qemu_run.push_back(b.qemu_run);
      std::fprintf(stderr, "bench: ... verify it (headless replay)...\n");
      bool verified = false;
      ASSIGN_OR_RETURN(double rep, Verify(b, &verified));
      replay.push_back(rep);
      all_verified = all_verified && verified;
    }
    const auto compression = PairRatios(raw, stored), raw_rate = PairRatios(raw, wall),
               stored_rate = PairRatios(stored, wall),
               replay_vs_record = PairRatios(replay, qemu_run);
    out["idle"] = {{"seconds", o.idle_seconds},
                   {"raw_log_bytes", raw},
                   {"stored_bytes", stored},
                   {"wall_s", wall},
                   {"recorder_cpu_s", cpu_s},
                   {"blackbox_qemu_run_s", qemu_run},
                   {"replay_s", replay},
                   {"medians",
                    {{"raw_log_bytes", Median(raw)},
                     {"stored_bytes", Median(stored)},
                     {"recorder_cpu_s", Median(cpu_s)},
                     {"blackbox_qemu_run_s", Median(qemu_run)},
                     {"replay_s", Median(replay)}}},
                   {"replay_vs_record", PairRatioJson(replay_vs_record)},
                   {"replay_verified", all_verified},
                   {"compression", PairRatioJson(compression)},
                   {"raw_bytes_per_s", PairRatioJson(raw_rate)},
                   {"stored_bytes_per_s", PairRatioJson(stored_rate)}};
    std::printf(
        "\nrecord benchmark, idle guest recorded for %d s (boot included); %d run(s). Values: "
        "median of\n  the runs. Ratios and rates: median [min-max] of the per-run figures.\n",
        o.idle_seconds, o.runs);
    Row("raw log", F(Median(raw) / 1e6) + " MB",
        "runs: " + Joined(Scaled(raw, 1e6)) + " MB; " +
            MedianSpread(Scaled(raw_rate, 1e3), "%.1f", " KB/s"));
    Row("stored", F(Median(stored) / 1e3) + " KB",
        "runs: " + Joined(Scaled(stored, 1e3), "%.1f") + " KB; " +
            MedianSpread(stored_rate, "%.0f", " B/s"));
    Row("compression (raw / stored, per run)", PairRatioText(compression, "%.0f"),
        "(target >= 100x)");
    Row("recorder CPU", F(Median(cpu_s)) + " s", "runs: " + Joined(cpu_s) + " s");
    Row("replay (verify, byte-exact)", F(Median(replay)) + " s",
        PairRatioText(replay_vs_record) + " record time (QEMU start to exit; target <= 1.0x)" +
            (all_verified ? "" : " NOT VERIFIED"));
  }
  return out;
}

}  // namespace blackbox::bench
