#include "switch/community_id.h"

#include <openssl/evp.h>

#include <cstring>
#include <string>
#include <utility>

namespace blackbox {
namespace {

// Counterpart of a request/reply ICMP type, or -1 for a one-way type.
int IcmpCounterpart(uint8_t type) {
  switch (type) {
    case 8:
      return 0;  // echo -> echo reply
    case 0:
      return 8;
    case 13:
      return 14;  // timestamp
    case 14:
      return 13;
    case 15:
      return 16;  // information
    case 16:
      return 15;
    case 10:
      return 9;  // router solicitation / advertisement
    case 9:
      return 10;
    case 17:
      return 18;  // address mask
    case 18:
      return 17;
    default:
      return -1;
  }
}

int Icmpv6Counterpart(uint8_t type) {
  switch (type) {
    case 128:
      return 129;  // echo request / reply
    case 129:
      return 128;
    case 130:
      return 131;  // MLD query / report
    case 131:
      return 130;
    case 133:
      return 134;  // router solicitation / advertisement
    case 134:
      return 133;
    case 135:
      return 136;  // neighbor solicitation / advertisement
    case 136:
      return 135;
    case 139:
      return 140;  // node information query / reply ("who are you")
    case 140:
      return 139;
    case 144:
      return 145;  // home agent address discovery request / reply
    case 145:
      return 144;
    default:
      return -1;
  }
}

bool HasPorts(uint8_t proto) {
  return proto == kIpProtoTcp || proto == kIpProtoUdp || proto == kIpProtoSctp ||
         proto == kIpProtoIcmp || proto == kIpProtoIcmpv6;
}

}  // namespace

std::string CommunityId(const FlowTuple& tuple, uint16_t seed) {
  size_t addr_len = 0;
  if (tuple.family == IpFamily::kIpv4) addr_len = 4;
  if (tuple.family == IpFamily::kIpv6) addr_len = 16;
  if (addr_len == 0) return "";

  const uint8_t* a_ip = tuple.src_ip.data();
  const uint8_t* b_ip = tuple.dst_ip.data();
  uint16_t a_port = tuple.src_port;
  uint16_t b_port = tuple.dst_port;
  bool one_way = false;
  if (tuple.proto == kIpProtoIcmp || tuple.proto == kIpProtoIcmpv6) {
    const uint8_t type = static_cast<uint8_t>(tuple.src_port);
    const int counter =
        tuple.proto == kIpProtoIcmp ? IcmpCounterpart(type) : Icmpv6Counterpart(type);
    a_port = type;
    if (counter < 0) {
      b_port = tuple.dst_port;  // the code
      one_way = true;
    } else {
      b_port = static_cast<uint16_t>(counter);
    }
  }
  const bool has_ports = HasPorts(tuple.proto);
  if (!one_way) {
    const int cmp = std::memcmp(a_ip, b_ip, addr_len);
    const bool ordered = cmp < 0 || (cmp == 0 && (!has_ports || a_port < b_port));
    if (!ordered) {
      std::swap(a_ip, b_ip);
      std::swap(a_port, b_port);
    }
  }

  uint8_t buf[2 + 16 + 16 + 2 + 4];
  size_t n = 0;
  buf[n++] = static_cast<uint8_t>(seed >> 8);
  buf[n++] = static_cast<uint8_t>(seed);
  std::memcpy(buf + n, a_ip, addr_len);
  n += addr_len;
  std::memcpy(buf + n, b_ip, addr_len);
  n += addr_len;
  buf[n++] = tuple.proto;
  buf[n++] = 0;
  if (has_ports) {
    buf[n++] = static_cast<uint8_t>(a_port >> 8);
    buf[n++] = static_cast<uint8_t>(a_port);
    buf[n++] = static_cast<uint8_t>(b_port >> 8);
    buf[n++] = static_cast<uint8_t>(b_port);
  }

  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (EVP_Digest(buf, n, digest, &digest_len, EVP_sha1(), nullptr) != 1 || digest_len != 20) {
    return "";  // libcrypto failure; not reachable in practice
  }
  unsigned char b64[4 * ((20 + 2) / 3) + 1];  // 28 characters + NUL
  const int b64_len = EVP_EncodeBlock(b64, digest, static_cast<int>(digest_len));
  return "1:" + std::string(reinterpret_cast<const char*>(b64), static_cast<size_t>(b64_len));
}

std::optional<FlowTuple> FlowTupleOf(const ParsedFrame& frame) {
  if (frame.l3 != ParsedFrame::L3::kIpv4 && frame.l3 != ParsedFrame::L3::kIpv6) {
    return std::nullopt;
  }
  FlowTuple t;
  t.family = frame.ip.src.family;
  t.src_ip = frame.ip.src.bytes;
  t.dst_ip = frame.ip.dst.bytes;
  t.proto = frame.ip.protocol;
  switch (frame.l4) {
    case ParsedFrame::L4::kTcp:
    case ParsedFrame::L4::kUdp:
      t.src_port = frame.transport.src_port;
      t.dst_port = frame.transport.dst_port;
      return t;
    case ParsedFrame::L4::kIcmp:
    case ParsedFrame::L4::kIcmpv6:
      t.src_port = frame.transport.icmp_type;
      t.dst_port = frame.transport.icmp_code;
      return t;
    case ParsedFrame::L4::kNone:
      break;
  }
  // Ports are part of the id for these protocols but were not decoded (a
  // non-first fragment, SCTP, or ICMP in the wrong IP version).
  if (HasPorts(t.proto)) return std::nullopt;
  return t;
}

}  // namespace blackbox
