#include "recorder/vm_host.h"

#include <pthread.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <future>
#include <set>

#include "common/clock.h"
#include "common/hash.h"
#include "recorder/lab.h"

namespace blackbox {

struct VmHost::PortPlan {
  uint32_t id = 0;
  std::string nic, name, mac, segment, socket;
  std::vector<std::string> ips;
  nlohmann::json ToJson(const std::string& vm) const {
    return {{"id", id},   {"name", name},       {"vm", vm},  {"nic", nic},
            {"mac", mac}, {"segment", segment}, {"ips", ips}};
  }
};

struct VmHost::Run {
  StartRequest request;
  std::vector<PortPlan> ports;
  std::shared_ptr<std::atomic<bool>> stop = std::make_shared<std::atomic<bool>>(false);
  std::shared_ptr<RecorderLiveStats> live = std::make_shared<RecorderLiveStats>();
  std::shared_ptr<VmControl> control;
  // The peers' addresses its manifest's rules were last compiled with
  // (Recompile skips a VM whose peers did not change).
  std::optional<std::string> compiled_for;
  std::string recording_id;
  int64_t started_wall_ns = 0, ended_wall_ns = 0;
  bool ended = false;
  std::optional<StatusOr<RecordingInfo>> outcome;
  std::thread thread;
};

namespace {

// The NIC's own IPv6 link-local address (fe80::/64 + modified EUI-64 of its
// MAC) is part of its identity: guests use it for neighbour discovery and MLD
// without being configured to.
IpAddr LinkLocalOf(const MacAddr& mac) {
  std::array<uint8_t, 16> ll{0xfe, 0x80};
  const auto& m = mac.bytes;
  ll[8] = m[0] ^ 0x02;
  ll[9] = m[1];
  ll[10] = m[2];
  ll[11] = 0xff;
  ll[12] = 0xfe;
  ll[13] = m[3];
  ll[14] = m[4];
  ll[15] = m[5];
  return IpAddr::V6(ll);
}

nlohmann::json CountersJson(const L2Switch::PortCounters& c) {
  nlohmann::json drops = nlohmann::json::object();
  for (size_t d = 1; d < L2Switch::kNumDropReasons; ++d) {
    if (c.drops[d] > 0) drops[L2Switch::DropName(static_cast<L2Switch::Drop>(d))] = c.drops[d];
  }
  return {{"rx_frames", c.rx_frames},
          {"rx_bytes", c.rx_bytes},
          {"tx_frames", c.tx_frames},
          {"tx_bytes", c.tx_bytes},
          {"drops", drops}};
}

}  // namespace

VmHost::VmHost(Store* store, Options options)
    : store_(store),
      options_(std::move(options)),
      // One offset from the monotonic clock to wall time for frames and
      // alerts, so their times compare exactly.
      wall_offset_(RealClock::Get().WallNanos() - RealClock::Get().MonotonicNanos()) {
  server_ = std::make_unique<SwitchServer>(io_, options_.switch_options);
  alerts_ = std::make_unique<AlertWriter>(store_, wall_offset_);
  if (options_.on_alert) alerts_->SetObserver(options_.on_alert);
  switch_thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "bb-switch");
    auto guard = boost::asio::make_work_guard(io_);
    while (true) {
      try {
        io_.run();
        break;
      } catch (const std::exception& e) {
        spdlog::error("internal error in the switch: {}", e.what());
      }
    }
  });
}

VmHost::~VmHost() { Close(); }

template <class F>
Status VmHost::OnSwitch(F&& f) {
  std::promise<Status> done;
  boost::asio::post(io_, [&] {
    try {
      f();
      done.set_value(Status::Ok());
    } catch (const std::exception& e) {
      done.set_value(Internal(std::string("internal error on the switch thread: ") + e.what()));
    }
  });
  return done.get_future().get();
}

std::string VmHost::capture_id() const {
  std::lock_guard lock(mu_);
  return capture_id_;
}

Status VmHost::EnsureCapture() {
  if (writer_) return Status::Ok();
  if (socket_dir_.empty()) {
    if (options_.socket_dir.empty()) {
      ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("bb-switch"));
      own_socket_dir_.emplace(std::move(dir));
      socket_dir_ = own_socket_dir_->path();
    } else {
      socket_dir_ = options_.socket_dir;
    }
  }
  const int64_t wall = RealClock::Get().WallNanos();
  ASSIGN_OR_RETURN(std::string id, NewCaptureId(store_, options_.capture_name, wall));
  nlohmann::json meta = {{"lab", options_.capture_name},
                         {"state", "recording"},
                         {"started_wall_ns", wall},
                         {"ports", nlohmann::json::array()},
                         {"recordings", nlohmann::json::object()},
                         {"recorder_pid", ::getpid()}};
  meta.update(options_.capture_meta);
  RETURN_IF_ERROR(store_->PutCapture(id, meta));
  {
    std::lock_guard lock(meta_mu_);
    meta_ = std::move(meta);
  }
  writer_ = std::make_unique<CaptureWriter>(store_, id, options_.capture, wall_offset_);
  capture_id_ = id;
  CaptureWriter* w = writer_.get();
  Status observers = OnSwitch([&] {
    server_->SetFrameObserver([w](uint32_t ingress, std::span<const uint8_t> frame,
                                  const L2Switch::Decision& d,
                                  int64_t now_ns) { w->OnFrame(ingress, frame, d, now_ns); });
    server_->SetBatchObserver([w] { w->FlushStaged(); });
    server_->SetEventObserver(
        [w](const std::string& kind, uint32_t port, const std::string& detail) {
          w->OnEvent(kind, port, detail, RealClock::Get().MonotonicNanos());
        });
  });
  RETURN_IF_ERROR(observers);
  if (options_.on_capture) options_.on_capture(id);
  return Status::Ok();
}

namespace {

// Which addresses the peer VMs named in `m`'s rules have: the rules need
// compiling again only when this changes.
std::string PeerAddresses(const Manifest& m, const RuleSet::VmAddresses& addresses) {
  std::set<std::string> peers;
  for (const NetRule& r : m.rules) {
    for (const Peer& p : r.peers) {
      if (p.kind == Peer::Kind::kVm) peers.insert(p.vm);
    }
  }
  std::string out;
  for (const std::string& name : peers) {
    out += name + "=";
    auto it = addresses.find(name);
    if (it != addresses.end()) {
      for (const IpAddr& a : it->second) out += a.ToString() + ",";
    }
    out += ";";
  }
  return out;
}

}  // namespace

void VmHost::Recompile() {
  // A VM that ended keeps its addresses for its peers' rules (as in a lab),
  // until a VM of its name starts again.
  RuleSet::VmAddresses addresses;
  for (const auto& run : runs_) {
    for (const NicSpec& nic : run->request.spec.nics) {
      for (const std::string& ip : nic.ips) {
        if (auto a = IpAddr::Parse(ip); a.ok()) addresses[run->request.spec.name].push_back(*a);
      }
    }
  }
  for (const auto& run : runs_) {
    if (run->ended || !run->request.manifest) continue;
    std::string peers = PeerAddresses(*run->request.manifest, addresses);
    if (run->compiled_for == peers) continue;
    run->compiled_for = peers;
    ManifestPolicy::VmPolicy vp;
    vp.name = run->request.spec.name;
    vp.manifest = run->request.manifest;
    vp.rules = RuleSet::Compile(*vp.manifest, addresses);
    for (const PortPlan& p : run->ports) {
      vp.ports.push_back(p.id);
      vp.macs.push_back(MacAddr::Parse(p.mac).value());
    }
    policy_->AddVm(std::move(vp));
  }
}

Status VmHost::Start(StartRequest request) {
  auto run = std::make_unique<Run>();
  Run* r = run.get();
  r->request = std::move(request);
  const VmSpec& spec = r->request.spec;
  RETURN_IF_ERROR(CheckSpecFiles(spec));
  std::unique_lock lock(mu_);
  if (closed_) return FailedPrecondition("the host is shutting down");
  std::unique_ptr<Run> previous;
  for (auto it = runs_.begin(); it != runs_.end(); ++it) {
    const Run& other = **it;
    if (other.request.spec.name != spec.name) {
      if (other.ended) continue;
      for (const NicSpec& mine : spec.nics) {
        for (const NicSpec& theirs : other.request.spec.nics) {
          if (mine.socket.empty() && theirs.socket.empty() && mine.mac == theirs.mac) {
            return InvalidArgument("MAC " + mine.mac + " (" + spec.name + "/" + mine.name +
                                   ") is used by running VM " + other.request.spec.name);
          }
        }
      }
      continue;
    }
    if (!other.ended) {
      return AlreadyExists(
          "VM " + spec.name + " is already running" +
          (other.recording_id.empty() ? "" : " (recording " + other.recording_id + ")"));
    }
  }

  std::vector<PortPlan>& plan = r->ports;
  for (const NicSpec& nic : spec.nics) {
    if (!nic.socket.empty()) continue;
    PortPlan p;
    p.nic = nic.name;
    p.name = spec.name + "/" + nic.name;
    p.mac = nic.mac;
    p.segment = nic.segment;
    p.ips = nic.ips;
    plan.push_back(std::move(p));
  }
  if (!plan.empty()) {
    RETURN_IF_ERROR(EnsureCapture());
    std::vector<L2Switch::PortConfig> configs;
    for (PortPlan& p : plan) {
      L2Switch::PortConfig config;
      config.name = p.name;
      config.segment = p.segment;
      ASSIGN_OR_RETURN(config.mac, MacAddr::Parse(p.mac));
      for (const std::string& ip : p.ips) {
        ASSIGN_OR_RETURN(IpAddr addr, IpAddr::Parse(ip));
        config.allowed_ips.push_back(addr);
      }
      if (!config.allowed_ips.empty()) config.allowed_ips.push_back(LinkLocalOf(config.mac));
      p.socket = socket_dir_ + "/p" + std::to_string(next_socket_++) + ".sock";
      configs.push_back(std::move(config));
    }
    Status added;
    Status ran = OnSwitch([&] {
      for (size_t k = 0; k < plan.size() && added.ok(); ++k) {
        auto id = server_->AddPort(configs[k], plan[k].socket);
        if (id.ok()) {
          plan[k].id = *id;
        } else {
          added = id.status();
          for (size_t j = 0; j < k; ++j) server_->RemovePort(plan[j].id);
        }
      }
    });
    RETURN_IF_ERROR(ran);
    RETURN_IF_ERROR(added);
    for (const PortPlan& p : plan) alerts_->SetPortName(p.id, p.name);
  }

  // The VM is committed from here on: replace the ended run of that name.
  for (auto it = runs_.begin(); it != runs_.end(); ++it) {
    if ((*it)->request.spec.name == spec.name) {
      previous = std::move(*it);
      runs_.erase(it);
      break;
    }
  }
  runs_.push_back(std::move(run));
  r->started_wall_ns = RealClock::Get().WallNanos();

  nlohmann::json vm_ports = nlohmann::json::array();
  for (const PortPlan& p : plan) vm_ports.push_back(p.ToJson(spec.name));
  if (!plan.empty()) {
    for (const PortPlan& p : plan) writer_->SetPortInfo(p.id, {p.name, ""});
    std::lock_guard meta_lock(meta_mu_);
    for (const auto& p : vm_ports) meta_["ports"].push_back(p);
    store_->PutCapture(capture_id_, meta_).IgnoreError();
  }

  const VmSpec& s = r->request.spec;
  RecorderOptions o = options_.recorder;
  o.rr = r->request.rr;
  if (!s.nics.empty() && !options_.snapshot_networked_vms) o.snapshot_interval_ns = 0;
  o.stop = r->stop;
  o.stop_reason = r->request.stop_reason;
  o.live = r->live;
  if (r->request.manifest) {
    o.manifest = r->request.manifest;
    o.alerts = alerts_.get();
    r->control = std::make_shared<VmControl>();
    o.control = r->control;
    AlertWriter::VmInfo info;
    info.capture_id = capture_id_;
    info.manifest_path = r->request.manifest->path;
    info.manifest_sha256 = ToHex(Sha256Of(r->request.manifest->source_text));
    for (const PortPlan& p : plan) info.port_names[p.id] = p.name;
    info.control = r->control;
    alerts_->SetVm(s.name, std::move(info));
    if (!policy_) {
      AlertWriter* a = alerts_.get();
      policy_ = std::make_unique<ManifestPolicy>(
          options_.policy, [a](ManifestPolicy::Violation&& v) { a->OnViolation(std::move(v)); });
      if (Status s = OnSwitch([&] { server_->SetPolicy(policy_.get()); }); !s.ok()) {
        spdlog::error("manifest checks of {}: {}", spec.name, s.message());
      }
    }
  }
  if (policy_) {
    if (Status s = OnSwitch([&] { Recompile(); }); !s.ok()) {
      spdlog::error("manifest checks of {}: {}", spec.name, s.message());
    }
  }
  o.nic_sockets.clear();
  for (const NicSpec& nic : s.nics) {
    std::string sock;
    for (const PortPlan& p : plan) {
      if (p.nic == nic.name) sock = p.socket;
    }
    o.nic_sockets.push_back(sock);
  }
  if (!plan.empty()) {
    o.extra["capture"] = capture_id_;
    o.extra["ports"] = vm_ports;
  }
  if (!r->request.group.empty()) o.extra["lab"] = r->request.group;
  auto user_started = options_.recorder.on_started;
  o.on_started = [this, r, user_started, vm_ports](const std::string& id) {
    {
      std::lock_guard lock(mu_);
      r->recording_id = id;
    }
    if (r->request.manifest) alerts_->SetRecording(r->request.spec.name, id);
    if (!vm_ports.empty()) {
      for (const auto& p : vm_ports) {
        writer_->SetPortInfo(p["id"].get<uint32_t>(), {p["name"].get<std::string>(), id});
      }
      std::lock_guard lock(meta_mu_);
      meta_["recordings"][r->request.spec.name] = id;
      store_->PutCapture(capture_id_, meta_).IgnoreError();
    }
    if (user_started) user_started(id);
    if (r->request.on_started) r->request.on_started(id);
  };
  r->thread = std::thread([this, r, o = std::move(o)]() mutable { RunVm(r, std::move(o)); });
  // Threads of runs that have ended are done but not joined: join them now
  // (each has set its outcome, its last step under this lock).
  for (const auto& other : runs_) {
    if (other->outcome && other->thread.joinable()) other->thread.join();
  }
  lock.unlock();
  if (previous && previous->thread.joinable()) previous->thread.join();
  return Status::Ok();
}

void VmHost::RunVm(Run* run, RecorderOptions options) {
  StatusOr<RecordingInfo> r = Internal("not run");
  try {
    r = RecordVm(store_, run->request.spec, options);
  } catch (const std::exception& e) {
    r = Internal(std::string("internal error: ") + e.what());
  }
  if (!r.ok()) {
    std::fprintf(stderr, "blackbox: %s did not run: %s\n", run->request.spec.name.c_str(),
                 r.status().message().c_str());
  }
  Ended(run, std::move(r));
}

void VmHost::Ended(Run* run, StatusOr<RecordingInfo> outcome) {
  // Off the switch: its ports (their last counters kept in the capture's
  // metadata) and its manifest checks. Its addresses stay with its peers'
  // rules until a VM of its name starts again.
  std::map<uint32_t, nlohmann::json> counters;
  {
    std::lock_guard lock(mu_);
    run->ended = true;
    Status s = OnSwitch([&] {
      for (const PortPlan& p : run->ports) {
        counters[p.id] =
            CountersJson(server_->l2().GetCounters(p.id).value_or(L2Switch::PortCounters{}));
        server_->RemovePort(p.id);
      }
      if (policy_) policy_->RemoveVm(run->request.spec.name);
    });
    if (!s.ok()) spdlog::error("{} leaving the switch: {}", run->request.spec.name, s.message());
  }
  if (!counters.empty()) {
    std::lock_guard lock(meta_mu_);
    for (auto& p : meta_["ports"]) {
      auto it = counters.find(p["id"].get<uint32_t>());
      if (it != counters.end()) p["counters"] = it->second;
    }
    store_->PutCapture(capture_id_, meta_).IgnoreError();
  }
  if (run->request.on_ended) run->request.on_ended(outcome);
  std::lock_guard lock(mu_);
  run->ended_wall_ns = RealClock::Get().WallNanos();
  run->outcome = std::move(outcome);
  ended_cv_.notify_all();
}

Status VmHost::Stop(const std::string& name) {
  std::lock_guard lock(mu_);
  for (const auto& run : runs_) {
    if (run->request.spec.name != name) continue;
    if (run->outcome) return FailedPrecondition("VM " + name + " is not running");
    run->stop->store(true);
    return Status::Ok();
  }
  return NotFound("no VM named " + name);
}

void VmHost::StopAll() {
  std::lock_guard lock(mu_);
  for (const auto& run : runs_) run->stop->store(true);
}

VmHost::VmStatus VmHost::StatusOf(const Run& run) {
  VmStatus s;
  s.name = run.request.spec.name;
  s.group = run.request.group;
  s.recording_id = run.recording_id;
  s.rr = run.request.rr;
  s.manifest = run.request.manifest != nullptr;
  s.started_wall_ns = run.started_wall_ns;
  s.ended_wall_ns = run.ended_wall_ns;
  s.raw_bytes = run.live->raw_bytes.load();
  s.stored_bytes = run.live->stored_bytes.load();
  s.console_bytes = run.live->console_bytes.load();
  if (!run.outcome) {
    s.state = run.stop->load() ? "stopping" : "running";
  } else if (run.outcome->ok()) {
    const RecordingInfo& info = run.outcome->value();
    s.state = info.state;
    s.detail = info.extra.value("end_reason", std::string());
  } else {
    s.state =
        run.outcome->status().code() == StatusCode::kFailedPrecondition ? "refused" : "failed";
    s.detail = run.outcome->status().message();
  }
  return s;
}

std::vector<VmHost::VmStatus> VmHost::List() const {
  std::lock_guard lock(mu_);
  std::vector<VmStatus> out;
  for (const auto& run : runs_) out.push_back(StatusOf(*run));
  return out;
}

std::optional<VmHost::VmStatus> VmHost::Get(const std::string& name) const {
  std::lock_guard lock(mu_);
  for (const auto& run : runs_) {
    if (run->request.spec.name == name) return StatusOf(*run);
  }
  return std::nullopt;
}

void VmHost::WaitIdle() {
  std::unique_lock lock(mu_);
  ended_cv_.wait(lock, [&] {
    for (const auto& run : runs_) {
      if (!run->outcome) return false;
    }
    return true;
  });
}

VmHost::Summary VmHost::Close() {
  Summary summary;
  {
    std::lock_guard lock(mu_);
    if (closed_) return summary;
    closed_ = true;
    for (const auto& run : runs_) run->stop->store(true);
  }
  // No run is added or removed once closed_ is set.
  for (const auto& run : runs_) {
    if (run->thread.joinable()) run->thread.join();
  }

  // Stop the switch, then drain the capture.
  nlohmann::json policy_stats;
  boost::asio::post(io_, [&] {
    if (policy_) {
      const ManifestPolicy::Stats ps = policy_->stats();
      policy_stats = {{"frames", ps.frames},         {"judged", ps.judged},
                      {"violations", ps.violations}, {"dropped", ps.dropped},
                      {"pruned", ps.pruned},         {"uncached_frames", ps.uncached_frames}};
    }
    server_->Close();
    io_.stop();
  });
  switch_thread_.join();
  summary.capture_id = capture_id_;
  if (writer_) {
    Status closed = writer_->Close();
    summary.capture = writer_->GetStats();
    const auto& st = summary.capture;
    std::lock_guard lock(meta_mu_);
    meta_["state"] = closed.ok() ? "complete" : "incomplete";
    meta_["ended_wall_ns"] = RealClock::Get().WallNanos();
    meta_["stats"] = {{"frames", st.frames},
                      {"frame_bytes", st.frame_bytes},
                      {"batches", st.batches},
                      {"stored_bytes", st.stored_bytes},
                      {"shed_frames", st.shed_frames},
                      {"capture_waits", st.waits},
                      {"capture_wait_ns", st.wait_ns},
                      {"flows", st.flows},
                      {"events", st.events}};
    if (!closed.ok()) meta_["error"] = closed.message();
    if (!policy_stats.is_null()) meta_["manifest_checks"] = policy_stats;
    Status put = store_->PutCapture(capture_id_, meta_);
    if (!closed.ok()) summary.errors.push_back("capture: " + closed.message());
    if (!put.ok()) summary.errors.push_back("capture: " + put.message());
    summary.capture_meta = meta_;
  }
  Status closed = alerts_->Close();
  summary.alerts = alerts_->GetStats();
  if (!closed.ok()) summary.errors.push_back("alerts: " + closed.message());
  {
    std::lock_guard lock(mu_);  // the API may still read them (List, Get)
    for (const auto& run : runs_) {
      VmOutcome o;
      o.name = run->request.spec.name;
      o.recording_id = run->recording_id;
      if (run->outcome) o.result = *run->outcome;
      summary.outcomes.push_back(std::move(o));
    }
  }
  own_socket_dir_.reset();
  return summary;
}

}  // namespace blackbox
