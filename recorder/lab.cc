#include "recorder/lab.h"

#include <pthread.h>
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <regex>
#include <set>
#include <thread>

#include "common/clock.h"
#include "common/files.h"
#include "common/hash.h"

namespace blackbox {

namespace {

Status LabError(const YAML::Node& node, const std::string& field, const std::string& what) {
  std::string where = "lab";
  if (node.IsDefined() && node.Mark().line >= 0) {
    where += " line " + std::to_string(node.Mark().line + 1);
  }
  return InvalidArgument(where + ": " + field + ": " + what);
}

Status ParseLabNode(const YAML::Node& root, const std::string& base_dir, LabSpec& lab) {
  for (const auto& kv : root) {
    std::string key = kv.first.as<std::string>();
    if (key != "lab" && key != "vms" && key != "stop_when") {
      return LabError(kv.first, key, "unknown key (allowed: lab, stop_when, vms)");
    }
  }
  YAML::Node name = root["lab"];
  if (!name.IsDefined() || !name.IsScalar()) return LabError(root, "lab", "is required (a name)");
  static const std::regex name_re("[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}");
  lab.name = name.Scalar();
  if (!std::regex_match(lab.name, name_re)) {
    return LabError(name, "lab", "'" + lab.name + "' must be 1-64 of [A-Za-z0-9_.-]");
  }
  if (YAML::Node stop = root["stop_when"]; stop.IsDefined()) {
    std::string v = stop.IsScalar() ? stop.Scalar() : "";
    if (v == "first-exit") {
      lab.stop_when = LabSpec::StopWhen::kFirstExit;
    } else if (v == "all-exit") {
      lab.stop_when = LabSpec::StopWhen::kAllExit;
    } else {
      return LabError(stop, "stop_when", "'" + v + "' is not first-exit or all-exit");
    }
  }
  YAML::Node vms = root["vms"];
  if (!vms.IsSequence() || vms.size() == 0) {
    return LabError(vms.IsDefined() ? vms : root, "vms", "must be a non-empty list");
  }
  if (vms.size() > 16) return LabError(vms, "vms", "at most 16 VMs per lab");
  std::set<std::string> names, macs;
  for (size_t i = 0; i < vms.size(); ++i) {
    const YAML::Node& v = vms[i];
    std::string field = "vms[" + std::to_string(i) + "]";
    if (!v.IsMap()) return LabError(v, field, "must be a mapping with spec: or vm:");
    for (const auto& kv : v) {
      std::string key = kv.first.as<std::string>();
      if (key != "spec" && key != "vm" && key != "record") {
        return LabError(kv.first, field + "." + key, "unknown key (allowed: spec, vm, record)");
      }
    }
    LabVm vm;
    if (YAML::Node rec = v["record"]; rec.IsDefined()) {
      std::string r = rec.IsScalar() ? rec.Scalar() : "";
      if (r != "true" && r != "false")
        return LabError(rec, field + ".record", "must be true or false");
      vm.rr = r == "true";
    }
    YAML::Node file = v["spec"], inline_spec = v["vm"];
    if (file.IsDefined() == inline_spec.IsDefined()) {
      return LabError(v, field, "needs exactly one of spec: (a VM spec file) or vm: (inline)");
    }
    if (file.IsDefined()) {
      if (!file.IsScalar()) return LabError(file, field + ".spec", "must be a path");
      auto spec = LoadVmSpec(ResolvePath(file.Scalar(), base_dir));
      if (!spec.ok()) return LabError(file, field + ".spec", spec.status().message());
      vm.spec = std::move(*spec);
    } else {
      auto spec = ParseVmSpecNode(inline_spec, base_dir);
      if (!spec.ok()) return InvalidArgument("lab " + field + ".vm: " + spec.status().message());
      vm.spec = std::move(*spec);
    }
    if (!names.insert(vm.spec.name).second) {
      return LabError(v, field, "VM name '" + vm.spec.name + "' is used twice");
    }
    for (const NicSpec& nic : vm.spec.nics) {
      if (!macs.insert(nic.mac).second) {
        return LabError(
            v, field,
            "MAC " + nic.mac + " (" + vm.spec.name + "/" + nic.name + ") is used twice in the lab");
      }
    }
    lab.vms.push_back(std::move(vm));
  }
  return Status::Ok();
}

struct PortPlan {
  uint32_t id = 0;
  size_t vm = 0;
  std::string vm_name, nic, name, mac, segment, socket;
  std::vector<std::string> ips;
  nlohmann::json ToJson() const {
    return {{"id", id},   {"name", name},       {"vm", vm_name}, {"nic", nic},
            {"mac", mac}, {"segment", segment}, {"ips", ips}};
  }
};

}  // namespace

StatusOr<LabSpec> ParseLabSpec(const std::string& yaml_text, const std::string& base_dir) {
  LabSpec lab;
  lab.source_text = yaml_text;
  try {
    YAML::Node root = YAML::Load(yaml_text);
    if (!root.IsMap()) return InvalidArgument("lab: the top level must be a mapping");
    if (!root["vms"].IsDefined()) {  // a plain VM spec: a lab of one
      ASSIGN_OR_RETURN(VmSpec spec, ParseVmSpec(yaml_text, base_dir));
      lab.name = spec.name;
      lab.vms.push_back({std::move(spec), true});
      return lab;
    }
    RETURN_IF_ERROR(ParseLabNode(root, base_dir, lab));
  } catch (const YAML::Exception& e) {
    return InvalidArgument("lab line " + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  return lab;
}

StatusOr<LabSpec> LoadLabSpec(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, 1 << 20));
  std::string dir = std::filesystem::absolute(path).parent_path().string();
  auto lab = ParseLabSpec(text, dir);
  if (!lab.ok()) return lab.status().WithContext(path);
  return lab;
}

StatusOr<std::string> NewCaptureId(Store* store, const std::string& lab_name, int64_t wall_ns) {
  return NewTimestampedId(lab_name, wall_ns, [store](const std::string& id) -> StatusOr<bool> {
    auto existing = store->GetCapture(id);
    if (!existing.ok() && existing.status().code() == StatusCode::kNotFound) return false;
    if (!existing.ok()) return existing.status();
    return true;
  });
}

StatusOr<LabResult> RunLab(Store* store, const LabSpec& lab, const LabOptions& options) {
  for (const LabVm& vm : lab.vms) RETURN_IF_ERROR(CheckSpecFiles(vm.spec));
  LabResult result;

  // Manifests: loaded and checked before anything starts.
  for (const auto& [name, path] : options.manifests) {
    bool known = false;
    for (const LabVm& vm : lab.vms) known = known || vm.spec.name == name;
    if (!known)
      return InvalidArgument("--manifest " + name + "=...: no VM named " + name + " in lab " +
                             lab.name);
  }
  std::vector<std::shared_ptr<const Manifest>> manifests(lab.vms.size());
  RuleSet::VmAddresses addresses;
  for (const LabVm& vm : lab.vms) {
    for (const NicSpec& nic : vm.spec.nics) {
      for (const std::string& ip : nic.ips) {
        if (auto a = IpAddr::Parse(ip); a.ok()) addresses[vm.spec.name].push_back(*a);
      }
    }
  }
  bool any_manifest = false;
  for (size_t i = 0; i < lab.vms.size(); ++i) {
    const VmSpec& spec = lab.vms[i].spec;
    auto it = options.manifests.find(spec.name);
    const std::string path = it != options.manifests.end() ? it->second : spec.manifest;
    if (path.empty()) continue;
    std::vector<ManifestWarning> warnings;
    ASSIGN_OR_RETURN(Manifest m, LoadManifest(path, &warnings));
    if (m.vm != spec.name) {
      return InvalidArgument(path + ": the manifest is for VM '" + m.vm + "', not '" + spec.name +
                             "'");
    }
    for (const auto& w : warnings)
      std::fprintf(stderr, "blackbox: warning: %s: %s\n", path.c_str(), w.message.c_str());
    for (const NetRule& r : m.rules) {
      for (const Peer& p : r.peers) {
        if (p.kind == Peer::Kind::kVm && !addresses.count(p.vm)) {
          std::fprintf(stderr,
                       "blackbox: warning: %s: manifest line %d: rule '%s': peer VM '%s' has no "
                       "address in lab %s; the rule cannot match it\n",
                       path.c_str(), r.line, r.name.c_str(), p.vm.c_str(), lab.name.c_str());
        }
      }
    }
    manifests[i] = std::make_shared<const Manifest>(std::move(m));
    any_manifest = true;
  }

  // Plan the switch ports.
  std::vector<PortPlan> plan;
  for (size_t i = 0; i < lab.vms.size(); ++i) {
    for (const NicSpec& nic : lab.vms[i].spec.nics) {
      if (!nic.socket.empty()) continue;
      PortPlan p;
      p.vm = i;
      p.vm_name = lab.vms[i].spec.name;
      p.nic = nic.name;
      p.name = p.vm_name + "/" + nic.name;
      p.mac = nic.mac;
      p.segment = nic.segment;
      p.ips = nic.ips;
      plan.push_back(std::move(p));
    }
  }

  Clock& clock = RealClock::Get();
  // One offset from the monotonic clock to wall time for frames and alerts,
  // so their times compare exactly.
  const int64_t wall_offset = clock.WallNanos() - clock.MonotonicNanos();
  boost::asio::io_context switch_io;
  std::unique_ptr<SwitchServer> server;
  std::unique_ptr<CaptureWriter> writer;
  std::unique_ptr<AlertWriter> alerts;
  std::unique_ptr<ManifestPolicy> policy;
  std::vector<std::shared_ptr<VmControl>> controls(lab.vms.size());
  if (any_manifest) {
    alerts = std::make_unique<AlertWriter>(store, wall_offset);
    if (options.on_alert) alerts->SetObserver(options.on_alert);
  }
  std::optional<TempDir> socket_dir;
  std::thread switch_thread;
  nlohmann::json meta;
  std::mutex meta_mu;

  if (!plan.empty()) {
    int64_t wall = clock.WallNanos();
    ASSIGN_OR_RETURN(result.capture_id, NewCaptureId(store, lab.name, wall));
    ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("bb-switch"));
    socket_dir.emplace(std::move(dir));
    server = std::make_unique<SwitchServer>(switch_io, options.switch_options);
    for (size_t k = 0; k < plan.size(); ++k) {
      PortPlan& p = plan[k];
      L2Switch::PortConfig config;
      config.name = p.name;
      config.segment = p.segment;
      ASSIGN_OR_RETURN(config.mac, MacAddr::Parse(p.mac));
      for (const std::string& ip : p.ips) {
        ASSIGN_OR_RETURN(IpAddr addr, IpAddr::Parse(ip));
        config.allowed_ips.push_back(addr);
      }
      if (!config.allowed_ips.empty()) {
        // The NIC's own IPv6 link-local address (fe80::/64 + modified EUI-64
        // of its MAC) is part of its identity: guests use it for neighbour
        // discovery and MLD without being configured to.
        std::array<uint8_t, 16> ll{0xfe, 0x80};
        const auto& mac = config.mac.bytes;
        ll[8] = mac[0] ^ 0x02;
        ll[9] = mac[1];
        ll[10] = mac[2];
        ll[11] = 0xff;
        ll[12] = 0xfe;
        ll[13] = mac[3];
        ll[14] = mac[4];
        ll[15] = mac[5];
        config.allowed_ips.push_back(IpAddr::V6(ll));
      }
      p.socket = socket_dir->path() + "/p" + std::to_string(k) + ".sock";
      ASSIGN_OR_RETURN(p.id, server->AddPort(config, p.socket));
    }
    writer =
        std::make_unique<CaptureWriter>(store, result.capture_id, options.capture, wall_offset);
    nlohmann::json ports = nlohmann::json::array();
    for (const PortPlan& p : plan) {
      writer->SetPortInfo(p.id, {p.name, ""});
      ports.push_back(p.ToJson());
    }
    if (alerts) {
      AlertWriter* a = alerts.get();
      policy = std::make_unique<ManifestPolicy>(
          options.policy, [a](ManifestPolicy::Violation&& v) { a->OnViolation(std::move(v)); });
      for (size_t i = 0; i < lab.vms.size(); ++i) {
        if (!manifests[i]) continue;
        ManifestPolicy::VmPolicy vp;
        vp.name = lab.vms[i].spec.name;
        vp.manifest = manifests[i];
        vp.rules = RuleSet::Compile(*manifests[i], addresses);
        for (const PortPlan& p : plan) {
          if (p.vm != i) continue;
          vp.ports.push_back(p.id);
          vp.macs.push_back(MacAddr::Parse(p.mac).value());
        }
        policy->AddVm(std::move(vp));
      }
      server->SetPolicy(policy.get());
    }
    CaptureWriter* w = writer.get();
    server->SetFrameObserver([w](uint32_t ingress, std::span<const uint8_t> frame,
                                 const L2Switch::Decision& d,
                                 int64_t now_ns) { w->OnFrame(ingress, frame, d, now_ns); });
    server->SetBatchObserver([w] { w->FlushStaged(); });
    server->SetEventObserver(
        [w](const std::string& kind, uint32_t port, const std::string& detail) {
          w->OnEvent(kind, port, detail, RealClock::Get().MonotonicNanos());
        });
    meta = {{"lab", lab.name},
            {"state", "recording"},
            {"started_wall_ns", wall},
            {"lab_spec", lab.source_text},
            {"ports", ports},
            {"recordings", nlohmann::json::object()},
            {"recorder_pid", ::getpid()}};
    RETURN_IF_ERROR(store->PutCapture(result.capture_id, meta));
    if (options.on_capture) options.on_capture(result.capture_id);
    switch_thread = std::thread([&switch_io] {
      pthread_setname_np(pthread_self(), "bb-switch");
      auto guard = boost::asio::make_work_guard(switch_io);
      while (true) {
        try {
          switch_io.run();
          break;
        } catch (const std::exception& e) {
          spdlog::error("internal error in the switch: {}", e.what());
        }
      }
    });
  }

  // Start one recorder thread per VM.
  struct VmRun {
    std::shared_ptr<std::atomic<bool>> stop = std::make_shared<std::atomic<bool>>(false);
    std::optional<StatusOr<RecordingInfo>> outcome;
    std::string recording_id;
    std::thread thread;
  };
  std::vector<VmRun> runs(lab.vms.size());
  std::mutex done_mu;
  std::condition_variable done_cv;
  size_t done = 0;
  size_t ran = 0;  // VMs that ran and ended (not those that could not start)
  for (size_t i = 0; i < lab.vms.size(); ++i) {
    RecorderOptions o = options.recorder;
    o.rr = lab.vms[i].rr;
    if (!lab.vms[i].spec.nics.empty() && !options.snapshot_networked_vms) {
      o.snapshot_interval_ns = 0;
    }
    o.stop = runs[i].stop;
    if (manifests[i]) {
      o.manifest = manifests[i];
      o.alerts = alerts.get();
      controls[i] = std::make_shared<VmControl>();
      o.control = controls[i];
      AlertWriter::VmInfo info;
      info.capture_id = result.capture_id;
      info.manifest_path = manifests[i]->path;
      info.manifest_sha256 = ToHex(Sha256Of(manifests[i]->source_text));
      for (const PortPlan& p : plan) info.port_names[p.id] = p.name;
      info.control = controls[i];
      alerts->SetVm(lab.vms[i].spec.name, std::move(info));
    }
    o.nic_sockets.clear();
    nlohmann::json vm_ports = nlohmann::json::array();
    for (const NicSpec& nic : lab.vms[i].spec.nics) {
      std::string sock;
      for (const PortPlan& p : plan) {
        if (p.vm == i && p.nic == nic.name) {
          sock = p.socket;
          vm_ports.push_back(p.ToJson());
        }
      }
      o.nic_sockets.push_back(sock);
    }
    if (!result.capture_id.empty()) {
      o.extra["capture"] = result.capture_id;
      o.extra["lab"] = lab.name;
      o.extra["ports"] = vm_ports;
    }
    auto user_started = options.recorder.on_started;
    o.on_started = [&, i, user_started, vm_ports](const std::string& id) {
      {
        std::lock_guard lock(done_mu);
        runs[i].recording_id = id;
      }
      if (alerts) alerts->SetRecording(lab.vms[i].spec.name, id);
      if (writer) {
        for (const auto& p : vm_ports) {
          writer->SetPortInfo(p["id"].get<uint32_t>(), {p["name"].get<std::string>(), id});
        }
        std::lock_guard lock(meta_mu);
        meta["recordings"][lab.vms[i].spec.name] = id;
        store->PutCapture(result.capture_id, meta).IgnoreError();
      }
      if (user_started) user_started(id);
    };
    const VmSpec* spec = &lab.vms[i].spec;
    runs[i].thread = std::thread([&, i, spec, o = std::move(o)]() {
      StatusOr<RecordingInfo> r = Internal("not run");
      try {
        r = RecordVm(store, *spec, o);
      } catch (const std::exception& e) {
        r = Internal(std::string("internal error: ") + e.what());
      }
      if (!r.ok()) {
        std::fprintf(stderr, "blackbox: %s did not run: %s\n", spec->name.c_str(),
                     r.status().message().c_str());
      }
      std::lock_guard lock(done_mu);
      if (r.ok()) ++ran;
      runs[i].outcome = std::move(r);
      ++done;
      done_cv.notify_all();
    });
  }

  // Wait for the VMs; with first-exit, the first to end stops the others. A
  // VM that could not start (QEMU failed, its start was refused by
  // attestation) does not end the lab: the others run on.
  {
    std::unique_lock lock(done_mu);
    if (lab.stop_when == LabSpec::StopWhen::kFirstExit) {
      done_cv.wait(lock, [&] { return ran > 0 || done == runs.size(); });
      if (done < runs.size()) {
        for (size_t i = 0; i < runs.size(); ++i) {
          if (runs[i].outcome && runs[i].outcome->ok()) {
            std::string what = runs[i].outcome->ok() ? runs[i].outcome->value().extra.value(
                                                           "end_reason", std::string("ended"))
                                                     : runs[i].outcome->status().message();
            std::fprintf(stderr, "blackbox: %s ended (%s); stopping the rest of lab %s\n",
                         lab.vms[i].spec.name.c_str(), what.c_str(), lab.name.c_str());
            break;
          }
        }
      }
      for (VmRun& r : runs) r.stop->store(true);
    }
  }
  for (VmRun& r : runs) r.thread.join();

  // Stop the switch, then drain the capture.
  if (server) {
    // Read the port counters on the switch's thread, before Close() detaches
    // the ports (and their counters) from the L2 switch.
    nlohmann::json ports = meta["ports"];
    nlohmann::json policy_stats;
    boost::asio::post(switch_io, [&] {
      for (auto& p : ports) {
        uint32_t id = p["id"].get<uint32_t>();
        L2Switch::PortCounters c = server->l2().GetCounters(id).value_or(L2Switch::PortCounters{});
        nlohmann::json drops = nlohmann::json::object();
        for (size_t d = 1; d < L2Switch::kNumDropReasons; ++d) {
          if (c.drops[d] > 0)
            drops[L2Switch::DropName(static_cast<L2Switch::Drop>(d))] = c.drops[d];
        }
        p["counters"] = {{"rx_frames", c.rx_frames},
                         {"rx_bytes", c.rx_bytes},
                         {"tx_frames", c.tx_frames},
                         {"tx_bytes", c.tx_bytes},
                         {"drops", drops}};
      }
      if (policy) {
        const ManifestPolicy::Stats ps = policy->stats();
        policy_stats = {{"frames", ps.frames},         {"judged", ps.judged},
                        {"violations", ps.violations}, {"dropped", ps.dropped},
                        {"pruned", ps.pruned},         {"uncached_frames", ps.uncached_frames}};
      }
      server->Close();
      switch_io.stop();
    });
    switch_thread.join();
    Status closed = writer->Close();
    result.capture = writer->GetStats();
    const auto& st = result.capture;
    std::lock_guard lock(meta_mu);
    meta["ports"] = ports;
    meta["state"] = closed.ok() ? "complete" : "incomplete";
    meta["ended_wall_ns"] = clock.WallNanos();
    meta["stats"] = {{"frames", st.frames},
                     {"frame_bytes", st.frame_bytes},
                     {"batches", st.batches},
                     {"stored_bytes", st.stored_bytes},
                     {"shed_frames", st.shed_frames},
                     {"capture_waits", st.waits},
                     {"capture_wait_ns", st.wait_ns},
                     {"flows", st.flows},
                     {"events", st.events}};
    if (!closed.ok()) meta["error"] = closed.message();
    if (!policy_stats.is_null()) meta["manifest_checks"] = policy_stats;
    RETURN_IF_ERROR(store->PutCapture(result.capture_id, meta));
    result.capture_meta = meta;
  }

  if (alerts) {
    Status closed = alerts->Close();
    result.alerts = alerts->GetStats();
    if (!closed.ok()) result.failures.push_back("alerts: " + closed.message());
  }
  for (size_t i = 0; i < runs.size(); ++i) {
    if (runs[i].outcome && runs[i].outcome->ok()) {
      result.recordings.push_back(std::move(runs[i].outcome->value()));
    } else {
      std::string why = runs[i].outcome ? runs[i].outcome->status().message() : "did not run";
      result.failures.push_back(lab.vms[i].spec.name + ": " + why);
      if (!runs[i].recording_id.empty()) {
        auto info = store->GetRecording(runs[i].recording_id);
        if (info.ok()) result.recordings.push_back(std::move(*info));
      }
    }
  }
  return result;
}

}  // namespace blackbox
