#include "manifest/manifest_policy.h"

#include <algorithm>
#include <cstring>
#include <optional>

namespace blackbox {

namespace {

bool IsIcmp(const ParsedFrame& f) {
  return f.l4 == ParsedFrame::L4::kIcmp || f.l4 == ParsedFrame::L4::kIcmpv6;
}

std::string FlowText(const ParsedFrame& f) {
  if (f.l3 != ParsedFrame::L3::kIpv4 && f.l3 != ParsedFrame::L3::kIpv6) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "ethertype 0x%04x", f.ethertype);
    return std::string(buf) + " from " + f.src.ToString();
  }
  const char* name = IpProtoName(f.ip.protocol);
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

uint64_t ManifestPolicy::Hash(const Key& k) {
  // Multiply-xorshift over the five words, then a murmur3 finalizer.
  uint64_t h = 0x9e3779b97f4a7c15ull;
  for (uint64_t w : k.w) {
    h ^= w * 0xbf58476d1ce4e5b9ull;
    h = (h << 27 | h >> 37) * 0x94d049bb133111ebull;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

ManifestPolicy::FlowCache::FlowCache(size_t max_entries, size_t initial_slots) : max_(max_entries) {
  size_t slots = 4;
  while (slots < initial_slots) slots *= 2;
  Rehash(slots);
}

void ManifestPolicy::FlowCache::Rehash(size_t capacity) {
  ++generation_;
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(capacity, Slot{});
  mask_ = capacity - 1;
  size_ = 0;
  for (const Slot& s : old) {
    if (!s.used) continue;
    size_t i = s.hash & mask_;
    while (slots_[i].used) i = (i + 1) & mask_;
    slots_[i] = s;
    ++size_;
  }
}

ManifestPolicy::Verdict* ManifestPolicy::FlowCache::Find(const Key& k, uint64_t hash) {
  for (size_t i = hash & mask_;; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (!s.used) return nullptr;
    if (s.hash == hash && s.key == k) return &s.v;
  }
}

ManifestPolicy::Verdict* ManifestPolicy::FlowCache::Insert(const Key& k, uint64_t hash,
                                                           const Verdict& v) {
  if (size_ >= max_) return nullptr;
  if ((size_ + 1) * 2 > slots_.size()) Rehash(slots_.size() * 2);
  size_t i = hash & mask_;
  while (slots_[i].used) i = (i + 1) & mask_;
  slots_[i] = Slot{k, hash, v, true};
  ++size_;
  return &slots_[i].v;
}

void ManifestPolicy::FlowCache::EraseIdle(int64_t older_than_ns) {
  size_t removed = 0;
  for (Slot& s : slots_) {
    if (s.used && s.v.last_ns < older_than_ns) {
      s.used = false;
      ++removed;
    }
  }
  // Re-place the survivors so no probe sequence has a hole in it.
  if (removed > 0) Rehash(slots_.size());
}

void ManifestPolicy::FlowCache::EraseVm(uint16_t vm) {
  size_t removed = 0;
  for (Slot& s : slots_) {
    if (s.used && (s.key.w[4] >> 48) == vm) {
      s.used = false;
      ++removed;
    }
  }
  if (removed > 0) Rehash(slots_.size());
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
    : options_(options),
      sink_(std::move(sink)),
      cache_(options.max_cached, options.initial_cache_slots),
      front_(kFrontSlots),
      front_cold_(kFrontSlots) {}

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
  vm->has_rates = vm->vm_rate.active();
  for (size_t i = 0; i < m.rules.size(); ++i) {
    vm->rule_rates.push_back(envelope(m.rules[i].rate, m.rules[i].name, static_cast<int>(i)));
    vm->has_rates = vm->has_rates || vm->rule_rates.back().active();
  }
  std::lock_guard lock(vms_mu_);
  size_t index = vms_.size();
  for (size_t i = 0; i < vms_.size(); ++i) {
    if (vms_[i]->policy.name == policy.name) index = i;
  }
  if (index < vms_.size()) {
    // The same VM again: its slot is reused, so verdicts cached for the old
    // rules must go.
    Vm& old = *vms_[index];
    if (!old.removed && old.policy.manifest == policy.manifest) {
      vm->quarantined.store(old.quarantined.load());
      vm->vm_rate = old.vm_rate;
      vm->rule_rates = old.rule_rates;
    }
    for (PortVm& p : port_vm_) {
      if (p.checked && p.vm == index) p = PortVm{};
    }
    cache_.EraseVm(static_cast<uint16_t>(index));
    quarantine_changes_.fetch_add(1);
  }
  for (size_t i = 0; i < policy.ports.size(); ++i) {
    const uint32_t port = policy.ports[i];
    if (port >= port_vm_.size()) port_vm_.resize(port + 1);
    port_vm_[port] = {true, static_cast<uint16_t>(index),
                      i < policy.macs.size() ? policy.macs[i] : MacAddr{}};
  }
  vm->policy = std::move(policy);
  if (index < vms_.size()) {
    vms_[index] = std::move(vm);
  } else {
    vms_.push_back(std::move(vm));
  }
}

bool ManifestPolicy::RemoveVm(const std::string& name) {
  std::lock_guard lock(vms_mu_);
  for (size_t i = 0; i < vms_.size(); ++i) {
    Vm& vm = *vms_[i];
    if (vm.removed || vm.policy.name != name) continue;
    vm.removed = true;
    for (PortVm& p : port_vm_) {
      if (p.checked && p.vm == i) p = PortVm{};
    }
    quarantine_changes_.fetch_add(1);  // the front cache forgets its passes
    return true;
  }
  return false;
}

bool ManifestPolicy::SetQuarantined(const std::string& name, bool on) {
  std::lock_guard lock(vms_mu_);
  for (auto& vm : vms_) {
    if (!vm->removed && vm->policy.name == name) {
      vm->quarantined.store(on);
      quarantine_changes_.fetch_add(1);
      return true;
    }
  }
  return false;
}

bool ManifestPolicy::quarantined(const std::string& name) const {
  std::lock_guard lock(vms_mu_);
  for (const auto& vm : vms_) {
    if (!vm->removed && vm->policy.name == name) return vm->quarantined.load();
  }
  return false;
}

ManifestPolicy::Stats ManifestPolicy::stats() const {
  Stats s = stats_;
  s.frames += s.fast;
  s.cached = cache_.size();
  return s;
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
  if (vm.enforce && (v.action & kRespQuarantine)) {
    vm.quarantined.store(true);
    quarantine_changes_.fetch_add(1);
  }
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

ManifestPolicy::FlowId ManifestPolicy::IdOf(const ParsedFrame& f) {
  FlowId id;
  Key& key = id.key;
  id.ip = f.l3 == ParsedFrame::L3::kIpv4 || f.l3 == ParsedFrame::L3::kIpv6;
  if (id.ip) {
    uint64_t a[2], b[2];
    std::memcpy(a, f.ip.src.bytes.data(), 16);
    std::memcpy(b, f.ip.dst.bytes.data(), 16);
    uint16_t pa = 0, pb = 0;
    if (HasPorts(f)) {
      pa = f.transport.src_port;
      pb = f.transport.dst_port;
    }
    // Any fixed order of the two endpoints will do.
    const bool a_lo = a[0] != b[0] ? a[0] < b[0] : a[1] != b[1] ? a[1] < b[1] : pa <= pb;
    const uint64_t* lo = a_lo ? a : b;
    const uint64_t* hi = a_lo ? b : a;
    key.w[0] = lo[0];
    key.w[1] = lo[1];
    key.w[2] = hi[0];
    key.w[3] = hi[1];
    key.w[4] = uint64_t{a_lo ? pa : pb} | uint64_t{a_lo ? pb : pa} << 16 |
               uint64_t{f.ip.protocol} << 32 |
               uint64_t{static_cast<uint8_t>(f.ip.src.family)} << 40;
  } else {
    // Non-IP: one flow per ethertype and MAC pair.
    uint64_t a = 0, b = 0;
    std::memcpy(&a, f.src.bytes.data(), 6);
    std::memcpy(&b, f.dst.bytes.data(), 6);
    key.w[0] = std::min(a, b);
    key.w[2] = std::max(a, b);
    key.w[4] = uint64_t{f.ethertype} | uint64_t{0xff} << 40;
  }
  return id;
}

bool ManifestPolicy::Judge(size_t vi, uint32_t port, bool sending, const ParsedFrame& f,
                           const FlowId& id, size_t frame_size, uint32_t ingress, int64_t now_ns,
                           std::string* reason, Verdict** entry) {
  if (entry != nullptr) *entry = nullptr;
  Vm& vm = *vms_[vi];
  if (vm.quarantined.load(std::memory_order_relaxed) && !Quarantine(vm, sending, f)) {
    *reason = "manifest " + vm.policy.name + ": quarantined (only management peers)";
    return false;
  }
  const Manifest& m = *vm.policy.manifest;
  if (m.housekeeping_allowed && IsHousekeeping(f)) {
    return !vm.has_rates || Rates(vm, port, -1, false, frame_size, f, ingress, now_ns, reason);
  }

  // The flow's key for this VM: the VM's index in the top bits, mixed
  // into the flow's hash.
  Key key = id.key;
  key.w[4] |= static_cast<uint64_t>(vi) << 48;
  const uint64_t hash = id.hash + (static_cast<uint64_t>(vi) + 1) * 0x9e3779b97f4a7c15ull;
  const bool ip = id.ip;

  Verdict* hit = cache_.Find(key, hash);
  bool new_flow = false;
  Verdict verdict;
  if (hit != nullptr) {
    hit->last_ns = now_ns;
    verdict = *hit;
    if (entry != nullptr) *entry = hit;
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
    // Uses in the front cache go to the verdicts before they move.
    if (cache_.InsertMoves()) CarryFrontUse();
    Verdict* stored = cache_.Insert(key, hash, verdict);
    if (entry != nullptr) *entry = stored;
    if (stored == nullptr) {
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
  return !vm.has_rates ||
         Rates(vm, port, verdict.rule, new_flow, frame_size, f, ingress, now_ns, reason);
}

void ManifestPolicy::CarryUse(size_t slot) {
  const Front& e = front_[slot];
  if (e.w[1] == 0) return;
  const FrontCold& c = front_cold_[slot];
  if (c.sender) c.sender->last_ns = std::max(c.sender->last_ns, e.last_ns);
  if (c.receiver) c.receiver->last_ns = std::max(c.receiver->last_ns, e.last_ns);
}

void ManifestPolicy::CarryFrontUse() {
  for (size_t i = 0; i < front_.size(); ++i) CarryUse(i);
}

void ManifestPolicy::ClearFront() { std::fill(front_.begin(), front_.end(), Front{}); }

void ManifestPolicy::Sweep(int64_t now_ns) {
  last_sweep_ns_ = now_ns;
  CarryFrontUse();
  cache_.EraseIdle(now_ns - options_.flow_idle_ns);
}

// An IPv4 frame's key (the caller checked l3).
// The key's word for ports and protocol (ports only for TCP and UDP, as in
// IdOf) and the family.
static inline uint64_t PortsWord(const ParsedFrame& f, uint64_t family) {
  uint64_t ports = 0;
  if (HasPorts(f)) ports = uint64_t{f.transport.src_port} | uint64_t{f.transport.dst_port} << 16;
  return ports | uint64_t{f.ip.protocol} << 32 | family << 40;
}

static inline void FrontKeyV4(uint32_t ingress, uint32_t egress, const ParsedFrame& f,
                              uint64_t w[3]) {
  uint32_t src, dst;
  std::memcpy(&src, f.ip.src.bytes.data(), 4);
  std::memcpy(&dst, f.ip.dst.bytes.data(), 4);
  w[0] = uint64_t{src} | uint64_t{dst} << 32;
  w[1] = PortsWord(f, 4);
  w[2] = uint64_t{ingress} | uint64_t{egress} << 32;
}

inline bool ManifestPolicy::FrontKeyOf(uint32_t ingress, uint32_t egress, const ParsedFrame& f,
                                       FrontKey* k) {
  if (f.dst.bytes[0] & 1) return false;  // broadcast or multicast
  k->is_v6 = false;
  if (f.l3 == ParsedFrame::L3::kIpv4) {
    FrontKeyV4(ingress, egress, f, k->w);
    return true;
  }
  if (f.l3 != ParsedFrame::L3::kIpv6) return false;
  k->w[2] = uint64_t{ingress} | uint64_t{egress} << 32;
  uint64_t a[2], b[2];
  std::memcpy(a, f.ip.src.bytes.data(), 16);
  std::memcpy(b, f.ip.dst.bytes.data(), 16);
  k->w[0] = a[0];
  k->w[1] = PortsWord(f, 6);
  k->v6[0] = a[1];
  k->v6[1] = b[0];
  k->v6[2] = b[1];
  k->is_v6 = true;
  return true;
}

inline size_t ManifestPolicy::FrontSlot(const FrontKey& k) {
  // Not a defence against chosen collisions: a collision costs a full check,
  // never a wrong verdict (the whole key is compared).
  uint64_t a = k.w[0];
  if (k.is_v6) a ^= k.v6[0] ^ k.v6[1] ^ k.v6[2];
  uint64_t h = a * 0x9e3779b97f4a7c15ull;
  h = (h ^ k.w[1] ^ (k.w[2] * 0xbf58476d1ce4e5b9ull)) * 0x94d049bb133111ebull;
  return (h >> 40) & (kFrontSlots - 1);
}

inline bool ManifestPolicy::FrontHit(size_t slot, const FrontKey& k) const {
  const Front& e = front_[slot];
  if (((e.w[0] ^ k.w[0]) | (e.w[1] ^ k.w[1]) | (e.w[2] ^ k.w[2])) != 0) return false;
  if (!k.is_v6) return true;
  const auto& x = front_cold_[slot].v6;
  return ((x[0] ^ k.v6[0]) | (x[1] ^ k.v6[1]) | (x[2] ^ k.v6[2])) == 0;
}

bool ManifestPolicy::Check(uint32_t ingress, const ParsedFrame& frame,
                           std::span<const uint8_t> bytes, int64_t now_ns,
                           std::vector<uint32_t>* egress, std::string* reason) {
  // The front cache first, for the common case (IPv4 unicast to one port)
  // in a few dozen instructions and registers only. Everything else is
  // CheckMiss's.
  if (egress->size() != 1 || SweepDue(now_ns) || (frame.dst.bytes[0] & 1) ||
      frame.l3 != ParsedFrame::L3::kIpv4 ||
      quarantine_changes_.load(std::memory_order_relaxed) != front_quarantine_seen_) {
    return CheckMiss(ingress, frame, bytes, now_ns, egress, reason);
  }
  FrontKey k;
  FrontKeyV4(ingress, (*egress)[0], frame, k.w);
  k.is_v6 = false;
  const size_t slot = FrontSlot(k);
  if (!FrontHit(slot, k)) return CheckMiss(ingress, frame, bytes, now_ns, egress, reason);
  Front& e = front_[slot];
  if (e.last_ns != now_ns) e.last_ns = now_ns;  // the frames of one read share a time
  ++stats_.fast;                                // stats() adds these to frames
  return true;
}

bool ManifestPolicy::CheckMiss(uint32_t ingress, const ParsedFrame& frame,
                               std::span<const uint8_t> bytes, int64_t now_ns,
                               std::vector<uint32_t>* egress, std::string* reason) {
  SyncFront();  // a quarantine may have changed
  FrontKey fkey;
  if (egress->size() != 1 || SweepDue(now_ns) || !FrontKeyOf(ingress, (*egress)[0], frame, &fkey)) {
    return CheckFull(ingress, frame, bytes, now_ns, egress, reason, nullptr, 0);
  }
  const size_t slot = FrontSlot(fkey);
  if (FrontHit(slot, fkey)) {  // an IPv6 frame
    front_[slot].last_ns = now_ns;
    ++stats_.fast;
    return true;
  }
  return CheckFull(ingress, frame, bytes, now_ns, egress, reason, &fkey, slot);
}

bool ManifestPolicy::CheckFull(uint32_t ingress, const ParsedFrame& frame,
                               std::span<const uint8_t> bytes, int64_t now_ns,
                               std::vector<uint32_t>* egress, std::string* reason,
                               const FrontKey* fkey, size_t slot) {
  if (vms_.empty()) return true;
  ++stats_.frames;
  // Verdict entries may move below (the cache grows, idle ones are swept):
  // front entries pointing at them must then stop matching.
  struct SyncOnExit {
    ManifestPolicy* p;
    ~SyncOnExit() { p->SyncFront(); }
  } sync{this};
  if (SweepDue(now_ns)) Sweep(now_ns);
  SyncFront();
  // Verdict pointers taken below are valid only while this stays the same,
  // and this frame's pass stands for the next ones only while no quarantine
  // changes (a verdict below may quarantine a VM).
  const uint64_t cache_gen = cache_.generation();
  const uint64_t quarantines = quarantine_changes_.load();
  const PortVm* sender = PortOf(ingress);
  const PortVm* receiver = egress->size() == 1 ? PortOf((*egress)[0]) : nullptr;
  if (sender == nullptr && receiver == nullptr && !AnyChecked(*egress)) return true;
  current_frame_ = bytes;
  FlowId id = IdOf(frame);
  id.hash = Hash(id.key);

  Verdict* sender_entry = nullptr;
  if (sender != nullptr) {
    if (!Judge(sender->vm, ingress, /*sending=*/true, frame, id, bytes.size(), ingress, now_ns,
               reason, &sender_entry)) {
      ++stats_.dropped;
      return false;
    }
  }
  size_t kept = 0;
  Verdict* receiver_entry = nullptr;
  for (size_t i = 0; i < egress->size(); ++i) {
    const uint32_t port = (*egress)[i];
    const PortVm* r = PortOf(port);
    // A unicast frame flooded to a port whose MAC it is not for (the switch
    // has not learned the destination yet) does not concern that VM: its NIC
    // ignores it. Only the addressee (or every member, for broadcast and
    // multicast) judges it.
    if (r != nullptr && (frame.dst.IsMulticast() || frame.dst == r->mac)) {
      std::string why;
      if (!Judge(r->vm, port, /*sending=*/false, frame, id, bytes.size(), ingress, now_ns, &why,
                 &receiver_entry)) {
        ++stats_.pruned;
        if (reason->empty()) *reason = std::move(why);
        continue;
      }
    }
    (*egress)[kept++] = port;
  }
  egress->resize(kept);
  if (kept == 0) {
    ++stats_.dropped;
    return false;
  }
  // Remember a plain pass to one port: cached verdicts on every side that
  // has a manifest, no rate envelope to feed.
  const Vm* vs = sender ? vms_[sender->vm].get() : nullptr;
  const Vm* vr = receiver ? vms_[receiver->vm].get() : nullptr;
  if (fkey != nullptr && options_.front_cache && cache_.generation() == cache_gen &&
      quarantines == front_quarantine_seen_ && quarantine_changes_.load() == quarantines &&
      kept == 1 && egress->size() == 1 &&
      (sender == nullptr || (sender_entry != nullptr && !vs->has_rates)) &&
      (receiver == nullptr || (receiver_entry != nullptr && !vr->has_rates)) &&
      !(sender == nullptr && receiver == nullptr)) {
    CarryUse(slot);  // the entry about to be overwritten may have a newer use
    front_[slot] = Front{{fkey->w[0], fkey->w[1], fkey->w[2]}, now_ns};
    FrontCold& cold = front_cold_[slot];
    cold.sender = sender_entry;
    cold.receiver = receiver_entry;
    if (fkey->is_v6) cold.v6 = {fkey->v6[0], fkey->v6[1], fkey->v6[2]};
  }
  return true;
}

bool ManifestPolicy::AnyChecked(const std::vector<uint32_t>& ports) const {
  for (uint32_t p : ports) {
    if (PortOf(p) != nullptr) return true;
  }
  return false;
}

}  // namespace blackbox
