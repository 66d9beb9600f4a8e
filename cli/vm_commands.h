// `blackbox daemon` and `blackbox vm ...`: the appliance daemon and its
// client over the control socket (docs/daemon-api.md).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "common/status.h"

namespace blackbox::cli {

struct DaemonReply {
  int status = 0;  // HTTP status
  nlohmann::json body;
};

// One request to the daemon's control socket. Errors: FailedPrecondition
// when the socket's permissions refuse us (naming its group), Unavailable
// when no daemon listens, IOError otherwise.
StatusOr<DaemonReply> CallDaemon(const std::string& socket_path, const std::string& method,
                                 const std::string& target, const std::string& body = "");

// Whether a daemon answers on DATA's default socket (and its pid).
bool DaemonServes(const GlobalOptions& g, std::string* pid);

void RegisterVmCommands(CLI::App& app, GlobalOptions& global,
                        std::vector<std::function<int()>>& runners);

}  // namespace blackbox::cli
