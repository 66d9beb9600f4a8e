#include "recorder/manifest_policy.h"

#include <algorithm>
#include <cstring>

namespace blackbox {

namespace {

bool HasPorts(const ParsedFrame& f) {
  return f.l4 == ParsedFrame::L4::kTcp || f.l4 == ParsedFrame::L4::kUdp;
}

bool IsIcmp(const ParsedFrame& f) {
  return f.l4 == ParsedFrame::L4::kIcmp || f.l4 == ParsedFrame::L4::kIcmpv6;
}

const char* ProtoName(uint8_t p) {
  switch (p) {
    case kIpProtoTcp:
      return "tcp";
    case kIpProtoUdp:
      return "udp";
    case kIpProtoIcmp:
      return "icmp";
    case kIpProtoIcmpv6:
      return "icmpv6";
    default:
      return nullptr;
  }
}

std::string FlowText(const ParsedFrame& f) {
  if (f.l3 != ParsedFrame::L3::kIpv4 && f.l3 != ParsedFrame::L3::kIpv6) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "ethertype 0x%04x", f.ethertype);
    return std::string(buf) + " from " + f.src.ToString();
  }
  const char* name = ProtoName(f.ip.protocol);
  std::string proto = name ? name : "proto " + std::to_string(f.ip.protocol);
  std::string s = proto + " " + f.ip.src.ToString();
  if (HasPorts(f)) s += ":" + std::to_string(f.transport.src_port);
  s += " -> " + f.ip.dst.ToString();
  if (HasPorts(f)) s += ":" + std::to_string(f.transport.dst_port);
  if (IsIcmp(f)) s += " type " + std::to_string(f.transport.icmp_type);
  return s;
}

const char* DirectionName(Direction d) { return d == Direction::kIn ? "in" : "out"; }

}  // namespace

size_t ManifestPolicy::KeyHash::operator()(const Key& k) const {
  // FNV-1a over the key's bytes, folded 8 bytes at a time.
  static_assert(sizeof(Key) == 40, "Key must have no padding");
  const auto* p = reinterpret_cast<const uint8_t*>(&k);
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < sizeof(Key); i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 29;
  }
  return static_cast<size_t>(h);
}

bool ManifestPolicy::Bucket::Take(double amount, int64_t now_ns) {
  if (rate <= 0) return true;
  if (last_ns == 0) {
    tokens = rate;  // a full second's burst to start with
  } else if (now_ns > last_ns) {
    tokens = std::min(rate, tokens + rate * static_cast<double>(now_ns - last_ns) / 1e9);
  }
  last_ns = now_ns;
  if (tokens < amount) return false;
  tokens -= amount;
  return true;
}

ManifestPolicy::ManifestPolicy(Options options, Sink sink)
    : options_(options), sink_(std::move(sink)) {}

void ManifestPolicy::AddVm(VmPolicy policy) {
  auto vm = std::make_unique<Vm>();
  const Manifest& m = *policy.manifest;
  vm->enforce = m.mode == ManifestMode::kEnforce;
  auto envelope = [](const RateEnvelope& spec, std::string name, int rule) {
    Envelope e;
    e.spec = spec;
    e.name = std::move(name);
    e.rule = rule;
    e.line = spec.line;
    e.packets.rate = spec.packets_per_s;
    e.bytes.rate = spec.bytes_per_s;
    e.conns.rate = spec.new_connections_per_s;
    return e;
  };
  vm->vm_rate = envelope(m.vm_rate, "rates", -1);
  for (size_t i = 0; i < m.rules.size(); ++i) {
    vm->rule_rates.push_back(envelope(m.rules[i].rate, m.rules[i].name, static_cast<int>(i)));
  }
  const uint16_t index = static_cast<uint16_t>(vms_.size());
  for (size_t i = 0; i < policy.ports.size(); ++i) {
    port_vm_[policy.ports[i]] = {index, i < policy.macs.size() ? policy.macs[i] : MacAddr{}};
  }
  vm->policy = std::move(policy);
  vms_.push_back(std::move(vm));
}

bool ManifestPolicy::SetQuarantined(const std::string& name, bool on) {
  for (auto& vm : vms_) {
    if (vm->policy.name == name) {
      vm->quarantined.store(on);
      return true;
    }
  }
  return false;
}

bool ManifestPolicy::quarantined(const std::string& name) const {
  for (const auto& vm : vms_) {
    if (vm->policy.name == name) return vm->quarantined.load();
  }
  return false;
}

ManifestPolicy::Stats ManifestPolicy::stats() const {
  Stats s = stats_;
  s.cached = cache_.size();
  return s;
}

bool ManifestPolicy::Housekeeping(const ParsedFrame& f) {
  if (f.l3 == ParsedFrame::L3::kArp) return true;
  if (f.l4 != ParsedFrame::L4::kIcmpv6) return false;
  const uint8_t t = f.transport.icmp_type;
  return (t >= 133 && t <= 137) || (t >= 130 && t <= 132) || t == 143;
}

bool ManifestPolicy::Quarantine(Vm& vm, bool sending, const ParsedFrame& f) const {
  // A quarantined VM keeps its management peers (and its own housekeeping
  // with them); everything else is cut.
  if (f.l3 != ParsedFrame::L3::kIpv4 && f.l3 != ParsedFrame::L3::kIpv6) {
    if (f.l3 == ParsedFrame::L3::kArp) {
      const IpAddr& peer = sending ? f.arp.target_ip : f.arp.sender_ip;
      return vm.policy.rules.IsManagement(peer);
    }
    return false;
  }
  return vm.policy.rules.IsManagement(sending ? f.ip.dst : f.ip.src);
}

void ManifestPolicy::Report(Vm& vm, uint32_t port, Violation v, const ParsedFrame& f,
                            uint32_t ingress, int64_t now_ns) {
  ++stats_.violations;
  v.mono_ns = now_ns;
  v.vm = vm.policy.name;
  v.vm_port = port;
  v.ingress = ingress;
  v.enforced = vm.enforce;
  if (f.l3 == ParsedFrame::L3::kIpv4 || f.l3 == ParsedFrame::L3::kIpv6) {
    v.src_ip = f.ip.src.ToString();
    v.dst_ip = f.ip.dst.ToString();
    v.proto = f.ip.protocol;
    if (HasPorts(f)) {
      v.src_port = f.transport.src_port;
      v.dst_port = f.transport.dst_port;
    }
  }
  const size_t n = std::min<size_t>(current_frame_.size(), 256);
  v.frame.assign(reinterpret_cast<const char*>(current_frame_.data()), n);
  if (vm.enforce && (v.action & kRespQuarantine)) vm.quarantined.store(true);
  if (sink_) sink_(std::move(v));
}

bool ManifestPolicy::Rates(Vm& vm, uint32_t port, int rule, bool new_flow, size_t frame_size,
                           const ParsedFrame& f, uint32_t ingress, int64_t now_ns,
                           std::string* reason) {
  bool pass = true;
  auto check = [&](Envelope& e) {
    if (!e.active()) return;
    const char* what = nullptr;
    if (!e.packets.Take(1, now_ns)) what = "packets/s";
    if (!e.bytes.Take(static_cast<double>(frame_size), now_ns) && !what) what = "bytes/s";
    if (new_flow && !e.conns.Take(1, now_ns) && !what) what = "new connections/s";
    if (!what) {
      if (e.exceeding && now_ns - e.last_exceed_ns > 1'000'000'000) e.exceeding = false;
      return;
    }
    e.last_exceed_ns = now_ns;
    const bool enforce_drop = vm.enforce && (e.spec.action & kRespDrop);
    if (enforce_drop) pass = false;
    if (!e.exceeding || now_ns - e.last_alert_ns >= options_.rate_realert_ns) {
      e.exceeding = true;
      e.last_alert_ns = now_ns;
      Violation v;
      v.kind = "rate";
      v.rule = e.rule;
      v.rule_name = e.name;
      v.rule_line = e.line;
      v.action = e.spec.action | kRespAlert;
      double limit = std::string_view(what) == "packets/s" ? e.spec.packets_per_s
                     : std::string_view(what) == "bytes/s" ? e.spec.bytes_per_s
                                                           : e.spec.new_connections_per_s;
      char buf[64];
      std::snprintf(buf, sizeof buf, "%g", limit);
      v.reason = "outside its rate envelope '" + e.name + "': more than " + buf + " " + what;
      Report(vm, port, std::move(v), f, ingress, now_ns);
    }
    if (enforce_drop)
      *reason = "manifest " + vm.policy.name + ": over " + what + " of '" + e.name + "'";
  };
  check(vm.vm_rate);
  if (rule >= 0 && static_cast<size_t>(rule) < vm.rule_rates.size()) check(vm.rule_rates[rule]);
  return pass;
}

bool ManifestPolicy::Judge(size_t vi, uint32_t port, bool sending, const ParsedFrame& f,
                           size_t frame_size, uint32_t ingress, int64_t now_ns,
                           std::string* reason) {
  Vm& vm = *vms_[vi];
  if (vm.quarantined.load(std::memory_order_relaxed) && !Quarantine(vm, sending, f)) {
    *reason = "manifest " + vm.policy.name + ": quarantined (only management peers)";
    return false;
  }
  const Manifest& m = *vm.policy.manifest;
  if (m.housekeeping_allowed && Housekeeping(f)) {
    return Rates(vm, port, -1, false, frame_size, f, ingress, now_ns, reason);
  }

  Key key;
  const bool ip = f.l3 == ParsedFrame::L3::kIpv4 || f.l3 == ParsedFrame::L3::kIpv6;
  if (ip) {
    const auto a = f.ip.src.bytes, b = f.ip.dst.bytes;
    uint16_t pa = 0, pb = 0;
    if (HasPorts(f)) {
      pa = f.transport.src_port;
      pb = f.transport.dst_port;
    }
    const bool a_lo = std::tie(a, pa) < std::tie(b, pb);
    key.ip_lo = a_lo ? a : b;
    key.ip_hi = a_lo ? b : a;
    key.port_lo = a_lo ? pa : pb;
    key.port_hi = a_lo ? pb : pa;
    key.proto = f.ip.protocol;
    key.family = static_cast<uint8_t>(f.ip.src.family);
  } else {
    // Non-IP: one flow per ethertype and MAC pair.
    auto mac16 = [](const MacAddr& m) {
      std::array<uint8_t, 16> out{};
      std::copy(m.bytes.begin(), m.bytes.end(), out.begin());
      return out;
    };
    const auto a = mac16(f.src), b = mac16(f.dst);
    key.ip_lo = std::min(a, b);
    key.ip_hi = std::max(a, b);
    key.port_lo = f.ethertype;
  }
  key.vm = static_cast<uint16_t>(vi);

  auto hit = cache_.find(key);
  bool new_flow = false;
  Verdict verdict;
  if (hit != cache_.end()) {
    hit->second.last_ns = now_ns;
    verdict = hit->second;
  } else {
    new_flow = true;
    ++stats_.judged;
    FlowFacts facts;
    facts.direction = sending ? Direction::kOut : Direction::kIn;
    if (ip) {
      facts.peer = sending ? f.ip.dst : f.ip.src;
      facts.proto = f.ip.protocol;
      if (HasPorts(f)) facts.service_port = f.transport.dst_port;
      if (IsIcmp(f)) facts.service_port = f.transport.icmp_type;
    }
    RuleSet::Verdict rv = vm.policy.rules.Evaluate(facts);
    verdict.rule = rv.rule;
    verdict.action = rv.action;
    verdict.drop = vm.enforce && (rv.action & kRespDrop);
    verdict.last_ns = now_ns;
    bool report = rv.action != 0;
    if (cache_.size() < options_.max_cached) {
      cache_.emplace(key, verdict);
    } else {
      // Judged again at every frame: report at most once a second.
      ++stats_.uncached_frames;
      report = report && now_ns - last_uncached_report_ns_ >= 1'000'000'000;
      if (report) last_uncached_report_ns_ = now_ns;
    }
    if (report) {
      Violation v;
      v.kind = "network";
      v.rule = rv.rule;
      if (rv.rule >= 0) {
        v.rule_name = m.rules[rv.rule].name;
        v.rule_line = m.rules[rv.rule].line;
      } else {
        v.rule_name = "default";
        v.rule_line = m.default_line;
      }
      v.action = rv.action | kRespAlert;
      v.flow = facts;
      v.reason = std::string(DirectionName(facts.direction)) + " flow " + FlowText(f) +
                 (rv.rule >= 0 ? " matches rule '" + v.rule_name + "'"
                               : " matches no rule (network.default)");
      Report(vm, port, std::move(v), f, ingress, now_ns);
    }
  }
  if (verdict.drop) {
    *reason = "manifest " + vm.policy.name + ": " +
              (verdict.rule >= 0 ? "rule '" + m.rules[verdict.rule].name + "'"
                                 : std::string("network.default"));
    return false;
  }
  return Rates(vm, port, verdict.rule, new_flow, frame_size, f, ingress, now_ns, reason);
}

void ManifestPolicy::Sweep(int64_t now_ns) {
  last_sweep_ns_ = now_ns;
  std::erase_if(cache_,
                [&](const auto& kv) { return now_ns - kv.second.last_ns > options_.flow_idle_ns; });
}

bool ManifestPolicy::Check(uint32_t ingress, const ParsedFrame& frame,
                           std::span<const uint8_t> bytes, int64_t now_ns,
                           std::vector<uint32_t>* egress, std::string* reason) {
  if (vms_.empty()) return true;
  ++stats_.frames;
  current_frame_ = bytes;
  if (now_ns - last_sweep_ns_ > 1'000'000'000) Sweep(now_ns);
  if (auto s = port_vm_.find(ingress); s != port_vm_.end()) {
    if (!Judge(s->second.vm, ingress, /*sending=*/true, frame, bytes.size(), ingress, now_ns,
               reason)) {
      ++stats_.dropped;
      return false;
    }
  }
  size_t kept = 0;
  for (size_t i = 0; i < egress->size(); ++i) {
    const uint32_t port = (*egress)[i];
    auto r = port_vm_.find(port);
    std::string why;
    // A unicast frame flooded to a port whose MAC it is not for (the switch
    // has not learned the destination yet) does not concern that VM: its NIC
    // ignores it. Only the addressee (or every member, for broadcast and
    // multicast) judges it.
    const bool addressed =
        frame.dst.IsMulticast() || r == port_vm_.end() || frame.dst == r->second.mac;
    if (r != port_vm_.end() && addressed &&
        !Judge(r->second.vm, port, /*sending=*/false, frame, bytes.size(), ingress, now_ns, &why)) {
      ++stats_.pruned;
      if (reason->empty()) *reason = std::move(why);
      continue;
    }
    (*egress)[kept++] = port;
  }
  egress->resize(kept);
  if (kept == 0) ++stats_.dropped;
  return kept > 0;
}

}  // namespace blackbox
