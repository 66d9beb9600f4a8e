#include "switch/flow_table.h"

#include <algorithm>
#include <functional>
#include <string_view>
#include <utility>

#include "switch/community_id.h"

namespace blackbox {

namespace {

// The request/reply counterpart of an ICMP type, as in the Community ID spec;
// nullopt for one-way types.
std::optional<uint8_t> IcmpCounterpart(uint8_t proto, uint8_t type) {
  static constexpr std::pair<uint8_t, uint8_t> kV4[] = {
      {8, 0}, {13, 14}, {15, 16}, {10, 9}, {17, 18}};
  static constexpr std::pair<uint8_t, uint8_t> kV6[] = {{128, 129}, {130, 131}, {133, 134},
                                                        {135, 136}, {139, 140}, {144, 145}};
  auto find = [type](const auto& table) -> std::optional<uint8_t> {
    for (const auto& [x, y] : table) {
      if (type == x) return y;
      if (type == y) return x;
    }
    return std::nullopt;
  };
  if (proto == kIpProtoIcmp) return find(kV4);
  if (proto == kIpProtoIcmpv6) return find(kV6);
  return std::nullopt;
}

bool PortBearing(uint8_t proto) {
  return proto == kIpProtoTcp || proto == kIpProtoUdp || proto == kIpProtoIcmp ||
         proto == kIpProtoIcmpv6 || proto == kIpProtoSctp;
}

}  // namespace

const char* TcpStateName(TcpState state) {
  switch (state) {
    case TcpState::kNone:
      return "NONE";
    case TcpState::kSynSent:
      return "SYN_SENT";
    case TcpState::kSynReceived:
      return "SYN_RECEIVED";
    case TcpState::kEstablished:
      return "ESTABLISHED";
    case TcpState::kFinWait:
      return "FIN_WAIT";
    case TcpState::kClosing:
      return "CLOSING";
    case TcpState::kClosed:
      return "CLOSED";
  }
  return "?";
}

std::string TcpFlagsString(uint8_t flags) {
  static constexpr std::pair<uint8_t, char> kOrder[] = {
      {kTcpFin, 'F'}, {kTcpSyn, 'S'}, {kTcpRst, 'R'}, {kTcpPsh, 'P'},
      {kTcpAck, 'A'}, {kTcpUrg, 'U'}, {kTcpEce, 'E'}, {kTcpCwr, 'C'}};
  std::string s;
  for (const auto& [bit, c] : kOrder) {
    if (flags & bit) s.push_back(c);
  }
  return s;
}

const char* FlowEndReasonName(FlowEndReason reason) {
  switch (reason) {
    case FlowEndReason::kFin:
      return "fin";
    case FlowEndReason::kRst:
      return "rst";
    case FlowEndReason::kIdle:
      return "idle";
    case FlowEndReason::kActiveTimeout:
      return "active-timeout";
    case FlowEndReason::kFlush:
      return "flush";
  }
  return "?";
}

nlohmann::json FlowRecord::ToJson() const {
  nlohmann::json j;
  j["kind"] = kind == FlowKind::kArp ? "arp" : "ip";
  j["a_ip"] = a_ip;
  j["b_ip"] = b_ip;
  j["a_port"] = a_port;
  j["b_port"] = b_port;
  j["proto"] = proto;
  j["community_id"] = community_id;
  j["start_ns"] = start_ns;
  j["end_ns"] = end_ns;
  j["packets_a_to_b"] = packets_a_to_b;
  j["bytes_a_to_b"] = bytes_a_to_b;
  j["packets_b_to_a"] = packets_b_to_a;
  j["bytes_b_to_a"] = bytes_b_to_a;
  if (kind == FlowKind::kIp && proto == kIpProtoTcp) {
    j["tcp_flags_a"] = TcpFlagsString(tcp_flags_a);
    j["tcp_flags_b"] = TcpFlagsString(tcp_flags_b);
    j["tcp_state"] = TcpStateName(tcp_state);
  }
  j["end_reason"] = FlowEndReasonName(end_reason);
  j["dropped"] = dropped;
  j["dropped_packets"] = dropped_packets;
  j["ingress_port_a"] = ingress_port_a ? nlohmann::json(*ingress_port_a) : nlohmann::json(nullptr);
  j["ingress_port_b"] = ingress_port_b ? nlohmann::json(*ingress_port_b) : nlohmann::json(nullptr);
  j["segment"] = segment;
  return j;
}

size_t FlowTable::KeyHash::operator()(const Key& k) const {
  static_assert(sizeof(Key) == 40, "Key must have no padding");
  return std::hash<std::string_view>()(
      std::string_view(reinterpret_cast<const char*>(&k), sizeof(Key)));
}

FlowTable::FlowTable() : FlowTable(Options()) {}

FlowTable::FlowTable(Options options) : options_(options) {}

std::optional<FlowTable::Key> FlowTable::KeyOf(const ParsedFrame& f) {
  Key k;
  if (f.l3 == ParsedFrame::L3::kArp) {
    k.kind = static_cast<uint8_t>(FlowKind::kArp);
    k.family = static_cast<uint8_t>(IpFamily::kIpv4);
    k.ip_lo = f.arp.sender_ip.bytes;
    k.ip_hi = f.arp.target_ip.bytes;
    if (k.ip_hi < k.ip_lo) std::swap(k.ip_lo, k.ip_hi);
    return k;
  }
  if (f.l3 != ParsedFrame::L3::kIpv4 && f.l3 != ParsedFrame::L3::kIpv6) return std::nullopt;
  k.kind = static_cast<uint8_t>(FlowKind::kIp);
  k.family = static_cast<uint8_t>(f.ip.src.family);
  k.proto = f.ip.protocol;
  switch (f.l4) {
    case ParsedFrame::L4::kTcp:
    case ParsedFrame::L4::kUdp: {
      auto src = std::make_pair(f.ip.src.bytes, f.transport.src_port);
      auto dst = std::make_pair(f.ip.dst.bytes, f.transport.dst_port);
      if (dst < src) std::swap(src, dst);
      k.ip_lo = src.first;
      k.port_lo = src.second;
      k.ip_hi = dst.first;
      k.port_hi = dst.second;
      return k;
    }
    case ParsedFrame::L4::kIcmp:
    case ParsedFrame::L4::kIcmpv6: {
      const uint8_t type = f.transport.icmp_type;
      if (auto other = IcmpCounterpart(k.proto, type)) {
        k.icmp_paired = 1;
        k.port_lo = std::min(type, *other);
      } else {
        k.port_lo = type;
        k.port_hi = f.transport.icmp_code;
      }
      break;
    }
    case ParsedFrame::L4::kNone:
      // A non-first fragment of a protocol with ports: which flow it belongs
      // to is unknown.
      if (f.ip.is_non_first_fragment && PortBearing(k.proto)) return std::nullopt;
      break;
  }
  k.ip_lo = f.ip.src.bytes;
  k.ip_hi = f.ip.dst.bytes;
  if (k.ip_hi < k.ip_lo) std::swap(k.ip_lo, k.ip_hi);
  return k;
}

FlowTable::Flow FlowTable::NewFlow(const ParsedFrame& f, int64_t now_ns) const {
  Flow flow;
  FlowRecord& r = flow.rec;
  flow.empty = true;  // the first frame fills start_ns
  flow.last_ns = now_ns;
  if (f.l3 == ParsedFrame::L3::kArp) {
    r.kind = FlowKind::kArp;
    flow.a_addr = f.arp.sender_ip;
    r.a_ip = f.arp.sender_ip.ToString();
    r.b_ip = f.arp.target_ip.ToString();
    return flow;
  }
  r.kind = FlowKind::kIp;
  flow.a_addr = f.ip.src;
  r.a_ip = f.ip.src.ToString();
  r.b_ip = f.ip.dst.ToString();
  r.proto = f.ip.protocol;
  if (f.l4 == ParsedFrame::L4::kTcp || f.l4 == ParsedFrame::L4::kUdp) {
    flow.has_ports = true;
    flow.a_src_port = f.transport.src_port;
    r.a_port = f.transport.src_port;
    r.b_port = f.transport.dst_port;
  } else if (f.l4 == ParsedFrame::L4::kIcmp || f.l4 == ParsedFrame::L4::kIcmpv6) {
    r.a_port = f.transport.icmp_type;
    r.b_port = f.transport.icmp_code;
  }
  if (auto tuple = FlowTupleOf(f)) r.community_id = CommunityId(*tuple, options_.community_id_seed);
  return flow;
}

int64_t FlowTable::IdleTimeout(const Flow& flow) const {
  if (flow.rec.kind == FlowKind::kArp) return options_.arp_idle_ns;
  switch (flow.rec.proto) {
    case kIpProtoTcp:
      return flow.rec.tcp_state == TcpState::kEstablished ? options_.tcp_established_idle_ns
                                                          : options_.tcp_other_idle_ns;
    case kIpProtoUdp:
      return options_.udp_idle_ns;
    case kIpProtoIcmp:
    case kIpProtoIcmpv6:
      return options_.icmp_idle_ns;
    default:
      return options_.other_idle_ns;
  }
}

std::optional<FlowEndReason> FlowTable::DueReason(const Flow& flow, int64_t now_ns) const {
  if (flow.rec.tcp_state == TcpState::kClosed) {
    if (now_ns - flow.closed_ns >= options_.tcp_closed_linger_ns) {
      return flow.rst ? FlowEndReason::kRst : FlowEndReason::kFin;
    }
    return std::nullopt;
  }
  if (now_ns - flow.last_ns >= IdleTimeout(flow)) return FlowEndReason::kIdle;
  if (options_.active_timeout_ns > 0 && !flow.empty &&
      now_ns - flow.rec.start_ns >= options_.active_timeout_ns) {
    return FlowEndReason::kActiveTimeout;
  }
  return std::nullopt;
}

void FlowTable::Emit(Flow& flow, FlowEndReason reason, std::vector<FlowRecord>& out) {
  flow.rec.end_reason = reason;
  out.push_back(flow.rec);
  ++stats_.records_emitted;
}

void FlowTable::ResetSegment(Flow& flow) {
  FlowRecord& r = flow.rec;
  r.start_ns = r.end_ns = 0;
  r.packets_a_to_b = r.bytes_a_to_b = r.packets_b_to_a = r.bytes_b_to_a = 0;
  r.tcp_flags_a = r.tcp_flags_b = 0;
  r.dropped = false;
  r.dropped_packets = 0;
  r.ingress_port_a.reset();
  r.ingress_port_b.reset();
  ++r.segment;
  flow.empty = true;
}

void FlowTable::UpdateTcp(Flow& flow, int dir, uint8_t flags, int64_t now_ns) {
  TcpState& s = flow.rec.tcp_state;
  if (s == TcpState::kClosed) return;  // lingering: counted, no transitions
  if (flags & kTcpRst) {
    flow.rst = true;
    s = TcpState::kClosed;
    flow.closed_ns = now_ns;
    return;
  }
  const bool syn = flags & kTcpSyn;
  const bool ack = flags & kTcpAck;
  // Without sequence numbers, any ACK after the peer's FIN counts as its ack.
  if (ack && flow.fin_seen[1 - dir]) flow.fin_acked[1 - dir] = true;
  switch (s) {
    case TcpState::kNone:
      // First frame. Not a SYN: picked up mid-stream (e.g. predates recording).
      s = syn ? (ack ? TcpState::kSynReceived : TcpState::kSynSent) : TcpState::kEstablished;
      break;
    case TcpState::kSynSent:
      if (syn && ack && dir == 1) s = TcpState::kSynReceived;
      break;
    case TcpState::kSynReceived:
      if (ack && !syn) s = TcpState::kEstablished;
      break;
    default:
      break;
  }
  if (flags & kTcpFin) flow.fin_seen[dir] = true;
  if (flow.fin_seen[0] || flow.fin_seen[1]) {
    s = (flow.fin_seen[0] && flow.fin_seen[1]) ? TcpState::kClosing : TcpState::kFinWait;
    if (flow.fin_seen[0] && flow.fin_seen[1] && flow.fin_acked[0] && flow.fin_acked[1]) {
      s = TcpState::kClosed;
      flow.closed_ns = now_ns;
    }
  }
}

void FlowTable::Observe(const ParsedFrame& f, size_t frame_len, uint32_t ingress_port,
                        int64_t now_ns, bool forwarded) {
  const std::optional<Key> key = KeyOf(f);
  if (!key) {
    ++stats_.unkeyed_frames;
    return;
  }
  const bool is_tcp = f.l4 == ParsedFrame::L4::kTcp;
  const uint8_t flags = is_tcp ? f.transport.tcp_flags : 0;

  auto it = flows_.find(*key);
  if (it != flows_.end()) {
    Flow& old = it->second;
    std::optional<FlowEndReason> reason = DueReason(old, now_ns);
    if (reason == FlowEndReason::kActiveTimeout) {
      Emit(old, *reason, pending_);
      ResetSegment(old);
      reason.reset();
    } else if (!reason && old.rec.tcp_state == TcpState::kClosed && is_tcp &&
               (flags & (kTcpSyn | kTcpAck)) == kTcpSyn) {
      // A new connection reusing the ports of a closed one.
      reason = old.rst ? FlowEndReason::kRst : FlowEndReason::kFin;
    }
    if (reason) {
      if (!old.empty) Emit(old, *reason, pending_);
      flows_.erase(it);
      it = flows_.end();
    }
  }
  if (it == flows_.end()) {
    if (flows_.size() >= options_.max_flows) {
      ++stats_.untracked_frames;
      return;
    }
    it = flows_.emplace(*key, NewFlow(f, now_ns)).first;
    ++stats_.flows_created;
  }

  Flow& flow = it->second;
  FlowRecord& r = flow.rec;
  int dir;
  if (r.kind == FlowKind::kArp) {
    dir = f.arp.sender_ip == flow.a_addr ? 0 : 1;
  } else {
    dir = (f.ip.src == flow.a_addr && (!flow.has_ports || f.transport.src_port == flow.a_src_port))
              ? 0
              : 1;
  }
  if (flow.empty) {
    r.start_ns = now_ns;
    flow.empty = false;
  }
  r.end_ns = now_ns;
  flow.last_ns = now_ns;
  if (dir == 0) {
    ++r.packets_a_to_b;
    r.bytes_a_to_b += frame_len;
    if (!r.ingress_port_a) r.ingress_port_a = ingress_port;
    r.tcp_flags_a |= flags;
  } else {
    ++r.packets_b_to_a;
    r.bytes_b_to_a += frame_len;
    if (!r.ingress_port_b) r.ingress_port_b = ingress_port;
    r.tcp_flags_b |= flags;
  }
  if (!forwarded) {
    r.dropped = true;
    ++r.dropped_packets;
  }
  if (is_tcp) UpdateTcp(flow, dir, flags, now_ns);
}

std::vector<FlowRecord> FlowTable::Expire(int64_t now_ns) {
  std::vector<FlowRecord> out = std::move(pending_);
  pending_.clear();
  for (auto it = flows_.begin(); it != flows_.end();) {
    Flow& flow = it->second;
    const std::optional<FlowEndReason> reason = DueReason(flow, now_ns);
    if (!reason) {
      ++it;
    } else if (*reason == FlowEndReason::kActiveTimeout) {
      Emit(flow, *reason, out);
      ResetSegment(flow);
      ++it;
    } else {
      if (!flow.empty) Emit(flow, *reason, out);
      it = flows_.erase(it);
    }
  }
  return out;
}

std::vector<FlowRecord> FlowTable::Flush(int64_t now_ns) {
  (void)now_ns;  // records end at their last frame
  std::vector<FlowRecord> out = std::move(pending_);
  pending_.clear();
  for (auto& [key, flow] : flows_) {
    if (flow.empty) continue;
    FlowEndReason reason = FlowEndReason::kFlush;
    if (flow.rec.tcp_state == TcpState::kClosed) {
      reason = flow.rst ? FlowEndReason::kRst : FlowEndReason::kFin;
    }
    Emit(flow, reason, out);
  }
  flows_.clear();
  return out;
}

}  // namespace blackbox
