// Alerts and responses: what happens when a VM deviates from its manifest.
//
// VmControl is the one way to act on a running VM from outside its recorder
// (pause, snapshot, power off): the recorder attaches to it while QEMU runs
// and carries requests out on its own thread over QMP.
//
// AlertWriter turns deviations into stored alerts (Store::PutAlert; the
// body is documented in docs/manifest.md, "Alerts") and carries out the
// responses the switch cannot: pause, snapshot and power-off through the
// VM's VmControl. Drop and quarantine have already happened on the switch
// thread when the violation arrives. Every response becomes an event of the
// VM's recording, {"kind":"response", "alert":ID, "action", "outcome"}, with
// outcome "done", "failed: <why>" or "not carried out: observe mode".
// Alerts are stored as soon as the writer thread gets them (no batching);
// their wall time is the time they were stored.
//
// Thread safety: every public method of both classes is thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "common/status.h"
#include "manifest/manifest_policy.h"
#include "store/store.h"

namespace blackbox {

class VmControl {
 public:
  enum class Action {
    kPause,     // QMP stop; the outcome detail has query-status's answer
    kSnapshot,  // a "mark" event in the recording and a QEMU snapshot (savevm)
    kPowerOff,  // QMP quit: QEMU stops and the recording is finalised
  };
  static const char* ActionName(Action a);  // "pause", "snapshot", "poweroff"

  // Called once with the outcome and details ({"status":"paused"}, the
  // snapshot's name and icount ...), on the recorder's thread.
  using Done = std::function<void(Status outcome, nlohmann::json detail)>;
  using Handler = std::function<void(Action, const std::string& why, Done)>;

  // Asks the VM to do `a`. If no recorder is attached (QEMU not running yet
  // or any more), `done` is called at once with FailedPrecondition.
  void Request(Action a, const std::string& why, Done done);

  // The recorder's side: `handler` runs requests (it must hand them to the
  // recorder's own thread and never block; it runs under this object's
  // lock). After Detach() returns, the handler is not running and never
  // will again.
  void Attach(Handler handler);
  void Detach();

 private:
  std::mutex mu_;
  Handler handler_;
};

class AlertWriter {
 public:
  // What the writer knows of a VM.
  struct VmInfo {
    std::string recording_id;  // "" until the recording exists
    std::string capture_id;    // its lab's capture, "" if none
    std::string manifest_path;
    std::string manifest_sha256;
    std::map<uint32_t, std::string> port_names;  // switch port -> "vm/nic"
    std::shared_ptr<VmControl> control;
  };

  // An alert raised outside the switch (attestation, QMP events).
  struct Raised {
    std::string vm;
    std::string kind;  // "boot", "event"
    std::string rule;  // "boot.initrd", "events.guest_panic" ...
    int rule_line = 0;
    Responses action = kRespAlert;
    bool enforced = false;
    std::string reason;                                // one line
    nlohmann::json detail = nlohmann::json::object();  // merged into the alert body
  };

  struct Stats {
    uint64_t alerts = 0;
    uint64_t responses = 0;
    int64_t max_store_delay_ns = 0;  // trigger to stored, the slowest
    std::string first_error;
  };

  // Wall time = monotonic time + wall_offset_ns (the capture writer's rule,
  // so alert and frame times compare). Starts the writer thread.
  AlertWriter(Store* store, int64_t wall_offset_ns);
  ~AlertWriter();  // Close()
  AlertWriter(const AlertWriter&) = delete;
  AlertWriter& operator=(const AlertWriter&) = delete;

  void SetVm(const std::string& vm, VmInfo info);
  // Names a switch port for the evidence of every VM's alerts (a VM's own
  // VmInfo::port_names come first).
  void SetPortName(uint32_t port, const std::string& name);
  // Sets the recording id of a VM already known (the lab learns it late).
  void SetRecording(const std::string& vm, const std::string& recording_id);

  // ManifestPolicy's sink: queues and returns at once.
  void OnViolation(ManifestPolicy::Violation&& v);
  void Raise(Raised a);

  // Stores everything queued and stops the thread. Responses still waiting
  // for a VM are not waited for. Idempotent.
  Status Close();

  Stats GetStats() const;
  // Called on the writer thread after each alert is stored (tests).
  void SetObserver(std::function<void(const StoredAlert&)> observer);

 private:
  struct Item {
    int64_t trigger_mono_ns = 0;
    std::string vm;
    Responses action = 0;
    bool enforced = false;
    nlohmann::json body;
  };
  void Run();
  void Store1(Item& item);
  void Respond(const Item& item, const std::string& alert_id);
  struct VmStep {
    VmControl::Action action;
    const char* name;
  };
  std::map<uint32_t, std::string> port_names_;  // under mu_
  void RunVmSteps(std::shared_ptr<VmControl> control, const std::string& vm,
                  const std::string& alert_id, std::deque<VmStep> steps);
  void ResponseEvent(const std::string& vm, const std::string& alert_id, const char* action,
                     const std::string& outcome, const nlohmann::json& detail);
  int64_t WallNow() const;
  VmInfo Vm(const std::string& name) const;

  Store* store_;
  const int64_t wall_offset_ns_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  std::map<std::string, VmInfo> vms_;
  bool closing_ = false;
  bool closed_ = false;
  Stats stats_;
  std::function<void(const StoredAlert&)> observer_;
  std::thread thread_;
};

}  // namespace blackbox
