#include "switch/l2_switch.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "switch/frame_builder.h"

namespace blackbox {
namespace {

using frames::Arp;
using frames::Bytes;
using frames::Ethernet;
using frames::Udp4;
using frames::Udp6;
using Drop = L2Switch::Drop;

constexpr int64_t kSecond = 1'000'000'000;

using frames::Mac;
const MacAddr kBroadcast{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};
const MacAddr kIpv6AllNodes{{0x33, 0x33, 0x00, 0x00, 0x00, 0x01}};

IpAddr V4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  std::array<uint8_t, 4> bytes = {a, b, c, d};
  return IpAddr::V4(bytes);
}
IpAddr V6LinkLocal(uint8_t last) {
  std::array<uint8_t, 16> bytes = {0xfe, 0x80};
  bytes[15] = last;
  return IpAddr::V6(bytes);
}

class L2SwitchTest : public ::testing::Test {
 protected:
  uint32_t Add(uint8_t mac_last, const std::string& segment, std::vector<IpAddr> ips = {}) {
    return sw_.AddPort({"vm" + std::to_string(mac_last), segment, Mac(mac_last), std::move(ips)});
  }

  L2Switch sw_;
};

TEST_F(L2SwitchTest, ArpBroadcastFloodsWithinSegmentOnly) {
  uint32_t a = Add(1, "lan");
  uint32_t b = Add(2, "lan");
  uint32_t c = Add(3, "lan");
  uint32_t d = Add(4, "dmz");
  Bytes arp = Arp(kBroadcast, Mac(1), Mac(1), V4(10, 0, 0, 1), V4(10, 0, 0, 2));
  L2Switch::Decision dec = sw_.Process(a, arp, 0);
  EXPECT_EQ(dec.drop, Drop::kNone) << dec.reason;
  EXPECT_EQ(dec.egress, (std::vector<uint32_t>{b, c}));
  EXPECT_TRUE(dec.reason.empty());

  EXPECT_EQ(sw_.GetCounters(a)->rx_frames, 1u);
  EXPECT_EQ(sw_.GetCounters(a)->rx_bytes, arp.size());
  EXPECT_EQ(sw_.GetCounters(b)->tx_frames, 1u);
  EXPECT_EQ(sw_.GetCounters(c)->tx_bytes, arp.size());
  EXPECT_EQ(sw_.GetCounters(d)->tx_frames, 0u);
  EXPECT_EQ(sw_.GetCounters(a)->tx_frames, 0u);  // not back out of the ingress port
}

TEST_F(L2SwitchTest, MulticastFloods) {
  uint32_t a = Add(1, "lan");
  uint32_t b = Add(2, "lan");
  Bytes f = Udp6(kIpv6AllNodes, Mac(2), V6LinkLocal(2), V6LinkLocal(1));
  EXPECT_EQ(sw_.Process(b, f, 0).egress, std::vector<uint32_t>{a});
}

TEST_F(L2SwitchTest, UnicastAfterLearningGoesToOnePort) {
  uint32_t a = Add(1, "lan");
  uint32_t b = Add(2, "lan");
  uint32_t c = Add(3, "lan");
  // Unknown unicast floods.
  L2Switch::Decision dec =
      sw_.Process(a, Udp4(Mac(2), Mac(1), V4(10, 0, 0, 1), V4(10, 0, 0, 2)), 0);
  EXPECT_EQ(dec.egress, (std::vector<uint32_t>{b, c}));
  // b answers: a was learned from the first frame.
  dec = sw_.Process(b, Udp4(Mac(1), Mac(2), V4(10, 0, 0, 2), V4(10, 0, 0, 1)), 1);
  EXPECT_EQ(dec.egress, std::vector<uint32_t>{a});
  // And now b is known too.
  dec = sw_.Process(a, Udp4(Mac(2), Mac(1), V4(10, 0, 0, 1), V4(10, 0, 0, 2)), 2);
  EXPECT_EQ(dec.egress, std::vector<uint32_t>{b});
  EXPECT_EQ(sw_.GetCounters(c)->tx_frames, 1u);
  EXPECT_EQ(sw_.LookupMac("lan", Mac(1), 2), a);
  EXPECT_EQ(sw_.LookupMac("lan", Mac(3), 2), std::nullopt);
}

TEST_F(L2SwitchTest, UnknownUnicastFloods) {
  uint32_t a = Add(1, "lan");
  uint32_t b = Add(2, "lan");
  uint32_t c = Add(3, "lan");
  L2Switch::Decision dec =
      sw_.Process(b, Udp4(Mac(99), Mac(2), V4(10, 0, 0, 2), V4(10, 0, 0, 99)), 0);
  EXPECT_EQ(dec.drop, Drop::kNone);
  EXPECT_EQ(dec.egress, (std::vector<uint32_t>{a, c}));
}

TEST_F(L2SwitchTest, SpoofedSourceMacIsDropped) {
  uint32_t a = Add(1, "lan");
  uint32_t b = Add(2, "lan");
  // a claims to be b.
  L2Switch::Decision dec =
      sw_.Process(a, Udp4(kBroadcast, Mac(2), V4(10, 0, 0, 2), V4(10, 0, 0, 9)), 0);
  EXPECT_EQ(dec.drop, Drop::kSpoofedMac);
  EXPECT_TRUE(dec.egress.empty());
  EXPECT_NE(dec.reason.find("52:54:00:00:00:02"), std::string::npos) << dec.reason;
  EXPECT_EQ(sw_.GetCounters(a)->drop_count(Drop::kSpoofedMac), 1u);
  EXPECT_EQ(sw_.GetCounters(b)->tx_frames, 0u);
  // The spoofed MAC was not learned: traffic to it still floods.
  EXPECT_EQ(sw_.LookupMac("lan", Mac(2), 0), std::nullopt);

  // ARP whose body lies about the sender MAC.
  dec = sw_.Process(a, Arp(kBroadcast, Mac(1), Mac(2), V4(10, 0, 0, 2), V4(10, 0, 0, 9)), 0);
  EXPECT_EQ(dec.drop, Drop::kSpoofedMac);
  EXPECT_EQ(std::string(L2Switch::DropName(dec.drop)), "spoofed_mac");
}

TEST_F(L2SwitchTest, SpoofedIpIsDroppedWhenAllowedIpsSet) {
  uint32_t a = Add(1, "lan", {V4(10, 0, 0, 1), V6LinkLocal(1)});
  uint32_t b = Add(2, "lan");
  EXPECT_EQ(sw_.Process(a, Udp4(kBroadcast, Mac(1), V4(10, 0, 0, 1), V4(10, 0, 0, 255)), 0).drop,
            Drop::kNone);
  L2Switch::Decision dec =
      sw_.Process(a, Udp4(kBroadcast, Mac(1), V4(10, 0, 0, 7), V4(10, 0, 0, 255)), 0);
  EXPECT_EQ(dec.drop, Drop::kSpoofedIp);
  EXPECT_NE(dec.reason.find("10.0.0.7"), std::string::npos) << dec.reason;

  EXPECT_EQ(sw_.Process(a, Udp6(kIpv6AllNodes, Mac(1), V6LinkLocal(1), V6LinkLocal(2)), 0).drop,
            Drop::kNone);
  EXPECT_EQ(sw_.Process(a, Udp6(kIpv6AllNodes, Mac(1), V6LinkLocal(9), V6LinkLocal(2)), 0).drop,
            Drop::kSpoofedIp);

  // ARP: sender IP checked; the unspecified address (ARP probe, DHCP) allowed.
  EXPECT_EQ(
      sw_.Process(a, Arp(kBroadcast, Mac(1), Mac(1), V4(10, 0, 0, 8), V4(10, 0, 0, 2)), 0).drop,
      Drop::kSpoofedIp);
  EXPECT_EQ(
      sw_.Process(a, Arp(kBroadcast, Mac(1), Mac(1), V4(0, 0, 0, 0), V4(10, 0, 0, 1)), 0).drop,
      Drop::kNone);
  EXPECT_EQ(
      sw_.Process(a, Udp4(kBroadcast, Mac(1), V4(0, 0, 0, 0), V4(255, 255, 255, 255)), 0).drop,
      Drop::kNone);

  // Non-IP ethertypes cannot be checked, so they are blocked on this port...
  Bytes other = Ethernet(kBroadcast, Mac(1), 0x88b5);
  other.resize(60, 0);
  EXPECT_EQ(sw_.Process(a, other, 0).drop, Drop::kBlockedEthertype);
  // ...but fine on an unrestricted one, which also accepts any source IP.
  Bytes other_b = Ethernet(kBroadcast, Mac(2), 0x88b5);
  other_b.resize(60, 0);
  EXPECT_EQ(sw_.Process(b, other_b, 0).drop, Drop::kNone);
  EXPECT_EQ(sw_.Process(b, Udp4(kBroadcast, Mac(2), V4(1, 2, 3, 4), V4(10, 0, 0, 1)), 0).drop,
            Drop::kNone);

  L2Switch::PortCounters ca = *sw_.GetCounters(a);
  EXPECT_EQ(ca.drop_count(Drop::kSpoofedIp), 3u);
  EXPECT_EQ(ca.drop_count(Drop::kBlockedEthertype), 1u);
  EXPECT_EQ(ca.rx_frames, 8u);
}

TEST_F(L2SwitchTest, SegmentsIsolate) {
  uint32_t a = Add(1, "lan");
  uint32_t b = Add(2, "dmz");
  uint32_t c = Add(3, "dmz");
  // b is learned in "dmz"; a cannot reach it, even by unicast.
  EXPECT_EQ(sw_.Process(b, Udp4(Mac(3), Mac(2), V4(10, 1, 0, 2), V4(10, 1, 0, 3)), 0).egress,
            std::vector<uint32_t>{c});
  L2Switch::Decision dec =
      sw_.Process(a, Udp4(Mac(2), Mac(1), V4(10, 0, 0, 1), V4(10, 1, 0, 2)), 0);
  EXPECT_EQ(dec.drop, Drop::kNoPeer);  // alone in "lan"
  EXPECT_TRUE(dec.egress.empty());
  dec = sw_.Process(a, Arp(kBroadcast, Mac(1), Mac(1), V4(10, 0, 0, 1), V4(10, 0, 0, 2)), 0);
  EXPECT_EQ(dec.drop, Drop::kNoPeer);
  EXPECT_EQ(sw_.GetCounters(b)->tx_frames, 0u);
  EXPECT_EQ(sw_.GetCounters(a)->drop_count(Drop::kNoPeer), 2u);
  EXPECT_EQ(sw_.LookupMac("lan", Mac(2), 0), std::nullopt);
}

TEST_F(L2SwitchTest, LearningAgesOut) {
  L2Switch sw(L2Switch::Options{.mac_aging_ns = 10 * kSecond});
  uint32_t a = sw.AddPort({"a", "lan", Mac(1), {}});
  uint32_t b = sw.AddPort({"b", "lan", Mac(2), {}});
  uint32_t c = sw.AddPort({"c", "lan", Mac(3), {}});
  Bytes from_b = Udp4(kBroadcast, Mac(2), V4(10, 0, 0, 2), V4(10, 0, 0, 255));
  Bytes to_b = Udp4(Mac(2), Mac(1), V4(10, 0, 0, 1), V4(10, 0, 0, 2));
  ASSERT_EQ(sw.Process(b, from_b, 100 * kSecond).drop, Drop::kNone);
  EXPECT_EQ(sw.Process(a, to_b, 110 * kSecond).egress, std::vector<uint32_t>{b});  // exactly 10 s
  EXPECT_EQ(sw.Process(a, to_b, 110 * kSecond + 1).egress, (std::vector<uint32_t>{b, c}));
  EXPECT_EQ(sw.LookupMac("lan", Mac(2), 110 * kSecond + 1), std::nullopt);
  // Seen again: fresh again.
  ASSERT_EQ(sw.Process(b, from_b, 200 * kSecond).drop, Drop::kNone);
  EXPECT_EQ(sw.Process(a, to_b, 205 * kSecond).egress, std::vector<uint32_t>{b});

  // The sweep removes stale entries: a (seen at 205 s) stays, b (200 s) goes.
  EXPECT_EQ(sw.mac_table_size(), 2u);
  EXPECT_EQ(sw.ExpireMacs(214 * kSecond), 1u);
  EXPECT_EQ(sw.mac_table_size(), 1u);
  EXPECT_EQ(sw.ExpireMacs(1000 * kSecond), 1u);
  EXPECT_EQ(sw.mac_table_size(), 0u);
}

TEST_F(L2SwitchTest, DefaultAgingIs300Seconds) {
  EXPECT_EQ(L2Switch::Options{}.mac_aging_ns, 300 * kSecond);
  uint32_t a = Add(1, "lan");
  uint32_t b = Add(2, "lan");
  Add(3, "lan");
  ASSERT_EQ(sw_.Process(b, Udp4(kBroadcast, Mac(2), V4(10, 0, 0, 2), V4(10, 0, 0, 255)), 0).drop,
            Drop::kNone);
  Bytes to_b = Udp4(Mac(2), Mac(1), V4(10, 0, 0, 1), V4(10, 0, 0, 2));
  EXPECT_EQ(sw_.Process(a, to_b, 299 * kSecond).egress.size(), 1u);
  EXPECT_EQ(sw_.Process(a, to_b, 301 * kSecond).egress.size(), 2u);
}

TEST_F(L2SwitchTest, RemovedPortIsForgotten) {
  uint32_t a = Add(1, "lan");
  uint32_t b = Add(2, "lan");
  uint32_t c = Add(3, "lan");
  ASSERT_EQ(sw_.Process(b, Udp4(kBroadcast, Mac(2), V4(10, 0, 0, 2), V4(10, 0, 0, 255)), 0).drop,
            Drop::kNone);
  ASSERT_EQ(sw_.LookupMac("lan", Mac(2), 0), b);

  sw_.RemovePort(b);
  EXPECT_EQ(sw_.port_count(), 2u);
  EXPECT_EQ(sw_.GetCounters(b), std::nullopt);
  EXPECT_EQ(sw_.GetPortConfig(b), nullptr);
  EXPECT_EQ(sw_.LookupMac("lan", Mac(2), 0), std::nullopt);
  // Traffic to b's MAC floods to the remaining ports, never to b.
  EXPECT_EQ(sw_.Process(a, Udp4(Mac(2), Mac(1), V4(10, 0, 0, 1), V4(10, 0, 0, 2)), 1).egress,
            std::vector<uint32_t>{c});
  // Frames offered on the removed id are refused.
  L2Switch::Decision dec =
      sw_.Process(b, Udp4(kBroadcast, Mac(2), V4(10, 0, 0, 2), V4(10, 0, 0, 255)), 1);
  EXPECT_EQ(dec.drop, Drop::kUnknownPort);
  EXPECT_EQ(sw_.unknown_port_drops(), 1u);
  // Ids are not reused; removing twice is harmless.
  sw_.RemovePort(b);
  uint32_t d = Add(2, "lan");
  EXPECT_NE(d, b);
  EXPECT_EQ(sw_.GetPortConfig(d)->name, "vm2");
}

TEST_F(L2SwitchTest, MalformedFrameIsDropped) {
  uint32_t a = Add(1, "lan");
  Add(2, "lan");
  Bytes runt = {0xff, 0xff, 0xff};
  L2Switch::Decision dec = sw_.Process(a, runt, 0);
  EXPECT_EQ(dec.drop, Drop::kMalformed);
  EXPECT_FALSE(dec.reason.empty());
  // IPv4 header whose total length runs past the frame.
  Bytes bad = Udp4(kBroadcast, Mac(1), V4(10, 0, 0, 1), V4(10, 0, 0, 2));
  bad[16] = 0x05;  // total length 0x05xx
  EXPECT_EQ(sw_.Process(a, bad, 0).drop, Drop::kMalformed);
  EXPECT_EQ(sw_.GetCounters(a)->drop_count(Drop::kMalformed), 2u);
  EXPECT_EQ(sw_.mac_table_size(), 0u);  // nothing learned from them
}

TEST_F(L2SwitchTest, UnicastToOwnMacIsNotReflected) {
  uint32_t a = Add(1, "lan");
  Add(2, "lan");
  ASSERT_EQ(
      sw_.Process(a, Arp(kBroadcast, Mac(1), Mac(1), V4(10, 0, 0, 1), V4(10, 0, 0, 2)), 0).drop,
      Drop::kNone);
  L2Switch::Decision dec =
      sw_.Process(a, Udp4(Mac(1), Mac(1), V4(10, 0, 0, 1), V4(10, 0, 0, 1)), 0);
  EXPECT_EQ(dec.drop, Drop::kNoPeer);
  EXPECT_TRUE(dec.egress.empty());
}

TEST_F(L2SwitchTest, VlanTaggedFrameIsSwitchedAndChecked) {
  uint32_t a = Add(1, "lan", {V4(10, 0, 0, 1)});
  uint32_t b = Add(2, "lan");
  Bytes f = Udp4(kBroadcast, Mac(1), V4(10, 0, 0, 9), V4(10, 0, 0, 255));
  Bytes tag = {0x81, 0x00, 0x00, 0x05};
  f.insert(f.begin() + 12, tag.begin(), tag.end());
  EXPECT_EQ(sw_.Process(a, f, 0).drop, Drop::kSpoofedIp);  // the tag does not hide the IP
  Bytes ok = Udp4(kBroadcast, Mac(1), V4(10, 0, 0, 1), V4(10, 0, 0, 255));
  ok.insert(ok.begin() + 12, tag.begin(), tag.end());
  EXPECT_EQ(sw_.Process(a, ok, 0).egress, std::vector<uint32_t>{b});
}

}  // namespace
}  // namespace blackbox
