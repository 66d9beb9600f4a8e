// VM specs: the small YAML file that says what a protected VM is, and the
// QEMU command line Blackbox derives from it. The schema is documented in
// docs/vm-spec.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/files.h"
#include "common/status.h"

namespace YAML {
class Node;
}

namespace blackbox {

struct DiskSpec {
  std::string name;         // [a-z0-9_-]+, unique within the VM
  std::string base;         // read-only base image (absolute path); empty for a blank disk
  std::string base_format;  // "raw" or "qcow2" (of the base)
  uint64_t size_bytes = 0;  // size of a blank disk (when base is empty)
};

struct NicSpec {
  std::string name;  // netdev id: [a-z0-9_-]+, unique within the VM
  std::string mac;   // 52:54:00:xx:xx:xx form
  // QEMU device model: "e1000" (default) or "virtio-net". Under rr only
  // e1000 replays reliably: QEMU 7.2's virtio-net transmits from a main-loop
  // bottom half, outside what the rr log orders (docs/vm-spec.md).
  std::string model = "e1000";
  // Unix socket the NIC connects to (QEMU -netdev stream, server=off), for a
  // NIC attached to something other than Blackbox's switch. Empty (the usual
  // case): the NIC gets a port of Blackbox's switch.
  std::string socket;
  // Switch segment of the port: ports only reach ports of the same segment.
  // [a-z0-9_-]{1,32}. Default: "default".
  std::string segment = "default";
  // Source IPv4/IPv6 addresses the VM may send from (anti-spoofing). Empty:
  // any address, but still only from `mac`.
  std::vector<std::string> ips;
};

struct VmSpec {
  std::string name;    // [A-Za-z0-9_.-]{1,64}
  std::string kernel;  // absolute path
  std::string initrd;  // absolute path; may be empty
  std::string append;  // kernel command line
  uint64_t memory_bytes = 256ull << 20;
  std::string machine = "pc";
  std::vector<DiskSpec> disks;
  std::vector<NicSpec> nics;
  int serial_ports = 1;  // only the first is captured; 1..4
  // A pvpanic-pci device, so a guest panic reaches Blackbox (QMP
  // GUEST_PANICKED: an alert, and the manifest's events.guest_panic
  // response). QEMU itself takes no action on it (-action panic=none): the
  // guest's kernel decides what it does next (its panic= parameter).
  bool pvpanic = false;
  // The VM's manifest (docs/manifest.md), absolute path; empty: none.
  std::string manifest;
  std::string source_text;  // the YAML as given (kept with the recording)
  std::string source_dir;   // directory relative paths were resolved against
};

// Parses a spec. Relative paths resolve against `base_dir`; `${VAR}` in
// strings expands from the environment (an unset variable is an error).
// Errors are InvalidArgument with one line naming the field and, where
// known, the YAML line: "spec line 4: memory: '9Z' is not a size".
StatusOr<VmSpec> ParseVmSpec(const std::string& yaml_text, const std::string& base_dir);
// Parses a spec given as a YAML mapping inside a larger document (a lab file):
// errors name the line in that document; source_text becomes the mapping
// re-emitted as a standalone spec.
StatusOr<VmSpec> ParseVmSpecNode(const YAML::Node& node, const std::string& base_dir);
// Reads and parses a spec file (capped at 1 MiB).
StatusOr<VmSpec> LoadVmSpec(const std::string& path);

// Checks that the files a spec names exist and are readable.
Status CheckSpecFiles(const VmSpec& spec);

enum class RrMode { kNone, kRecord, kReplay };

// Everything that varies between two runs of the same spec.
struct QemuRunPaths {
  std::string rr_log;                // -icount rrfile=
  std::string rr_snapshot = "init";  // rrsnapshot=; empty for none
  std::string qmp_socket;            // QEMU connects here (Blackbox listens)
  // QEMU writes the first serial port to this file (a `file` chardev), which
  // Blackbox tails. Not a socket: QEMU 7.2's socket chardev retries partial
  // writes from host-side watches that the rr log does not capture, so a
  // replay diverges (docs/rr-log-format.md, "Serial console").
  std::string serial_file;
  std::vector<std::string> disk_overlays;  // one qcow2 per DiskSpec, same order
  std::string state_image;                 // qcow2 with no device: holds VM snapshots
  std::vector<std::string> nic_sockets;    // one per NicSpec (overrides NicSpec::socket if set)
  // NIC i listens on its socket (server=on) instead of connecting: a direct
  // link to another VM's NIC without Blackbox's switch (the switch benchmark's
  // baseline). Default: none.
  std::vector<bool> nic_listen;
  // The guest's RAM lives in this file (memory-backend-file, share=on), so
  // its contents can be hashed after QEMU exits (GuestRamFile::path()).
  // Empty: anonymous memory.
  // Either way the RAM block is named pc.ram, so snapshots load both ways.
  std::string ram_file;
  int gdb_port = 0;           // >0: -gdb tcp:127.0.0.1:PORT
  bool start_paused = false;  // -S
  bool sandbox = true;        // -sandbox on with every restriction
};

// The memory that holds a guest's RAM (QemuRunPaths::ram_file): an
// anonymous shared-memory file (memfd) of `bytes`, with no name in any file
// system, so nothing is left behind whoever dies first: the memory is freed
// once this object and the QEMU that maps it are both gone. QEMU gets it as
// /proc/self/fd/N, which names the same file in QEMU as here as long as QEMU
// inherits fd N (pass fd() to ChildProcess::Spawn's `inherit_fds`).
class GuestRamFile {
 public:
  static StatusOr<GuestRamFile> Create(const std::string& vm_name, uint64_t bytes);
  GuestRamFile(GuestRamFile&& o) noexcept = default;
  GuestRamFile& operator=(GuestRamFile&&) = delete;
  GuestRamFile(const GuestRamFile&) = delete;
  int fd() const { return fd_.get(); }
  // "/proc/self/fd/N": valid in this process and in a child that inherited fd().
  std::string path() const;
  // SHA-256 of the contents, hex; once QEMU has exited, the guest's final RAM.
  StatusOr<std::string> Sha256Hex() const;

 private:
  explicit GuestRamFile(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

// Builds argv (argv[0] is the QEMU binary) for the spec in the given mode.
// Record and replay command lines differ only in rr=, rrfile= and rrsnapshot=.
std::vector<std::string> BuildQemuArgs(const VmSpec& spec, RrMode mode, const QemuRunPaths& paths,
                                       const std::string& qemu_binary = "qemu-system-x86_64");

// Creates the per-recording qcow2 overlay of a disk: backed by its read-only
// base, or blank at the disk's size. The base is never written.
Status CreateDiskOverlay(const DiskSpec& disk, const std::string& overlay_path);
// Creates the device-less qcow2 image that holds VM snapshots
// (QemuRunPaths::state_image).
Status CreateStateImage(const std::string& path);

// Parses "256M", "1G", "512MiB", "1048576" into bytes; -1 if malformed.
int64_t ParseSize(const std::string& text);

}  // namespace blackbox
