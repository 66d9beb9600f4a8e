#include "daemon/daemon.h"

#include <grp.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <thread>

#include "common/clock.h"
#include "common/files.h"
#include "daemon/api_server.h"
#include "recorder/lab.h"
#include "recorder/vm_host.h"
#include "store/store.h"

namespace blackbox {

namespace {

using json = nlohmann::json;
constexpr auto kStartWait = std::chrono::seconds(60);
constexpr auto kStopWait = std::chrono::seconds(120);
constexpr auto kPoll = std::chrono::milliseconds(50);

// The VMs marked to start with the daemon, by lab file: the lab's spec path,
// its manifest overrides and the names still marked (`vm stop` unmarks one).
class Autostart {
 public:
  struct Entry {
    std::string spec;
    std::map<std::string, std::string> manifests;
    std::set<std::string> names;
  };

  explicit Autostart(std::string path) : path_(std::move(path)) {}

  Status Load() {
    if (!PathExists(path_)) return Status::Ok();
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(path_, 1 << 20));
    try {
      json doc = json::parse(text);
      for (const auto& e : doc.at("labs")) {
        Entry entry;
        entry.spec = e.at("spec").get<std::string>();
        entry.manifests = e.value("manifests", std::map<std::string, std::string>());
        for (const auto& n : e.at("vms")) entry.names.insert(n.get<std::string>());
        entries_.push_back(std::move(entry));
      }
    } catch (const json::exception& e) {
      return InvalidArgument(path_ + ": not a Blackbox autostart list: " + e.what());
    }
    return Status::Ok();
  }

  std::vector<Entry> entries() const {
    std::lock_guard lock(mu_);
    return entries_;
  }

  Status Mark(Entry entry) {
    std::lock_guard lock(mu_);
    for (Entry& e : entries_) {
      for (const std::string& n : entry.names) e.names.erase(n);
    }
    entries_.push_back(std::move(entry));
    return SaveLocked();
  }

  // Unmarks a VM; OK (nothing written) if it was not marked.
  Status Unmark(const std::string& name) {
    std::lock_guard lock(mu_);
    bool changed = false;
    for (Entry& e : entries_) changed = e.names.erase(name) > 0 || changed;
    return changed ? SaveLocked() : Status::Ok();
  }

  bool Marked(const std::string& name) const {
    std::lock_guard lock(mu_);
    for (const Entry& e : entries_) {
      if (e.names.count(name)) return true;
    }
    return false;
  }

 private:
  Status SaveLocked() {
    std::erase_if(entries_, [](const Entry& e) { return e.names.empty(); });
    json labs = json::array();
    for (const Entry& e : entries_) {
      labs.push_back({{"spec", e.spec}, {"manifests", e.manifests}, {"vms", e.names}});
    }
    return WriteFileAtomic(path_, json({{"labs", labs}}).dump(2) + "\n");
  }

  const std::string path_;
  mutable std::mutex mu_;
  std::vector<Entry> entries_;
};

// Recordings and captures a dead writer left "recording" (the store's lock
// is ours, so no process writes them any more).
void MarkInterrupted(Store* store) {
  const int64_t now = RealClock::Get().WallNanos();
  if (auto list = store->ListRecordings(); list.ok()) {
    for (RecordingInfo info : *list) {
      if (info.state != "recording") continue;
      const int pid = info.extra.value("recorder_pid", 0);
      info.state = "interrupted";
      info.extra["end_reason"] = "its recorder (pid " + std::to_string(pid) +
                                 ") died; marked interrupted when the daemon started";
      info.extra["marked_interrupted_wall_ns"] = now;
      if (Status s = store->PutRecording(info); !s.ok()) {
        spdlog::error("cannot mark recording {} interrupted: {}", info.id, s.message());
      } else {
        spdlog::warn(
            "recording {} was left by a recorder that died: marked interrupted (it "
            "verifies up to its last stored chunk)",
            info.id);
      }
    }
  }
  if (auto captures = store->ListCaptures(); captures.ok()) {
    for (auto& [id, meta] : *captures) {
      if (meta.value("state", "") != "recording") continue;
      meta["state"] = "interrupted";
      meta["marked_interrupted_wall_ns"] = now;
      if (store->PutCapture(id, meta).ok()) {
        spdlog::warn("capture {} was left by a process that died: marked interrupted", id);
      }
    }
  }
}

class Appliance {
 public:
  Appliance(Store* store, VmHost* host, Autostart* autostart, std::string data_dir)
      : store_(store),
        host_(host),
        autostart_(autostart),
        data_dir_(std::move(data_dir)),
        started_wall_ns_(RealClock::Get().WallNanos()) {}

  void CountAlert(const StoredAlert& alert) {
    std::lock_guard lock(mu_);
    ++alerts_[alert.body.value("vm", "")];
  }

  void SetStopping() {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }

  ApiResponse Handle(const ApiRequest& r) {
    std::string path = r.target.substr(0, r.target.find('?'));
    static const std::regex vm_re("/v1/vms/([A-Za-z0-9_][A-Za-z0-9_.-]{0,63})(/stop)?");
    std::smatch m;
    try {
      if (path == "/v1/status") {
        if (r.method != "GET") return MethodNotAllowed(r, "GET");
        return ServerStatus();
      }
      if (path == "/v1/vms") {
        if (r.method == "GET") return ListVms();
        if (r.method == "POST") return StartVms(r.body);
        return MethodNotAllowed(r, "GET, POST");
      }
      if (std::regex_match(path, m, vm_re)) {
        const std::string name = m[1];
        if (m[2].matched) {
          if (r.method != "POST") return MethodNotAllowed(r, "POST");
          return StopVm(name);
        }
        if (r.method != "GET") return MethodNotAllowed(r, "GET");
        auto vm = host_->Get(name);
        if (!vm) return ApiResponse::Error(404, "no VM named " + name);
        return {200, VmJson(*vm)};
      }
      if (path.rfind("/v1/vms/", 0) == 0) {
        return ApiResponse::Error(404, "not a VM name (1-64 of [A-Za-z0-9_.-]): " + path.substr(8));
      }
      return ApiResponse::Error(404, "no such endpoint: " + path + " (see docs/daemon-api.md)");
    } catch (const std::exception& e) {
      spdlog::error("control request {} {}: internal error: {}", r.method, path, e.what());
      return ApiResponse::Error(500, std::string("internal error: ") + e.what());
    }
  }

  // Starts a lab (or one VM) as the API and autostart do; `only`: the names
  // to start (empty: all).
  ApiResponse StartLab(const std::string& spec_path,
                       const std::map<std::string, std::string>& manifest_paths, bool autostart,
                       const std::set<std::string>& only) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return ApiResponse::Error(503, "the daemon is stopping");
    }
    auto lab = LoadLabSpec(spec_path);
    if (!lab.ok()) return ApiResponse::Error(400, lab.status().message());
    std::set<std::string> host_vms;
    for (const auto& vm : host_->List()) host_vms.insert(vm.name);
    auto manifests = LoadLabManifests(*lab, manifest_paths, &host_vms);
    if (!manifests.ok()) return ApiResponse::Error(400, manifests.status().message());
    std::vector<size_t> picked;
    for (size_t i = 0; i < lab->vms.size(); ++i) {
      const std::string& name = lab->vms[i].spec.name;
      if (!only.empty() && !only.count(name)) continue;
      if (auto vm = host_->Get(name); vm && (vm->state == "running" || vm->state == "stopping")) {
        return ApiResponse::Error(
            409, "VM " + name + " is already running (recording " + vm->recording_id + ")");
      }
      if (Status s = CheckSpecFiles(lab->vms[i].spec); !s.ok()) {
        return ApiResponse::Error(400, name + ": " + s.message());
      }
      picked.push_back(i);
    }
    // One lab starts together: if one VM cannot start, those started for it
    // are stopped again. With stop_when: first-exit, the first of them to
    // end stops the others (as `blackbox record` does).
    std::vector<std::string> started;
    auto lab_runs = std::make_shared<std::vector<std::pair<std::string, std::string>>>();
    auto lab_mu = std::make_shared<std::mutex>();
    const bool first_exit = lab->stop_when == LabSpec::StopWhen::kFirstExit && picked.size() > 1;
    for (size_t i : picked) {
      VmHost::StartRequest request;
      request.spec = lab->vms[i].spec;
      request.rr = lab->vms[i].rr;
      request.manifest = (*manifests)[i];
      if (lab->vms.size() > 1) request.group = lab->name;
      request.stop_reason =
          "stopped by Blackbox (vm stop, its lab's first exit or the daemon's stop)";
      const std::string name = request.spec.name;
      {
        std::lock_guard lock(mu_);
        alerts_[name] = 0;
      }
      if (first_exit) {
        request.on_started = [lab_runs, lab_mu, name](const std::string& id) {
          std::lock_guard lock(*lab_mu);
          lab_runs->emplace_back(name, id);
        };
        request.on_ended = [this, lab_runs, lab_mu, name,
                            lab_name = lab->name](const StatusOr<RecordingInfo>& outcome) {
          if (!outcome.ok()) return;  // it never ran: the others run on
          std::lock_guard lock(*lab_mu);
          for (const auto& [other, id] : *lab_runs) {
            // Only the runs this start made (the name may run again later).
            auto vm = host_->Get(other);
            if (other == name || !vm || vm->recording_id != id || vm->state != "running") continue;
            spdlog::info("{} ended: stopping {} (lab {} stops at its first exit)", name, other,
                         lab_name);
            host_->Stop(other).IgnoreError();
          }
        };
      }
      Status s = host_->Start(std::move(request));
      if (!s.ok()) {
        for (const std::string& n : started) host_->Stop(n).IgnoreError();
        const int code = s.code() == StatusCode::kAlreadyExists        ? 409
                         : s.code() == StatusCode::kInvalidArgument    ? 400
                         : s.code() == StatusCode::kFailedPrecondition ? 503
                                                                       : 500;
        return ApiResponse::Error(
            code, name + ": " + s.message() +
                      (started.empty() ? "" : " (the VMs started with it are stopped again)"));
      }
      spdlog::info("VM {} started from {}", name, spec_path);
      started.push_back(name);
    }
    if (autostart) {
      Autostart::Entry entry;
      entry.spec = spec_path;
      entry.manifests = manifest_paths;
      entry.names.insert(started.begin(), started.end());
      if (Status s = autostart_->Mark(entry); !s.ok()) {
        spdlog::error("cannot save the autostart list: {}", s.message());
      }
    }
    // Answer once each VM has its recording (or has already ended).
    std::vector<VmHost::VmStatus> states;
    for (const std::string& name : started) states.push_back(WaitStarted(name));
    // A VM whose QEMU failed or whose start was refused: the lab's others
    // are stopped again (they were to run together).
    std::string failed;
    for (const auto& vm : states) {
      if (vm.state == "failed" || vm.state == "refused") failed = vm.name;
    }
    if (!failed.empty() && states.size() > 1) {
      for (auto& vm : states) {
        if (vm.name == failed || vm.state != "running") continue;
        host_->Stop(vm.name).IgnoreError();
        vm.state = "stopping";
        vm.detail = "stopped again: " + failed + " of its lab could not start";
      }
    }
    json vms = json::array();
    for (const auto& vm : states) vms.push_back(VmJson(vm));
    return {201, {{"vms", vms}}};
  }

 private:
  static ApiResponse MethodNotAllowed(const ApiRequest& r, const std::string& allowed) {
    ApiResponse a =
        ApiResponse::Error(405, r.method + " is not allowed here (allowed: " + allowed + ")");
    a.allow = allowed;
    return a;
  }

  ApiResponse ServerStatus() {
    size_t running = 0;
    for (const auto& vm : host_->List()) running += vm.state == "running";
    return {200,
            {{"pid", ::getpid()},
             {"version", "0.1.0"},
             {"data", data_dir_},
             {"started_wall_ns", started_wall_ns_},
             {"running", running},
             {"capture", host_->capture_id()}}};
  }

  json VmJson(const VmHost::VmStatus& vm) {
    const int64_t end = vm.ended_wall_ns > 0 ? vm.ended_wall_ns : RealClock::Get().WallNanos();
    const double uptime = std::max<double>(0, (end - vm.started_wall_ns) / 1e9);
    uint64_t alerts = 0;
    {
      std::lock_guard lock(mu_);
      auto it = alerts_.find(vm.name);
      if (it != alerts_.end()) alerts = it->second;
    }
    return {{"name", vm.name},
            {"lab", vm.group},
            {"recording", vm.recording_id},
            {"state", vm.state},
            {"detail", vm.detail},
            {"recorded", vm.rr},
            {"manifest", vm.manifest},
            {"autostart", autostart_->Marked(vm.name)},
            {"started_wall_ns", vm.started_wall_ns},
            {"ended_wall_ns", vm.ended_wall_ns},
            {"uptime_s", uptime},
            {"log_raw_bytes", vm.raw_bytes},
            {"log_stored_bytes", vm.stored_bytes},
            {"log_rate_bps", uptime > 0 ? vm.raw_bytes / uptime : 0.0},
            {"console_bytes", vm.console_bytes},
            {"alerts", alerts}};
  }

  ApiResponse ListVms() {
    json vms = json::array();
    for (const auto& vm : host_->List()) vms.push_back(VmJson(vm));
    return {200, {{"vms", vms}}};
  }

  ApiResponse StartVms(const std::string& body) {
    json req;
    try {
      req = json::parse(body);
    } catch (const json::exception& e) {
      return ApiResponse::Error(400, std::string("the body is not JSON: ") + e.what());
    }
    if (!req.is_object()) return ApiResponse::Error(400, "the body must be a JSON object");
    for (const auto& [key, value] : req.items()) {
      if (key != "spec" && key != "manifests" && key != "autostart") {
        return ApiResponse::Error(
            400, "unknown field '" + key + "' (allowed: spec, manifests, autostart)");
      }
    }
    if (!req.contains("spec") || !req["spec"].is_string()) {
      return ApiResponse::Error(400, "'spec' (the absolute path of a VM or lab spec) is required");
    }
    const std::string spec = req["spec"];
    if (spec.empty() || spec[0] != '/') {
      return ApiResponse::Error(400, "'spec' must be an absolute path: " + spec);
    }
    std::map<std::string, std::string> manifests;
    if (req.contains("manifests")) {
      if (!req["manifests"].is_object()) {
        return ApiResponse::Error(400, "'manifests' must map VM names to absolute paths");
      }
      for (const auto& [vm, path] : req["manifests"].items()) {
        if (!path.is_string() || path.get<std::string>().empty() ||
            path.get<std::string>()[0] != '/') {
          return ApiResponse::Error(400, "manifests." + vm + " must be an absolute path");
        }
        manifests[vm] = path.get<std::string>();
      }
    }
    if (req.contains("autostart") && !req["autostart"].is_boolean()) {
      return ApiResponse::Error(400, "'autostart' must be true or false");
    }
    return StartLab(spec, manifests, req.value("autostart", false), {});
  }

  VmHost::VmStatus WaitStarted(const std::string& name) {
    const auto deadline = std::chrono::steady_clock::now() + kStartWait;
    while (true) {
      auto vm = host_->Get(name);
      if (!vm) {
        VmHost::VmStatus gone;
        gone.name = name;
        gone.state = "failed";
        return gone;
      }
      if (!vm->recording_id.empty() || vm->state != "running" ||
          std::chrono::steady_clock::now() > deadline) {
        return *vm;
      }
      std::this_thread::sleep_for(kPoll);
    }
  }

  ApiResponse StopVm(const std::string& name) {
    Status unmark = autostart_->Unmark(name);
    Status s = host_->Stop(name);
    if (s.code() == StatusCode::kNotFound) return ApiResponse::Error(404, s.message());
    if (s.code() == StatusCode::kFailedPrecondition) {
      auto vm = host_->Get(name);
      json body = vm ? VmJson(*vm) : json::object();
      body["error"] = s.message();
      return {409, body};
    }
    spdlog::info("VM {}: stop requested", name);
    const auto deadline = std::chrono::steady_clock::now() + kStopWait;
    while (std::chrono::steady_clock::now() < deadline) {
      auto vm = host_->Get(name);
      if (vm && vm->state != "running" && vm->state != "stopping") {
        json body = VmJson(*vm);
        if (!unmark.ok()) body["warning"] = "autostart list not saved: " + unmark.message();
        return {200, body};
      }
      std::this_thread::sleep_for(kPoll);
    }
    return ApiResponse::Error(504, "VM " + name + " is still stopping after " +
                                       std::to_string(kStopWait.count()) +
                                       " s; see `blackbox vm list`");
  }

  Store* const store_;
  VmHost* const host_;
  Autostart* const autostart_;
  const std::string data_dir_;
  const int64_t started_wall_ns_;
  std::mutex mu_;
  bool stopping_ = false;
  std::map<std::string, uint64_t> alerts_;  // since the VM's last start
};

Status PrepareRunDir(const std::string& run_dir, gid_t gid) {
  // Whatever a previous daemon left (sockets of a daemon that was killed)
  // is stale: the store's lock says no other daemon runs.
  std::error_code ec;
  std::filesystem::remove_all(run_dir, ec);
  if (ec) return IOError("cannot clear " + run_dir + ": " + ec.message());
  RETURN_IF_ERROR(MakeDirs(run_dir + "/switch"));
  if (gid != static_cast<gid_t>(-1) && ::chown(run_dir.c_str(), static_cast<uid_t>(-1), gid) != 0) {
    return IOError("cannot give " + run_dir + " to the control group: " + std::strerror(errno));
  }
  ::chmod(run_dir.c_str(), 0750);
  ::chmod((run_dir + "/switch").c_str(), 0700);
  return Status::Ok();
}

}  // namespace

std::string DefaultSocketPath(const std::string& data_dir) { return data_dir + "/run/daemon.sock"; }

int RunDaemon(DaemonOptions options) {
  // Signals are taken by sigwait below; every thread started from here on
  // inherits the mask (QEMU children reset theirs).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  gid_t gid = static_cast<gid_t>(-1);
  if (!options.group.empty()) {
    group* g = ::getgrnam(options.group.c_str());
    if (g == nullptr) {
      std::fprintf(stderr, "blackbox: daemon: --group: no group named '%s' on this host\n",
                   options.group.c_str());
      return 2;
    }
    gid = g->gr_gid;
  }
  if (Status s = MakeDirs(options.data_dir); !s.ok()) {
    std::fprintf(stderr, "blackbox: daemon: %s\n", s.message().c_str());
    return 3;
  }
  StoreOptions so;
  so.path = options.data_dir + "/store";
  so.sync_writes = options.sync_writes;
  auto store = Store::Open(so);
  if (!store.ok()) {
    std::fprintf(stderr, "blackbox: daemon: %s (is a daemon or `blackbox record` running?)\n",
                 store.status().message().c_str());
    return 3;
  }
  const std::string run_dir = options.data_dir + "/run";
  const std::string socket_path =
      options.socket_path.empty() ? DefaultSocketPath(options.data_dir) : options.socket_path;
  if (Status s = PrepareRunDir(run_dir, gid); !s.ok()) {
    std::fprintf(stderr, "blackbox: daemon: %s\n", s.message().c_str());
    return 3;
  }
  MarkInterrupted(store->get());
  if (Status s = MakeDirs(options.data_dir + "/daemon"); !s.ok()) {
    std::fprintf(stderr, "blackbox: daemon: %s\n", s.message().c_str());
    return 3;
  }
  Autostart autostart(options.data_dir + "/daemon/vms.json");
  if (Status s = autostart.Load(); !s.ok()) {
    spdlog::error("{}; no VM is started with the daemon until it is fixed or removed", s.message());
  }

  VmHost::Options ho;
  ho.recorder = options.recorder;
  ho.recorder.data_dir = options.data_dir;
  ho.recorder.progress_interval_ns = 0;
  ho.capture_name = "host";
  ho.socket_dir = run_dir + "/switch";
  Appliance* appliance_ptr = nullptr;
  ho.on_alert = [&appliance_ptr](const StoredAlert& a) {
    spdlog::warn("ALERT {} {}: {}", a.body.value("vm", ""), a.body.value("rule", ""),
                 a.body.value("reason", ""));
    if (appliance_ptr) appliance_ptr->CountAlert(a);
  };
  ho.on_capture = [](const std::string& id) { spdlog::info("switch capture {}", id); };
  VmHost host(store->get(), ho);
  Appliance appliance(store->get(), &host, &autostart, options.data_dir);
  appliance_ptr = &appliance;

  ApiServer api;
  if (Status s = api.Start(socket_path, gid,
                           [&appliance](const ApiRequest& r) { return appliance.Handle(r); });
      !s.ok()) {
    std::fprintf(stderr, "blackbox: daemon: %s\n", s.message().c_str());
    host.Close();
    return 3;
  }
  spdlog::info("daemon pid {} serving {} on {}{}", ::getpid(), options.data_dir, socket_path,
               options.group.empty() ? "" : " (group " + options.group + ")");

  for (const Autostart::Entry& e : autostart.entries()) {
    ApiResponse r = appliance.StartLab(e.spec, e.manifests, false, e.names);
    if (r.status >= 300) {
      std::string names;
      for (const std::string& n : e.names) names += (names.empty() ? "" : ", ") + n;
      spdlog::error("autostart of {} from {} failed: {}", names, e.spec, r.body.value("error", ""));
    }
  }
  sd_notifyf(0, "READY=1\nSTATUS=serving %s", socket_path.c_str());

  int sig = 0;
  while (sigwait(&signals, &sig) == 0 && sig == SIGHUP) {
    spdlog::info("SIGHUP ignored (nothing to reload)");
  }
  spdlog::info("signal {}: stopping every VM", sig);
  sd_notify(0, "STOPPING=1\nSTATUS=stopping every VM");
  appliance.SetStopping();
  VmHost::Summary summary = host.Close();
  api.Stop();
  for (const VmHost::VmOutcome& o : summary.outcomes) {
    if (o.result.ok()) {
      spdlog::info("{}: recording {} {}", o.name, o.result->id, o.result->state);
    } else {
      spdlog::info("{}: {}", o.name, o.result.status().message());
    }
  }
  for (const std::string& e : summary.errors) spdlog::error("{}", e);
  spdlog::info("daemon stopped");
  return summary.errors.empty() ? 0 : 3;
}

}  // namespace blackbox
