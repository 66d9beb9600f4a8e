// Child processes (QEMU, qemu-img). Started with stdin from /dev/null,
// stdout/stderr to a file, in their own process group so a Ctrl-C aimed at
// Blackbox does not reach them directly (Blackbox decides how they stop), and
// with PR_SET_PDEATHSIG so they are killed if Blackbox itself dies.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace blackbox {

class ChildProcess {
 public:
  // Starts argv[0] (looked up in PATH) with stdout+stderr appended to
  // `output_path` (or inherited when empty). The child inherits
  // `inherit_fds` under the same numbers (even if they are close-on-exec
  // here) and no other descriptor opened with O_CLOEXEC.
  static StatusOr<ChildProcess> Spawn(const std::vector<std::string>& argv,
                                      const std::string& output_path,
                                      const std::vector<int>& inherit_fds = {});
  ChildProcess(ChildProcess&& o) noexcept;
  ChildProcess& operator=(ChildProcess&& o) noexcept;
  // Kills (SIGKILL) and reaps a child still running.
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0 && !exit_status_; }
  // Non-blocking check; returns the wait status once the child has exited.
  std::optional<int> Poll();
  // Waits up to `timeout` (forever when nullopt); DeadlineExceeded if still running.
  StatusOr<int> Wait(std::optional<std::chrono::milliseconds> timeout = std::nullopt);
  // Waits up to `timeout` for the child to exit without reaping it: its pid
  // stays taken, so a signal another thread sends it meanwhile cannot reach
  // a process that got the pid. False on timeout; Wait() reaps it after.
  bool WaitExited(std::chrono::milliseconds timeout);
  void Signal(int sig);
  // SIGKILL and reap.
  void Kill();

  // "exited with status 1" / "killed by signal 9".
  static std::string DescribeWaitStatus(int status);

 private:
  ChildProcess() = default;
  pid_t pid_ = -1;
  std::optional<int> exit_status_;
};

// Runs a command to completion, capturing stdout+stderr (capped at 1 MiB).
// Non-zero exit -> error with the output's last line.
StatusOr<std::string> RunCommand(const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout = std::chrono::minutes(5));

// Last `max_lines` lines of a text file (for error messages).
std::string TailOfFile(const std::string& path, int max_lines = 5);

// Joins argv for display, quoting arguments that need it.
std::string ShellJoin(const std::vector<std::string>& argv);

}  // namespace blackbox
