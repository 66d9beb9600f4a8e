#include "switch/frame.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace blackbox {
namespace {

constexpr size_t kVlanTagSize = 4;
constexpr size_t kArpSize = 28;
constexpr size_t kIpv4MinHeader = 20;
constexpr size_t kIpv6Header = 40;
constexpr size_t kTcpMinHeader = 20;
constexpr size_t kUdpHeader = 8;
constexpr size_t kIcmpHeader = 4;  // type, code, checksum

constexpr uint8_t kIpv6HopByHop = 0;
constexpr uint8_t kIpv6Routing = 43;
constexpr uint8_t kIpv6Fragment = 44;
constexpr uint8_t kIpv6DestOpts = 60;

uint16_t Be16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }

MacAddr MacAt(const uint8_t* p) {
  MacAddr m;
  std::memcpy(m.bytes.data(), p, 6);
  return m;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes the transport header of an IP packet whose upper-layer data spans
// frame[off, end). `end` is already bounded by the IP length and the frame.
Status ParseTransport(std::span<const uint8_t> frame, size_t off, size_t end, ParsedFrame& f) {
  const uint8_t* p = frame.data() + off;
  const size_t avail = end - off;
  switch (f.ip.protocol) {
    case kIpProtoTcp: {
      if (avail < kTcpMinHeader) return InvalidArgument("truncated TCP header");
      const size_t header = static_cast<size_t>(p[12] >> 4) * 4;
      if (header < kTcpMinHeader) return InvalidArgument("TCP data offset < 5");
      if (header > avail) return InvalidArgument("TCP header beyond IP payload");
      f.l4 = ParsedFrame::L4::kTcp;
      f.transport.src_port = Be16(p);
      f.transport.dst_port = Be16(p + 2);
      f.transport.tcp_flags = p[13];
      f.payload_offset = off + header;
      f.payload_length = avail - header;
      return Status::Ok();
    }
    case kIpProtoUdp: {
      if (avail < kUdpHeader) return InvalidArgument("truncated UDP header");
      const size_t length = Be16(p + 4);
      if (length < kUdpHeader) return InvalidArgument("UDP length < 8");
      if (length > avail) return InvalidArgument("UDP length beyond IP payload");
      f.l4 = ParsedFrame::L4::kUdp;
      f.transport.src_port = Be16(p);
      f.transport.dst_port = Be16(p + 2);
      f.payload_offset = off + kUdpHeader;
      f.payload_length = length - kUdpHeader;
      return Status::Ok();
    }
    case kIpProtoIcmp:
    case kIpProtoIcmpv6: {
      const bool v6 = f.ip.protocol == kIpProtoIcmpv6;
      // ICMP inside the other IP version is nonsense; leave it undecoded.
      if (v6 != (f.l3 == ParsedFrame::L3::kIpv6)) break;
      if (avail < kIcmpHeader) return InvalidArgument("truncated ICMP header");
      f.l4 = v6 ? ParsedFrame::L4::kIcmpv6 : ParsedFrame::L4::kIcmp;
      f.transport.icmp_type = p[0];
      f.transport.icmp_code = p[1];
      f.payload_offset = off + kIcmpHeader;
      f.payload_length = avail - kIcmpHeader;
      return Status::Ok();
    }
    default:
      break;
  }
  f.payload_offset = off;
  f.payload_length = avail;
  return Status::Ok();
}

Status ParseArp(std::span<const uint8_t> frame, size_t off, ParsedFrame& f) {
  if (frame.size() - off < kArpSize) return InvalidArgument("truncated ARP packet");
  const uint8_t* p = frame.data() + off;
  if (Be16(p) != 1 || Be16(p + 2) != kEtherTypeIpv4 || p[4] != 6 || p[5] != 4) {
    return InvalidArgument("ARP is not Ethernet/IPv4");
  }
  f.l3 = ParsedFrame::L3::kArp;
  f.arp.op = Be16(p + 6);
  f.arp.sender_mac = MacAt(p + 8);
  f.arp.sender_ip = IpAddr::V4(std::span<const uint8_t, 4>(p + 14, 4));
  f.arp.target_mac = MacAt(p + 18);
  f.arp.target_ip = IpAddr::V4(std::span<const uint8_t, 4>(p + 24, 4));
  f.payload_offset = off + kArpSize;
  f.payload_length = 0;  // anything after the ARP body is Ethernet padding
  return Status::Ok();
}

Status ParseIpv4(std::span<const uint8_t> frame, size_t off, ParsedFrame& f) {
  const size_t avail = frame.size() - off;
  if (avail < kIpv4MinHeader) return InvalidArgument("truncated IPv4 header");
  const uint8_t* p = frame.data() + off;
  if ((p[0] >> 4) != 4) return InvalidArgument("IPv4 version is not 4");
  const size_t header = static_cast<size_t>(p[0] & 0x0F) * 4;
  if (header < kIpv4MinHeader) return InvalidArgument("IPv4 IHL < 5");
  if (header > avail) return InvalidArgument("IPv4 header beyond frame");
  const size_t total = Be16(p + 2);
  if (total < header) return InvalidArgument("IPv4 total length < header length");
  if (total > avail) return InvalidArgument("IPv4 total length beyond frame");

  f.l3 = ParsedFrame::L3::kIpv4;
  f.ip.src = IpAddr::V4(std::span<const uint8_t, 4>(p + 12, 4));
  f.ip.dst = IpAddr::V4(std::span<const uint8_t, 4>(p + 16, 4));
  f.ip.protocol = p[9];
  f.ip.ttl = p[8];
  f.ip.total_length = static_cast<uint32_t>(total);
  const uint16_t frag = Be16(p + 6);
  const bool more_fragments = (frag & 0x2000) != 0;
  const uint16_t frag_offset = frag & 0x1FFF;
  f.ip.is_fragment = more_fragments || frag_offset != 0;
  f.ip.is_non_first_fragment = frag_offset != 0;

  const size_t l4 = off + header;
  const size_t end = off + total;
  if (f.ip.is_non_first_fragment) {
    f.payload_offset = l4;
    f.payload_length = end - l4;
    return Status::Ok();
  }
  return ParseTransport(frame, l4, end, f);
}

Status ParseIpv6(std::span<const uint8_t> frame, size_t off, ParsedFrame& f) {
  const size_t avail = frame.size() - off;
  if (avail < kIpv6Header) return InvalidArgument("truncated IPv6 header");
  const uint8_t* p = frame.data() + off;
  if ((p[0] >> 4) != 6) return InvalidArgument("IPv6 version is not 6");
  const size_t total = kIpv6Header + Be16(p + 4);
  if (total > avail) return InvalidArgument("IPv6 payload length beyond frame");

  f.l3 = ParsedFrame::L3::kIpv6;
  f.ip.src = IpAddr::V6(std::span<const uint8_t, 16>(p + 8, 16));
  f.ip.dst = IpAddr::V6(std::span<const uint8_t, 16>(p + 24, 16));
  f.ip.ttl = p[7];
  f.ip.total_length = static_cast<uint32_t>(total);

  const size_t end = off + total;
  size_t cur = off + kIpv6Header;
  uint8_t next = p[6];
  for (int count = 0;; ++count) {
    const bool is_ext = next == kIpv6HopByHop || next == kIpv6Routing || next == kIpv6DestOpts ||
                        next == kIpv6Fragment;
    if (!is_ext) break;
    if (count == kMaxIpv6ExtHeaders) return InvalidArgument("too many IPv6 extension headers");
    if (next == kIpv6HopByHop && count != 0) {
      return InvalidArgument("IPv6 hop-by-hop header not first");
    }
    if (end - cur < 8) return InvalidArgument("truncated IPv6 extension header");
    const uint8_t* h = frame.data() + cur;
    size_t length = 8;
    if (next == kIpv6Fragment) {
      const uint16_t frag = Be16(h + 2);
      f.ip.is_fragment = true;
      if ((frag >> 3) != 0) f.ip.is_non_first_fragment = true;
    } else {
      length = (static_cast<size_t>(h[1]) + 1) * 8;
      if (length > end - cur) return InvalidArgument("IPv6 extension header beyond payload");
    }
    next = h[0];
    cur += length;
  }
  f.ip.protocol = next;

  if (f.ip.is_non_first_fragment) {
    f.payload_offset = cur;
    f.payload_length = end - cur;
    return Status::Ok();
  }
  return ParseTransport(frame, cur, end, f);
}

}  // namespace

std::string MacAddr::ToString() const {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(17, ':');
  for (size_t i = 0; i < bytes.size(); ++i) {
    out[i * 3] = kHex[bytes[i] >> 4];
    out[i * 3 + 1] = kHex[bytes[i] & 0x0F];
  }
  return out;
}

StatusOr<MacAddr> MacAddr::Parse(std::string_view text) {
  if (text.size() != 17) return InvalidArgument("MAC address must be xx:xx:xx:xx:xx:xx");
  MacAddr mac;
  for (size_t i = 0; i < 6; ++i) {
    const int hi = HexValue(text[i * 3]);
    const int lo = HexValue(text[i * 3 + 1]);
    if (hi < 0 || lo < 0 || (i < 5 && text[i * 3 + 2] != ':')) {
      return InvalidArgument("MAC address must be xx:xx:xx:xx:xx:xx");
    }
    mac.bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return mac;
}

bool MacAddr::IsBroadcast() const {
  return std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0xFF; });
}

bool MacAddr::IsMulticast() const { return (bytes[0] & 0x01) != 0; }

size_t IpAddr::size() const {
  switch (family) {
    case IpFamily::kIpv4:
      return 4;
    case IpFamily::kIpv6:
      return 16;
    case IpFamily::kNone:
      break;
  }
  return 0;
}

std::string IpAddr::ToString() const {
  char buf[INET6_ADDRSTRLEN];
  const int af = family == IpFamily::kIpv4 ? AF_INET : AF_INET6;
  if (family == IpFamily::kNone || inet_ntop(af, bytes.data(), buf, sizeof(buf)) == nullptr) {
    return "";
  }
  return buf;
}

StatusOr<IpAddr> IpAddr::Parse(const std::string& text) {
  std::array<uint8_t, 16> buf{};
  if (inet_pton(AF_INET, text.c_str(), buf.data()) == 1) {
    return V4(std::span<const uint8_t, 4>(buf.data(), 4));
  }
  if (inet_pton(AF_INET6, text.c_str(), buf.data()) == 1) return V6(buf);
  return InvalidArgument("'" + text + "' is not an IPv4 or IPv6 address");
}

IpAddr IpAddr::V4(std::span<const uint8_t, 4> b) {
  IpAddr a;
  a.family = IpFamily::kIpv4;
  std::copy(b.begin(), b.end(), a.bytes.begin());
  return a;
}

IpAddr IpAddr::V6(std::span<const uint8_t, 16> b) {
  IpAddr a;
  a.family = IpFamily::kIpv6;
  std::copy(b.begin(), b.end(), a.bytes.begin());
  return a;
}

StatusOr<ParsedFrame> ParseFrame(std::span<const uint8_t> frame) {
  if (frame.size() < kEthernetHeaderSize) return InvalidArgument("frame shorter than 14 bytes");
  if (frame.size() > kMaxFrameSize) return InvalidArgument("frame longer than 65549 bytes");

  ParsedFrame f;
  const uint8_t* p = frame.data();
  f.dst = MacAt(p);
  f.src = MacAt(p + 6);
  f.ethertype = Be16(p + 12);
  size_t off = kEthernetHeaderSize;
  if (f.ethertype == kEtherTypeVlan) {
    if (frame.size() < kEthernetHeaderSize + kVlanTagSize) {
      return InvalidArgument("truncated 802.1Q tag");
    }
    const uint16_t tci = Be16(p + 14);
    f.has_vlan = true;
    f.vlan_pcp = static_cast<uint8_t>(tci >> 13);
    f.vlan_id = tci & 0x0FFF;
    f.ethertype = Be16(p + 16);
    off += kVlanTagSize;
  }

  Status status = Status::Ok();
  switch (f.ethertype) {
    case kEtherTypeArp:
      status = ParseArp(frame, off, f);
      break;
    case kEtherTypeIpv4:
      status = ParseIpv4(frame, off, f);
      break;
    case kEtherTypeIpv6:
      status = ParseIpv6(frame, off, f);
      break;
    default:
      f.payload_offset = off;
      f.payload_length = frame.size() - off;
      break;
  }
  if (!status.ok()) return status;
  return f;
}

}  // namespace blackbox
