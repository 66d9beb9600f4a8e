// libFuzzer target: manifests (user input) and the switch's checks against
// them (guest input).
//
// The input is a manifest's YAML text, a 0x00 byte, then a tape of frames:
//   [sel][len][len bytes of frame] ...
//   sel bits 0-1: ingress port (A, B, C, or an id never attached);
//   sel bits 2-4: clock advance before the frame (0, 1 ms, 100 ms, 1 s, 5 s,
//                 60 s, 200 s, 0);
//   sel bit 5:    quarantine (bit 6 clear) or release (bit 6 set) VM "a"
//                 before the frame.
// Frames shorter than 60 bytes are zero-padded, and a frame whose source MAC
// is not its port's is given the port's MAC (so more frames get past
// anti-spoofing into the manifest checks).
//
// Checked:
//   - ParseManifest never throws; an error is one line starting "manifest";
//     every warning is one line starting "manifest line".
//   - A manifest that parses writes out (ManifestToYaml) as YAML that parses
//     to the same rules, default and mode.
//   - RuleSet::Evaluate agrees with EvaluateLinear on every frame's flow,
//     both directions.
//   - The manifest (as VM "a" on port A, VM "b" on port B with a fixed
//     manifest) checked by ManifestPolicy in an L2Switch: every decision is
//     consistent (a policy drop has no egress, egress ports are attached,
//     ascending, never the ingress port, and a subset of what the switch
//     would do without the policy), and every violation names its VM and has
//     a one-line reason.
//   - The same policy without its front cache (Options::front_cache off)
//     decides every frame exactly alike: drop, egress, reason, violations.

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_check.h"
#include "manifest/manifest.h"
#include "manifest/manifest_policy.h"
#include "switch/l2_switch.h"

namespace blackbox::fuzz {
namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kAdvance[8] = {0,          kMs,         100 * kMs,    1000 * kMs,
                                 5000 * kMs, 60000 * kMs, 200000 * kMs, 0};

MacAddr Mac(uint8_t last) { return MacAddr{{0x52, 0x54, 0x00, 0x00, 0x00, last}}; }
IpAddr V4(uint8_t last) { return IpAddr::V4(std::array<uint8_t, 4>{10, 0, 0, last}); }

bool OneLine(const std::string& s) { return s.find('\n') == std::string::npos; }

const char* kPeerManifest = R"(manifest: 1
vm: b
mode: enforce
management: [c]
network:
  default: [alert, drop]
  rules:
    - {direction: in, peer: a, proto: tcp, ports: [80], action: allow}
    - {direction: out, proto: udp, ports: [53, 1000-2000], action: [alert, quarantine]}
rates: {packets_per_s: 50, bytes_per_s: 20K, new_connections_per_s: 5, action: [alert, drop]}
)";

void CheckEvaluate(const RuleSet& rules, const ParsedFrame& f) {
  if (f.l3 != ParsedFrame::L3::kIpv4 && f.l3 != ParsedFrame::L3::kIpv6) return;
  for (Direction d : {Direction::kIn, Direction::kOut}) {
    FlowFacts facts;
    facts.direction = d;
    facts.peer = d == Direction::kOut ? f.ip.dst : f.ip.src;
    facts.proto = f.ip.protocol;
    facts.service_port = f.transport.dst_port;
    if (f.l4 == ParsedFrame::L4::kIcmp || f.l4 == ParsedFrame::L4::kIcmpv6) {
      facts.service_port = f.transport.icmp_type;
    }
    RuleSet::Verdict fast = rules.Evaluate(facts), slow = rules.EvaluateLinear(facts);
    FUZZ_CHECK(fast.rule == slow.rule);
    FUZZ_CHECK(fast.action == slow.action);
  }
}

}  // namespace
}  // namespace blackbox::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace blackbox;
  using namespace blackbox::fuzz;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t sep = input.find('\0');
  const std::string yaml(input.substr(0, sep));
  std::vector<ManifestWarning> warnings;
  StatusOr<Manifest> parsed = ParseManifest(yaml, &warnings);
  if (!parsed.ok()) {
    FUZZ_CHECK(OneLine(parsed.status().message()));
    FUZZ_CHECK(parsed.status().message().rfind("manifest", 0) == 0);
    return 0;
  }
  for (const ManifestWarning& w : warnings) {
    FUZZ_CHECK(OneLine(w.message));
    FUZZ_CHECK(w.message.rfind("manifest line", 0) == 0);
  }
  const Manifest& m = *parsed;
  {
    StatusOr<Manifest> again = ParseManifest(ManifestToYaml(m), nullptr);
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(again->rules.size() == m.rules.size());
    FUZZ_CHECK(again->default_action == m.default_action);
    FUZZ_CHECK(again->mode == m.mode);
    for (size_t i = 0; i < m.rules.size(); ++i) {
      FUZZ_CHECK(again->rules[i].action == m.rules[i].action);
      FUZZ_CHECK(again->rules[i].ports == m.rules[i].ports);
      FUZZ_CHECK(again->rules[i].proto == m.rules[i].proto);
      FUZZ_CHECK(again->rules[i].direction == m.rules[i].direction);
    }
  }
  if (sep == std::string_view::npos) return 0;

  const RuleSet::VmAddresses vms = {{"a", {V4(1)}}, {"b", {V4(2)}}, {"c", {V4(3)}}};
  auto mine = std::make_shared<const Manifest>(m);
  auto peer = std::make_shared<const Manifest>(ParseManifest(kPeerManifest, nullptr).value());
  const RuleSet rules = RuleSet::Compile(*mine, vms);

  L2Switch plain, checked, reference;
  uint32_t ports[3];
  for (uint8_t i = 0; i < 3; ++i) {
    L2Switch::PortConfig pc{std::string(1, static_cast<char>('a' + i)), "lan", Mac(i + 1), {}};
    ports[i] = plain.AddPort(pc);
    FUZZ_CHECK(checked.AddPort(pc) == ports[i]);
    FUZZ_CHECK(reference.AddPort(pc) == ports[i]);
  }
  int violations = 0;
  std::vector<std::string> seen, expected;  // violations with and without the front cache
  ManifestPolicy::Options po;
  po.max_cached = 8;           // reach the full-cache path too
  po.initial_cache_slots = 4;  // and growth (verdicts move) within a few flows
  ManifestPolicy policy(po, [&](ManifestPolicy::Violation&& v) {
    FUZZ_CHECK(v.vm == "a" || v.vm == "b");
    FUZZ_CHECK(OneLine(v.reason) && !v.reason.empty());
    FUZZ_CHECK(v.frame.size() <= 256);
    ++violations;
    seen.push_back(v.vm + " " + v.reason);
  });
  ManifestPolicy::Options ro = po;
  ro.front_cache = false;
  ManifestPolicy ref(
      ro, [&](ManifestPolicy::Violation&& v) { expected.push_back(v.vm + " " + v.reason); });
  for (ManifestPolicy* p : {&policy, &ref}) {
    p->AddVm({"a", mine, rules, {ports[0]}, {Mac(1)}});
    p->AddVm({"b", peer, RuleSet::Compile(*peer, vms), {ports[1]}, {Mac(2)}});
  }
  checked.SetPolicy(&policy);
  reference.SetPolicy(&ref);

  int64_t now = 1;
  size_t at = sep + 1;
  L2Switch::Decision d0, d1, d2;
  while (at + 2 <= size) {
    const uint8_t sel = data[at];
    const size_t len = data[at + 1];
    at += 2;
    std::vector<uint8_t> frame(data + at, data + std::min(size, at + len));
    at += len;
    if (frame.size() < 60) frame.resize(60, 0);
    now += kAdvance[(sel >> 2) & 7];
    if (sel & 0x20) {
      policy.SetQuarantined("a", !(sel & 0x40));
      ref.SetQuarantined("a", !(sel & 0x40));
    }
    const uint32_t ingress = (sel & 3) == 3 ? 0 : ports[sel & 3];
    if (ingress != 0) {
      const MacAddr src = Mac(static_cast<uint8_t>((sel & 3) + 1));
      std::copy(src.bytes.begin(), src.bytes.end(), frame.begin() + 6);
    }
    if (auto p = ParseFrame(frame); p.ok()) CheckEvaluate(rules, *p);
    plain.Process(ingress, frame, now, &d0);
    checked.Process(ingress, frame, now, &d1);
    reference.Process(ingress, frame, now, &d2);
    FUZZ_CHECK(d1.drop == d2.drop);
    FUZZ_CHECK(d1.egress == d2.egress);
    FUZZ_CHECK(d1.reason == d2.reason);
    FUZZ_CHECK(seen == expected);
    if (d1.drop == L2Switch::Drop::kPolicy) {
      FUZZ_CHECK(d1.egress.empty());
      FUZZ_CHECK(d0.drop == L2Switch::Drop::kNone);
      FUZZ_CHECK(OneLine(d1.reason));
    } else {
      FUZZ_CHECK(d1.drop == d0.drop);
    }
    for (size_t i = 0; i < d1.egress.size(); ++i) {
      FUZZ_CHECK(d1.egress[i] != ingress);
      FUZZ_CHECK(i == 0 || d1.egress[i - 1] < d1.egress[i]);
      FUZZ_CHECK(std::find(d0.egress.begin(), d0.egress.end(), d1.egress[i]) != d0.egress.end());
    }
  }
  const ManifestPolicy::Stats st = policy.stats();
  FUZZ_CHECK(st.cached <= po.max_cached);
  FUZZ_CHECK(st.violations == static_cast<uint64_t>(violations));
  return 0;
}
