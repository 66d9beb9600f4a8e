#include "common/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <deque>
#include <fstream>
#include <thread>

#include "common/files.h"

namespace blackbox {

StatusOr<ChildProcess> ChildProcess::Spawn(const std::vector<std::string>& argv,
                                           const std::string& output_path,
                                           const std::vector<int>& inherit_fds) {
  if (argv.empty()) return InvalidArgument("empty command");
  std::vector<char*> cargv;
  for (const auto& s : argv) cargv.push_back(const_cast<char*>(s.c_str()));
  cargv.push_back(nullptr);
  // Everything the child needs is prepared before fork: only async-signal-safe
  // calls happen between fork and exec.
  UniqueFd out;
  if (!output_path.empty()) {
    out = UniqueFd(::open(output_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
    if (!out.valid()) return ErrnoError("cannot open " + output_path, errno);
  }
  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return ErrnoError("pipe", errno);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    ::close(err_pipe[0]);
    ::close(err_pipe[1]);
    return ErrnoError("fork", e);
  }
  if (pid == 0) {
    // A child outlives nothing: when Blackbox dies (even by SIGKILL) its
    // QEMUs die too, instead of running on unrecorded.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    if (out.valid()) {
      ::dup2(out.get(), 1);
      ::dup2(out.get(), 2);
    }
    for (int fd : inherit_fds) {
      int flags = ::fcntl(fd, F_GETFD);
      if (flags >= 0) ::fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
    }
    ::execvp(cargv[0], cargv.data());
    int e = errno;
    ssize_t ignored = ::write(err_pipe[1], &e, sizeof e);
    (void)ignored;
    ::_exit(127);
  }
  ::close(err_pipe[1]);
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(err_pipe[0], &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  ::close(err_pipe[0]);
  ChildProcess child;
  child.pid_ = pid;
  if (n == sizeof child_errno) {
    child.Wait().IgnoreError();
    child.pid_ = -1;
    return ErrnoError("cannot start " + argv[0], child_errno);
  }
  return child;
}

ChildProcess::ChildProcess(ChildProcess&& o) noexcept : pid_(o.pid_), exit_status_(o.exit_status_) {
  o.pid_ = -1;
}

ChildProcess& ChildProcess::operator=(ChildProcess&& o) noexcept {
  if (this != &o) {
    if (running()) Kill();
    pid_ = o.pid_;
    exit_status_ = o.exit_status_;
    o.pid_ = -1;
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  if (running()) Kill();
}

std::optional<int> ChildProcess::Poll() {
  if (pid_ <= 0 || exit_status_) return exit_status_;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) exit_status_ = status;
  return exit_status_;
}

StatusOr<int> ChildProcess::Wait(std::optional<std::chrono::milliseconds> timeout) {
  if (pid_ <= 0) return FailedPrecondition("no child process");
  if (!timeout) {
    while (!exit_status_) {
      int status = 0;
      pid_t r = ::waitpid(pid_, &status, 0);
      if (r == pid_)
        exit_status_ = status;
      else if (r < 0 && errno != EINTR)
        return ErrnoError("waitpid", errno);
    }
    return *exit_status_;
  }
  auto deadline = std::chrono::steady_clock::now() + *timeout;
  // Polling with a short back-off: waitpid has no timeout, and a child exit
  // is not an event we can block on portably without a pidfd.
  auto delay = std::chrono::milliseconds(1);
  while (!Poll()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return DeadlineExceeded("process " + std::to_string(pid_) + " still running");
    }
    std::this_thread::sleep_for(delay);
    delay = std::min(delay * 2, std::chrono::milliseconds(20));
  }
  return *exit_status_;
}

bool ChildProcess::WaitExited(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return false;
  if (exit_status_) return true;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
        info.si_pid == pid_) {
      return true;
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

void ChildProcess::Signal(int sig) {
  if (running()) ::kill(pid_, sig);
}

void ChildProcess::Kill() {
  if (!running()) return;
  ::kill(pid_, SIGKILL);
  Wait().IgnoreError();
}

std::string ChildProcess::DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "ended with wait status " + std::to_string(status);
}

std::string TailOfFile(const std::string& path, int max_lines) {
  std::ifstream in(path);
  std::deque<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    lines.push_back(line);
    if (static_cast<int>(lines.size()) > max_lines) lines.pop_front();
  }
  std::string out;
  for (const auto& l : lines) out += (out.empty() ? "" : " | ") + l;
  return out;
}

StatusOr<std::string> RunCommand(const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout) {
  ASSIGN_OR_RETURN(TempDir tmp, TempDir::Create("bb-cmd"));
  std::string out_path = tmp.path() + "/out";
  ASSIGN_OR_RETURN(ChildProcess child, ChildProcess::Spawn(argv, out_path));
  auto status = child.Wait(timeout);
  if (!status.ok()) {
    child.Kill();
    return DeadlineExceeded(argv[0] + " did not finish in time");
  }
  auto output = ReadFileToString(out_path, 1 << 20);
  std::string text = output.ok() ? *output : "";
  if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    return IOError(ShellJoin(argv) + " " + ChildProcess::DescribeWaitStatus(*status) + ": " +
                   TailOfFile(out_path, 2));
  }
  return text;
}

std::string ShellJoin(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    bool plain = !a.empty() && a.find_first_not_of(
                                   "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                                   "-_./=,:+@%") == std::string::npos;
    if (plain) {
      out += a;
    } else {
      out += '\'';
      for (char c : a) {
        if (c == '\'')
          out += "'\\''";
        else
          out += c;
      }
      out += '\'';
    }
  }
  return out;
}

}  // namespace blackbox
