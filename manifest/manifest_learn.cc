#include "manifest/manifest_learn.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <tuple>

namespace blackbox {

namespace {

bool IsIp(const ParsedFrame& f) {
  return f.l3 == ParsedFrame::L3::kIpv4 || f.l3 == ParsedFrame::L3::kIpv6;
}
std::string ProtoText(uint8_t p) {
  const char* n = IpProtoName(p);
  return n ? n : "proto " + std::to_string(p);
}

using FlowKey = std::tuple<std::array<uint8_t, 16>, uint16_t, std::array<uint8_t, 16>, uint16_t,
                           uint8_t, uint8_t>;

FlowKey KeyOf(const ParsedFrame& f) {
  auto a = f.ip.src.bytes, b = f.ip.dst.bytes;
  uint16_t pa = 0, pb = 0;
  if (HasPorts(f)) {
    pa = f.transport.src_port;
    pb = f.transport.dst_port;
  }
  if (std::tie(b, pb) < std::tie(a, pa)) {
    std::swap(a, b);
    std::swap(pa, pb);
  }
  return {a, pa, b, pb, f.ip.protocol, static_cast<uint8_t>(f.ip.src.family)};
}

std::string PeerText(const FlowUse& u) {
  return u.peer_vm.empty() ? u.peer.ToString() : u.peer_vm + " (" + u.peer.ToString() + ")";
}

std::string UseText(const FlowUse& u) {
  std::string s = std::string(u.direction == Direction::kIn ? "in" : "out") + " " +
                  ProtoText(u.proto) + " " + (u.direction == Direction::kIn ? "from " : "to ") +
                  PeerText(u);
  if (u.proto == kIpProtoTcp || u.proto == kIpProtoUdp)
    s += " port " + std::to_string(u.service_port);
  if (u.proto == kIpProtoIcmp || u.proto == kIpProtoIcmpv6)
    s += " type " + std::to_string(u.service_port);
  s += ": " + std::to_string(u.flows) + " flow" + (u.flows == 1 ? "" : "s") + ", " +
       std::to_string(u.frames) + " frames";
  if (u.dropped_frames) s += " (" + std::to_string(u.dropped_frames) + " dropped)";
  return s;
}

}  // namespace

StatusOr<Observed> ObserveRecording(const Store& store, const RecordingInfo& info, int64_t since_ns,
                                    int64_t until_ns) {
  Observed o;
  o.vm = info.vm_name;
  o.recording_id = info.id;
  o.since_ns = std::max(since_ns, info.started_wall_ns);
  o.until_ns = info.ended_wall_ns > 0 ? std::min(until_ns, info.ended_wall_ns) : until_ns;
  const nlohmann::json& x = info.extra;
  for (const auto& in : x.value("inputs", nlohmann::json::array())) {
    const std::string role = in.value("role", ""), sha = in.value("sha256", "");
    if (role == "kernel") o.boot.kernel_sha256 = sha;
    if (role == "initrd") o.boot.initrd_sha256 = sha;
    if (role.rfind("disk:", 0) == 0) o.boot.disks_sha256[role.substr(5)] = sha;
  }
  if (x.contains("boot") && x["boot"].is_object()) {
    o.boot.cmdline = x["boot"].value("cmdline", "");
    o.boot.machine = x["boot"].value("machine", "");
  }
  if (x.contains("devices") && x["devices"].is_array()) {
    for (const auto& d : x["devices"]) {
      if (d.is_string()) o.boot.devices.push_back(d.get<std::string>());
    }
  }

  // Guest-initiated shutdowns and resets.
  ASSIGN_OR_RETURN(auto events, store.ListEvents(info.id));
  for (const StoredEvent& e : events) {
    if (e.wall_ns < o.since_ns || e.wall_ns > o.until_ns) continue;
    if (e.body.value("kind", "") != "qmp" || !e.body.contains("data")) continue;
    const auto& d = e.body["data"];
    if (!d.is_object() || !d.value("guest", false)) continue;
    const std::string ev = e.body.value("event", "");
    if (ev == "SHUTDOWN") ++o.guest_shutdowns;
    if (ev == "RESET") ++o.guest_resets;
  }

  if (!x.contains("capture")) return o;
  o.capture_id = x["capture"].get<std::string>();
  ASSIGN_OR_RETURN(nlohmann::json meta, store.GetCapture(o.capture_id));
  std::map<std::string, std::string> ip_vm;  // address text -> VM
  for (const auto& p : meta.value("ports", nlohmann::json::array())) {
    const std::string vm = p.value("vm", "");
    for (const auto& ip : p.value("ips", nlohmann::json::array())) {
      if (!ip.is_string()) continue;
      auto a = IpAddr::Parse(ip.get<std::string>());
      if (!a.ok()) continue;
      ip_vm[a->ToString()] = vm;
      o.lab_addresses[vm].push_back(*a);
    }
  }
  std::map<uint32_t, MacAddr> mine;  // the VM's ports
  for (const auto& p : x.value("ports", nlohmann::json::array())) {
    auto mac = MacAddr::Parse(p.value("mac", ""));
    if (!mac.ok()) continue;
    mine[p.value("id", 0u)] = *mac;
    o.macs.push_back(mac->ToString());
    for (const auto& ip : p.value("ips", nlohmann::json::array())) {
      if (ip.is_string()) o.ips.push_back(ip.get<std::string>());
    }
  }
  if (mine.empty()) return o;

  FrameQuery q;
  q.since_ns = o.since_ns;
  q.until_ns = o.until_ns;
  for (const auto& [id, mac] : mine) q.ports.push_back(id);
  // (direction, peer, proto, port) -> index in o.flows
  std::map<std::tuple<int, std::array<uint8_t, 16>, uint8_t, uint8_t, uint16_t>, size_t> uses;
  std::map<FlowKey, size_t> flow_use;  // flow -> its use
  struct Second {
    double packets = 0, bytes = 0, flows = 0;
  };
  std::map<int64_t, Second> seconds;
  RETURN_IF_ERROR(store.ReadFrames(o.capture_id, q, [&](const CapturedFrame& cf) -> Status {
    auto parsed =
        ParseFrame(std::span(reinterpret_cast<const uint8_t*>(cf.bytes.data()), cf.bytes.size()));
    if (!parsed.ok()) return Status::Ok();
    const ParsedFrame& f = *parsed;
    const bool sending = mine.count(cf.ingress) > 0;
    bool receiving = false;
    for (uint32_t e : cf.egress) {
      auto it = mine.find(e);
      if (it != mine.end() && (f.dst.IsMulticast() || f.dst == it->second)) receiving = true;
    }
    if (!sending && !receiving) return Status::Ok();
    ++o.frames;
    Second& sec = seconds[cf.wall_ns / 1'000'000'000];
    sec.packets += 1;
    sec.bytes += static_cast<double>(cf.bytes.size());
    if (!IsIp(f) || IsHousekeeping(f)) return Status::Ok();
    const FlowKey key = KeyOf(f);
    auto known = flow_use.find(key);
    size_t idx;
    if (known == flow_use.end()) {
      sec.flows += 1;
      FlowUse u;
      u.direction = sending ? Direction::kOut : Direction::kIn;
      u.peer = sending ? f.ip.dst : f.ip.src;
      auto vm = ip_vm.find(u.peer.ToString());
      if (vm != ip_vm.end() && vm->second != o.vm) u.peer_vm = vm->second;
      u.proto = f.ip.protocol;
      if (HasPorts(f)) u.service_port = f.transport.dst_port;
      if (f.l4 == ParsedFrame::L4::kIcmp || f.l4 == ParsedFrame::L4::kIcmpv6) {
        u.service_port = f.transport.icmp_type;
      }
      auto ukey = std::make_tuple(static_cast<int>(u.direction), u.peer.bytes,
                                  static_cast<uint8_t>(u.peer.family), u.proto, u.service_port);
      auto it = uses.find(ukey);
      if (it == uses.end()) {
        u.first_wall_ns = cf.wall_ns;
        it = uses.emplace(ukey, o.flows.size()).first;
        o.flows.push_back(u);
      }
      idx = it->second;
      ++o.flows[idx].flows;
      flow_use[key] = idx;
    } else {
      idx = known->second;
    }
    FlowUse& u = o.flows[idx];
    ++u.frames;
    u.bytes += cf.bytes.size();
    if (cf.egress.empty()) ++u.dropped_frames;
    return Status::Ok();
  }));
  for (const auto& [s, v] : seconds) {
    o.max_packets_per_s = std::max(o.max_packets_per_s, v.packets);
    o.max_bytes_per_s = std::max(o.max_bytes_per_s, v.bytes);
    o.max_new_flows_per_s = std::max(o.max_new_flows_per_s, v.flows);
  }
  std::sort(o.flows.begin(), o.flows.end(), [](const FlowUse& a, const FlowUse& b) {
    return std::make_tuple(a.direction, a.peer_vm, a.peer.family, a.peer.bytes, a.proto,
                           a.service_port) < std::make_tuple(b.direction, b.peer_vm, b.peer.family,
                                                             b.peer.bytes, b.proto, b.service_port);
  });
  return o;
}

Manifest LearnManifest(const Observed& seen, const LearnOptions& opt) {
  Manifest m;
  m.vm = seen.vm;
  m.mode = opt.mode;
  for (const auto& mac : seen.macs) {
    if (auto a = MacAddr::Parse(mac); a.ok()) m.macs.push_back(*a);
  }
  for (const auto& ip : seen.ips) {
    if (auto a = IpAddr::Parse(ip); a.ok()) m.ips.push_back(*a);
  }
  m.boot.kernel_sha256 = seen.boot.kernel_sha256;
  m.boot.initrd_sha256 = seen.boot.initrd_sha256;
  m.boot.disks_sha256 = seen.boot.disks_sha256;
  m.boot.cmdline = seen.boot.cmdline;
  m.boot.machine = seen.boot.machine;
  if (opt.devices) m.boot.devices = seen.boot.devices;
  m.default_action = kRespAlert | kRespDrop;

  // One rule per (direction, peer, protocol), listing the service ports.
  std::map<std::tuple<int, std::string, uint8_t>, NetRule> rules;
  std::vector<std::tuple<int, std::string, uint8_t>> order;
  for (const FlowUse& u : seen.flows) {
    const std::string peer =
        u.peer_vm.empty() ? Cidr{u.peer, u.peer.family == IpFamily::kIpv4 ? 32 : 128}.ToString()
                          : u.peer_vm;
    auto key = std::make_tuple(static_cast<int>(u.direction), peer, u.proto);
    auto it = rules.find(key);
    if (it == rules.end()) {
      NetRule r;
      r.direction = u.direction;
      Peer p;
      if (u.peer_vm.empty()) {
        p.kind = Peer::Kind::kCidr;
        p.cidr = Cidr{u.peer, u.peer.family == IpFamily::kIpv4 ? 32 : 128};
      } else {
        p.kind = Peer::Kind::kVm;
        p.vm = u.peer_vm;
      }
      r.peers.push_back(p);
      r.peer_text = peer;
      r.proto = u.proto;
      const char* pn = IpProtoName(u.proto);
      r.name = std::string(u.direction == Direction::kIn ? "in-" : "out-") +
               (pn ? pn : "proto" + std::to_string(u.proto)) + "-" + peer;
      for (char& c : r.name) {
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_')
          c = '_';
      }
      it = rules.emplace(key, r).first;
      order.push_back(key);
    }
    if (IpProtoName(u.proto) != nullptr) {
      auto& ports = it->second.ports;
      PortRange pr{u.service_port, u.service_port};
      if (std::find(ports.begin(), ports.end(), pr) == ports.end()) ports.push_back(pr);
    }
  }
  for (const auto& key : order) {
    NetRule r = rules[key];
    std::sort(r.ports.begin(), r.ports.end(),
              [](const PortRange& a, const PortRange& b) { return a.lo < b.lo; });
    m.rules.push_back(std::move(r));
  }
  auto envelope = [&](double seen_v, double floor) {
    return std::ceil(std::max(seen_v * opt.headroom, floor));
  };
  m.vm_rate.packets_per_s = envelope(seen.max_packets_per_s, opt.min_packets_per_s);
  m.vm_rate.bytes_per_s = envelope(seen.max_bytes_per_s, opt.min_bytes_per_s);
  m.vm_rate.new_connections_per_s =
      envelope(seen.max_new_flows_per_s, opt.min_new_connections_per_s);
  m.vm_rate.action = kRespAlert;
  if (seen.guest_shutdowns > 0) m.events.guest_shutdown = 0;
  if (seen.guest_resets > 0) m.events.guest_reset = 0;
  return m;
}

ManifestDiff DiffManifest(const Manifest& m, const Observed& seen) {
  ManifestDiff d;
  for (const BootMismatch& mm : CompareBoot(m.boot, seen.boot)) {
    d.deviations.push_back({"boot", mm.ToString(), m.boot.line});
  }
  const RuleSet rules = RuleSet::Compile(m, seen.lab_addresses);
  std::vector<bool> used(m.rules.size(), false);
  for (const FlowUse& u : seen.flows) {
    FlowFacts f{u.direction, u.peer, u.proto, u.service_port};
    const RuleSet::Verdict v = rules.Evaluate(f);
    if (v.rule >= 0) used[static_cast<size_t>(v.rule)] = true;
    if (v.action == 0) continue;
    const std::string by = v.rule >= 0 ? "rule '" + m.rules[v.rule].name + "'"
                                       : std::string("network.default (no rule matches)");
    d.deviations.push_back({"flow", UseText(u) + " -> " + ResponsesToString(v.action) + " by " + by,
                            v.rule >= 0 ? m.rules[v.rule].line : m.default_line});
  }
  auto rate = [&](double limit, double saw, const char* what) {
    if (limit > 0 && saw > limit) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "busiest second had %.0f %s, the envelope allows %.0f", saw,
                    what, limit);
      d.deviations.push_back({"rate", buf, m.vm_rate.line});
    }
  };
  rate(m.vm_rate.packets_per_s, seen.max_packets_per_s, "packets/s");
  rate(m.vm_rate.bytes_per_s, seen.max_bytes_per_s, "bytes/s");
  rate(m.vm_rate.new_connections_per_s, seen.max_new_flows_per_s, "new connections/s");
  if (seen.guest_shutdowns > 0 && m.events.guest_shutdown != 0) {
    d.deviations.push_back({"event",
                            "the guest shut itself down " + std::to_string(seen.guest_shutdowns) +
                                " time(s) -> " + ResponsesToString(m.events.guest_shutdown),
                            0});
  }
  if (seen.guest_resets > 0 && m.events.guest_reset != 0) {
    d.deviations.push_back({"event",
                            "the guest reset itself " + std::to_string(seen.guest_resets) +
                                " time(s) -> " + ResponsesToString(m.events.guest_reset),
                            0});
  }
  for (size_t i = 0; i < m.rules.size(); ++i) {
    if (!used[i]) {
      d.unused_rules.push_back("rule '" + m.rules[i].name + "' (line " +
                               std::to_string(m.rules[i].line) + ") matched no flow");
    }
  }
  return d;
}

}  // namespace blackbox
