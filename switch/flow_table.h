// FlowTable: per-flow accounting of the frames the L2 switch sees.
//
// Every frame the switch handles (forwarded or dropped) is passed to Observe().
// Frames are grouped into bidirectional flows; a flow's first frame decides its
// originator ("a"), the other endpoint is "b". When a flow ends (TCP close plus
// a short linger, idle timeout, active timeout, or Flush()), a FlowRecord is
// produced. Records are returned by Expire() and Flush(); Observe() never calls
// out, it only queues records it ends itself (see Observe()).
//
// Flow key (see docs/flows.md):
//   TCP/UDP:      {addr, port} x {addr, port} unordered, + IP protocol.
//   ICMP/ICMPv6:  addresses unordered + protocol + type class: a request and
//                 its reply type (echo 8/0, ICMPv6 128/129, ...) share a key;
//                 other types are keyed by (type, code).
//   Other IP:     addresses unordered + protocol.
//   ARP:          (sender IP, target IP) unordered.
// Frames that have no key (non-IP non-ARP ethertypes, non-first IP fragments of
// TCP/UDP/ICMP whose ports are unknown) are only counted (Stats::unkeyed_frames).
//
// Time is injected: every call takes `now_ns` (any monotonic nanosecond clock;
// calls must not go backwards). There is no clock and no thread inside.
//
// Bounded: at most Options::max_flows live flows. A frame that would create a
// flow beyond that is not tracked and counted in Stats::untracked_frames; no
// existing flow is ever evicted to make room.
//
// Thread safety: none; a FlowTable has a single owner (the switch thread).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "switch/frame.h"

namespace blackbox {

enum class FlowKind : uint8_t {
  kIp,   // IPv4/IPv6 (TCP, UDP, ICMP, ICMPv6 or another protocol)
  kArp,  // ARP over Ethernet/IPv4
};

// A simplified TCP connection state, tracked from flags only (no sequence
// numbers). kNone for non-TCP flows.
enum class TcpState : uint8_t {
  kNone,
  kSynSent,      // SYN seen from the originator
  kSynReceived,  // SYN+ACK seen in reply
  kEstablished,  // handshake completed, or the flow was picked up mid-stream
  kFinWait,      // one side sent FIN
  kClosing,      // both sides sent FIN, at least one not yet acknowledged
  kClosed,       // both FINs acknowledged, or RST
};

// "SYN_SENT", "ESTABLISHED", ...; "NONE" for kNone.
const char* TcpStateName(TcpState state);

// TCP flag bits as a string in the order F S R P A U E C, e.g. 0x12 -> "SA",
// 0x19 -> "FPA"; "" for no flags.
std::string TcpFlagsString(uint8_t flags);

// Why a flow record was produced.
enum class FlowEndReason : uint8_t {
  kFin,            // TCP closed by FINs in both directions (after the linger)
  kRst,            // TCP reset (after the linger)
  kIdle,           // no frame within the idle timeout
  kActiveTimeout,  // flow ran longer than the active timeout; it continues
  kFlush,          // Flush() (shutdown)
};

// "fin", "rst", "idle", "active-timeout", "flush".
const char* FlowEndReasonName(FlowEndReason reason);

// One finished flow, or one segment of a long flow (see active timeout).
struct FlowRecord {
  FlowKind kind = FlowKind::kIp;
  // The originator (a) and responder (b). For ARP: the first frame's sender
  // and target protocol addresses. Addresses as in IpAddr::ToString().
  std::string a_ip;
  std::string b_ip;
  // TCP/UDP: ports. ICMP/ICMPv6: a_port is the first frame's type and b_port
  // its code (the FlowTuple convention). 0 otherwise.
  uint16_t a_port = 0;
  uint16_t b_port = 0;
  uint8_t proto = 0;  // IP protocol; 0 for ARP
  // Community ID v1 of the flow (computed once when the flow was created); ""
  // for ARP.
  std::string community_id;
  // Time of the first and the last frame of this record.
  int64_t start_ns = 0;
  int64_t end_ns = 0;
  uint64_t packets_a_to_b = 0;
  uint64_t bytes_a_to_b = 0;  // whole Ethernet frames, as passed to Observe()
  uint64_t packets_b_to_a = 0;
  uint64_t bytes_b_to_a = 0;
  // Union of the TCP flag bits seen in each direction (see TcpFlagsString).
  uint8_t tcp_flags_a = 0;
  uint8_t tcp_flags_b = 0;
  TcpState tcp_state = TcpState::kNone;  // at the end of this record
  FlowEndReason end_reason = FlowEndReason::kFlush;
  // True if any frame of this record was not forwarded by the switch.
  bool dropped = false;
  uint64_t dropped_packets = 0;
  // The switch port the first a->b (b->a) frame of this record came in on.
  std::optional<uint32_t> ingress_port_a;
  std::optional<uint32_t> ingress_port_b;
  // 0 for a flow's first record, incremented at each active-timeout split.
  uint32_t segment = 0;

  // {"kind":"ip","a_ip":..., "tcp_flags_a":"SA", "tcp_state":"CLOSED",
  //  "end_reason":"fin", ...}; the tcp_* fields only for TCP flows, ingress
  // ports as null when no frame came that way.
  nlohmann::json ToJson() const;
};

class FlowTable {
 public:
  struct Options {
    // Most flows tracked at once. A frame that would start a flow beyond this
    // is counted in Stats::untracked_frames and otherwise ignored.
    // Default: 65536
    size_t max_flows = 65536;

    // How long a TCP flow stays in the table after it closed (both FINs
    // acknowledged, or RST), so late retransmits and ACKs are counted in it.
    // Default: 5 s
    int64_t tcp_closed_linger_ns = 5'000'000'000;

    // Idle timeout of a TCP flow in ESTABLISHED.
    // Default: 300 s
    int64_t tcp_established_idle_ns = 300'000'000'000;

    // Idle timeout of a TCP flow in any other open state (SYN_SENT,
    // SYN_RECEIVED, FIN_WAIT, CLOSING).
    // Default: 30 s
    int64_t tcp_other_idle_ns = 30'000'000'000;

    // Idle timeout of a UDP flow.
    // Default: 60 s
    int64_t udp_idle_ns = 60'000'000'000;

    // Idle timeout of an ICMP or ICMPv6 flow.
    // Default: 30 s
    int64_t icmp_idle_ns = 30'000'000'000;

    // Idle timeout of an ARP flow.
    // Default: 30 s
    int64_t arp_idle_ns = 30'000'000'000;

    // Idle timeout of a flow of any other IP protocol.
    // Default: 60 s
    int64_t other_idle_ns = 60'000'000'000;

    // A flow older than this (since the start of its current record) produces
    // a record with end reason "active-timeout" and continues with fresh
    // counters (TCP state is kept). 0 disables.
    // Default: 1800 s
    int64_t active_timeout_ns = 1'800'000'000'000;

    // Seed of the Community ID hash.
    // Default: 0
    uint16_t community_id_seed = 0;
  };

  struct Stats {
    uint64_t flows_created = 0;
    uint64_t records_emitted = 0;
    // Frames that would have started a flow while the table was full.
    uint64_t untracked_frames = 0;
    // Frames with no flow key (not IP or ARP, or a non-first fragment).
    uint64_t unkeyed_frames = 0;
  };

  FlowTable();
  explicit FlowTable(Options options);

  // Accounts one frame of `frame_len` bytes that entered on `ingress_port`;
  // `forwarded` is false if the switch dropped it. If the frame's flow had
  // already timed out or closed-and-lingered by `now_ns` (Expire() was not
  // called in time), or the frame is a SYN reusing the ports of a closed TCP
  // flow, the old flow is ended and queued for the next Expire()/Flush(), and
  // the frame starts a new flow. Likewise a due active-timeout split. Never
  // fails: hostile or odd frames are counted, not rejected.
  void Observe(const ParsedFrame& f, size_t frame_len, uint32_t ingress_port, int64_t now_ns,
               bool forwarded);

  // Ends every flow whose linger, idle or active timeout has passed at
  // `now_ns` and returns their records, preceded by any records queued by
  // Observe(). O(number of flows); meant to be called about once a second.
  std::vector<FlowRecord> Expire(int64_t now_ns);

  // Ends every flow (reason "flush", except closed TCP flows, which keep
  // "fin"/"rst") and returns all records, queued ones first. The table is
  // empty afterwards.
  std::vector<FlowRecord> Flush(int64_t now_ns);

  size_t size() const { return flows_.size(); }
  const Stats& stats() const { return stats_; }
  const Options& options() const { return options_; }

 private:
  // Normalised bidirectional key; no padding, so it hashes as bytes.
  struct Key {
    uint8_t kind = 0;
    uint8_t family = 0;
    uint8_t proto = 0;
    uint8_t icmp_paired = 0;  // ICMP: 1 if port_lo is a request/reply type class
    uint16_t port_lo = 0;
    uint16_t port_hi = 0;
    std::array<uint8_t, 16> ip_lo{};
    std::array<uint8_t, 16> ip_hi{};
    friend bool operator==(const Key&, const Key&) = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const;
  };

  struct Flow {
    FlowRecord rec;  // the current record: identity, counters, times
    IpAddr a_addr;   // originator address, to tell directions apart
    uint16_t a_src_port = 0;
    bool has_ports = false;  // TCP/UDP: compare ports to tell directions apart
    bool empty = false;      // no frame since the last active-timeout split
    int64_t last_ns = 0;     // last frame ever (for idle), across segments
    int64_t closed_ns = 0;   // when tcp_state became kClosed
    bool fin_seen[2] = {false, false};
    bool fin_acked[2] = {false, false};
    bool rst = false;
  };

  static std::optional<Key> KeyOf(const ParsedFrame& f);
  Flow NewFlow(const ParsedFrame& f, int64_t now_ns) const;
  // The reason `flow` ends at `now_ns`, if it does.
  std::optional<FlowEndReason> DueReason(const Flow& flow, int64_t now_ns) const;
  int64_t IdleTimeout(const Flow& flow) const;
  // Queues the current record of `flow` with `reason`.
  void Emit(Flow& flow, FlowEndReason reason, std::vector<FlowRecord>& out);
  // Starts a fresh segment after an active-timeout split.
  static void ResetSegment(Flow& flow);
  static void UpdateTcp(Flow& flow, int dir, uint8_t flags, int64_t now_ns);

  Options options_;
  Stats stats_;
  std::unordered_map<Key, Flow, KeyHash> flows_;
  std::vector<FlowRecord> pending_;  // ended in Observe(), returned by Expire()
};

}  // namespace blackbox
