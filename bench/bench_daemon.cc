#include "bench/bench_daemon.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "bench/bench_util.h"
#include "common/files.h"
#include "common/process.h"
#include "daemon/api_client.h"
#include "replay/replay.h"
#include "store/store.h"

namespace blackbox::bench {

namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

// A process's own CPU seconds (its threads, not its children) and the bytes
// it has passed to write(2) and friends.
struct ProcSample {
  double cpu_s = 0;
  uint64_t wchar = 0;
};

StatusOr<ProcSample> SampleProc(pid_t pid) {
  ProcSample s;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const size_t paren = text.rfind(')');
  if (paren == std::string::npos) return NotFound("process " + std::to_string(pid) + " is gone");
  std::istringstream fields(text.substr(paren + 2));
  std::string f;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14) utime = std::stoull(f);
    if (i == 15) stime = std::stoull(f);
  }
  s.cpu_s = static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  std::ifstream io("/proc/" + std::to_string(pid) + "/io");
  for (std::string key; io >> key;) {
    uint64_t v = 0;
    io >> v;
    if (key == "wchar:") s.wchar = v;
  }
  return s;
}

std::string IdleSpec(const std::string& guest_dir, const std::string& name, int indent) {
  const std::string pad(indent, ' ');
  return pad + "name: " + name + "\n" + pad + "kernel: " + guest_dir + "/vmlinuz\n" + pad +
         "initrd: " + guest_dir + "/initrd.img\n" + pad +
         "append: console=ttyS0 quiet panic=-1 bb.role=idle\n" + pad + "memory: 256M\n";
}

struct Point {
  int vms = 0;
  double boot_s = 0;        // start request to every guest's BB-READY
  double cpu_per_vm = 0;    // daemon CPU seconds per second per VM
  double wchar_per_vm = 0;  // bytes/s the daemon wrote, per VM
  double log_per_vm = 0;    // rr log bytes/s the guests' QEMUs wrote, per VM
  int verified = 0;
  std::vector<std::string> failures;
};

Status WaitReady(const std::string& socket, int n, double* boot_s) {
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + seconds(60 + 30 * n);
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = CallDaemon(socket, "GET", "/v1/vms");
    if (r.ok() && r->status == 200) {
      int ready = 0;
      for (const auto& vm : r->body["vms"]) {
        if (vm.value("state", "") != "running") {
          return Internal(vm.value("name", "") + " ended early: " + vm.value("detail", ""));
        }
        if (vm.value("console_bytes", 0) >= 29) ++ready;  // "BB-BOOT role=idle\nBB-READY\n"
      }
      if (ready == n) {
        *boot_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        return Status::Ok();
      }
    }
    std::this_thread::sleep_for(milliseconds(500));
  }
  return DeadlineExceeded(std::to_string(n) + " guests did not all boot in time");
}

// Bytes of rr log QEMU has written so far, over every recording in `data`.
uint64_t RawLogBytes(const std::string& data) {
  uint64_t sum = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(data + "/recordings", ec)) {
    sum += std::filesystem::file_size(e.path() / "rr.log", ec);
    if (ec) ec.clear();
  }
  return sum;
}

void VerifyAll(const std::string& data, const DaemonBenchOptions& o, Point* p) {
  StoreOptions so;
  so.path = data + "/store";
  so.read_only = true;
  auto store = Store::Open(so);
  if (!store.ok()) {
    p->failures.push_back(store.status().message());
    return;
  }
  auto list = (*store)->ListRecordings();
  if (!list.ok()) {
    p->failures.push_back(list.status().message());
    return;
  }
  for (const RecordingInfo& info : *list) {
    ReplayOptions ro;
    ro.qemu_binary = o.qemu_binary;
    auto report = VerifyRecording(**store, info.id, ro);
    if (report.ok() && report->ok) {
      ++p->verified;
    } else {
      p->failures.push_back(info.id + ": " +
                            (report.ok() ? report->summary : report.status().message()));
    }
  }
}

StatusOr<Point> RunDaemonPoint(const DaemonBenchOptions& o, int n) {
  Point p;
  p.vms = n;
  ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("bb-bench-daemon"));
  const std::string data = dir.path() + "/data";
  std::string lab = "lab: idle-" + std::to_string(n) + "\nstop_when: all-exit\nvms:\n";
  for (int i = 0; i < n; ++i) {
    lab += "  - vm:\n" + IdleSpec(o.guest_dir, "idle-" + std::to_string(i), 6);
  }
  const std::string lab_path = dir.path() + "/lab.yaml";
  RETURN_IF_ERROR(WriteFileAtomic(lab_path, lab));
  std::vector<std::string> argv = {o.blackbox_binary, "--data", data, "daemon"};
  if (!o.qemu_binary.empty()) argv.insert(argv.end(), {"--qemu", o.qemu_binary});
  ASSIGN_OR_RETURN(ChildProcess daemon, ChildProcess::Spawn(argv, dir.path() + "/daemon.log"));
  const std::string socket = data + "/run/daemon.sock";
  for (int i = 0; i < 300; ++i) {
    auto r = CallDaemon(socket, "GET", "/v1/status");
    if (r.ok() && r->status == 200) break;
    if (!daemon.running()) break;
    std::this_thread::sleep_for(milliseconds(100));
  }
  auto started = CallDaemon(socket, "POST", "/v1/vms", json({{"spec", lab_path}}).dump());
  if (!started.ok() || started->status != 201) {
    daemon.Kill();
    return Internal("the daemon did not start the guests: " +
                    (started.ok() ? started->body.dump() : started.status().message()) + " " +
                    TailOfFile(dir.path() + "/daemon.log", 3));
  }
  Status ready = WaitReady(socket, n, &p.boot_s);
  if (ready.ok()) {
    ASSIGN_OR_RETURN(ProcSample a, SampleProc(daemon.pid()));
    const uint64_t log_a = RawLogBytes(data);
    const auto t0 = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(seconds(o.window_seconds));
    ASSIGN_OR_RETURN(ProcSample b, SampleProc(daemon.pid()));
    const uint64_t log_b = RawLogBytes(data);
    const double w = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    p.cpu_per_vm = (b.cpu_s - a.cpu_s) / w / n;
    p.wchar_per_vm = static_cast<double>(b.wchar - a.wchar) / w / n;
    p.log_per_vm = static_cast<double>(log_b - log_a) / w / n;
  } else {
    p.failures.push_back(ready.message());
  }
  daemon.Signal(SIGTERM);
  auto exit = daemon.Wait(milliseconds(180'000));
  if (!exit.ok()) {
    daemon.Kill();
    return Internal("the daemon did not stop in 180 s");
  }
  if (o.verify && ready.ok()) VerifyAll(data, o, &p);
  return p;
}

// The baseline: one `blackbox record` of one idle guest, sampled over the
// same window once the guest has long booted.
struct Baseline {
  double cpu = 0;    // CPU seconds per second
  double wchar = 0;  // bytes/s written
};

StatusOr<Baseline> RecordBaseline(const DaemonBenchOptions& o, int settle_seconds) {
  ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("bb-bench-daemon-base"));
  const std::string spec = dir.path() + "/idle.yaml";
  RETURN_IF_ERROR(WriteFileAtomic(spec, IdleSpec(o.guest_dir, "idle", 0)));
  std::vector<std::string> argv = {o.blackbox_binary,
                                   "--data",
                                   dir.path() + "/data",
                                   "record",
                                   "-q",
                                   "--for",
                                   std::to_string(settle_seconds + o.window_seconds + 2) + "s",
                                   spec};
  if (!o.qemu_binary.empty()) argv.insert(argv.end(), {"--qemu", o.qemu_binary});
  ASSIGN_OR_RETURN(ChildProcess rec, ChildProcess::Spawn(argv, dir.path() + "/record.log"));
  std::this_thread::sleep_for(seconds(settle_seconds));
  ASSIGN_OR_RETURN(ProcSample a, SampleProc(rec.pid()));
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(seconds(o.window_seconds));
  ASSIGN_OR_RETURN(ProcSample b, SampleProc(rec.pid()));
  const double w = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto exit = rec.Wait(milliseconds(120'000));
  if (!exit.ok() || !WIFEXITED(*exit) || WEXITSTATUS(*exit) != 0) {
    rec.Kill();
    return Internal("the baseline recording failed: " + TailOfFile(dir.path() + "/record.log", 3));
  }
  return Baseline{(b.cpu_s - a.cpu_s) / w, static_cast<double>(b.wchar - a.wchar) / w};
}

}  // namespace

StatusOr<json> RunDaemonBench(const DaemonBenchOptions& o) {
  std::printf(
      "daemon benchmark: N idle test guests under one `blackbox daemon`, a %d s window "
      "after all booted\n",
      o.window_seconds);
  std::printf("  baseline: one `blackbox record` of one idle guest, same window ...\n");
  std::fflush(stdout);
  ASSIGN_OR_RETURN(Baseline base, RecordBaseline(o, 15));
  const double base_cpu = base.cpu;
  std::vector<Point> points;
  for (int n : o.vms) {
    std::printf("  %d guest(s) ...\n", n);
    std::fflush(stdout);
    ASSIGN_OR_RETURN(Point p, RunDaemonPoint(o, n));
    points.push_back(std::move(p));
  }

  std::printf("\n  %-4s %8s %15s %10s %14s %10s %14s %9s\n", "N", "boot s", "daemon CPU/VM",
              "vs record", "writes/VM", "vs record", "rr log/VM", "verified");
  int max_ok = 0;
  json rows = json::array();
  for (const Point& p : points) {
    const double ratio = base_cpu > 0 ? p.cpu_per_vm / base_cpu : 0;
    const double wratio = base.wchar > 0 ? p.wchar_per_vm / base.wchar : 0;
    std::printf("  %-4d %8.1f %14.2f%% %9.2fx %9.1f KB/s %9.2fx %9.1f KB/s %6d/%d\n", p.vms,
                p.boot_s, 100 * p.cpu_per_vm, ratio, p.wchar_per_vm / 1e3, wratio,
                p.log_per_vm / 1e3, p.verified, p.vms);
    for (const std::string& f : p.failures) std::printf("       failed: %s\n", f.c_str());
    if (o.verify && p.failures.empty() && p.verified == p.vms) max_ok = std::max(max_ok, p.vms);
    rows.push_back({{"vms", p.vms},
                    {"boot_s", p.boot_s},
                    {"daemon_cpu_per_vm", p.cpu_per_vm},
                    {"daemon_cpu_per_vm_vs_record", ratio},
                    {"daemon_write_bytes_per_s_per_vm", p.wchar_per_vm},
                    {"daemon_write_per_vm_vs_record", wratio},
                    {"rr_log_bytes_per_s_per_vm", p.log_per_vm},
                    {"verified", p.verified},
                    {"failures", p.failures}});
  }
  std::printf(
      "\n  baseline `blackbox record` of one guest: CPU %.2f%% of a core, writes %.1f KB/s\n",
      100 * base_cpu, base.wchar / 1e3);
  std::printf(
      "  CPU: the daemon process's own (user+system, its threads; not its QEMUs), per "
      "VM, as %% of one core.\n  writes: bytes the daemon passed to write(2) (the "
      "store: WAL, SSTs), per VM.\n");
  if (o.verify) {
    std::printf("  largest N with every recording verified byte-exact: %d\n", max_ok);
  }
  return json{{"bench", "daemon"},
              {"window_s", o.window_seconds},
              {"baseline_record_cpu", base_cpu},
              {"baseline_record_write_bytes_per_s", base.wchar},
              {"points", rows},
              {"max_vms_verified", o.verify ? json(max_ok) : json(nullptr)}};
}

}  // namespace blackbox::bench
