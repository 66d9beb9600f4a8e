#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "manifest/manifest.h"
#include "manifest/manifest_test_util.h"

// Cidr, and RuleSet: first match, directions and protocols, VM peers, and the index against
// the linear scan.

namespace blackbox {
namespace {

// The helpers of manifest_test_util.h are used unqualified.
using namespace manifest_test_util;  // NOLINT(build/namespaces)

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
