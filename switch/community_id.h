// Community ID flow hashing, version 1.
//
// Implements https://github.com/corelight/community-id-spec: a direction-free
// string id for a flow, shared with Zeek, Suricata, Wireshark and others, so a
// Blackbox flow can be joined against their logs by string comparison.
//
//   sha1(seed:u16be . ip_a . ip_b . proto:u8 . 0:u8 [. port_a:u16be . port_b:u16be])
//   id = "1:" + base64(digest)
//
// where (ip_a, port_a) is the numerically smaller endpoint. Ports are hashed only
// for TCP, UDP, SCTP, ICMP and ICMPv6. For ICMP/ICMPv6 the "ports" are the type
// and, for request/reply types, the counterpart type (echo 8 <-> reply 0, ...),
// else the code; one-way ICMP types (e.g. unreachable) are not reordered. This
// mirrors Zeek and the reference implementation (pycommunityid).
//
// Thread safety: pure functions; safe from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "switch/frame.h"

namespace blackbox {

inline constexpr uint8_t kIpProtoSctp = 132;

struct FlowTuple {
  IpFamily family = IpFamily::kNone;
  // Network order; an IPv4 address uses the first 4 bytes, the rest is ignored.
  std::array<uint8_t, 16> src_ip{};
  std::array<uint8_t, 16> dst_ip{};
  uint8_t proto = 0;
  // TCP/UDP/SCTP: ports. ICMP/ICMPv6: src_port is the type, dst_port the code.
  // Ignored for other protocols.
  uint16_t src_port = 0;
  uint16_t dst_port = 0;
};

// Returns the v1 Community ID, e.g. "1:LQU9qZlK+B5F3KDmev6m5PMibrg=". Returns ""
// if tuple.family is kNone (the spec allows an empty id for unsupported flows).
std::string CommunityId(const FlowTuple& tuple, uint16_t seed = 0);

// The flow tuple of a parsed IPv4/IPv6 frame. nullopt for non-IP frames and for
// non-first fragments of TCP/UDP/SCTP/ICMP packets (their ports are unknown;
// hashing them without ports would give an id no other tool produces).
std::optional<FlowTuple> FlowTupleOf(const ParsedFrame& frame);

}  // namespace blackbox
