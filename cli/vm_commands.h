// `blackbox daemon` and `blackbox vm ...`: the appliance daemon and its
// client over the control socket (docs/daemon-api.md).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "common/status.h"

namespace blackbox::cli {

// Whether a daemon answers on DATA's default socket (and its pid).
bool DaemonServes(const GlobalOptions& g, std::string* pid);

void RegisterVmCommands(CLI::App& app, GlobalOptions& global,
                        std::vector<std::function<int()>>& runners);

}  // namespace blackbox::cli
