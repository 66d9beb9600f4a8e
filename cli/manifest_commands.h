// The alerts and manifest subcommands (docs/manifest.md).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "store/store.h"

namespace blackbox::cli {

struct AlertsArgs {
  bool follow = false;
  bool json = false;
  std::string vm, since, until;
};

struct LearnArgs {
  std::string target, duration, output;
  std::string mode = "observe";
  double headroom = 3.0;
  bool no_devices = false;
};

// One line: time, VM, kind, rule, reason, actions, evidence, id.
std::string FormatAlert(const StoredAlert& a);
// The stored body plus id, wall_ns and an RFC 3339 time.
nlohmann::json AlertJson(const StoredAlert& a);

void RegisterManifestCommands(CLI::App& app, GlobalOptions& global,
                              std::vector<std::function<int()>>& runners);

}  // namespace blackbox::cli
