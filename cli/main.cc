// blackbox: the one command-line entry point. Every subcommand has --help and
// exits non-zero with a one-line reason on bad input:
//   0  success   1  the operation ran and failed (e.g. verify found a difference)
//   2  bad input (usage, spec, unknown id)   3  internal/environment error
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "cli/commands.h"

int main(int argc, char** argv) {
  using namespace blackbox::cli;
  CLI::App app{
      "Blackbox: records protected VMs (QEMU record/replay) into a compressed store, "
      "replays them bit-exact."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "blackbox 0.1.0");
  GlobalOptions global;
  const char* env_data = std::getenv("BLACKBOX_DATA");
  global.data_dir = env_data && *env_data ? env_data : "/var/lib/blackbox";
  app.add_option(
         "--data", global.data_dir,
         "data directory (store and recordings); default $BLACKBOX_DATA or /var/lib/blackbox")
      ->capture_default_str();
  app.add_flag("-v,--verbose", global.verbose, "log debug details (QEMU command lines, ...)");
  app.add_flag(
      "--sync", global.sync_writes,
      "fsync every store write (survives power loss, slower); default: survives process crashes");

  std::vector<std::function<int()>> runners;
  RegisterCommands(app, global, runners);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  spdlog::set_pattern("blackbox: %^%l%$: %v");
  spdlog::set_level(global.verbose ? spdlog::level::debug : spdlog::level::warn);
  try {
    for (auto& run : runners) {
      if (run) {
        int rc = run();
        if (rc >= 0) return rc;
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "blackbox: internal error: %s\n", e.what());
    return kExitError;
  }
  return 0;
}
