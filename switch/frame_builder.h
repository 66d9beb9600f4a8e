// Builders of well-formed Ethernet frames: for unit tests, fuzz seeds and the
// switch benchmark's load generator. Every frame is at least the Ethernet
// minimum of 60 bytes (without FCS), zero-padded.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "switch/frame.h"

namespace blackbox::frames {

using Bytes = std::vector<uint8_t>;

// The unicast MAC 52:54:00:00:00:<last> (QEMU's prefix), for test ports.
inline MacAddr Mac(uint8_t last) { return MacAddr{{0x52, 0x54, 0x00, 0x00, 0x00, last}}; }

// Ethernet header only (14 bytes), no padding.
Bytes Ethernet(const MacAddr& dst, const MacAddr& src, uint16_t ethertype);

// An ARP request (op 1) or reply (op 2) for IPv4 from sender_mac/sender_ip;
// the target MAC is eth_dst in a reply, zero in a request.
Bytes Arp(const MacAddr& eth_dst, const MacAddr& eth_src, const MacAddr& sender_mac,
          const IpAddr& sender_ip, const IpAddr& target_ip, uint16_t op = 1);

// An IPv4/UDP frame of exactly `size` bytes (at least 60), with a valid IPv4
// header checksum, UDP checksum 0 and a zero payload.
Bytes Udp4(const MacAddr& dst, const MacAddr& src, const IpAddr& src_ip, const IpAddr& dst_ip,
           size_t size = 60, uint16_t sport = 1234, uint16_t dport = 5678);

// An IPv4/TCP frame of `size` bytes (at least 60) with the given flags
// (kTcpSyn ...), a valid IPv4 header checksum, TCP checksum 0.
Bytes Tcp4(const MacAddr& dst, const MacAddr& src, const IpAddr& src_ip, const IpAddr& dst_ip,
           uint16_t sport, uint16_t dport, uint8_t flags, size_t size = 60);

// An IPv6/UDP frame with `payload` zero bytes (UDP checksum 0).
Bytes Udp6(const MacAddr& dst, const MacAddr& src, const IpAddr& src_ip, const IpAddr& dst_ip,
           size_t payload = 0, uint16_t sport = 546, uint16_t dport = 547);

}  // namespace blackbox::frames
