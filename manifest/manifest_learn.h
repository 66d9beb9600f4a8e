// Learning and diffing manifests from what a recording shows.
//
// ObserveRecording reads what a VM did from the store: its boot facts (the
// hashes, command line, machine and devices kept with the recording) and
// every frame of its switch ports in a time window, grouped into flow uses
// (direction, peer, protocol, service port: the manifest's vocabulary,
// docs/manifest.md) and into per-second rates. LearnManifest turns that into
// a manifest that allows exactly what was seen; DiffManifest says what a
// recording did that a manifest does not allow, and which rules it never
// used.
//
// Frames are judged like the switch judges them (manifest/manifest_policy.h):
// the first frame of a flow the VM sends or is addressed by decides the
// direction; housekeeping (ARP, ICMPv6 neighbour discovery and MLD) is left
// out of the flows but counted in the rates. Frames the switch dropped count:
// they are what the VM tried.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "manifest/attestation.h"
#include "manifest/manifest.h"
#include "store/store.h"

namespace blackbox {

struct FlowUse {
  Direction direction = Direction::kOut;
  IpAddr peer;
  std::string peer_vm;  // the lab VM with that address, "" if none
  uint8_t proto = 0;
  uint16_t service_port = 0;
  uint64_t flows = 0;   // distinct flows
  uint64_t frames = 0;  // frames both ways
  uint64_t bytes = 0;
  int64_t first_wall_ns = 0;
  uint64_t dropped_frames = 0;  // frames of it the switch did not forward
};

struct Observed {
  std::string vm;
  std::string recording_id;
  std::string capture_id;
  int64_t since_ns = 0, until_ns = 0;  // the window actually read
  BootFacts boot;
  std::vector<std::string> macs, ips;  // the VM's switch ports
  std::vector<FlowUse> flows;          // ordered by (direction, peer, proto, port)
  uint64_t frames = 0;
  // The busiest one-second window (frames sent plus received, their bytes,
  // flows started).
  double max_packets_per_s = 0, max_bytes_per_s = 0, max_new_flows_per_s = 0;
  // Guest-initiated shutdowns/resets in the window (QMP events).
  int guest_shutdowns = 0, guest_resets = 0;
  RuleSet::VmAddresses lab_addresses;  // every VM of the capture's lab
};

// Reads recording `info` (its capture, ports and events) between since_ns
// and until_ns. A recording without a capture has boot facts and no flows.
StatusOr<Observed> ObserveRecording(const Store& store, const RecordingInfo& info,
                                    int64_t since_ns = std::numeric_limits<int64_t>::min(),
                                    int64_t until_ns = std::numeric_limits<int64_t>::max());

struct LearnOptions {
  ManifestMode mode = ManifestMode::kObserve;
  // Rate envelopes are the busiest second seen times this, at least the
  // floors below. Default: 3.
  double headroom = 3.0;
  double min_packets_per_s = 200;
  double min_bytes_per_s = 256 * 1024;
  double min_new_connections_per_s = 20;
  // Check the device list at launch. Default: true.
  bool devices = true;
};

// A manifest allowing exactly what `seen` shows: one rule per direction,
// peer and protocol with the service ports seen, a default of [alert, drop],
// the boot chain, rates with headroom, and guest shutdowns/resets allowed
// when the VM did them while observed.
Manifest LearnManifest(const Observed& seen, const LearnOptions& options);

struct ManifestDiff {
  struct Deviation {
    std::string kind;   // "flow", "rate", "boot", "event"
    std::string what;   // one line
    int rule_line = 0;  // the rule (or default) that judged it, 0 if none
  };
  std::vector<Deviation> deviations;      // what the recording did that the manifest does not allow
  std::vector<std::string> unused_rules;  // "rule 'x' (line 12) matched no flow"
};

ManifestDiff DiffManifest(const Manifest& m, const Observed& seen);

}  // namespace blackbox
