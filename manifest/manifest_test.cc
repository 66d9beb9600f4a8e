#include "manifest/manifest.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "common/files.h"

namespace blackbox {
namespace {

constexpr const char* kKernelSha =
    "8254c329a92850f6d539dd376f4816ee2764517da5e0235514af433164480d7a";
constexpr const char* kInitrdSha =
    "de7d1b721a1e0632b7cf04edf5032c8ecffa9f9a08492152b926f1a5a7e765d7";
constexpr const char* kDiskSha = "18ac3e7343f016890c510e93f935261169d9e3f565436429830faf0934f4f8e4";

// The example of docs/manifest.md.
const std::string kExample = R"(# The web server of the shop lab.
manifest: 1                 # format version: required, must be 1
vm: web                     # required: the VM it describes (its spec's name)
mode: enforce               # observe (default) | enforce
identity:                   # informational; the switch enforces the spec's MACs/IPs
  macs: [52:54:00:00:10:01]
  ips: [10.0.0.1, fe80::1]
boot:                       # attested before QEMU starts; every item optional
  kernel: sha256:8254C329A92850F6D539DD376F4816EE2764517DA5E0235514AF433164480D7A
  initrd: de7d1b721a1e0632b7cf04edf5032c8ecffa9f9a08492152b926f1a5a7e765d7
  disks: {data: 18ac3e7343f016890c510e93f935261169d9e3f565436429830faf0934f4f8e4}
  cmdline: "console=ttyS0 quiet bb.role=http-server"
  machine: pc
  devices: ["00:02.0 8086:100e id=n0", "00:00.0 8086:1237", "00:01.0 8086:7000"]
attestation: refuse         # refuse (default) | alert
groups:                     # named peer lists; a group may name other groups
  admins: [10.0.9.0/24, ops]
  clients: [10.0.1.0/24, client, "2001:db8:1::/48"]
management: [admins, 10.0.0.254]   # what a quarantined VM still reaches
network:
  default: [alert, drop]    # required: what a flow no rule matches gets
  housekeeping: allow       # allow (default) | check
  rules:                    # first match wins
    - name: http-in
      direction: in
      peer: clients
      proto: tcp
      ports: [80, 8000-8080]
      action: allow
      rate: {packets_per_s: 2000, bytes_per_s: 5M, new_connections_per_s: 50, action: alert}
    - name: ssh-admin
      direction: in
      peer: [admins, vm:bastion]
      proto: tcp
      ports: 22
      action: allow
    - name: dns
      direction: out
      peer: 10.0.0.53
      proto: udp
      ports: 53
      action: allow
    - name: ping            # echo requests and replies, either direction
      proto: icmp
      ports: [0, 8]         # ICMP types
      action: allow
    - direction: out        # unnamed: "rule 5"
      proto: tcp
      ports: 25
      action: [drop, snapshot]
rates:                      # the whole VM, frames sent plus received
  packets_per_s: 5000
  bytes_per_s: 1.5M
  new_connections_per_s: 100
  action: [alert, drop]
events:
  guest_panic: [alert, snapshot]
  device_change: alert
  guest_shutdown: allow
  guest_reset: alert
  unexpected_stop: pause
)";

// 1-based line of the first occurrence of `needle`.
int LineOf(const std::string& text, const std::string& needle) {
  size_t pos = text.find(needle);
  EXPECT_NE(pos, std::string::npos) << needle;
  return 1 + static_cast<int>(std::count(text.begin(), text.begin() + pos, '\n'));
}

IpAddr Ip(const std::string& s) {
  auto ip = IpAddr::Parse(s);
  EXPECT_TRUE(ip.ok()) << s;
  return ip.ok() ? *ip : IpAddr{};
}

Cidr C(const std::string& s) {
  auto c = Cidr::Parse(s);
  EXPECT_TRUE(c.ok()) << s << ": " << c.status().ToString();
  return c.ok() ? *c : Cidr{};
}

Peer VmPeer(const std::string& name) {
  Peer p;
  p.kind = Peer::Kind::kVm;
  p.vm = name;
  return p;
}
Peer CidrPeer(const std::string& text) {
  Peer p;
  p.kind = Peer::Kind::kCidr;
  p.cidr = C(text);
  return p;
}

std::vector<std::string> PeerStrings(const std::vector<Peer>& peers) {
  std::vector<std::string> out;
  for (const Peer& p : peers) {
    out.push_back((p.kind == Peer::Kind::kVm ? "vm " : "") + p.ToString());
  }
  return out;
}

Manifest MustParse(const std::string& text, std::vector<ManifestWarning>* warnings = nullptr) {
  auto m = ParseManifest(text, warnings);
  EXPECT_TRUE(m.ok()) << m.status().ToString() << "\n" << text;
  return m.ok() ? *m : Manifest{};
}

std::string Error(const std::string& text) {
  auto m = ParseManifest(text, nullptr);
  if (m.ok()) return "(parsed)";
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument) << m.status().ToString();
  EXPECT_EQ(m.status().message().find('\n'), std::string::npos) << m.status().message();
  return m.status().message();
}

void ExpectSameRate(const RateEnvelope& a, const RateEnvelope& b, const std::string& what) {
  EXPECT_EQ(a.packets_per_s, b.packets_per_s) << what;
  EXPECT_EQ(a.bytes_per_s, b.bytes_per_s) << what;
  EXPECT_EQ(a.new_connections_per_s, b.new_connections_per_s) << what;
  EXPECT_EQ(a.action, b.action) << what;
}

// Every field but lines, source text and path.
void ExpectSameManifest(const Manifest& a, const Manifest& b) {
  EXPECT_EQ(a.version, b.version);
  EXPECT_EQ(a.vm, b.vm);
  EXPECT_EQ(a.mode, b.mode);
  EXPECT_EQ(a.macs, b.macs);
  EXPECT_EQ(a.ips, b.ips);
  EXPECT_EQ(a.boot.kernel_sha256, b.boot.kernel_sha256);
  EXPECT_EQ(a.boot.initrd_sha256, b.boot.initrd_sha256);
  EXPECT_EQ(a.boot.disks_sha256, b.boot.disks_sha256);
  EXPECT_EQ(a.boot.cmdline, b.boot.cmdline);
  EXPECT_EQ(a.boot.machine, b.boot.machine);
  EXPECT_EQ(a.boot.devices, b.boot.devices);
  EXPECT_EQ(a.refuse_on_mismatch, b.refuse_on_mismatch);
  ASSERT_EQ(a.groups.size(), b.groups.size());
  for (const auto& [name, members] : a.groups) {
    ASSERT_TRUE(b.groups.count(name)) << name;
    EXPECT_EQ(PeerStrings(members), PeerStrings(b.groups.at(name))) << name;
  }
  EXPECT_EQ(PeerStrings(a.management), PeerStrings(b.management));
  ASSERT_EQ(a.rules.size(), b.rules.size());
  for (size_t i = 0; i < a.rules.size(); ++i) {
    const NetRule& x = a.rules[i];
    const NetRule& y = b.rules[i];
    SCOPED_TRACE("rule " + std::to_string(i));
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.direction, y.direction);
    EXPECT_EQ(PeerStrings(x.peers), PeerStrings(y.peers));
    EXPECT_EQ(x.peer_text, y.peer_text);
    EXPECT_EQ(x.proto, y.proto);
    EXPECT_EQ(x.ports, y.ports);
    EXPECT_EQ(x.action, y.action);
    ExpectSameRate(x.rate, y.rate, "rule rate");
  }
  EXPECT_EQ(a.default_action, b.default_action);
  EXPECT_EQ(a.housekeeping_allowed, b.housekeeping_allowed);
  ExpectSameRate(a.vm_rate, b.vm_rate, "vm rate");
  EXPECT_EQ(a.events.guest_panic, b.events.guest_panic);
  EXPECT_EQ(a.events.device_change, b.events.device_change);
  EXPECT_EQ(a.events.guest_shutdown, b.events.guest_shutdown);
  EXPECT_EQ(a.events.guest_reset, b.events.guest_reset);
  EXPECT_EQ(a.events.unexpected_stop, b.events.unexpected_stop);
}

// ---- Parsing ----

TEST(ManifestTest, ParsesTheDocumentedExample) {
  std::vector<ManifestWarning> warnings;
  Manifest m = MustParse(kExample, &warnings);
  EXPECT_TRUE(warnings.empty()) << warnings[0].message;
  EXPECT_EQ(m.version, 1);
  EXPECT_EQ(m.vm, "web");
  EXPECT_EQ(m.mode, ManifestMode::kEnforce);
  ASSERT_EQ(m.macs.size(), 1u);
  EXPECT_EQ(m.macs[0].ToString(), "52:54:00:00:10:01");
  ASSERT_EQ(m.ips.size(), 2u);
  EXPECT_EQ(m.ips[0], Ip("10.0.0.1"));
  EXPECT_EQ(m.ips[1], Ip("fe80::1"));
  EXPECT_EQ(m.boot.kernel_sha256, kKernelSha);  // prefix dropped, lower case
  EXPECT_EQ(m.boot.initrd_sha256, kInitrdSha);
  EXPECT_EQ(m.boot.disks_sha256, (std::map<std::string, std::string>{{"data", kDiskSha}}));
  EXPECT_EQ(m.boot.cmdline, std::optional<std::string>("console=ttyS0 quiet bb.role=http-server"));
  EXPECT_EQ(m.boot.machine, "pc");
  EXPECT_EQ(m.boot.devices, (std::vector<std::string>{"00:00.0 8086:1237", "00:01.0 8086:7000",
                                                      "00:02.0 8086:100e id=n0"}));
  EXPECT_EQ(m.boot.line, LineOf(kExample, "boot:"));
  EXPECT_TRUE(m.refuse_on_mismatch);

  ASSERT_EQ(m.groups.size(), 2u);
  EXPECT_EQ(PeerStrings(m.groups["admins"]), (std::vector<std::string>{"10.0.9.0/24", "vm ops"}));
  EXPECT_EQ(PeerStrings(m.groups["clients"]),
            (std::vector<std::string>{"10.0.1.0/24", "vm client", "2001:db8:1::/48"}));
  EXPECT_EQ(PeerStrings(m.management),
            (std::vector<std::string>{"10.0.9.0/24", "vm ops", "10.0.0.254"}));

  EXPECT_EQ(m.default_action, kRespAlert | kRespDrop);
  EXPECT_EQ(m.default_line, LineOf(kExample, "default: [alert, drop]"));
  EXPECT_TRUE(m.housekeeping_allowed);

  ASSERT_EQ(m.rules.size(), 5u);
  const NetRule& http = m.rules[0];
  EXPECT_EQ(http.name, "http-in");
  EXPECT_EQ(http.line, LineOf(kExample, "- name: http-in"));
  EXPECT_EQ(http.direction, Direction::kIn);
  EXPECT_EQ(http.peer_text, "clients");
  EXPECT_EQ(PeerStrings(http.peers),
            (std::vector<std::string>{"10.0.1.0/24", "vm client", "2001:db8:1::/48"}));
  EXPECT_EQ(http.proto, kIpProtoTcp);
  EXPECT_EQ(http.ports, (std::vector<PortRange>{{80, 80}, {8000, 8080}}));
  EXPECT_EQ(http.action, 0);
  EXPECT_EQ(http.rate.packets_per_s, 2000);
  EXPECT_EQ(http.rate.bytes_per_s, 5e6);
  EXPECT_EQ(http.rate.new_connections_per_s, 50);
  EXPECT_EQ(http.rate.action, kRespAlert);
  EXPECT_EQ(http.rate.line, LineOf(kExample, "rate: {packets_per_s: 2000"));

  const NetRule& ssh = m.rules[1];
  EXPECT_EQ(ssh.peer_text, "[admins, vm:bastion]");
  EXPECT_EQ(PeerStrings(ssh.peers),
            (std::vector<std::string>{"10.0.9.0/24", "vm ops", "vm bastion"}));
  EXPECT_EQ(ssh.ports, (std::vector<PortRange>{{22, 22}}));
  EXPECT_TRUE(ssh.rate.empty());
  EXPECT_EQ(ssh.rate.line, 0);

  EXPECT_EQ(m.rules[2].direction, Direction::kOut);
  EXPECT_EQ(m.rules[2].proto, kIpProtoUdp);
  EXPECT_EQ(PeerStrings(m.rules[2].peers), (std::vector<std::string>{"10.0.0.53"}));

  const NetRule& ping = m.rules[3];
  EXPECT_EQ(ping.direction, Direction::kBoth);
  EXPECT_TRUE(ping.peers.empty());
  EXPECT_EQ(ping.peer_text, "");
  EXPECT_EQ(ping.proto, kIpProtoIcmp);
  EXPECT_EQ(ping.ports, (std::vector<PortRange>{{0, 0}, {8, 8}}));

  EXPECT_EQ(m.rules[4].name, "rule 5");
  EXPECT_EQ(m.rules[4].action, kRespAlert | kRespDrop | kRespSnapshot);

  EXPECT_EQ(m.vm_rate.packets_per_s, 5000);
  EXPECT_EQ(m.vm_rate.bytes_per_s, 1.5e6);
  EXPECT_EQ(m.vm_rate.new_connections_per_s, 100);
  EXPECT_EQ(m.vm_rate.action, kRespAlert | kRespDrop);
  EXPECT_EQ(m.vm_rate.line, LineOf(kExample, "rates:"));

  EXPECT_EQ(m.events.guest_panic, kRespAlert | kRespSnapshot);
  EXPECT_EQ(m.events.device_change, kRespAlert);
  EXPECT_EQ(m.events.guest_shutdown, 0);
  EXPECT_EQ(m.events.guest_reset, kRespAlert);
  EXPECT_EQ(m.events.unexpected_stop, kRespAlert | kRespPause);
  EXPECT_EQ(m.source_text, kExample);
  EXPECT_EQ(m.path, "");
}

TEST(ManifestTest, DefaultsOfAMinimalManifest) {
  Manifest m = MustParse("manifest: 1\nvm: db\nnetwork:\n  default: allow\n");
  EXPECT_EQ(m.mode, ManifestMode::kObserve);
  EXPECT_TRUE(m.refuse_on_mismatch);
  EXPECT_TRUE(m.housekeeping_allowed);
  EXPECT_EQ(m.default_action, 0);
  EXPECT_TRUE(m.rules.empty());
  EXPECT_TRUE(m.management.empty());
  EXPECT_TRUE(m.vm_rate.empty());
  EXPECT_EQ(m.vm_rate.line, 0);
  EXPECT_FALSE(m.boot.cmdline.has_value());
  EXPECT_EQ(m.events.guest_panic, kRespAlert);
  EXPECT_EQ(m.events.unexpected_stop, kRespAlert);
}

TEST(ManifestTest, ResponsesVocabulary) {
  auto action = [](const std::string& a) {
    Manifest m = MustParse("manifest: 1\nvm: v\nnetwork: {default: " + a + "}\n");
    return m.default_action;
  };
  EXPECT_EQ(action("allow"), 0);
  EXPECT_EQ(action("[allow]"), 0);
  EXPECT_EQ(action("deny"), kRespAlert | kRespDrop);
  EXPECT_EQ(action("drop"), kRespAlert | kRespDrop);  // alert is implied
  EXPECT_EQ(action("alert"), kRespAlert);
  EXPECT_EQ(action("[quarantine, pause]"), kRespAlert | kRespQuarantine | kRespPause);
  EXPECT_EQ(action("[snapshot, poweroff, deny]"),
            kRespAlert | kRespDrop | kRespSnapshot | kRespPowerOff);
  EXPECT_EQ(ResponsesToString(0), "allow");
  EXPECT_EQ(ResponsesToString(kRespAlert | kRespDrop | kRespPowerOff), "alert, drop, poweroff");
  EXPECT_EQ(ResponseNames(kRespSnapshot | kRespQuarantine),
            (std::vector<std::string>{"quarantine", "snapshot"}));
  // Rates may use every response, events all but drop and quarantine.
  Manifest m = MustParse(
      "manifest: 1\nvm: v\nnetwork: {default: deny}\nrates: {packets_per_s: 1K, action: "
      "[quarantine, drop]}\nevents: {guest_panic: [pause, snapshot], device_change: poweroff}\n");
  EXPECT_EQ(m.vm_rate.packets_per_s, 1000);
  EXPECT_EQ(m.vm_rate.action, kRespAlert | kRespDrop | kRespQuarantine);
  EXPECT_EQ(m.events.guest_panic, kRespAlert | kRespPause | kRespSnapshot);
  EXPECT_EQ(m.events.device_change, kRespAlert | kRespPowerOff);
}

TEST(ManifestTest, PeerResolution) {
  Manifest m = MustParse(R"(manifest: 1
vm: web
groups:
  inner: [10.1.0.0/16, 10.1.2.0/24, db]
  outer: [inner, group:inner, fd00::/8, vm:inner]
  everyone: [outer, any]
network:
  default: deny
  rules:
    - {peer: [outer, 10.9.9.9], action: allow}
    - {peer: [db, any], action: allow}
    - {peer: everyone, action: allow}
    - {peer: "10.0.0.0/8", action: allow}
    - {peer: "::/0", action: allow}
    - {peer: web-2.lab_x, action: allow}
)");
  EXPECT_EQ(PeerStrings(m.groups["inner"]),
            (std::vector<std::string>{"10.1.0.0/16", "10.1.2.0/24", "vm db"}));
  // Members of groups are expanded and de-duplicated; vm: forces a VM.
  EXPECT_EQ(
      PeerStrings(m.groups["outer"]),
      (std::vector<std::string>{"10.1.0.0/16", "10.1.2.0/24", "vm db", "fd00::/8", "vm inner"}));
  EXPECT_EQ(PeerStrings(m.groups["everyone"]), (std::vector<std::string>{"any"}));
  EXPECT_EQ(PeerStrings(m.rules[0].peers),
            (std::vector<std::string>{"10.1.0.0/16", "10.1.2.0/24", "vm db", "fd00::/8", "vm inner",
                                      "10.9.9.9"}));
  EXPECT_TRUE(m.rules[1].peers.empty());  // a list with any is any
  EXPECT_EQ(m.rules[1].peer_text, "[db, any]");
  EXPECT_TRUE(m.rules[2].peers.empty());
  EXPECT_EQ(PeerStrings(m.rules[3].peers), (std::vector<std::string>{"10.0.0.0/8"}));
  EXPECT_EQ(PeerStrings(m.rules[4].peers), (std::vector<std::string>{"::/0"}));
  EXPECT_EQ(PeerStrings(m.rules[5].peers), (std::vector<std::string>{"vm web-2.lab_x"}));
}

struct BadCase {
  std::string yaml;
  std::string message;  // the whole one-line message
};

const std::string kBase = "manifest: 1\nvm: web\nnetwork:\n  default: deny\n  rules:\n";

TEST(ManifestTest, ErrorsNameTheLineAndTheField) {
  const std::vector<BadCase> cases = {
      {"manifest: 1\nvm: web\nnetwrk: {}\n",
       "manifest line 3: netwrk: unknown key (allowed: manifest, vm, mode, identity, boot, "
       "attestation, groups, management, network, rates, events)"},
      {kBase + "    - name: a\n      prot: tcp\n      action: allow\n",
       "manifest line 7: network.rules[0].prot: unknown key (allowed: name, direction, peer, "
       "proto, ports, action, rate)"},
      {"manifest: 1\nvm: web\nboot:\n  kernal: x\nnetwork: {default: deny}\n",
       "manifest line 4: boot.kernal: unknown key (allowed: kernel, initrd, disks, cmdline, "
       "machine, devices)"},
      {kBase + "    - {action: allow}\n    - peer: 10.0.0.0/33\n      action: allow\n",
       "manifest line 7: network.rules[1].peer: '10.0.0.0/33' is not an IP address, CIDR, group "
       "or VM name (an IPv4 prefix is at most /32)"},
      {kBase + "    - peer: \"fe80::/129\"\n      action: allow\n",
       "manifest line 6: network.rules[0].peer: 'fe80::/129' is not an IP address, CIDR, group "
       "or VM name (an IPv6 prefix is at most /128)"},
      {kBase + "    - peer: 10.0.0.256\n      action: allow\n",
       "manifest line 6: network.rules[0].peer: '10.0.0.256' is not an IP address, CIDR, group "
       "or VM name"},
      {kBase + "    - peer: [db, 10.0.0.1/24]\n      action: allow\n",
       "manifest line 6: network.rules[0].peer[1]: '10.0.0.1/24': host bits set; did you mean "
       "10.0.0.0/24?"},
      {kBase + "    - peer: 'bad name'\n      action: allow\n",
       "manifest line 6: network.rules[0].peer: 'bad name' is not an IP address, CIDR, group or "
       "VM name"},
      {kBase + "    - proto: tcp\n      ports: [80, 90-80]\n      action: deny\n",
       "manifest line 7: network.rules[0].ports[1]: '90-80' is not a range: 90 is above 80"},
      {kBase + "    - proto: udp\n      ports: 70000\n      action: deny\n",
       "manifest line 7: network.rules[0].ports: '70000': 70000 is not a port (0-65535)"},
      {kBase + "    - proto: icmp\n      ports: 300\n      action: deny\n",
       "manifest line 7: network.rules[0].ports: '300': 300 is not an ICMP type (0-255)"},
      {kBase + "    - proto: tcp\n      ports: http\n      action: deny\n",
       "manifest line 7: network.rules[0].ports: 'http' is not a port or a range lo-hi (like "
       "8000-8080)"},
      {kBase + "    - ports: 80\n      action: deny\n",
       "manifest line 6: network.rules[0].ports: ports need proto tcp, udp, icmp or icmpv6 "
       "(proto is any)"},
      {kBase + "    - proto: 47\n      ports: 80\n      action: deny\n",
       "manifest line 7: network.rules[0].ports: ports need proto tcp, udp, icmp or icmpv6 "
       "(proto is 47)"},
      {kBase + "    - proto: sctp\n      action: deny\n",
       "manifest line 6: network.rules[0].proto: 'sctp' is not tcp, udp, icmp, icmpv6, any or a "
       "protocol number 0-255"},
      {kBase + "    - direction: inbound\n      action: deny\n",
       "manifest line 6: network.rules[0].direction: 'inbound' is not in, out or both"},
      {kBase + "    - action: [alert, explode]\n",
       "manifest line 6: network.rules[0].action[1]: 'explode' is not a response (allow, deny, "
       "alert, drop, quarantine, pause, snapshot, poweroff)"},
      {kBase + "    - action: [allow, alert]\n",
       "manifest line 6: network.rules[0].action: 'allow' cannot be combined with other "
       "responses"},
      {kBase + "    - name: x\n",
       "manifest line 6: network.rules[0].action: is required (allow, deny, or a response or a "
       "list of responses)"},
      {"manifest: 1\nvm: web\nnetwork: {default: allow}\nevents:\n  guest_panic: alert\n"
       "  guest_reset: [alert, drop]\n",
       "manifest line 6: events.guest_reset[1]: 'drop' makes no sense for an event (there is no "
       "flow to drop): use allow, alert, pause, snapshot or poweroff"},
      {"manifest: 1\nvm: web\nnetwork: {default: allow}\nevents:\n  device_change: quarantine\n",
       "manifest line 5: events.device_change: 'quarantine' makes no sense for an event (there "
       "is no flow to cut off): use allow, alert, pause, snapshot or poweroff"},
      {"manifest: 1\nvm: web\nnetwork:\n  housekeeping: check\n",
       "manifest line 3: network.default: is required: say what happens to a flow no rule "
       "matches (allow, deny, or a list of responses)"},
      {"manifest: 1\nvm: web\n",
       "manifest line 1: network.default: is required: say what happens to a flow no rule "
       "matches (allow, deny, or a list of responses)"},
      {"manifest: 1\nvm: web\ngroups:\n  a: [10.0.0.1, b]\n  b: [c]\n  c: [a]\n"
       "network: {default: deny}\n",
       "manifest line 4: groups.a: groups form a cycle: a -> b -> c -> a"},
      {"manifest: 1\nvm: web\ngroups:\n  a: [a]\nnetwork: {default: deny}\n",
       "manifest line 4: groups.a: groups form a cycle: a -> a"},
      {kBase + "    - peer: group:x\n      action: allow\n",
       "manifest line 6: network.rules[0].peer: 'group:x': there is no group 'x' under groups"},
      {"manifest: 1\nvm: web\nmode: strict\nnetwork: {default: deny}\n",
       "manifest line 3: mode: 'strict' is not observe or enforce"},
      {"manifest: 2\nvm: web\nnetwork: {default: deny}\n",
       "manifest line 1: manifest: version 2 is not supported (this Blackbox reads version 1)"},
      {"vm: web\nnetwork: {default: deny}\n",
       "manifest line 1: manifest: is required: the format version (manifest: 1)"},
      {"manifest: 1\nnetwork: {default: deny}\n",
       "manifest line 1: vm: is required: the name of the VM it describes"},
      {"manifest: 1\nvm: 'a/b'\nnetwork: {default: deny}\n",
       "manifest line 2: vm: 'a/b' is not a VM name (1-64 of [A-Za-z0-9_.-])"},
      {"- manifest\n- 1\n",
       "manifest line 1: top level: must be a mapping (manifest: 1, vm: NAME, network: "
       "{default: ...})"},
      {"",
       "manifest line 1: top level: must be a mapping (manifest: 1, vm: NAME, network: "
       "{default: ...})"},
      {"manifest: 1\nvm: web\nvm: db\nnetwork: {default: deny}\n",
       "manifest line 3: vm: is given twice"},
      {"manifest: 1\nvm: web\nboot:\n  kernel: abc\nnetwork: {default: deny}\n",
       "manifest line 4: boot.kernel: 'abc' is not a sha256 (64 hex digits)"},
      {"manifest: 1\nvm: web\nidentity:\n  macs: [52:54:00:00:10]\nnetwork: {default: deny}\n",
       "manifest line 4: identity.macs[0]: '52:54:00:00:10' is not a MAC address like "
       "52:54:00:12:34:56"},
      {"manifest: 1\nvm: web\nnetwork: {default: deny}\nrates:\n  bytes_per_s: 5X\n",
       "manifest line 5: rates.bytes_per_s: '5X' is not a rate: a number, optionally with K, M "
       "or G (5M = 5000000)"},
      {"manifest: 1\nvm: web\nnetwork: {default: deny}\nrates:\n  bytes_per_s: -5\n",
       "manifest line 5: rates.bytes_per_s: '-5' is not a rate: a number, optionally with K, M "
       "or G (5M = 5000000)"},
      {"manifest: 1\nvm: web\nnetwork:\n  default: deny\n  housekeeping: maybe\n",
       "manifest line 5: network.housekeeping: 'maybe' is not allow or check"},
      {"manifest: 1\nvm: web\nattestation: warn\nnetwork: {default: deny}\n",
       "manifest line 3: attestation: 'warn' is not refuse or alert"},
      {"manifest: 1\nvm: web\ngroups:\n  any: [10.0.0.1]\nnetwork: {default: deny}\n",
       "manifest line 4: groups.any: 'any' cannot be a group name (1-64 of [A-Za-z0-9_.-], not "
       "any, not an address)"},
      {"manifest: 1\nvm: web\nnetwork:\n  default: deny\n  rules:\n    - {action: allow, "
       "rate: {packetz: 1}}\n",
       "manifest line 6: network.rules[0].rate.packetz: unknown key (allowed: packets_per_s, "
       "bytes_per_s, new_connections_per_s, action)"},
      {"manifest: 1\nvm: web\nnetwork:\n  default: deny\n  rules:\n    - just-a-word\n",
       "manifest line 6: network.rules[0]: must be a mapping (with keys name, direction, peer, "
       "proto, ports, action, rate)"},
  };
  for (const BadCase& c : cases) {
    EXPECT_EQ(Error(c.yaml), c.message) << c.yaml;
  }
}

TEST(ManifestTest, YamlSyntaxErrorsNameTheLine) {
  std::string msg = Error("manifest: 1\nvm: web\nnetwork: {default: [alert, drop}\n");
  EXPECT_EQ(msg.rfind("manifest line 3: ", 0), 0u) << msg;
  msg = Error("manifest: 1\nvm: web\n  bad indent: x\n");
  EXPECT_EQ(msg.rfind("manifest line ", 0), 0u) << msg;
  EXPECT_NE(msg, "(parsed)");
}

TEST(ManifestTest, RuleCountIsCapped) {
  // Aliases keep the text small; the cap counts rules as the parser sees them.
  std::string text =
      "manifest: 1\nvm: web\nnetwork:\n  default: deny\n  rules: [&r {action: allow}";
  for (int i = 0; i < 100000; ++i) text += ", *r";
  text += "]\n";
  ASSERT_LT(text.size(), 1u << 20);
  EXPECT_EQ(Error(text),
            "manifest line 5: network.rules: 100001 rules; at most 100000 are allowed");
}

TEST(ManifestTest, InputSizeIsCapped) {
  auto made = TempDir::Create("manifest_test");
  ASSERT_TRUE(made.ok());
  const TempDir& dir = *made;
  std::string path = dir.path() + "/big.yaml";
  std::string text = "manifest: 1\nvm: web\nnetwork: {default: deny}\n";
  text += std::string((1 << 20), '#');
  {
    std::ofstream f(path);
    f << text;
  }
  auto m = LoadManifest(path, nullptr);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().message().rfind(path, 0), 0u) << m.status().message();

  std::string good = dir.path() + "/good.yaml";
  {
    std::ofstream f(good);
    f << kExample;
  }
  auto loaded = LoadManifest(good, nullptr);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->path, good);
  EXPECT_EQ(loaded->vm, "web");

  std::string bad = dir.path() + "/bad.yaml";
  {
    std::ofstream f(bad);
    f << "manifest: 1\nvm: web\nmode: x\nnetwork: {default: deny}\n";
  }
  auto failed = LoadManifest(bad, nullptr);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().message(),
            bad + ": manifest line 3: mode: 'x' is not observe or enforce");
  EXPECT_FALSE(LoadManifest(dir.path() + "/missing.yaml", nullptr).ok());
}

// ---- Warnings ----

std::vector<std::string> Warn(const std::string& text) {
  std::vector<ManifestWarning> warnings;
  MustParse(text, &warnings);
  std::vector<std::string> out;
  for (const ManifestWarning& w : warnings) {
    EXPECT_EQ(w.message.rfind("manifest line " + std::to_string(w.line) + ": ", 0), 0u)
        << w.message;
    out.push_back(w.message);
  }
  return out;
}

TEST(ManifestWarningTest, ShadowedRule) {
  std::string text = kBase +
                     "    - name: all-out\n      direction: out\n      action: allow\n"
                     "    - name: ssh\n      direction: out\n      peer: 10.0.0.5\n"
                     "      proto: tcp\n      ports: 22\n      action: deny\n";
  EXPECT_EQ(Warn(text), (std::vector<std::string>{
                            "manifest line 9: rule 'ssh' can never match: rule 'all-out' (line 6) "
                            "covers it"}));
  // Wider CIDR, more ports, both directions, proto any: still covered.
  text = kBase +
         "    - {name: wide, peer: [10.0.0.0/8, db], proto: tcp, ports: [1-1000, 2000], action: "
         "deny}\n"
         "    - {name: narrow, direction: in, peer: [10.1.0.0/16, db], proto: tcp, ports: "
         "[22, 80-90, 2000], action: allow}\n"
         "    - {name: other-vm, peer: web2, proto: tcp, ports: 22, action: allow}\n"
         "    - {name: outside, peer: 10.0.0.0/8, proto: tcp, ports: 999-1001, action: deny}\n";
  EXPECT_EQ(Warn(text), (std::vector<std::string>{
                            "manifest line 7: rule 'narrow' can never match: rule 'wide' (line 6) "
                            "covers it"}));
  // ICMP types: a rule without types covers a rule with some.
  text = kBase +
         "    - {name: icmp, proto: icmp, action: allow}\n"
         "    - {name: echo, proto: icmp, ports: 8, action: deny}\n"
         "    - {name: all-types, proto: icmpv6, ports: 0-255, action: allow}\n"
         "    - {name: v6, proto: icmpv6, action: deny}\n";
  EXPECT_EQ(Warn(text),
            (std::vector<std::string>{
                "manifest line 7: rule 'echo' can never match: rule 'icmp' (line 6) covers it",
                "manifest line 9: rule 'v6' can never match: rule 'all-types' (line 8) covers "
                "it"}));
}

TEST(ManifestWarningTest, PartialOverlapWithADifferentAction) {
  std::string text = kBase +
                     "    - {name: a, peer: 10.0.0.0/24, proto: tcp, ports: 80-90, action: allow}\n"
                     "    - {name: b, peer: 10.0.0.0/24, proto: tcp, ports: 85-95, action: deny}\n"
                     "    - {name: c, peer: 10.0.0.0/24, proto: tcp, ports: 88-99, action: deny}\n";
  // c overlaps a too (first such rule is named), b's action is the same as c's.
  EXPECT_EQ(Warn(text), (std::vector<std::string>{
                            "manifest line 7: rule 'b' overlaps rule 'a' (line 6), which wins "
                            "where both match",
                            "manifest line 8: rule 'c' overlaps rule 'a' (line 6), which wins "
                            "where both match"}));
  // An exception followed by a wider rule is the normal pattern: no warning.
  text = kBase +
         "    - {name: ssh, peer: 10.0.9.0/24, proto: tcp, ports: 22, action: allow}\n"
         "    - {name: rest, action: deny}\n"
         "    - {name: same-action, peer: 10.0.9.0/24, proto: tcp, ports: 22-30, "
         "direction: in, action: [alert, drop]}\n";
  std::vector<std::string> w = Warn(text);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0],
            "manifest line 8: rule 'same-action' can never match: rule 'rest' (line 7) "
            "covers it");
  // Disjoint in direction, protocol, ports or peers: no warning.
  text = kBase +
         "    - {name: a, direction: in, proto: tcp, ports: 80, action: allow}\n"
         "    - {name: b, direction: out, proto: tcp, ports: 80, action: deny}\n"
         "    - {name: c, proto: udp, ports: 80, action: deny}\n"
         "    - {name: d, proto: tcp, ports: 81, action: deny}\n"
         "    - {name: e, peer: 10.0.0.0/24, proto: udp, ports: 1-79, action: allow}\n"
         "    - {name: f, peer: 10.0.1.0/24, proto: udp, ports: 50, action: deny}\n";
  EXPECT_EQ(Warn(text), std::vector<std::string>{});
}

TEST(ManifestWarningTest, DuplicateNamesAndTheCap) {
  std::string text = kBase +
                     "    - {name: x, proto: tcp, ports: 1, action: allow}\n"
                     "    - {name: x, proto: tcp, ports: 2, action: allow}\n";
  EXPECT_EQ(Warn(text), (std::vector<std::string>{
                            "manifest line 7: rule name 'x' is also used by the rule at line 6"}));
  text = kBase;
  for (int i = 0; i < 150; ++i) {
    text += "    - {name: x, proto: tcp, ports: " + std::to_string(i) + ", action: allow}\n";
  }
  std::vector<std::string> w = Warn(text);
  ASSERT_EQ(w.size(), 101u);
  EXPECT_EQ(w[100], "manifest line 107: ... and 49 more warnings");
}

TEST(ManifestWarningTest, PairwiseChecksAreSkippedForManyRules) {
  std::string text = kBase;
  text += "    - {name: all, action: allow}\n";  // would shadow everything below
  for (int i = 0; i < 2000; ++i) {
    text += "    - {name: r" + std::to_string(i) + ", proto: tcp, ports: " + std::to_string(i) +
            ", action: deny}\n";
  }
  EXPECT_EQ(Warn(text), (std::vector<std::string>{
                            "manifest line 5: network.rules: 2001 rules: the checks for rules "
                            "that can never match or that overlap are skipped above 2000 rules"}));
}

// ---- Writing ----

TEST(ManifestToYamlTest, RoundTripsTheExample) {
  Manifest a = MustParse(kExample);
  std::string yaml = ManifestToYaml(a, {"learned by blackbox", "", "two\nlines"});
  EXPECT_EQ(yaml.rfind("# learned by blackbox\n#\n# two\n# lines\n", 0), 0u) << yaml;
  std::vector<ManifestWarning> warnings;
  Manifest b = MustParse(yaml, &warnings);
  EXPECT_TRUE(warnings.empty());
  ExpectSameManifest(a, b);
  // And once more: the output is stable.
  EXPECT_EQ(ManifestToYaml(b, {"learned by blackbox", "", "two\nlines"}), yaml);
}

TEST(ManifestToYamlTest, RoundTripsAwkwardValues) {
  const std::string text = R"(manifest: 1
vm: "null"
mode: observe
boot:
  cmdline: "a: b # c 'd' \"e\" {f}"
  devices: ["00:02.0 8086:100e id=n0: x", "- dash"]
attestation: alert
groups:
  ops: [10.0.0.1]
  team: [ops, vm:ops, "2001:db8::/32"]
management: any
network:
  default: allow
  housekeeping: check
  rules:
    - name: "null"
      action: allow
    - name: "#hash: colon"
      peer: [vm:ops, vm:any, vm:10.1, team]
      action: deny
    - name: "yes"
      proto: 47
      action: [quarantine, pause]
      rate: {bytes_per_s: 0.25, action: allow}
    - name: icmp
      proto: icmpv6
      ports: [128, 133-137]
      action: poweroff
      rate: {action: drop}
    - name: "rule 9"
      peer: any
      direction: out
      proto: udp
      ports: 0-65535
      action: alert
rates:
  packets_per_s: 1.5M
  bytes_per_s: 123456789.125
events:
  guest_shutdown: [pause, snapshot]
)";
  Manifest a = MustParse(text);
  ASSERT_EQ(a.rules.size(), 5u);
  EXPECT_EQ(a.vm, "null");
  EXPECT_EQ(PeerStrings(a.management), (std::vector<std::string>{"any"}));
  EXPECT_EQ(PeerStrings(a.rules[1].peers),
            (std::vector<std::string>{"vm ops", "vm any", "vm 10.1", "10.0.0.1", "2001:db8::/32"}));
  std::string yaml = ManifestToYaml(a);
  Manifest b = MustParse(yaml);
  ExpectSameManifest(a, b);
}

TEST(ManifestToYamlTest, WritesPeersOfABuiltManifest) {
  // As `manifest learn` might build it: peers without peer_text, a VM named
  // like a group.
  Manifest a;
  a.vm = "web";
  a.groups["db"] = {CidrPeer("10.0.5.0/24")};
  NetRule r;
  r.name = "to-db";
  r.direction = Direction::kOut;
  r.peers = {VmPeer("db"), CidrPeer("10.0.5.0/24"), CidrPeer("fd00::1")};
  r.proto = kIpProtoTcp;
  r.ports = {{5432, 5432}};
  a.rules.push_back(r);
  NetRule stale = r;
  stale.name = "stale-text";
  stale.peer_text = "10.9.9.9";  // disagrees with peers: peers win
  a.rules.push_back(stale);
  a.default_action = kRespAlert;
  Manifest b = MustParse(ManifestToYaml(a));
  ASSERT_EQ(b.rules.size(), 2u);
  EXPECT_EQ(PeerStrings(b.rules[0].peers), PeerStrings(r.peers));
  EXPECT_EQ(PeerStrings(b.rules[1].peers), PeerStrings(r.peers));
  EXPECT_EQ(b.rules[0].ports, r.ports);
  EXPECT_EQ(b.default_action, kRespAlert);
}

// ---- Cidr ----

TEST(CidrTest, ParseContainsToString) {
  Cidr net = C("10.0.0.0/24");
  EXPECT_EQ(net.prefix, 24);
  EXPECT_EQ(net.ToString(), "10.0.0.0/24");
  EXPECT_TRUE(net.Contains(Ip("10.0.0.0")));
  EXPECT_TRUE(net.Contains(Ip("10.0.0.255")));
  EXPECT_FALSE(net.Contains(Ip("10.0.1.0")));
  EXPECT_FALSE(net.Contains(Ip("::ffff:10.0.0.1")));  // across families

  Cidr half = C("10.0.0.128/25");
  EXPECT_TRUE(half.Contains(Ip("10.0.0.200")));
  EXPECT_FALSE(half.Contains(Ip("10.0.0.100")));
  Cidr odd = C("10.0.0.0/31");
  EXPECT_TRUE(odd.Contains(Ip("10.0.0.1")));
  EXPECT_FALSE(odd.Contains(Ip("10.0.0.2")));

  Cidr host = C("10.0.0.7");
  EXPECT_EQ(host.prefix, 32);
  EXPECT_EQ(host.ToString(), "10.0.0.7");
  EXPECT_EQ(C("10.0.0.7/32"), host);
  EXPECT_TRUE(host.Contains(Ip("10.0.0.7")));
  EXPECT_FALSE(host.Contains(Ip("10.0.0.6")));

  Cidr all4 = C("0.0.0.0/0");
  EXPECT_EQ(all4.ToString(), "0.0.0.0/0");
  EXPECT_TRUE(all4.Contains(Ip("255.255.255.255")));
  EXPECT_TRUE(all4.Contains(Ip("1.2.3.4")));
  EXPECT_FALSE(all4.Contains(Ip("::1")));

  Cidr all6 = C("::/0");
  EXPECT_EQ(all6.ToString(), "::/0");
  EXPECT_TRUE(all6.Contains(Ip("fe80::1")));
  EXPECT_FALSE(all6.Contains(Ip("0.0.0.0")));

  Cidr ll = C("fe80::/10");
  EXPECT_EQ(ll.ToString(), "fe80::/10");
  EXPECT_TRUE(ll.Contains(Ip("fe80::1")));
  EXPECT_TRUE(ll.Contains(Ip("febf:ffff::1")));
  EXPECT_FALSE(ll.Contains(Ip("fec0::1")));

  Cidr h6 = C("2001:db8::1");
  EXPECT_EQ(h6.prefix, 128);
  EXPECT_EQ(h6.ToString(), "2001:db8::1");
  EXPECT_EQ(C("2001:DB8:0::1/128"), h6);
  EXPECT_TRUE(h6.Contains(Ip("2001:db8::1")));
  EXPECT_FALSE(h6.Contains(Ip("2001:db8::2")));
  EXPECT_EQ(C("2001:db8::/127").ToString(), "2001:db8::/127");
  EXPECT_TRUE(C("2001:db8::/127").Contains(Ip("2001:db8::1")));

  Cidr none;  // default: contains nothing
  EXPECT_FALSE(none.Contains(Ip("10.0.0.1")));
  EXPECT_FALSE(none.Contains(IpAddr{}));
}

TEST(CidrTest, RejectsBadText) {
  auto bits = Cidr::Parse("10.0.0.1/24");
  ASSERT_FALSE(bits.ok());
  EXPECT_EQ(bits.status().message(), "'10.0.0.1/24': host bits set; did you mean 10.0.0.0/24?");
  auto bits6 = Cidr::Parse("fe80::1/10");
  ASSERT_FALSE(bits6.ok());
  EXPECT_EQ(bits6.status().message(), "'fe80::1/10': host bits set; did you mean fe80::/10?");
  EXPECT_EQ(Cidr::Parse("10.0.0.0/33").status().message(),
            "'10.0.0.0/33' is not an IP address or CIDR (an IPv4 prefix is at most /32)");
  EXPECT_EQ(Cidr::Parse("::/129").status().message(),
            "'::/129' is not an IP address or CIDR (an IPv6 prefix is at most /128)");
  for (const char* bad : {"", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/ 8", "10.0.0/8", "web",
                          "10.0.0.0/8/8", "/8", "10.0.0.0/0x8"}) {
    auto c = Cidr::Parse(bad);
    EXPECT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

// ---- RuleSet ----

FlowFacts Flow(Direction d, const std::string& peer, uint8_t proto, uint16_t port) {
  FlowFacts f;
  f.direction = d;
  f.peer = Ip(peer);
  f.proto = proto;
  f.service_port = port;
  return f;
}

constexpr Direction kIn = Direction::kIn;
constexpr Direction kOut = Direction::kOut;

TEST(RuleSetTest, FirstMatchAndDefault) {
  Manifest m = MustParse(
      kBase +
      R"(    - {name: ssh-admin, direction: in, peer: 10.0.9.0/24, proto: tcp, ports: 22, action: allow}
    - {name: ssh-rest, direction: in, proto: tcp, ports: 22, action: [alert, quarantine]}
    - {name: web, proto: tcp, ports: [80, 443], action: allow}
    - {name: dns, direction: out, peer: 10.0.0.53, proto: udp, ports: 53, action: allow}
    - {name: echo, proto: icmp, ports: 8, action: allow}
    - {name: echo6, proto: icmpv6, ports: 128-129, action: alert}
    - {name: gre, proto: 47, action: pause}
    - {name: out-any, direction: out, peer: 192.168.0.0/16, action: alert}
)");
  RuleSet rs = RuleSet::Compile(m, {});
  EXPECT_EQ(rs.rule_count(), 8u);
  struct Case {
    FlowFacts flow;
    int rule;
    Responses action;
  };
  const Case cases[] = {
      {Flow(kIn, "10.0.9.5", kIpProtoTcp, 22), 0, 0},
      {Flow(kIn, "10.0.8.5", kIpProtoTcp, 22), 1, kRespAlert | kRespQuarantine},
      {Flow(kOut, "10.0.9.5", kIpProtoTcp, 22), -1, kRespAlert | kRespDrop},  // default
      {Flow(kIn, "1.2.3.4", kIpProtoTcp, 80), 2, 0},
      {Flow(kOut, "1.2.3.4", kIpProtoTcp, 443), 2, 0},  // both
      {Flow(kOut, "1.2.3.4", kIpProtoUdp, 443), -1, kRespAlert | kRespDrop},
      {Flow(kOut, "1.2.3.4", kIpProtoTcp, 444), -1, kRespAlert | kRespDrop},
      {Flow(kOut, "10.0.0.53", kIpProtoUdp, 53), 3, 0},
      {Flow(kIn, "10.0.0.53", kIpProtoUdp, 53), -1, kRespAlert | kRespDrop},
      {Flow(kOut, "10.0.0.54", kIpProtoUdp, 53), -1, kRespAlert | kRespDrop},
      {Flow(kIn, "1.2.3.4", kIpProtoIcmp, 8), 4, 0},  // icmp types as ports
      {Flow(kIn, "1.2.3.4", kIpProtoIcmp, 0), -1, kRespAlert | kRespDrop},
      {Flow(kIn, "fe80::1", kIpProtoIcmpv6, 129), 5, kRespAlert},
      {Flow(kIn, "fe80::1", kIpProtoIcmpv6, 8), -1, kRespAlert | kRespDrop},
      {Flow(kIn, "1.2.3.4", 47, 0), 6, kRespAlert | kRespPause},
      {Flow(kIn, "1.2.3.4", 50, 0), -1, kRespAlert | kRespDrop},
      {Flow(kOut, "192.168.3.3", 50, 0), 7, kRespAlert},
      {Flow(kOut, "192.168.3.3", kIpProtoTcp, 9999), 7, kRespAlert},
      {Flow(kIn, "192.168.3.3", kIpProtoTcp, 9999), -1, kRespAlert | kRespDrop},
  };
  for (const Case& c : cases) {
    RuleSet::Verdict v = rs.Evaluate(c.flow);
    SCOPED_TRACE(c.flow.peer.ToString() + " proto " + std::to_string(c.flow.proto) + " port " +
                 std::to_string(c.flow.service_port));
    EXPECT_EQ(v.rule, c.rule);
    EXPECT_EQ(v.action, c.action);
    RuleSet::Verdict l = rs.EvaluateLinear(c.flow);
    EXPECT_EQ(l.rule, c.rule);
    EXPECT_EQ(l.action, c.action);
  }
  // An empty RuleSet allows nothing by default.
  RuleSet empty;
  EXPECT_EQ(empty.Evaluate(Flow(kIn, "1.2.3.4", kIpProtoTcp, 1)).rule, -1);
  EXPECT_EQ(empty.Evaluate(Flow(kIn, "1.2.3.4", kIpProtoTcp, 1)).action, kRespAlert);
}

TEST(RuleSetTest, ProtoAnyAndDirections) {
  Manifest m =
      MustParse(kBase + R"(    - {name: in-only, direction: in, peer: 10.0.0.1, action: alert}
    - {name: out-only, direction: out, peer: 10.0.0.1, action: pause}
    - {name: tcp-80, proto: tcp, ports: 80, action: deny}
    - {name: any-proto, peer: 10.0.0.2, action: allow}
)");
  RuleSet rs = RuleSet::Compile(m, {});
  for (uint8_t proto :
       {uint8_t{0}, kIpProtoTcp, kIpProtoUdp, kIpProtoIcmp, kIpProtoIcmpv6, uint8_t{132}}) {
    SCOPED_TRACE(proto);
    EXPECT_EQ(rs.Evaluate(Flow(kIn, "10.0.0.1", proto, 80)).rule, 0);
    EXPECT_EQ(rs.Evaluate(Flow(kOut, "10.0.0.1", proto, 80)).rule, 1);
    EXPECT_EQ(rs.Evaluate(Flow(kIn, "10.0.0.2", proto, 80)).rule, proto == kIpProtoTcp ? 2 : 3);
    EXPECT_EQ(rs.Evaluate(Flow(kOut, "10.0.0.3", proto, 81)).rule, -1);
  }
}

TEST(RuleSetTest, VmPeersResolveThroughTheMap) {
  Manifest m = MustParse(R"(manifest: 1
vm: web
groups:
  admins: [10.0.9.0/24, ops]
management: [admins, 10.0.0.254]
network:
  default: deny
  rules:
    - {name: client, peer: client, proto: tcp, ports: 80, action: allow}
    - {name: ghost, peer: ghost, action: allow}
    - {name: ghost-or-net, peer: [ghost, 10.7.0.0/16], action: pause}
)");
  RuleSet::VmAddresses vms = {{"client", {Ip("10.0.0.2"), Ip("fd00::2")}},
                              {"ops", {Ip("10.0.5.5")}}};
  RuleSet rs = RuleSet::Compile(m, vms);
  EXPECT_EQ(rs.Evaluate(Flow(kIn, "10.0.0.2", kIpProtoTcp, 80)).rule, 0);
  EXPECT_EQ(rs.Evaluate(Flow(kIn, "fd00::2", kIpProtoTcp, 80)).rule, 0);
  EXPECT_EQ(rs.Evaluate(Flow(kIn, "10.0.0.3", kIpProtoTcp, 80)).rule, -1);
  // A rule whose only peer is an unknown VM matches nothing.
  for (const char* peer : {"10.0.0.1", "0.0.0.0", "::", "10.0.0.2"}) {
    EXPECT_NE(rs.Evaluate(Flow(kOut, peer, kIpProtoUdp, 9)).rule, 1) << peer;
    EXPECT_NE(rs.EvaluateLinear(Flow(kOut, peer, kIpProtoUdp, 9)).rule, 1) << peer;
  }
  EXPECT_EQ(rs.Evaluate(Flow(kOut, "10.7.1.1", kIpProtoUdp, 9)).rule, 2);
  EXPECT_EQ(rs.Evaluate(Flow(kOut, "10.0.0.1", kIpProtoUdp, 9)).rule, -1);

  EXPECT_TRUE(rs.IsManagement(Ip("10.0.9.7")));
  EXPECT_TRUE(rs.IsManagement(Ip("10.0.5.5")));  // ops, through the map
  EXPECT_TRUE(rs.IsManagement(Ip("10.0.0.254")));
  EXPECT_FALSE(rs.IsManagement(Ip("10.0.0.1")));
  EXPECT_FALSE(rs.IsManagement(Ip("fd00::2")));
  // Without ops' address, ops is not management.
  RuleSet no_ops = RuleSet::Compile(m, {});
  EXPECT_FALSE(no_ops.IsManagement(Ip("10.0.5.5")));
  EXPECT_TRUE(no_ops.IsManagement(Ip("10.0.9.1")));

  Manifest any =
      MustParse("manifest: 1\nvm: w\nmanagement: [10.0.0.1, any]\nnetwork: {default: deny}\n");
  RuleSet rs_any = RuleSet::Compile(any, {});
  EXPECT_TRUE(rs_any.IsManagement(Ip("1.2.3.4")));
  EXPECT_TRUE(rs_any.IsManagement(Ip("::1")));
  Manifest none = MustParse("manifest: 1\nvm: w\nnetwork: {default: deny}\n");
  EXPECT_FALSE(RuleSet::Compile(none, {}).IsManagement(Ip("10.0.0.1")));
}

// Random manifests and flows: the index must agree with the linear scan.
class Differential {
 public:
  explicit Differential(uint32_t seed) : rng_(seed) {}

  Manifest RandomManifest(int rules, int max_ranges, bool wide) {
    Manifest m;
    m.vm = "self";
    m.default_action = Pick<Responses>({0, kRespAlert, kRespAlert | kRespDrop});
    for (int i = 0; i < rules; ++i) {
      NetRule r;
      r.name = "r" + std::to_string(i);
      r.direction = Pick({Direction::kIn, Direction::kOut, Direction::kBoth});
      r.proto = Pick<uint8_t>(
          {0, 0, kIpProtoTcp, kIpProtoTcp, kIpProtoUdp, kIpProtoIcmp, kIpProtoIcmpv6, 47});
      if (r.proto != 0 && r.proto != 47 && Chance(0.8)) {
        int n = 1 + Uniform(0, max_ranges - 1);
        uint32_t max = (r.proto == kIpProtoIcmp || r.proto == kIpProtoIcmpv6) ? 255 : 65535;
        for (int k = 0; k < n; ++k) r.ports.push_back(RandomRange(max, wide));
      }
      if (Chance(0.7)) {
        int n = 1 + Uniform(0, 2);
        for (int k = 0; k < n; ++k) r.peers.push_back(RandomPeer());
      }
      r.action = Pick<Responses>({0, kRespAlert, kRespAlert | kRespDrop, kRespAlert | kRespPause});
      m.rules.push_back(r);
    }
    return m;
  }

  FlowFacts RandomFlow() {
    FlowFacts f;
    f.direction = Chance(0.5) ? Direction::kIn : Direction::kOut;
    f.proto = Pick<uint8_t>(
        {0, kIpProtoTcp, kIpProtoTcp, kIpProtoUdp, kIpProtoIcmp, kIpProtoIcmpv6, 47, 50});
    f.service_port = static_cast<uint16_t>(RandomPort(65535));
    static const char* kIps[] = {"10.0.0.1",    "10.0.0.2",    "10.0.1.7",   "10.1.2.3",
                                 "192.168.1.1", "8.8.8.8",     "fd00::2",    "fd00::99",
                                 "fe80::1",     "2001:db8::5", "10.0.0.200", "10.255.0.1"};
    f.peer = Ip(kIps[Uniform(0, std::size(kIps) - 1)]);
    return f;
  }

  static RuleSet::VmAddresses Vms() {
    return {{"a", {Ip("10.0.0.1"), Ip("fd00::2")}}, {"b", {Ip("10.0.1.7")}}, {"c", {}}};
  }

  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool Chance(double p) { return std::bernoulli_distribution(p)(rng_); }
  template <typename T>
  T Pick(std::initializer_list<T> v) {
    return *(v.begin() + Uniform(0, static_cast<int>(v.size()) - 1));
  }

 private:
  // Ports cluster near a few values so that rules and flows meet.
  uint32_t RandomPort(uint32_t max) {
    switch (Uniform(0, 4)) {
      case 0:
        return static_cast<uint32_t>(Uniform(0, 40));
      case 1:
        return static_cast<uint32_t>(Uniform(0, static_cast<int>(max)));
      case 2:
        return max - static_cast<uint32_t>(Uniform(0, 3));
      case 3:
        return static_cast<uint32_t>(Uniform(75, 90));
      default:
        return static_cast<uint32_t>(Uniform(0, 300));
    }
  }
  PortRange RandomRange(uint32_t max, bool wide) {
    uint32_t a = std::min(RandomPort(max), max), b = a;
    if (wide || Chance(0.5))
      b = std::min(max, a + static_cast<uint32_t>(Uniform(0, wide ? 40000 : 30)));
    if (Chance(0.1)) b = max;
    return {static_cast<uint16_t>(a), static_cast<uint16_t>(b)};
  }
  Peer RandomPeer() {
    switch (Uniform(0, 9)) {
      case 0:
        return VmPeer("a");
      case 1:
        return VmPeer("b");
      case 2:
        return VmPeer("c");  // no addresses
      case 3:
        return VmPeer("ghost");  // unknown
      case 4:
        return CidrPeer("10.0.0.0/24");
      case 5:
        return CidrPeer("10.0.0.0/8");
      case 6:
        return CidrPeer("fd00::/8");
      case 7:
        return CidrPeer("10.0.0.128/25");
      case 8:
        return CidrPeer("0.0.0.0/0");
      default:
        return Peer{};  // any
    }
  }

  std::mt19937 rng_;
};

// Returns how many flows some rule (not the default) decided.
int ExpectSameVerdicts(const RuleSet& rs, Differential& d, int flows, const std::string& what) {
  int mismatches = 0, matched = 0;
  for (int i = 0; i < flows && mismatches < 5; ++i) {
    FlowFacts f = d.RandomFlow();
    RuleSet::Verdict fast = rs.Evaluate(f);
    RuleSet::Verdict slow = rs.EvaluateLinear(f);
    if (slow.rule >= 0) ++matched;
    if (fast.rule != slow.rule || fast.action != slow.action) {
      ++mismatches;
      ADD_FAILURE() << what << ": flow " << (f.direction == kIn ? "in" : "out") << " "
                    << f.peer.ToString() << " proto " << int{f.proto} << " port " << f.service_port
                    << ": Evaluate rule " << fast.rule << ", EvaluateLinear rule " << slow.rule;
    }
  }
  return matched;
}

TEST(RuleSetTest, RandomizedEvaluateMatchesLinear) {
  Differential d(20240611);
  int flows = 0, matched = 0;
  for (int round = 0; round < 300; ++round) {
    int rules = d.Pick({0, 1, 3, 10, 40, 200});
    Manifest m = d.RandomManifest(rules, 4, round % 5 == 0);
    RuleSet rs = RuleSet::Compile(m, Differential::Vms());
    ASSERT_EQ(rs.rule_count(), m.rules.size());
    matched += ExpectSameVerdicts(rs, d, 400, "round " + std::to_string(round));
    flows += 400;
  }
  // The flows must exercise the rules, not mostly fall to the default.
  EXPECT_GT(matched, flows / 3) << matched << " of " << flows;
}

TEST(RuleSetTest, LinearFallbackMatchesToo) {
  // Rule k covers ports [k, 65535-k] for one peer: N rules make about N^2
  // candidate entries per bucket, so N = 2100 (4.4 million) is past the
  // 4 million limit and the tcp buckets are scanned linearly; N = 1900
  // (3.6 million) stays indexed. Both must agree with the linear scan.
  Differential d(7);
  for (int n : {1900, 2100}) {
    Manifest m;
    m.vm = "self";
    for (int k = 1; k <= n; ++k) {
      NetRule r;
      r.name = "r" + std::to_string(k);
      r.proto = kIpProtoTcp;
      r.ports = {{static_cast<uint16_t>(k), static_cast<uint16_t>(65535 - k)}};
      r.peers = {k % 3 == 0 ? CidrPeer("10.0.1.0/24")
                            : CidrPeer("10.9.0." + std::to_string(k % 200))};
      r.action = static_cast<Responses>(k % 2 ? kRespAlert : 0);
      m.rules.push_back(r);
    }
    // A few flows that hit late rules.
    RuleSet rs = RuleSet::Compile(m, {});
    EXPECT_EQ(rs.Evaluate(Flow(kIn, "10.0.1.9", kIpProtoTcp, 3)).rule, 2);
    EXPECT_EQ(rs.Evaluate(Flow(kIn, "10.0.1.9", kIpProtoTcp, 65533)).rule, -1);
    ExpectSameVerdicts(rs, d, 1000, "n=" + std::to_string(n));
    // Flows aimed at these rules' peers.
    int matched = 0;
    for (int i = 0; i < 3000; ++i) {
      std::string peer = d.Chance(0.3) ? "10.0.1.9" : "10.9.0." + std::to_string(d.Uniform(0, 210));
      FlowFacts f =
          Flow(d.Chance(0.5) ? kIn : kOut, peer, d.Chance(0.9) ? kIpProtoTcp : kIpProtoUdp,
               static_cast<uint16_t>(d.Chance(0.5) ? d.Uniform(0, 2200) : d.Uniform(0, 65535)));
      RuleSet::Verdict fast = rs.Evaluate(f), slow = rs.EvaluateLinear(f);
      ASSERT_EQ(fast.rule, slow.rule) << "n=" << n << " " << peer << " port " << f.service_port;
      ASSERT_EQ(fast.action, slow.action);
      if (slow.rule >= 0) ++matched;
    }
    EXPECT_GT(matched, 1000) << "n=" << n;
  }
}

TEST(RuleSetTest, TenThousandSpecificRulesAgreeWithTheLinearScan) {
  Manifest m;
  m.vm = "self";
  m.default_action = kRespAlert | kRespDrop;
  for (int i = 0; i < 10000; ++i) {
    NetRule r;
    r.name = "r" + std::to_string(i);
    r.direction = i % 2 ? Direction::kIn : Direction::kOut;
    r.proto = i % 3 ? kIpProtoTcp : kIpProtoUdp;
    r.ports = {{static_cast<uint16_t>(1000 + i), static_cast<uint16_t>(1000 + i)}};
    r.peers = {CidrPeer("10." + std::to_string(i % 200) + ".0.0/16")};
    r.action = 0;
    m.rules.push_back(r);
  }
  RuleSet rs = RuleSet::Compile(m, {});
  std::vector<FlowFacts> flows;
  std::mt19937 rng(1);
  for (int i = 0; i < 1024; ++i) {
    int k = std::uniform_int_distribution<int>(0, 11999)(rng);
    flows.push_back(Flow(k % 2 ? kIn : kOut, "10." + std::to_string(k % 200) + ".1.1",
                         k % 3 ? kIpProtoTcp : kIpProtoUdp, static_cast<uint16_t>(1000 + k)));
  }
  for (const FlowFacts& f : flows) {
    ASSERT_EQ(rs.Evaluate(f).rule, rs.EvaluateLinear(f).rule);
  }
  // How fast: `blackbox bench manifest` (docs/BENCHMARKS.md), not a test.
}

}  // namespace
}  // namespace blackbox
