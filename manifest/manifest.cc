#include "manifest/manifest.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "common/files.h"

namespace blackbox {

namespace {

constexpr size_t kMaxManifestBytes = 1 << 20;
constexpr size_t kMaxRules = 100000;
// Literal list entries (ports, peers, devices ...), aliases counted each
// time they are used: bounds the work an alias-heavy file can cause.
constexpr size_t kMaxListItems = 1000000;
// Peers after groups are expanded, over all rules, groups and management.
constexpr size_t kMaxExpandedPeers = 4000000;
// Above this many rules the pairwise shadow/overlap checks are skipped.
constexpr size_t kMaxPairwiseRules = 2000;
// Peer and port comparisons the pairwise checks may spend.
constexpr uint64_t kPairwiseBudget = 50000000;
constexpr size_t kMaxWarnings = 100;
// Candidate entries one RuleSet bucket may hold before it is scanned linearly.
constexpr size_t kMaxBucketEntries = 4000000;

struct RespName {
  const char* name;
  Responses bit;
};
constexpr RespName kRespNames[] = {
    {"alert", kRespAlert}, {"drop", kRespDrop},         {"quarantine", kRespQuarantine},
    {"pause", kRespPause}, {"snapshot", kRespSnapshot}, {"poweroff", kRespPowerOff},
};

// User text inside a message: one line, bounded.
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

std::string WarnPrefix(int line) { return "manifest line " + std::to_string(line) + ": "; }

// 1-based line of a node, or `fallback` if it has none.
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

// Digits and dots only ("10.0.0.256", "80"): a mistyped address, not a name.
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

// "5000", "1.5M", "10K": K = 10^3, M = 10^6, G = 10^9.
bool ParseAmount(std::string_view s, double* out) {
  if (s.empty()) return false;
  double mul = 1;
  switch (s.back()) {
    case 'K':
    case 'k':
      mul = 1e3;
      break;
    case 'M':
      mul = 1e6;
      break;
    case 'G':
      mul = 1e9;
      break;
    default:
      break;
  }
  if (mul != 1) s.remove_suffix(1);
  if (s.empty() || !(std::isdigit(static_cast<unsigned char>(s[0])) || s[0] == '.')) return false;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c)) && c != '.' && c != 'e' && c != 'E' &&
        c != '+' && c != '-') {
      return false;
    }
  }
  double v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return false;
  v *= mul;
  if (!std::isfinite(v) || v < 0 || v > 1e15) return false;
  *out = v;
  return true;
}

std::string FormatAmount(double v) {
  char buf[64];
  auto [p, ec] = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed);
  if (ec != std::errc()) return "0";
  return std::string(buf, p);
}

bool IsHexSha256(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return std::isxdigit(static_cast<unsigned char>(c));
         });
}

// Merged, sorted, adjacent ranges joined.
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

bool CidrCovers(const Cidr& a, const Cidr& b) {
  return a.addr.family == b.addr.family && a.prefix <= b.prefix && a.Contains(b.addr);
}

Cidr HostCidr(const IpAddr& ip) {
  Cidr c;
  c.addr = ip;
  c.prefix = ip.family == IpFamily::kIpv4 ? 32 : 128;
  return c;
}

// Parses "ADDR" or "ADDR/PREFIX". On failure `why` says what is wrong and
// `suggestion` holds the network when only host bits are the problem.
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

// An ordered set of peers.
struct PeerSet {
  std::vector<Peer> peers;
  std::unordered_set<std::string> keys;
  bool any = false;
  void Add(const Peer& p) {
    if (p.kind == Peer::Kind::kAny) any = true;
    if (keys.insert(PeerKey(p)).second) peers.push_back(p);
  }
};

struct Ctx {
  size_t items = 0;
  size_t expanded_peers = 0;
  int rules_line = 1;  // of network.rules, for warnings about all rules
};

// Resolves peer words ("any", addresses, CIDRs, groups, VM names).
class PeerResolver {
 public:
  struct Decl {
    YAML::Node value;
    int line = 0;
  };
  explicit PeerResolver(Ctx* ctx) : ctx_(ctx) {}

  std::map<std::string, Decl> decls;                  // groups not yet expanded
  std::map<std::string, std::vector<Peer>> expanded;  // groups expanded

  bool HasGroup(const std::string& name) const {
    return decls.count(name) > 0 || expanded.count(name) > 0;
  }

  // Expands group `name` into `expanded` (members that are groups too).
  Status Expand(const std::string& name) {
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

  // Resolves a scalar or a list of scalars into `out`; `text` gets it as written.
  Status ReadList(const YAML::Node& node, int line, const std::string& field, PeerSet* out,
                  std::string* text) {
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

  Status Word(const std::string& word, int line, const std::string& field, PeerSet* out) {
    Peer p;
    if (word == "any") {
      p.kind = Peer::Kind::kAny;
      return Add(p, line, field, out);
    }
    if (word.rfind("vm:", 0) == 0) {
      std::string name = word.substr(3);
      if (!ValidName(name)) {
        return Err(
            line, field,
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
    bool address_like = word.find('/') != std::string::npos ||
                        word.find(':') != std::string::npos || LooksNumeric(word);
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

 private:
  Status TooManyItems(int line, const std::string& field) {
    return Err(line, field,
               "the manifest has more than " + std::to_string(kMaxListItems) +
                   " list entries (aliases count each time they are used)");
  }
  Status Add(const Peer& p, int line, const std::string& field, PeerSet* out) {
    if (++ctx_->expanded_peers > kMaxExpandedPeers) {
      return Err(
          line, field,
          "more than " + std::to_string(kMaxExpandedPeers) + " peers after expanding groups");
    }
    out->Add(p);
    return Status::Ok();
  }
  Status AddGroup(const std::string& name, int line, const std::string& field, PeerSet* out) {
    RETURN_IF_ERROR(Expand(name));
    for (const Peer& p : expanded.at(name)) RETURN_IF_ERROR(Add(p, line, field, out));
    return Status::Ok();
  }

  Ctx* ctx_;
  std::vector<std::string> stack_;
};

// One key of a mapping.
struct Entry {
  std::string key;
  YAML::Node value;
  int key_line = 0;
  int line = 0;  // of the value; of the key when the value is empty
  bool empty() const { return !value.IsDefined() || value.IsNull(); }
};

struct Fields {
  int line = 0;
  std::vector<Entry> entries;
  const Entry* Find(std::string_view key) const {
    for (const Entry& e : entries) {
      if (e.key == key) return &e;
    }
    return nullptr;
  }
};

std::string Path(const std::string& field, const std::string& key) {
  return field.empty() ? key : field + "." + key;
}

// Reads a mapping whose keys must be among `allowed` (each at most once).
// `line` is the line of the key that owns the mapping.
StatusOr<Fields> ReadMap(const YAML::Node& node, int line, const std::string& field,
                         const std::vector<std::string>& allowed) {
  if (!node.IsMap()) {
    return Err(line, field, "must be a mapping (with keys " + Join(allowed, ", ") + ")");
  }
  Fields f;
  f.line = line;
  for (auto it = node.begin(); it != node.end(); ++it) {
    const YAML::Node k = it->first;  // a copy: it-> returns a temporary
    int key_line = NodeLine(k, line);
    if (!k.IsScalar())
      return Err(key_line, field.empty() ? "top level" : field, "keys must be words");
    std::string key = k.Scalar();
    std::string path = Path(field, Show(key));
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      return Err(key_line, path, "unknown key (allowed: " + Join(allowed, ", ") + ")");
    }
    if (f.Find(key)) return Err(key_line, path, "is given twice");
    Entry e;
    e.key = key;
    e.value = it->second;
    e.key_line = key_line;
    e.line = e.empty() ? key_line : NodeLine(e.value, key_line);
    f.entries.push_back(std::move(e));
  }
  return f;
}

StatusOr<std::string> ReadScalar(const Entry& e, const std::string& field,
                                 const std::string& what) {
  if (e.empty() || !e.value.IsScalar()) return Err(e.line, field, "must be " + what);
  return e.value.Scalar();
}

// Calls fn(item, line, field) for a scalar or for each item of a list.
template <typename Fn>
Status ForEachItem(const YAML::Node& node, int line, const std::string& field, Ctx& ctx,
                   const std::string& what, Fn fn) {
  if (node.IsScalar()) {
    if (++ctx.items > kMaxListItems) return Err(line, field, "too many list entries");
    return fn(node, line, field);
  }
  if (!node.IsSequence()) return Err(line, field, "must be " + what + " or a list of them");
  for (size_t i = 0; i < node.size(); ++i) {
    const YAML::Node& item = node[i];
    int item_line = NodeLine(item, line);
    std::string item_field = field + "[" + std::to_string(i) + "]";
    if (++ctx.items > kMaxListItems) {
      return Err(item_line, item_field,
                 "the manifest has more than " + std::to_string(kMaxListItems) +
                     " list entries (aliases count each time they are used)");
    }
    if (!item.IsScalar()) return Err(item_line, item_field, "must be " + what);
    RETURN_IF_ERROR(fn(item, item_line, item_field));
  }
  return Status::Ok();
}

// allow | deny | a response | a list of responses. `event`: drop and
// quarantine (and so deny) make no sense.
StatusOr<Responses> ReadResponses(const YAML::Node& node, int line, const std::string& field,
                                  Ctx& ctx, bool event) {
  if (!node.IsDefined() || node.IsNull() || (node.IsSequence() && node.size() == 0)) {
    return Err(line, field, "must be allow, deny, or a response or a list of responses");
  }
  Responses r = 0;
  int words = 0;
  bool allow = false;
  int allow_line = line;
  RETURN_IF_ERROR(ForEachItem(
      node, line, field, ctx, "a response",
      [&](const YAML::Node& item, int item_line, const std::string& item_field) -> Status {
        const std::string& w = item.Scalar();
        ++words;
        if (w == "allow") {
          allow = true;
          allow_line = item_line;
          return Status::Ok();
        }
        if (event && (w == "drop" || w == "quarantine" || w == "deny")) {
          return Err(item_line, item_field,
                     Quoted(w) + " makes no sense for an event (there is no flow to " +
                         (w == "quarantine" ? "cut off" : "drop") +
                         "): use allow, alert, pause, snapshot or poweroff");
        }
        if (w == "deny") {
          r |= kRespAlert | kRespDrop;
          return Status::Ok();
        }
        for (const RespName& n : kRespNames) {
          if (w == n.name) {
            r |= n.bit;
            return Status::Ok();
          }
        }
        return Err(item_line, item_field,
                   Quoted(w) +
                       " is not a response (allow, deny, alert, drop, quarantine, "
                       "pause, snapshot, poweroff)");
      }));
  if (allow && words > 1) {
    return Err(allow_line, field, "'allow' cannot be combined with other responses");
  }
  if (r != 0) r |= kRespAlert;
  return r;
}

StatusOr<RateEnvelope> ReadRate(const Entry& e, const std::string& field, Ctx& ctx) {
  ASSIGN_OR_RETURN(Fields f,
                   ReadMap(e.value, e.line, field,
                           {"packets_per_s", "bytes_per_s", "new_connections_per_s", "action"}));
  RateEnvelope env;
  env.line = e.key_line;
  struct Key {
    const char* name;
    double* value;
  } keys[] = {{"packets_per_s", &env.packets_per_s},
              {"bytes_per_s", &env.bytes_per_s},
              {"new_connections_per_s", &env.new_connections_per_s}};
  for (const Key& k : keys) {
    const Entry* v = f.Find(k.name);
    if (!v) continue;
    std::string path = field + "." + k.name;
    const char* what = "a rate: a number, optionally with K, M or G (5M = 5000000)";
    ASSIGN_OR_RETURN(std::string text, ReadScalar(*v, path, what));
    if (!ParseAmount(text, k.value)) {
      return Err(v->line, path, Quoted(text) + " is not " + what);
    }
  }
  if (const Entry* a = f.Find("action")) {
    ASSIGN_OR_RETURN(env.action, ReadResponses(a->value, a->line, field + ".action", ctx, false));
  }
  return env;
}

StatusOr<std::vector<PortRange>> ReadPorts(const Entry& e, const std::string& field, Ctx& ctx,
                                           bool icmp) {
  std::vector<PortRange> ports;
  uint64_t max = icmp ? 255 : 65535;
  const char* unit = icmp ? "type" : "port";
  if (e.value.IsSequence() && e.value.size() == 0) {
    return Err(e.line, field, "is an empty list (leave ports out for any)");
  }
  RETURN_IF_ERROR(ForEachItem(
      e.value, e.line, field, ctx, "a port or a range lo-hi",
      [&](const YAML::Node& item, int line, const std::string& item_field) -> Status {
        const std::string& text = item.Scalar();
        size_t dash = text.find('-');
        std::string lo_text = text.substr(0, dash);
        std::string hi_text = dash == std::string::npos ? lo_text : text.substr(dash + 1);
        uint64_t lo = 0, hi = 0;
        bool lo_ok = ParseUint(lo_text, 1u << 30, &lo), hi_ok = ParseUint(hi_text, 1u << 30, &hi);
        if (!lo_ok || !hi_ok) {
          return Err(line, item_field,
                     Quoted(text) + " is not a " + unit + " or a range lo-hi (like 8000-8080)");
        }
        if (lo > max || hi > max) {
          return Err(line, item_field,
                     Quoted(text) + ": " + std::to_string(std::max(lo, hi)) + " is not " +
                         (icmp ? "an ICMP type (0-255)" : "a port (0-65535)"));
        }
        if (lo > hi) {
          return Err(line, item_field,
                     Quoted(text) + " is not a range: " + std::to_string(lo) + " is above " +
                         std::to_string(hi));
        }
        ports.push_back({static_cast<uint16_t>(lo), static_cast<uint16_t>(hi)});
        return Status::Ok();
      }));
  return ports;
}

StatusOr<std::string> ReadSha256(const Entry& e, const std::string& field) {
  ASSIGN_OR_RETURN(std::string text, ReadScalar(e, field, "a sha256 (64 hex digits)"));
  std::string hex = text.rfind("sha256:", 0) == 0 ? text.substr(7) : text;
  if (!IsHexSha256(hex)) {
    return Err(e.line, field, Quoted(text) + " is not a sha256 (64 hex digits)");
  }
  std::transform(hex.begin(), hex.end(), hex.begin(), [](char c) {
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  });
  return hex;
}

Status ReadBoot(const Entry& e, Manifest& m, Ctx& ctx) {
  ASSIGN_OR_RETURN(Fields f,
                   ReadMap(e.value, e.line, "boot",
                           {"kernel", "initrd", "disks", "cmdline", "machine", "devices"}));
  m.boot.line = e.key_line;
  if (const Entry* k = f.Find("kernel"); k && !k->empty()) {
    ASSIGN_OR_RETURN(m.boot.kernel_sha256, ReadSha256(*k, "boot.kernel"));
  }
  if (const Entry* k = f.Find("initrd"); k && !k->empty()) {
    ASSIGN_OR_RETURN(m.boot.initrd_sha256, ReadSha256(*k, "boot.initrd"));
  }
  if (const Entry* d = f.Find("disks"); d && !d->empty()) {
    if (!d->value.IsMap()) {
      return Err(d->line, "boot.disks", "must be a mapping of disk name to sha256");
    }
    for (auto it = d->value.begin(); it != d->value.end(); ++it) {
      int line = NodeLine(it->first, d->line);
      if (!it->first.IsScalar() || !ValidName(it->first.Scalar())) {
        return Err(line, "boot.disks", "disk names are 1-64 of [A-Za-z0-9_.-]");
      }
      std::string name = it->first.Scalar();
      std::string path = "boot.disks." + name;
      if (m.boot.disks_sha256.count(name)) return Err(line, path, "is given twice");
      Entry v;
      v.value = it->second;
      v.key_line = line;
      v.line = v.empty() ? line : NodeLine(v.value, line);
      ASSIGN_OR_RETURN(m.boot.disks_sha256[name], ReadSha256(v, path));
    }
  }
  if (const Entry* c = f.Find("cmdline"); c && !c->empty()) {
    ASSIGN_OR_RETURN(std::string cmdline, ReadScalar(*c, "boot.cmdline", "a string"));
    m.boot.cmdline = cmdline;
  }
  if (const Entry* c = f.Find("machine"); c && !c->empty()) {
    ASSIGN_OR_RETURN(m.boot.machine,
                     ReadScalar(*c, "boot.machine", "a machine type like pc or q35"));
    if (!ValidName(m.boot.machine)) {
      return Err(c->line, "boot.machine",
                 Quoted(m.boot.machine) + " is not a machine type like pc or q35");
    }
  }
  if (const Entry* d = f.Find("devices"); d && !d->empty()) {
    RETURN_IF_ERROR(ForEachItem(
        d->value, d->line, "boot.devices", ctx, "a device string like \"00:02.0 8086:100e id=n0\"",
        [&](const YAML::Node& item, int line, const std::string& field) -> Status {
          const std::string& s = item.Scalar();
          if (s.empty() || s.find('\n') != std::string::npos) {
            return Err(line, field, "must be one non-empty line like \"00:02.0 8086:100e id=n0\"");
          }
          m.boot.devices.push_back(s);
          return Status::Ok();
        }));
    std::sort(m.boot.devices.begin(), m.boot.devices.end());
  }
  return Status::Ok();
}

Status ReadIdentity(const Entry& e, Manifest& m, Ctx& ctx) {
  ASSIGN_OR_RETURN(Fields f, ReadMap(e.value, e.line, "identity", {"macs", "ips"}));
  if (const Entry* macs = f.Find("macs"); macs && !macs->empty()) {
    RETURN_IF_ERROR(ForEachItem(
        macs->value, macs->line, "identity.macs", ctx, "a MAC address",
        [&](const YAML::Node& item, int line, const std::string& field) -> Status {
          auto mac = MacAddr::Parse(item.Scalar());
          if (!mac.ok()) {
            return Err(line, field,
                       Quoted(item.Scalar()) + " is not a MAC address like 52:54:00:12:34:56");
          }
          m.macs.push_back(*mac);
          return Status::Ok();
        }));
  }
  if (const Entry* ips = f.Find("ips"); ips && !ips->empty()) {
    RETURN_IF_ERROR(ForEachItem(
        ips->value, ips->line, "identity.ips", ctx, "an IP address",
        [&](const YAML::Node& item, int line, const std::string& field) -> Status {
          auto ip = IpAddr::Parse(item.Scalar());
          if (!ip.ok()) {
            return Err(line, field, Quoted(item.Scalar()) + " is not an IPv4 or IPv6 address");
          }
          m.ips.push_back(*ip);
          return Status::Ok();
        }));
  }
  return Status::Ok();
}

Status ReadGroups(const Entry& e, PeerResolver& res) {
  if (e.empty()) return Status::Ok();
  if (!e.value.IsMap()) return Err(e.line, "groups", "must be a mapping of group name to peers");
  for (auto it = e.value.begin(); it != e.value.end(); ++it) {
    int line = NodeLine(it->first, e.line);
    if (!it->first.IsScalar()) return Err(line, "groups", "group names must be words");
    std::string name = it->first.Scalar();
    std::string path = "groups." + Show(name);
    Cidr unused;
    std::string why, suggestion;
    if (!ValidName(name) || name == "any" || LooksNumeric(name) ||
        ParseCidr(name, &unused, &why, &suggestion)) {
      return Err(line, path,
                 Quoted(name) +
                     " cannot be a group name (1-64 of [A-Za-z0-9_.-], not any, "
                     "not an address)");
    }
    if (res.decls.count(name)) return Err(line, path, "is given twice");
    PeerResolver::Decl decl;
    decl.value = it->second;
    decl.line = line;
    if (decl.value.IsNull()) {
      return Err(line, path, "must be a peer or a list of peers ([] for an empty group)");
    }
    res.decls[name] = decl;
  }
  for (const auto& [name, decl] : res.decls) RETURN_IF_ERROR(res.Expand(name));
  return Status::Ok();
}

StatusOr<uint8_t> ReadProto(const Entry& e, const std::string& field) {
  const char* what = "tcp, udp, icmp, icmpv6, any or a protocol number 0-255";
  ASSIGN_OR_RETURN(std::string text, ReadScalar(e, field, what));
  if (text == "any") return uint8_t{0};
  if (text == "tcp") return kIpProtoTcp;
  if (text == "udp") return kIpProtoUdp;
  if (text == "icmp") return kIpProtoIcmp;
  if (text == "icmpv6") return kIpProtoIcmpv6;
  uint64_t n = 0;
  if (ParseUint(text, 255, &n)) return static_cast<uint8_t>(n);
  return Err(e.line, field, Quoted(text) + " is not " + what);
}

std::string ProtoName(uint8_t p) {
  if (p == 0) return "any";
  const char* name = IpProtoName(p);
  return name ? name : std::to_string(p);
}

StatusOr<NetRule> ReadRule(const YAML::Node& node, size_t index, int list_line, PeerResolver& res,
                           Ctx& ctx) {
  std::string field = "network.rules[" + std::to_string(index) + "]";
  int line = NodeLine(node, list_line);
  ASSIGN_OR_RETURN(Fields f,
                   ReadMap(node, line, field,
                           {"name", "direction", "peer", "proto", "ports", "action", "rate"}));
  NetRule r;
  r.line = line;
  r.name = "rule " + std::to_string(index + 1);
  if (const Entry* e = f.Find("name"); e && !e->empty()) {
    ASSIGN_OR_RETURN(r.name, ReadScalar(*e, field + ".name", "a string"));
    bool one_line = std::none_of(r.name.begin(), r.name.end(), [](char c) {
      return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
    });
    if (r.name.empty() || r.name.size() > 128 || !one_line) {
      return Err(e->line, field + ".name", "must be 1-128 characters on one line");
    }
  }
  if (const Entry* e = f.Find("direction"); e && !e->empty()) {
    ASSIGN_OR_RETURN(std::string d, ReadScalar(*e, field + ".direction", "in, out or both"));
    if (d == "in") {
      r.direction = Direction::kIn;
    } else if (d == "out") {
      r.direction = Direction::kOut;
    } else if (d == "both") {
      r.direction = Direction::kBoth;
    } else {
      return Err(e->line, field + ".direction", Quoted(d) + " is not in, out or both");
    }
  }
  if (const Entry* e = f.Find("peer"); e && !e->empty()) {
    PeerSet set;
    RETURN_IF_ERROR(res.ReadList(e->value, e->line, field + ".peer", &set, &r.peer_text));
    if (!set.any) r.peers = std::move(set.peers);
  }
  if (const Entry* e = f.Find("proto"); e && !e->empty()) {
    ASSIGN_OR_RETURN(r.proto, ReadProto(*e, field + ".proto"));
  }
  if (const Entry* e = f.Find("ports"); e && !e->empty()) {
    if (r.proto != kIpProtoTcp && r.proto != kIpProtoUdp && r.proto != kIpProtoIcmp &&
        r.proto != kIpProtoIcmpv6) {
      return Err(e->line, field + ".ports",
                 "ports need proto tcp, udp, icmp or icmpv6 (proto is " + ProtoName(r.proto) + ")");
    }
    bool icmp = r.proto == kIpProtoIcmp || r.proto == kIpProtoIcmpv6;
    ASSIGN_OR_RETURN(r.ports, ReadPorts(*e, field + ".ports", ctx, icmp));
  }
  const Entry* action = f.Find("action");
  if (!action || action->empty()) {
    return Err(action ? action->line : line, field + ".action",
               "is required (allow, deny, or a response or a list of responses)");
  }
  ASSIGN_OR_RETURN(r.action,
                   ReadResponses(action->value, action->line, field + ".action", ctx, false));
  if (const Entry* e = f.Find("rate"); e && !e->empty()) {
    ASSIGN_OR_RETURN(r.rate, ReadRate(*e, field + ".rate", ctx));
  }
  return r;
}

Status ReadNetwork(const Entry& e, Manifest& m, PeerResolver& res, Ctx& ctx) {
  const char* kDefaultRequired =
      "is required: say what happens to a flow no rule matches (allow, deny, or a list of "
      "responses)";
  if (e.empty()) return Err(e.key_line, "network.default", kDefaultRequired);
  ASSIGN_OR_RETURN(Fields f,
                   ReadMap(e.value, e.key_line, "network", {"default", "housekeeping", "rules"}));
  const Entry* def = f.Find("default");
  if (!def || def->empty())
    return Err(def ? def->line : e.key_line, "network.default", kDefaultRequired);
  ASSIGN_OR_RETURN(m.default_action,
                   ReadResponses(def->value, def->line, "network.default", ctx, false));
  m.default_line = def->line;
  if (const Entry* h = f.Find("housekeeping"); h && !h->empty()) {
    ASSIGN_OR_RETURN(std::string text, ReadScalar(*h, "network.housekeeping", "allow or check"));
    if (text == "allow") {
      m.housekeeping_allowed = true;
    } else if (text == "check") {
      m.housekeeping_allowed = false;
    } else {
      return Err(h->line, "network.housekeeping", Quoted(text) + " is not allow or check");
    }
  }
  if (const Entry* rules = f.Find("rules"); rules && !rules->empty()) {
    if (!rules->value.IsSequence())
      return Err(rules->line, "network.rules", "must be a list of rules");
    ctx.rules_line = rules->key_line;
    if (rules->value.size() > kMaxRules) {
      return Err(rules->line, "network.rules",
                 std::to_string(rules->value.size()) + " rules; at most " +
                     std::to_string(kMaxRules) + " are allowed");
    }
    m.rules.reserve(rules->value.size());
    for (size_t i = 0; i < rules->value.size(); ++i) {
      ASSIGN_OR_RETURN(NetRule r, ReadRule(rules->value[i], i, rules->line, res, ctx));
      m.rules.push_back(std::move(r));
    }
  }
  return Status::Ok();
}

Status ReadEvents(const Entry& e, Manifest& m, Ctx& ctx) {
  ASSIGN_OR_RETURN(Fields f, ReadMap(e.value, e.line, "events",
                                     {"guest_panic", "device_change", "guest_shutdown",
                                      "guest_reset", "unexpected_stop"}));
  struct Key {
    const char* name;
    Responses* value;
  } keys[] = {{"guest_panic", &m.events.guest_panic},
              {"device_change", &m.events.device_change},
              {"guest_shutdown", &m.events.guest_shutdown},
              {"guest_reset", &m.events.guest_reset},
              {"unexpected_stop", &m.events.unexpected_stop}};
  for (const Key& k : keys) {
    const Entry* v = f.Find(k.name);
    if (!v) continue;
    ASSIGN_OR_RETURN(*k.value,
                     ReadResponses(v->value, v->line, std::string("events.") + k.name, ctx, true));
  }
  return Status::Ok();
}

Status ReadRoot(const YAML::Node& root, Manifest& m, Ctx& ctx) {
  if (!root.IsMap()) {
    return Err(NodeLine(root, 1), "top level",
               "must be a mapping (manifest: 1, vm: NAME, network: {default: ...})");
  }
  int top_line = NodeLine(root, 1);
  ASSIGN_OR_RETURN(Fields top, ReadMap(root, top_line, "",
                                       {"manifest", "vm", "mode", "identity", "boot", "attestation",
                                        "groups", "management", "network", "rates", "events"}));
  const Entry* version = top.Find("manifest");
  if (!version || version->empty()) {
    return Err(version ? version->line : top_line, "manifest",
               "is required: the format version (manifest: 1)");
  }
  ASSIGN_OR_RETURN(std::string vtext, ReadScalar(*version, "manifest", "the format version 1"));
  uint64_t v = 0;
  if (!ParseUint(vtext, 1u << 30, &v)) {
    return Err(version->line, "manifest",
               Quoted(vtext) + " is not a format version (write manifest: 1)");
  }
  if (v != 1) {
    return Err(
        version->line, "manifest",
        "version " + std::to_string(v) + " is not supported (this Blackbox reads version 1)");
  }
  m.version = 1;

  const Entry* vm = top.Find("vm");
  if (!vm || vm->empty()) {
    return Err(vm ? vm->line : top_line, "vm", "is required: the name of the VM it describes");
  }
  ASSIGN_OR_RETURN(m.vm, ReadScalar(*vm, "vm", "a VM name"));
  if (!ValidName(m.vm))
    return Err(vm->line, "vm", Quoted(m.vm) + " is not a VM name (1-64 of [A-Za-z0-9_.-])");

  if (const Entry* e = top.Find("mode"); e && !e->empty()) {
    ASSIGN_OR_RETURN(std::string mode, ReadScalar(*e, "mode", "observe or enforce"));
    if (mode == "observe") {
      m.mode = ManifestMode::kObserve;
    } else if (mode == "enforce") {
      m.mode = ManifestMode::kEnforce;
    } else {
      return Err(e->line, "mode", Quoted(mode) + " is not observe or enforce");
    }
  }
  if (const Entry* e = top.Find("identity"); e && !e->empty())
    RETURN_IF_ERROR(ReadIdentity(*e, m, ctx));
  if (const Entry* e = top.Find("boot"); e && !e->empty()) RETURN_IF_ERROR(ReadBoot(*e, m, ctx));
  if (const Entry* e = top.Find("attestation"); e && !e->empty()) {
    ASSIGN_OR_RETURN(std::string a, ReadScalar(*e, "attestation", "refuse or alert"));
    if (a == "refuse") {
      m.refuse_on_mismatch = true;
    } else if (a == "alert") {
      m.refuse_on_mismatch = false;
    } else {
      return Err(e->line, "attestation", Quoted(a) + " is not refuse or alert");
    }
  }
  PeerResolver res(&ctx);
  if (const Entry* e = top.Find("groups")) RETURN_IF_ERROR(ReadGroups(*e, res));
  m.groups = res.expanded;
  if (const Entry* e = top.Find("management"); e && !e->empty()) {
    PeerSet set;
    std::string text;
    RETURN_IF_ERROR(res.ReadList(e->value, e->line, "management", &set, &text));
    m.management = set.any ? std::vector<Peer>{Peer{}} : std::move(set.peers);
  }
  const Entry* net = top.Find("network");
  if (!net) {
    return Err(top_line, "network.default",
               "is required: say what happens to a flow no rule matches (allow, deny, or a list "
               "of responses)");
  }
  RETURN_IF_ERROR(ReadNetwork(*net, m, res, ctx));
  if (const Entry* e = top.Find("rates"); e && !e->empty()) {
    ASSIGN_OR_RETURN(m.vm_rate, ReadRate(*e, "rates", ctx));
  }
  if (const Entry* e = top.Find("events"); e && !e->empty())
    RETURN_IF_ERROR(ReadEvents(*e, m, ctx));
  return Status::Ok();
}

// ---- Warnings ----

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

class Warnings {
 public:
  void Add(int line, const std::string& text) {
    if (list_.size() < kMaxWarnings) {
      list_.push_back({line, WarnPrefix(line) + text});
    } else {
      if (more_ == 0) first_more_line_ = line;
      ++more_;
    }
  }
  std::vector<ManifestWarning> Take() {
    if (more_ > 0) {
      list_.push_back({first_more_line_, WarnPrefix(first_more_line_) + "... and " +
                                             std::to_string(more_) + " more warnings"});
    }
    return std::move(list_);
  }

 private:
  std::vector<ManifestWarning> list_;
  size_t more_ = 0;
  int first_more_line_ = 0;
};

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

// ---- Writing ----

std::string PeerWord(const Peer& p, const std::map<std::string, std::vector<Peer>>& groups) {
  switch (p.kind) {
    case Peer::Kind::kAny:
      return "any";
    case Peer::Kind::kCidr:
      return p.cidr.ToString();
    case Peer::Kind::kVm:
      if (p.vm == "any" || LooksNumeric(p.vm) || groups.count(p.vm)) return "vm:" + p.vm;
      return p.vm;
  }
  return "";
}

void EmitResponses(YAML::Emitter& out, Responses r) {
  std::vector<std::string> names = ResponseNames(r);
  if (names.empty()) {
    out << "allow";
  } else if (names.size() == 1) {
    out << names[0];
  } else {
    out << YAML::Flow << YAML::BeginSeq;
    for (const std::string& n : names) out << n;
    out << YAML::EndSeq;
  }
}

void EmitPorts(YAML::Emitter& out, const std::vector<PortRange>& ports) {
  auto word = [](const PortRange& r) {
    return r.lo == r.hi ? std::to_string(r.lo) : std::to_string(r.lo) + "-" + std::to_string(r.hi);
  };
  if (ports.size() == 1) {
    out << word(ports[0]);
    return;
  }
  out << YAML::Flow << YAML::BeginSeq;
  for (const PortRange& r : ports) out << word(r);
  out << YAML::EndSeq;
}

void EmitRate(YAML::Emitter& out, const RateEnvelope& env) {
  out << YAML::BeginMap;
  if (env.packets_per_s != 0)
    out << YAML::Key << "packets_per_s" << YAML::Value << FormatAmount(env.packets_per_s);
  if (env.bytes_per_s != 0)
    out << YAML::Key << "bytes_per_s" << YAML::Value << FormatAmount(env.bytes_per_s);
  if (env.new_connections_per_s != 0) {
    out << YAML::Key << "new_connections_per_s" << YAML::Value
        << FormatAmount(env.new_connections_per_s);
  }
  out << YAML::Key << "action" << YAML::Value;
  EmitResponses(out, env.action);
  out << YAML::EndMap;
}

bool SamePeers(const std::vector<Peer>& a, const std::vector<Peer>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (PeerKey(a[i]) != PeerKey(b[i])) return false;
  }
  return true;
}

// The words of a rule's peer_text, if they still resolve to its peers.
bool PeerTextWords(const NetRule& r, const std::map<std::string, std::vector<Peer>>& groups,
                   std::vector<std::string>* words, bool* list) {
  std::string t = r.peer_text;
  *list = t.size() >= 2 && t.front() == '[' && t.back() == ']';
  if (*list) {
    t = t.substr(1, t.size() - 2);
    size_t start = 0;
    while (start <= t.size()) {
      size_t comma = t.find(',', start);
      std::string w =
          t.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      w.erase(0, w.find_first_not_of(' '));
      w.erase(w.find_last_not_of(' ') + 1);
      if (!w.empty()) words->push_back(w);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  } else {
    words->push_back(t);
  }
  Ctx ctx;
  PeerResolver res(&ctx);
  res.expanded = groups;
  PeerSet set;
  for (const std::string& w : *words) {
    if (!res.Word(w, 0, "", &set).ok()) return false;
  }
  return SamePeers(set.any ? std::vector<Peer>{} : set.peers, r.peers);
}

}  // namespace

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

StatusOr<Manifest> ParseManifest(const std::string& yaml_text,
                                 std::vector<ManifestWarning>* warnings) {
  if (yaml_text.size() > kMaxManifestBytes) {
    return ResourceExhausted("manifest is " + std::to_string(yaml_text.size()) +
                             " bytes, over the limit of " + std::to_string(kMaxManifestBytes));
  }
  Manifest m;
  m.source_text = yaml_text;
  Warnings w;
  try {
    YAML::Node root = YAML::Load(yaml_text);
    Ctx ctx;
    RETURN_IF_ERROR(ReadRoot(root, m, ctx));
    CheckRules(m, ctx.rules_line, w);
  } catch (const YAML::Exception& e) {
    int line = e.mark.is_null() || e.mark.line < 0 ? 1 : e.mark.line + 1;
    return InvalidArgument("manifest line " + std::to_string(line) + ": " + Show(e.msg));
  } catch (const std::exception& e) {
    return InvalidArgument(std::string("manifest: ") + Show(e.what()));
  }
  if (warnings) {
    for (ManifestWarning& x : w.Take()) warnings->push_back(std::move(x));
  }
  return m;
}

StatusOr<Manifest> LoadManifest(const std::string& path, std::vector<ManifestWarning>* warnings) {
  auto text = ReadFileToString(path, kMaxManifestBytes);
  if (!text.ok()) {
    if (text.status().message().rfind(path, 0) == 0) return text.status();
    return text.status().WithContext(path);
  }
  auto m = ParseManifest(*text, warnings);
  if (!m.ok()) return m.status().WithContext(path);
  m->path = path;
  return m;
}

std::string ManifestToYaml(const Manifest& m, const std::vector<std::string>& header) {
  std::string prefix;
  for (const std::string& h : header) {
    size_t start = 0;
    while (true) {
      size_t nl = h.find('\n', start);
      std::string line = h.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
      prefix += line.empty() ? "#\n" : "# " + line + "\n";
      if (nl == std::string::npos) break;
      start = nl + 1;
    }
  }
  auto peer_seq = [&](YAML::Emitter& out, const std::vector<Peer>& peers) {
    out << YAML::Flow << YAML::BeginSeq;
    for (const Peer& p : peers) out << PeerWord(p, m.groups);
    out << YAML::EndSeq;
  };

  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "manifest" << YAML::Value << m.version;
  out << YAML::Key << "vm" << YAML::Value << m.vm;
  out << YAML::Key << "mode" << YAML::Value
      << (m.mode == ManifestMode::kEnforce ? "enforce" : "observe");
  if (!m.macs.empty() || !m.ips.empty()) {
    out << YAML::Key << "identity" << YAML::Value << YAML::BeginMap;
    if (!m.macs.empty()) {
      out << YAML::Key << "macs" << YAML::Value << YAML::Flow << YAML::BeginSeq;
      for (const MacAddr& mac : m.macs) out << mac.ToString();
      out << YAML::EndSeq;
    }
    if (!m.ips.empty()) {
      out << YAML::Key << "ips" << YAML::Value << YAML::Flow << YAML::BeginSeq;
      for (const IpAddr& ip : m.ips) out << ip.ToString();
      out << YAML::EndSeq;
    }
    out << YAML::EndMap;
  }
  const BootChain& b = m.boot;
  if (!b.kernel_sha256.empty() || !b.initrd_sha256.empty() || !b.disks_sha256.empty() ||
      b.cmdline.has_value() || !b.machine.empty() || !b.devices.empty()) {
    out << YAML::Key << "boot" << YAML::Value << YAML::BeginMap;
    if (!b.kernel_sha256.empty()) out << YAML::Key << "kernel" << YAML::Value << b.kernel_sha256;
    if (!b.initrd_sha256.empty()) out << YAML::Key << "initrd" << YAML::Value << b.initrd_sha256;
    if (!b.disks_sha256.empty()) {
      out << YAML::Key << "disks" << YAML::Value << YAML::BeginMap;
      for (const auto& [name, sha] : b.disks_sha256) out << YAML::Key << name << YAML::Value << sha;
      out << YAML::EndMap;
    }
    if (b.cmdline) out << YAML::Key << "cmdline" << YAML::Value << YAML::DoubleQuoted << *b.cmdline;
    if (!b.machine.empty()) out << YAML::Key << "machine" << YAML::Value << b.machine;
    if (!b.devices.empty()) {
      out << YAML::Key << "devices" << YAML::Value << YAML::BeginSeq;
      for (const std::string& d : b.devices) out << YAML::DoubleQuoted << d;
      out << YAML::EndSeq;
    }
    out << YAML::EndMap;
  }
  if (!m.refuse_on_mismatch) out << YAML::Key << "attestation" << YAML::Value << "alert";
  if (!m.groups.empty()) {
    out << YAML::Key << "groups" << YAML::Value << YAML::BeginMap;
    for (const auto& [name, members] : m.groups) {
      out << YAML::Key << name << YAML::Value;
      peer_seq(out, members);
    }
    out << YAML::EndMap;
  }
  if (!m.management.empty()) {
    out << YAML::Key << "management" << YAML::Value;
    peer_seq(out, m.management);
  }
  out << YAML::Key << "network" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "default" << YAML::Value;
  EmitResponses(out, m.default_action);
  if (!m.housekeeping_allowed) out << YAML::Key << "housekeeping" << YAML::Value << "check";
  if (!m.rules.empty()) {
    out << YAML::Key << "rules" << YAML::Value << YAML::BeginSeq;
    for (const NetRule& r : m.rules) {
      out << YAML::BeginMap;
      out << YAML::Key << "name" << YAML::Value << r.name;
      if (r.direction != Direction::kBoth) {
        out << YAML::Key << "direction" << YAML::Value
            << (r.direction == Direction::kIn ? "in" : "out");
      }
      std::vector<std::string> words;
      bool list = false;
      if (!r.peer_text.empty() && PeerTextWords(r, m.groups, &words, &list)) {
        out << YAML::Key << "peer" << YAML::Value;
        if (list) {
          out << YAML::Flow << YAML::BeginSeq;
          for (const std::string& w : words) out << w;
          out << YAML::EndSeq;
        } else {
          out << words[0];
        }
      } else if (!r.peers.empty()) {
        out << YAML::Key << "peer" << YAML::Value;
        peer_seq(out, r.peers);
      }
      if (r.proto != 0) out << YAML::Key << "proto" << YAML::Value << ProtoName(r.proto);
      if (!r.ports.empty()) {
        out << YAML::Key << "ports" << YAML::Value;
        EmitPorts(out, r.ports);
      }
      out << YAML::Key << "action" << YAML::Value;
      EmitResponses(out, r.action);
      if (!r.rate.empty() || r.rate.action != kRespAlert) {
        out << YAML::Key << "rate" << YAML::Value << YAML::Flow;
        EmitRate(out, r.rate);
      }
      out << YAML::EndMap;
    }
    out << YAML::EndSeq;
  }
  out << YAML::EndMap;
  if (!m.vm_rate.empty() || m.vm_rate.action != kRespAlert) {
    out << YAML::Key << "rates" << YAML::Value;
    EmitRate(out, m.vm_rate);
  }
  const EventRules& ev = m.events;
  const EventRules defaults;
  if (ev.guest_panic != defaults.guest_panic || ev.device_change != defaults.device_change ||
      ev.guest_shutdown != defaults.guest_shutdown || ev.guest_reset != defaults.guest_reset ||
      ev.unexpected_stop != defaults.unexpected_stop) {
    out << YAML::Key << "events" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "guest_panic" << YAML::Value;
    EmitResponses(out, ev.guest_panic);
    out << YAML::Key << "device_change" << YAML::Value;
    EmitResponses(out, ev.device_change);
    out << YAML::Key << "guest_shutdown" << YAML::Value;
    EmitResponses(out, ev.guest_shutdown);
    out << YAML::Key << "guest_reset" << YAML::Value;
    EmitResponses(out, ev.guest_reset);
    out << YAML::Key << "unexpected_stop" << YAML::Value;
    EmitResponses(out, ev.unexpected_stop);
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  return prefix + out.c_str() + "\n";
}

// ---- RuleSet ----

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
