#include <algorithm>
#include <string>
#include <unordered_map>
#include <vector>

#include "manifest/manifest.h"
#include "manifest/manifest_internal.h"

// The warnings of ParseManifest: rules that can never match because an earlier one covers
// them, overlapping rules with different actions, rule names used twice.

namespace blackbox::manifest_internal {

namespace {

std::string WarnPrefix(int line) { return "manifest line " + std::to_string(line) + ": "; }

bool CidrCovers(const Cidr& a, const Cidr& b) {
  return a.addr.family == b.addr.family && a.prefix <= b.prefix && a.Contains(b.addr);
}

// A rule reduced to what the pairwise checks compare.
struct Shape {
  uint8_t dirs = 0;
  uint8_t proto = 0;
  std::vector<PortRange> ports;  // merged; the whole domain when the rule names none
  bool all_peers = false;
  std::vector<Cidr> cidrs;
  std::vector<std::string> vms;  // sorted
};

Shape MakeShape(const NetRule& r) {
  Shape s;
  s.dirs = static_cast<uint8_t>(r.direction);
  s.proto = r.proto;
  bool icmp = r.proto == kIpProtoIcmp || r.proto == kIpProtoIcmpv6;
  s.ports = r.ports.empty() ? std::vector<PortRange>{{0, static_cast<uint16_t>(icmp ? 255 : 65535)}}
                            : MergePorts(r.ports);
  bool v4_all = false, v6_all = false;
  s.all_peers = r.peers.empty();
  for (const Peer& p : r.peers) {
    if (p.kind == Peer::Kind::kAny) s.all_peers = true;
    if (p.kind == Peer::Kind::kVm) s.vms.push_back(p.vm);
    if (p.kind == Peer::Kind::kCidr) {
      s.cidrs.push_back(p.cidr);
      if (p.cidr.prefix == 0) (p.cidr.addr.family == IpFamily::kIpv4 ? v4_all : v6_all) = true;
    }
  }
  if (v4_all && v6_all) s.all_peers = true;
  std::sort(s.vms.begin(), s.vms.end());
  return s;
}

bool PortsCover(const std::vector<PortRange>& a, const std::vector<PortRange>& b) {
  size_t i = 0;
  for (const PortRange& r : b) {
    while (i < a.size() && a[i].hi < r.lo) ++i;
    if (i == a.size() || a[i].lo > r.lo || a[i].hi < r.hi) return false;
  }
  return true;
}

bool PortsIntersect(const std::vector<PortRange>& a, const std::vector<PortRange>& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (a[i].hi < b[j].lo) {
      ++i;
    } else if (b[j].hi < a[i].lo) {
      ++j;
    } else {
      return true;
    }
  }
  return false;
}

bool PeersCover(const Shape& a, const Shape& b, uint64_t* work) {
  if (a.all_peers) return true;
  if (b.all_peers) return false;
  for (const Cidr& c : b.cidrs) {
    *work += a.cidrs.size();
    if (std::none_of(a.cidrs.begin(), a.cidrs.end(),
                     [&](const Cidr& x) { return CidrCovers(x, c); })) {
      return false;
    }
  }
  *work += b.vms.size();
  return std::includes(a.vms.begin(), a.vms.end(), b.vms.begin(), b.vms.end());
}

// Only what is known without the lab: a VM and a CIDR are not assumed to meet.
bool PeersIntersect(const Shape& a, const Shape& b, uint64_t* work) {
  if (a.all_peers || b.all_peers) return true;
  for (const Cidr& c : b.cidrs) {
    *work += a.cidrs.size();
    for (const Cidr& x : a.cidrs) {
      if (CidrCovers(x, c) || CidrCovers(c, x)) return true;
    }
  }
  *work += a.vms.size() + b.vms.size();
  size_t i = 0, j = 0;
  while (i < a.vms.size() && j < b.vms.size()) {
    if (a.vms[i] == b.vms[j]) return true;
    a.vms[i] < b.vms[j] ? ++i : ++j;
  }
  return false;
}

bool Covers(const Shape& a, const Shape& b, uint64_t* work) {
  ++*work;
  return (a.dirs & b.dirs) == b.dirs && (a.proto == 0 || a.proto == b.proto) &&
         PortsCover(a.ports, b.ports) && PeersCover(a, b, work);
}

bool Intersect(const Shape& a, const Shape& b, uint64_t* work) {
  ++*work;
  return (a.dirs & b.dirs) != 0 && (a.proto == 0 || b.proto == 0 || a.proto == b.proto) &&
         PortsIntersect(a.ports, b.ports) && PeersIntersect(a, b, work);
}

}  // namespace

void Warnings::Add(int line, const std::string& text) {
  if (list_.size() < kMaxWarnings) {
    list_.push_back({line, WarnPrefix(line) + text});
  } else {
    if (more_ == 0) first_more_line_ = line;
    ++more_;
  }
}

std::vector<ManifestWarning> Warnings::Take() {
  if (more_ > 0) {
    list_.push_back({first_more_line_, WarnPrefix(first_more_line_) + "... and " +
                                           std::to_string(more_) + " more warnings"});
  }
  return std::move(list_);
}

void CheckRules(const Manifest& m, int rules_line, Warnings& w) {
  std::unordered_map<std::string, int> names;
  for (const NetRule& r : m.rules) {
    auto [it, fresh] = names.emplace(r.name, r.line);
    if (!fresh) {
      w.Add(r.line, "rule name " + Quoted(r.name) + " is also used by the rule at line " +
                        std::to_string(it->second));
    }
  }
  if (m.rules.size() > kMaxPairwiseRules) {
    w.Add(rules_line, "network.rules: " + std::to_string(m.rules.size()) +
                          " rules: the checks for rules that can never match or that overlap are "
                          "skipped above " +
                          std::to_string(kMaxPairwiseRules) + " rules");
    return;
  }
  std::vector<Shape> shapes;
  shapes.reserve(m.rules.size());
  for (const NetRule& r : m.rules) shapes.push_back(MakeShape(r));
  uint64_t work = 0;
  for (size_t j = 1; j < m.rules.size(); ++j) {
    if (work > kPairwiseBudget) {
      w.Add(m.rules[j].line,
            "the checks for rules that can never match or that overlap stopped "
            "at rule " +
                Quoted(m.rules[j].name) + " (too many comparisons)");
      return;
    }
    const NetRule& rj = m.rules[j];
    bool shadowed = false;
    for (size_t i = 0; i < j && !shadowed; ++i) {
      if (Covers(shapes[i], shapes[j], &work)) {
        w.Add(rj.line, "rule " + Quoted(rj.name) + " can never match: rule " +
                           Quoted(m.rules[i].name) + " (line " + std::to_string(m.rules[i].line) +
                           ") covers it");
        shadowed = true;
      }
    }
    if (shadowed) continue;
    for (size_t i = 0; i < j; ++i) {
      if (m.rules[i].action == rj.action) continue;
      if (Intersect(shapes[i], shapes[j], &work) && !Covers(shapes[j], shapes[i], &work)) {
        w.Add(rj.line, "rule " + Quoted(rj.name) + " overlaps rule " + Quoted(m.rules[i].name) +
                           " (line " + std::to_string(m.rules[i].line) +
                           "), which wins where both match");
        break;
      }
    }
  }
}

}  // namespace blackbox::manifest_internal
