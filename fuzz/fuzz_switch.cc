// libFuzzer target: the switch's receive path on hostile guest input.
//
// The input is one connection's byte stream plus a small header that picks the
// configuration, where the stream is split into reads, and per frame the
// ingress port, clock advance and housekeeping calls:
//
//   [0]       config: bits 0-1 split mode (0 one read, 1 three cut points from
//             [1..3], 2 read sizes 1 + [1..3], 3 read sizes 1 + [1..3] % 8);
//             bits 2-3 decoder cap (default, 1514, 64, default); bits 4-5
//             max_flows (64, 8, 2, 64); bit 6 active timeout off (else 20 s, below the
//             idle timeouts, so long flows get split);
//             bit 7 port C joins segment "lan" (else alone in "dmz").
//   [1..3]    split parameters.
//   [4..35]   control tape, 2 bytes per frame, reused cyclically:
//             tape[2i % 32]     bits 0-1 ingress (port A, B, C, or an id that
//                               is not attached), bit 2 FlowTable::Expire(),
//                               bit 3 L2Switch::ExpireMacs(), bit 4 detach the
//                               ingress port and attach it again (new id);
//             tape[2i % 32 + 1] clock advance: bits 0-2 unit (0, 1 us, 1 ms,
//                               100 ms, 1 s, 4 s, 30 s, 250 s), bits 3-5 x1..x8.
//   [36..]    the stream: records of a 4-byte big-endian length and a frame.
//
// The stream goes through StreamDecoder twice (one read, and the split reads)
// and both must agree. Every frame goes through ParseFrame (properties checked),
// L2Switch (checked against a small reference model of its documented rules,
// and its own invariants) and FlowTable (every record checked; packets, bytes
// and drops summed over all records must equal what was observed).
// fuzz/make_corpus.py writes seeds in this format.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_check.h"
#include "switch/flow_table.h"
#include "switch/frame.h"
#include "switch/l2_switch.h"
#include "switch/stream_framing.h"

namespace blackbox::fuzz {
namespace {

using Bytes = std::vector<uint8_t>;
using Drop = L2Switch::Drop;

constexpr size_t kHeaderSize = 36;
constexpr size_t kTapeOffset = 4;
constexpr size_t kTapeSize = 32;
constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kMacAgingNs = 120 * kSec;
constexpr uint32_t kNeverAttached = 0;  // ids start at 1

// ---- Stream decoding ----------------------------------------------------

struct Decoded {
  std::vector<Bytes> frames;
  bool ok = true;
  uint64_t zero_length = 0;
  size_t buffered = 0;
};

// Decodes `stream` read by read; `reads` are the read sizes (summing to the
// stream size).
Decoded Decode(size_t max_frame, std::span<const uint8_t> stream,
               const std::vector<size_t>& reads) {
  StreamDecoder dec(max_frame);
  Decoded out;
  uint64_t bytes = 0;
  auto on_frame = [&](std::span<const uint8_t> frame) {
    FUZZ_CHECK(out.ok);  // nothing is delivered after the error
    FUZZ_CHECK(!frame.empty() && frame.size() <= max_frame);
    out.frames.emplace_back(frame.begin(), frame.end());
    bytes += frame.size();
  };
  FUZZ_CHECK(dec.Feed({}, on_frame).ok());
  size_t pos = 0;
  for (size_t n : reads) {
    Status st = dec.Feed(stream.subspan(pos, n), on_frame);
    pos += n;
    if (!out.ok) {
      FUZZ_CHECK(!st.ok());  // sticky
    } else if (!st.ok()) {
      FUZZ_CHECK(st.code() == StatusCode::kResourceExhausted);
      out.ok = false;
    }
    FUZZ_CHECK(dec.buffered() <= kStreamHeaderSize + max_frame);
    FUZZ_CHECK(dec.buffer_capacity() <= max_frame);
  }
  FUZZ_CHECK(pos == stream.size());
  if (!out.ok) {
    const uint8_t more[] = {0, 0, 0, 1, 0x42};
    FUZZ_CHECK(!dec.Feed(more, on_frame).ok());
  }
  FUZZ_CHECK(dec.frames() == out.frames.size());
  FUZZ_CHECK(dec.bytes() == bytes);
  out.zero_length = dec.zero_length_frames();
  out.buffered = dec.buffered();
  if (out.ok) {
    // Every stream byte is a delivered record, a skipped empty record or held.
    FUZZ_CHECK(bytes + kStreamHeaderSize * (out.frames.size() + out.zero_length) + out.buffered ==
               stream.size());
  }
  return out;
}

std::vector<size_t> ReadSizes(int mode, const uint8_t p[3], size_t n) {
  std::vector<size_t> reads;
  if (mode == 0) {
    reads.push_back(n);
  } else if (mode == 1) {
    std::array<size_t, 3> cuts;
    for (int i = 0; i < 3; ++i) cuts[i] = p[i] * n / 256;
    std::sort(cuts.begin(), cuts.end());
    size_t prev = 0;
    for (size_t c : cuts) {
      reads.push_back(c - prev);  // empty reads are allowed
      prev = c;
    }
    reads.push_back(n - prev);
  } else {
    size_t pos = 0;
    for (size_t k = 0; pos < n; ++k) {
      size_t len = mode == 2 ? 1 + p[k % 3] : 1 + p[k % 3] % 8;
      len = std::min(len, n - pos);
      reads.push_back(len);
      pos += len;
    }
  }
  return reads;
}

// ---- Switch reference model ---------------------------------------------

MacAddr Mac(uint8_t last) { return MacAddr{{0x52, 0x54, 0x00, 0x00, 0x00, last}}; }
IpAddr V4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  const uint8_t x[4] = {a, b, c, d};
  return IpAddr::V4(x);
}
IpAddr V6(std::array<uint8_t, 16> x) { return IpAddr::V6(x); }

struct Slot {
  L2Switch::PortConfig cfg;
  uint32_t id = 0;
  L2Switch::PortCounters counters;
};

// The documented rules of l2_switch.h, written out plainly.
class Model {
 public:
  uint32_t Add(Slot& slot) {
    slot.id = next_id_++;
    slot.counters = {};
    attached_[slot.id] = &slot;
    return slot.id;
  }
  void Remove(Slot& slot) {
    auto& table = tables_[slot.cfg.segment];
    std::erase_if(table, [&](const auto& kv) { return kv.second.port == slot.id; });
    attached_.erase(slot.id);
  }

  struct Result {
    Drop drop = Drop::kNone;
    std::vector<uint32_t> egress;
  };

  Result Process(uint32_t ingress, const std::optional<ParsedFrame>& p, size_t len, int64_t now) {
    Result r;
    auto in = attached_.find(ingress);
    if (in == attached_.end()) {
      ++unknown_port_drops_;
      r.drop = Drop::kUnknownPort;
      return r;
    }
    Slot& port = *in->second;
    ++port.counters.rx_frames;
    port.counters.rx_bytes += len;
    r.drop = !p ? Drop::kMalformed : Source(port.cfg, *p);
    if (r.drop == Drop::kNone) {
      auto& table = tables_[port.cfg.segment];
      table[p->src.bytes] = Entry{ingress, now};
      if ((p->dst.bytes[0] & 1) == 0) {
        auto hit = table.find(p->dst.bytes);
        if (hit != table.end() && now - hit->second.last_seen <= kMacAgingNs) {
          if (hit->second.port == ingress) {
            r.drop = Drop::kNoPeer;
          } else {
            r.egress.push_back(hit->second.port);
          }
        }
      }
      if (r.drop == Drop::kNone && r.egress.empty()) {
        for (const auto& [id, other] : attached_) {
          if (id != ingress && other->cfg.segment == port.cfg.segment) r.egress.push_back(id);
        }
        if (r.egress.empty()) r.drop = Drop::kNoPeer;
      }
    }
    if (r.drop != Drop::kNone) {
      ++port.counters.drops[static_cast<size_t>(r.drop)];
    }
    for (uint32_t id : r.egress) {
      ++attached_.at(id)->counters.tx_frames;
      attached_.at(id)->counters.tx_bytes += len;
    }
    return r;
  }

  size_t ExpireMacs(int64_t now) {
    size_t n = 0;
    for (auto& [segment, table] : tables_) {
      n += std::erase_if(table,
                         [&](const auto& kv) { return now - kv.second.last_seen > kMacAgingNs; });
    }
    return n;
  }

  size_t table_size() const {
    size_t n = 0;
    for (const auto& [segment, table] : tables_) n += table.size();
    return n;
  }
  uint64_t unknown_port_drops() const { return unknown_port_drops_; }
  const std::map<uint32_t, Slot*>& attached() const { return attached_; }

 private:
  struct Entry {
    uint32_t port = 0;
    int64_t last_seen = 0;
  };

  static Drop Source(const L2Switch::PortConfig& cfg, const ParsedFrame& p) {
    if (p.src != cfg.mac) return Drop::kSpoofedMac;
    if (p.l3 == ParsedFrame::L3::kArp && p.arp.sender_mac != cfg.mac) return Drop::kSpoofedMac;
    if (cfg.allowed_ips.empty()) return Drop::kNone;
    auto allowed = [&](const IpAddr& ip) {
      IpAddr unspecified;
      unspecified.family = ip.family;
      return ip == unspecified ||
             std::find(cfg.allowed_ips.begin(), cfg.allowed_ips.end(), ip) != cfg.allowed_ips.end();
    };
    switch (p.l3) {
      case ParsedFrame::L3::kArp:
        return allowed(p.arp.sender_ip) ? Drop::kNone : Drop::kSpoofedIp;
      case ParsedFrame::L3::kIpv4:
      case ParsedFrame::L3::kIpv6:
        return allowed(p.ip.src) ? Drop::kNone : Drop::kSpoofedIp;
      case ParsedFrame::L3::kNone:
        break;
    }
    return Drop::kBlockedEthertype;
  }

  uint32_t next_id_ = 1;
  std::map<uint32_t, Slot*> attached_;
  std::map<std::string, std::map<std::array<uint8_t, 6>, Entry>> tables_;
  uint64_t unknown_port_drops_ = 0;
};

bool SameCounters(const L2Switch::PortCounters& a, const L2Switch::PortCounters& b) {
  return a.rx_frames == b.rx_frames && a.rx_bytes == b.rx_bytes && a.tx_frames == b.tx_frames &&
         a.tx_bytes == b.tx_bytes && a.drops == b.drops;
}

void CheckSwitchState(const L2Switch& sw, const Model& model) {
  FUZZ_CHECK(sw.port_count() == model.attached().size());
  for (const auto& [id, slot] : model.attached()) {
    std::optional<L2Switch::PortCounters> c = sw.GetCounters(id);
    FUZZ_CHECK(c.has_value());
    FUZZ_CHECK(SameCounters(*c, slot->counters));
    FUZZ_CHECK(c->drop_count(Drop::kNone) == 0);
    const L2Switch::PortConfig* cfg = sw.GetPortConfig(id);
    FUZZ_CHECK(cfg != nullptr && cfg->segment == slot->cfg.segment && cfg->mac == slot->cfg.mac);
  }
  FUZZ_CHECK(sw.unknown_port_drops() == model.unknown_port_drops());
}

// ---- Flow records -------------------------------------------------------

struct FlowTotals {
  uint64_t packets = 0;
  uint64_t bytes = 0;
  uint64_t dropped = 0;
  uint64_t records = 0;
  uint64_t first_segments = 0;
};

void CheckRecord(const FlowRecord& r, int64_t now, const std::set<uint32_t>& ingress_ids,
                 const FlowTable::Options& opt, FlowTotals& totals) {
  const uint64_t packets = r.packets_a_to_b + r.packets_b_to_a;
  FUZZ_CHECK(packets >= 1);  // no empty records
  FUZZ_CHECK(r.start_ns <= r.end_ns && r.end_ns <= now);
  FUZZ_CHECK(r.bytes_a_to_b >= kEthernetHeaderSize * r.packets_a_to_b);
  FUZZ_CHECK(r.bytes_b_to_a >= kEthernetHeaderSize * r.packets_b_to_a);
  FUZZ_CHECK(r.bytes_a_to_b <= kMaxFrameSize * r.packets_a_to_b);
  FUZZ_CHECK(r.bytes_b_to_a <= kMaxFrameSize * r.packets_b_to_a);
  FUZZ_CHECK(r.ingress_port_a.has_value() == (r.packets_a_to_b > 0));
  FUZZ_CHECK(r.ingress_port_b.has_value() == (r.packets_b_to_a > 0));
  if (r.ingress_port_a) FUZZ_CHECK(ingress_ids.count(*r.ingress_port_a));
  if (r.ingress_port_b) FUZZ_CHECK(ingress_ids.count(*r.ingress_port_b));
  FUZZ_CHECK(r.dropped == (r.dropped_packets > 0));
  FUZZ_CHECK(r.dropped_packets <= packets);
  FUZZ_CHECK(!r.a_ip.empty() && !r.b_ip.empty());
  if (r.packets_b_to_a > 0 && r.a_ip == r.b_ip && r.kind == FlowKind::kArp) {
    FUZZ_CHECK(false);  // ARP direction is by sender IP: equal IPs are always a->b
  }
  FUZZ_CHECK(r.community_id.empty() ||
             (r.community_id.size() == 30 && r.community_id.compare(0, 2, "1:") == 0));

  const bool tcp = r.kind == FlowKind::kIp && r.proto == kIpProtoTcp;
  if (r.kind == FlowKind::kArp) {
    FUZZ_CHECK(r.proto == 0 && r.a_port == 0 && r.b_port == 0 && r.community_id.empty());
  }
  if (!tcp) {
    FUZZ_CHECK(r.tcp_flags_a == 0 && r.tcp_flags_b == 0 && r.tcp_state == TcpState::kNone);
  } else {
    FUZZ_CHECK(r.tcp_state != TcpState::kNone);
    if (r.end_reason == FlowEndReason::kRst) {
      FUZZ_CHECK((r.tcp_flags_a | r.tcp_flags_b) & kTcpRst);
    }
  }
  const bool closed_reason =
      r.end_reason == FlowEndReason::kFin || r.end_reason == FlowEndReason::kRst;
  FUZZ_CHECK(closed_reason == (r.tcp_state == TcpState::kClosed));
  if (r.end_reason == FlowEndReason::kActiveTimeout) {
    FUZZ_CHECK(opt.active_timeout_ns > 0 && now - r.start_ns >= opt.active_timeout_ns);
  }
  if (r.end_reason == FlowEndReason::kIdle) {
    int64_t idle = opt.other_idle_ns;
    if (r.kind == FlowKind::kArp) {
      idle = opt.arp_idle_ns;
    } else if (tcp) {
      idle = r.tcp_state == TcpState::kEstablished ? opt.tcp_established_idle_ns
                                                   : opt.tcp_other_idle_ns;
    } else if (r.proto == kIpProtoUdp) {
      idle = opt.udp_idle_ns;
    } else if (r.proto == kIpProtoIcmp || r.proto == kIpProtoIcmpv6) {
      idle = opt.icmp_idle_ns;
    }
    FUZZ_CHECK(now - r.end_ns >= idle);
  }

  try {
    const nlohmann::json j = r.ToJson();
    const std::string text = j.dump();  // throws on invalid UTF-8
    FUZZ_CHECK(text.size() > 2 && text.front() == '{' && text.back() == '}');
    FUZZ_CHECK(j.at("end_reason") == FlowEndReasonName(r.end_reason));
    FUZZ_CHECK(j.contains("tcp_state") == tcp);
    FUZZ_CHECK(j.at("packets_a_to_b") == r.packets_a_to_b);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FlowRecord::ToJson: %s\n", e.what());
    FUZZ_CHECK(false);
  }

  totals.packets += packets;
  totals.bytes += r.bytes_a_to_b + r.bytes_b_to_a;
  totals.dropped += r.dropped_packets;
  ++totals.records;
  if (r.segment == 0) ++totals.first_segments;
}

// FUZZ_SWITCH_TRACE=1 prints what each input does (for reading a reproducer).
bool Trace() {
  static const bool on = std::getenv("FUZZ_SWITCH_TRACE") != nullptr;
  return on;
}

void TraceRecords(const char* what, const std::vector<FlowRecord>& records) {
  if (!Trace()) return;
  for (const FlowRecord& r : records)
    std::fprintf(stderr, "  %s: %s\n", what, r.ToJson().dump().c_str());
}

int64_t ClockAdvance(uint8_t b) {
  static constexpr int64_t kUnit[8] = {0,    1'000,    1'000'000, 100'000'000,
                                       kSec, 4 * kSec, 30 * kSec, 250 * kSec};
  return kUnit[b & 7] * (1 + ((b >> 3) & 7));
}

void Run(std::span<const uint8_t> in) {
  if (in.size() < kHeaderSize) return;
  const uint8_t cfg = in[0];
  const uint8_t* split = &in[1];
  const std::span<const uint8_t> tape = in.subspan(kTapeOffset, kTapeSize);
  const std::span<const uint8_t> stream = in.subspan(kHeaderSize);

  // 1. Stream decoding: one read vs. the split reads must agree.
  static constexpr size_t kCaps[4] = {kMaxFrameSize, 1514, 64, kMaxFrameSize};
  const size_t max_frame = kCaps[(cfg >> 2) & 3];
  const Decoded whole = Decode(max_frame, stream, {stream.size()});
  const Decoded parts = Decode(max_frame, stream, ReadSizes(cfg & 3, split, stream.size()));
  FUZZ_CHECK(whole.ok == parts.ok);
  FUZZ_CHECK(whole.frames == parts.frames);
  FUZZ_CHECK(whole.zero_length == parts.zero_length);
  if (whole.ok) FUZZ_CHECK(whole.buffered == parts.buffered);
  {
    // Re-encoding the frames gives a stream that decodes to the same frames.
    std::string again;
    for (const Bytes& f : parts.frames) again += EncodeStreamFrame(f);
    const Decoded round =
        Decode(max_frame, std::span(reinterpret_cast<const uint8_t*>(again.data()), again.size()),
               {again.size()});
    FUZZ_CHECK(round.ok && round.frames == parts.frames && round.buffered == 0);
  }

  // 2. The switch: ports A and B in "lan", C in "dmz" (or "lan").
  L2Switch::Options sw_opt;
  sw_opt.mac_aging_ns = kMacAgingNs;
  L2Switch sw(sw_opt);
  Model model;
  std::array<Slot, 3> slots;
  slots[0].cfg = {
      "a",
      "lan",
      Mac(0x0a),
      {V4(10, 0, 2, 15), V6({0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a})}};
  slots[1].cfg = {"b", "lan", Mac(0x0b), {}};
  slots[2].cfg = {
      "c",
      (cfg & 0x80) ? "lan" : "dmz",
      Mac(0x0c),
      {V4(10, 0, 3, 5), V6({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0c})}};
  for (Slot& s : slots) FUZZ_CHECK(sw.AddPort(s.cfg) == model.Add(s));
  std::set<uint32_t> ingress_ids;
  uint32_t detached_id = kNeverAttached;

  // 3. The flow table.
  FlowTable::Options ft_opt;
  static constexpr size_t kMaxFlows[4] = {64, 8, 2, 64};
  ft_opt.max_flows = kMaxFlows[(cfg >> 4) & 3];
  ft_opt.active_timeout_ns = (cfg & 0x40) ? 0 : 20 * kSec;
  FlowTable ft(ft_opt);
  FlowTotals observed, recorded;

  int64_t now = kSec;
  for (size_t i = 0; i < parts.frames.size(); ++i) {
    const std::span<const uint8_t> frame = parts.frames[i];
    const uint8_t ctl = tape[(2 * i) % kTapeSize];
    now += ClockAdvance(tape[(2 * i + 1) % kTapeSize]);
    const unsigned sel = ctl & 3;
    const uint32_t ingress = sel < 3 ? slots[sel].id : detached_id;
    ingress_ids.insert(ingress);

    StatusOr<ParsedFrame> parsed = ParseFrame(frame);
    std::optional<ParsedFrame> p;
    if (parsed.ok()) {
      p = *parsed;
      CheckParsedFrame(frame, *p);
      CheckCommunityId(*p);
    } else {
      FUZZ_CHECK(parsed.status().code() == StatusCode::kInvalidArgument);
    }

    // Switch decision: its own invariants, then the reference model.
    const L2Switch::Decision d = sw.Process(ingress, frame, now);
    if (Trace()) {
      std::string egress;
      for (uint32_t e : d.egress) egress += " " + std::to_string(e);
      std::fprintf(stderr, "frame %zu: t=%.6fs port %u, %zu bytes: %s; %s%s %s\n", i,
                   static_cast<double>(now) / kSec, ingress, frame.size(),
                   p ? "parsed" : parsed.status().message().c_str(), L2Switch::DropName(d.drop),
                   egress.c_str(), d.reason.c_str());
    }
    FUZZ_CHECK((d.drop == Drop::kNone) == !d.egress.empty());
    FUZZ_CHECK((d.drop == Drop::kNone) == d.reason.empty());
    FUZZ_CHECK(std::string_view(L2Switch::DropName(d.drop)) != "unknown");
    FUZZ_CHECK(std::adjacent_find(d.egress.begin(), d.egress.end(),
                                  [](uint32_t a, uint32_t b) { return a >= b; }) == d.egress.end());
    for (uint32_t e : d.egress) {
      FUZZ_CHECK(e != ingress);
      const L2Switch::PortConfig* ec = sw.GetPortConfig(e);
      FUZZ_CHECK(ec != nullptr && ec->segment == sw.GetPortConfig(ingress)->segment);
    }
    if (!p && d.drop != Drop::kUnknownPort) FUZZ_CHECK(d.drop == Drop::kMalformed);
    const Model::Result want = model.Process(ingress, p, frame.size(), now);
    FUZZ_CHECK(d.drop == want.drop);
    FUZZ_CHECK(d.egress == want.egress);
    if (p && (d.drop == Drop::kNone || d.drop == Drop::kNoPeer)) {
      // A frame that passed the source checks taught the switch its MAC.
      FUZZ_CHECK(sw.LookupMac(sw.GetPortConfig(ingress)->segment, p->src, now) == ingress);
    }
    CheckSwitchState(sw, model);

    // Flow accounting: every parsed frame, forwarded or not.
    if (p) {
      const FlowTable::Stats before = ft.stats();
      ft.Observe(*p, frame.size(), ingress, now, d.drop == Drop::kNone);
      const FlowTable::Stats& after = ft.stats();
      const uint64_t skipped = (after.unkeyed_frames - before.unkeyed_frames) +
                               (after.untracked_frames - before.untracked_frames);
      FUZZ_CHECK(skipped <= 1);
      if (skipped == 0) {
        ++observed.packets;
        observed.bytes += frame.size();
        if (d.drop != Drop::kNone) ++observed.dropped;
      }
      FUZZ_CHECK(ft.size() <= ft_opt.max_flows);
    }

    if (ctl & 0x04) {
      const std::vector<FlowRecord> records = ft.Expire(now);
      TraceRecords("expire", records);
      for (const FlowRecord& r : records) CheckRecord(r, now, ingress_ids, ft_opt, recorded);
    }
    if (ctl & 0x08) {
      FUZZ_CHECK(sw.ExpireMacs(now) == model.ExpireMacs(now));
      FUZZ_CHECK(sw.mac_table_size() == model.table_size());
    }
    if (ctl & 0x10) {
      if (sel < 3) {
        Slot& s = slots[sel];
        detached_id = s.id;
        sw.RemovePort(s.id);
        model.Remove(s);
        FUZZ_CHECK(!sw.GetCounters(detached_id).has_value());
        FUZZ_CHECK(sw.AddPort(s.cfg) == model.Add(s));
      } else {
        sw.RemovePort(ingress);  // not attached: ignored
      }
      CheckSwitchState(sw, model);
    }
  }

  const std::vector<FlowRecord> expired = ft.Expire(now);
  TraceRecords("expire", expired);
  for (const FlowRecord& r : expired) CheckRecord(r, now, ingress_ids, ft_opt, recorded);
  now += kSec;
  const std::vector<FlowRecord> flushed = ft.Flush(now);
  TraceRecords("flush", flushed);
  for (const FlowRecord& r : flushed) CheckRecord(r, now, ingress_ids, ft_opt, recorded);
  if (Trace()) {
    const FlowTable::Stats& s = ft.stats();
    std::fprintf(stderr,
                 "decoder: %zu frames%s; flows created %llu, untracked %llu, unkeyed %llu\n",
                 parts.frames.size(), parts.ok ? "" : " then an oversize record",
                 static_cast<unsigned long long>(s.flows_created),
                 static_cast<unsigned long long>(s.untracked_frames),
                 static_cast<unsigned long long>(s.unkeyed_frames));
  }
  FUZZ_CHECK(ft.size() == 0);
  FUZZ_CHECK(ft.Flush(now).empty());

  const FlowTable::Stats& st = ft.stats();
  FUZZ_CHECK(recorded.packets == observed.packets);
  FUZZ_CHECK(recorded.bytes == observed.bytes);
  FUZZ_CHECK(recorded.dropped == observed.dropped);
  FUZZ_CHECK(st.records_emitted == recorded.records);
  FUZZ_CHECK(recorded.first_segments <= st.flows_created);
}

}  // namespace
}  // namespace blackbox::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  blackbox::fuzz::Run(std::span<const uint8_t>(data, size));
  return 0;
}
