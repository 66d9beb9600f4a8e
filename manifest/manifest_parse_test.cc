#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/files.h"
#include "manifest/manifest.h"
#include "manifest/manifest_test_util.h"

// ParseManifest and LoadManifest: what they read, their errors and their warnings.

namespace blackbox {
namespace {

// The helpers of manifest_test_util.h are used unqualified.
using namespace manifest_test_util;  // NOLINT(build/namespaces)

constexpr const char* kKernelSha =
    "8254c329a92850f6d539dd376f4816ee2764517da5e0235514af433164480d7a";
constexpr const char* kInitrdSha =
    "de7d1b721a1e0632b7cf04edf5032c8ecffa9f9a08492152b926f1a5a7e765d7";
constexpr const char* kDiskSha = "18ac3e7343f016890c510e93f935261169d9e3f565436429830faf0934f4f8e4";

// 1-based line of the first occurrence of `needle`.
int LineOf(const std::string& text, const std::string& needle) {
  size_t pos = text.find(needle);
  EXPECT_NE(pos, std::string::npos) << needle;
  return 1 + static_cast<int>(std::count(text.begin(), text.begin() + pos, '\n'));
}

std::string Error(const std::string& text) {
  auto m = ParseManifest(text, nullptr);
  if (m.ok()) return "(parsed)";
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument) << m.status().ToString();
  EXPECT_EQ(m.status().message().find('\n'), std::string::npos) << m.status().message();
  return m.status().message();
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

}  // namespace
}  // namespace blackbox
