#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "manifest/manifest.h"
#include "manifest/manifest_test_util.h"

// ManifestToYaml: what it writes reads back to the same manifest.

namespace blackbox {
namespace {

// The helpers of manifest_test_util.h are used unqualified.
using namespace manifest_test_util;  // NOLINT(build/namespaces)

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

}  // namespace
}  // namespace blackbox
