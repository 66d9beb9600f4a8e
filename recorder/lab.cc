#include "recorder/lab.h"

#include <yaml-cpp/yaml.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <regex>
#include <set>

#include "common/files.h"
#include "recorder/vm_host.h"

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

StatusOr<std::vector<std::shared_ptr<const Manifest>>> LoadLabManifests(
    const LabSpec& lab, const std::map<std::string, std::string>& overrides,
    const std::set<std::string>* host_vms) {
  for (const auto& [name, path] : overrides) {
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
  for (size_t i = 0; i < lab.vms.size(); ++i) {
    const VmSpec& spec = lab.vms[i].spec;
    auto it = overrides.find(spec.name);
    const std::string path = it != overrides.end() ? it->second : spec.manifest;
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
        if (p.kind == Peer::Kind::kVm && !addresses.count(p.vm) && host_vms != nullptr) {
          if (!host_vms->count(p.vm)) {
            std::fprintf(stderr,
                         "blackbox: warning: %s: manifest line %d: rule '%s': no VM '%s' runs on "
                         "this host yet; the rule matches it once one runs with an address\n",
                         path.c_str(), r.line, r.name.c_str(), p.vm.c_str());
          }
        } else if (p.kind == Peer::Kind::kVm && !addresses.count(p.vm)) {
          std::fprintf(stderr,
                       "blackbox: warning: %s: manifest line %d: rule '%s': peer VM '%s' has no "
                       "address in lab %s; the rule cannot match it\n",
                       path.c_str(), r.line, r.name.c_str(), p.vm.c_str(), lab.name.c_str());
        }
      }
    }
    manifests[i] = std::make_shared<const Manifest>(std::move(m));
  }
  return manifests;
}

StatusOr<LabResult> RunLab(Store* store, const LabSpec& lab, const LabOptions& options) {
  for (const LabVm& vm : lab.vms) RETURN_IF_ERROR(CheckSpecFiles(vm.spec));

  // Manifests: loaded and checked before anything starts.
  ASSIGN_OR_RETURN(std::vector<std::shared_ptr<const Manifest>> manifests,
                   LoadLabManifests(lab, options.manifests));

  VmHost::Options ho;
  ho.recorder = options.recorder;
  ho.snapshot_networked_vms = options.snapshot_networked_vms;
  ho.switch_options = options.switch_options;
  ho.capture = options.capture;
  ho.capture_name = lab.name;
  ho.capture_meta = {{"lab_spec", lab.source_text}};
  ho.on_capture = options.on_capture;
  ho.on_alert = options.on_alert;
  ho.policy = options.policy;
  // Declared before the host: its VM threads use them until it is closed.
  std::mutex done_mu;
  std::condition_variable done_cv;
  size_t done = 0, ran = 0;  // ran: VMs that ran and ended (not those that could not start)
  std::string first_ended;
  VmHost host(store, ho);

  // Start every VM; wait for them. With first-exit, the first to end stops
  // the others. A VM that could not start (QEMU failed, its start was
  // refused by attestation) does not end the lab: the others run on.
  std::vector<std::string> start_failures;
  size_t started = 0;
  for (size_t i = 0; i < lab.vms.size(); ++i) {
    VmHost::StartRequest request;
    request.spec = lab.vms[i].spec;
    request.rr = lab.vms[i].rr;
    request.manifest = manifests[i];
    request.group = lab.name;
    request.on_ended = [&, name = lab.vms[i].spec.name](const StatusOr<RecordingInfo>& r) {
      std::lock_guard lock(done_mu);
      if (r.ok()) {
        if (ran++ == 0) {
          first_ended =
              name + " ended (" + r.value().extra.value("end_reason", std::string("ended")) + ")";
        }
      }
      ++done;
      done_cv.notify_all();
    };
    Status s = host.Start(std::move(request));
    if (!s.ok()) {
      if (started == 0 && i + 1 == lab.vms.size()) {
        host.Close();
        return s;
      }
      std::fprintf(stderr, "blackbox: %s did not run: %s\n", lab.vms[i].spec.name.c_str(),
                   s.message().c_str());
      start_failures.push_back(lab.vms[i].spec.name + ": " + s.message());
      std::lock_guard lock(done_mu);
      ++done;
      continue;
    }
    ++started;
  }
  {
    std::unique_lock lock(done_mu);
    if (lab.stop_when == LabSpec::StopWhen::kFirstExit) {
      done_cv.wait(lock, [&] { return ran > 0 || done == lab.vms.size(); });
      if (done < lab.vms.size() && ran > 0) {
        std::fprintf(stderr, "blackbox: %s; stopping the rest of lab %s\n", first_ended.c_str(),
                     lab.name.c_str());
      }
      host.StopAll();
    } else {
      done_cv.wait(lock, [&] { return done == lab.vms.size(); });
    }
  }
  VmHost::Summary summary = host.Close();

  LabResult result;
  result.capture_id = summary.capture_id;
  result.capture = summary.capture;
  result.alerts = summary.alerts;
  result.capture_meta = summary.capture_meta;
  result.failures = std::move(start_failures);
  for (const std::string& e : summary.errors) result.failures.push_back(e);
  for (VmHost::VmOutcome& o : summary.outcomes) {
    if (o.result.ok()) {
      result.recordings.push_back(std::move(o.result.value()));
    } else {
      result.failures.push_back(o.name + ": " + o.result.status().message());
      if (!o.recording_id.empty()) {
        auto info = store->GetRecording(o.recording_id);
        if (info.ok()) result.recordings.push_back(std::move(*info));
      }
    }
  }
  return result;
}

}  // namespace blackbox
