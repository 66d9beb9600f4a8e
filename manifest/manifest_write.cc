#include <yaml-cpp/yaml.h>

#include <charconv>
#include <map>
#include <string>
#include <vector>

#include "manifest/manifest.h"
#include "manifest/manifest_internal.h"

// ManifestToYaml: a Manifest written as YAML that ParseManifest reads back to an equal one.

namespace blackbox {

// The helpers of manifest_internal.h are used unqualified.
using namespace manifest_internal;  // NOLINT(build/namespaces)

namespace {

std::string FormatAmount(double v) {
  char buf[64];
  auto [p, ec] = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed);
  if (ec != std::errc()) return "0";
  return std::string(buf, p);
}

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

}  // namespace blackbox
