#include <algorithm>
#include <numeric>
#include <vector>

#include "manifest/manifest.h"
#include "manifest/manifest_internal.h"

// RuleSet: a manifest's rules compiled for first-match evaluation, indexed by direction,
// protocol class and service port.

namespace blackbox {

// The helpers of manifest_internal.h are used unqualified.
using namespace manifest_internal;  // NOLINT(build/namespaces)

namespace {

Cidr HostCidr(const IpAddr& ip) {
  Cidr c;
  c.addr = ip;
  c.prefix = ip.family == IpFamily::kIpv4 ? 32 : 128;
  return c;
}

}  // namespace

int RuleSet::ProtoClass(uint8_t proto) {
  switch (proto) {
    case kIpProtoTcp:
      return 0;
    case kIpProtoUdp:
      return 1;
    case kIpProtoIcmp:
      return 2;
    case kIpProtoIcmpv6:
      return 3;
    default:
      return 4;
  }
}

bool RuleSet::CompiledRule::Matches(const FlowFacts& f) const {
  if ((directions & static_cast<uint8_t>(f.direction)) == 0) return false;
  if (proto != 0 && proto != f.proto) return false;
  if (!ports.empty()) {
    bool in = false;
    for (const PortRange& r : ports) {
      if (f.service_port >= r.lo && f.service_port <= r.hi) {
        in = true;
        break;
      }
    }
    if (!in) return false;
  }
  if (any_peer) return true;
  for (const Cidr& c : peers) {
    if (c.Contains(f.peer)) return true;
  }
  return false;
}

RuleSet RuleSet::Compile(const Manifest& m, const VmAddresses& vms) {
  RuleSet rs;
  rs.default_action_ = m.default_action;
  rs.rules_.reserve(m.rules.size());
  auto resolve = [&](const std::vector<Peer>& peers, bool* any, std::vector<Cidr>* out) {
    for (const Peer& p : peers) {
      switch (p.kind) {
        case Peer::Kind::kAny:
          *any = true;
          break;
        case Peer::Kind::kCidr:
          out->push_back(p.cidr);
          break;
        case Peer::Kind::kVm:
          if (auto it = vms.find(p.vm); it != vms.end()) {
            for (const IpAddr& ip : it->second) {
              if (ip.family != IpFamily::kNone) out->push_back(HostCidr(ip));
            }
          }
          break;
      }
    }
    if (*any) out->clear();
  };
  for (const NetRule& r : m.rules) {
    CompiledRule c;
    c.directions = static_cast<uint8_t>(r.direction);
    c.proto = r.proto;
    c.ports = MergePorts(r.ports);
    c.action = r.action;
    c.any_peer = r.peers.empty();
    resolve(r.peers, &c.any_peer, &c.peers);
    rs.rules_.push_back(std::move(c));
  }

  for (int d = 0; d < 2; ++d) {
    uint8_t dir_bit = static_cast<uint8_t>(d == 0 ? Direction::kIn : Direction::kOut);
    for (int cls = 0; cls < kProtoClasses; ++cls) {
      Bucket& b = rs.buckets_[d][cls];
      // A rule that matches every flow of this bucket within its ports ends
      // the candidate lists it reaches: nothing after it can win there.
      auto always = [&](const CompiledRule& r) {
        return r.any_peer && (cls != kProtoClasses - 1 || r.proto == 0);
      };
      for (uint32_t id = 0; id < rs.rules_.size(); ++id) {
        const CompiledRule& r = rs.rules_[id];
        if ((r.directions & dir_bit) == 0) continue;
        if (r.proto != 0 && ProtoClass(r.proto) != cls) continue;
        if (!r.any_peer && r.peers.empty()) continue;  // only unknown VMs: never matches
        b.all.push_back(id);
        if (always(r) && r.ports.empty()) break;
      }
      std::vector<uint32_t>& starts = b.starts;
      starts.push_back(0);
      for (uint32_t id : b.all) {
        for (const PortRange& p : rs.rules_[id].ports) {
          starts.push_back(p.lo);
          if (p.hi < 65535) starts.push_back(uint32_t{p.hi} + 1);
        }
      }
      std::sort(starts.begin(), starts.end());
      starts.erase(std::unique(starts.begin(), starts.end()), starts.end());
      const uint32_t n = static_cast<uint32_t>(starts.size());
      b.rules.assign(n, {});
      // next[i]: the first interval at or after i still open to candidates.
      std::vector<uint32_t> next(n + 1);
      std::iota(next.begin(), next.end(), 0u);
      auto find = [&](uint32_t x) {
        uint32_t root = x;
        while (next[root] != root) root = next[root];
        while (next[x] != root) {
          uint32_t up = next[x];
          next[x] = root;
          x = up;
        }
        return root;
      };
      auto index_of = [&](uint32_t port) {
        return static_cast<uint32_t>(std::lower_bound(starts.begin(), starts.end(), port) -
                                     starts.begin());
      };
      size_t total = 0;
      bool too_big = false;
      for (uint32_t id : b.all) {
        const CompiledRule& r = rs.rules_[id];
        const bool closes = always(r);
        auto cover = [&](uint32_t from, uint32_t to) {
          for (uint32_t i = find(from); i < to; i = find(i + 1)) {
            b.rules[i].push_back(id);
            if (++total > kMaxBucketEntries) {
              too_big = true;
              return;
            }
            if (closes) next[i] = i + 1;
          }
        };
        if (r.ports.empty()) {
          cover(0, n);
        } else {
          for (const PortRange& p : r.ports) {
            cover(index_of(p.lo), p.hi == 65535 ? n : index_of(uint32_t{p.hi} + 1));
            if (too_big) break;
          }
        }
        if (too_big) break;
      }
      if (too_big) {
        b.linear = true;
        std::vector<uint32_t>().swap(b.starts);
        std::vector<std::vector<uint32_t>>().swap(b.rules);
      }
    }
  }

  resolve(m.management, &rs.any_management_, &rs.management_);
  return rs;
}

RuleSet::Verdict RuleSet::Evaluate(const FlowFacts& flow) const {
  int d;
  if (flow.direction == Direction::kIn) {
    d = 0;
  } else if (flow.direction == Direction::kOut) {
    d = 1;
  } else {
    return EvaluateLinear(flow);
  }
  const int cls = ProtoClass(flow.proto);
  const Bucket& b = buckets_[d][cls];
  if (b.linear) {
    for (uint32_t id : b.all) {
      if (rules_[id].Matches(flow)) return {static_cast<int>(id), rules_[id].action};
    }
  } else if (!b.starts.empty()) {
    // The last interval starting at or below the port (starts[0] is 0);
    // branch-free, as the probes are unpredictable.
    const uint32_t port = flow.service_port;
    const uint32_t* base = b.starts.data();
    for (size_t n = b.starts.size(); n > 1;) {
      const size_t half = n / 2;
      base = base[half] <= port ? base + half : base;
      n -= half;
    }
    const std::vector<uint32_t>& candidates = b.rules[base - b.starts.data()];
    // The bucket guarantees direction and protocol class, the interval the
    // port: what is left is the exact protocol (class "other") and the peer.
    const bool other = cls == kProtoClasses - 1;
    for (uint32_t id : candidates) {
      const CompiledRule& r = rules_[id];
      if (other && r.proto != 0 && r.proto != flow.proto) continue;
      if (r.any_peer) return {static_cast<int>(id), r.action};
      for (const Cidr& c : r.peers) {
        if (c.Contains(flow.peer)) return {static_cast<int>(id), r.action};
      }
    }
  }
  return {-1, default_action_};
}

RuleSet::Verdict RuleSet::EvaluateLinear(const FlowFacts& flow) const {
  for (size_t i = 0; i < rules_.size(); ++i) {
    if (rules_[i].Matches(flow)) return {static_cast<int>(i), rules_[i].action};
  }
  return {-1, default_action_};
}

bool RuleSet::IsManagement(const IpAddr& ip) const {
  if (any_management_) return true;
  for (const Cidr& c : management_) {
    if (c.Contains(ip)) return true;
  }
  return false;
}

}  // namespace blackbox
