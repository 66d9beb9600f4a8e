#include "manifest/manifest_policy.h"

#include <gtest/gtest.h>

#include <mutex>

#include "common/files.h"
#include "manifest/alerts.h"
#include "switch/frame_builder.h"

namespace blackbox {
namespace {

using frames::Bytes;
using frames::Mac;
constexpr int64_t kSecond = 1'000'000'000;

IpAddr V4(uint8_t d) {
  std::array<uint8_t, 4> b = {10, 0, 0, d};
  return IpAddr::V4(b);
}

std::shared_ptr<const Manifest> Parse(const std::string& yaml) {
  auto m = ParseManifest(yaml, nullptr);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return std::make_shared<const Manifest>(m.ok() ? *m : Manifest{});
}

// Ports 1 (vm a, 10.0.0.1), 2 (vm b, 10.0.0.2), 3 (vm c, 10.0.0.3) on one
// segment; manifests as each test gives them.
class ManifestPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (uint8_t i = 1; i <= 3; ++i) {
      ports_[i] =
          sw_.AddPort({std::string(1, static_cast<char>('a' + i - 1)), "lan", Mac(i), {V4(i)}});
    }
  }
  void Use(std::map<std::string, std::string> manifests, ManifestPolicy::Options o = {}) {
    policy_ = std::make_unique<ManifestPolicy>(
        o, [this](ManifestPolicy::Violation&& v) { violations_.push_back(std::move(v)); });
    RuleSet::VmAddresses vms = {{"a", {V4(1)}}, {"b", {V4(2)}}, {"c", {V4(3)}}};
    for (auto& [name, yaml] : manifests) {
      ManifestPolicy::VmPolicy vp;
      vp.name = name;
      vp.manifest = Parse(yaml);
      vp.rules = RuleSet::Compile(*vp.manifest, vms);
      const uint8_t i = static_cast<uint8_t>(name[0] - 'a' + 1);
      vp.ports = {ports_[i]};
      vp.macs = {Mac(i)};
      policy_->AddVm(std::move(vp));
    }
    sw_.SetPolicy(policy_.get());
  }
  // A TCP frame from VM i to VM j.
  L2Switch::Decision Send(uint8_t i, uint8_t j, uint16_t sport, uint16_t dport, uint8_t flags,
                          int64_t now = kSecond, size_t size = 60) {
    Bytes f = frames::Tcp4(Mac(j), Mac(i), V4(i), V4(j), sport, dport, flags, size);
    return sw_.Process(ports_[i], f, now);
  }
  void Learn() {  // every port's MAC known, so unicast is not flooded
    for (uint8_t i = 1; i <= 3; ++i) {
      Bytes arp =
          frames::Arp(MacAddr{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}, Mac(i), Mac(i), V4(i), V4(9));
      sw_.Process(ports_[i], arp, 1);
    }
  }

  // kClientEnforce in observe mode as VM a, verdicts forgotten after 5 s idle.
  void UseObservingClientForgettingAfter5s();

  L2Switch sw_;
  std::map<uint8_t, uint32_t> ports_;
  std::unique_ptr<ManifestPolicy> policy_;
  std::vector<ManifestPolicy::Violation> violations_;
};

const char* kClientEnforce = R"(manifest: 1
vm: a
mode: enforce
network:
  default: [alert, drop]
  rules:
    - {name: http, direction: out, peer: b, proto: tcp, ports: [80], action: allow}
)";

void ManifestPolicyTest::UseObservingClientForgettingAfter5s() {
  ManifestPolicy::Options o;
  o.flow_idle_ns = 5 * kSecond;
  std::string yaml = kClientEnforce;
  yaml.replace(yaml.find("enforce"), 7, "observe");
  Use({{"a", yaml}}, o);
  Learn();
}

TEST_F(ManifestPolicyTest, AllowedFlowPassesAndAnUnlistedOneIsDroppedBothWays) {
  Use({{"a", kClientEnforce}});
  Learn();
  EXPECT_EQ(Send(1, 2, 40000, 80, kTcpSyn).drop, L2Switch::Drop::kNone);
  EXPECT_EQ(Send(2, 1, 80, 40000, kTcpSyn | kTcpAck).drop, L2Switch::Drop::kNone);
  EXPECT_TRUE(violations_.empty());

  auto d = Send(1, 2, 40001, 2222, kTcpSyn);
  EXPECT_EQ(d.drop, L2Switch::Drop::kPolicy);
  EXPECT_NE(d.reason.find("manifest a: network.default"), std::string::npos) << d.reason;
  // Retries and the peer's answer belong to the same flow: dropped, not re-alerted.
  EXPECT_EQ(Send(1, 2, 40001, 2222, kTcpSyn, 2 * kSecond).drop, L2Switch::Drop::kPolicy);
  EXPECT_EQ(Send(2, 1, 2222, 40001, kTcpRst | kTcpAck, 2 * kSecond).drop, L2Switch::Drop::kPolicy);
  ASSERT_EQ(violations_.size(), 1u);
  const auto& v = violations_[0];
  EXPECT_EQ(v.vm, "a");
  EXPECT_EQ(v.kind, "network");
  EXPECT_EQ(v.rule, -1);
  EXPECT_EQ(v.rule_name, "default");
  EXPECT_TRUE(v.enforced);
  EXPECT_EQ(v.action, kRespAlert | kRespDrop);
  EXPECT_EQ(v.flow.direction, Direction::kOut);
  EXPECT_EQ(v.flow.service_port, 2222);
  EXPECT_EQ(v.dst_ip, "10.0.0.2");
  EXPECT_EQ(v.dst_port, 2222);
  EXPECT_EQ(v.frame.size(), 60u);
  EXPECT_EQ(v.mono_ns, kSecond);
  EXPECT_EQ(sw_.GetCounters(ports_[1])->drop_count(L2Switch::Drop::kPolicy), 2u);
  EXPECT_EQ(sw_.GetCounters(ports_[2])->drop_count(L2Switch::Drop::kPolicy), 1u);
}

TEST_F(ManifestPolicyTest, ARemovedVmIsNoLongerCheckedAndAReplacedOneUsesItsNewRules) {
  Use({{"a", kClientEnforce}});
  Learn();
  EXPECT_EQ(Send(1, 2, 40001, 2222, kTcpSyn).drop, L2Switch::Drop::kPolicy);
  ASSERT_TRUE(policy_->SetQuarantined("a", false));

  // The VM ended: its port is no longer judged (the front cache too).
  EXPECT_TRUE(policy_->RemoveVm("a"));
  EXPECT_FALSE(policy_->RemoveVm("a"));
  EXPECT_FALSE(policy_->SetQuarantined("a", true));
  EXPECT_EQ(Send(1, 2, 40001, 2222, kTcpSyn, 2 * kSecond).drop, L2Switch::Drop::kNone);

  // It starts again with a manifest that allows 2222: the verdict cached
  // under the old rules is gone.
  std::string yaml = kClientEnforce;
  yaml.replace(yaml.find("ports: [80]"), 11, "ports: [80, 2222]");
  ManifestPolicy::VmPolicy vp;
  vp.name = "a";
  vp.manifest = Parse(yaml);
  vp.rules = RuleSet::Compile(*vp.manifest, {{"b", {V4(2)}}});
  vp.ports = {ports_[1]};
  vp.macs = {Mac(1)};
  policy_->AddVm(std::move(vp));
  EXPECT_EQ(Send(1, 2, 40001, 2222, kTcpSyn, 3 * kSecond).drop, L2Switch::Drop::kNone);
  EXPECT_EQ(Send(1, 2, 40002, 2223, kTcpSyn, 3 * kSecond).drop, L2Switch::Drop::kPolicy);
  EXPECT_EQ(violations_.size(), 2u);
  EXPECT_TRUE(policy_->SetQuarantined("a", true));
  EXPECT_TRUE(policy_->quarantined("a"));
}

TEST_F(ManifestPolicyTest, RecompilingOneVmLeavesTheOthersVerdictsAlone) {
  std::string observer = kClientEnforce;
  observer.replace(observer.find("vm: a"), 5, "vm: c");
  observer.replace(observer.find("enforce"), 7, "observe");
  Use({{"a", kClientEnforce}, {"c", observer}});
  Learn();
  EXPECT_EQ(Send(1, 2, 40001, 2222, kTcpSyn).drop, L2Switch::Drop::kPolicy);
  EXPECT_EQ(Send(3, 2, 40003, 2222, kTcpSyn).drop, L2Switch::Drop::kNone);
  ASSERT_EQ(violations_.size(), 2u);

  // c's rules are compiled again (a peer came or went): a's cached verdict
  // stands (no second alert), c's flow is judged again.
  ManifestPolicy::VmPolicy vp;
  vp.name = "c";
  vp.manifest = Parse(observer);
  vp.rules = RuleSet::Compile(*vp.manifest, {{"b", {V4(2)}}});
  vp.ports = {ports_[3]};
  vp.macs = {Mac(3)};
  policy_->AddVm(std::move(vp));
  EXPECT_EQ(Send(1, 2, 40001, 2222, kTcpSyn, 2 * kSecond).drop, L2Switch::Drop::kPolicy);
  EXPECT_EQ(violations_.size(), 2u);
  EXPECT_EQ(Send(3, 2, 40003, 2222, kTcpSyn, 2 * kSecond).drop, L2Switch::Drop::kNone);
  ASSERT_EQ(violations_.size(), 3u);
  EXPECT_EQ(violations_[2].vm, "c");
}

TEST_F(ManifestPolicyTest, TheFastPathReusesAVerdictButNotPastAQuarantine) {
  Use({{"a", R"(manifest: 1
vm: a
mode: enforce
network:
  default: allow
)"},
       {"b", R"(manifest: 1
vm: b
mode: enforce
network:
  default: allow
)"}});
  Learn();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Send(1, 2, 40000, 80, kTcpAck).drop, L2Switch::Drop::kNone);
  EXPECT_EQ(policy_->stats().fast, 4u) << "the first frame is judged, the rest reuse it";
  EXPECT_EQ(policy_->stats().judged, 2u);
  // Another flow from the same port: judged, then in the front cache too.
  EXPECT_EQ(Send(1, 2, 40001, 80, kTcpAck).drop, L2Switch::Drop::kNone);
  EXPECT_EQ(policy_->stats().judged, 4u);
  // Quarantine wins over a remembered verdict.
  EXPECT_TRUE(policy_->SetQuarantined("b", true));
  EXPECT_EQ(Send(1, 2, 40001, 80, kTcpAck).drop, L2Switch::Drop::kPolicy);
  EXPECT_TRUE(policy_->SetQuarantined("b", false));
  EXPECT_EQ(Send(1, 2, 40001, 80, kTcpAck).drop, L2Switch::Drop::kNone);
  EXPECT_TRUE(violations_.empty());
}

TEST_F(ManifestPolicyTest, AFlowThatQuarantinesItsVmIsNotPassedOnByTheFrontCache) {
  // The first frame of the flow passes (quarantine is not drop) and
  // quarantines the VM on the way; the next frames of the same flow must
  // meet the quarantine, not a remembered pass.
  Use({{"a", R"(manifest: 1
vm: a
mode: enforce
network:
  default: allow
  rules:
    - {name: bad, direction: out, peer: b, proto: tcp, ports: [80], action: quarantine}
)"}});
  Learn();
  Send(1, 2, 40000, 80, kTcpSyn);
  EXPECT_TRUE(policy_->quarantined("a"));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Send(1, 2, 40000, 80, kTcpAck).drop, L2Switch::Drop::kPolicy) << i;
  }
  EXPECT_EQ(policy_->stats().fast, 0u);
}

TEST_F(ManifestPolicyTest, ObserveModeAlertsAndForwards) {
  std::string yaml = kClientEnforce;
  yaml.replace(yaml.find("enforce"), 7, "observe");
  Use({{"a", yaml}});
  Learn();
  EXPECT_EQ(Send(1, 2, 40001, 2222, kTcpSyn).drop, L2Switch::Drop::kNone);
  EXPECT_EQ(Send(1, 2, 40001, 2222, kTcpAck).drop, L2Switch::Drop::kNone);
  ASSERT_EQ(violations_.size(), 1u);
  EXPECT_FALSE(violations_[0].enforced);
}

TEST_F(ManifestPolicyTest, TheReceiversManifestJudgesIncomingFlows) {
  Use({{"b", R"(manifest: 1
vm: b
mode: enforce
network:
  default: allow
  rules:
    - {name: no-ssh, direction: in, proto: tcp, ports: [22], action: deny}
)"}});
  Learn();
  auto d = Send(1, 2, 40000, 22, kTcpSyn);
  EXPECT_EQ(d.drop, L2Switch::Drop::kPolicy);
  EXPECT_NE(d.reason.find("rule 'no-ssh'"), std::string::npos) << d.reason;
  ASSERT_EQ(violations_.size(), 1u);
  EXPECT_EQ(violations_[0].vm, "b");
  EXPECT_EQ(violations_[0].flow.direction, Direction::kIn);
  EXPECT_EQ(violations_[0].flow.peer, V4(1));
  EXPECT_EQ(violations_[0].vm_port, ports_[2]);
  EXPECT_EQ(Send(1, 2, 40000, 80, kTcpSyn).drop, L2Switch::Drop::kNone);
}

TEST_F(ManifestPolicyTest, AFloodedFrameIsJudgedOnlyByItsAddressee) {
  // c would refuse anything; a unicast frame for b flooded (b not learned
  // yet) also reaches c's port but is not c's business.
  Use({{"c", R"(manifest: 1
vm: c
mode: enforce
network:
  default: deny
)"}});
  auto d = Send(1, 2, 40000, 80, kTcpSyn);
  EXPECT_EQ(d.drop, L2Switch::Drop::kNone);
  EXPECT_EQ(d.egress, (std::vector<uint32_t>{ports_[2], ports_[3]}));
  EXPECT_TRUE(violations_.empty());
  // Addressed to c (flooded to b and c, c not learned yet): c judges and
  // refuses it, so only b, which ignores it, gets it.
  auto to_c = Send(1, 3, 40000, 80, kTcpSyn);
  EXPECT_EQ(to_c.drop, L2Switch::Drop::kNone);
  EXPECT_EQ(to_c.egress, (std::vector<uint32_t>{ports_[2]}));
  EXPECT_EQ(violations_.size(), 1u);
  // Once c is learned the frame goes to c alone, and is dropped.
  Learn();
  EXPECT_EQ(Send(1, 3, 40000, 80, kTcpAck).drop, L2Switch::Drop::kPolicy);
}

TEST_F(ManifestPolicyTest, HousekeepingPassesUnlessChecked) {
  Use({{"a", R"(manifest: 1
vm: a
mode: enforce
network:
  default: deny
)"}});
  Bytes arp =
      frames::Arp(MacAddr{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}, Mac(1), Mac(1), V4(1), V4(2));
  EXPECT_EQ(sw_.Process(ports_[1], arp, 1).drop, L2Switch::Drop::kNone);
  EXPECT_TRUE(violations_.empty());
  Bytes udp = frames::Udp4(Mac(2), Mac(1), V4(1), V4(2));
  EXPECT_EQ(sw_.Process(ports_[1], udp, 2).drop, L2Switch::Drop::kPolicy);
}

TEST_F(ManifestPolicyTest, QuarantineLeavesOnlyManagementPeers) {
  Use({{"a", R"(manifest: 1
vm: a
mode: enforce
management: [c]
network:
  default: allow
  rules:
    - {name: probe, direction: out, proto: tcp, ports: [2222], action: quarantine}
)"}});
  Learn();
  EXPECT_EQ(Send(1, 2, 40000, 80, kTcpSyn).drop, L2Switch::Drop::kNone);
  Send(1, 2, 40001, 2222, kTcpSyn);  // the violation: quarantined from now on
  ASSERT_EQ(violations_.size(), 1u);
  EXPECT_TRUE(policy_->quarantined("a"));
  EXPECT_EQ(Send(1, 2, 40000, 80, kTcpAck).drop, L2Switch::Drop::kPolicy);
  EXPECT_EQ(Send(2, 1, 80, 40000, kTcpAck).drop, L2Switch::Drop::kPolicy);
  EXPECT_EQ(Send(1, 3, 40002, 22, kTcpSyn).drop, L2Switch::Drop::kNone) << "c is management";
  EXPECT_EQ(Send(3, 1, 22, 40002, kTcpSyn | kTcpAck).drop, L2Switch::Drop::kNone);
  EXPECT_TRUE(policy_->SetQuarantined("a", false));
  EXPECT_EQ(Send(1, 2, 40000, 80, kTcpAck).drop, L2Switch::Drop::kNone);
  EXPECT_FALSE(policy_->SetQuarantined("nobody", true));
}

TEST_F(ManifestPolicyTest, RateEnvelopeAlertsOncePerEpisodeAndDropsInEnforce) {
  Use({{"a", R"(manifest: 1
vm: a
mode: enforce
network:
  default: allow
rates:
  packets_per_s: 10
  action: [alert, drop]
)"}});
  Learn();
  int passed = 0;
  for (int i = 0; i < 30; ++i) {
    if (Send(1, 2, 40000, 80, kTcpAck, 10 * kSecond).drop == L2Switch::Drop::kNone) ++passed;
  }
  EXPECT_EQ(passed, 10) << "a burst of one second's worth";
  ASSERT_EQ(violations_.size(), 1u);
  EXPECT_EQ(violations_[0].kind, "rate");
  EXPECT_NE(violations_[0].reason.find("packets/s"), std::string::npos);
  // Half a second later 5 more fit.
  passed = 0;
  for (int i = 0; i < 10; ++i) {
    if (Send(1, 2, 40000, 80, kTcpAck, 10 * kSecond + kSecond / 2).drop == L2Switch::Drop::kNone)
      ++passed;
  }
  EXPECT_EQ(passed, 5);
  EXPECT_EQ(violations_.size(), 1u) << "same episode";
  // Quiet for a while, then over again: a new episode, a new alert.
  for (int i = 0; i < 12; ++i) Send(1, 2, 40000, 80, kTcpAck, 20 * kSecond);
  EXPECT_EQ(violations_.size(), 2u);
}

TEST_F(ManifestPolicyTest, AnIdleFlowIsForgottenAndJudgedAgain) {
  UseObservingClientForgettingAfter5s();
  Send(1, 2, 40001, 2222, kTcpSyn, kSecond);
  Send(1, 2, 40001, 2222, kTcpAck, 3 * kSecond);
  EXPECT_EQ(violations_.size(), 1u);
  Send(1, 2, 40001, 2222, kTcpAck, 20 * kSecond);
  EXPECT_EQ(violations_.size(), 2u);
}

TEST_F(ManifestPolicyTest, AFullCacheStillJudgesEveryFrameButAlertsSparingly) {
  ManifestPolicy::Options o;
  o.max_cached = 2;
  Use({{"a", kClientEnforce}}, o);
  Learn();
  for (uint16_t p = 0; p < 20; ++p) {
    EXPECT_EQ(Send(1, 2, static_cast<uint16_t>(40000 + p), 2222, kTcpSyn, kSecond + p).drop,
              L2Switch::Drop::kPolicy);
  }
  EXPECT_LE(violations_.size(), 3u);
  EXPECT_GE(policy_->stats().uncached_frames, 18u);
  EXPECT_EQ(policy_->stats().cached, 2u);
}

TEST_F(ManifestPolicyTest, AFlowUsedOnlyThroughTheFrontCacheIsNotForgotten) {
  // Frames of a known flow pass through the front cache without touching
  // the verdict; its use must still reach the verdict before idle ones are
  // swept, or the flow would be judged (and alerted) again while in use.
  UseObservingClientForgettingAfter5s();
  // Flow A's frame comes first at every step and so takes the full path
  // whenever a sweep is due; flow B's frames all pass through the front cache.
  for (int step = 2; step <= 40; ++step) {
    const int64_t now = step * kSecond / 2;
    Send(1, 2, 40001, 2222, kTcpAck, now);  // A
    Send(1, 2, 40002, 2222, kTcpAck, now);  // B
  }
  EXPECT_EQ(violations_.size(), 2u) << "re-judged while in use";
  EXPECT_EQ(policy_->stats().judged, 2u);
  EXPECT_GE(policy_->stats().fast, 39u) << "B did not use the front cache";
  Send(1, 2, 40002, 2222, kTcpAck, 40 * kSecond);  // B idle for 20 s: judged again
  EXPECT_EQ(violations_.size(), 3u);
}

TEST_F(ManifestPolicyTest, TheFrontCacheNeverPassesAFlowItDidNotJudge) {
  // Thousands of allowed flows fill the front cache (collisions, overwrites)
  // and the verdict cache grows (its entries move) while forbidden flows that
  // differ from allowed ones only in a port, a direction or an address are
  // sent between them: every forbidden frame is dropped, every allowed one
  // passes.
  Use({{"a", kClientEnforce}});
  Learn();
  int wrong = 0;
  for (int round = 0; round < 3; ++round) {
    for (uint16_t p = 0; p < 3000; ++p) {
      const int64_t now = kSecond + round;
      const uint16_t sport = static_cast<uint16_t>(30000 + p);
      wrong += Send(1, 2, sport, 80, kTcpAck, now).drop != L2Switch::Drop::kNone;
      wrong += Send(1, 2, sport, 81, kTcpAck, now).drop != L2Switch::Drop::kPolicy;
      wrong += Send(1, 3, sport, 80, kTcpAck, now).drop != L2Switch::Drop::kPolicy;
    }
  }
  EXPECT_EQ(wrong, 0);
  EXPECT_GT(policy_->stats().fast, 3000u) << "the front cache was not used";
  // IPv6 takes the same path.
  const IpAddr a6 = IpAddr::Parse("fd00::1").value(), b6 = IpAddr::Parse("fd00::2").value();
  Use({{"a", R"(manifest: 1
vm: a
mode: enforce
network:
  default: drop
  rules:
    - {direction: out, peer: "fd00::2", proto: udp, ports: [53], action: allow}
)"}});
  Learn();
  // (Check directly: the switch's anti-spoofing knows only the ports' IPv4
  // addresses.)
  auto check6 = [&](uint16_t dport) {
    const Bytes f = frames::Udp6(Mac(2), Mac(1), a6, b6, 0, 40000, dport);
    const ParsedFrame parsed = ParseFrame(f).value();
    std::vector<uint32_t> egress = {ports_[2]};
    std::string reason;
    return policy_->Check(ports_[1], parsed, f, kSecond, &egress, &reason);
  };
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(check6(53));
    EXPECT_FALSE(check6(54));
  }
  EXPECT_EQ(policy_->stats().fast, 3u);
}

// ---- AlertWriter ----

class AlertWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::Create("bb-alert-test");
    ASSERT_TRUE(d.ok());
    dir_.emplace(std::move(*d));
    StoreOptions so;
    so.path = dir_->path() + "/store";
    auto s = Store::Open(so);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
    RecordingInfo r;
    r.id = "a-1";
    r.vm_name = "a";
    r.state = "recording";
    ASSERT_TRUE(store_->PutRecording(r).ok());
  }
  std::vector<StoredEvent> ResponseEvents() {
    std::vector<StoredEvent> out;
    auto events = store_->ListEvents("a-1");
    EXPECT_TRUE(events.ok());
    for (auto& e : *events) {
      if (e.body.value("kind", "") == "response") out.push_back(e);
    }
    return out;
  }
  ManifestPolicy::Violation Violation(Responses action, bool enforced) {
    ManifestPolicy::Violation v;
    v.mono_ns = 1000;
    v.vm = "a";
    v.vm_port = 7;
    v.ingress = 7;
    v.kind = "network";
    v.rule_name = "default";
    v.rule_line = 4;
    v.action = action;
    v.enforced = enforced;
    v.flow.direction = Direction::kOut;
    v.flow.peer = V4(2);
    v.flow.proto = kIpProtoTcp;
    v.flow.service_port = 2222;
    v.src_ip = "10.0.0.1";
    v.dst_ip = "10.0.0.2";
    v.src_port = 40000;
    v.dst_port = 2222;
    v.proto = kIpProtoTcp;
    v.reason = "out flow ...";
    v.frame = std::string("\x01\x02", 2);
    return v;
  }

  std::optional<TempDir> dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(AlertWriterTest, StoresTheAlertWithEvidenceAndCarriesOutResponses) {
  auto control = std::make_shared<VmControl>();
  std::vector<std::string> asked;
  control->Attach([&](VmControl::Action a, const std::string&, VmControl::Done done) {
    asked.push_back(VmControl::ActionName(a));
    done(Status::Ok(), {{"status", "paused"}});
  });
  AlertWriter w(store_.get(), /*wall_offset_ns=*/5'000'000'000);
  w.SetVm("a", {"a-1", "cap-1", "/m/a.yaml", "abcd", {{7, "a/n0"}}, control});
  w.OnViolation(Violation(kRespAlert | kRespDrop | kRespPause, true));
  ASSERT_TRUE(w.Close().ok());
  auto listed = store_->ListAlerts();
  ASSERT_TRUE(listed.ok());
  auto& alerts = *listed;
  ASSERT_EQ(alerts.size(), 1u);
  const auto& b = alerts[0].body;
  EXPECT_EQ(b["vm"], "a");
  EXPECT_EQ(b["recording"], "a-1");
  EXPECT_EQ(b["mode"], "enforce");
  EXPECT_EQ(b["action"], nlohmann::json::array({"alert", "drop", "pause"}));
  EXPECT_EQ(b["carried_out"], b["action"]);
  EXPECT_EQ(b["flow"]["dst_port"], 2222);
  EXPECT_EQ(b["evidence"]["capture"], "cap-1");
  EXPECT_EQ(b["evidence"]["port"], "a/n0");
  EXPECT_EQ(b["evidence"]["frame_wall_ns"], 5'000'001'000);
  EXPECT_EQ(b["evidence"]["frame_hex"], "0102");
  EXPECT_GE(alerts[0].wall_ns, b["trigger_wall_ns"].get<int64_t>());
  EXPECT_EQ(asked, std::vector<std::string>{"pause"});
  auto resp = ResponseEvents();
  ASSERT_EQ(resp.size(), 2u);
  EXPECT_EQ(resp[0].body["action"], "drop");
  EXPECT_EQ(resp[0].body["outcome"], "done");
  EXPECT_EQ(resp[1].body["action"], "pause");
  EXPECT_EQ(resp[1].body["outcome"], "done");
  EXPECT_EQ(resp[1].body["detail"]["status"], "paused");
  EXPECT_EQ(resp[1].body["alert"], alerts[0].id);
}

// The VM-level responses run one after another: QEMU cannot take a snapshot
// of a VM that is already paused with replay events queued, so the pause
// waits for the snapshot's outcome, and the power-off comes last.
TEST_F(AlertWriterTest, VmResponsesRunInOrderEachAfterThePreviousOutcome) {
  auto control = std::make_shared<VmControl>();
  std::mutex mu;
  std::vector<std::pair<std::string, VmControl::Done>> asked;
  control->Attach([&](VmControl::Action a, const std::string&, VmControl::Done done) {
    std::lock_guard lock(mu);
    asked.emplace_back(VmControl::ActionName(a), std::move(done));
  });
  AlertWriter w(store_.get(), 0);
  w.SetVm("a", {"a-1", "", "", "", {}, control});
  w.OnViolation(Violation(kRespAlert | kRespPowerOff | kRespPause | kRespSnapshot, true));
  ASSERT_TRUE(w.Close().ok());  // the violation has been handled
  auto next = [&]() {
    std::lock_guard lock(mu);
    return asked;
  };
  ASSERT_EQ(next().size(), 1u);
  EXPECT_EQ(next()[0].first, "snapshot");
  next()[0].second(Unavailable("not now"), nullptr);
  ASSERT_EQ(next().size(), 2u);
  EXPECT_EQ(next()[1].first, "pause");
  next()[1].second(Status::Ok(), {{"status", "paused"}});
  ASSERT_EQ(next().size(), 3u);
  EXPECT_EQ(next()[2].first, "poweroff");
  next()[2].second(Status::Ok(), nullptr);
  auto resp = ResponseEvents();
  ASSERT_EQ(resp.size(), 3u);
  EXPECT_EQ(resp[0].body["action"], "snapshot");
  EXPECT_EQ(resp[0].body["outcome"], "failed: not now");
  EXPECT_EQ(resp[1].body["action"], "pause");
  EXPECT_EQ(resp[1].body["outcome"], "done");
  EXPECT_EQ(resp[2].body["action"], "poweroff");
}

TEST_F(AlertWriterTest, ObserveModeAndMissingControlAreRecordedAsSuch) {
  {
    AlertWriter w(store_.get(), 0);
    w.SetVm("a", {"a-1", "", "", "", {}, nullptr});
    w.OnViolation(Violation(kRespAlert | kRespPowerOff, false));
    w.OnViolation(Violation(kRespAlert | kRespSnapshot, true));
    ASSERT_TRUE(w.Close().ok());
  }
  AlertWriter w(store_.get(), 0);
  auto detached = std::make_shared<VmControl>();  // never attached: the VM is not running
  w.SetVm("a", {"a-1", "", "", "", {}, detached});
  w.OnViolation(Violation(kRespAlert | kRespPause, true));
  ASSERT_TRUE(w.Close().ok());
  auto resp = ResponseEvents();
  ASSERT_EQ(resp.size(), 3u);
  EXPECT_EQ(resp[0].body["outcome"], "not carried out: observe mode");
  EXPECT_EQ(resp[1].body["outcome"], "failed: no control of this VM");
  EXPECT_EQ(resp[2].body["outcome"], "failed: the VM is not running");
  EXPECT_EQ(w.GetStats().alerts, 1u);
  // Raised after Close: ignored, nothing crashes.
  w.OnViolation(Violation(kRespAlert, true));
  auto after = store_->ListAlerts();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->size(), 3u);
}

}  // namespace
}  // namespace blackbox
