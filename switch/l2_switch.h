// L2Switch: the forwarding logic of Blackbox's userspace Ethernet switch.
//
// VM NICs connect to the switch through QEMU `-netdev stream` sockets (see
// stream_framing.h). This class is the pure decision part: given a frame and
// the port it arrived on, it says which ports receive it or why it is dropped.
// It does no I/O, owns no sockets or threads and reads no clock (the caller
// passes the time), so tests are deterministic. The I/O layer sends the
// unmodified frame to every port in Decision::egress.
//
// Rules, applied in this order to every frame:
//   1. Unknown ingress port (never added, or removed): drop kUnknownPort.
//   2. The frame must parse with ParseFrame(): else drop kMalformed.
//   3. MAC anti-spoofing: the Ethernet source MAC must equal the port's
//      configured MAC, and for ARP the sender hardware address must too: else
//      drop kSpoofedMac. (Since the configured MAC is unicast, this also
//      rejects multicast source MACs.)
//   4. IP anti-spoofing, only when the port's allowed_ips is non-empty:
//        - IPv4/IPv6: the source address must be in allowed_ips;
//        - ARP: the sender protocol address must be in allowed_ips;
//        - the unspecified address (0.0.0.0 or ::) is always allowed as a
//          source: ARP probes (RFC 5227), DHCP DISCOVER/REQUEST and IPv6
//          duplicate address detection use it, and it impersonates nobody;
//        - any other ethertype (including a stacked second VLAN tag, which
//          ParseFrame does not look into) is dropped kBlockedEthertype,
//          because the switch cannot check what address it carries.
//      Violations drop kSpoofedIp. An empty allowed_ips allows any source IP
//      and any ethertype. IPv6 link-local addresses must be listed explicitly.
//      Not checked: addresses inside NDP options, DHCP payloads, ARP targets.
//   5. Learning: the source MAC is learned on the ingress port, in the port's
//      segment, with the frame's time. Only frames that passed 2-4 are learned.
//   6. Forwarding, within the ingress port's segment only (ports in different
//      segments never exchange frames):
//        - broadcast, multicast, and unicast to a MAC not in the table (or whose
//          entry is older than Options::mac_aging_ns): flood to every other
//          port of the segment;
//        - unicast to a learned MAC: that port only;
//        - a frame is never sent back out of its ingress port. If the result
//          is no port at all (alone in the segment, or the destination was
//          learned on the ingress port), drop kNoPeer.
//   7. Policy, when one is set (SetPolicy): it sees every frame that got this
//      far with its egress ports and may remove ports or drop the frame
//      (kPolicy), e.g. a VM's manifest (manifest_policy.h).
// 802.1Q tags are not interpreted for forwarding: a tagged frame is switched
// like an untagged one and passed through unmodified. Segment names are opaque
// strings compared exactly.
//
// MAC table: one per segment. Because of rule 3 a port can only ever teach the
// table its own configured MAC, so the table holds at most one entry per port
// and needs no size cap. Entries are removed with their port and expire lazily
// (on lookup and on re-learning); ExpireMacs() sweeps them explicitly.
//
// Counters: per port, rx (every frame offered on the port, dropped or not),
// tx (one per egress), and drops by reason at the ingress port. Frames offered
// on an unknown port are counted in unknown_port_drops().
//
// Port ids are assigned from 1 upward and never reused, so a stale id held by
// the I/O layer after RemovePort() cannot reach a new port.
//
// Thread safety: none. An L2Switch has a single owner (the switch's I/O
// thread); callers that share it must serialize all calls.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "switch/frame.h"

namespace blackbox {

// A check applied to every frame after the forwarding decision (rule 7).
// Called on the switch's thread; must not block.
class FramePolicy {
 public:
  virtual ~FramePolicy() = default;
  // `egress` is the ports the frame is about to go to (ascending, non-empty).
  // Remove ports to keep the frame from them; return false (and set
  // *reason, one line) to drop the frame altogether. A policy that empties
  // `egress` drops the frame too.
  // `bytes` is the whole frame, `frame` its parse.
  virtual bool Check(uint32_t ingress, const ParsedFrame& frame, std::span<const uint8_t> bytes,
                     int64_t now_ns, std::vector<uint32_t>* egress, std::string* reason) = 0;
};

class L2Switch {
 public:
  struct Options {
    // How long a learned MAC stays valid without being seen again as a source;
    // an expired destination is flooded like an unknown one.
    // Default: 300 s (the IEEE 802.1D default ageing time).
    int64_t mac_aging_ns = int64_t{300} * 1'000'000'000;
  };

  struct PortConfig {
    // For logs and counters; need not be unique.
    std::string name;
    // Ports only exchange frames with ports of the same segment.
    std::string segment;
    // The only source MAC accepted from this port (the VM NIC's MAC). The
    // caller ensures it is a unicast address.
    MacAddr mac;
    // Source IPs accepted from this port; empty: any (see rule 4).
    std::vector<IpAddr> allowed_ips;
  };

  enum class Drop {
    kNone = 0,          // forwarded
    kUnknownPort,       // ingress port not (or no longer) attached
    kMalformed,         // ParseFrame() rejected the frame
    kSpoofedMac,        // source MAC (or ARP sender MAC) is not the port's MAC
    kSpoofedIp,         // source IP (or ARP sender IP) not in allowed_ips
    kBlockedEthertype,  // non-IP/ARP frame on a port with allowed_ips
    kNoPeer,            // no port to send it to
    kPolicy,            // the FramePolicy refused it (a manifest rule, quarantine ...)
  };
  static constexpr size_t kNumDropReasons = 8;
  // "none", "unknown_port", "malformed", ... (stable; usable as metric labels).
  static const char* DropName(Drop drop);

  struct Decision {
    // Ports to send the frame to, ascending; empty iff drop != kNone.
    std::vector<uint32_t> egress;
    Drop drop = Drop::kNone;
    // Human-readable detail for a drop ("source MAC 52:54:00:.. is not the
    // port's 52:54:00:.."); empty when forwarded.
    std::string reason;
  };

  struct PortCounters {
    uint64_t rx_frames = 0;
    uint64_t rx_bytes = 0;
    uint64_t tx_frames = 0;
    uint64_t tx_bytes = 0;
    // Indexed by Drop; drops[kNone] stays 0.
    std::array<uint64_t, kNumDropReasons> drops{};

    uint64_t drop_count(Drop d) const { return drops[static_cast<size_t>(d)]; }
  };

  L2Switch() : L2Switch(Options{}) {}
  explicit L2Switch(Options options);

  // Attaches a port and returns its id (>= 1, never reused).
  uint32_t AddPort(PortConfig config);

  // Detaches a port: forgets its config and counters and every MAC learned on
  // it. Frames later offered on `port` drop kUnknownPort. Unknown ids are
  // ignored.
  void RemovePort(uint32_t port);

  // Decides the fate of `frame` received on `ingress` at time `now_ns` (any
  // monotonic clock, the same one for every call) and updates the MAC table
  // and counters. Never fails: all guest input problems become drops.
  Decision Process(uint32_t ingress, std::span<const uint8_t> frame, int64_t now_ns);
  // The same, into *out (overwritten; its egress capacity is reused, so a
  // caller that keeps one Decision allocates nothing per frame).
  void Process(uint32_t ingress, std::span<const uint8_t> frame, int64_t now_ns, Decision* out);

  // Sets the policy of rule 7 (nullptr: none). Not owned; must outlive its
  // use. Default: none.
  void SetPolicy(FramePolicy* policy) { policy_ = policy; }

  // Removes MAC table entries older than mac_aging_ns at `now_ns`; returns how
  // many. Optional: expired entries are never used for forwarding anyway.
  size_t ExpireMacs(int64_t now_ns);

  // Counters of an attached port; nullopt if unknown.
  std::optional<PortCounters> GetCounters(uint32_t port) const;
  // The config of an attached port; nullptr if unknown. Valid until the next
  // AddPort/RemovePort.
  const PortConfig* GetPortConfig(uint32_t port) const;

  // The port `mac` is learned on in `segment` and still fresh at `now_ns`.
  std::optional<uint32_t> LookupMac(const std::string& segment, const MacAddr& mac,
                                    int64_t now_ns) const;

  size_t port_count() const { return ports_.size(); }
  // Number of MAC table entries, fresh or not yet swept, in all segments.
  size_t mac_table_size() const;
  uint64_t unknown_port_drops() const { return unknown_port_drops_; }

 private:
  struct MacEntry {
    uint32_t port = 0;
    int64_t last_seen_ns = 0;
  };
  using MacKey = std::array<uint8_t, 6>;
  using MacTable = std::map<MacKey, MacEntry>;
  struct Port {
    PortConfig config;
    PortCounters counters;
    MacTable* table = nullptr;  // its segment's, in mac_tables_ (kept while the port exists)
  };

  bool Fresh(const MacEntry& entry, int64_t now_ns) const;
  // Rules 3 and 4; returns kNone if the frame may enter the switch.
  Drop CheckSource(const Port& port, const ParsedFrame& parsed, std::string* reason) const;
  void DropFrame(Port& port, Drop drop, std::string reason, Decision* out);

  Options options_;
  uint32_t next_port_id_ = 1;
  std::map<uint32_t, Port> ports_;              // ordered: egress lists come out ascending
  std::map<std::string, MacTable> mac_tables_;  // by segment
  uint64_t unknown_port_drops_ = 0;
  FramePolicy* policy_ = nullptr;
};

}  // namespace blackbox
