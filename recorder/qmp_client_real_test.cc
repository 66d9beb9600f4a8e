// QmpClient and QmpSyncClient against a real qemu-system-x86_64 (-machine
// none: no guest, no firmware, starts in well under a second). Skipped only if
// the binary is not installed. Every QEMU started here is killed on every exit
// path (ChildProcess's destructor, and PR_SET_PDEATHSIG if the test dies).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "recorder/qmp_client.h"

namespace blackbox {
namespace {

namespace asio = boost::asio;
using json = nlohmann::json;
using stream_protocol = asio::local::stream_protocol;
using namespace std::chrono_literals;

constexpr char kQemu[] = "qemu-system-x86_64";

std::optional<std::string> FindInPath(const std::string& name) {
  const char* path = getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) continue;
    std::string candidate = dir + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

// A child process that is SIGKILLed and reaped when this object goes away,
// unless it has already been reaped by WaitForExit().
class ChildProcess {
 public:
  // Starts argv[0] (an absolute path) with stdin from /dev/null. `keep_fd`,
  // if >= 0, is inherited by the child; every other descriptor the test owns
  // is close-on-exec or irrelevant to QEMU.
  static pid_t Spawn(const std::vector<std::string>& argv, int keep_fd = -1) {
    std::vector<char*> args;
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid != 0) return pid;  // parent (or -1)
    // Child: async-signal-safe calls only.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    const int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
    if (keep_fd >= 0) fcntl(keep_fd, F_SETFD, 0);  // clear FD_CLOEXEC
    execv(args[0], args.data());
    _exit(127);
  }

  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      int status;
      while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
    }
  }

  // Polls for the child's exit for up to `limit`. Returns the raw wait status.
  std::optional<int> WaitForExit(std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (pid_ > 0) {
      int status;
      const pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return status;
      }
      if (r < 0 && errno != EINTR) return std::nullopt;
      if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(10ms);
    }
    return std::nullopt;
  }

  // True if the child is still running (not yet exited).
  bool Running() {
    if (pid_ <= 0) return false;
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    return true;
  }

 private:
  pid_t pid_;
};

class QmpClientRealTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto qemu = FindInPath(kQemu);
    if (!qemu) GTEST_SKIP() << kQemu << " is not installed";
    qemu_ = *qemu;
    char dir_template[] = "/tmp/qmp_real_test.XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr) << strerror(errno);
    dir_ = dir_template;
    socket_path_ = dir_ + "/qmp.sock";
  }
  void TearDown() override {
    if (dir_.empty()) return;
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  std::vector<std::string> QemuArgs(const std::string& chardev) {
    return {qemu_,  "-machine", "none",  "-nodefaults", "-display",
            "none", "-chardev", chardev, "-mon",        "chardev=qmp,mode=control"};
  }

  // Runs io until pred() holds or `limit` passes.
  bool RunUntil(const std::function<bool()>& pred, std::chrono::milliseconds limit = 20s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return false;
      io_.restart();
      if (io_.run_one_for(deadline - now) == 0 && io_.stopped()) return pred();
    }
    return true;
  }

  // Executes and waits for the reply.
  StatusOr<json> Call(QmpClient& client, const std::string& command, json args = nullptr) {
    std::optional<StatusOr<json>> result;
    client.Execute(command, std::move(args),
                   [&result](StatusOr<json> reply) { result.emplace(std::move(reply)); });
    if (!RunUntil([&] { return result.has_value(); })) {
      ADD_FAILURE() << "no result for " << command;
      return Internal("no result");
    }
    return std::move(*result);
  }

  asio::io_context io_;
  std::string qemu_;
  std::string dir_;
  std::string socket_path_;
};

// Blackbox's production setup: Blackbox listens, QEMU connects (server=off).
TEST_F(QmpClientRealTest, HandshakeCommandsErrorsAndQuit) {
  stream_protocol::acceptor acceptor(io_, stream_protocol::endpoint(socket_path_));
  ChildProcess qemu(
      ChildProcess::Spawn(QemuArgs("socket,id=qmp,path=" + socket_path_ + ",server=off")));

  std::optional<boost::system::error_code> accept_result;
  stream_protocol::socket socket(io_);
  acceptor.async_accept(socket, [&](const boost::system::error_code& ec) { accept_result = ec; });
  ASSERT_TRUE(RunUntil([&] { return accept_result.has_value() || !qemu.Running(); }, 30s));
  ASSERT_TRUE(accept_result.has_value()) << "QEMU exited or never connected";
  ASSERT_FALSE(*accept_result) << accept_result->message();

  auto client = QmpClient::Create(io_);
  std::vector<json> events;
  int disconnects = 0;
  Status disconnect_status;
  client->SetEventHandler([&](const json& event) { events.push_back(event); });
  client->SetDisconnectHandler([&](Status status) {
    ++disconnects;
    disconnect_status = status;
  });
  std::optional<Status> ready;
  client->Start(std::move(socket), [&](Status status) { ready = status; });
  ASSERT_TRUE(RunUntil([&] { return ready.has_value(); }));
  ASSERT_TRUE(ready->ok()) << ready->ToString();

  auto version = Call(*client, "query-version");
  ASSERT_TRUE(version.ok()) << version.status().ToString();
  EXPECT_EQ(version->at("qemu").at("major"), 7) << version->dump();

  auto status = Call(*client, "query-status");
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  ASSERT_TRUE(status->contains("status")) << status->dump();
  EXPECT_TRUE(status->at("status").is_string());
  EXPECT_TRUE(status->at("running").is_boolean());

  auto unknown = Call(*client, "no-such-command", json{{"x", 1}});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("CommandNotFound"), std::string::npos)
      << unknown.status().ToString();
  EXPECT_EQ(unknown.status().code(), StatusCode::kInvalidArgument);

  auto bad_args = Call(*client, "query-status", json{{"bogus", true}});
  ASSERT_FALSE(bad_args.ok());
  EXPECT_NE(bad_args.status().message().find("GenericError"), std::string::npos)
      << bad_args.status().ToString();

  // The largest reply QEMU sends (about 200 KiB): spans many reads, under the cap.
  auto schema = Call(*client, "query-qmp-schema");
  ASSERT_TRUE(schema.ok()) << schema.status().ToString();
  EXPECT_TRUE(schema->is_array());
  EXPECT_GT(schema->size(), 100u);

  // Two calls in flight at once.
  std::optional<StatusOr<json>> a, b;
  client->Execute("query-name", nullptr, [&](StatusOr<json> r) { a.emplace(std::move(r)); });
  client->Execute("query-kvm", nullptr, [&](StatusOr<json> r) { b.emplace(std::move(r)); });
  ASSERT_TRUE(RunUntil([&] { return a.has_value() && b.has_value(); }));
  ASSERT_TRUE(a->ok()) << a->status().ToString();
  ASSERT_TRUE(b->ok()) << b->status().ToString();
  EXPECT_TRUE(b->value().contains("enabled")) << b->value().dump();

  // quit: QEMU replies (after a SHUTDOWN event) and closes the connection.
  // The reply may in principle lose the race with the close, so Unavailable
  // is tolerated for the call itself; the disconnect must be observed.
  auto quit = Call(*client, "quit");
  EXPECT_TRUE(quit.ok() || quit.status().code() == StatusCode::kUnavailable)
      << quit.status().ToString();
  ASSERT_TRUE(RunUntil([&] { return disconnects > 0; }));
  EXPECT_EQ(disconnect_status.code(), StatusCode::kUnavailable) << disconnect_status.ToString();
  EXPECT_FALSE(client->IsReady());
  bool saw_shutdown = false;
  for (const json& event : events) saw_shutdown |= event.value("event", "") == "SHUTDOWN";
  EXPECT_TRUE(saw_shutdown) << json(events).dump();

  auto after = Call(*client, "query-status");
  EXPECT_EQ(after.status().code(), StatusCode::kFailedPrecondition);

  auto exit_status = qemu.WaitForExit(20s);
  ASSERT_TRUE(exit_status.has_value()) << "QEMU did not exit after quit";
  EXPECT_TRUE(WIFEXITED(*exit_status) && WEXITSTATUS(*exit_status) == 0) << *exit_status;
  EXPECT_EQ(disconnects, 1);
}

// A QEMU that listens (server=on), for QmpSyncClient. The test creates the
// listening socket and hands it to QEMU (chardev fd=), so the socket exists
// before QEMU runs and the connect needs no polling. wait=on makes QEMU accept
// that connection before it sets up the monitor: with wait=off, QEMU 7.2
// accepts it concurrently with monitor set-up and, about once in a few
// hundred start-ups, sends an event before the greeting or no greeting.
TEST_F(QmpClientRealTest, SyncClientAgainstListeningQemu) {
  const int listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listen_fd, 0) << strerror(errno);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(socket_path_.size(), sizeof(addr.sun_path));
  std::memcpy(addr.sun_path, socket_path_.c_str(), socket_path_.size() + 1);
  ASSERT_EQ(bind(listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0)
      << strerror(errno);
  ASSERT_EQ(listen(listen_fd, 4), 0) << strerror(errno);
  ChildProcess qemu(ChildProcess::Spawn(
      QemuArgs("socket,id=qmp,fd=" + std::to_string(listen_fd) + ",server=on,wait=on"), listen_fd));
  close(listen_fd);

  auto client = QmpSyncClient::Connect(socket_path_, 30s);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto version = client->Execute("query-version");
  ASSERT_TRUE(version.ok()) << version.status().ToString();
  EXPECT_EQ(version->at("qemu").at("major"), 7);
  auto status = client->Execute("query-status");
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_TRUE(status->at("running").is_boolean());
  auto unknown = client->Execute("no-such-command");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("CommandNotFound"), std::string::npos);
  auto quit = client->Execute("quit");
  EXPECT_TRUE(quit.ok() || quit.status().code() == StatusCode::kUnavailable)
      << quit.status().ToString();
  auto exit_status = qemu.WaitForExit(20s);
  ASSERT_TRUE(exit_status.has_value()) << "QEMU did not exit after quit";
  EXPECT_TRUE(WIFEXITED(*exit_status) && WEXITSTATUS(*exit_status) == 0) << *exit_status;
}

}  // namespace
}  // namespace blackbox
