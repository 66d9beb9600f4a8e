#include "switch/flow_table.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "switch/community_id.h"

namespace blackbox {
namespace {

using Bytes = std::vector<uint8_t>;

constexpr int64_t kSec = 1'000'000'000;

void Put16(Bytes& b, uint16_t v) {
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}
void Append(Bytes& b, const Bytes& more) { b.insert(b.end(), more.begin(), more.end()); }

const Bytes kMacA = {0x52, 0x54, 0x00, 0x00, 0x00, 0x0a};
const Bytes kMacB = {0x52, 0x54, 0x00, 0x00, 0x00, 0x0b};
const Bytes kIpA = {10, 0, 2, 15};
const Bytes kIpB = {10, 0, 2, 2};

Bytes Ethernet(const Bytes& dst, const Bytes& src, uint16_t ethertype) {
  Bytes b = dst;
  Append(b, src);
  Put16(b, ethertype);
  return b;
}

Bytes Ipv4Frame(uint8_t proto, const Bytes& src, const Bytes& dst, const Bytes& l4) {
  Bytes b = Ethernet(src == kIpA ? kMacB : kMacA, src == kIpA ? kMacA : kMacB, kEtherTypeIpv4);
  b.insert(b.end(), {0x45, 0x00});
  Put16(b, static_cast<uint16_t>(20 + l4.size()));
  Put16(b, 0x1234);
  Put16(b, 0x4000);
  b.push_back(64);
  b.push_back(proto);
  Put16(b, 0);
  Append(b, src);
  Append(b, dst);
  Append(b, l4);
  return b;
}

Bytes TcpFrame(const Bytes& src, uint16_t sport, const Bytes& dst, uint16_t dport, uint8_t flags,
               size_t payload = 0) {
  Bytes t;
  Put16(t, sport);
  Put16(t, dport);
  t.insert(t.end(), {0, 0, 0, 1, 0, 0, 0, 0});
  t.push_back(5 << 4);
  t.push_back(flags);
  Put16(t, 64240);
  Put16(t, 0);
  Put16(t, 0);
  t.resize(t.size() + payload, 'x');
  return Ipv4Frame(kIpProtoTcp, src, dst, t);
}

Bytes UdpFrame(const Bytes& src, uint16_t sport, const Bytes& dst, uint16_t dport, size_t payload) {
  Bytes u;
  Put16(u, sport);
  Put16(u, dport);
  Put16(u, static_cast<uint16_t>(8 + payload));
  Put16(u, 0);
  u.resize(u.size() + payload, 'u');
  return Ipv4Frame(kIpProtoUdp, src, dst, u);
}

Bytes IcmpFrame(const Bytes& src, const Bytes& dst, uint8_t type) {
  Bytes i = {type, 0, 0, 0, 0x12, 0x34, 0x00, 0x01};  // id, seq
  i.resize(i.size() + 56, 0x42);
  return Ipv4Frame(kIpProtoIcmp, src, dst, i);
}

Bytes ArpFrame(uint16_t op, const Bytes& sender_mac, const Bytes& sender_ip,
               const Bytes& target_mac, const Bytes& target_ip) {
  Bytes b = Ethernet(op == 1 ? Bytes(6, 0xff) : target_mac, sender_mac, kEtherTypeArp);
  Put16(b, 1);
  Put16(b, kEtherTypeIpv4);
  b.push_back(6);
  b.push_back(4);
  Put16(b, op);
  Append(b, sender_mac);
  Append(b, sender_ip);
  Append(b, target_mac);
  Append(b, target_ip);
  return b;
}

// Parses `frame` and feeds it to `table`.
void Feed(FlowTable& table, const Bytes& frame, int64_t now_ns, uint32_t port = 1,
          bool forwarded = true) {
  StatusOr<ParsedFrame> f = ParseFrame(frame);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  table.Observe(*f, frame.size(), port, now_ns, forwarded);
}

TEST(FlowTableTest, TcpHandshakeDataAndFinClose) {
  FlowTable table;
  const Bytes syn = TcpFrame(kIpA, 40000, kIpB, 80, kTcpSyn);
  const Bytes synack = TcpFrame(kIpB, 80, kIpA, 40000, kTcpSyn | kTcpAck);
  const Bytes ack = TcpFrame(kIpA, 40000, kIpB, 80, kTcpAck);
  const Bytes data = TcpFrame(kIpA, 40000, kIpB, 80, kTcpPsh | kTcpAck, 100);
  const Bytes data_ack = TcpFrame(kIpB, 80, kIpA, 40000, kTcpAck);
  const Bytes fin_a = TcpFrame(kIpA, 40000, kIpB, 80, kTcpFin | kTcpAck);
  const Bytes fin_b = TcpFrame(kIpB, 80, kIpA, 40000, kTcpFin | kTcpAck);
  const Bytes last_ack = TcpFrame(kIpA, 40000, kIpB, 80, kTcpAck);

  int64_t t = 1000 * kSec;
  Feed(table, syn, t, 1);
  Feed(table, synack, t + 1, 2);
  Feed(table, ack, t + 2, 1);
  Feed(table, data, t + 3, 1);
  Feed(table, data_ack, t + 4, 2);
  Feed(table, fin_a, t + 5, 1);
  Feed(table, fin_b, t + 6, 2);
  EXPECT_TRUE(table.Expire(t + 7).empty());
  Feed(table, last_ack, t + 8, 1);
  EXPECT_EQ(table.size(), 1u);

  // Closed, but lingering for 5 s.
  EXPECT_TRUE(table.Expire(t + 8 + 4 * kSec).empty());
  std::vector<FlowRecord> recs = table.Expire(t + 8 + 5 * kSec);
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(table.size(), 0u);
  const FlowRecord& r = recs[0];
  EXPECT_EQ(r.kind, FlowKind::kIp);
  EXPECT_EQ(r.a_ip, "10.0.2.15");
  EXPECT_EQ(r.b_ip, "10.0.2.2");
  EXPECT_EQ(r.a_port, 40000);
  EXPECT_EQ(r.b_port, 80);
  EXPECT_EQ(r.proto, kIpProtoTcp);
  EXPECT_EQ(r.packets_a_to_b, 5u);
  EXPECT_EQ(r.bytes_a_to_b, syn.size() + ack.size() + data.size() + fin_a.size() + last_ack.size());
  EXPECT_EQ(r.bytes_a_to_b, 4u * 54 + 154);
  EXPECT_EQ(r.packets_b_to_a, 3u);
  EXPECT_EQ(r.bytes_b_to_a, 3u * 54);
  EXPECT_EQ(TcpFlagsString(r.tcp_flags_a), "FSPA");
  EXPECT_EQ(TcpFlagsString(r.tcp_flags_b), "FSA");
  EXPECT_EQ(r.tcp_state, TcpState::kClosed);
  EXPECT_EQ(r.end_reason, FlowEndReason::kFin);
  EXPECT_EQ(r.start_ns, t);
  EXPECT_EQ(r.end_ns, t + 8);
  EXPECT_FALSE(r.dropped);
  EXPECT_EQ(r.ingress_port_a, 1u);
  EXPECT_EQ(r.ingress_port_b, 2u);

  nlohmann::json j = r.ToJson();
  EXPECT_EQ(j["tcp_flags_a"], "FSPA");
  EXPECT_EQ(j["tcp_state"], "CLOSED");
  EXPECT_EQ(j["end_reason"], "fin");
  EXPECT_EQ(j["kind"], "ip");
  EXPECT_EQ(j["packets_b_to_a"], 3);
}

TEST(FlowTableTest, TcpStatesAlongTheHandshake) {
  FlowTable table;
  Feed(table, TcpFrame(kIpA, 1234, kIpB, 22, kTcpSyn), 0);
  EXPECT_EQ(table.Flush(1)[0].tcp_state, TcpState::kSynSent);
  Feed(table, TcpFrame(kIpA, 1234, kIpB, 22, kTcpSyn), 0);
  Feed(table, TcpFrame(kIpB, 22, kIpA, 1234, kTcpSyn | kTcpAck), 1);
  EXPECT_EQ(table.Flush(2)[0].tcp_state, TcpState::kSynReceived);
  Feed(table, TcpFrame(kIpA, 1234, kIpB, 22, kTcpAck), 0);  // mid-stream pickup
  EXPECT_EQ(table.Flush(2)[0].tcp_state, TcpState::kEstablished);
  Feed(table, TcpFrame(kIpA, 1234, kIpB, 22, kTcpAck), 0);
  Feed(table, TcpFrame(kIpA, 1234, kIpB, 22, kTcpFin | kTcpAck), 1);
  std::vector<FlowRecord> recs = table.Flush(2);
  EXPECT_EQ(recs[0].tcp_state, TcpState::kFinWait);
  EXPECT_EQ(recs[0].end_reason, FlowEndReason::kFlush);
}

TEST(FlowTableTest, RstEndsFlowAfterLinger) {
  FlowTable table;
  Feed(table, TcpFrame(kIpA, 40001, kIpB, 443, kTcpSyn), 0);
  Feed(table, TcpFrame(kIpB, 443, kIpA, 40001, kTcpRst | kTcpAck), 10, 2, /*forwarded=*/false);
  EXPECT_TRUE(table.Expire(10 + 4 * kSec).empty());
  std::vector<FlowRecord> recs = table.Expire(10 + 5 * kSec);
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].end_reason, FlowEndReason::kRst);
  EXPECT_EQ(recs[0].tcp_state, TcpState::kClosed);
  EXPECT_EQ(TcpFlagsString(recs[0].tcp_flags_b), "RA");
  EXPECT_TRUE(recs[0].dropped);
  EXPECT_EQ(recs[0].dropped_packets, 1u);
  EXPECT_EQ(recs[0].ToJson()["end_reason"], "rst");
}

TEST(FlowTableTest, SynAfterCloseStartsNewFlow) {
  FlowTable table;
  Feed(table, TcpFrame(kIpA, 40001, kIpB, 443, kTcpSyn), 0);
  Feed(table, TcpFrame(kIpB, 443, kIpA, 40001, kTcpRst | kTcpAck), 10);
  Feed(table, TcpFrame(kIpA, 40001, kIpB, 443, kTcpSyn), 20);
  EXPECT_EQ(table.size(), 1u);
  std::vector<FlowRecord> recs = table.Expire(30);
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].end_reason, FlowEndReason::kRst);
  EXPECT_EQ(recs[0].packets_a_to_b, 1u);
  recs = table.Flush(40);
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].tcp_state, TcpState::kSynSent);
  EXPECT_EQ(recs[0].start_ns, 20);
}

TEST(FlowTableTest, UdpIdleTimeout) {
  FlowTable table;
  Feed(table, UdpFrame(kIpA, 5353, kIpB, 53, 30), 0);
  Feed(table, UdpFrame(kIpB, 53, kIpA, 5353, 90), 1 * kSec);
  EXPECT_TRUE(table.Expire(60 * kSec).empty());  // 59 s idle
  std::vector<FlowRecord> recs = table.Expire(61 * kSec);
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].end_reason, FlowEndReason::kIdle);
  EXPECT_EQ(recs[0].proto, kIpProtoUdp);
  EXPECT_EQ(recs[0].packets_a_to_b, 1u);
  EXPECT_EQ(recs[0].packets_b_to_a, 1u);
  EXPECT_EQ(recs[0].bytes_a_to_b, 14u + 20 + 8 + 30);
  EXPECT_EQ(recs[0].bytes_b_to_a, 14u + 20 + 8 + 90);
  EXPECT_EQ(recs[0].end_ns, 1 * kSec);
  EXPECT_EQ(recs[0].tcp_state, TcpState::kNone);
  EXPECT_FALSE(recs[0].ToJson().contains("tcp_state"));
  EXPECT_EQ(table.size(), 0u);
}

TEST(FlowTableTest, IdleFlowHitByLateFrameStartsNewFlow) {
  FlowTable table;
  Feed(table, UdpFrame(kIpA, 5353, kIpB, 53, 30), 0);
  Feed(table, UdpFrame(kIpA, 5353, kIpB, 53, 30), 100 * kSec);  // no Expire in between
  std::vector<FlowRecord> recs = table.Expire(100 * kSec);
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].end_reason, FlowEndReason::kIdle);
  EXPECT_EQ(table.size(), 1u);
  EXPECT_EQ(table.stats().flows_created, 2u);
}

TEST(FlowTableTest, IcmpEchoRequestAndReplyAreOneFlow) {
  FlowTable table;
  Feed(table, IcmpFrame(kIpA, kIpB, 8), 0);
  Feed(table, IcmpFrame(kIpB, kIpA, 0), 1000);
  Feed(table, IcmpFrame(kIpB, kIpA, 3), 2000);  // unreachable: a flow of its own
  EXPECT_EQ(table.size(), 2u);
  EXPECT_TRUE(table.Expire(29 * kSec).empty());
  std::vector<FlowRecord> recs = table.Expire(30 * kSec + 2000);
  ASSERT_EQ(recs.size(), 2u);
  const FlowRecord& echo = recs[0].a_port == 8 ? recs[0] : recs[1];
  EXPECT_EQ(echo.a_ip, "10.0.2.15");
  EXPECT_EQ(echo.a_port, 8);  // type
  EXPECT_EQ(echo.packets_a_to_b, 1u);
  EXPECT_EQ(echo.packets_b_to_a, 1u);
  EXPECT_EQ(echo.end_reason, FlowEndReason::kIdle);
}

TEST(FlowTableTest, ArpRequestAndReplyAreOneFlow) {
  FlowTable table;
  Feed(table, ArpFrame(1, kMacA, kIpA, Bytes(6, 0), kIpB), 0, 1);
  Feed(table, ArpFrame(2, kMacB, kIpB, kMacA, kIpA), 5, 2);
  EXPECT_EQ(table.size(), 1u);
  EXPECT_TRUE(table.Expire(29 * kSec).empty());
  std::vector<FlowRecord> recs = table.Expire(30 * kSec + 5);
  ASSERT_EQ(recs.size(), 1u);
  const FlowRecord& r = recs[0];
  EXPECT_EQ(r.kind, FlowKind::kArp);
  EXPECT_EQ(r.a_ip, "10.0.2.15");
  EXPECT_EQ(r.b_ip, "10.0.2.2");
  EXPECT_EQ(r.packets_a_to_b, 1u);
  EXPECT_EQ(r.packets_b_to_a, 1u);
  EXPECT_EQ(r.bytes_a_to_b, 42u);
  EXPECT_EQ(r.ingress_port_a, 1u);
  EXPECT_EQ(r.ingress_port_b, 2u);
  EXPECT_EQ(r.community_id, "");
  EXPECT_EQ(r.ToJson()["kind"], "arp");
}

TEST(FlowTableTest, ActiveTimeoutSplitsLongFlow) {
  FlowTable::Options options;
  options.active_timeout_ns = 100 * kSec;
  FlowTable table(options);
  // A UDP stream, one packet every 10 s for 250 s.
  for (int i = 0; i <= 25; ++i) {
    Feed(table, UdpFrame(kIpA, 9000, kIpB, 9001, 10), i * 10 * kSec);
    std::vector<FlowRecord> recs = table.Expire(i * 10 * kSec);
    if (i == 10 || i == 20) {
      ASSERT_EQ(recs.size(), 1u) << i;
      EXPECT_EQ(recs[0].end_reason, FlowEndReason::kActiveTimeout);
      EXPECT_EQ(recs[0].packets_a_to_b, 10u);
      EXPECT_EQ(recs[0].segment, static_cast<uint32_t>(i / 10 - 1));
      EXPECT_EQ(recs[0].end_ns, (i - 1) * 10 * kSec);
    } else {
      EXPECT_TRUE(recs.empty()) << i;
    }
  }
  std::vector<FlowRecord> recs = table.Flush(300 * kSec);
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].end_reason, FlowEndReason::kFlush);
  EXPECT_EQ(recs[0].packets_a_to_b, 6u);
  EXPECT_EQ(recs[0].segment, 2u);
  EXPECT_EQ(recs[0].start_ns, 200 * kSec);
  EXPECT_EQ(table.stats().flows_created, 1u);
}

TEST(FlowTableTest, ActiveTimeoutInExpireThenIdleEmitsNoEmptyRecord) {
  FlowTable::Options options;
  options.active_timeout_ns = 10 * kSec;
  FlowTable table(options);
  Feed(table, UdpFrame(kIpA, 9000, kIpB, 9001, 10), 0);
  Feed(table, UdpFrame(kIpA, 9000, kIpB, 9001, 10), 9 * kSec);
  ASSERT_EQ(table.Expire(10 * kSec).size(), 1u);  // split; nothing since
  EXPECT_TRUE(table.Expire(100 * kSec).empty());  // idle, but the segment is empty
  EXPECT_EQ(table.size(), 0u);
}

TEST(FlowTableTest, FullTableCountsUntrackedFrames) {
  FlowTable::Options options;
  options.max_flows = 2;
  FlowTable table(options);
  Feed(table, UdpFrame(kIpA, 1, kIpB, 53, 10), 0);
  Feed(table, UdpFrame(kIpA, 2, kIpB, 53, 10), 0);
  Feed(table, UdpFrame(kIpA, 3, kIpB, 53, 10), 0);
  Feed(table, UdpFrame(kIpA, 3, kIpB, 53, 10), 0);
  Feed(table, UdpFrame(kIpB, 53, kIpA, 1, 10), 0);  // existing flow: still tracked
  EXPECT_EQ(table.size(), 2u);
  EXPECT_EQ(table.stats().untracked_frames, 2u);
  std::vector<FlowRecord> recs = table.Flush(1);
  ASSERT_EQ(recs.size(), 2u);
  for (const FlowRecord& r : recs) EXPECT_NE(r.a_port, 3);
}

TEST(FlowTableTest, CommunityIdMatchesTuple) {
  FlowTable table;
  const Bytes frame = TcpFrame(kIpA, 34855, kIpB, 80, kTcpSyn);
  StatusOr<ParsedFrame> f = ParseFrame(frame);
  ASSERT_TRUE(f.ok());
  std::optional<FlowTuple> tuple = FlowTupleOf(*f);
  ASSERT_TRUE(tuple.has_value());
  table.Observe(*f, frame.size(), 1, 0, true);
  std::vector<FlowRecord> recs = table.Flush(1);
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].community_id, CommunityId(*tuple));
  EXPECT_EQ(recs[0].community_id.rfind("1:", 0), 0u);
  EXPECT_EQ(recs[0].ToJson()["community_id"], CommunityId(*tuple));
}

TEST(FlowTableTest, ReversedFirstPacketSameFlow) {
  FlowTable table;
  // The server's packet is seen first (e.g. the client's SYN predates recording).
  Feed(table, TcpFrame(kIpB, 80, kIpA, 40000, kTcpSyn | kTcpAck), 0);
  Feed(table, TcpFrame(kIpA, 40000, kIpB, 80, kTcpAck), 1);
  Feed(table, TcpFrame(kIpA, 40000, kIpB, 80, kTcpAck | kTcpPsh, 10), 2);
  EXPECT_EQ(table.size(), 1u);
  std::vector<FlowRecord> recs = table.Flush(3);
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].a_ip, "10.0.2.2");
  EXPECT_EQ(recs[0].a_port, 80);
  EXPECT_EQ(recs[0].packets_a_to_b, 1u);
  EXPECT_EQ(recs[0].packets_b_to_a, 2u);
  EXPECT_EQ(TcpFlagsString(recs[0].tcp_flags_a), "SA");
  EXPECT_EQ(TcpFlagsString(recs[0].tcp_flags_b), "PA");
  EXPECT_EQ(recs[0].tcp_state, TcpState::kEstablished);
  // Same id whichever side came first.
  StatusOr<ParsedFrame> f = ParseFrame(TcpFrame(kIpA, 40000, kIpB, 80, kTcpSyn));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(recs[0].community_id, CommunityId(*FlowTupleOf(*f)));
}

TEST(FlowTableTest, NonIpFramesAreUnkeyed) {
  FlowTable table;
  Bytes frame = Ethernet(kMacB, kMacA, 0x88cc);  // LLDP
  frame.resize(60, 0);
  Feed(table, frame, 0);
  EXPECT_EQ(table.size(), 0u);
  EXPECT_EQ(table.stats().unkeyed_frames, 1u);
}

TEST(FlowTableTest, FlagStrings) {
  EXPECT_EQ(TcpFlagsString(0), "");
  EXPECT_EQ(TcpFlagsString(kTcpSyn | kTcpAck), "SA");
  EXPECT_EQ(TcpFlagsString(kTcpFin | kTcpPsh | kTcpAck), "FPA");
  EXPECT_EQ(TcpFlagsString(0xff), "FSRPAUEC");
}

}  // namespace
}  // namespace blackbox
