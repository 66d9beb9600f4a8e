// Helpers shared by the subcommands.
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "cli/commands.h"
#include "common/status.h"
#include "store/store.h"

namespace blackbox::cli {

// Prints "blackbox: error: MESSAGE" to stderr; returns the exit code for it.
int Report(const Status& s);

// Opens the store under --data; read-only fails with NotFound when nothing
// was ever recorded.
StatusOr<std::unique_ptr<Store>> OpenStore(const GlobalOptions& g, bool read_only);

// Opens the store read-only and resolves a recording id or prefix.
StatusOr<std::pair<std::unique_ptr<Store>, std::string>> OpenRecording(const GlobalOptions& g,
                                                                       const std::string& id_arg);

// "recording", or "interrupted*" for a recording whose recorder died.
std::string EffectiveState(const RecordingInfo& info);

// 1.2K, 3.4M ...
std::string HumanBytes(double b);

}  // namespace blackbox::cli
