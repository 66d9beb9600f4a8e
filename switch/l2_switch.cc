#include "switch/l2_switch.h"

#include <algorithm>
#include <cassert>
#include <cstdio>
#include <iterator>
#include <string>
#include <utility>

namespace blackbox {
namespace {

bool IsUnspecified(const IpAddr& ip) {
  auto v = ip.view();
  return std::all_of(v.begin(), v.end(), [](uint8_t b) { return b == 0; });
}

bool IpAllowed(const std::vector<IpAddr>& allowed, const IpAddr& ip) {
  return IsUnspecified(ip) || std::find(allowed.begin(), allowed.end(), ip) != allowed.end();
}

}  // namespace

const char* L2Switch::DropName(Drop drop) {
  switch (drop) {
    case Drop::kNone:
      return "none";
    case Drop::kUnknownPort:
      return "unknown_port";
    case Drop::kMalformed:
      return "malformed";
    case Drop::kSpoofedMac:
      return "spoofed_mac";
    case Drop::kSpoofedIp:
      return "spoofed_ip";
    case Drop::kBlockedEthertype:
      return "blocked_ethertype";
    case Drop::kNoPeer:
      return "no_peer";
    case Drop::kPolicy:
      return "policy";
  }
  return "unknown";
}

L2Switch::L2Switch(Options options) : options_(options) {}

uint32_t L2Switch::AddPort(PortConfig config) {
  uint32_t id = next_port_id_++;
  assert(id != 0 && "port ids exhausted");
  MacTable* table = &mac_tables_[config.segment];
  ports_.emplace(id, Port{std::move(config), PortCounters{}, table});
  return id;
}

void L2Switch::RemovePort(uint32_t port) {
  auto it = ports_.find(port);
  if (it == ports_.end()) return;
  const std::string segment = it->second.config.segment;
  std::erase_if(*it->second.table, [port](const auto& kv) { return kv.second.port == port; });
  ports_.erase(it);
  const bool segment_used = std::any_of(ports_.begin(), ports_.end(), [&](const auto& kv) {
    return kv.second.config.segment == segment;
  });
  if (!segment_used) mac_tables_.erase(segment);
}

bool L2Switch::Fresh(const MacEntry& entry, int64_t now_ns) const {
  return now_ns - entry.last_seen_ns <= options_.mac_aging_ns;
}

L2Switch::Drop L2Switch::CheckSource(const Port& port, const ParsedFrame& parsed,
                                     std::string* reason) const {
  const PortConfig& cfg = port.config;
  if (parsed.src != cfg.mac) {
    *reason = "source MAC " + parsed.src.ToString() + " is not the port's " + cfg.mac.ToString();
    return Drop::kSpoofedMac;
  }
  if (parsed.l3 == ParsedFrame::L3::kArp && parsed.arp.sender_mac != cfg.mac) {
    *reason = "ARP sender MAC " + parsed.arp.sender_mac.ToString() + " is not the port's " +
              cfg.mac.ToString();
    return Drop::kSpoofedMac;
  }
  if (cfg.allowed_ips.empty()) return Drop::kNone;
  switch (parsed.l3) {
    case ParsedFrame::L3::kArp:
      if (!IpAllowed(cfg.allowed_ips, parsed.arp.sender_ip)) {
        *reason = "ARP sender IP " + parsed.arp.sender_ip.ToString() + " is not allowed";
        return Drop::kSpoofedIp;
      }
      return Drop::kNone;
    case ParsedFrame::L3::kIpv4:
    case ParsedFrame::L3::kIpv6:
      if (!IpAllowed(cfg.allowed_ips, parsed.ip.src)) {
        *reason = "source IP " + parsed.ip.src.ToString() + " is not allowed";
        return Drop::kSpoofedIp;
      }
      return Drop::kNone;
    case ParsedFrame::L3::kNone:
      break;
  }
  char hex[8];
  snprintf(hex, sizeof(hex), "0x%04x", parsed.ethertype);
  *reason = std::string("ethertype ") + hex + " not allowed on an IP-restricted port";
  return Drop::kBlockedEthertype;
}

void L2Switch::DropFrame(Port& port, Drop drop, std::string reason, Decision* out) {
  ++port.counters.drops[static_cast<size_t>(drop)];
  out->egress.clear();
  out->drop = drop;
  out->reason = std::move(reason);
}

L2Switch::Decision L2Switch::Process(uint32_t ingress, std::span<const uint8_t> frame,
                                     int64_t now_ns) {
  Decision d;
  Process(ingress, frame, now_ns, &d);
  return d;
}

void L2Switch::Process(uint32_t ingress, std::span<const uint8_t> frame, int64_t now_ns,
                       Decision* out) {
  out->egress.clear();
  out->drop = Drop::kNone;
  out->reason.clear();
  auto in = ports_.find(ingress);
  if (in == ports_.end()) {
    ++unknown_port_drops_;
    out->drop = Drop::kUnknownPort;
    out->reason = "port " + std::to_string(ingress) + " is not attached";
    return;
  }
  Port& port = in->second;
  ++port.counters.rx_frames;
  port.counters.rx_bytes += frame.size();

  StatusOr<ParsedFrame> parsed = ParseFrame(frame);
  if (!parsed.ok()) return DropFrame(port, Drop::kMalformed, parsed.status().message(), out);

  std::string reason;
  Drop drop = CheckSource(port, *parsed, &reason);
  if (drop != Drop::kNone) return DropFrame(port, drop, std::move(reason), out);

  MacTable& table = *port.table;
  table[parsed->src.bytes] = MacEntry{ingress, now_ns};

  const MacAddr& dst = parsed->dst;
  if (!dst.IsMulticast()) {
    auto hit = table.find(dst.bytes);
    if (hit != table.end() && Fresh(hit->second, now_ns)) {
      if (hit->second.port == ingress) {
        return DropFrame(port, Drop::kNoPeer,
                         "destination " + dst.ToString() + " is on the ingress port", out);
      }
      out->egress.push_back(hit->second.port);
    }
  }
  if (out->egress.empty()) {  // broadcast, multicast or unknown unicast: flood
    for (const auto& [id, other] : ports_) {
      if (id != ingress && other.table == port.table) out->egress.push_back(id);
    }
  }
  if (out->egress.empty()) {
    return DropFrame(port, Drop::kNoPeer, "no other port in segment '" + port.config.segment + "'",
                     out);
  }
  if (policy_ != nullptr) {
    // out->reason (empty here) takes the policy's reason: no string is made
    // for a frame that passes.
    if (!policy_->Check(ingress, *parsed, frame, now_ns, &out->egress, &out->reason) ||
        out->egress.empty()) {
      std::string why = std::move(out->reason);
      return DropFrame(port, Drop::kPolicy, why.empty() ? "refused by policy" : std::move(why),
                       out);
    }
    out->reason.clear();  // a policy may leave a note on a frame it passes
  }
  for (uint32_t id : out->egress) {
    PortCounters& c = ports_.at(id).counters;
    ++c.tx_frames;
    c.tx_bytes += frame.size();
  }
}

size_t L2Switch::ExpireMacs(int64_t now_ns) {
  size_t removed = 0;
  // Tables stay, even empty: their segment's ports point at them.
  for (auto& [segment, table] : mac_tables_) {
    removed += std::erase_if(table, [&](const auto& kv) { return !Fresh(kv.second, now_ns); });
  }
  return removed;
}

std::optional<L2Switch::PortCounters> L2Switch::GetCounters(uint32_t port) const {
  auto it = ports_.find(port);
  if (it == ports_.end()) return std::nullopt;
  return it->second.counters;
}

const L2Switch::PortConfig* L2Switch::GetPortConfig(uint32_t port) const {
  auto it = ports_.find(port);
  return it == ports_.end() ? nullptr : &it->second.config;
}

std::optional<uint32_t> L2Switch::LookupMac(const std::string& segment, const MacAddr& mac,
                                            int64_t now_ns) const {
  auto table = mac_tables_.find(segment);
  if (table == mac_tables_.end()) return std::nullopt;
  auto hit = table->second.find(mac.bytes);
  if (hit == table->second.end() || !Fresh(hit->second, now_ns)) return std::nullopt;
  return hit->second.port;
}

size_t L2Switch::mac_table_size() const {
  size_t n = 0;
  for (const auto& [segment, table] : mac_tables_) n += table.size();
  return n;
}

}  // namespace blackbox
