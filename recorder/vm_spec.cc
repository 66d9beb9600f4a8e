#include "recorder/vm_spec.h"

#include <arpa/inet.h>
#include <sys/mman.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <filesystem>
#include <regex>
#include <set>

#include "common/files.h"
#include "common/hash.h"
#include "common/process.h"

namespace blackbox {

namespace {

// Error naming the field and the YAML line.
Status SpecError(const YAML::Node& node, const std::string& field, const std::string& what) {
  std::string where = "spec";
  if (node.IsDefined() && node.Mark().line >= 0) {
    where += " line " + std::to_string(node.Mark().line + 1);
  }
  return InvalidArgument(where + ": " + field + ": " + what);
}

StatusOr<std::string> Expand(const std::string& in, const YAML::Node& node,
                             const std::string& field) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '$' && i + 1 < in.size() && in[i + 1] == '{') {
      size_t close = in.find('}', i + 2);
      if (close == std::string::npos) return SpecError(node, field, "unterminated ${");
      std::string var = in.substr(i + 2, close - i - 2);
      const char* value = std::getenv(var.c_str());
      if (value == nullptr)
        return SpecError(node, field, "environment variable " + var + " is not set");
      out += value;
      i = close;
    } else {
      out += in[i];
    }
  }
  return out;
}

StatusOr<std::string> GetString(const YAML::Node& map, const std::string& key,
                                const std::string& field, bool required) {
  YAML::Node n = map[key];
  if (!n.IsDefined() || n.IsNull()) {
    if (required) return SpecError(map, field, "is required");
    return std::string();
  }
  if (!n.IsScalar()) return SpecError(n, field, "must be a string");
  return Expand(n.Scalar(), n, field);
}

Status CheckKeys(const YAML::Node& map, const std::set<std::string>& allowed,
                 const std::string& where) {
  for (const auto& kv : map) {
    std::string key = kv.first.as<std::string>();
    if (!allowed.count(key)) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      return SpecError(kv.first, where + key, "unknown key (allowed: " + list + ")");
    }
  }
  return Status::Ok();
}

bool ValidName(const std::string& s, size_t max) {
  static const std::regex re("[A-Za-z0-9_.-]+");
  return !s.empty() && s.size() <= max && std::regex_match(s, re) && s[0] != '.' && s[0] != '-';
}

Status ParseSpecNode(const YAML::Node& root, const std::string& base_dir, VmSpec& spec) {
  if (!root.IsMap()) return InvalidArgument("spec: the top level must be a mapping");
  RETURN_IF_ERROR(CheckKeys(root,
                            {"name", "kernel", "initrd", "append", "memory", "machine", "disks",
                             "nics", "serial_ports", "manifest", "pvpanic"},
                            ""));
  ASSIGN_OR_RETURN(spec.name, GetString(root, "name", "name", true));
  if (!ValidName(spec.name, 64)) {
    return SpecError(root["name"], "name", "'" + spec.name + "' must be 1-64 of [A-Za-z0-9_.-]");
  }
  ASSIGN_OR_RETURN(std::string kernel, GetString(root, "kernel", "kernel", true));
  spec.kernel = ResolvePath(kernel, base_dir);
  ASSIGN_OR_RETURN(std::string initrd, GetString(root, "initrd", "initrd", false));
  if (!initrd.empty()) spec.initrd = ResolvePath(initrd, base_dir);
  ASSIGN_OR_RETURN(spec.append, GetString(root, "append", "append", false));
  ASSIGN_OR_RETURN(std::string manifest, GetString(root, "manifest", "manifest", false));
  if (!manifest.empty()) spec.manifest = ResolvePath(manifest, base_dir);
  ASSIGN_OR_RETURN(std::string machine, GetString(root, "machine", "machine", false));
  if (!machine.empty()) {
    if (machine != "pc" && machine != "q35" && machine.rfind("pc-", 0) != 0) {
      return SpecError(root["machine"], "machine", "'" + machine + "' is not pc, q35 or pc-*");
    }
    spec.machine = machine;
  }
  ASSIGN_OR_RETURN(std::string memory, GetString(root, "memory", "memory", false));
  if (!memory.empty()) {
    int64_t bytes = ParseSize(memory);
    if (bytes < 0) return SpecError(root["memory"], "memory", "'" + memory + "' is not a size");
    if (bytes < (32ll << 20) || bytes > (64ll << 30)) {
      return SpecError(
          root["memory"], "memory",
          "'" + memory + "' is outside 32M..64G (QEMU would refuse or the host cannot back it)");
    }
    if (bytes % (1 << 20) != 0) {
      return SpecError(root["memory"], "memory", "'" + memory + "' is not a whole number of MiB");
    }
    spec.memory_bytes = static_cast<uint64_t>(bytes);
  }
  if (YAML::Node sp = root["serial_ports"]; sp.IsDefined()) {
    int n = -1;
    try {
      n = sp.as<int>();
    } catch (const YAML::Exception&) {
    }
    if (n < 1 || n > 4) return SpecError(sp, "serial_ports", "must be a number from 1 to 4");
    spec.serial_ports = n;
  }
  if (YAML::Node pv = root["pvpanic"]; pv.IsDefined()) {
    const std::string v = pv.IsScalar() ? pv.Scalar() : "";
    if (v != "true" && v != "false") return SpecError(pv, "pvpanic", "must be true or false");
    spec.pvpanic = v == "true";
  }

  std::set<std::string> ids;
  if (YAML::Node disks = root["disks"]; disks.IsDefined() && !disks.IsNull()) {
    if (!disks.IsSequence()) return SpecError(disks, "disks", "must be a list");
    for (size_t i = 0; i < disks.size(); ++i) {
      const YAML::Node& d = disks[i];
      std::string field = "disks[" + std::to_string(i) + "]";
      if (!d.IsMap()) return SpecError(d, field, "must be a mapping");
      RETURN_IF_ERROR(CheckKeys(d, {"name", "base", "format", "size"}, field + "."));
      DiskSpec disk;
      ASSIGN_OR_RETURN(disk.name, GetString(d, "name", field + ".name", true));
      if (!ValidName(disk.name, 32) || !ids.insert(disk.name).second) {
        return SpecError(d["name"], field + ".name",
                         "'" + disk.name + "' is invalid or not unique");
      }
      ASSIGN_OR_RETURN(std::string base, GetString(d, "base", field + ".base", false));
      ASSIGN_OR_RETURN(disk.base_format, GetString(d, "format", field + ".format", false));
      ASSIGN_OR_RETURN(std::string size, GetString(d, "size", field + ".size", false));
      if (base.empty() == size.empty()) {
        return SpecError(d, field, "give exactly one of base (an image) or size (a blank disk)");
      }
      if (!base.empty()) {
        disk.base = ResolvePath(base, base_dir);
        if (disk.base_format.empty()) disk.base_format = "raw";
        if (disk.base_format != "raw" && disk.base_format != "qcow2") {
          return SpecError(d["format"], field + ".format",
                           "'" + disk.base_format + "' is not raw or qcow2");
        }
      } else {
        int64_t bytes = ParseSize(size);
        if (bytes < (1 << 20) || bytes > (1ll << 40)) {
          return SpecError(d["size"], field + ".size",
                           "'" + size + "' is not a size from 1M to 1T");
        }
        disk.size_bytes = static_cast<uint64_t>(bytes);
      }
      spec.disks.push_back(std::move(disk));
    }
  }
  if (YAML::Node nics = root["nics"]; nics.IsDefined() && !nics.IsNull()) {
    if (!nics.IsSequence()) return SpecError(nics, "nics", "must be a list");
    static const std::regex mac_re("([0-9a-f]{2}:){5}[0-9a-f]{2}");
    for (size_t i = 0; i < nics.size(); ++i) {
      const YAML::Node& n = nics[i];
      std::string field = "nics[" + std::to_string(i) + "]";
      if (!n.IsMap()) return SpecError(n, field, "must be a mapping");
      RETURN_IF_ERROR(
          CheckKeys(n, {"name", "mac", "model", "socket", "segment", "ips"}, field + "."));
      NicSpec nic;
      ASSIGN_OR_RETURN(nic.name, GetString(n, "name", field + ".name", true));
      if (!ValidName(nic.name, 32) || !ids.insert(nic.name).second) {
        return SpecError(n["name"], field + ".name", "'" + nic.name + "' is invalid or not unique");
      }
      ASSIGN_OR_RETURN(nic.mac, GetString(n, "mac", field + ".mac", true));
      if (!std::regex_match(nic.mac, mac_re)) {
        return SpecError(n["mac"], field + ".mac",
                         "'" + nic.mac + "' is not a lower-case MAC like 52:54:00:12:34:56");
      }
      if (std::stoi(nic.mac.substr(0, 2), nullptr, 16) & 1) {
        return SpecError(n["mac"], field + ".mac", "'" + nic.mac + "' is a multicast address");
      }
      ASSIGN_OR_RETURN(std::string sock, GetString(n, "socket", field + ".socket", false));
      if (!sock.empty()) nic.socket = ResolvePath(sock, base_dir);
      ASSIGN_OR_RETURN(std::string model, GetString(n, "model", field + ".model", false));
      if (!model.empty()) {
        if (model != "e1000" && model != "virtio-net") {
          return SpecError(n["model"], field + ".model",
                           "'" + model + "' is not e1000 or virtio-net");
        }
        nic.model = model;
      }
      ASSIGN_OR_RETURN(std::string segment, GetString(n, "segment", field + ".segment", false));
      if (!segment.empty()) {
        static const std::regex segment_re("[a-z0-9_-]{1,32}");
        if (!std::regex_match(segment, segment_re)) {
          return SpecError(n["segment"], field + ".segment",
                           "'" + segment + "' must be 1-32 of [a-z0-9_-]");
        }
        if (!nic.socket.empty()) {
          return SpecError(n["segment"], field + ".segment",
                           "a NIC with its own socket is not on Blackbox's switch");
        }
        nic.segment = segment;
      }
      if (YAML::Node ips = n["ips"]; ips.IsDefined() && !ips.IsNull()) {
        if (!ips.IsSequence()) return SpecError(ips, field + ".ips", "must be a list of addresses");
        for (size_t k = 0; k < ips.size(); ++k) {
          std::string ip_field = field + ".ips[" + std::to_string(k) + "]";
          if (!ips[k].IsScalar()) return SpecError(ips[k], ip_field, "must be an IP address");
          std::string ip = ips[k].Scalar();
          in6_addr buf{};
          if (inet_pton(AF_INET, ip.c_str(), &buf) != 1 &&
              inet_pton(AF_INET6, ip.c_str(), &buf) != 1) {
            return SpecError(ips[k], ip_field, "'" + ip + "' is not an IPv4 or IPv6 address");
          }
          nic.ips.push_back(ip);
        }
      }
      spec.nics.push_back(std::move(nic));
    }
  }
  return Status::Ok();
}

}  // namespace

int64_t ParseSize(const std::string& text) {
  if (text.empty()) return -1;
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == 0 || i > 15) return -1;
  int64_t n = std::stoll(text.substr(0, i));
  std::string unit = text.substr(i);
  int64_t mul;
  if (unit.empty() || unit == "B")
    mul = 1;
  else if (unit == "K" || unit == "KiB" || unit == "k")
    mul = 1ll << 10;
  else if (unit == "M" || unit == "MiB")
    mul = 1ll << 20;
  else if (unit == "G" || unit == "GiB")
    mul = 1ll << 30;
  else if (unit == "T" || unit == "TiB")
    mul = 1ll << 40;
  else
    return -1;
  if (n > (int64_t{1} << 62) / mul) return -1;
  return n * mul;
}

StatusOr<VmSpec> ParseVmSpec(const std::string& yaml_text, const std::string& base_dir) {
  VmSpec spec;
  spec.source_text = yaml_text;
  spec.source_dir = base_dir;
  try {
    YAML::Node root = YAML::Load(yaml_text);
    RETURN_IF_ERROR(ParseSpecNode(root, base_dir, spec));
  } catch (const YAML::Exception& e) {
    return InvalidArgument("spec line " + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  return spec;
}

StatusOr<VmSpec> ParseVmSpecNode(const YAML::Node& node, const std::string& base_dir) {
  VmSpec spec;
  spec.source_dir = base_dir;
  try {
    RETURN_IF_ERROR(ParseSpecNode(node, base_dir, spec));
    YAML::Emitter out;
    out << node;
    spec.source_text = std::string(out.c_str()) + "\n";
  } catch (const YAML::Exception& e) {
    return InvalidArgument("spec line " + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  return spec;
}

StatusOr<VmSpec> LoadVmSpec(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, 1 << 20));
  std::string dir = std::filesystem::absolute(path).parent_path().string();
  auto spec = ParseVmSpec(text, dir);
  if (!spec.ok()) return spec.status().WithContext(path);
  return spec;
}

Status CheckSpecFiles(const VmSpec& spec) {
  auto check = [](const std::string& path, const std::string& field) -> Status {
    if (::access(path.c_str(), R_OK) != 0) {
      return InvalidArgument("spec: " + field + ": cannot read " + path);
    }
    return Status::Ok();
  };
  RETURN_IF_ERROR(check(spec.kernel, "kernel"));
  if (!spec.initrd.empty()) RETURN_IF_ERROR(check(spec.initrd, "initrd"));
  for (const auto& d : spec.disks) {
    if (!d.base.empty()) RETURN_IF_ERROR(check(d.base, "disks." + d.name + ".base"));
  }
  return Status::Ok();
}

Status CreateDiskOverlay(const DiskSpec& disk, const std::string& overlay_path) {
  std::vector<std::string> cmd = {"qemu-img", "create", "-q", "-f", "qcow2"};
  if (!disk.base.empty()) {
    cmd.insert(cmd.end(), {"-b", disk.base, "-F", disk.base_format, overlay_path});
  } else {
    cmd.insert(cmd.end(), {overlay_path, std::to_string(disk.size_bytes)});
  }
  auto made = RunCommand(cmd);
  if (!made.ok()) return made.status().WithContext("creating overlay for disk " + disk.name);
  return Status::Ok();
}

Status CreateStateImage(const std::string& path) {
  // Sparse: only snapshots written into it use space.
  auto made = RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", path, "8G"});
  if (!made.ok()) return made.status().WithContext("creating the snapshot image");
  return Status::Ok();
}

StatusOr<GuestRamFile> GuestRamFile::Create(const std::string& vm_name, uint64_t bytes) {
  UniqueFd fd(::memfd_create(("blackbox-ram-" + vm_name).c_str(), MFD_CLOEXEC));
  if (!fd.valid()) return ErrnoError("cannot create the guest's RAM (memfd_create)", errno);
  // Sized now so that QEMU maps it as it is; pages are only allocated as
  // the guest touches them, as with anonymous memory.
  if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) {
    return ErrnoError("cannot size the guest's RAM to " + std::to_string(bytes >> 20) + " MiB",
                      errno);
  }
  return GuestRamFile(std::move(fd));
}

std::string GuestRamFile::path() const { return "/proc/self/fd/" + std::to_string(fd_.get()); }

StatusOr<std::string> GuestRamFile::Sha256Hex() const {
  // path() reopens the memfd here too, from its start.
  ASSIGN_OR_RETURN(Sha256Digest digest, Sha256File(path()));
  return ToHex(digest);
}

std::vector<std::string> BuildQemuArgs(const VmSpec& spec, RrMode mode, const QemuRunPaths& paths,
                                       const std::string& qemu_binary) {
  std::vector<std::string> a = {qemu_binary};
  auto add = [&](std::initializer_list<std::string> items) { a.insert(a.end(), items); };
  add({"-name", spec.name + ",debug-threads=on"});
  if (paths.ram_file.empty()) {
    add({"-machine", spec.machine});
  } else {
    // pc.ram: the name QEMU gives the RAM block it allocates itself, so a
    // snapshot taken with either kind of memory loads into the other.
    add({"-object", "memory-backend-file,id=pc.ram,size=" +
                        std::to_string(spec.memory_bytes >> 20) + "M,mem-path=" + paths.ram_file +
                        ",share=on"});
    add({"-machine", spec.machine + ",memory-backend=pc.ram"});
  }
  add({"-accel", "tcg"});
  std::string icount = "shift=auto";
  if (mode != RrMode::kNone) {
    icount += std::string(",rr=") + (mode == RrMode::kRecord ? "record" : "replay");
    icount += ",rrfile=" + paths.rr_log;
    if (!paths.rr_snapshot.empty()) icount += ",rrsnapshot=" + paths.rr_snapshot;
  }
  add({"-icount", icount});
  add({"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"});
  add({"-m", std::to_string(spec.memory_bytes >> 20)});
  add({"-kernel", spec.kernel});
  if (!spec.initrd.empty()) add({"-initrd", spec.initrd});
  if (!spec.append.empty()) add({"-append", spec.append});
  add({"-chardev", "socket,id=qmp,path=" + paths.qmp_socket + ",server=off"});
  add({"-mon", "chardev=qmp,mode=control"});
  add({"-chardev", "file,id=serial0,path=" + paths.serial_file});
  add({"-serial", "chardev:serial0"});
  for (int i = 1; i < spec.serial_ports; ++i) add({"-serial", "null"});
  for (size_t i = 0; i < spec.disks.size(); ++i) {
    const std::string& id = spec.disks[i].name;
    std::string file = i < paths.disk_overlays.size() ? paths.disk_overlays[i] : "";
    add({"-drive", "file=" + file + ",if=none,id=" + id + "-file,format=qcow2,discard=unmap"});
    if (mode == RrMode::kNone) {
      add({"-device", "virtio-blk-pci,drive=" + id + "-file,id=" + id + "-dev"});
    } else {
      add({"-drive", "driver=blkreplay,if=none,image=" + id + "-file,id=" + id});
      add({"-device", "virtio-blk-pci,drive=" + id + ",id=" + id + "-dev"});
    }
  }
  if (!paths.state_image.empty()) {
    add({"-drive", "file=" + paths.state_image + ",if=none,id=bb-state,format=qcow2"});
  }
  for (size_t i = 0; i < spec.nics.size(); ++i) {
    const NicSpec& nic = spec.nics[i];
    std::string sock = i < paths.nic_sockets.size() && !paths.nic_sockets[i].empty()
                           ? paths.nic_sockets[i]
                           : nic.socket;
    bool listen = i < paths.nic_listen.size() && paths.nic_listen[i];
    add({"-netdev", "stream,id=" + nic.name + (listen ? ",server=on" : ",server=off") +
                        ",addr.type=unix,addr.path=" + sock});
    // e1000 without interrupt mitigation: its pre-save hook fires a pending
    // mitigation timer early when a periodic snapshot is taken, which changes
    // the recorded guest in a way replay cannot repeat. No option ROM:
    // nothing boots from the network.
    std::string device = nic.model == "virtio-net" ? "virtio-net-pci" : "e1000,mitigation=off";
    add({"-device",
         device + ",netdev=" + nic.name + ",mac=" + nic.mac + ",id=" + nic.name + "-dev,romfile="});
    if (mode != RrMode::kNone) {
      add({"-object", "filter-replay,id=" + nic.name + "-replay,netdev=" + nic.name});
    }
  }
  if (spec.pvpanic) {
    // The guest reports a panic; Blackbox's manifest, not QEMU, responds.
    add({"-device", "pvpanic-pci,id=pvpanic"});
    add({"-action", "panic=none"});
  }
  if (paths.gdb_port > 0) add({"-gdb", "tcp:127.0.0.1:" + std::to_string(paths.gdb_port)});
  if (paths.start_paused) add({"-S"});
  if (paths.sandbox) {
    add({"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"});
  }
  return a;
}

}  // namespace blackbox
