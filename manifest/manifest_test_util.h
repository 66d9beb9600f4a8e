// Helpers shared by the manifest tests (manifest_parse_test.cc, manifest_write_test.cc,
// rule_set_test.cc): the example of docs/manifest.md, addresses and peers from text,
// parsing that must succeed.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "manifest/manifest.h"

namespace blackbox::manifest_test_util {

// The example of docs/manifest.md.
inline const std::string kExample = R"(# The web server of the shop lab.
manifest: 1                 # format version: required, must be 1
vm: web                     # required: the VM it describes (its spec's name)
mode: enforce               # observe (default) | enforce
identity:                   # informational; the switch enforces the spec's MACs/IPs
  macs: [52:54:00:00:10:01]
  ips: [10.0.0.1, fe80::1]
boot:                       # attested before QEMU starts; every item optional
  kernel: sha256:8254C329A92850F6D539DD376F4816EE2764517DA5E0235514AF433164480D7A
  initrd: de7d1b721a1e0632b7cf04edf5032c8ecffa9f9a08492152b926f1a5a7e765d7
  disks: {data: 18ac3e7343f016890c510e93f935261169d9e3f565436429830faf0934f4f8e4}
  cmdline: "console=ttyS0 quiet bb.role=http-server"
  machine: pc
  devices: ["00:02.0 8086:100e id=n0", "00:00.0 8086:1237", "00:01.0 8086:7000"]
attestation: refuse         # refuse (default) | alert
groups:                     # named peer lists; a group may name other groups
  admins: [10.0.9.0/24, ops]
  clients: [10.0.1.0/24, client, "2001:db8:1::/48"]
management: [admins, 10.0.0.254]   # what a quarantined VM still reaches
network:
  default: [alert, drop]    # required: what a flow no rule matches gets
  housekeeping: allow       # allow (default) | check
  rules:                    # first match wins
    - name: http-in
      direction: in
      peer: clients
      proto: tcp
      ports: [80, 8000-8080]
      action: allow
      rate: {packets_per_s: 2000, bytes_per_s: 5M, new_connections_per_s: 50, action: alert}
    - name: ssh-admin
      direction: in
      peer: [admins, vm:bastion]
      proto: tcp
      ports: 22
      action: allow
    - name: dns
      direction: out
      peer: 10.0.0.53
      proto: udp
      ports: 53
      action: allow
    - name: ping            # echo requests and replies, either direction
      proto: icmp
      ports: [0, 8]         # ICMP types
      action: allow
    - direction: out        # unnamed: "rule 5"
      proto: tcp
      ports: 25
      action: [drop, snapshot]
rates:                      # the whole VM, frames sent plus received
  packets_per_s: 5000
  bytes_per_s: 1.5M
  new_connections_per_s: 100
  action: [alert, drop]
events:
  guest_panic: [alert, snapshot]
  device_change: alert
  guest_shutdown: allow
  guest_reset: alert
  unexpected_stop: pause
)";

inline IpAddr Ip(const std::string& s) {
  auto ip = IpAddr::Parse(s);
  EXPECT_TRUE(ip.ok()) << s;
  return ip.ok() ? *ip : IpAddr{};
}

inline Cidr C(const std::string& s) {
  auto c = Cidr::Parse(s);
  EXPECT_TRUE(c.ok()) << s << ": " << c.status().ToString();
  return c.ok() ? *c : Cidr{};
}

inline Peer VmPeer(const std::string& name) {
  Peer p;
  p.kind = Peer::Kind::kVm;
  p.vm = name;
  return p;
}
inline Peer CidrPeer(const std::string& text) {
  Peer p;
  p.kind = Peer::Kind::kCidr;
  p.cidr = C(text);
  return p;
}

inline std::vector<std::string> PeerStrings(const std::vector<Peer>& peers) {
  std::vector<std::string> out;
  for (const Peer& p : peers) {
    out.push_back((p.kind == Peer::Kind::kVm ? "vm " : "") + p.ToString());
  }
  return out;
}

inline Manifest MustParse(const std::string& text,
                          std::vector<ManifestWarning>* warnings = nullptr) {
  auto m = ParseManifest(text, warnings);
  EXPECT_TRUE(m.ok()) << m.status().ToString() << "\n" << text;
  return m.ok() ? *m : Manifest{};
}

inline const std::string kBase = "manifest: 1\nvm: web\nnetwork:\n  default: deny\n  rules:\n";

}  // namespace blackbox::manifest_test_util
