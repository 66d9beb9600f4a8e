// Attestation at launch: what a VM is about to boot, compared with its
// manifest's boot chain (docs/manifest.md, "Attestation").
//
// Checked items: the sha256 of kernel, initrd and each disk's base image,
// the kernel command line, the machine type, and the devices QEMU reports
// over QMP. The recorder gathers these facts (the device list from a probe,
// recorder/device_probe.h) and compares them here.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "manifest/manifest.h"

namespace blackbox {

// What a VM actually is at launch.
struct BootFacts {
  std::string kernel_sha256, initrd_sha256;         // lower-case hex ("" without initrd)
  std::map<std::string, std::string> disks_sha256;  // disks with a base image
  std::string cmdline;
  std::string machine;
  std::vector<std::string> devices;  // DescribeDevices(), sorted
};

// One line per PCI device of a `query-pci` reply, bridges followed:
// "BB:SS.F VVVV:DDDD" plus " id=QDEV_ID" when the device has an id, sorted.
// Tolerates any shape of reply (unexpected parts are skipped).
std::vector<std::string> DescribeDevices(const nlohmann::json& query_pci);

struct BootMismatch {
  std::string item;              // "kernel", "initrd", "disk data", "cmdline", "machine", "devices"
  std::string expected;          // as the manifest says
  std::string actual;            // what the VM has
  std::string ToString() const;  // "initrd sha256 is 3f2a..., the manifest says 9c1b..."
};

// The items of `boot` that differ from `facts`; empty if all match. Items
// the manifest leaves empty are not compared.
std::vector<BootMismatch> CompareBoot(const BootChain& boot, const BootFacts& facts);

}  // namespace blackbox
