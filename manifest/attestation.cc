#include "manifest/attestation.h"

#include <algorithm>
#include <cstdio>

namespace blackbox {

namespace {

void Describe(const nlohmann::json& devices, std::vector<std::string>* out) {
  if (!devices.is_array()) return;
  for (const auto& d : devices) {
    if (!d.is_object()) continue;
    auto num = [&](const nlohmann::json& o, const char* k) -> int64_t {
      return o.is_object() && o.contains(k) && o[k].is_number_integer() ? o[k].get<int64_t>() : -1;
    };
    const int64_t bus = num(d, "bus"), slot = num(d, "slot"), fn = num(d, "function");
    const nlohmann::json id = d.contains("id") ? d["id"] : nlohmann::json();
    const int64_t vendor = num(id, "vendor"), device = num(id, "device");
    if (bus < 0 || slot < 0 || fn < 0 || vendor < 0 || device < 0) continue;
    char buf[128];
    std::snprintf(buf, sizeof buf, "%02llx:%02llx.%llx %04llx:%04llx",
                  static_cast<unsigned long long>(bus), static_cast<unsigned long long>(slot),
                  static_cast<unsigned long long>(fn), static_cast<unsigned long long>(vendor),
                  static_cast<unsigned long long>(device));
    std::string line = buf;
    if (d.contains("qdev_id") && d["qdev_id"].is_string() &&
        !d["qdev_id"].get<std::string>().empty()) {
      line += " id=" + d["qdev_id"].get<std::string>();
    }
    out->push_back(line);
    if (d.contains("pci_bridge") && d["pci_bridge"].is_object()) {
      Describe(d["pci_bridge"].value("devices", nlohmann::json::array()), out);
    }
  }
}

std::string Short(const std::string& hex) {
  return hex.size() > 16 ? hex.substr(0, 16) + "..." : hex;
}

}  // namespace

std::vector<std::string> DescribeDevices(const nlohmann::json& query_pci) {
  std::vector<std::string> out;
  if (query_pci.is_array()) {
    for (const auto& bus : query_pci) {
      if (bus.is_object() && bus.contains("devices")) Describe(bus["devices"], &out);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string BootMismatch::ToString() const {
  if (item == "devices")
    return "devices differ: " + actual + " (the manifest says " + expected + ")";
  if (item == "cmdline" || item == "machine") {
    return item + " is '" + actual + "', the manifest says '" + expected + "'";
  }
  return item + " sha256 is " + Short(actual) + ", the manifest says " + Short(expected);
}

std::vector<BootMismatch> CompareBoot(const BootChain& boot, const BootFacts& facts) {
  std::vector<BootMismatch> out;
  auto hash = [&](const std::string& item, const std::string& want, const std::string& have) {
    if (!want.empty() && want != have) out.push_back({item, want, have.empty() ? "(none)" : have});
  };
  hash("kernel", boot.kernel_sha256, facts.kernel_sha256);
  hash("initrd", boot.initrd_sha256, facts.initrd_sha256);
  for (const auto& [name, want] : boot.disks_sha256) {
    auto it = facts.disks_sha256.find(name);
    hash("disk " + name, want, it == facts.disks_sha256.end() ? "" : it->second);
  }
  if (boot.cmdline && *boot.cmdline != facts.cmdline) {
    out.push_back({"cmdline", *boot.cmdline, facts.cmdline});
  }
  if (!boot.machine.empty() && boot.machine != facts.machine) {
    out.push_back({"machine", boot.machine, facts.machine});
  }
  if (!boot.devices.empty()) {
    std::vector<std::string> want = boot.devices, have = facts.devices;
    std::sort(want.begin(), want.end());
    std::sort(have.begin(), have.end());
    if (want != have) {
      std::vector<std::string> missing, extra;
      std::set_difference(want.begin(), want.end(), have.begin(), have.end(),
                          std::back_inserter(missing));
      std::set_difference(have.begin(), have.end(), want.begin(), want.end(),
                          std::back_inserter(extra));
      std::string actual, expected;
      for (const auto& e : extra) actual += (actual.empty() ? "" : ", ") + std::string("+") + e;
      for (const auto& m : missing) actual += (actual.empty() ? "" : ", ") + std::string("-") + m;
      expected = std::to_string(want.size()) + " devices";
      out.push_back({"devices", expected, actual});
    }
  }
  return out;
}

}  // namespace blackbox
