#include "cli/capture_commands.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "cli/util.h"
#include "common/clock.h"
#include "store/capture_export.h"

namespace blackbox::cli {

namespace {

// What a user-given id means for a capture: all of a capture, or the ports
// of one recording in it.
struct CaptureTarget {
  std::string capture_id;
  nlohmann::json meta;
  std::vector<uint32_t> ports;  // selected port ids (all ports when the whole capture)
  std::string what;             // "recording X" / "capture X"
  int64_t since_ns = std::numeric_limits<int64_t>::min();
  int64_t until_ns = std::numeric_limits<int64_t>::max();
};

StatusOr<CaptureTarget> ResolveTarget(const Store& store, const CaptureSelection& sel) {
  CaptureTarget t;
  ASSIGN_OR_RETURN(std::optional<RecordingInfo> rec,
                   FindRecording(store, sel.id, [](const RecordingInfo& r) {
                     return r.extra.contains("capture");
                   }));
  if (rec) {
    if (!rec->extra.contains("capture")) {
      return FailedPrecondition("recording " + rec->id +
                                " had no NIC on Blackbox's switch: it has no frames or flows");
    }
    t.capture_id = rec->extra["capture"].get<std::string>();
    t.what = "recording " + rec->id;
    for (const auto& p : rec->extra.value("ports", nlohmann::json::array())) {
      t.ports.push_back(p.value("id", 0u));
    }
  } else {
    auto capture = store.ResolveCaptureId(sel.id);
    if (!capture.ok() && capture.status().code() == StatusCode::kNotFound) {
      return NotFound("no recording, VM or capture '" + sel.id + "'");
    }
    if (!capture.ok()) return capture.status();
    t.capture_id = *capture;
    t.what = "capture " + t.capture_id;
  }
  ASSIGN_OR_RETURN(t.meta, store.GetCapture(t.capture_id));
  std::vector<uint32_t> all_ports;
  for (const auto& p : t.meta.value("ports", nlohmann::json::array())) {
    all_ports.push_back(p.value("id", 0u));
  }
  if (!rec) t.ports = all_ports;
  if (!sel.ports.empty()) {
    std::vector<uint32_t> chosen;
    for (const std::string& want : sel.ports) {
      bool found = false;
      for (const auto& p : t.meta.value("ports", nlohmann::json::array())) {
        if (p.value("name", "") == want || std::to_string(p.value("id", 0u)) == want) {
          chosen.push_back(p.value("id", 0u));
          found = true;
        }
      }
      if (!found) {
        std::string names;
        for (const auto& p : t.meta.value("ports", nlohmann::json::array())) {
          names += (names.empty() ? "" : ", ") + p.value("name", "");
        }
        return NotFound("--port " + want + ": capture " + t.capture_id + " has ports " + names);
      }
    }
    t.ports = chosen;
  }
  int64_t base = t.meta.value("started_wall_ns", int64_t{0});
  if (!sel.since.empty()) {
    t.since_ns = ParseTimeNanos(sel.since, base);
    if (t.since_ns < 0) {
      return InvalidArgument("--since: '" + sel.since +
                             "' is not a time (2026-11-21T22:10:05Z or +SECONDS)");
    }
  }
  if (!sel.until.empty()) {
    t.until_ns = ParseTimeNanos(sel.until, base);
    if (t.until_ns < 0) {
      return InvalidArgument("--until: '" + sel.until +
                             "' is not a time (2026-11-21T22:10:05Z or +SECONDS)");
    }
  }
  return t;
}

std::string ProtoName(const nlohmann::json& f) {
  if (f.value("kind", "") == "arp") return "arp";
  int p = f.value("proto", 0);
  switch (p) {
    case 1:
      return "icmp";
    case 6:
      return "tcp";
    case 17:
      return "udp";
    case 58:
      return "icmp6";
    default:
      return "ip/" + std::to_string(p);
  }
}

std::string Endpoint(const nlohmann::json& f, const char* ip, const char* port) {
  std::string addr = f.value(ip, "");
  int proto = f.value("proto", 0);
  if (proto == 6 || proto == 17) {
    if (addr.find(':') != std::string::npos) addr = "[" + addr + "]";
    return addr + ":" + std::to_string(f.value(port, 0));
  }
  return addr;
}

}  // namespace

int RunFlows(const GlobalOptions& g, const CaptureSelection& sel, bool json) {
  auto store = OpenStore(g, true);
  if (!store.ok()) return Report(store.status());
  auto target = ResolveTarget(**store, sel);
  if (!target.ok()) return Report(target.status());
  auto flows = (*store)->ListFlows(target->capture_id, target->since_ns, target->until_ns);
  if (!flows.ok()) return Report(flows.status());
  std::set<std::string> names;
  for (const auto& p : target->meta.value("ports", nlohmann::json::array())) {
    if (std::count(target->ports.begin(), target->ports.end(), p.value("id", 0u))) {
      names.insert(p.value("name", ""));
    }
  }
  auto selected = [&](const nlohmann::json& f) {
    for (const char* key : {"port_a", "port_b"}) {
      if (f.contains(key) && f[key].is_string() && names.count(f[key].get<std::string>())) {
        return true;
      }
    }
    return false;
  };
  size_t shown = 0;
  if (!json) {
    std::printf("%-24s %7s %-5s %-22s %-22s %7s %7s %9s %9s %-11s %-7s %s\n", "START (UTC)",
                "SECONDS", "PROTO", "A (ORIGINATOR)", "B", "PKT A>B", "PKT B>A", "BYTES A>B",
                "BYTES B>A", "STATE", "END", "COMMUNITY ID");
  }
  for (const auto& f : *flows) {
    if (!selected(f)) continue;
    ++shown;
    if (json) {
      std::printf("%s\n", f.dump().c_str());
      continue;
    }
    int64_t start = f.value("start_wall_ns", int64_t{0}), end = f.value("end_wall_ns", int64_t{0});
    std::string state = f.value("tcp_state", "");
    if (f.value("dropped_packets", 0) > 0) {
      state += (state.empty() ? "" : ",") + std::string("DROPS=") +
               std::to_string(f.value("dropped_packets", 0));
    }
    std::printf("%-24s %7.2f %-5s %-22s %-22s %7llu %7llu %9llu %9llu %-11s %-7s %s\n",
                FormatWallTime(start).c_str(), (end - start) / 1e9, ProtoName(f).c_str(),
                Endpoint(f, "a_ip", "a_port").c_str(), Endpoint(f, "b_ip", "b_port").c_str(),
                f.value("packets_a_to_b", 0ull), f.value("packets_b_to_a", 0ull),
                f.value("bytes_a_to_b", 0ull), f.value("bytes_b_to_a", 0ull),
                state.empty() ? "-" : state.c_str(), f.value("end_reason", "").c_str(),
                f.value("community_id", "").c_str());
  }
  if (!json) {
    std::fprintf(stderr, "%zu flows of %s (capture %s)\n", shown, target->what.c_str(),
                 target->capture_id.c_str());
  }
  return kExitOk;
}

int RunExportPcapng(const GlobalOptions& g, const CaptureSelection& sel, const std::string& path) {
  auto store = OpenStore(g, true);
  if (!store.ok()) return Report(store.status());
  auto target = ResolveTarget(**store, sel);
  if (!target.ok()) return Report(target.status());
  std::vector<std::pair<uint32_t, std::string>> ports;
  for (const auto& p : target->meta.value("ports", nlohmann::json::array())) {
    ports.emplace_back(p.value("id", 0u), p.value("name", ""));
  }
  FrameQuery q;
  q.since_ns = target->since_ns;
  q.until_ns = target->until_ns;
  q.ports = target->ports;
  auto stats = ExportCapturePcapng(**store, target->capture_id, ports, q, path);
  if (!stats.ok()) return Report(stats.status());
  std::fprintf(
      stderr, "blackbox: wrote %s: %llu frames (%llu dropped by the switch) of %s, %u interfaces\n",
      path.c_str(), static_cast<unsigned long long>(stats->frames),
      static_cast<unsigned long long>(stats->dropped), target->what.c_str(), stats->interfaces);
  return kExitOk;
}

}  // namespace blackbox::cli
