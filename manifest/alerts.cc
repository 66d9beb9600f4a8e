#include "manifest/alerts.h"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include "common/clock.h"
#include "common/hash.h"

namespace blackbox {

// ---- VmControl ----

const char* VmControl::ActionName(Action a) {
  switch (a) {
    case Action::kPause:
      return "pause";
    case Action::kSnapshot:
      return "snapshot";
    case Action::kPowerOff:
      return "poweroff";
  }
  return "unknown";
}

void VmControl::Request(Action a, const std::string& why, Done done) {
  {
    // The handler only hands the request to the recorder's thread; holding
    // the lock keeps Detach() from returning while it does.
    std::lock_guard lock(mu_);
    if (handler_) {
      handler_(a, why, std::move(done));
      return;
    }
  }
  done(FailedPrecondition("the VM is not running"), nlohmann::json::object());
}

void VmControl::Attach(Handler handler) {
  std::lock_guard lock(mu_);
  handler_ = std::move(handler);
}

void VmControl::Detach() {
  std::lock_guard lock(mu_);
  handler_ = nullptr;
}

// ---- AlertWriter ----

namespace {

nlohmann::json Names(Responses r) { return ResponseNames(r); }

}  // namespace

AlertWriter::AlertWriter(Store* store, int64_t wall_offset_ns)
    : store_(store), wall_offset_ns_(wall_offset_ns) {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "bb-alerts");
    Run();
  });
}

AlertWriter::~AlertWriter() { Close().IgnoreError(); }

int64_t AlertWriter::WallNow() const { return RealClock::Get().MonotonicNanos() + wall_offset_ns_; }

void AlertWriter::SetVm(const std::string& vm, VmInfo info) {
  std::lock_guard lock(mu_);
  vms_[vm] = std::move(info);
}

void AlertWriter::SetPortName(uint32_t port, const std::string& name) {
  std::lock_guard lock(mu_);
  port_names_[port] = name;
}

void AlertWriter::SetRecording(const std::string& vm, const std::string& recording_id) {
  std::lock_guard lock(mu_);
  vms_[vm].recording_id = recording_id;
}

AlertWriter::VmInfo AlertWriter::Vm(const std::string& name) const {
  std::lock_guard lock(mu_);
  auto it = vms_.find(name);
  return it == vms_.end() ? VmInfo{} : it->second;
}

void AlertWriter::SetObserver(std::function<void(const StoredAlert&)> observer) {
  std::lock_guard lock(mu_);
  observer_ = std::move(observer);
}

void AlertWriter::OnViolation(ManifestPolicy::Violation&& v) {
  Item item;
  item.trigger_mono_ns = v.mono_ns;
  item.vm = v.vm;
  item.action = v.action | kRespAlert;
  item.enforced = v.enforced;
  nlohmann::json flow = nlohmann::json::object();
  if (!v.src_ip.empty()) {
    const char* name = IpProtoName(v.proto);
    flow = {{"direction", v.flow.direction == Direction::kIn ? "in" : "out"},
            {"proto", name ? nlohmann::json(name) : nlohmann::json(v.proto)},
            {"src_ip", v.src_ip},
            {"dst_ip", v.dst_ip},
            {"peer", v.flow.peer.family == IpFamily::kNone ? "" : v.flow.peer.ToString()},
            {"service_port", v.flow.service_port}};
    if (v.proto == kIpProtoTcp || v.proto == kIpProtoUdp) {
      flow["src_port"] = v.src_port;
      flow["dst_port"] = v.dst_port;
    }
  }
  item.body = {{"kind", v.kind},
               {"rule", v.rule_name},
               {"rule_line", v.rule_line},
               {"reason", v.reason},
               {"flow", flow},
               {"evidence",
                {{"port_id", v.vm_port},
                 {"ingress_port_id", v.ingress},
                 {"frame_wall_ns", v.mono_ns + wall_offset_ns_},
                 {"frame_hex", ToHex(std::string_view(v.frame))}}}};
  std::lock_guard lock(mu_);
  if (closing_) return;
  queue_.push_back(std::move(item));
  cv_.notify_one();
}

void AlertWriter::Raise(Raised a) {
  Item item;
  item.trigger_mono_ns = RealClock::Get().MonotonicNanos();
  item.vm = a.vm;
  item.action = a.action | kRespAlert;
  item.enforced = a.enforced;
  item.body = {
      {"kind", a.kind}, {"rule", a.rule}, {"rule_line", a.rule_line}, {"reason", a.reason}};
  if (a.detail.is_object()) {
    for (const auto& [k, v] : a.detail.items()) item.body[k] = v;
  }
  std::lock_guard lock(mu_);
  if (closing_) return;
  queue_.push_back(std::move(item));
  cv_.notify_one();
}

void AlertWriter::Run() {
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return closing_ || !queue_.empty(); });
    if (queue_.empty() && closing_) return;
    Item item = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    Store1(item);
    lock.lock();
  }
}

void AlertWriter::Store1(Item& item) {
  const VmInfo vm = Vm(item.vm);
  nlohmann::json& b = item.body;
  b["vm"] = item.vm;
  b["recording"] = vm.recording_id;
  b["capture"] = vm.capture_id;
  b["manifest"] = vm.manifest_path;
  b["manifest_sha256"] = vm.manifest_sha256;
  b["mode"] = item.enforced ? "enforce" : "observe";
  b["action"] = Names(item.action);
  b["carried_out"] = Names(item.enforced ? item.action : Responses{kRespAlert});
  b["trigger_wall_ns"] = item.trigger_mono_ns + wall_offset_ns_;
  if (b.contains("evidence") && b["evidence"].is_object()) {
    nlohmann::json& e = b["evidence"];
    e["capture"] = vm.capture_id;
    auto name = [&](const char* key) -> std::string {
      if (!e.contains(key)) return "";
      const uint32_t id = e[key].get<uint32_t>();
      if (auto it = vm.port_names.find(id); it != vm.port_names.end()) return it->second;
      std::lock_guard lock(mu_);
      auto it = port_names_.find(id);
      return it == port_names_.end() ? "" : it->second;
    };
    e["port"] = name("port_id");
    e["ingress_port"] = name("ingress_port_id");
  }
  const int64_t wall = WallNow();
  auto id = store_->PutAlert(wall, b);
  std::function<void(const StoredAlert&)> observer;
  {
    std::lock_guard lock(mu_);
    if (!id.ok()) {
      if (stats_.first_error.empty()) stats_.first_error = id.status().ToString();
      spdlog::error("storing an alert of {}: {}", item.vm, id.status().ToString());
      return;
    }
    ++stats_.alerts;
    stats_.max_store_delay_ns =
        std::max(stats_.max_store_delay_ns, wall - (item.trigger_mono_ns + wall_offset_ns_));
    observer = observer_;
  }
  if (!vm.recording_id.empty()) {
    store_
        ->PutEvent(vm.recording_id, wall,
                   {{"kind", "alert"},
                    {"alert", *id},
                    {"what", b["kind"]},
                    {"rule", b["rule"]},
                    {"reason", b["reason"]},
                    {"action", b["action"]}})
        .IgnoreError();
  }
  if (observer) observer(StoredAlert{*id, wall, b});
  Respond(item, *id);
}

void AlertWriter::ResponseEvent(const std::string& vm_name, const std::string& alert_id,
                                const char* action, const std::string& outcome,
                                const nlohmann::json& detail) {
  {
    std::lock_guard lock(mu_);
    ++stats_.responses;
  }
  const VmInfo vm = Vm(vm_name);
  if (vm.recording_id.empty()) return;
  nlohmann::json body = {{"kind", "response"},
                         {"alert", alert_id},
                         {"vm", vm_name},
                         {"action", action},
                         {"outcome", outcome}};
  if (!detail.is_null() && !detail.empty()) body["detail"] = detail;
  store_->PutEvent(vm.recording_id, WallNow(), body).IgnoreError();
}

void AlertWriter::Respond(const Item& item, const std::string& alert_id) {
  const Responses acts = item.action & ~kRespAlert;
  if (acts == 0) return;
  struct Step {
    Responses bit;
    const char* name;
  };
  static constexpr Step kSteps[] = {{kRespDrop, "drop"},
                                    {kRespQuarantine, "quarantine"},
                                    {kRespSnapshot, "snapshot"},
                                    {kRespPause, "pause"},
                                    {kRespPowerOff, "poweroff"}};
  const VmInfo vm = Vm(item.vm);
  std::deque<VmStep> vm_steps;
  for (const Step& s : kSteps) {
    if (!(acts & s.bit)) continue;
    if (!item.enforced) {
      ResponseEvent(item.vm, alert_id, s.name, "not carried out: observe mode", nullptr);
      continue;
    }
    if (s.bit == kRespDrop) {
      ResponseEvent(item.vm, alert_id, s.name, "done",
                    {{"at", "switch: the flow's frames are not forwarded"}});
      continue;
    }
    if (s.bit == kRespQuarantine) {
      ResponseEvent(item.vm, alert_id, s.name, "done",
                    {{"at", "switch: the port only reaches management peers"}});
      continue;
    }
    VmControl::Action a = s.bit == kRespSnapshot ? VmControl::Action::kSnapshot
                          : s.bit == kRespPause  ? VmControl::Action::kPause
                                                 : VmControl::Action::kPowerOff;
    if (!vm.control) {
      ResponseEvent(item.vm, alert_id, s.name, "failed: no control of this VM", nullptr);
      continue;
    }
    vm_steps.push_back({a, s.name});
  }
  RunVmSteps(vm.control, item.vm, alert_id, std::move(vm_steps));
}

// The VM-level steps run one after another, each once the previous one's
// outcome is in: a snapshot must be taken before a pause (QEMU cannot take
// one while a paused VM has replay events queued), a power-off comes last.
void AlertWriter::RunVmSteps(std::shared_ptr<VmControl> control, const std::string& vm,
                             const std::string& alert_id, std::deque<VmStep> steps) {
  if (steps.empty()) return;
  const VmStep step = steps.front();
  steps.pop_front();
  control->Request(step.action, "alert " + alert_id,
                   [this, control, vm, alert_id, step, rest = std::move(steps)](
                       Status outcome, nlohmann::json detail) mutable {
                     ResponseEvent(vm, alert_id, step.name,
                                   outcome.ok() ? "done" : "failed: " + outcome.message(), detail);
                     RunVmSteps(control, vm, alert_id, std::move(rest));
                   });
}

Status AlertWriter::Close() {
  {
    std::lock_guard lock(mu_);
    if (closed_) return stats_.first_error.empty() ? Status::Ok() : Internal(stats_.first_error);
    closing_ = true;
    closed_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  std::lock_guard lock(mu_);
  return stats_.first_error.empty() ? Status::Ok() : Internal(stats_.first_error);
}

AlertWriter::Stats AlertWriter::GetStats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

}  // namespace blackbox
