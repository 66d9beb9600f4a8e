#include "cli/manifest_commands.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <set>
#include <thread>

#include "cli/util.h"
#include "common/clock.h"
#include "common/files.h"
#include "manifest/manifest.h"
#include "manifest/manifest_learn.h"

namespace blackbox::cli {

namespace {

std::atomic<bool> g_follow_stop{false};

std::string Actions(const nlohmann::json& a) {
  std::string s;
  if (a.is_array()) {
    for (const auto& x : a) s += (s.empty() ? "" : ", ") + x.get<std::string>();
  }
  return s.empty() ? "alert" : s;
}

}  // namespace

std::string FormatAlert(const StoredAlert& a) {
  const nlohmann::json& b = a.body;
  std::string rule = b.value("rule", "");
  int line = b.value("rule_line", 0);
  std::string s = FormatWallTime(a.wall_ns) + " " + b.value("vm", "?") + " " +
                  b.value("kind", "?") + " " + rule +
                  (line > 0 ? " (line " + std::to_string(line) + ")" : "") + ": " +
                  b.value("reason", "");
  const bool enforced = b.value("mode", "") == "enforce";
  s += " -> " + Actions(b.value("action", nlohmann::json::array()));
  if (!enforced) s += " (observe mode: alert only)";
  if (b.contains("evidence") && b["evidence"].is_object() &&
      !b["evidence"].value("capture", "").empty()) {
    const auto& e = b["evidence"];
    s += " [evidence: capture " + e.value("capture", "") + " port " + e.value("port", "") + " at " +
         FormatWallTime(e.value("frame_wall_ns", int64_t{0})) + "]";
  }
  s += " id " + a.id;
  return s;
}

nlohmann::json AlertJson(const StoredAlert& a) {
  nlohmann::json j = a.body;
  j["id"] = a.id;
  j["wall_ns"] = a.wall_ns;
  j["time"] = FormatWallTime(a.wall_ns);
  return j;
}

int RunAlerts(const GlobalOptions& g, const AlertsArgs& a) {
  int64_t since = std::numeric_limits<int64_t>::min(), until = std::numeric_limits<int64_t>::max();
  const int64_t now = RealClock::Get().WallNanos();
  if (!a.since.empty()) {
    since = a.since[0] == '-' ? now - ParseDurationNanos(a.since.substr(1))
                              : ParseTimeNanos(a.since, now);
    if (since < 0 || (a.since[0] == '-' && ParseDurationNanos(a.since.substr(1)) < 0)) {
      return Report(InvalidArgument("--since: '" + a.since +
                                    "' is not a time (2026-11-21T22:10:05Z) or -DURATION (-10m)"));
    }
  }
  if (!a.until.empty()) {
    until = ParseTimeNanos(a.until, now);
    if (until < 0) return Report(InvalidArgument("--until: '" + a.until + "' is not a time"));
  }
  std::optional<TempDir> secondary;
  StoreOptions o;
  o.path = g.data_dir + "/store";
  if (!PathExists(o.path)) {
    if (!a.follow) {
      if (!a.json) std::printf("no alerts (nothing recorded in %s yet)\n", g.data_dir.c_str());
      return kExitOk;
    }
    // Wait for a recorder to create the store.
    std::fprintf(stderr, "blackbox: waiting for %s to exist...\n", o.path.c_str());
    while (!PathExists(o.path + "/CURRENT") && !g_follow_stop.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  if (a.follow) {
    auto dir = TempDir::Create("bb-alerts-follow");
    if (!dir.ok()) return Report(dir.status());
    secondary.emplace(std::move(*dir));
    o.secondary_path = secondary->path();
  } else {
    o.read_only = true;
  }
  auto store = Store::Open(o);
  // A store being created this moment may not have its column families yet.
  for (int i = 0; !store.ok() && i < 50 && !g_follow_stop.load(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    store = Store::Open(o);
  }
  if (!store.ok()) return Report(store.status());
  std::set<std::string> seen;
  int64_t newest = since;
  size_t printed = 0;
  auto print_new = [&]() -> Status {
    // Alerts are stored about when they happen; look back a little for
    // ones stored out of order by another writer.
    int64_t from = newest == std::numeric_limits<int64_t>::min()
                       ? since
                       : std::max(since, newest - 30'000'000'000);
    ASSIGN_OR_RETURN(auto list, (*store)->ListAlerts(from, until));
    for (const StoredAlert& al : list) {
      if (!seen.insert(al.id).second) continue;
      newest = std::max(newest, al.wall_ns);
      if (!a.vm.empty() && al.body.value("vm", "") != a.vm) continue;
      if (a.json) {
        std::printf("%s\n", AlertJson(al).dump().c_str());
      } else {
        std::printf("%s\n", FormatAlert(al).c_str());
      }
      ++printed;
    }
    std::fflush(stdout);
    return Status::Ok();
  };
  if (Status s = print_new(); !s.ok()) return Report(s);
  if (!a.follow) {
    if (printed == 0 && !a.json) std::printf("no alerts\n");
    return kExitOk;
  }
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_follow_stop.store(true); };
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  while (!g_follow_stop.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (Status s = (*store)->CatchUp(); !s.ok()) return Report(s);
    if (Status s = print_new(); !s.ok()) return Report(s);
  }
  return kExitOk;
}

int RunManifestCheck(const std::string& path) {
  std::vector<ManifestWarning> warnings;
  auto m = LoadManifest(path, &warnings);
  if (!m.ok()) return Report(m.status());
  for (const auto& w : warnings) std::printf("warning: %s\n", w.message.c_str());
  std::printf("%s: manifest of VM %s, %s mode, %zu rules, default %s\n", path.c_str(),
              m->vm.c_str(), m->mode == ManifestMode::kEnforce ? "enforce" : "observe",
              m->rules.size(), ResponsesToString(m->default_action).c_str());
  return kExitOk;
}

namespace {

// A recording id, the latest recording of a VM of that name, or an id prefix.
StatusOr<RecordingInfo> FindRecordingOrVm(const Store& store, const std::string& target) {
  ASSIGN_OR_RETURN(std::optional<RecordingInfo> rec, FindRecording(store, target));
  if (!rec) return NotFound("no recording or VM '" + target + "'");
  return *rec;
}

}  // namespace

int RunManifestLearn(const GlobalOptions& g, const LearnArgs& a) {
  LearnOptions lo;
  if (a.mode == "enforce") {
    lo.mode = ManifestMode::kEnforce;
  } else if (a.mode != "observe") {
    return Report(InvalidArgument("--mode: '" + a.mode + "' is not observe or enforce"));
  }
  if (!(a.headroom >= 1.0 && a.headroom <= 1000)) {
    return Report(InvalidArgument("--headroom: must be between 1 and 1000"));
  }
  lo.headroom = a.headroom;
  lo.devices = !a.no_devices;
  int64_t window = 0;
  if (!a.duration.empty()) {
    window = ParseDurationNanos(a.duration);
    if (window <= 0) {
      return Report(
          InvalidArgument("--for: '" + a.duration + "' is not a duration like 30s or 2m"));
    }
  }
  auto store = OpenStore(g, true);
  if (!store.ok()) return Report(store.status());
  auto rec = FindRecordingOrVm(**store, a.target);
  if (!rec.ok()) return Report(rec.status());
  int64_t since = std::numeric_limits<int64_t>::min(), until = std::numeric_limits<int64_t>::max();
  if (window > 0) {
    if (EffectiveState(*rec) != "recording") {
      return Report(FailedPrecondition(
          "--for: " + rec->vm_name + " is not running (its latest recording " + rec->id + " is " +
          EffectiveState(*rec) + "); without --for the whole recording is learned from"));
    }
    store->reset();  // do not hold an old view while waiting
    since = RealClock::Get().WallNanos();
    until = since + window;
    std::fprintf(stderr, "blackbox: watching %s (recording %s) for %s...\n", rec->vm_name.c_str(),
                 rec->id.c_str(), a.duration.c_str());
    const int64_t step = 5'000'000'000;
    for (int64_t left = window; left > 0; left -= step) {
      std::this_thread::sleep_for(std::chrono::nanoseconds(std::min(left, step)));
      if (left > step) {
        std::fprintf(stderr, "blackbox: %.0f s left\n", (left - step) / 1e9);
      }
    }
    // Frames reach the store in batches at least every 250 ms.
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    store = OpenStore(g, true);
    if (!store.ok()) return Report(store.status());
    auto again = (*store)->GetRecording(rec->id);
    if (!again.ok()) return Report(again.status());
    rec = std::move(*again);
  }
  auto seen = ObserveRecording(**store, *rec, since, until);
  if (!seen.ok()) return Report(seen.status());
  Manifest m = LearnManifest(*seen, lo);
  std::vector<std::string> header = {
      "Manifest of VM " + m.vm + ", learned by `blackbox manifest learn` from recording " + rec->id,
      "between " + FormatWallTime(seen->since_ns) + " and " +
          FormatWallTime(seen->until_ns == std::numeric_limits<int64_t>::max()
                             ? RealClock::Get().WallNanos()
                             : seen->until_ns) +
          ": " + std::to_string(seen->frames) + " frames, " + std::to_string(seen->flows.size()) +
          " kinds of flow.",
      "It allows exactly what was seen; review it before switching to enforce mode."};
  const std::string yaml = ManifestToYaml(m, header);
  // Check that what we write reads back.
  std::vector<ManifestWarning> warnings;
  if (auto back = ParseManifest(yaml, &warnings); !back.ok()) {
    return Report(Internal("the learned manifest does not parse: " + back.status().message()));
  }
  if (a.output.empty() || a.output == "-") {
    std::fwrite(yaml.data(), 1, yaml.size(), stdout);
  } else {
    if (Status s = WriteFileAtomic(a.output, yaml); !s.ok()) return Report(s);
    std::fprintf(stderr, "blackbox: wrote %s: %zu rules, %.0f frames/s envelope\n",
                 a.output.c_str(), m.rules.size(), m.vm_rate.packets_per_s);
  }
  for (const auto& w : warnings) std::fprintf(stderr, "blackbox: warning: %s\n", w.message.c_str());
  return kExitOk;
}

int RunManifestDiff(const GlobalOptions& g, const std::string& manifest_path,
                    const std::string& target, bool json) {
  std::vector<ManifestWarning> warnings;
  auto m = LoadManifest(manifest_path, &warnings);
  if (!m.ok()) return Report(m.status());
  auto store = OpenStore(g, true);
  if (!store.ok()) return Report(store.status());
  auto rec = FindRecordingOrVm(**store, target);
  if (!rec.ok()) return Report(rec.status());
  if (rec->vm_name != m->vm) {
    std::fprintf(stderr, "blackbox: warning: the manifest is for VM %s, the recording of %s\n",
                 m->vm.c_str(), rec->vm_name.c_str());
  }
  auto seen = ObserveRecording(**store, *rec);
  if (!seen.ok()) return Report(seen.status());
  const ManifestDiff d = DiffManifest(*m, *seen);
  if (json) {
    nlohmann::json out = {{"manifest", manifest_path}, {"recording", rec->id}};
    out["deviations"] = nlohmann::json::array();
    for (const auto& dv : d.deviations) {
      out["deviations"].push_back({{"kind", dv.kind}, {"what", dv.what}, {"line", dv.rule_line}});
    }
    out["unused_rules"] = d.unused_rules;
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("%s against recording %s (%llu frames, %zu kinds of flow):\n",
                manifest_path.c_str(), rec->id.c_str(),
                static_cast<unsigned long long>(seen->frames), seen->flows.size());
    if (d.deviations.empty()) std::printf("  nothing the manifest does not allow\n");
    for (const auto& dv : d.deviations) {
      std::printf("  %s%s: %s\n", dv.kind.c_str(),
                  dv.rule_line > 0 ? (" (line " + std::to_string(dv.rule_line) + ")").c_str() : "",
                  dv.what.c_str());
    }
    for (const auto& u : d.unused_rules) std::printf("  unused: %s\n", u.c_str());
  }
  return d.deviations.empty() ? kExitOk : kExitFailed;
}

void RegisterManifestCommands(CLI::App& app, GlobalOptions& global,
                              std::vector<std::function<int()>>& runners) {
  auto al = std::make_shared<AlertsArgs>();
  auto* alerts = app.add_subcommand(
      "alerts", "print the alerts raised when VMs deviated from their manifests");
  alerts->add_flag("-f,--follow", al->follow,
                   "keep printing new alerts as they are stored (Ctrl-C ends)");
  alerts->add_flag("--json", al->json, "one JSON object per line (for a SIEM)");
  alerts->add_option("--vm", al->vm, "only this VM's alerts");
  alerts->add_option("--since", al->since, "from this time (RFC 3339 UTC) or this long ago (-10m)");
  alerts->add_option("--until", al->until, "up to this time (RFC 3339 UTC)");
  runners.push_back(
      [alerts, al, &global]() { return alerts->parsed() ? RunAlerts(global, *al) : -1; });

  auto* man = app.add_subcommand("manifest", "VM manifests: check, learn, diff (docs/manifest.md)");
  man->require_subcommand(1);

  auto check_path = std::make_shared<std::string>();
  auto* check = man->add_subcommand("check", "parse a manifest; print its warnings");
  check->add_option("manifest", *check_path, "manifest file")->required();
  runners.push_back(
      [check, check_path]() { return check->parsed() ? RunManifestCheck(*check_path) : -1; });

  auto la = std::make_shared<LearnArgs>();
  auto* learn = man->add_subcommand(
      "learn",
      "write a manifest from what a VM did: watch a running VM (--for) or read a recording");
  learn->add_option("target", la->target, "VM name (its latest recording) or recording id")
      ->required();
  learn->add_option("--for", la->duration,
                    "watch the running VM this long (30s, 5m) from now; default: learn from the "
                    "whole recording");
  learn->add_option("-o,--output", la->output, "write here (default: stdout)");
  learn->add_option("--mode", la->mode, "mode of the written manifest: observe or enforce")
      ->capture_default_str();
  learn->add_option("--headroom", la->headroom, "rate envelopes: busiest second seen times this")
      ->capture_default_str();
  learn->add_flag("--no-devices", la->no_devices, "do not check the device list at launch");
  runners.push_back(
      [learn, la, &global]() { return learn->parsed() ? RunManifestLearn(global, *la) : -1; });

  auto diff_manifest = std::make_shared<std::string>();
  auto diff_target = std::make_shared<std::string>();
  auto diff_json = std::make_shared<bool>(false);
  auto* diff = man->add_subcommand(
      "diff", "what a recording did that a manifest does not allow (exit 1 if anything)");
  diff->add_option("manifest", *diff_manifest, "manifest file")->required();
  diff->add_option("recording", *diff_target, "recording id, or VM name (its latest recording)")
      ->required();
  diff->add_flag("--json", *diff_json, "one JSON object");
  runners.push_back([diff, diff_manifest, diff_target, diff_json, &global]() {
    return diff->parsed() ? RunManifestDiff(global, *diff_manifest, *diff_target, *diff_json) : -1;
  });
}

}  // namespace blackbox::cli
