// `blackbox bench io`: how promptly a recorded VM takes I/O, against the same
// VM unrecorded, in one run (see docs/BENCHMARKS.md).
//
// Three variants of the same guests run in every round, in an order that
// rotates from round to round:
//   - unrecorded: the patched QEMU, `record: false` (same -icount, no rr);
//   - stock: recorded (rr) by Debian's QEMU;
//   - patched: recorded by Blackbox's patched QEMU.
// Workloads:
//   - net: two guests on Blackbox's switch; the client (guest role
//     http-loop) makes `count` HTTP exchanges with the server (connect,
//     GET /, close), then `count` pings. Each exchange is timed on the
//     switch, from the client's SYN to the last frame of the connection;
//     each ping from the echo request to its reply.
//   - disk: one guest (role disk-sync) makes `records` single-sector
//     writes, each O_DIRECT and fsync'd; timed from its BB-SYNC-START to
//     BB-SYNC-DONE console lines, by the wall time the recorder read them.
//   - boot: a Debian 12 guest (bench/build-debian-guest.sh: systemd and
//     nginx-light on an ext4 root on a virtio disk) boots until
//     bb-ready.service, ordered after nginx.service, prints
//     BB-SYSTEMD-READY; timed from the first console byte (the kernel's) to
//     that line, by the wall time the recorder read them.
// Ratios are per round (subject / unrecorded of the same round); the table
// gives their median and range.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"

namespace blackbox::bench {

struct IoBenchOptions {
  std::string guest_dir;  // kernel + initrd from guest/build-guest.sh
  std::string stock_qemu = "qemu-system-x86_64";
  std::string patched_qemu;  // Blackbox's (qemu-patches/build.sh)
  int runs = 3;              // rounds; each runs every variant once
  int count = 30;            // net: HTTP exchanges, and pings, per run
  int records = 200;         // disk: synchronous 512-byte writes per run
  // boot: the directory bench/build-debian-guest.sh wrote (debian.raw).
  std::string debian_dir;
  bool net = true;
  bool disk = true;
  bool boot = false;  // only with --part boot or all (needs debian_dir)
};

StatusOr<nlohmann::json> RunIoBench(const IoBenchOptions& options);

}  // namespace blackbox::bench
