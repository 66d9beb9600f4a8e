// The VMs of one host on one switch, each started and stopped on its own.
//
// A VmHost owns what its VMs share: Blackbox's switch (every segment, one
// port per NIC that does not name its own socket), the capture of every frame,
// flow and switch event it handles (created with the first VM that has a port,
// ended by Close), the manifest checks on the switch (ManifestPolicy) and the
// alert writer. Each VM it starts is its own recording on its own thread
// (RecordVm): its ports join the switch before QEMU starts and leave it when
// the recording ends, and the manifests of the VMs running are recompiled as
// peers come and go, so a rule naming a peer VM matches it while it runs.
//
// The lab runner (recorder/lab.h) starts a lab's VMs on one VmHost and closes
// it when the lab ends; the appliance daemon (daemon/) keeps one for its whole
// life. Thread safety: every public method may be called from any thread.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/files.h"
#include "common/status.h"
#include "manifest/alerts.h"
#include "manifest/manifest_policy.h"
#include "recorder/recorder.h"
#include "recorder/vm_spec.h"
#include "store/store.h"
#include "switch/capture_writer.h"
#include "switch/switch_server.h"

namespace blackbox {

class VmHost {
 public:
  struct Options {
    // Template for every VM's recorder (data_dir, qemu, duration, snapshots
    // ...); nic_sockets, rr, extra, stop and live are set per VM.
    RecorderOptions recorder;
    // Periodic snapshots of VMs with a NIC too (see LabOptions).
    bool snapshot_networked_vms = false;
    SwitchServer::Options switch_options;
    CaptureWriter::Options capture;
    // The capture's id is "<capture_name>-YYYYMMDD-HHMMSS[-N]".
    std::string capture_name = "host";
    // Merged into the capture's metadata when it is created.
    nlohmann::json capture_meta = nlohmann::json::object();
    // Called once the capture exists (before the VM that needed it starts),
    // under the host's lock: it must not call back into the host.
    std::function<void(const std::string& capture_id)> on_capture;
    // Called on the alert writer's thread after each alert is stored.
    std::function<void(const StoredAlert&)> on_alert;
    ManifestPolicy::Options policy;
    // Where the switch's port sockets go (must exist); "": a private
    // temporary directory, removed by Close.
    std::string socket_dir;
  };

  struct StartRequest {
    VmSpec spec;
    bool rr = true;                            // record it (false: on the switch, not recorded)
    std::shared_ptr<const Manifest> manifest;  // null: none
    std::string group;  // the lab it belongs to (RecordingInfo extra["lab"]); "": none
    // The recording's end reason when Stop() ends it.
    std::string stop_reason = "stopped with its lab";
    // Called with the recording id as soon as it exists (the VM's thread).
    std::function<void(const std::string& recording_id)> on_started;
    // Called when the VM has ended and left the switch (the VM's thread).
    std::function<void(const StatusOr<RecordingInfo>& outcome)> on_ended;
  };

  struct VmStatus {
    std::string name, group, recording_id;
    // "running", "stopping", "complete", "interrupted", "refused", "failed"
    std::string state;
    std::string detail;  // end reason or error, one line
    bool rr = true;
    bool manifest = false;
    int64_t started_wall_ns = 0, ended_wall_ns = 0;
    uint64_t raw_bytes = 0, stored_bytes = 0, console_bytes = 0;
  };

  struct VmOutcome {
    std::string name;
    std::string recording_id;  // "" if it never started
    StatusOr<RecordingInfo> result = Internal("did not end");
  };

  struct Summary {
    std::string capture_id;  // "" if no VM had a port on the switch
    CaptureWriter::Stats capture;
    AlertWriter::Stats alerts;
    nlohmann::json capture_meta;      // as stored
    std::vector<VmOutcome> outcomes;  // every VM still held, in start order
    std::vector<std::string> errors;  // capture or alert writer failures
  };

  // Starts the switch's thread and the alert writer. `store` must outlive
  // the host.
  VmHost(Store* store, Options options);
  ~VmHost();  // Close()
  VmHost(const VmHost&) = delete;
  VmHost& operator=(const VmHost&) = delete;

  // Starts a VM (returns once its thread runs; QEMU's own start failures end
  // it later, see VmStatus). Errors: AlreadyExists while a VM of that name
  // runs; InvalidArgument for missing files or a MAC a running VM uses;
  // the capture's or the switch's error when its ports cannot be set up;
  // FailedPrecondition after Close.
  Status Start(StartRequest request);
  // Asks a running VM to stop cleanly. NotFound if no VM has that name,
  // FailedPrecondition if it has ended already.
  Status Stop(const std::string& name);
  void StopAll();
  // Every VM held (running, and ended ones until their name starts again).
  std::vector<VmStatus> List() const;
  std::optional<VmStatus> Get(const std::string& name) const;
  // Blocks until no VM runs.
  void WaitIdle();
  std::string capture_id() const;

  // Stops every VM and waits for them, then closes the switch, the capture
  // and the alert writer. The first call returns the summary; later calls an
  // empty one.
  Summary Close();

 private:
  struct Run;
  struct PortPlan;
  // Runs `f` on the switch's thread and waits for it; an exception it
  // throws becomes an Internal status.
  template <class F>
  Status OnSwitch(F&& f);
  Status EnsureCapture();
  void Recompile();  // on the switch thread, under mu_
  void RunVm(Run* run, RecorderOptions options);
  void Ended(Run* run, StatusOr<RecordingInfo> outcome);
  static VmStatus StatusOf(const Run& run);

  Store* const store_;
  const Options options_;
  const int64_t wall_offset_;
  boost::asio::io_context io_;
  std::thread switch_thread_;
  std::unique_ptr<SwitchServer> server_;
  std::unique_ptr<AlertWriter> alerts_;
  std::unique_ptr<ManifestPolicy> policy_;  // created with the first manifest
  std::optional<TempDir> own_socket_dir_;
  std::string socket_dir_;

  mutable std::mutex mu_;
  std::condition_variable ended_cv_;
  bool closed_ = false;
  uint64_t next_socket_ = 0;
  std::vector<std::unique_ptr<Run>> runs_;  // start order
  std::unique_ptr<CaptureWriter> writer_;   // set once, under mu_
  std::string capture_id_;

  std::mutex meta_mu_;
  nlohmann::json meta_;  // the capture's metadata
};

}  // namespace blackbox
