// Labs: several VMs and the switch between them, started by one command
// (`blackbox record lab.yaml`). The schema is documented in docs/lab-spec.md.
//
// A lab run
//   - starts Blackbox's switch with one port per NIC (NICs that name their own
//     socket stay off the switch), in the segments the NICs declare,
//   - records every VM (each gets its own recording; `record: false` runs a VM
//     on the switch without rr),
//   - captures every frame, flow and switch event into one capture (see
//     CaptureWriter), whose id the recordings name in extra["capture"],
//   - ends when the first VM exits (stop_when: first-exit) or when all have
//     (all-exit), on RecorderOptions::duration_ns, or on Ctrl-C; the other
//     VMs are stopped cleanly.
// A plain VM spec is a lab of one VM named after it. The VMs run on one
// VmHost (recorder/vm_host.h), closed when the lab ends.
#pragma once

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "manifest/alerts.h"
#include "manifest/manifest_policy.h"
#include "recorder/recorder.h"
#include "recorder/vm_spec.h"
#include "store/store.h"
#include "switch/capture_writer.h"
#include "switch/switch_server.h"

namespace blackbox {

struct LabVm {
  VmSpec spec;
  bool rr = true;  // `record:` in the lab file
};

struct LabSpec {
  std::string name;  // [A-Za-z0-9_.-]{1,64}
  std::vector<LabVm> vms;
  enum class StopWhen { kFirstExit, kAllExit };
  StopWhen stop_when = StopWhen::kAllExit;
  std::string source_text;
};

// Parses a lab file; a document without `vms:` is parsed as one VM spec and
// becomes a lab of one. Errors are InvalidArgument, one line, naming the field
// and line ("lab line 7: vms[1].spec: ...").
StatusOr<LabSpec> ParseLabSpec(const std::string& yaml_text, const std::string& base_dir);
// Reads and parses a lab (or VM spec) file, capped at 1 MiB.
StatusOr<LabSpec> LoadLabSpec(const std::string& path);

struct LabOptions {
  // Template for every VM's recorder (data_dir, qemu, duration, snapshots ...).
  // nic_sockets, rr, extra and stop are set per VM by RunLab.
  RecorderOptions recorder;
  // Take periodic snapshots (RecorderOptions::snapshot_interval_ns) of VMs
  // with a NIC too. Off by default: a savevm during a networked VM's
  // recording can make its replay stall (QEMU 7.2; docs/lab-spec.md).
  bool snapshot_networked_vms = false;
  SwitchServer::Options switch_options;
  CaptureWriter::Options capture;
  // Called once the capture exists (before any VM starts).
  std::function<void(const std::string& capture_id)> on_capture;
  // Manifests by VM name, overriding the specs' `manifest:` (docs/manifest.md).
  std::map<std::string, std::string> manifests;
  // Called on the alert writer's thread after each alert is stored.
  std::function<void(const StoredAlert&)> on_alert;
  ManifestPolicy::Options policy;
};

struct LabResult {
  std::string capture_id;                 // "" when no NIC was on the switch
  std::vector<RecordingInfo> recordings;  // those that started, in lab order
  std::vector<std::string> failures;      // one line per VM that could not be recorded
  CaptureWriter::Stats capture;
  AlertWriter::Stats alerts;
  nlohmann::json capture_meta;  // as stored (ports with counters ...)
};

// Loads the manifests of a lab's VMs (by VM, in lab order; null where a VM
// has none): `overrides` (VM name -> file) before the specs' `manifest:`.
// Errors: an override for a VM not in the lab, a manifest that does not
// parse or names another VM. Warnings (and rules naming a peer VM without an
// address in the lab) go to stderr. With `host_vms` (the VMs a daemon runs
// beside the lab), a peer VM among them is known too.
StatusOr<std::vector<std::shared_ptr<const Manifest>>> LoadLabManifests(
    const LabSpec& lab, const std::map<std::string, std::string>& overrides,
    const std::set<std::string>* host_vms = nullptr);

// Runs the lab until it ends (see above). Fails only when nothing could be
// started (bad files, a bad manifest, the switch could not listen, the store
// failed); VMs that fail individually (a start refused by attestation too)
// are listed in LabResult::failures.
// VMs with a manifest are checked by it: the switch judges their frames
// (ManifestPolicy), their boot chain is attested before they start, their
// QMP events are judged, and alerts go to the store (AlertWriter).
StatusOr<LabResult> RunLab(Store* store, const LabSpec& lab, const LabOptions& options);

// A fresh capture id: "<lab>-YYYYMMDD-HHMMSS[-N]".
StatusOr<std::string> NewCaptureId(Store* store, const std::string& lab_name, int64_t wall_ns);

}  // namespace blackbox
