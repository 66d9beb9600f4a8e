// Helpers shared by the subcommands.
#pragma once

#include <functional>
#include <memory>
#include <optional>
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

// What a user's recording argument means, in this order: a full recording
// id; a VM name, meaning that VM's latest recording (for which `filter`, if
// given, holds); a unique prefix of a recording id. nullopt if none of these;
// an error for an ambiguous prefix or a store problem. (VM names come first:
// they are prefixes of their own recordings' ids.)
StatusOr<std::optional<RecordingInfo>> FindRecording(
    const Store& store, const std::string& target,
    const std::function<bool(const RecordingInfo&)>& filter = nullptr);

// "recording", or "interrupted*" for a recording whose recorder died.
std::string EffectiveState(const RecordingInfo& info);

// 1.2K, 3.4M ...
std::string HumanBytes(double b);

}  // namespace blackbox::cli
