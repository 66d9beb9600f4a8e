#include "bench/bench_record.h"

#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <cstdio>
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

struct BlackboxRun {
  double wall = 0, qemu_run = 0, cpu = 0, replay_wall = 0;
  uint64_t raw = 0, stored = 0;
  bool verified = false;
};

StatusOr<BlackboxRun> RunBlackbox(const VmSpec& spec, const RecordBenchOptions& o, double seconds,
                                  bool replay) {
  ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("bb-bench"));
  StoreOptions so;
  so.path = dir.path() + "/store";
  ASSIGN_OR_RETURN(auto store, Store::Open(so));
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
  run.qemu_run = info.extra.value("qemu_run_seconds", 0.0);
  run.raw = info.extra["rr"].value("raw_bytes", uint64_t{0});
  run.stored = info.extra["rr"].value("stored_bytes", uint64_t{0});
  if (replay) {
    ReplayOptions rep;
    ASSIGN_OR_RETURN(VerifyReport report, VerifyRecording(*store, info.id, rep));
    run.replay_wall = report.replay.wall_seconds;
    run.verified = report.ok;
    if (!report.ok) std::fprintf(stderr, "bench: verify failed: %s\n", report.summary.c_str());
  }
  return run;
}

}  // namespace

StatusOr<nlohmann::json> RunRecordBench(const RecordBenchOptions& o) {
  nlohmann::json out = {{"benchmark", "record"}, {"runs", o.runs}};
  if (o.cpu) {
    ASSIGN_OR_RETURN(VmSpec spec, Spec(o, "cpu"));
    std::vector<double> plain, rr, bb, bb_qemu, bb_cpu, replay, paired;
    uint64_t rr_bytes = 0, raw = 0, stored = 0;
    bool all_verified = true;
    for (int i = 0; i < o.runs; ++i) {
      std::fprintf(stderr, "bench: cpu workload, run %d/%d: plain TCG+icount...\n", i + 1, o.runs);
      uint64_t ignored = 0;
      ASSIGN_OR_RETURN(double p, RunQemuAlone(spec, RrMode::kNone, o, 0, &ignored));
      plain.push_back(p);
      std::fprintf(stderr, "bench: ... QEMU rr to a local file...\n");
      ASSIGN_OR_RETURN(double r, RunQemuAlone(spec, RrMode::kRecord, o, 0, &rr_bytes));
      rr.push_back(r);
      std::fprintf(stderr, "bench: ... rr through Blackbox into the store, then verify...\n");
      ASSIGN_OR_RETURN(BlackboxRun b, RunBlackbox(spec, o, 0, true));
      bb.push_back(b.wall);
      bb_qemu.push_back(b.qemu_run);
      paired.push_back(b.qemu_run / r);
      bb_cpu.push_back(b.cpu);
      replay.push_back(b.replay_wall);
      raw = b.raw;
      stored = b.stored;
      all_verified = all_verified && b.verified;
    }
    double mp = Median(plain), mr = Median(rr), mb = Median(bb), mc = Median(bb_cpu),
           mrep = Median(replay);
    double mq = Median(bb_qemu), mpair = Median(paired);
    double raw_mb = raw / 1e6;
    nlohmann::json cpu = {{"plain_icount_s", mp},
                          {"qemu_rr_file_s", mr},
                          {"blackbox_s", mb},
                          {"blackbox_qemu_run_s", mq},
                          {"blackbox_vs_qemu_rr", mpair},
                          {"blackbox_end_to_end_vs_qemu_rr", mb / mr},
                          {"qemu_rr_vs_plain", mr / mp},
                          {"raw_log_bytes", raw},
                          {"qemu_rr_log_bytes", rr_bytes},
                          {"stored_bytes", stored},
                          {"compression", stored ? double(raw) / stored : 0.0},
                          {"raw_bytes_per_s", raw / mb},
                          {"stored_bytes_per_s", stored / mb},
                          {"recorder_cpu_s", mc},
                          {"recorder_cpu_s_per_raw_mb", raw_mb > 0 ? mc / raw_mb : 0},
                          {"replay_s", mrep},
                          {"replay_vs_record", mrep / mq},
                          {"replay_verified", all_verified}};
    out["cpu"] = cpu;
    std::printf(
        "\nrecord benchmark, CPU workload (guest boots, computes, powers off); median of %d "
        "run(s)\n",
        o.runs);
    Row("plain TCG + icount (baseline)", F(mp) + " s");
    Row("QEMU rr writing a local file", F(mr) + " s", F(mr / mp, "%.3fx plain"));
    Row("rr through Blackbox: QEMU start to exit", F(mq) + " s",
        F(mpair, "%.3fx QEMU rr, median of paired runs (target <= 1.02x)"));
    Row("rr through Blackbox: whole command", F(mb) + " s",
        F(mb / mr, "%.3fx QEMU rr (adds hashing inputs, overlays, finalising)"));
    Row("raw log", F(raw_mb) + " MB", F(raw / mb / 1e6, "%.2f MB/s"));
    Row("stored (zstd chunks)", F(stored / 1e3) + " KB", F(stored / mb / 1e3, "%.2f KB/s"));
    Row("compression", F(stored ? double(raw) / stored : 0, "%.0fx"), "(target >= 100x)");
    Row("recorder CPU", F(mc) + " s", F(raw_mb > 0 ? mc / raw_mb : 0, "%.3f s per raw MB"));
    Row("replay (verify, byte-exact)", F(mrep) + " s",
        F(mrep / mq, "%.2fx record time (target <= 1.0x)") + (all_verified ? "" : " NOT VERIFIED"));
  }
  if (o.idle) {
    ASSIGN_OR_RETURN(VmSpec spec, Spec(o, "idle"));
    std::vector<double> ratios;
    uint64_t raw = 0, stored = 0;
    double wall = 0, cpu_s = 0;
    for (int i = 0; i < o.runs; ++i) {
      std::fprintf(stderr, "bench: idle workload, run %d/%d: %d s through Blackbox...\n", i + 1,
                   o.runs, o.idle_seconds);
      ASSIGN_OR_RETURN(BlackboxRun b, RunBlackbox(spec, o, o.idle_seconds, false));
      ratios.push_back(b.stored ? double(b.raw) / b.stored : 0);
      raw = b.raw;
      stored = b.stored;
      wall = b.wall;
      cpu_s = b.cpu;
    }
    out["idle"] = {{"seconds", o.idle_seconds},     {"raw_log_bytes", raw},
                   {"stored_bytes", stored},        {"compression", Median(ratios)},
                   {"raw_bytes_per_s", raw / wall}, {"stored_bytes_per_s", stored / wall},
                   {"recorder_cpu_s", cpu_s}};
    std::printf("\nrecord benchmark, idle guest recorded for %d s (boot included)\n",
                o.idle_seconds);
    Row("raw log", F(raw / 1e6) + " MB", F(raw / wall / 1e3, "%.2f KB/s"));
    Row("stored", F(stored / 1e3) + " KB", F(stored / wall, "%.0f B/s"));
    Row("compression", F(Median(ratios), "%.0fx"), "(target >= 100x)");
    Row("recorder CPU", F(cpu_s) + " s");
  }
  return out;
}

}  // namespace blackbox::bench
