#include "switch/frame.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

namespace blackbox {
namespace {

using Bytes = std::vector<uint8_t>;

void Put16(Bytes& b, uint16_t v) {
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}
void Append(Bytes& b, const Bytes& more) { b.insert(b.end(), more.begin(), more.end()); }

const Bytes kGuestMac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
const Bytes kGatewayMac = {0x52, 0x55, 0x0a, 0x00, 0x02, 0x02};
const Bytes kBroadcastMac = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

Bytes Ethernet(const Bytes& dst, const Bytes& src, uint16_t ethertype) {
  Bytes b = dst;
  Append(b, src);
  Put16(b, ethertype);
  return b;
}

// An IPv4 header (checksum left 0: the parser does not verify it).
Bytes Ipv4(uint8_t proto, const Bytes& src, const Bytes& dst, size_t payload_len,
           uint16_t frag = 0x4000 /* DF */, uint8_t ihl = 5) {
  Bytes b = {static_cast<uint8_t>(0x40 | ihl), 0x00};
  Put16(b, static_cast<uint16_t>(ihl * 4 + payload_len));
  Put16(b, 0x1234);  // id
  Put16(b, frag);
  b.push_back(64);  // TTL
  b.push_back(proto);
  Put16(b, 0);  // checksum
  Append(b, src);
  Append(b, dst);
  b.resize(b.size() + (ihl - 5) * 4, 0x01);  // NOP options
  return b;
}

Bytes Ipv6(uint8_t next, const Bytes& src, const Bytes& dst, size_t payload_len) {
  Bytes b = {0x60, 0x00, 0x00, 0x00};
  Put16(b, static_cast<uint16_t>(payload_len));
  b.push_back(next);
  b.push_back(255);  // hop limit
  Append(b, src);
  Append(b, dst);
  return b;
}

Bytes Tcp(uint16_t sport, uint16_t dport, uint8_t flags, const Bytes& options) {
  Bytes b;
  Put16(b, sport);
  Put16(b, dport);
  Append(b, {0x11, 0x22, 0x33, 0x44, 0, 0, 0, 0});  // seq, ack
  b.push_back(static_cast<uint8_t>(((20 + options.size()) / 4) << 4));
  b.push_back(flags);
  Put16(b, 64240);  // window
  Put16(b, 0);      // checksum
  Put16(b, 0);      // urgent
  Append(b, options);
  return b;
}

Bytes Udp(uint16_t sport, uint16_t dport, const Bytes& payload) {
  Bytes b;
  Put16(b, sport);
  Put16(b, dport);
  Put16(b, static_cast<uint16_t>(8 + payload.size()));
  Put16(b, 0);
  Append(b, payload);
  return b;
}

const Bytes kClientV4 = {128, 232, 110, 120};
const Bytes kServerV4 = {66, 35, 250, 204};
const Bytes kClientV6 = {0x20, 0x01, 0x04, 0x70, 0xe5, 0xbf, 0xde, 0xad,
                         0x49, 0x57, 0x21, 0x74, 0xe8, 0x2c, 0x48, 0x87};
const Bytes kServerV6 = {0x26, 0x07, 0xf8, 0xb0, 0x40, 0x0c, 0x0c, 0x03, 0, 0, 0, 0, 0, 0, 0, 0x1a};
// MSS 1460, SACK permitted, timestamps, NOP, window scale 7: 20 bytes.
const Bytes kSynOptions = {2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7};

Bytes TcpSynFrame() {
  Bytes tcp = Tcp(34855, 80, kTcpSyn, kSynOptions);
  Bytes f = Ethernet(kGatewayMac, kGuestMac, kEtherTypeIpv4);
  Append(f, Ipv4(kIpProtoTcp, kClientV4, kServerV4, tcp.size()));
  Append(f, tcp);
  return f;
}

Bytes Ipv6HopByHopTcpFrame() {
  Bytes payload = {'E', 'H', 'L', 'O', '\r', '\n'};
  Bytes tcp = Tcp(63943, 25, kTcpAck | kTcpPsh, {});
  Append(tcp, payload);
  Bytes hbh = {kIpProtoTcp, 0, 1, 4, 0, 0, 0, 0};  // next, len 0, PadN(4)
  Bytes f = Ethernet(kGatewayMac, kGuestMac, kEtherTypeIpv6);
  Append(f, Ipv6(0, kClientV6, kServerV6, hbh.size() + tcp.size()));
  Append(f, hbh);
  Append(f, tcp);
  return f;
}

StatusOr<ParsedFrame> Parse(const Bytes& b) { return ParseFrame(std::span<const uint8_t>(b)); }

TEST(MacAddrTest, ToStringAndParse) {
  auto mac = MacAddr::Parse("52:54:00:12:34:56");
  ASSERT_TRUE(mac.ok()) << mac.status().ToString();
  EXPECT_EQ(mac->ToString(), "52:54:00:12:34:56");
  EXPECT_FALSE(mac->IsBroadcast());
  EXPECT_FALSE(mac->IsMulticast());

  auto upper = MacAddr::Parse("AA:bb:CC:dd:EE:0f");
  ASSERT_TRUE(upper.ok());
  EXPECT_EQ(upper->ToString(), "aa:bb:cc:dd:ee:0f");

  auto bcast = MacAddr::Parse("ff:ff:ff:ff:ff:ff");
  ASSERT_TRUE(bcast.ok());
  EXPECT_TRUE(bcast->IsBroadcast());
  EXPECT_TRUE(bcast->IsMulticast());
  auto mcast = MacAddr::Parse("33:33:00:00:00:01");
  ASSERT_TRUE(mcast.ok());
  EXPECT_TRUE(mcast->IsMulticast());
  EXPECT_FALSE(mcast->IsBroadcast());

  for (const char* bad : {"", "52:54:00:12:34", "52:54:00:12:34:5", "52:54:00:12:34:567",
                          "52-54-00-12-34-56", "52:54:00:12:34:g6", "52:54:00:12:34:56 "}) {
    EXPECT_EQ(MacAddr::Parse(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(IpAddrTest, ToString) {
  uint8_t v4[4] = {10, 0, 2, 15};
  EXPECT_EQ(IpAddr::V4(v4).ToString(), "10.0.2.15");
  EXPECT_EQ(IpAddr::V4(v4).size(), 4u);
  uint8_t v6[16] = {0x26, 0x07, 0xf8, 0xb0, 0x40, 0x0c, 0x0c, 0x03, 0, 0, 0, 0, 0, 0, 0, 0x1a};
  EXPECT_EQ(IpAddr::V6(v6).ToString(), "2607:f8b0:400c:c03::1a");
  EXPECT_EQ(IpAddr{}.ToString(), "");
  EXPECT_EQ(IpAddr{}.size(), 0u);
}

TEST(ParseFrameTest, ArpRequest) {
  Bytes f = Ethernet(kBroadcastMac, kGuestMac, kEtherTypeArp);
  Append(f, {0, 1, 0x08, 0x00, 6, 4, 0, 1});
  Append(f, kGuestMac);
  Append(f, {10, 0, 2, 15});
  Append(f, {0, 0, 0, 0, 0, 0});
  Append(f, {10, 0, 2, 2});
  f.resize(60, 0);  // minimum frame size padding

  auto p = Parse(f);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_TRUE(p->dst.IsBroadcast());
  EXPECT_EQ(p->src.ToString(), "52:54:00:12:34:56");
  EXPECT_EQ(p->ethertype, kEtherTypeArp);
  EXPECT_FALSE(p->has_vlan);
  ASSERT_EQ(p->l3, ParsedFrame::L3::kArp);
  EXPECT_EQ(p->arp.op, 1);
  EXPECT_EQ(p->arp.sender_mac.ToString(), "52:54:00:12:34:56");
  EXPECT_EQ(p->arp.sender_ip.ToString(), "10.0.2.15");
  EXPECT_EQ(p->arp.target_mac.ToString(), "00:00:00:00:00:00");
  EXPECT_EQ(p->arp.target_ip.ToString(), "10.0.2.2");
  EXPECT_EQ(p->l4, ParsedFrame::L4::kNone);
  EXPECT_EQ(p->payload_length, 0u);

  // Not Ethernet/IPv4 ARP.
  Bytes bad = f;
  bad[14 + 5] = 16;  // plen
  EXPECT_EQ(Parse(bad).status().code(), StatusCode::kInvalidArgument);
}

TEST(ParseFrameTest, Ipv4TcpSynWithOptions) {
  Bytes f = TcpSynFrame();
  auto p = Parse(f);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->dst.ToString(), "52:55:0a:00:02:02");
  EXPECT_EQ(p->ethertype, kEtherTypeIpv4);
  ASSERT_EQ(p->l3, ParsedFrame::L3::kIpv4);
  EXPECT_EQ(p->ip.src.ToString(), "128.232.110.120");
  EXPECT_EQ(p->ip.dst.ToString(), "66.35.250.204");
  EXPECT_EQ(p->ip.protocol, kIpProtoTcp);
  EXPECT_EQ(p->ip.ttl, 64);
  EXPECT_EQ(p->ip.total_length, 60u);
  EXPECT_FALSE(p->ip.is_fragment);
  EXPECT_FALSE(p->ip.is_non_first_fragment);
  ASSERT_EQ(p->l4, ParsedFrame::L4::kTcp);
  EXPECT_EQ(p->transport.src_port, 34855);
  EXPECT_EQ(p->transport.dst_port, 80);
  EXPECT_EQ(p->transport.tcp_flags, kTcpSyn);
  EXPECT_EQ(p->payload_offset, 14u + 20 + 40);
  EXPECT_EQ(p->payload_length, 0u);
}

TEST(ParseFrameTest, Ipv4UdpIgnoresEthernetPadding) {
  Bytes dns = {0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
  Bytes udp = Udp(54585, 53, dns);
  Bytes f = Ethernet(kGatewayMac, kGuestMac, kEtherTypeIpv4);
  Append(f, Ipv4(kIpProtoUdp, {192, 168, 1, 52}, {8, 8, 8, 8}, udp.size()));
  Append(f, udp);
  ASSERT_LT(f.size(), 60u);
  f.resize(60, 0xEE);

  auto p = Parse(f);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->l4, ParsedFrame::L4::kUdp);
  EXPECT_EQ(p->ip.src.ToString(), "192.168.1.52");
  EXPECT_EQ(p->ip.dst.ToString(), "8.8.8.8");
  EXPECT_EQ(p->transport.src_port, 54585);
  EXPECT_EQ(p->transport.dst_port, 53);
  EXPECT_EQ(p->payload_offset, 14u + 20 + 8);
  EXPECT_EQ(p->payload_length, dns.size());
  EXPECT_EQ(f[p->payload_offset], 0xab);
}

TEST(ParseFrameTest, Ipv6TcpWithHopByHop) {
  Bytes f = Ipv6HopByHopTcpFrame();
  auto p = Parse(f);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->l3, ParsedFrame::L3::kIpv6);
  EXPECT_EQ(p->ip.src.ToString(), "2001:470:e5bf:dead:4957:2174:e82c:4887");
  EXPECT_EQ(p->ip.dst.ToString(), "2607:f8b0:400c:c03::1a");
  EXPECT_EQ(p->ip.src.family, IpFamily::kIpv6);
  EXPECT_EQ(p->ip.protocol, kIpProtoTcp);
  EXPECT_EQ(p->ip.ttl, 255);
  EXPECT_EQ(p->ip.total_length, 40u + 8 + 20 + 6);
  ASSERT_EQ(p->l4, ParsedFrame::L4::kTcp);
  EXPECT_EQ(p->transport.src_port, 63943);
  EXPECT_EQ(p->transport.dst_port, 25);
  EXPECT_EQ(p->transport.tcp_flags, kTcpAck | kTcpPsh);
  EXPECT_EQ(p->payload_offset, 14u + 40 + 8 + 20);
  EXPECT_EQ(p->payload_length, 6u);
  EXPECT_EQ(f[p->payload_offset], 'E');
}

TEST(ParseFrameTest, Ipv6ExtensionHeaderRules) {
  // Hop-by-hop after a destination-options header is malformed.
  {
    Bytes tcp = Tcp(1, 2, kTcpSyn, {});
    Bytes dst_opts = {0, 0, 1, 4, 0, 0, 0, 0};  // next: hop-by-hop
    Bytes hbh = {kIpProtoTcp, 0, 1, 4, 0, 0, 0, 0};
    Bytes f = Ethernet(kGatewayMac, kGuestMac, kEtherTypeIpv6);
    Append(f, Ipv6(60, kClientV6, kServerV6, 16 + tcp.size()));
    Append(f, dst_opts);
    Append(f, hbh);
    Append(f, tcp);
    EXPECT_EQ(Parse(f).status().code(), StatusCode::kInvalidArgument);
  }
  // A chain longer than kMaxIpv6ExtHeaders is refused.
  {
    Bytes f = Ethernet(kGatewayMac, kGuestMac, kEtherTypeIpv6);
    const int n = kMaxIpv6ExtHeaders + 1;
    Append(f, Ipv6(60, kClientV6, kServerV6, n * 8));
    for (int i = 0; i < n; ++i) Append(f, {60, 0, 1, 4, 0, 0, 0, 0});
    auto p = Parse(f);
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  }
  // An extension header length beyond the payload.
  {
    Bytes f = Ethernet(kGatewayMac, kGuestMac, kEtherTypeIpv6);
    Append(f, Ipv6(60, kClientV6, kServerV6, 8));
    Append(f, {59, 200, 1, 4, 0, 0, 0, 0});
    EXPECT_EQ(Parse(f).status().code(), StatusCode::kInvalidArgument);
  }
  // A non-first fragment: no transport header is decoded.
  {
    Bytes data(24, 0x55);
    Bytes frag = {kIpProtoUdp, 0, 0x00, 0xB9, 0, 0, 0, 7};  // offset 23 (x8 bytes)
    Bytes f = Ethernet(kGatewayMac, kGuestMac, kEtherTypeIpv6);
    Append(f, Ipv6(44, kClientV6, kServerV6, 8 + data.size()));
    Append(f, frag);
    Append(f, data);
    auto p = Parse(f);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    EXPECT_EQ(p->ip.protocol, kIpProtoUdp);
    EXPECT_TRUE(p->ip.is_fragment);
    EXPECT_TRUE(p->ip.is_non_first_fragment);
    EXPECT_EQ(p->l4, ParsedFrame::L4::kNone);
    EXPECT_EQ(p->payload_offset, 14u + 40 + 8);
    EXPECT_EQ(p->payload_length, data.size());
  }
}

TEST(ParseFrameTest, IcmpEcho) {
  Bytes icmp = {8, 0, 0, 0, 0x12, 0x34, 0, 1, 'p', 'i', 'n', 'g'};
  Bytes f = Ethernet(kGatewayMac, kGuestMac, kEtherTypeIpv4);
  Append(f, Ipv4(kIpProtoIcmp, {192, 168, 0, 89}, {192, 168, 0, 1}, icmp.size()));
  Append(f, icmp);
  auto p = Parse(f);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->l4, ParsedFrame::L4::kIcmp);
  EXPECT_EQ(p->transport.icmp_type, 8);
  EXPECT_EQ(p->transport.icmp_code, 0);
  EXPECT_EQ(p->payload_offset, 14u + 20 + 4);
  EXPECT_EQ(p->payload_length, 8u);
}

TEST(ParseFrameTest, Icmpv6NeighborSolicitation) {
  Bytes icmp(24, 0);
  icmp[0] = 135;
  Bytes f = Ethernet({0x33, 0x33, 0xff, 0, 0, 1}, kGuestMac, kEtherTypeIpv6);
  Append(f, Ipv6(kIpProtoIcmpv6, kClientV6, kServerV6, icmp.size()));
  Append(f, icmp);
  auto p = Parse(f);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_TRUE(p->dst.IsMulticast());
  ASSERT_EQ(p->l4, ParsedFrame::L4::kIcmpv6);
  EXPECT_EQ(p->transport.icmp_type, 135);
}

TEST(ParseFrameTest, VlanTagged) {
  Bytes udp = Udp(68, 67, {1, 2, 3});
  Bytes f = Ethernet(kBroadcastMac, kGuestMac, kEtherTypeVlan);
  Put16(f, (5 << 13) | 100);  // PCP 5, VID 100
  Put16(f, kEtherTypeIpv4);
  Append(f, Ipv4(kIpProtoUdp, {0, 0, 0, 0}, {255, 255, 255, 255}, udp.size(), 0));
  Append(f, udp);
  auto p = Parse(f);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_TRUE(p->has_vlan);
  EXPECT_EQ(p->vlan_id, 100);
  EXPECT_EQ(p->vlan_pcp, 5);
  EXPECT_EQ(p->ethertype, kEtherTypeIpv4);
  ASSERT_EQ(p->l4, ParsedFrame::L4::kUdp);
  EXPECT_EQ(p->transport.dst_port, 67);
  EXPECT_EQ(p->payload_offset, 18u + 20 + 8);
  EXPECT_EQ(p->payload_length, 3u);

  // A second tag is not decoded but is not an error either.
  Bytes qinq = Ethernet(kBroadcastMac, kGuestMac, kEtherTypeVlan);
  Put16(qinq, 10);
  Put16(qinq, kEtherTypeVlan);
  Put16(qinq, 20);
  Put16(qinq, kEtherTypeIpv4);
  auto q = Parse(qinq);
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  EXPECT_EQ(q->vlan_id, 10);
  EXPECT_EQ(q->ethertype, kEtherTypeVlan);
  EXPECT_EQ(q->l3, ParsedFrame::L3::kNone);
  EXPECT_EQ(q->payload_offset, 18u);
}

TEST(ParseFrameTest, UnknownEthertypeIsPayload) {
  Bytes f = Ethernet(kBroadcastMac, kGuestMac, 0x88CC);  // LLDP
  Append(f, {1, 2, 3, 4});
  auto p = Parse(f);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->l3, ParsedFrame::L3::kNone);
  EXPECT_EQ(p->payload_offset, 14u);
  EXPECT_EQ(p->payload_length, 4u);
}

TEST(ParseFrameTest, Ipv4NonFirstFragment) {
  Bytes data(16, 0x77);
  Bytes f = Ethernet(kGatewayMac, kGuestMac, kEtherTypeIpv4);
  Append(f, Ipv4(kIpProtoUdp, kClientV4, kServerV4, data.size(), /*frag=*/185));
  Append(f, data);
  auto p = Parse(f);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_TRUE(p->ip.is_fragment);
  EXPECT_TRUE(p->ip.is_non_first_fragment);
  EXPECT_EQ(p->l4, ParsedFrame::L4::kNone);
  EXPECT_EQ(p->payload_offset, 14u + 20);
  EXPECT_EQ(p->payload_length, 16u);

  // First fragment (MF set, offset 0): transport is decoded.
  Bytes first = Ethernet(kGatewayMac, kGuestMac, kEtherTypeIpv4);
  Bytes udp = Udp(1000, 2000, data);
  Append(first, Ipv4(kIpProtoUdp, kClientV4, kServerV4, udp.size(), /*frag=*/0x2000));
  Append(first, udp);
  auto q = Parse(first);
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  EXPECT_TRUE(q->ip.is_fragment);
  EXPECT_FALSE(q->ip.is_non_first_fragment);
  EXPECT_EQ(q->l4, ParsedFrame::L4::kUdp);
}

TEST(ParseFrameTest, Ipv4WithOptions) {
  Bytes tcp = Tcp(1, 2, kTcpFin | kTcpAck, {});
  Bytes f = Ethernet(kGatewayMac, kGuestMac, kEtherTypeIpv4);
  Append(f, Ipv4(kIpProtoTcp, kClientV4, kServerV4, tcp.size(), 0, /*ihl=*/7));
  Append(f, tcp);
  auto p = Parse(f);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->l4, ParsedFrame::L4::kTcp);
  EXPECT_EQ(p->transport.tcp_flags, kTcpFin | kTcpAck);
  EXPECT_EQ(p->payload_offset, 14u + 28 + 20);
}

TEST(ParseFrameTest, MalformedHeaders) {
  const Bytes good = TcpSynFrame();
  auto expect_error = [](const Bytes& f, const char* why) {
    auto p = ParseFrame(std::span<const uint8_t>(f));
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument) << why;
    EXPECT_FALSE(p.status().message().empty()) << why;
  };
  {
    Bytes f = good;
    f[14] = 0x44;  // IHL 4
    expect_error(f, "IHL < 5");
  }
  {
    Bytes f = good;
    f[14] = 0x40;  // IHL 0
    expect_error(f, "IHL 0");
  }
  {
    Bytes f = good;
    f[14] = 0x4F;  // IHL 15: 60-byte header, but total length is 60 and the
    f[16] = 0;     // frame only has 60 bytes of IP; make total length 40.
    f[17] = 40;
    expect_error(f, "total length < IHL");
  }
  {
    Bytes f = good;
    f[16] = 0x05;  // total length 1500 > frame
    f[17] = 0xDC;
    expect_error(f, "total length beyond frame");
  }
  {
    Bytes f = good;
    f[16] = 0xFF;
    f[17] = 0xFF;
    expect_error(f, "total length 65535");
  }
  {
    Bytes f = good;
    f[14] = 0x65;  // version 6 in an IPv4 ethertype
    expect_error(f, "version mismatch");
  }
  {
    Bytes f = good;
    f[14 + 20 + 12] = 0x40;  // TCP data offset 4
    expect_error(f, "TCP data offset < 5");
  }
  {
    Bytes f = good;
    f[14 + 20 + 12] = 0xF0;  // TCP data offset 15: 60 bytes > 40 available
    expect_error(f, "TCP header beyond IP payload");
  }
  {
    Bytes udp = Udp(1, 2, {1, 2, 3, 4});
    udp[4] = 0;
    udp[5] = 200;  // UDP length beyond payload
    Bytes f = Ethernet(kGatewayMac, kGuestMac, kEtherTypeIpv4);
    Append(f, Ipv4(kIpProtoUdp, kClientV4, kServerV4, udp.size()));
    Append(f, udp);
    expect_error(f, "UDP length too big");
    f[14 + 20 + 5] = 7;
    expect_error(f, "UDP length < 8");
  }
  {
    Bytes f = Ipv6HopByHopTcpFrame();
    f[14 + 4] = 0x10;  // payload length 4096
    expect_error(f, "IPv6 payload length beyond frame");
  }
  expect_error(Bytes(13, 0), "runt frame");
  expect_error(Bytes(kMaxFrameSize + 1, 0), "giant frame");
  EXPECT_TRUE(ParseFrame(std::span<const uint8_t>(Bytes(kMaxFrameSize, 0))).ok());
}

// Every truncation of a valid frame either parses (with a payload range inside
// the truncated frame) or returns InvalidArgument; none may read out of bounds
// (run under -fsanitize=address to make that check real).
void CheckAllPrefixes(const Bytes& full) {
  for (size_t len = 0; len <= full.size(); ++len) {
    // A fresh exact-size heap copy so ASan catches any read past the end.
    Bytes prefix(full.begin(), full.begin() + static_cast<ptrdiff_t>(len));
    prefix.shrink_to_fit();
    auto p = ParseFrame(std::span<const uint8_t>(prefix.data(), prefix.size()));
    if (p.ok()) {
      EXPECT_LE(p->payload_offset + p->payload_length, len) << "len " << len;
    } else {
      EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument) << "len " << len;
    }
    if (len < kEthernetHeaderSize) {
      EXPECT_FALSE(p.ok()) << "len " << len;
    }
  }
  EXPECT_TRUE(ParseFrame(std::span<const uint8_t>(full)).ok());
}

TEST(ParseFrameTest, EveryTruncationOfTcpFrame) {
  const Bytes full = TcpSynFrame();
  CheckAllPrefixes(full);
  // Truncating a frame cuts the IP packet short, so only the frames that end
  // before the IP header starts (pure Ethernet) can parse: the IP total length
  // always points past a truncated end.
  for (size_t len = kEthernetHeaderSize; len < full.size(); ++len) {
    EXPECT_FALSE(ParseFrame(std::span<const uint8_t>(full.data(), len)).ok()) << len;
  }
}

TEST(ParseFrameTest, EveryTruncationOfOtherFrames) {
  CheckAllPrefixes(Ipv6HopByHopTcpFrame());
  Bytes vlan = Ethernet(kBroadcastMac, kGuestMac, kEtherTypeVlan);
  Put16(vlan, 7);
  Put16(vlan, kEtherTypeIpv4);
  Bytes udp = Udp(5, 6, {9, 9});
  Append(vlan, Ipv4(kIpProtoUdp, kClientV4, kServerV4, udp.size()));
  Append(vlan, udp);
  CheckAllPrefixes(vlan);
}

// Random byte corruption of valid frames: never crashes, results stay in bounds.
TEST(ParseFrameTest, RandomCorruptionStaysInBounds) {
  std::mt19937 rng(12345);
  const std::vector<Bytes> seeds = {TcpSynFrame(), Ipv6HopByHopTcpFrame()};
  for (int iter = 0; iter < 20000; ++iter) {
    Bytes f = seeds[iter % seeds.size()];
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < flips; ++i) f[rng() % f.size()] = static_cast<uint8_t>(rng());
    f.resize(rng() % (f.size() + 1));
    f.shrink_to_fit();
    auto p = ParseFrame(std::span<const uint8_t>(f.data(), f.size()));
    if (p.ok()) {
      ASSERT_LE(p->payload_offset + p->payload_length, f.size());
    } else {
      ASSERT_EQ(p.status().code(), StatusCode::kInvalidArgument);
    }
  }
}

}  // namespace
}  // namespace blackbox
