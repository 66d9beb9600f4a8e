// Which QEMU runs Blackbox's VMs, and how a recording names the QEMU that
// made it.
//
// Blackbox records, replays and follows with its own build of QEMU
// (qemu-patches/: Debian 12's QEMU 7.2 plus the series), not Debian's: stock
// QEMU delivers a frame or a disk completion to an idle recorded guest only
// at the guest's next timer, and replays several times slower than it
// records. A replay is deterministic only with the very binary that
// recorded (another build may translate or time the guest differently), so
// each recording stores the identity of its QEMU (path, version, SHA-256 of
// the binary) and replay refuses a different binary unless told otherwise.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace blackbox {

// A QMP command only Blackbox's QEMU has (qemu-patches/): a recorder or
// replayer that sees it knows the series' behaviour applies, e.g. that the
// vCPUs stop at a logged shutdown, so the guest's final RAM is comparable.
inline constexpr char kBlackboxQemuCommand[] = "__org.blackbox_replay-go-live";

// $BLACKBOX_QEMU if set, else the patched QEMU of this build
// (BUILD/qemu/qemu-system-x86_64, made by qemu-patches/build.sh).
std::string DefaultQemuBinary();

struct QemuIdentity {
  std::string binary;    // as given (a path, or a name looked up in PATH)
  std::string resolved;  // absolute path with symlinks resolved
  std::string version;   // first line of `--version`
  std::string sha256;    // of the file at `resolved`, hex
};

// Finds `binary` (a path, or a bare name searched in PATH), hashes it and
// asks its version. NotFound with a one-line message that says how to get
// Blackbox's QEMU when `binary` is the default one and it is missing.
StatusOr<QemuIdentity> IdentifyQemu(const std::string& binary);

// {"binary", "resolved", "version", "sha256"}: what RecordingInfo::extra["qemu"]
// holds besides the command line.
void WriteQemuIdentity(const QemuIdentity& id, nlohmann::json& into);

// Picks the QEMU that replays a recording whose extra["qemu"] is `recorded`.
// `requested` (--qemu; empty if not given) is used when it is the binary that
// recorded (same SHA-256). Without it the recorded path, its resolved path
// and DefaultQemuBinary() are tried, first match wins. FailedPrecondition
// names both binaries when none matches, unless `force` (then `requested`,
// or else the default, is used as is). Recordings from before QEMU identities
// were stored (no sha256) replay with `requested`, else their recorded path.
StatusOr<QemuIdentity> ChooseReplayQemu(const nlohmann::json& recorded,
                                        const std::string& requested, bool force);

}  // namespace blackbox
