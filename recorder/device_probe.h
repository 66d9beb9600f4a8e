// The device probe of attestation at launch (manifest/attestation.h): the
// VM's own QEMU command line, without record/replay and with -S (no guest
// instruction runs), asked `query-pci` and told to quit. Its NICs point at a
// socket nobody listens on, so the probe touches neither the switch nor a
// peer.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "recorder/vm_spec.h"

namespace blackbox {

// Starts the QEMU of `spec` (run paths as BuildQemuArgs takes them) paused
// and returns its devices as DescribeDevices() lists them. Fails if QEMU
// does not come up within 60 s (naming the tail of its output).
StatusOr<std::vector<std::string>> ProbeDevices(const VmSpec& spec, const QemuRunPaths& paths,
                                                const std::string& qemu_binary);

}  // namespace blackbox
