#include "recorder/recorder.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>

#include "common/files.h"
#include "common/hash.h"
#include "common/process.h"
#include "manifest/attestation.h"
#include "recorder/device_probe.h"
#include "recorder/qemu_binary.h"
#include "recorder/qemu_instance.h"

namespace blackbox {

namespace asio = boost::asio;
using std::chrono::milliseconds;

namespace {

std::atomic<int> g_stop_requests{0};

std::chrono::nanoseconds Ns(int64_t ns) { return std::chrono::nanoseconds(ns); }

// Calls fn every `interval` until it returns false or the timer is cancelled.
void RunEvery(asio::steady_timer& timer, std::chrono::nanoseconds interval,
              std::function<bool()> fn) {
  timer.expires_after(interval);
  timer.async_wait([&timer, interval, fn = std::move(fn)](const boost::system::error_code& ec) {
    if (ec || !fn()) return;
    RunEvery(timer, interval, fn);
  });
}

StatusOr<nlohmann::json> HashInput(const std::string& role, const std::string& path) {
  ASSIGN_OR_RETURN(Sha256Digest digest, Sha256File(path));
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  return nlohmann::json{
      {"role", role}, {"path", path}, {"sha256", ToHex(digest)}, {"size", ec ? 0 : size}};
}

// Copies icount and VM clock of snapshot `name` on the bb-state image from a
// query-block reply into `snap`. Tolerates any shape of reply.
void FindSnapshotInfo(const nlohmann::json& blocks, const std::string& name, nlohmann::json& snap) {
  if (!blocks.is_array()) return;
  for (const auto& b : blocks) {
    if (!b.is_object() || b.value("device", "") != "bb-state") continue;
    const nlohmann::json* image = nullptr;
    if (b.contains("inserted") && b["inserted"].is_object() && b["inserted"].contains("image")) {
      image = &b["inserted"]["image"];
    }
    if (image == nullptr || !image->is_object() || !image->contains("snapshots")) continue;
    const auto& list = (*image)["snapshots"];
    if (!list.is_array()) continue;
    for (const auto& s : list) {
      if (!s.is_object() || s.value("name", "") != name) continue;
      auto num = [&](const char* key) -> int64_t {
        return s.contains(key) && s[key].is_number_integer() ? s[key].get<int64_t>() : -1;
      };
      if (num("icount") < 0) continue;
      snap["icount"] = num("icount");
      snap["vm_clock_ns"] = num("vm-clock-sec") * 1'000'000'000 + num("vm-clock-nsec");
    }
  }
}

class Session {
 public:
  Session(Store* store, const VmSpec& spec, const RecorderOptions& options)
      : store_(store), spec_(spec), options_(options), clock_(&RealClock::Get()) {}
  ~Session() {
    if (options_.control) options_.control->Detach();
  }

  StatusOr<RecordingInfo> Run();

 private:
  Status Prepare();
  Status Attest();
  Status StartQemu();
  void OnQmpReady();
  void CheckQmpEvent(const nlohmann::json& ev);
  void HandleControl(VmControl::Action a, const std::string& why, VmControl::Done done);
  void RaiseAlert(const std::string& kind, const std::string& rule, Responses action,
                  const std::string& reason, nlohmann::json detail = nlohmann::json::object());
  void OnSerial(std::string_view bytes);
  void FlushConsole();
  void PollLog();
  void ScheduleTimers();
  void Stop(const std::string& reason);
  void OnQemuExited(int wait_status);
  Status Finalize();
  // Takes a VM snapshot (savevm) and records it; `done` (optional) gets the
  // outcome. QEMU refuses while replay events are queued: `attempts` more
  // tries, 200 ms apart.
  void TakeSnapshot(std::function<void(Status, nlohmann::json)> done = nullptr, int attempts = 0);
  void Progress();
  void Fail(Status s) {
    if (error_.ok()) error_ = std::move(s);
    Stop("recorder error: " + error_.message());
  }
  void Event(nlohmann::json body) {
    store_->PutEvent(info_.id, clock_->WallNanos(), body).IgnoreError();
  }

  Store* store_;
  VmSpec spec_;
  RecorderOptions options_;
  Clock* clock_;
  RecordingInfo info_;
  std::string dir_;
  std::string log_path_;
  std::string qemu_log_path_;
  std::vector<std::string> overlays_;
  std::string state_image_;
  std::vector<std::string> qemu_args_;

  asio::io_context io_;
  std::unique_ptr<QemuInstance> qemu_;
  asio::signal_set signals_{io_, SIGINT, SIGTERM};
  asio::steady_timer poll_timer_{io_}, snapshot_timer_{io_}, duration_timer_{io_},
      progress_timer_{io_}, console_timer_{io_};
  std::unique_ptr<RrChunker> chunker_;
  UniqueFd log_fd_;
  uint64_t log_read_pos_ = rr::kHeaderSize;
  std::string log_buf_;
  std::string console_pending_;
  int64_t console_pending_wall_ = 0;
  uint64_t console_offset_ = 0;
  bool stopping_ = false;
  bool qemu_exited_ = false;
  int snapshot_count_ = 0;
  bool snapshot_in_flight_ = false;
  std::string end_reason_;
  int qemu_wait_status_ = 0;
  int64_t start_mono_ = 0;
  int64_t qemu_run_ns_ = 0;  // QEMU start to exit
  nlohmann::json snapshots_ = nlohmann::json::array();
  QemuIdentity qemu_id_;  // the QEMU that records, stored with the recording
  // The guest's RAM, hashed when the recording ends (verify compares it).
  std::optional<GuestRamFile> ram_file_;
  // The QEMU stops its vCPUs at a logged shutdown (qemu-patches), so the RAM
  // a replay ends with is comparable. Learned from its QMP commands.
  bool ram_comparable_ = false;
  Status error_;
  bool pause_requested_ = false;  // a STOP Blackbox asked for is not a deviation
  std::vector<std::unique_ptr<asio::steady_timer>> retry_timers_;
};

Status Session::Prepare() {
  RETURN_IF_ERROR(CheckSpecFiles(spec_));
  ASSIGN_OR_RETURN(qemu_id_, IdentifyQemu(options_.qemu_binary.empty() ? DefaultQemuBinary()
                                                                       : options_.qemu_binary));
  int64_t now = clock_->WallNanos();
  ASSIGN_OR_RETURN(info_.id, NewRecordingId(store_, spec_.name, now));
  info_.vm_name = spec_.name;
  info_.state = "recording";
  info_.started_wall_ns = now;
  dir_ = options_.data_dir + "/recordings/" + info_.id;
  RETURN_IF_ERROR(MakeDirs(dir_));
  if (options_.rr) log_path_ = dir_ + "/rr.log";
  qemu_log_path_ = dir_ + "/qemu.log";

  nlohmann::json inputs = nlohmann::json::array();
  ASSIGN_OR_RETURN(auto kernel, HashInput("kernel", spec_.kernel));
  inputs.push_back(kernel);
  if (!spec_.initrd.empty()) {
    ASSIGN_OR_RETURN(auto initrd, HashInput("initrd", spec_.initrd));
    inputs.push_back(initrd);
  }
  nlohmann::json disks = nlohmann::json::array();
  for (const auto& d : spec_.disks) {
    std::string overlay = dir_ + "/disk-" + d.name + ".qcow2";
    if (!d.base.empty()) {
      ASSIGN_OR_RETURN(auto base, HashInput("disk:" + d.name, d.base));
      inputs.push_back(base);
    }
    RETURN_IF_ERROR(CreateDiskOverlay(d, overlay));
    overlays_.push_back(overlay);
    disks.push_back({{"name", d.name}, {"overlay", overlay}, {"base", d.base}});
  }
  state_image_ = dir_ + "/state.qcow2";
  RETURN_IF_ERROR(CreateStateImage(state_image_));

  QemuInstance::Callbacks cb;
  cb.on_serial = [this](std::string_view bytes) { OnSerial(bytes); };
  cb.on_event = [this](const nlohmann::json& ev) {
    nlohmann::json body = {{"kind", "qmp"}, {"event", ev.value("event", "")}};
    if (ev.contains("data")) body["data"] = ev["data"];
    Event(body);
    CheckQmpEvent(ev);
  };
  cb.on_qmp_ready = [this]() { OnQmpReady(); };
  cb.on_exit = [this](int status) { OnQemuExited(status); };
  cb.on_error = [this](Status s) { Fail(std::move(s)); };
  cb.poll_serial = false;  // PollLog reads it, right after the log
  qemu_ = std::make_unique<QemuInstance>(io_, std::move(cb));
  RETURN_IF_ERROR(qemu_->Prepare());
  QemuRunPaths paths;
  paths.rr_log = log_path_;
  paths.rr_snapshot = "init";
  paths.qmp_socket = qemu_->qmp_socket();
  paths.serial_file = qemu_->serial_file();
  paths.disk_overlays = overlays_;
  paths.state_image = state_image_;
  paths.nic_sockets = options_.nic_sockets;
  paths.nic_listen = options_.nic_listen;
  paths.sandbox = options_.sandbox;
  if (options_.rr) {
    auto ram = GuestRamFile::Create(spec_.name, spec_.memory_bytes);
    if (ram.ok()) {
      ram_file_.emplace(std::move(*ram));
      paths.ram_file = ram_file_->path();
    } else {
      // Recorded all the same; verify will say the RAM was not compared.
      spdlog::warn("{}: the guest's final RAM will not be hashed: {}", info_.id,
                   ram.status().message());
    }
  }
  qemu_args_ =
      BuildQemuArgs(spec_, options_.rr ? RrMode::kRecord : RrMode::kNone, paths, qemu_id_.resolved);
  if (options_.extra.is_object()) {
    for (const auto& [key, value] : options_.extra.items()) info_.extra[key] = value;
  }

  info_.extra["spec"] = spec_.source_text;
  // The values of the ${VARS} the spec used, so a replay resolves the same
  // paths whatever its own environment.
  nlohmann::json spec_env = nlohmann::json::object();
  for (size_t i = spec_.source_text.find("${"); i != std::string::npos;
       i = spec_.source_text.find("${", i + 2)) {
    size_t close = spec_.source_text.find('}', i + 2);
    if (close == std::string::npos) break;
    std::string var = spec_.source_text.substr(i + 2, close - i - 2);
    if (const char* value = std::getenv(var.c_str())) spec_env[var] = value;
  }
  info_.extra["spec_env"] = spec_env;
  info_.extra["spec_dir"] = spec_.source_dir;
  info_.extra["inputs"] = inputs;
  info_.extra["boot"] = {{"cmdline", spec_.append}, {"machine", spec_.machine}};
  info_.extra["disks"] = disks;
  info_.extra["state_image"] = state_image_;
  info_.extra["dir"] = dir_;
  info_.extra["qemu"] = {{"args", qemu_args_}};
  WriteQemuIdentity(qemu_id_, info_.extra["qemu"]);
  info_.extra["recorder_pid"] = ::getpid();
  info_.extra["rr"] = {{"enabled", options_.rr}};
  info_.extra["snapshots"] = snapshots_;
  if (options_.manifest) {
    const Manifest& m = *options_.manifest;
    info_.extra["manifest"] = {{"path", m.path},
                               {"sha256", ToHex(Sha256Of(m.source_text))},
                               {"mode", m.mode == ManifestMode::kEnforce ? "enforce" : "observe"},
                               {"text", m.source_text}};
  }
  RETURN_IF_ERROR(store_->PutRecording(info_));
  if (options_.on_started) options_.on_started(info_.id);
  if (options_.manifest) RETURN_IF_ERROR(Attest());

  chunker_ = std::make_unique<RrChunker>(store_, info_.id, options_.chunker, clock_);
  return Status::Ok();
}

void Session::RaiseAlert(const std::string& kind, const std::string& rule, Responses action,
                         const std::string& reason, nlohmann::json detail) {
  const Manifest& m = *options_.manifest;
  const bool enforce = m.mode == ManifestMode::kEnforce;
  spdlog::warn("{}: manifest: {}", spec_.name, reason);
  if (options_.alerts == nullptr) return;
  AlertWriter::Raised a;
  a.vm = spec_.name;
  a.kind = kind;
  a.rule = rule;
  a.action = action;
  a.enforced = enforce;
  a.reason = reason;
  a.detail = std::move(detail);
  options_.alerts->Raise(std::move(a));
}

Status Session::Attest() {
  const Manifest& m = *options_.manifest;
  BootFacts facts;
  for (const auto& in : info_.extra["inputs"]) {
    const std::string role = in.value("role", ""), sha = in.value("sha256", "");
    if (role == "kernel") facts.kernel_sha256 = sha;
    if (role == "initrd") facts.initrd_sha256 = sha;
    if (role.rfind("disk:", 0) == 0) facts.disks_sha256[role.substr(5)] = sha;
  }
  facts.cmdline = spec_.append;
  facts.machine = spec_.machine;
  if (!m.boot.devices.empty()) {
    QemuRunPaths paths;
    paths.disk_overlays = overlays_;
    paths.sandbox = options_.sandbox;
    auto devices = ProbeDevices(spec_, paths, qemu_id_.resolved);
    if (!devices.ok()) return devices.status().WithContext("attestation: device probe");
    facts.devices = std::move(*devices);
  }
  std::vector<BootMismatch> mismatches = CompareBoot(m.boot, facts);
  nlohmann::json list = nlohmann::json::array();
  std::string what;
  for (const auto& mm : mismatches) {
    list.push_back({{"item", mm.item}, {"expected", mm.expected}, {"actual", mm.actual}});
    what += (what.empty() ? "" : "; ") + mm.ToString();
  }
  const bool refuse =
      !mismatches.empty() && m.mode == ManifestMode::kEnforce && m.refuse_on_mismatch;
  info_.extra["attestation"] = {{"result", mismatches.empty() ? "match"
                                           : refuse           ? "refused"
                                                              : "mismatch"},
                                {"mismatches", list},
                                {"devices", facts.devices}};
  Event({{"kind", "attestation"},
         {"result", info_.extra["attestation"]["result"]},
         {"mismatches", list}});
  if (mismatches.empty()) return store_->PutRecording(info_);
  RaiseAlert("boot", "boot", kRespAlert,
             std::string(refuse ? "start refused: " : "boot chain differs: ") + what,
             {{"mismatches", list}, {"refused", refuse}, {"rule_line", m.boot.line}});
  if (!refuse) return store_->PutRecording(info_);
  info_.state = "refused";
  info_.ended_wall_ns = clock_->WallNanos();
  info_.extra["end_reason"] = "attestation failed: " + what;
  RETURN_IF_ERROR(store_->PutRecording(info_));
  return FailedPrecondition("attestation failed, start refused: " + what);
}

void Session::OnQmpReady() {
  if (stopping_) {
    Stop(end_reason_);
    return;
  }
  // The devices QEMU reports, kept with the recording (manifest learn).
  if (QmpClient* qmp = qemu_->qmp()) {
    qmp->Execute("query-pci", nullptr, [this](StatusOr<nlohmann::json> r) {
      if (!r.ok()) return;
      info_.extra["devices"] = DescribeDevices(*r);
      store_->PutRecording(info_).IgnoreError();
    });
    if (ram_file_) {
      qmp->Execute("query-commands", nullptr, [this](StatusOr<nlohmann::json> r) {
        if (!r.ok() || !r->is_array()) return;
        for (const auto& c : *r) {
          if (c.value("name", "") == kBlackboxQemuCommand) ram_comparable_ = true;
        }
      });
    }
  }
  if (options_.control) {
    options_.control->Attach(
        [this](VmControl::Action a, const std::string& why, VmControl::Done done) {
          asio::post(io_, [this, a, why, done = std::move(done)]() mutable {
            HandleControl(a, why, std::move(done));
          });
        });
  }
}

void Session::HandleControl(VmControl::Action a, const std::string& why, VmControl::Done done) {
  QmpClient* qmp = qemu_->qmp();
  if (qmp == nullptr || qemu_exited_ || stopping_) {
    done(FailedPrecondition("the VM is stopping"), nullptr);
    return;
  }
  Event({{"kind", "recorder"}, {"what", VmControl::ActionName(a)}, {"why", why}});
  switch (a) {
    case VmControl::Action::kPause:
      pause_requested_ = true;
      qmp->Execute("stop", nullptr, [this, done](StatusOr<nlohmann::json> r) {
        if (!r.ok()) return done(r.status(), nullptr);
        QmpClient* q = qemu_->qmp();
        if (q == nullptr) return done(Unavailable("QMP went away"), nullptr);
        q->Execute("query-status", nullptr, [done](StatusOr<nlohmann::json> st) {
          if (!st.ok()) return done(st.status(), nullptr);
          done(Status::Ok(),
               {{"status", st->value("status", "")}, {"running", st->value("running", true)}});
        });
      });
      return;
    case VmControl::Action::kSnapshot:
      Event({{"kind", "mark"}, {"why", why}});
      TakeSnapshot(done, 25);
      return;
    case VmControl::Action::kPowerOff:
      Stop("powered off by a manifest response (" + why + ")");
      done(Status::Ok(), {{"qmp", "quit"}});
      return;
  }
}

void Session::CheckQmpEvent(const nlohmann::json& ev) {
  if (!options_.manifest) return;
  const EventRules& rules = options_.manifest->events;
  const std::string name = ev.value("event", "");
  const nlohmann::json data =
      ev.contains("data") && ev["data"].is_object() ? ev["data"] : nlohmann::json::object();
  const bool by_guest = data.value("guest", false);
  Responses action = 0;
  std::string rule, reason;
  if (name == "GUEST_PANICKED") {
    action = rules.guest_panic;
    rule = "events.guest_panic";
    reason = "the guest panicked";
  } else if (name == "DEVICE_DELETED") {
    action = rules.device_change;
    rule = "events.device_change";
    reason =
        "device " + data.value("device", data.value("path", std::string("?"))) + " was removed";
  } else if (name == "SHUTDOWN" && by_guest && !stopping_) {
    action = rules.guest_shutdown;
    rule = "events.guest_shutdown";
    reason = "the guest shut itself down (" + data.value("reason", std::string("?")) + ")";
  } else if (name == "RESET" && by_guest) {
    action = rules.guest_reset;
    rule = "events.guest_reset";
    reason = "the guest reset itself (" + data.value("reason", std::string("?")) + ")";
  } else if (name == "STOP" && !pause_requested_ && !snapshot_in_flight_ && !stopping_) {
    action = rules.unexpected_stop;
    rule = "events.unexpected_stop";
    reason = "the VM stopped without Blackbox asking";
  }
  if (action == 0) return;
  RaiseAlert("event", rule, action, reason, {{"qmp_event", ev}});
  // The VM-level responses happen here; drop/quarantine are the switch's.
  const Responses acts = options_.manifest->mode == ManifestMode::kEnforce ? action : 0;
  if (acts & (kRespSnapshot | kRespPause | kRespPowerOff)) {
    auto note = [this, rule](const char* what) {
      return [this, rule, what](Status s, nlohmann::json detail) {
        Event({{"kind", "response"},
               {"rule", rule},
               {"action", what},
               {"outcome", s.ok() ? "done" : "failed: " + s.message()},
               {"detail", detail}});
      };
    };
    if (acts & kRespSnapshot) HandleControl(VmControl::Action::kSnapshot, rule, note("snapshot"));
    if (acts & kRespPause) HandleControl(VmControl::Action::kPause, rule, note("pause"));
    if (acts & kRespPowerOff) HandleControl(VmControl::Action::kPowerOff, rule, note("poweroff"));
  }
}

Status Session::StartQemu() {
  spdlog::debug("qemu: {}", ShellJoin(qemu_args_));
  std::vector<int> inherit;
  if (ram_file_) inherit.push_back(ram_file_->fd());
  RETURN_IF_ERROR(qemu_->Start(qemu_args_, qemu_log_path_, std::chrono::seconds(60), inherit));
  start_mono_ = clock_->MonotonicNanos();
  Event({{"kind", "recorder"}, {"what", "qemu-started"}, {"pid", qemu_->pid()}});
  return Status::Ok();
}

void Session::OnSerial(std::string_view bytes) {
  if (console_pending_.empty()) console_pending_wall_ = clock_->WallNanos();
  console_pending_.append(bytes);
  if (options_.echo_console) {
    std::fwrite(bytes.data(), 1, bytes.size(), stdout);
    std::fflush(stdout);
  }
  if (console_pending_.size() >= 64 * 1024) FlushConsole();
}

void Session::FlushConsole() {
  if (console_pending_.empty()) return;
  ConsolePiece piece{console_offset_, console_pending_wall_, std::move(console_pending_)};
  console_pending_.clear();
  console_offset_ += piece.bytes.size();
  Status s = store_->AppendConsole(info_.id, piece);
  if (!s.ok()) Fail(s);
}

void Session::PollLog() {
  if (!options_.rr) {
    qemu_->ReadSerial();
    FlushConsole();
    return;
  }
  if (!log_fd_.valid()) {
    int fd = ::open(log_path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {  // QEMU has not created it yet: nothing to order against
      qemu_->ReadSerial();
      FlushConsole();
      return;
    }
    log_fd_ = UniqueFd(fd);
  }
  // Read the log first, then the console: QEMU writes a console byte before
  // the log event that records the write, so every write event in what we
  // read here has its byte in the console file already. Storing the console
  // before the chunk keeps that true in the store, even across a crash.
  std::string& buf = log_buf_;
  buf.clear();
  constexpr size_t kMaxRead = 4 << 20;
  while (buf.size() < kMaxRead) {
    size_t old = buf.size();
    buf.resize(old + (1 << 20));
    ssize_t n =
        ::pread(log_fd_.get(), buf.data() + old, 1 << 20, static_cast<off_t>(log_read_pos_));
    if (n < 0 && errno == EINTR) {
      buf.resize(old);
      continue;
    }
    if (n < 0) {
      buf.resize(old);
      Fail(ErrnoError("reading " + log_path_, errno));
      return;
    }
    buf.resize(old + static_cast<size_t>(n));
    log_read_pos_ += static_cast<uint64_t>(n);
    if (n == 0) break;
  }
  qemu_->ReadSerial();
  FlushConsole();
  Status s = chunker_->Feed(buf);
  if (!s.ok()) {
    Fail(s.WithContext("rr log"));
    return;
  }
  s = chunker_->Tick();
  if (!s.ok()) Fail(s);
}

void Session::ScheduleTimers() {
  RunEvery(poll_timer_, Ns(options_.poll_interval_ns), [this]() {
    if (qemu_exited_) return false;
    PollLog();
    return true;
  });
}

void Session::TakeSnapshot(std::function<void(Status, nlohmann::json)> done, int attempts) {
  QmpClient* qmp = qemu_->qmp();
  auto fail = [done](Status st) {
    if (done) done(std::move(st), nullptr);
  };
  if (qmp == nullptr || stopping_) return fail(FailedPrecondition("the VM is not running"));
  if (snapshot_in_flight_) {
    if (attempts <= 0) return fail(Unavailable("another snapshot is being taken"));
  }
  auto retry = [this, done, attempts](Status why) {
    if (attempts <= 0 || stopping_ || qemu_exited_) {
      if (done) done(std::move(why), nullptr);
      return;
    }
    auto timer = std::make_unique<asio::steady_timer>(io_, milliseconds(200));
    timer->async_wait([this, done, attempts](const boost::system::error_code& ec) {
      if (ec) return;
      TakeSnapshot(done, attempts - 1);
    });
    retry_timers_.push_back(std::move(timer));
  };
  if (snapshot_in_flight_) return retry(Unavailable("another snapshot is being taken"));
  snapshot_in_flight_ = true;
  std::string name = "bb-" + std::to_string(++snapshot_count_);
  int64_t wall = clock_->WallNanos();
  qmp->Execute(
      "human-monitor-command", {{"command-line", "savevm " + name}},
      [this, name, wall, retry, fail, done](StatusOr<nlohmann::json> r) {
        if (!r.ok() || (r->is_string() && !r->get<std::string>().empty())) {
          // QEMU refuses while replay events are queued; try again.
          snapshot_in_flight_ = false;
          --snapshot_count_;
          std::string why = r.ok() ? r->get<std::string>() : r.status().message();
          spdlog::debug("snapshot {} not taken: {}", name, why);
          retry(Unavailable("QEMU did not take the snapshot: " + why));
          return;
        }
        QmpClient* qmp2 = qemu_->qmp();
        if (qmp2 == nullptr) {
          snapshot_in_flight_ = false;
          fail(Unavailable("QMP went away"));
          return;
        }
        qmp2->Execute("query-block", nullptr,
                      [this, name, wall, fail, done](StatusOr<nlohmann::json> blocks) {
                        snapshot_in_flight_ = false;
                        nlohmann::json snap = {{"name", name}, {"wall_ns", wall}};
                        if (blocks.ok()) FindSnapshotInfo(*blocks, name, snap);
                        if (!snap.contains("icount")) {
                          // QEMU went away meanwhile (or did not list it): not usable.
                          spdlog::debug("snapshot {} not found in query-block", name);
                          fail(Unavailable("snapshot " + name + " not listed by QEMU"));
                          return;
                        }
                        snapshots_.push_back(snap);
                        info_.extra["snapshots"] = snapshots_;
                        store_->PutRecording(info_).IgnoreError();
                        Event({{"kind", "recorder"}, {"what", "snapshot"}, {"snapshot", snap}});
                        if (done) done(Status::Ok(), snap);
                      });
      },
      milliseconds(60000));
}

void Session::Progress() {
  double secs = (clock_->MonotonicNanos() - start_mono_) / 1e9;
  if (!options_.rr) {
    std::fprintf(stderr, "blackbox: %s %.1fs: not rr-recorded, console %llu B\n", info_.id.c_str(),
                 secs, static_cast<unsigned long long>(console_offset_));
    return;
  }
  const auto& st = chunker_->stats();
  double raw_mb = (chunker_->stored_raw_bytes()) / 1e6;
  uint64_t stored = chunker_->stored_bytes();
  std::fprintf(stderr,
               "blackbox: %s %.1fs: log %.2f MB raw -> %.1f KB stored (%.0fx), icount %.3g, "
               "console %llu B\n",
               info_.id.c_str(), secs, raw_mb, stored / 1e3,
               stored ? chunker_->stored_raw_bytes() / static_cast<double>(stored) : 0.0,
               static_cast<double>(st.icount), static_cast<unsigned long long>(console_offset_));
}

void Session::Stop(const std::string& reason) {
  if (qemu_exited_) return;
  if (!stopping_) {
    stopping_ = true;
    end_reason_ = reason;
    Event({{"kind", "recorder"}, {"what", "stop-requested"}, {"reason", reason}});
  }
  qemu_->Quit();
}

void Session::OnQemuExited(int wait_status) {
  if (options_.control) options_.control->Detach();
  qemu_exited_ = true;
  qemu_run_ns_ = clock_->MonotonicNanos() - start_mono_;
  qemu_wait_status_ = wait_status;
  poll_timer_.cancel();
  snapshot_timer_.cancel();
  duration_timer_.cancel();
  progress_timer_.cancel();
  console_timer_.cancel();
  signals_.cancel();
  io_.stop();
}

Status Session::Finalize() {
  FlushConsole();
  // Drain what is left of the log; QEMU is gone, so the file is final.
  if (!log_fd_.valid()) {
    int fd = ::open(log_path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) log_fd_ = UniqueFd(fd);
  }
  bool header_ok = false;
  std::string header(rr::kHeaderSize, '\0');
  if (log_fd_.valid()) {
    uint64_t before;
    do {
      before = log_read_pos_;
      PollLog();
    } while (log_read_pos_ != before && error_.ok());
    if (::pread(log_fd_.get(), header.data(), header.size(), 0) ==
        static_cast<ssize_t>(header.size())) {
      header_ok = rr::CheckHeader(header).ok();
    }
  }
  Status seal = chunker_->Finish();
  const rr::Stats& st = chunker_->stats();
  bool complete =
      options_.rr ? header_ok && st.saw_end : qemu_wait_status_ == 0 || (stopping_ && error_.ok());
  info_.state = complete ? "complete" : "interrupted";
  info_.ended_wall_ns = clock_->WallNanos();
  std::string qemu_exit = ChildProcess::DescribeWaitStatus(qemu_wait_status_);
  const std::string qemu_stderr = TailOfFile(qemu_log_path_, 5);
  // qemu-patches 0001: QEMU stops when its record log cannot be written
  // (full disk, the reader of a streamed log gone) and says so on stderr.
  if (const size_t at = qemu_stderr.find("cannot write the record log");
      end_reason_.empty() && options_.rr && at != std::string::npos) {
    const size_t eol = qemu_stderr.find('\n', at);
    end_reason_ = "QEMU could not write the record log (" +
                  qemu_stderr.substr(at, eol == std::string::npos ? eol : eol - at) +
                  "): the recording ends at the last complete event stored";
  }
  if (end_reason_.empty()) {
    end_reason_ = st.shutdown_cause >= 0
                      ? "QEMU shut down (" + rr::ShutdownCauseName(st.shutdown_cause) + ")"
                      : "QEMU " + qemu_exit;
  }
  info_.extra["end_reason"] = end_reason_;
  info_.extra["qemu_exit"] = qemu_exit;
  info_.extra["qemu_run_seconds"] = qemu_run_ns_ / 1e9;
  info_.extra["qemu_stderr_tail"] = qemu_stderr;
  info_.extra["console_bytes"] = console_offset_;
  info_.extra["rr"] = {{"enabled", options_.rr},
                       {"complete", options_.rr && complete},
                       {"header", ToHex(options_.rr && complete ? header : rr::MakeHeader())},
                       {"header_written_by_qemu", header_ok},
                       {"chunks", chunker_->chunks()},
                       {"raw_bytes", chunker_->stored_raw_bytes()},
                       {"stored_bytes", chunker_->stored_bytes()},
                       {"events", st.events},
                       {"icount", st.icount},
                       {"console_bytes", st.console_bytes},
                       {"net_frames", st.net_frames},
                       {"shutdown_cause", st.shutdown_cause},
                       {"trailing_bytes_dropped", chunker_->trailing_bytes()},
                       {"head", ToHex(chunker_->head())}};
  info_.extra["snapshots"] = snapshots_;
  nlohmann::json disks = info_.extra["disks"];
  for (auto& d : disks) {
    auto digest = Sha256File(d["overlay"].get<std::string>());
    if (digest.ok()) d["overlay_sha256_end"] = ToHex(*digest);
  }
  info_.extra["disks"] = disks;
  if (auto digest = Sha256File(state_image_); digest.ok()) {
    info_.extra["state_image_sha256_end"] = ToHex(*digest);
  }
  if (ram_file_ && ram_comparable_ && complete) {
    auto digest = ram_file_->Sha256Hex();
    if (digest.ok()) {
      info_.extra["final_ram"] = {{"sha256", *digest}, {"bytes", spec_.memory_bytes}};
    } else {
      spdlog::warn("{}: the final RAM could not be hashed: {}", info_.id,
                   digest.status().message());
    }
  }
  ram_file_.reset();
  if (!error_.ok()) info_.extra["recorder_error"] = error_.message();
  Event({{"kind", "recorder"},
         {"what", "finished"},
         {"state", info_.state},
         {"reason", end_reason_}});
  RETURN_IF_ERROR(store_->PutRecording(info_));
  RETURN_IF_ERROR(seal);
  if (!options_.keep_raw_log && seal.ok()) ::unlink(log_path_.c_str());
  return Status::Ok();
}

StatusOr<RecordingInfo> Session::Run() {
  RETURN_IF_ERROR(Prepare());
  // A self-rearming signal handler.
  std::function<void(const boost::system::error_code&, int)> on_signal;
  on_signal = [this, &on_signal](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    if (!qemu_exited_) {
      std::fprintf(stderr, "blackbox: stopping (signal %d); the recording is being finalised\n",
                   sig);
      Stop("stopped by signal " + std::to_string(sig));
    }
    if (!qemu_exited_) signals_.async_wait(on_signal);
  };
  signals_.async_wait(on_signal);

  Status started = StartQemu();
  if (!started.ok()) {
    info_.state = "interrupted";
    info_.extra["end_reason"] = "QEMU failed to start: " + started.message();
    store_->PutRecording(info_).IgnoreError();
    return started;
  }
  ScheduleTimers();
  if (options_.duration_ns > 0) {
    duration_timer_.expires_after(Ns(options_.duration_ns));
    duration_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) Stop("duration reached");
    });
  }
  if (options_.snapshot_interval_ns > 0 && options_.rr) {
    RunEvery(snapshot_timer_, Ns(options_.snapshot_interval_ns), [this]() {
      TakeSnapshot();
      return true;
    });
  }
  if (options_.progress_interval_ns > 0) {
    RunEvery(progress_timer_, Ns(options_.progress_interval_ns), [this]() {
      Progress();
      return true;
    });
  }
  RunEvery(console_timer_, milliseconds(100), [this]() {
    if (qemu_exited_) return false;
    FlushConsole();
    // Stop requests from RequestStopAllRecordings() arrive here.
    if (g_stop_requests.load() > 0 && !stopping_) Stop("stop requested");
    if (options_.stop && options_.stop->load() && !stopping_) Stop(options_.stop_reason);
    if (options_.live) {
      options_.live->console_bytes.store(console_offset_);
      if (chunker_) {
        options_.live->raw_bytes.store(chunker_->stored_raw_bytes());
        options_.live->stored_bytes.store(chunker_->stored_bytes());
        options_.live->icount.store(chunker_->stats().icount);
      }
    }
    return true;
  });

  // A handler that throws is a Blackbox bug; it must not cost the recording:
  // note it, stop QEMU cleanly and finalise what was recorded.
  while (true) {
    try {
      io_.run();
      break;
    } catch (const std::exception& e) {
      spdlog::error("internal error in the recorder: {}", e.what());
      Fail(Internal(std::string("internal error: ") + e.what()));
    }
  }
  RETURN_IF_ERROR(Finalize());
  bool nothing_recorded = options_.rr ? chunker_->chunks() == 0 : console_offset_ == 0;
  if (qemu_wait_status_ != 0 && info_.state == "interrupted" && nothing_recorded) {
    return Unavailable("QEMU " + ChildProcess::DescribeWaitStatus(qemu_wait_status_) + ": " +
                       TailOfFile(qemu_log_path_, 3));
  }
  return info_;
}

}  // namespace

void RequestStopAllRecordings() { g_stop_requests.fetch_add(1); }

StatusOr<std::string> NewTimestampedId(
    const std::string& name, int64_t wall_ns,
    const std::function<StatusOr<bool>(const std::string&)>& taken) {
  time_t secs = static_cast<time_t>(wall_ns / 1'000'000'000);
  tm t{};
  gmtime_r(&secs, &t);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &t);
  std::string base = name + "-" + stamp;
  for (int n = 0; n < 1000; ++n) {
    std::string id = n == 0 ? base : base + "-" + std::to_string(n);
    ASSIGN_OR_RETURN(bool used, taken(id));
    if (!used) return id;
  }
  return AlreadyExists("too many ids named " + base);
}

StatusOr<std::string> NewRecordingId(Store* store, const std::string& vm_name, int64_t wall_ns) {
  return NewTimestampedId(vm_name, wall_ns, [store](const std::string& id) -> StatusOr<bool> {
    auto existing = store->GetRecording(id);
    if (!existing.ok() && existing.status().code() == StatusCode::kNotFound) return false;
    if (!existing.ok()) return existing.status();
    return true;
  });
}

StatusOr<RecordingInfo> RecordVm(Store* store, const VmSpec& spec, const RecorderOptions& options) {
  Session session(store, spec, options);
  return session.Run();
}

}  // namespace blackbox
