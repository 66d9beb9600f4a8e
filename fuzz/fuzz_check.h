// Shared helpers of the libFuzzer targets (fuzz_switch.cc, fuzz_frame.cc):
// an invariant check that aborts with a message, and the properties every
// ParseFrame() result must have.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>
#include <utility>

#include "switch/community_id.h"
#include "switch/frame.h"

// Aborts (the fuzzer records a crash) when `cond` is false.
#define FUZZ_CHECK(cond)                                                                  \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)

namespace blackbox::fuzz {

// Properties of a successful parse of `frame` (see frame.h).
inline void CheckParsedFrame(std::span<const uint8_t> frame, const ParsedFrame& f) {
  using L3 = ParsedFrame::L3;
  using L4 = ParsedFrame::L4;
  FUZZ_CHECK(frame.size() >= kEthernetHeaderSize && frame.size() <= kMaxFrameSize);
  FUZZ_CHECK(f.payload_offset <= frame.size());
  FUZZ_CHECK(f.payload_length <= frame.size() - f.payload_offset);

  const size_t l3_off = kEthernetHeaderSize + (f.has_vlan ? 4 : 0);
  FUZZ_CHECK(l3_off <= frame.size());
  if (f.has_vlan) {
    FUZZ_CHECK(f.vlan_id < 4096 && f.vlan_pcp < 8);
  } else {
    FUZZ_CHECK(f.vlan_id == 0 && f.vlan_pcp == 0);
  }
  FUZZ_CHECK(f.payload_offset >= l3_off);

  // MAC text round trip.
  auto src = MacAddr::Parse(f.src.ToString());
  FUZZ_CHECK(src.ok() && *src == f.src);
  FUZZ_CHECK(f.dst.IsBroadcast() <= f.dst.IsMulticast());

  if (f.l3 != L3::kIpv4 && f.l3 != L3::kIpv6) FUZZ_CHECK(f.l4 == L4::kNone);
  switch (f.l3) {
    case L3::kNone:
      // ARP/IPv4/IPv6 either parse or are rejected; never left undecoded.
      FUZZ_CHECK(f.ethertype != kEtherTypeArp && f.ethertype != kEtherTypeIpv4 &&
                 f.ethertype != kEtherTypeIpv6);
      FUZZ_CHECK(f.payload_offset == l3_off && f.payload_length == frame.size() - l3_off);
      break;
    case L3::kArp:
      FUZZ_CHECK(f.ethertype == kEtherTypeArp);
      FUZZ_CHECK(frame.size() - l3_off >= 28);
      FUZZ_CHECK(f.payload_offset == l3_off + 28 && f.payload_length == 0);
      FUZZ_CHECK(f.arp.sender_ip.family == IpFamily::kIpv4);
      FUZZ_CHECK(f.arp.target_ip.family == IpFamily::kIpv4);
      FUZZ_CHECK(!f.arp.sender_ip.ToString().empty());
      break;
    case L3::kIpv4:
    case L3::kIpv6: {
      const bool v6 = f.l3 == L3::kIpv6;
      FUZZ_CHECK(f.ethertype == (v6 ? kEtherTypeIpv6 : kEtherTypeIpv4));
      const IpFamily fam = v6 ? IpFamily::kIpv6 : IpFamily::kIpv4;
      FUZZ_CHECK(f.ip.src.family == fam && f.ip.dst.family == fam);
      FUZZ_CHECK(!f.ip.src.ToString().empty() && !f.ip.dst.ToString().empty());
      const size_t min_header = v6 ? 40 : 20;
      FUZZ_CHECK(f.ip.total_length >= min_header);
      FUZZ_CHECK(f.ip.total_length <= frame.size() - l3_off);
      const size_t ip_end = l3_off + f.ip.total_length;
      FUZZ_CHECK(f.payload_offset >= l3_off + min_header);
      FUZZ_CHECK(f.payload_offset + f.payload_length <= ip_end);
      if (f.ip.is_non_first_fragment) {
        FUZZ_CHECK(f.ip.is_fragment);
        FUZZ_CHECK(f.l4 == L4::kNone);
      }
      switch (f.l4) {
        case L4::kNone:
          // Undecoded upper layer: everything up to the IP end is payload.
          FUZZ_CHECK(f.payload_offset + f.payload_length == ip_end);
          break;
        case L4::kTcp:
          FUZZ_CHECK(f.ip.protocol == kIpProtoTcp);
          FUZZ_CHECK(f.payload_offset + f.payload_length == ip_end);
          break;
        case L4::kUdp:
          FUZZ_CHECK(f.ip.protocol == kIpProtoUdp);
          break;
        case L4::kIcmp:
          FUZZ_CHECK(!v6 && f.ip.protocol == kIpProtoIcmp);
          FUZZ_CHECK(f.payload_offset + f.payload_length == ip_end);
          break;
        case L4::kIcmpv6:
          FUZZ_CHECK(v6 && f.ip.protocol == kIpProtoIcmpv6);
          FUZZ_CHECK(f.payload_offset + f.payload_length == ip_end);
          break;
      }
      break;
    }
  }
}

// Community ID properties of a parsed IP frame: well formed, and the same for
// both directions of a TCP/UDP/other-protocol flow and for an ICMP echo
// request and its reply.
inline void CheckCommunityId(const ParsedFrame& f) {
  std::optional<FlowTuple> t = FlowTupleOf(f);
  if (f.l3 != ParsedFrame::L3::kIpv4 && f.l3 != ParsedFrame::L3::kIpv6) {
    FUZZ_CHECK(!t);
    return;
  }
  if (f.l4 != ParsedFrame::L4::kNone) FUZZ_CHECK(t.has_value());
  if (!t) return;
  const uint16_t seed = static_cast<uint16_t>(f.transport.src_port ^ f.ip.ttl);
  const std::string id = CommunityId(*t, seed);
  FUZZ_CHECK(id.size() == 30 && id.compare(0, 2, "1:") == 0);

  FlowTuple r = *t;
  std::swap(r.src_ip, r.dst_ip);
  bool symmetric = true;
  if (f.l4 == ParsedFrame::L4::kTcp || f.l4 == ParsedFrame::L4::kUdp) {
    std::swap(r.src_port, r.dst_port);
  } else if (f.l4 == ParsedFrame::L4::kIcmp && (t->src_port == 8 || t->src_port == 0)) {
    r.src_port = t->src_port == 8 ? 0 : 8;  // echo request <-> reply
  } else if (f.l4 == ParsedFrame::L4::kIcmpv6 && (t->src_port == 128 || t->src_port == 129)) {
    r.src_port = t->src_port == 128 ? 129 : 128;
  } else if (f.l4 != ParsedFrame::L4::kNone) {
    symmetric = false;  // one-way ICMP types are not reordered
  }
  if (symmetric) FUZZ_CHECK(CommunityId(r, seed) == id);
}

}  // namespace blackbox::fuzz
