#include "manifest/manifest.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <string_view>

#include "manifest/manifest_internal.h"

// The vocabulary the manifest code shares (manifest_internal.h: messages, numbers, CIDRs, peer
// words) and the small public functions of manifest.h. Reading YAML is in manifest_parse.cc,
// the warnings pass in manifest_warnings.cc, writing YAML in manifest_write.cc, RuleSet in
// rule_set.cc.

namespace blackbox {
namespace manifest_internal {

std::string Show(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 80)) {
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
  }
  if (s.size() > 80) out += "...";
  return out;
}
std::string Quoted(std::string_view s) { return "'" + Show(s) + "'"; }

std::string Join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += sep;
    out += v[i];
  }
  return out;
}

Status Err(int line, const std::string& field, const std::string& what) {
  return InvalidArgument("manifest line " + std::to_string(line) + ": " + field + ": " + what);
}

int NodeLine(const YAML::Node& n, int fallback) {
  if (!n.IsDefined()) return fallback;
  YAML::Mark mark = n.Mark();
  return mark.line >= 0 ? mark.line + 1 : fallback;
}

bool ValidName(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') {
      return false;
    }
  }
  return true;
}

bool LooksNumeric(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c)) || c == '.';
  });
}

bool ParseUint(std::string_view s, uint64_t max, uint64_t* out) {
  if (s.empty() || s.size() > 12) return false;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v > max) return false;
  *out = v;
  return true;
}

std::vector<PortRange> MergePorts(std::vector<PortRange> v) {
  std::sort(v.begin(), v.end(), [](const PortRange& a, const PortRange& b) { return a.lo < b.lo; });
  std::vector<PortRange> out;
  for (const PortRange& r : v) {
    if (!out.empty() && uint32_t{r.lo} <= uint32_t{out.back().hi} + 1) {
      out.back().hi = std::max(out.back().hi, r.hi);
    } else {
      out.push_back(r);
    }
  }
  return out;
}

bool ParseCidr(const std::string& text, Cidr* out, std::string* why, std::string* suggestion) {
  size_t slash = text.find('/');
  std::string addr_text = text.substr(0, slash);
  auto addr = IpAddr::Parse(addr_text);
  if (!addr.ok()) {
    *why = "not an IP address";
    return false;
  }
  int max = addr->family == IpFamily::kIpv4 ? 32 : 128;
  int prefix = max;
  if (slash != std::string::npos) {
    uint64_t p = 0;
    if (!ParseUint(std::string_view(text).substr(slash + 1), 1000, &p)) {
      *why = "the prefix after '/' is not a number";
      return false;
    }
    if (p > static_cast<uint64_t>(max)) {
      *why = std::string(max == 32 ? "an IPv4" : "an IPv6") + " prefix is at most /" +
             std::to_string(max);
      return false;
    }
    prefix = static_cast<int>(p);
  }
  Cidr c;
  c.addr = *addr;
  c.prefix = prefix;
  // Clear the host bits and compare.
  Cidr net = c;
  for (int i = 0; i < 16; ++i) {
    int bits = std::clamp(prefix - i * 8, 0, 8);
    net.addr.bytes[i] &= static_cast<uint8_t>(0xFF00 >> bits);
  }
  if (!(net.addr == c.addr)) {
    *why = "host bits set";
    *suggestion = net.ToString();
    return false;
  }
  *out = c;
  return true;
}

std::string PeerKey(const Peer& p) {
  switch (p.kind) {
    case Peer::Kind::kAny:
      return "*";
    case Peer::Kind::kVm:
      return "v" + p.vm;
    case Peer::Kind::kCidr:
      return "c" + p.cidr.ToString();
  }
  return "";
}

std::string ProtoName(uint8_t p) {
  if (p == 0) return "any";
  const char* name = IpProtoName(p);
  return name ? name : std::to_string(p);
}

// ---- PeerResolver ----

Status PeerResolver::Expand(const std::string& name) {
  if (expanded.count(name)) return Status::Ok();
  const Decl& decl = decls.at(name);
  auto pos = std::find(stack_.begin(), stack_.end(), name);
  if (pos != stack_.end()) {
    std::vector<std::string> cycle(pos, stack_.end());
    cycle.push_back(name);
    return Err(decl.line, "groups." + Show(name), "groups form a cycle: " + Join(cycle, " -> "));
  }
  stack_.push_back(name);
  PeerSet set;
  std::string text;
  Status s = ReadList(decl.value, decl.line, "groups." + Show(name), &set, &text);
  stack_.pop_back();
  RETURN_IF_ERROR(s);
  std::vector<Peer> members = set.any ? std::vector<Peer>{Peer{}} : std::move(set.peers);
  expanded[name] = std::move(members);
  return Status::Ok();
}

Status PeerResolver::ReadList(const YAML::Node& node, int line, const std::string& field,
                              PeerSet* out, std::string* text) {
  if (node.IsScalar()) {
    *text = node.Scalar();
    if (++ctx_->items > kMaxListItems) return TooManyItems(line, field);
    return Word(node.Scalar(), line, field, out);
  }
  if (!node.IsSequence()) {
    return Err(line, field,
               "must be a peer or a list of peers (VM names, addresses, CIDRs, "
               "groups or any)");
  }
  std::vector<std::string> words;
  for (size_t i = 0; i < node.size(); ++i) {
    const YAML::Node& item = node[i];
    int item_line = NodeLine(item, line);
    std::string item_field = field + "[" + std::to_string(i) + "]";
    if (++ctx_->items > kMaxListItems) return TooManyItems(item_line, item_field);
    if (!item.IsScalar()) return Err(item_line, item_field, "must be a peer (a single word)");
    words.push_back(item.Scalar());
    RETURN_IF_ERROR(Word(item.Scalar(), item_line, item_field, out));
  }
  *text = "[" + Join(words, ", ") + "]";
  return Status::Ok();
}

Status PeerResolver::Word(const std::string& word, int line, const std::string& field,
                          PeerSet* out) {
  Peer p;
  if (word == "any") {
    p.kind = Peer::Kind::kAny;
    return Add(p, line, field, out);
  }
  if (word.rfind("vm:", 0) == 0) {
    std::string name = word.substr(3);
    if (!ValidName(name)) {
      return Err(line, field,
                 Quoted(word) + ": " + Quoted(name) + " is not a VM name (1-64 of [A-Za-z0-9_.-])");
    }
    p.kind = Peer::Kind::kVm;
    p.vm = name;
    return Add(p, line, field, out);
  }
  if (word.rfind("group:", 0) == 0) {
    std::string name = word.substr(6);
    if (!HasGroup(name)) {
      return Err(line, field,
                 Quoted(word) + ": there is no group " + Quoted(name) + " under groups");
    }
    return AddGroup(name, line, field, out);
  }
  std::string why, suggestion;
  if (ParseCidr(word, &p.cidr, &why, &suggestion)) {
    p.kind = Peer::Kind::kCidr;
    return Add(p, line, field, out);
  }
  if (!suggestion.empty()) {
    return Err(line, field, Quoted(word) + ": host bits set; did you mean " + suggestion + "?");
  }
  bool address_like = word.find('/') != std::string::npos || word.find(':') != std::string::npos ||
                      LooksNumeric(word);
  if (!address_like) {
    if (HasGroup(word)) return AddGroup(word, line, field, out);
    if (ValidName(word)) {
      p.kind = Peer::Kind::kVm;
      p.vm = word;
      return Add(p, line, field, out);
    }
  }
  std::string what = Quoted(word) + " is not an IP address, CIDR, group or VM name";
  if (address_like && why != "not an IP address") what += " (" + why + ")";
  return Err(line, field, what);
}

Status PeerResolver::TooManyItems(int line, const std::string& field) {
  return Err(line, field,
             "the manifest has more than " + std::to_string(kMaxListItems) +
                 " list entries (aliases count each time they are used)");
}

Status PeerResolver::Add(const Peer& p, int line, const std::string& field, PeerSet* out) {
  if (++ctx_->expanded_peers > kMaxExpandedPeers) {
    return Err(line, field,
               "more than " + std::to_string(kMaxExpandedPeers) + " peers after expanding groups");
  }
  out->Add(p);
  return Status::Ok();
}

Status PeerResolver::AddGroup(const std::string& name, int line, const std::string& field,
                              PeerSet* out) {
  RETURN_IF_ERROR(Expand(name));
  for (const Peer& p : expanded.at(name)) RETURN_IF_ERROR(Add(p, line, field, out));
  return Status::Ok();
}

}  // namespace manifest_internal

// The helpers above and those of manifest_internal.h are used unqualified.
using namespace manifest_internal;  // NOLINT(build/namespaces)

// ---- Public functions ----

std::string ResponsesToString(Responses r) {
  if (r == 0) return "allow";
  return Join(ResponseNames(r), ", ");
}

std::vector<std::string> ResponseNames(Responses r) {
  std::vector<std::string> out;
  for (const RespName& n : kRespNames) {
    if (r & n.bit) out.push_back(n.name);
  }
  return out;
}

bool Cidr::Contains(const IpAddr& ip) const {
  if (ip.family != addr.family || addr.family == IpFamily::kNone) return false;
  int full = prefix >> 3;
  if (full > 0 && std::memcmp(ip.bytes.data(), addr.bytes.data(), full) != 0) return false;
  int rem = prefix & 7;
  if (rem == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xFF00 >> rem);
  return (ip.bytes[full] & mask) == addr.bytes[full];
}

std::string Cidr::ToString() const {
  int host = addr.family == IpFamily::kIpv4 ? 32 : 128;
  if (prefix == host) return addr.ToString();
  return addr.ToString() + "/" + std::to_string(prefix);
}

StatusOr<Cidr> Cidr::Parse(const std::string& text) {
  Cidr c;
  std::string why, suggestion;
  if (ParseCidr(text, &c, &why, &suggestion)) return c;
  if (!suggestion.empty()) {
    return InvalidArgument(Quoted(text) + ": host bits set; did you mean " + suggestion + "?");
  }
  return InvalidArgument(Quoted(text) + " is not an IP address or CIDR (" + why + ")");
}

std::string Peer::ToString() const {
  switch (kind) {
    case Kind::kAny:
      return "any";
    case Kind::kVm:
      return vm;
    case Kind::kCidr:
      return cidr.ToString();
  }
  return "";
}

const char* IpProtoName(uint8_t proto) {
  switch (proto) {
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

bool IsHousekeeping(const ParsedFrame& f) {
  if (f.l3 == ParsedFrame::L3::kArp) return true;
  if (f.l4 != ParsedFrame::L4::kIcmpv6) return false;
  const uint8_t t = f.transport.icmp_type;
  return (t >= 133 && t <= 137) || (t >= 130 && t <= 132) || t == 143;
}

}  // namespace blackbox
