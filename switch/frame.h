// Ethernet frame parsing for frames emitted by a guest NIC.
//
// ParseFrame() is a strict, allocation-free (on success) decoder of the L2/L3/L4
// headers of one Ethernet frame. Its input comes from a guest and is treated as
// hostile: every read is bounds-checked against the frame and, above L3, against
// the length the IP header claims; no length field is trusted until checked.
// Checksums are NOT verified (virtio-net checksum offload leaves them partial).
//
// What is decoded:
//   Ethernet II, optionally one 802.1Q tag (TPID 0x8100).
//   ARP for Ethernet/IPv4 (htype 1, ptype 0x0800).
//   IPv4 (options skipped) and IPv6 (hop-by-hop, routing, destination-options and
//   fragment extension headers skipped, at most kMaxIpv6ExtHeaders of them).
//   TCP, UDP, ICMP and ICMPv6 headers (unless the packet is a non-first fragment).
// Anything else (802.3 length frames, a second VLAN tag, other ethertypes, other
// IP protocols) is not an error: parsing simply stops at the last understood
// layer and the remaining bytes are reported as payload.
//
// Thread safety: free functions and plain values; safe from any thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"

namespace blackbox {

// An Ethernet MAC address.
struct MacAddr {
  std::array<uint8_t, 6> bytes{};

  // "52:54:00:12:34:56" (lower-case hex).
  std::string ToString() const;
  // Parses exactly "xx:xx:xx:xx:xx:xx" (hex, either case); InvalidArgument otherwise.
  static StatusOr<MacAddr> Parse(std::string_view text);

  bool IsBroadcast() const;  // ff:ff:ff:ff:ff:ff
  bool IsMulticast() const;  // group bit set (includes broadcast)

  friend bool operator==(const MacAddr&, const MacAddr&) = default;
};

enum class IpFamily : uint8_t { kNone = 0, kIpv4 = 4, kIpv6 = 6 };

// An IPv4 or IPv6 address in a fixed 16-byte form. An IPv4 address occupies
// bytes[0..3] (network order) and the remaining 12 bytes are zero.
struct IpAddr {
  IpFamily family = IpFamily::kNone;
  std::array<uint8_t, 16> bytes{};

  // 4 for IPv4, 16 for IPv6, 0 for kNone.
  size_t size() const;
  // The address bytes in network order (size() of them).
  std::span<const uint8_t> view() const { return {bytes.data(), size()}; }

  // "10.0.2.15", "fe80::1" (RFC 5952 form), or "" for kNone.
  std::string ToString() const;

  static IpAddr V4(std::span<const uint8_t, 4> b);
  static IpAddr V6(std::span<const uint8_t, 16> b);
  // Parses dotted IPv4 or any textual IPv6 form; InvalidArgument otherwise.
  static StatusOr<IpAddr> Parse(const std::string& text);

  friend bool operator==(const IpAddr&, const IpAddr&) = default;
};

inline constexpr uint16_t kEtherTypeIpv4 = 0x0800;
inline constexpr uint16_t kEtherTypeArp = 0x0806;
inline constexpr uint16_t kEtherTypeVlan = 0x8100;
inline constexpr uint16_t kEtherTypeIpv6 = 0x86DD;

inline constexpr uint8_t kIpProtoIcmp = 1;
inline constexpr uint8_t kIpProtoTcp = 6;
inline constexpr uint8_t kIpProtoUdp = 17;
inline constexpr uint8_t kIpProtoIcmpv6 = 58;

inline constexpr size_t kEthernetHeaderSize = 14;
// Largest accepted frame: a maximal IP packet plus the Ethernet header.
inline constexpr size_t kMaxFrameSize = 65535 + kEthernetHeaderSize;
// Bound on IPv6 extension headers walked before giving up (InvalidArgument).
inline constexpr int kMaxIpv6ExtHeaders = 8;

// TCP flag bits as found in ParsedFrame::Transport::tcp_flags.
inline constexpr uint8_t kTcpFin = 0x01;
inline constexpr uint8_t kTcpSyn = 0x02;
inline constexpr uint8_t kTcpRst = 0x04;
inline constexpr uint8_t kTcpPsh = 0x08;
inline constexpr uint8_t kTcpAck = 0x10;
inline constexpr uint8_t kTcpUrg = 0x20;
inline constexpr uint8_t kTcpEce = 0x40;
inline constexpr uint8_t kTcpCwr = 0x80;

struct ParsedFrame {
  enum class L3 { kNone, kArp, kIpv4, kIpv6 };
  enum class L4 { kNone, kTcp, kUdp, kIcmp, kIcmpv6 };

  MacAddr dst;
  MacAddr src;
  // The ethertype after at most one 802.1Q tag (a value < 0x0600 is an 802.3
  // length; a second 0x8100 means a stacked tag, which is not decoded).
  uint16_t ethertype = 0;
  bool has_vlan = false;
  uint16_t vlan_id = 0;  // 12-bit VID; valid if has_vlan
  uint8_t vlan_pcp = 0;  // 3-bit priority; valid if has_vlan

  L3 l3 = L3::kNone;

  // Valid if l3 == kArp.
  struct Arp {
    uint16_t op = 0;  // 1 request, 2 reply
    MacAddr sender_mac;
    IpAddr sender_ip;
    MacAddr target_mac;
    IpAddr target_ip;
  } arp;

  // Valid if l3 is kIpv4 or kIpv6.
  struct Ip {
    IpAddr src;
    IpAddr dst;
    // The upper-layer protocol: for IPv6 the next header after the skipped
    // extension headers (59 for "no next header").
    uint8_t protocol = 0;
    uint8_t ttl = 0;  // TTL or hop limit
    // IPv4 total length, or 40 + IPv6 payload length: the packet's size in
    // bytes from the start of the IP header (Ethernet padding excluded).
    uint32_t total_length = 0;
    bool is_fragment = false;            // MF set or offset != 0 (v4); fragment header (v6)
    bool is_non_first_fragment = false;  // fragment offset != 0; no L4 header then
  } ip;

  L4 l4 = L4::kNone;

  // Valid according to l4.
  struct Transport {
    uint16_t src_port = 0;  // TCP/UDP
    uint16_t dst_port = 0;  // TCP/UDP
    uint8_t tcp_flags = 0;  // TCP: CWR..FIN (byte 13 of the header)
    uint8_t icmp_type = 0;  // ICMP/ICMPv6
    uint8_t icmp_code = 0;  // ICMP/ICMPv6
  } transport;

  // The bytes after the innermost decoded header, as offsets into the frame:
  // the TCP/UDP payload, the ICMP message body after type/code/checksum, the
  // IP payload for other protocols and non-first fragments, the bytes after the
  // Ethernet header when L3 is kNone, and an empty range after an ARP body.
  // IP payloads end at the IP length, so Ethernet padding is never included.
  size_t payload_offset = 0;
  size_t payload_length = 0;
};

// Parses one Ethernet frame (without FCS). Returns InvalidArgument with a short
// reason if the frame is shorter than 14 or longer than kMaxFrameSize bytes, or
// if a header it decodes is truncated or malformed (IPv4 IHL < 5, an IP length
// beyond the frame, a TCP data offset < 5, too many IPv6 extension headers, ...).
StatusOr<ParsedFrame> ParseFrame(std::span<const uint8_t> frame);

}  // namespace blackbox
