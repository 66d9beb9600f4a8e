#include "cli/vm_commands.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include "cli/util.h"
#include "common/clock.h"
#include "common/files.h"
#include "daemon/api_client.h"
#include "daemon/daemon.h"

namespace blackbox::cli {

namespace {

using json = nlohmann::json;

std::atomic<bool> g_console_stop{false};

std::string SocketPath(const GlobalOptions& g, const std::string& socket) {
  if (!socket.empty()) return socket;
  const char* env = std::getenv("BLACKBOX_SOCKET");
  if (env != nullptr && *env != '\0') return env;
  return DefaultSocketPath(g.data_dir);
}

}  // namespace

namespace {

int ReportReply(const StatusOr<DaemonReply>& r) {
  if (!r.ok()) return Report(r.status());
  if (r->status >= 300) {
    std::fprintf(
        stderr, "blackbox: error: %s\n",
        r->body.value("error", "the daemon answered " + std::to_string(r->status)).c_str());
    return r->status == 404 || r->status == 400 || r->status == 409 || r->status == 413
               ? kExitBadInput
               : kExitError;
  }
  return kExitOk;
}

std::string Uptime(double s) {
  char buf[32];
  if (s >= 86400) {
    std::snprintf(buf, sizeof buf, "%.0fd%02.0fh", s / 86400, std::fmod(s, 86400) / 3600);
  } else if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%.0fh%02.0fm", std::floor(s / 3600), std::fmod(s, 3600) / 60);
  } else if (s >= 60) {
    std::snprintf(buf, sizeof buf, "%.0fm%02.0fs", std::floor(s / 60), std::fmod(s, 60));
  } else {
    std::snprintf(buf, sizeof buf, "%.1fs", s);
  }
  return buf;
}

void PrintVmLine(const json& vm) {
  std::string state = vm.value("state", "");
  if (vm.value("autostart", false)) state += "+auto";
  std::printf(
      "%-16s %-14s %9s %9s/s %9s %6llu  %s\n", vm.value("name", "").c_str(), state.c_str(),
      Uptime(vm.value("uptime_s", 0.0)).c_str(), HumanBytes(vm.value("log_rate_bps", 0.0)).c_str(),
      HumanBytes(vm.value("log_stored_bytes", 0.0)).c_str(),
      static_cast<unsigned long long>(vm.value("alerts", 0ull)), vm.value("recording", "").c_str());
}

void PrintVmHeader() {
  std::printf("%-16s %-14s %9s %11s %9s %6s  %s\n", "VM", "STATE", "UPTIME", "LOG RATE", "STORED",
              "ALERTS", "RECORDING");
}

struct VmStartArgs {
  std::string spec;
  std::vector<std::string> manifests;
  bool autostart = false;
};

int RunVmStart(const GlobalOptions& g, const std::string& socket, const VmStartArgs& a) {
  if (!PathExists(a.spec)) return Report(NotFound(a.spec + ": no such file"));
  json body = {{"spec", std::filesystem::absolute(a.spec).lexically_normal().string()},
               {"autostart", a.autostart}};
  json manifests = json::object();
  for (const std::string& m : a.manifests) {
    const size_t eq = m.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == m.size()) {
      return Report(InvalidArgument("--manifest: '" + m + "' is not VM=FILE"));
    }
    manifests[m.substr(0, eq)] = std::filesystem::absolute(m.substr(eq + 1)).string();
  }
  if (!manifests.empty()) body["manifests"] = manifests;
  auto r = CallDaemon(SocketPath(g, socket), "POST", "/v1/vms", body.dump());
  if (int rc = ReportReply(r); rc != kExitOk) return rc;
  int rc = kExitOk;
  for (const auto& vm : r->body["vms"]) {
    const std::string state = vm.value("state", "");
    if (state == "running" && vm.value("recording", "").empty()) {
      std::printf("%s: starting, no recording yet (see `blackbox vm list`)\n",
                  vm.value("name", "").c_str());
    } else if (state == "running") {
      std::printf("%s: recording %s\n", vm.value("name", "").c_str(),
                  vm.value("recording", "").c_str());
    } else {
      std::printf("%s: %s: %s\n", vm.value("name", "").c_str(), state.c_str(),
                  vm.value("detail", "").c_str());
      rc = kExitFailed;
    }
  }
  return rc;
}

int RunVmStop(const GlobalOptions& g, const std::string& socket, const std::string& name) {
  std::fprintf(stderr, "blackbox: stopping %s (its recording is finalised first)...\n",
               name.c_str());
  auto r = CallDaemon(SocketPath(g, socket), "POST", "/v1/vms/" + name + "/stop");
  if (int rc = ReportReply(r); rc != kExitOk) return rc;
  std::printf("%s: recording %s %s (%s)\n", name.c_str(), r->body.value("recording", "").c_str(),
              r->body.value("state", "").c_str(), r->body.value("detail", "").c_str());
  return kExitOk;
}

int RunVmList(const GlobalOptions& g, const std::string& socket, bool as_json) {
  auto r = CallDaemon(SocketPath(g, socket), "GET", "/v1/vms");
  if (int rc = ReportReply(r); rc != kExitOk) return rc;
  if (as_json) {
    std::printf("%s\n", r->body.dump(2).c_str());
    return kExitOk;
  }
  PrintVmHeader();
  for (const auto& vm : r->body["vms"]) PrintVmLine(vm);
  if (r->body["vms"].empty()) std::printf("(no VMs; start one with `blackbox vm start SPEC`)\n");
  return kExitOk;
}

int RunVmConsole(const GlobalOptions& g, const std::string& socket, const std::string& name,
                 bool follow) {
  auto r = CallDaemon(SocketPath(g, socket), "GET", "/v1/vms/" + name);
  if (int rc = ReportReply(r); rc != kExitOk) return rc;
  const std::string id = r->body.value("recording", "");
  if (id.empty()) return Report(FailedPrecondition("VM " + name + " has no recording yet"));
  // The daemon writes the store; follow it as a secondary.
  auto dir = TempDir::Create("bb-console-follow");
  if (!dir.ok()) return Report(dir.status());
  StoreOptions o;
  o.path = g.data_dir + "/store";
  o.secondary_path = dir->path();
  auto store = Store::Open(o);
  if (!store.ok()) return Report(store.status());
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_console_stop = true; };
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  uint64_t printed = 0;
  while (true) {
    if (Status s = (*store)->CatchUp(); !s.ok()) return Report(s);
    auto info = (*store)->GetRecording(id);
    if (!info.ok()) return Report(info.status());
    auto pieces = (*store)->ReadConsole(id);
    if (!pieces.ok()) return Report(pieces.status());
    for (const ConsolePiece& p : *pieces) {
      const uint64_t end = p.offset + p.bytes.size();
      if (end <= printed) continue;
      const size_t skip = printed > p.offset ? printed - p.offset : 0;
      std::fwrite(p.bytes.data() + skip, 1, p.bytes.size() - skip, stdout);
      printed = end;
    }
    std::fflush(stdout);
    if (!follow || info->state != "recording" || g_console_stop) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return kExitOk;
}

int RunVmWait(const GlobalOptions& g, const std::string& socket, const std::string& name,
              const std::string& timeout) {
  const int64_t limit_ns = timeout.empty() ? 0 : ParseDurationNanos(timeout);
  if (limit_ns < 0)
    return Report(InvalidArgument("--timeout: '" + timeout + "' is not a duration"));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(limit_ns);
  while (true) {
    auto r = CallDaemon(SocketPath(g, socket), "GET", "/v1/vms/" + name);
    if (int rc = ReportReply(r); rc != kExitOk) return rc;
    const std::string state = r->body.value("state", "");
    if (state != "running" && state != "stopping") {
      std::printf("%s: recording %s %s (%s)\n", name.c_str(),
                  r->body.value("recording", "").c_str(), state.c_str(),
                  r->body.value("detail", "").c_str());
      return state == "complete" ? kExitOk : kExitFailed;
    }
    if (limit_ns > 0 && std::chrono::steady_clock::now() > deadline) {
      return Report(DeadlineExceeded("VM " + name + " still " + state + " after " + timeout));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

struct DaemonArgs {
  std::string socket, group, qemu, snapshot_every = "10s", chunk_age = "60s";
  bool no_sandbox = false;
};

int RunDaemonCommand(const GlobalOptions& g, const DaemonArgs& a) {
  spdlog::set_level(g.verbose ? spdlog::level::debug : spdlog::level::info);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%eZ blackbox %^%l%$: %v", spdlog::pattern_time_type::utc);
  DaemonOptions o;
  o.data_dir = std::filesystem::absolute(g.data_dir).string();
  o.socket_path = a.socket;
  o.group = a.group;
  o.sync_writes = g.sync_writes;
  o.recorder.qemu_binary = a.qemu;
  o.recorder.sandbox = !a.no_sandbox;
  o.recorder.snapshot_interval_ns = ParseDurationNanos(a.snapshot_every);
  if (o.recorder.snapshot_interval_ns < 0) {
    return Report(
        InvalidArgument("--snapshot-every: '" + a.snapshot_every + "' is not a duration"));
  }
  o.recorder.chunker.max_chunk_age_ns = ParseDurationNanos(a.chunk_age);
  if (o.recorder.chunker.max_chunk_age_ns <= 0) {
    return Report(InvalidArgument("--chunk-age: '" + a.chunk_age + "' is not a duration"));
  }
  return RunDaemon(o);
}

}  // namespace

void RegisterVmCommands(CLI::App& app, GlobalOptions& global,
                        std::vector<std::function<int()>>& runners) {
  auto da = std::make_shared<DaemonArgs>();
  auto* daemon = app.add_subcommand(
      "daemon",
      "run the appliance: owns the store and runs every VM started with `blackbox vm start` "
      "(foreground, for systemd; docs/daemon-api.md)");
  daemon->add_option("--socket", da->socket, "control socket (default: DATA/run/daemon.sock)");
  daemon->add_option(
      "--group", da->group,
      "group whose members may control the daemon (default: the daemon's own user and group)");
  daemon->add_option("--qemu", da->qemu, "QEMU binary (default: Blackbox's patched build)");
  daemon->add_flag("--no-sandbox", da->no_sandbox, "run QEMU without -sandbox");
  daemon
      ->add_option("--snapshot-every", da->snapshot_every,
                   "VM snapshots of VMs without a NIC this often (0: off)")
      ->capture_default_str();
  daemon
      ->add_option("--chunk-age", da->chunk_age,
                   "seal a log chunk after this long at most (the open one is stored every 500 ms)")
      ->capture_default_str();
  runners.push_back(
      [daemon, da, &global]() { return daemon->parsed() ? RunDaemonCommand(global, *da) : -1; });

  auto socket = std::make_shared<std::string>();
  auto* vm = app.add_subcommand("vm", "control the VMs of a running `blackbox daemon`");
  vm->require_subcommand(1);
  vm->add_option("--socket", *socket,
                 "the daemon's control socket (default: $BLACKBOX_SOCKET or DATA/run/daemon.sock)");

  auto sa = std::make_shared<VmStartArgs>();
  auto* start = vm->add_subcommand(
      "start", "start recording a VM (or a lab's VMs, together) under the daemon");
  start->add_option("spec", sa->spec, "VM spec or lab file (docs/vm-spec.md, docs/lab-spec.md)")
      ->required();
  start->add_option("--manifest", sa->manifests,
                    "VM=FILE: check VM against this manifest (overrides the spec's)");
  start->add_flag("--autostart", sa->autostart,
                  "start it again whenever the daemon starts (until `vm stop`)");
  start->fallthrough();
  runners.push_back([start, sa, socket, &global]() {
    return start->parsed() ? RunVmStart(global, *socket, *sa) : -1;
  });

  auto stop_name = std::make_shared<std::string>();
  auto* stop = vm->add_subcommand(
      "stop", "stop a VM cleanly; returns once its recording is finalised (and unmarks autostart)");
  stop->add_option("name", *stop_name, "VM name")->required();
  stop->fallthrough();
  runners.push_back([stop, stop_name, socket, &global]() {
    return stop->parsed() ? RunVmStop(global, *socket, *stop_name) : -1;
  });

  auto list_json = std::make_shared<bool>(false);
  auto* list = vm->add_subcommand(
      "list", "the daemon's VMs: state, uptime, log rate, stored bytes, alerts, recording");
  list->add_flag("--json", *list_json, "the daemon's answer as JSON");
  list->fallthrough();
  runners.push_back([list, list_json, socket, &global]() {
    return list->parsed() ? RunVmList(global, *socket, *list_json) : -1;
  });

  auto wait_name = std::make_shared<std::string>();
  auto wait_timeout = std::make_shared<std::string>();
  auto* wait =
      vm->add_subcommand("wait", "wait until a VM has ended (exit 0 if its recording is complete)");
  wait->add_option("name", *wait_name, "VM name")->required();
  wait->add_option("--timeout", *wait_timeout, "give up after this long (30s, 5m; default: never)");
  wait->fallthrough();
  runners.push_back([wait, wait_name, wait_timeout, socket, &global]() {
    return wait->parsed() ? RunVmWait(global, *socket, *wait_name, *wait_timeout) : -1;
  });

  auto console_name = std::make_shared<std::string>();
  auto console_follow = std::make_shared<bool>(false);
  auto* console = vm->add_subcommand("console", "print a running VM's serial console");
  console->add_option("name", *console_name, "VM name")->required();
  console->add_flag("-f,--follow", *console_follow,
                    "keep printing as the guest writes, until the VM stops (Ctrl-C ends)");
  console->fallthrough();
  runners.push_back([console, console_name, console_follow, socket, &global]() {
    return console->parsed() ? RunVmConsole(global, *socket, *console_name, *console_follow) : -1;
  });
}

bool DaemonServes(const GlobalOptions& g, std::string* pid) {
  auto r = CallDaemon(DefaultSocketPath(g.data_dir), "GET", "/v1/status");
  if (!r.ok() || r->status != 200) return false;
  if (pid) *pid = std::to_string(r->body.value("pid", 0));
  return true;
}

}  // namespace blackbox::cli
