#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (checked in; rerun after a change).

  corpus/switch/*  fuzz_switch inputs: a 36-byte header (config, split
                   parameters, control tape; see fuzz_switch.cc) and a stream
                   of 4-byte big-endian length + frame records.
  corpus/frame/*   fuzz_frame inputs: one raw Ethernet frame each.

Port A (MAC 52:54:00:00:00:0a, allowed 10.0.2.15 and fe80::a) and B (..:0b,
any IP) are in segment "lan"; C (..:0c, allowed 10.0.3.5 and 2001:db8::c) is in
"dmz" unless config bit 7 is set.

Usage: python3 fuzz/make_corpus.py   (from anywhere)
"""
import ipaddress
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

MAC_A = bytes.fromhex("52540000000a")
MAC_B = bytes.fromhex("52540000000b")
MAC_C = bytes.fromhex("52540000000c")
BCAST = b"\xff" * 6
IP_A, IP_B, IP_C = "10.0.2.15", "10.0.2.2", "10.0.3.5"
IP6_A, IP6_B = "fe80::a", "fe80::b"

A, B, C, UNKNOWN = 0, 1, 2, 3
EXPIRE, EXPIRE_MACS, READD = 0x04, 0x08, 0x10
# Clock units (fuzz_switch.cc ClockAdvance): 0, 1 us, 1 ms, 100 ms, 1 s, 4 s, 30 s, 250 s.
T0, T_US, T_MS, T_100MS, T_S, T_4S, T_30S, T_250S = range(8)


def ip(s):
    return ipaddress.ip_address(s).packed


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def eth(dst, src, ethertype, payload, vlan=None):
    head = dst + src
    if vlan is not None:
        head += struct.pack("!HH", 0x8100, vlan)
    frame = head + struct.pack("!H", ethertype) + payload
    return frame + b"\0" * max(0, 60 - len(frame))  # minimum Ethernet size


def ipv4(proto, src, dst, l4, frag=0x4000, ttl=64, ident=0x1234):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, frag, ttl, proto, 0,
                    ip(src), ip(dst))
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + l4


def ipv6(nxt, src, dst, payload, hlim=64):
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), nxt, hlim, ip(src), ip(dst)) + payload


def tcp(sport, dport, flags, data=b"", seq=1000, ack=0, offset=5):
    opts = b"\0" * (offset * 4 - 20) if offset > 5 else b""
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, offset << 4, flags, 64240, 0, 0) + opts + data


def udp(sport, dport, data):
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def icmp(typ, code, body):
    return struct.pack("!BBH", typ, code, 0) + body


def arp(op, smac, sip, tmac, tip):
    return struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, smac, ip(sip), tmac, ip(tip))


FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def v4frame(smac, dmac, proto, src, dst, l4, **kw):
    return eth(dmac, smac, 0x0800, ipv4(proto, src, dst, l4, **kw))


def record(frame):
    return struct.pack("!I", len(frame)) + frame


class Raw(bytes):
    """Stream bytes that are not a frame record of their own (no tape entry)."""


def seed(steps, cfg=0, split=(0, 0, 0), tail=b""):
    """steps: (frame, port, ctl_bits, clock_unit, clock_mult) per frame (at most
    16), or Raw stream bytes."""
    tape = bytearray(32)
    stream = b""
    i = 0
    for step in steps:
        if isinstance(step, Raw):
            stream += step
            continue
        frame, port, bits, unit, mult = step
        assert i < 16
        tape[2 * i] = port | bits
        tape[2 * i + 1] = unit | ((mult - 1) << 3)
        stream += record(frame)
        i += 1
    return bytes([cfg, *split]) + bytes(tape) + stream + tail


def main():
    S = {}  # switch seeds
    F = {}  # frame seeds

    # ARP: request from A, reply from B, a gratuitous ARP from C (alone in dmz).
    arp_req = eth(BCAST, MAC_A, 0x0806, arp(1, MAC_A, IP_A, b"\0" * 6, IP_B))
    arp_rep = eth(MAC_A, MAC_B, 0x0806, arp(2, MAC_B, IP_B, MAC_A, IP_A))
    arp_grat = eth(BCAST, MAC_C, 0x0806, arp(1, MAC_C, IP_C, b"\0" * 6, IP_C))
    S["arp"] = seed([(arp_req, A, 0, T_MS, 1), (arp_rep, B, 0, T_MS, 2),
                     (arp_grat, C, EXPIRE, T_30S, 2)])
    F["arp_request"] = arp_req

    # TCP: handshake, data, FIN close, linger, then a SYN reusing the ports.
    def ta(flags, data=b""):
        return v4frame(MAC_A, MAC_B, 6, IP_A, IP_B, tcp(40000, 80, flags, data))

    def tb(flags, data=b""):
        return v4frame(MAC_B, MAC_A, 6, IP_B, IP_A, tcp(80, 40000, flags, data))

    syn = ta(SYN)
    S["tcp_handshake"] = seed([
        (syn, A, 0, T_MS, 1), (tb(SYN | ACK), B, 0, T_MS, 1), (ta(ACK), A, 0, T_MS, 1),
        (ta(PSH | ACK, b"GET / HTTP/1.0\r\n\r\n"), A, 0, T_MS, 2),
        (tb(PSH | ACK, b"HTTP/1.0 200 OK\r\n\r\n"), B, 0, T_MS, 3),
        (ta(FIN | ACK), A, 0, T_MS, 1), (tb(FIN | ACK), B, 0, T_MS, 1),
        (ta(ACK), A, EXPIRE, T_4S, 1), (ta(ACK), A, EXPIRE, T_4S, 2), (syn, A, 0, T_S, 1),
        (tb(RST | ACK), B, EXPIRE, T_4S, 2),
    ], cfg=3, split=(3, 7, 11))
    F["tcp_syn"] = syn

    # UDP: query and reply, a third flow with max_flows 2 (untracked), idle expiry.
    q = v4frame(MAC_A, MAC_B, 17, IP_A, IP_B, udp(53000, 53, b"\x12\x34\x01\x00\x00\x01" + b"\0" * 6))
    r = v4frame(MAC_B, MAC_A, 17, IP_B, IP_A, udp(53, 53000, b"\x12\x34\x81\x80" + b"\0" * 8))
    q2 = v4frame(MAC_A, BCAST, 17, "0.0.0.0", "255.255.255.255", udp(68, 67, b"\x01" * 240))
    q3 = v4frame(MAC_B, MAC_A, 17, IP_B, IP_A, udp(123, 123, b"\x23" + b"\0" * 47))
    S["udp"] = seed([(q, A, 0, T_MS, 1), (r, B, 0, T_MS, 1), (q2, A, 0, T_S, 1),
                     (q3, B, 0, T_S, 1), (q, A, EXPIRE | EXPIRE_MACS, T_250S, 1)],
                    cfg=0x20 | 2, split=(20, 90, 200))
    F["udp"] = q

    # ICMP: echo request/reply every 8 s: the 20 s active timeout splits the flow
    # (in Observe, then in Expire); an unreachable from B.
    echo = v4frame(MAC_A, MAC_B, 1, IP_A, IP_B, icmp(8, 0, b"\x12\x34\x00\x01" + b"\x42" * 56))
    reply = v4frame(MAC_B, MAC_A, 1, IP_B, IP_A, icmp(0, 0, b"\x12\x34\x00\x01" + b"\x42" * 56))
    unreach = v4frame(MAC_B, MAC_A, 1, IP_B, IP_A, icmp(3, 3, ipv4(17, IP_A, IP_B, udp(1, 2, b""))))
    pings = []
    for _ in range(4):
        pings += [(echo, A, 0, T_4S, 2), (reply, B, 0, T_MS, 1)]
    S["icmp"] = seed(pings + [(unreach, B, EXPIRE, T_4S, 6)], cfg=1, split=(40, 41, 150))
    F["icmp_echo"] = echo

    # IPv6: TCP SYN, TCP behind a hop-by-hop header, ICMPv6 NS for DAD from ::.
    syn6 = eth(MAC_B, MAC_A, 0x86DD, ipv6(6, IP6_A, IP6_B, tcp(40001, 22, SYN)))
    hbh = bytes([6, 0, 5, 2, 0, 0, 1, 0])  # next TCP, router alert
    syn6_hbh = eth(MAC_B, MAC_A, 0x86DD, ipv6(0, IP6_A, IP6_B, hbh + tcp(40001, 22, ACK)))
    ns = eth(bytes.fromhex("3333ff00000a"), MAC_A, 0x86DD,
             ipv6(58, "::", "ff02::1:ff00:a", icmp(135, 0, b"\0" * 4 + ip(IP6_A)), hlim=255))
    synack6 = eth(MAC_A, MAC_B, 0x86DD, ipv6(6, IP6_B, IP6_A, tcp(22, 40001, SYN | ACK)))
    S["ipv6_tcp"] = seed([(syn6, A, 0, T_MS, 1), (synack6, B, 0, T_MS, 1),
                          (syn6_hbh, A, 0, T_MS, 1), (ns, A, EXPIRE, T_S, 1)], cfg=2,
                         split=(1, 2, 3))
    F["ipv6_tcp_syn"] = syn6
    F["ipv6_hop_by_hop"] = syn6_hbh
    F["icmpv6_ns"] = ns

    # VLAN: tagged UDP from B and A, a stacked tag from A (blocked), from B (allowed).
    vudp_b = eth(MAC_A, MAC_B, 0x0800, ipv4(17, IP_B, IP_A, udp(5000, 5001, b"vlan")), vlan=0x2064)
    vudp_a = eth(MAC_B, MAC_A, 0x0800, ipv4(17, IP_A, IP_B, udp(5001, 5000, b"vlan")), vlan=100)
    qinq_a = eth(MAC_B, MAC_A, 0x8100, struct.pack("!H", 0x0800) + b"\0" * 30, vlan=200)
    qinq_b = eth(MAC_A, MAC_B, 0x8100, struct.pack("!H", 0x0806) + b"\0" * 30, vlan=200)
    S["vlan"] = seed([(vudp_b, B, 0, T_MS, 1), (vudp_a, A, 0, T_MS, 1),
                      (qinq_a, A, 0, T_MS, 1), (qinq_b, B, 0, T_MS, 1)], cfg=0x80)
    F["vlan_udp"] = vudp_b

    # Truncated and malformed frames, and a partial last record.
    short = MAC_B + MAC_A  # 12 bytes
    trunc_ip = (MAC_B + MAC_A + b"\x08\x00" + ipv4(6, IP_A, IP_B, b""))[:30]
    bad_doff = v4frame(MAC_A, MAC_B, 6, IP_A, IP_B, tcp(1, 2, SYN, offset=5)[:12] + b"\x20" + b"\0" * 7)
    long_total = bytearray(v4frame(MAC_A, MAC_B, 17, IP_A, IP_B, udp(1, 2, b"x")))
    long_total[16:18] = struct.pack("!H", 1400)
    trunc_tcp6 = eth(MAC_B, MAC_A, 0x86DD, ipv6(6, IP6_A, IP6_B, tcp(1, 2, SYN)))[:14 + 40 + 10]
    trunc_vlan = MAC_B + MAC_A + b"\x81\x00\x00"
    S["truncated"] = seed([(short, A, 0, T_MS, 1), (trunc_ip, A, 0, T_MS, 1),
                           (bad_doff, A, 0, T_MS, 1), (bytes(long_total), A, 0, T_MS, 1),
                           (trunc_tcp6, A, 0, T_MS, 1), (trunc_vlan, B, 0, T_MS, 1)],
                          cfg=3, split=(1, 5, 9), tail=struct.pack("!I", 100) + b"0123456789")
    F["truncated_ipv4"] = trunc_ip
    F["truncated_ipv6_tcp"] = trunc_tcp6
    F["ipv4_length_beyond_frame"] = bytes(long_total)

    # Decoder cap 64: an empty record, a 60-byte frame, then a 100-byte one (error).
    S["oversize"] = seed([Raw(b"\0\0\0\0"), (arp_req, A, 0, T_MS, 1),
                          (eth(BCAST, MAC_A, 0x0800, b"\0" * 86), A, 0, T_MS, 1)],
                         cfg=0x08 | 1, split=(30, 64, 70))

    # Anti-spoofing, an unknown port, detaching/attaching ports, MAC expiry.
    spoof_mac = v4frame(MAC_B, MAC_A, 17, IP_B, IP_A, udp(1, 2, b"x"))
    spoof_ip = v4frame(MAC_A, MAC_B, 17, "10.0.2.99", IP_B, udp(1, 2, b"x"))
    arp_spoof = eth(BCAST, MAC_A, 0x0806, arp(1, MAC_B, IP_A, b"\0" * 6, IP_B))
    c_v6 = eth(BCAST, MAC_C, 0x86DD, ipv6(17, "2001:db8::c", "ff02::1", udp(1, 2, b"c")))
    S["spoof"] = seed([(spoof_mac, A, 0, T_MS, 1), (spoof_ip, A, 0, T_MS, 1),
                       (arp_spoof, A, 0, T_MS, 1), (c_v6, C, 0, T_MS, 1),
                       (q, UNKNOWN, 0, T_MS, 1), (q, A, READD, T_MS, 1),
                       (r, B, 0, T_MS, 1), (q, UNKNOWN, READD, T_MS, 1),
                       (r, B, EXPIRE_MACS, T_250S, 1), (q, A, EXPIRE_MACS, T_S, 1)],
                      cfg=0x80 | 2, split=(2, 50, 255))

    # Fragments: IPv4 first (MF) and later fragment, IPv6 fragment headers.
    frag1 = v4frame(MAC_A, MAC_B, 17, IP_A, IP_B, udp(7, 7, b"a" * 32), frag=0x2000)
    frag2 = v4frame(MAC_A, MAC_B, 17, IP_A, IP_B, b"b" * 40, frag=0x0005)
    fh6 = bytes([17, 0]) + struct.pack("!HI", 0x0001, 0xabcd)  # offset 0, M=1
    frag6 = eth(MAC_B, MAC_A, 0x86DD, ipv6(44, IP6_A, IP6_B, fh6 + udp(9, 9, b"c" * 16)))
    fh6b = bytes([17, 0]) + struct.pack("!HI", 0x0010, 0xabcd)  # offset 2
    frag6b = eth(MAC_B, MAC_A, 0x86DD, ipv6(44, IP6_A, IP6_B, fh6b + b"d" * 16))
    S["fragments"] = seed([(frag1, A, 0, T_MS, 1), (frag2, A, 0, T_MS, 1),
                           (frag6, A, 0, T_MS, 1), (frag6b, A, EXPIRE, T_MS, 1)], cfg=0x40)
    F["ipv4_fragment"] = frag2
    F["ipv6_fragment"] = frag6
    F["mac_text"] = b"52:54:00:AB:cd:ef"

    for sub, seeds in (("switch", S), ("frame", F)):
        d = os.path.join(HERE, "corpus", sub)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for name, data in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        print(f"{d}: {len(seeds)} files")


if __name__ == "__main__":
    main()
