#include "switch/community_id.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace blackbox {
namespace {

FlowTuple Tuple(const char* src, const char* dst, uint8_t proto, uint16_t sport, uint16_t dport) {
  FlowTuple t;
  const bool v6 = std::string(src).find(':') != std::string::npos;
  t.family = v6 ? IpFamily::kIpv6 : IpFamily::kIpv4;
  const int af = v6 ? AF_INET6 : AF_INET;
  EXPECT_EQ(inet_pton(af, src, t.src_ip.data()), 1) << src;
  EXPECT_EQ(inet_pton(af, dst, t.dst_ip.data()), 1) << dst;
  t.proto = proto;
  t.src_port = sport;
  t.dst_port = dport;
  return t;
}

struct Vector {
  uint8_t proto;
  const char* saddr;
  const char* daddr;
  uint16_t sport;  // ICMP: type
  uint16_t dport;  // ICMP: counterpart type or code (as in the baseline)
  const char* seed0;
  const char* seed1;
};

// corelight/community-id-spec baseline/baseline_deflt.json and
// baseline/baseline_seed1.json (commit c4ec2bc40d65ddbcbdd642582bf5609797a80772).
const Vector kBaseline[] = {
    {58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 135, 136,
     "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=", "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY="},
    {58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 136, 135,
     "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=", "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY="},
    {58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 135, 136,
     "1:zavyT/cezQr1fmImYCwYnMXbgck=", "1:2hSqmsDZ2kdcY9kbiUzOEBic0iM="},
    {58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 136, 135,
     "1:zavyT/cezQr1fmImYCwYnMXbgck=", "1:2hSqmsDZ2kdcY9kbiUzOEBic0iM="},
    {58, "3ffe:501:1800:2345::2", "3ffe:507:0:1:200:86ff:fe05:80da", 3, 0,
     "1:2ObVBgIn28oZvibYZhZMBgh7WdQ=", "1:lVEtCZpYu84Xqaa++3lXFyuu2n4="},
    {58, "3ffe:501:410:0:2c0:dfff:fe47:33e", "3ffe:507:0:1:200:86ff:fe05:80da", 1, 4,
     "1:hLZd0XGWojozrvxqE0dWB1iM6R0=", "1:W8MHwXpWzpoSTD+cGcaJr4u0ys8="},
    {58, "3ffe:507:0:1:200:86ff:fe05:80da", "3ffe:501:0:1001::2", 128, 129,
     "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=", "1:GfZxjAkDk2MkegpBYHV6tadtFXQ="},
    {58, "3ffe:501:0:1001::2", "3ffe:507:0:1:200:86ff:fe05:80da", 129, 128,
     "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=", "1:GfZxjAkDk2MkegpBYHV6tadtFXQ="},
    {58, "fe80::200:86ff:fe05:80da", "ff02::2", 133, 134,
     "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0=", "1:L7Ka0ZMYu+J3bL4ulW2PrqyXNo8="},
    {58, "fe80::260:97ff:fe07:69ea", "ff02::1", 134, 133,
     "1:pkvHqCL88/tg1k4cPigmZXUtL00=", "1:K/ee5UCqAMAQXDorP5nSa2CGLjc="},
    {1, "192.168.0.89", "192.168.0.1", 8, 0,
     "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA="},
    {1, "192.168.0.1", "192.168.0.89", 0, 8,
     "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA="},
    {1, "10.0.0.1", "10.0.0.2", 11, 0,
     "1:YHxtAirCG//0OzkcVAukqKQN9xM=", "1:XjUibYHaafLQ3pxQeiMI8g25q20="},
    {6, "2001:470:e5bf:dead:4957:2174:e82c:4887", "2607:f8b0:400c:c03::1a", 63943, 25,
     "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=", "1:eJYTW6AOzFLlSUoESovMjnu7rMw="},
    {6, "2607:f8b0:400c:c03::1a", "2001:470:e5bf:dead:4957:2174:e82c:4887", 25, 63943,
     "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=", "1:eJYTW6AOzFLlSUoESovMjnu7rMw="},
    {132, "192.168.170.8", "192.168.170.56", 7, 7,
     "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=", "1:5w3ZRjeKBzqT3zsaEECDGjUbYeg="},
    {132, "192.168.170.56", "192.168.170.8", 7, 7,
     "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=", "1:5w3ZRjeKBzqT3zsaEECDGjUbYeg="},
    {6, "128.232.110.120", "66.35.250.204", 34855, 80,
     "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "1:3V71V58M3Ksw/yuFALMcW0LAHvc="},
    {6, "66.35.250.204", "128.232.110.120", 80, 34855,
     "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "1:3V71V58M3Ksw/yuFALMcW0LAHvc="},
    {17, "192.168.1.52", "8.8.8.8", 54585, 53,
     "1:d/FP5EW3wiY1vCndhwleRRKHowQ=", "1:Q9We8WO3piVF8yEQBNJF4uiSVrI="},
    {17, "8.8.8.8", "192.168.1.52", 53, 54585,
     "1:d/FP5EW3wiY1vCndhwleRRKHowQ=", "1:Q9We8WO3piVF8yEQBNJF4uiSVrI="},
    // RSVP: no ports in the hash.
    {46, "10.1.12.1", "10.1.12.2", 0, 0,
     "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=", "1:rYir8gphR31noO9iDRQmF/BteEI="},
    {46, "10.1.12.2", "10.1.12.1", 0, 0,
     "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=", "1:rYir8gphR31noO9iDRQmF/BteEI="},
};

TEST(CommunityIdTest, SpecBaselineVectors) {
  for (const Vector& v : kBaseline) {
    const FlowTuple t = Tuple(v.saddr, v.daddr, v.proto, v.sport, v.dport);
    SCOPED_TRACE(std::string(v.saddr) + " -> " + v.daddr + " proto " + std::to_string(v.proto) +
                 " " + std::to_string(v.sport) + "/" + std::to_string(v.dport));
    EXPECT_EQ(CommunityId(t), v.seed0);
    EXPECT_EQ(CommunityId(t, 0), v.seed0);
    EXPECT_EQ(CommunityId(t, 1), v.seed1);
  }
}

// Vectors from the Zeek community_id_v1() tests (1.2.3.4 / 5.6.7.8 flows).
TEST(CommunityIdTest, ZeekVectors) {
  EXPECT_EQ(CommunityId(Tuple("1.2.3.4", "5.6.7.8", 6, 1122, 3344)),
            "1:wCb3OG7yAFWelaUydu0D+125CLM=");
  EXPECT_EQ(CommunityId(Tuple("1.2.3.4", "5.6.7.8", 17, 1122, 3344)),
            "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=");
  EXPECT_EQ(CommunityId(Tuple("1.2.3.4", "5.6.7.8", 1, 8, 0)), "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=");
  EXPECT_EQ(CommunityId(Tuple("5.6.7.8", "1.2.3.4", 1, 0, 0)), "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=");
  EXPECT_EQ(CommunityId(Tuple("fe80:1:203:405:607:809:a0b:c0d",
                              "fe80:1011:1213:1415:1617:1819:1a1b:1c1d", 58, 128, 0)),
            "1:0bf7hyMJUwt3fMED7z8LIfRpBeo=");
  EXPECT_EQ(CommunityId(Tuple("1.2.3.4", "5.6.7.8", 6, 1122, 3344), 1),
            "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk=");
  EXPECT_EQ(CommunityId(Tuple("1.2.3.4", "5.6.7.8", 17, 1122, 3344), 1),
            "1:OShq+iKDAMVouh/4bMxB9Sz4amw=");
  EXPECT_EQ(CommunityId(Tuple("1.2.3.4", "5.6.7.8", 1, 8, 0), 1), "1:9pr4ZGTICiuZoIh90RRYE2RyXpU=");
  EXPECT_EQ(CommunityId(Tuple("fe80:1:203:405:607:809:a0b:c0d",
                              "fe80:1011:1213:1415:1617:1819:1a1b:1c1d", 58, 128, 0),
                        1),
            "1:IO27GQzPuCtNnwFvjWALMHu5tJE=");
}

TEST(CommunityIdTest, EqualAddressesOrderedByPort) {
  const FlowTuple a = Tuple("10.0.0.1", "10.0.0.1", 6, 5000, 80);
  const FlowTuple b = Tuple("10.0.0.1", "10.0.0.1", 6, 80, 5000);
  EXPECT_EQ(CommunityId(a), CommunityId(b));
  EXPECT_NE(CommunityId(a), CommunityId(Tuple("10.0.0.1", "10.0.0.1", 17, 5000, 80)));
}

TEST(CommunityIdTest, OneWayIcmpIsNotReordered) {
  // Destination unreachable in both directions are different flows.
  EXPECT_NE(CommunityId(Tuple("10.0.0.1", "10.0.0.2", 1, 3, 1)),
            CommunityId(Tuple("10.0.0.2", "10.0.0.1", 1, 3, 1)));
}

TEST(CommunityIdTest, NoFamilyGivesEmptyId) { EXPECT_EQ(CommunityId(FlowTuple{}), ""); }

std::vector<uint8_t> TcpFrame(bool reverse) {
  std::vector<uint8_t> f = {0x52, 0x54, 0,    0x12, 0x34, 0x56, 0x52,
                            0x54, 0,    0x12, 0x34, 0x57, 0x08, 0x00};
  const std::vector<uint8_t> client = {128, 232, 110, 120};
  const std::vector<uint8_t> server = {66, 35, 250, 204};
  std::vector<uint8_t> ip = {0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0};
  const auto& s = reverse ? server : client;
  const auto& d = reverse ? client : server;
  ip.insert(ip.end(), s.begin(), s.end());
  ip.insert(ip.end(), d.begin(), d.end());
  std::vector<uint8_t> tcp(20, 0);
  const uint16_t sport = reverse ? 80 : 34855;
  const uint16_t dport = reverse ? 34855 : 80;
  tcp[0] = sport >> 8;
  tcp[1] = sport & 0xFF;
  tcp[2] = dport >> 8;
  tcp[3] = dport & 0xFF;
  tcp[12] = 0x50;
  tcp[13] = reverse ? (kTcpSyn | kTcpAck) : kTcpSyn;
  f.insert(f.end(), ip.begin(), ip.end());
  f.insert(f.end(), tcp.begin(), tcp.end());
  return f;
}

TEST(CommunityIdTest, FromParsedFrame) {
  for (bool reverse : {false, true}) {
    const std::vector<uint8_t> bytes = TcpFrame(reverse);
    auto frame = ParseFrame(bytes);
    ASSERT_TRUE(frame.ok()) << frame.status().ToString();
    const auto tuple = FlowTupleOf(*frame);
    ASSERT_TRUE(tuple.has_value());
    EXPECT_EQ(CommunityId(*tuple), "1:LQU9qZlK+B5F3KDmev6m5PMibrg=");
  }

  ParsedFrame arp;
  arp.l3 = ParsedFrame::L3::kArp;
  EXPECT_FALSE(FlowTupleOf(arp).has_value());

  // A non-first TCP fragment has no ports: no id rather than a wrong one.
  std::vector<uint8_t> frag = TcpFrame(false);
  frag[14 + 7] = 0x10;  // fragment offset 16
  auto frame = ParseFrame(frag);
  ASSERT_TRUE(frame.ok()) << frame.status().ToString();
  EXPECT_FALSE(FlowTupleOf(*frame).has_value());
}

}  // namespace
}  // namespace blackbox
