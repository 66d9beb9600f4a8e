// Subcommands of the blackbox CLI.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace blackbox::cli {

struct GlobalOptions {
  std::string data_dir;
  bool verbose = false;
  bool sync_writes = false;
};

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitBadInput = 2;
inline constexpr int kExitError = 3;

// Adds every subcommand to `app`. Each pushes a runner that returns an exit
// code when its subcommand was chosen, or -1 when it was not.
void RegisterCommands(CLI::App& app, GlobalOptions& global,
                      std::vector<std::function<int()>>& runners);

}  // namespace blackbox::cli
