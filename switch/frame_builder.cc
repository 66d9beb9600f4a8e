#include "switch/frame_builder.h"

#include <algorithm>

namespace blackbox::frames {
namespace {

void Put16(Bytes& b, size_t v) {
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}
void Append(Bytes& b, std::span<const uint8_t> more) {
  b.insert(b.end(), more.begin(), more.end());
}
void PadToMinimum(Bytes& b) { b.resize(std::max<size_t>(b.size(), 60), 0); }

}  // namespace

Bytes Ethernet(const MacAddr& dst, const MacAddr& src, uint16_t ethertype) {
  Bytes b;
  Append(b, dst.bytes);
  Append(b, src.bytes);
  Put16(b, ethertype);
  return b;
}

Bytes Arp(const MacAddr& eth_dst, const MacAddr& eth_src, const MacAddr& sender_mac,
          const IpAddr& sender_ip, const IpAddr& target_ip, uint16_t op) {
  Bytes b = Ethernet(eth_dst, eth_src, kEtherTypeArp);
  Put16(b, 1);       // htype Ethernet
  Put16(b, 0x0800);  // ptype IPv4
  b.push_back(6);
  b.push_back(4);
  Put16(b, op);
  Append(b, sender_mac.bytes);
  Append(b, sender_ip.view());
  Append(b, (op == 2 ? eth_dst : MacAddr{}).bytes);
  Append(b, target_ip.view());
  PadToMinimum(b);
  return b;
}

namespace {

// An IPv4 frame of `size` bytes carrying protocol `proto`, with a valid
// header checksum; returns it with the offset of the L4 header.
Bytes Ip4(const MacAddr& dst, const MacAddr& src, const IpAddr& src_ip, const IpAddr& dst_ip,
          size_t size, uint8_t proto) {
  size = std::max<size_t>(size, 60);
  Bytes b = Ethernet(dst, src, kEtherTypeIpv4);
  const size_t ip_len = size - b.size();
  const size_t ip_at = b.size();
  b.insert(b.end(), {0x45, 0x00});
  Put16(b, ip_len);
  Put16(b, 1);       // id
  Put16(b, 0x4000);  // DF
  b.push_back(64);
  b.push_back(proto);
  Put16(b, 0);  // header checksum, below
  Append(b, src_ip.view());
  Append(b, dst_ip.view());
  uint32_t sum = 0;
  for (size_t i = ip_at; i < ip_at + 20; i += 2) sum += (b[i] << 8) | b[i + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  b[ip_at + 10] = static_cast<uint8_t>(~sum >> 8);
  b[ip_at + 11] = static_cast<uint8_t>(~sum);
  return b;
}

}  // namespace

Bytes Tcp4(const MacAddr& dst, const MacAddr& src, const IpAddr& src_ip, const IpAddr& dst_ip,
           uint16_t sport, uint16_t dport, uint8_t flags, size_t size) {
  size = std::max<size_t>(size, 14 + 20 + 20);
  Bytes b = Ip4(dst, src, src_ip, dst_ip, size, kIpProtoTcp);
  Put16(b, sport);
  Put16(b, dport);
  b.insert(b.end(), {0, 0, 0, 1, 0, 0, 0, 0});  // seq 1, ack 0
  b.push_back(5 << 4);                          // data offset: 20 bytes
  b.push_back(flags);
  Put16(b, 65535);  // window
  Put16(b, 0);      // checksum (not checked by the parser)
  Put16(b, 0);      // urgent pointer
  b.resize(size, 0);
  return b;
}

Bytes Udp4(const MacAddr& dst, const MacAddr& src, const IpAddr& src_ip, const IpAddr& dst_ip,
           size_t size, uint16_t sport, uint16_t dport) {
  size = std::max<size_t>(size, 60);
  Bytes b = Ip4(dst, src, src_ip, dst_ip, size, kIpProtoUdp);
  const size_t ip_len = size - 14;
  Put16(b, sport);
  Put16(b, dport);
  Put16(b, ip_len - 20);
  Put16(b, 0);
  b.resize(size, 0);
  return b;
}

Bytes Udp6(const MacAddr& dst, const MacAddr& src, const IpAddr& src_ip, const IpAddr& dst_ip,
           size_t payload, uint16_t sport, uint16_t dport) {
  Bytes b = Ethernet(dst, src, kEtherTypeIpv6);
  b.insert(b.end(), {0x60, 0, 0, 0});
  Put16(b, 8 + payload);
  b.push_back(kIpProtoUdp);
  b.push_back(255);
  Append(b, src_ip.view());
  Append(b, dst_ip.view());
  Put16(b, sport);
  Put16(b, dport);
  Put16(b, 8 + payload);
  Put16(b, 0);
  b.resize(b.size() + payload, 0);
  return b;
}

}  // namespace blackbox::frames
