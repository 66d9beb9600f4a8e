// Helpers for end-to-end tests: they run the real `blackbox` binary against
// real QEMU guests built by guest/build-guest.sh. Paths come from the
// environment ctest sets (see tests/CMakeLists.txt).
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/files.h"
#include "common/process.h"

namespace blackbox::e2e {

struct CommandResult {
  int exit_code = -1;  // -1: killed or timed out
  std::string output;  // stdout + stderr
};

// Built-in paths (from CMake); the environment may override them with
// BB_BIN (the blackbox binary), BLACKBOX_GUEST_DIR and BB_EXAMPLES.
std::string BlackboxBin();
std::string Example(const std::string& name);
std::string GuestDir();
// Blackbox's patched QEMU (qemu-patches/build.sh); BLACKBOX_QEMU overrides, as for
// the blackbox command (recorder/qemu_binary.h).
std::string PatchedQemu();

// A fresh data directory per test.
class E2eTest : public ::testing::Test {
 protected:
  void SetUp() override;
  // Runs `blackbox --data <data> args...` to completion.
  CommandResult Blackbox(const std::vector<std::string>& args,
                         std::chrono::seconds timeout = std::chrono::seconds(300));
  // Starts `blackbox --data <data> args...` in the background, output to a file.
  ChildProcess StartBlackbox(const std::vector<std::string>& args, const std::string& output_file);
  // The newest recording (from `blackbox ls --json`).
  nlohmann::json LatestRecording();
  // Every recording, by VM name (the newest of each VM).
  std::map<std::string, nlohmann::json> RecordingsByVm();
  // The recorded console of a recording (`blackbox console`).
  std::string Console(const std::string& id);
  std::string data() const { return data_->path(); }

  std::optional<TempDir> data_;
};

// Waits until `path` contains `needle` (polling the file the process writes),
// or fails after `timeout`. Returns whether it appeared.
bool WaitForText(const std::string& path, const std::string& needle, std::chrono::seconds timeout);

std::string Md5Hex(const std::string& data);

// The file's contents, or "" if it cannot be read (yet).
std::string ReadFileOrEmpty(const std::string& path);

}  // namespace blackbox::e2e
