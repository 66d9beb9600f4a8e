// The client side of the daemon's control API (docs/daemon-api.md): one
// HTTP request over the unix socket, the answer as JSON.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"

namespace blackbox {

struct DaemonReply {
  int status = 0;  // HTTP status
  nlohmann::json body;
};

// One request to the daemon's control socket. Errors: FailedPrecondition
// when the socket's permissions refuse us (naming its group), Unavailable
// when no daemon listens, IOError otherwise.
StatusOr<DaemonReply> CallDaemon(const std::string& socket_path, const std::string& method,
                                 const std::string& target, const std::string& body = "");

}  // namespace blackbox
