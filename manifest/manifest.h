// Manifests: each protected VM's "birth certificate".
//
// A manifest is a YAML file, one per VM, written when the VM is known good
// (by hand or by `blackbox manifest learn`). It says what the VM boots, which
// devices it has, whom it may talk to on which ports and how much, and what
// Blackbox does when live behaviour deviates. The schema, with a full
// example, is docs/manifest.md; this header is its C++ form.
//
// Vocabulary used below:
//   - A flow is seen from the VM's side. Its direction is `out` when the VM
//     sent the flow's first frame (it originated it), `in` when the peer did.
//   - The peer is the other end's IP address (and, when it is a VM of the
//     same lab, that VM's name).
//   - The service port is the responder's port: for `out` the peer's port,
//     for `in` the VM's own. For ICMP/ICMPv6 it is the type of the
//     originator's first message (8 = echo request).
//
// Thread safety: Manifest and RuleSet are plain values; a const RuleSet may
// be used from any number of threads.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "switch/frame.h"

namespace blackbox {

// What Blackbox does about a deviation. A set, as bits.
enum Response : uint8_t {
  kRespAlert = 1 << 0,       // store an alert (every violation does, whatever else is listed)
  kRespDrop = 1 << 1,        // the flow's frames are not forwarded
  kRespQuarantine = 1 << 2,  // the VM's switch port only reaches `management` peers
  kRespPause = 1 << 3,       // QMP stop
  kRespSnapshot = 1 << 4,    // mark the recording and take a QEMU snapshot
  kRespPowerOff = 1 << 5,    // QMP quit (the recording is finalised)
};
using Responses = uint8_t;
// "alert", "drop", "quarantine", "pause", "snapshot", "poweroff"; a set as
// the names joined with ", " in that order; "allow" for 0.
std::string ResponsesToString(Responses r);
// The names in that order.
std::vector<std::string> ResponseNames(Responses r);

enum class ManifestMode {
  kObserve,  // every deviation is only alerted (the alert says what enforce would do)
  kEnforce,  // responses are carried out; attestation failures refuse the start
};

enum class Direction : uint8_t { kIn = 1, kOut = 2, kBoth = 3 };

// An IPv4 or IPv6 prefix. A single address is a /32 or /128.
struct Cidr {
  IpAddr addr;  // host bits are zero (the parser refuses "10.0.0.1/24")
  int prefix = 0;
  bool Contains(const IpAddr& ip) const;  // false across families
  std::string ToString() const;           // "10.0.0.0/24", "10.0.0.1" for a host
  // "10.0.0.0/24", "fe80::/10", "10.0.0.1" (host); InvalidArgument otherwise.
  static StatusOr<Cidr> Parse(const std::string& text);
  friend bool operator==(const Cidr&, const Cidr&) = default;
};

// One entry of a rule's `peer:` list, after groups are expanded.
struct Peer {
  enum class Kind { kAny, kVm, kCidr };
  Kind kind = Kind::kAny;
  std::string vm;                // kVm: a VM name, resolved to its addresses by RuleSet::Compile
  Cidr cidr;                     // kCidr
  std::string ToString() const;  // "any", "client", "10.0.0.0/24"
};

struct PortRange {
  uint16_t lo = 0, hi = 0;  // inclusive
  friend bool operator==(const PortRange&, const PortRange&) = default;
};

// Rate envelope: 0 means no limit. Measured as token buckets whose burst is
// one second's worth.
struct RateEnvelope {
  double packets_per_s = 0;          // frames sent plus received
  double bytes_per_s = 0;            // their Ethernet bytes
  double new_connections_per_s = 0;  // flows started, in either direction
  Responses action = kRespAlert;
  int line = 0;  // YAML line of the envelope, 0 if none
  bool empty() const {
    return packets_per_s == 0 && bytes_per_s == 0 && new_connections_per_s == 0;
  }
};

struct NetRule {
  std::string name;  // given, or "rule N" (1-based)
  int line = 0;      // YAML line of the rule
  Direction direction = Direction::kBoth;
  std::vector<Peer> peers;       // empty: any peer
  std::string peer_text;         // as written ("client", "[admins, 10.0.9.9]"), for messages
  uint8_t proto = 0;             // IP protocol; 0: any (tcp 6, udp 17, icmp 1, icmpv6 58)
  std::vector<PortRange> ports;  // service ports; empty: any
  Responses action = 0;          // 0: allow; else a violation with these responses (alert implied)
  RateEnvelope rate;             // flows matching this rule, together; empty: none
};

// What the VM boots and is made of. An empty field is not checked.
struct BootChain {
  std::string kernel_sha256;  // 64 lower-case hex digits
  std::string initrd_sha256;
  std::map<std::string, std::string> disks_sha256;  // disk name -> sha256 of its base image
  std::optional<std::string> cmdline;               // the kernel command line, exactly
  std::string machine;                              // "pc", "q35" ...
  // The devices QEMU reports over QMP (see DescribeDevices() in
  // manifest/attestation.h): "00:02.0 8086:100e id=n0", sorted. Empty: not checked.
  std::vector<std::string> devices;
  int line = 0;
};

// The classes of QMP-visible events a manifest judges. Alerted (kRespAlert) unless
// the manifest says otherwise.
struct EventRules {
  Responses guest_panic = kRespAlert;     // GUEST_PANICKED
  Responses device_change = kRespAlert;   // DEVICE_DELETED (QEMU 7.2 has no event for an added one)
  Responses guest_shutdown = kRespAlert;  // SHUTDOWN the guest asked for (not Blackbox)
  Responses guest_reset = kRespAlert;     // RESET the guest asked for
  Responses unexpected_stop = kRespAlert;  // STOP not asked for by Blackbox (I/O error ...)
};

struct Manifest {
  int version = 1;  // `manifest: 1`
  std::string vm;   // the VM it describes; must match the spec's name
  ManifestMode mode = ManifestMode::kObserve;
  std::vector<MacAddr> macs;  // identity; informational (the switch enforces the spec's)
  std::vector<IpAddr> ips;
  BootChain boot;
  // What an attestation mismatch does. Default: refuse the start in enforce
  // mode, alert in observe mode. `attestation: alert` starts the VM anyway.
  bool refuse_on_mismatch = true;
  std::map<std::string, std::vector<Peer>> groups;  // as declared
  std::vector<Peer> management;           // what quarantine still reaches; groups expanded
  std::vector<NetRule> rules;             // in order; first match wins
  Responses default_action = kRespAlert;  // `network.default`: 0 allow
  int default_line = 0;
  // ARP, and ICMPv6 router/neighbour discovery (133-137) and MLD (130-132,
  // 143), which every IP stack sends unasked, are allowed without a rule
  // unless `network.housekeeping: check`.
  bool housekeeping_allowed = true;
  RateEnvelope vm_rate;  // `rates:` of the whole VM
  EventRules events;
  std::string source_text;  // the YAML as given
  std::string path;         // file it was loaded from, "" if parsed from text
};

// A problem that does not stop the manifest from being used: a rule that can
// never match because an earlier one covers it, two overlapping rules with
// different actions, a peer VM that is not in the lab.
struct ManifestWarning {
  int line = 0;
  std::string
      message;  // "manifest line 14: rule 'ssh' can never match: rule 'all-out' (line 9) covers it"
};

// Parses a manifest. Errors are InvalidArgument with one line naming the YAML
// line and the field: "manifest line 7: network.rules[2].peer: '10.0.0.1/33'
// is not an address or CIDR". Unknown keys, bad values, a missing
// `network.default`, unknown groups and group cycles are errors. Warnings are
// appended to `warnings` (may be null).
StatusOr<Manifest> ParseManifest(const std::string& yaml_text,
                                 std::vector<ManifestWarning>* warnings);
// Reads (capped at 1 MiB) and parses a manifest file; messages start with the path.
StatusOr<Manifest> LoadManifest(const std::string& path, std::vector<ManifestWarning>* warnings);

// Writes a manifest as YAML that ParseManifest reads back to an equal
// manifest (comments are not kept). `header` lines are written first as
// `# ` comments.
std::string ManifestToYaml(const Manifest& m, const std::vector<std::string>& header = {});

// "tcp", "udp", "icmp", "icmpv6" for those IP protocols; nullptr for others.
const char* IpProtoName(uint8_t proto);

// Housekeeping every IP stack sends unasked, allowed without a rule unless
// `network.housekeeping: check`: ARP, ICMPv6 router and neighbour discovery
// (133-137) and MLD (130-132, 143).
bool IsHousekeeping(const ParsedFrame& f);

// A frame with TCP or UDP ports.
inline bool HasPorts(const ParsedFrame& f) {
  return f.l4 == ParsedFrame::L4::kTcp || f.l4 == ParsedFrame::L4::kUdp;
}

// A flow as a manifest judges it.
struct FlowFacts {
  Direction direction = Direction::kOut;  // kIn or kOut
  IpAddr peer;
  uint8_t proto = 0;
  uint16_t service_port = 0;
};

// The rules of one manifest compiled for fast first-match evaluation.
class RuleSet {
 public:
  // Addresses of the other VMs, for `peer: <vm name>`.
  using VmAddresses = std::map<std::string, std::vector<IpAddr>>;

  RuleSet() = default;
  // Compiles m's rules. A VM peer not in `vms` matches nothing (the caller
  // warns about it: UnknownPeerVms()).
  static RuleSet Compile(const Manifest& m, const VmAddresses& vms);

  struct Verdict {
    int rule = -1;         // index into Manifest::rules; -1: the default
    Responses action = 0;  // 0: allowed
  };
  // First rule that matches, or the default. Cost grows with the rules that
  // share the flow's direction, protocol and port, not with all rules.
  Verdict Evaluate(const FlowFacts& flow) const;
  // The same by scanning every rule in order (reference for tests and the
  // benchmark's baseline).
  Verdict EvaluateLinear(const FlowFacts& flow) const;

  // Is `ip` one of the management peers (quarantine's allow-list)?
  bool IsManagement(const IpAddr& ip) const;

  size_t rule_count() const { return rules_.size(); }

 private:
  struct CompiledRule {
    uint8_t directions = 0;  // Direction bits
    uint8_t proto = 0;
    bool any_peer = false;
    std::vector<Cidr> peers;
    std::vector<PortRange> ports;
    Responses action = 0;
    bool Matches(const FlowFacts& f) const;
  };
  // Index: per direction (0 in, 1 out) and protocol class, elementary port
  // intervals, each with the ascending ids of the rules that may match there.
  struct Bucket {
    std::vector<uint32_t> starts;              // interval i is [starts[i], starts[i+1])
    std::vector<std::vector<uint32_t>> rules;  // candidates per interval
    bool linear = false;                       // index too big: scan `all`
    std::vector<uint32_t> all;                 // every rule that can match this bucket
  };
  static int ProtoClass(uint8_t proto);  // tcp, udp, icmp, icmpv6, other
  static constexpr int kProtoClasses = 5;

  std::vector<CompiledRule> rules_;
  Bucket buckets_[2][kProtoClasses];
  Responses default_action_ = kRespAlert;
  bool any_management_ = false;
  std::vector<Cidr> management_;
};

}  // namespace blackbox
