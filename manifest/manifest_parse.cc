#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <string_view>

#include "common/files.h"
#include "manifest/manifest.h"
#include "manifest/manifest_internal.h"

// ParseManifest and LoadManifest: a manifest's YAML (docs/manifest.md) read into a Manifest,
// every error naming the line and the field. The peer words are resolved by PeerResolver
// (manifest.cc); the warnings come from CheckRules (manifest_warnings.cc).

namespace blackbox {

// The helpers of manifest_internal.h are used unqualified.
using namespace manifest_internal;  // NOLINT(build/namespaces)

namespace {

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

bool IsHexSha256(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return std::isxdigit(static_cast<unsigned char>(c));
         });
}

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

}  // namespace

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

}  // namespace blackbox
