// End-to-end tests of the appliance daemon: the real `blackbox daemon`, its
// control socket, `blackbox vm ...` and real guests, each VM started and
// stopped on its own; a daemon killed with SIGKILL and started again; bad
// requests; the socket's permissions; the systemd unit.
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "tests/e2e/e2e_util.h"

namespace blackbox::e2e {
namespace {

using json = nlohmann::json;
using std::chrono::seconds;

// One raw exchange on a unix socket: the bytes sent, the whole answer.
std::string Exchange(const std::string& socket_path, const std::string& request) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", socket_path.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return "connect: " + std::string(std::strerror(errno));
  }
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the daemon may answer (413) and close before reading it all
    sent += static_cast<size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  std::string answer;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;)
    answer.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return answer;
}

int HttpStatus(const std::string& answer) {
  std::smatch m;
  static const std::regex re("^HTTP/1\\.1 (\\d{3}) ");
  return std::regex_search(answer, m, re) ? std::stoi(m[1]) : -1;
}

std::string Post(const std::string& target, const std::string& body) {
  return "POST " + target + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

class DaemonTest : public E2eTest {
 protected:
  void TearDown() override {
    if (daemon_ && daemon_->running()) {
      daemon_->Signal(SIGTERM);
      if (!daemon_->WaitExited(std::chrono::seconds(60))) daemon_->Kill();
      daemon_->Wait().IgnoreError();
    }
  }

  std::string Socket() const { return data() + "/run/daemon.sock"; }

  // Starts the daemon and waits until it serves its socket.
  void StartDaemon(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"daemon"};
    args.insert(args.end(), extra.begin(), extra.end());
    log_ = data() + "/daemon-" + std::to_string(++starts_) + ".log";
    daemon_.emplace(StartBlackbox(args, log_));
    ASSERT_TRUE(WaitForText(log_, "serving", seconds(30))) << ReadFileOrEmpty(log_);
  }

  // Stops the daemon with SIGTERM (as systemd does); returns its exit code.
  int StopDaemon() {
    daemon_->Signal(SIGTERM);
    auto status = daemon_->Wait(std::chrono::seconds(120));
    EXPECT_TRUE(status.ok()) << "the daemon did not stop: " << ReadFileOrEmpty(log_);
    return status.ok() && WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
  }

  std::string WriteSpec(const std::string& name, const std::string& text) {
    std::string path = data() + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

  // The VM as `vm list --json` shows it (null if absent).
  json Vm(const std::string& name) {
    CommandResult r = Blackbox({"vm", "list", "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    if (r.exit_code != 0) return nullptr;
    const json list = json::parse(r.output);
    for (const auto& vm : list["vms"]) {
      if (vm["name"] == name) return vm;
    }
    return nullptr;
  }

  // Polls `vm list` until `pred` holds for the VM or `timeout` passes.
  bool WaitVm(const std::string& name, const std::function<bool(const json&)>& pred,
              seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      json vm = Vm(name);
      if (!vm.is_null() && pred(vm)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    return false;
  }

  std::string StartVm(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"vm", "start"};
    argv.insert(argv.end(), args.begin(), args.end());
    CommandResult r = Blackbox(argv);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::smatch m;
    static const std::regex re(": recording (\\S+)");
    return std::regex_search(r.output, m, re) ? m[1].str() : "";
  }

  // Recordings by id, from `ls --json`.
  std::map<std::string, json> Recordings() {
    CommandResult ls = Blackbox({"ls", "--json"});
    EXPECT_EQ(ls.exit_code, 0) << ls.output;
    std::map<std::string, json> out;
    std::istringstream in(ls.output);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty() && line[0] == '{') {
        json j = json::parse(line);
        out[j["id"]] = j;
      }
    }
    return out;
  }

  void ExpectVerifies(const std::string& id) {
    CommandResult v = Blackbox({"verify", id}, seconds(300));
    EXPECT_EQ(v.exit_code, 0) << id << ": " << v.output;
    EXPECT_NE(v.output.find(": OK"), std::string::npos) << v.output;
  }

  static std::string NetVm(const std::string& name, const std::string& role, int n,
                           const std::string& extra) {
    const std::string ip = "10.0.0." + std::to_string(n);
    return "name: " + name +
           "\nkernel: ${BLACKBOX_GUEST_DIR}/vmlinuz\ninitrd: ${BLACKBOX_GUEST_DIR}/initrd.img\n"
           "append: console=ttyS0 quiet panic=-1 bb.role=" +
           role + " bb.ip=" + ip + "/24 " + extra +
           "\nmemory: 256M\nnics:\n  - {name: n0, mac: \"52:54:00:00:00:0" + std::to_string(n) +
           "\", segment: lan, ips: [" + ip + "]}\n";
  }

  std::optional<ChildProcess> daemon_;
  std::string log_;
  int starts_ = 0;
};

// Three VMs started at different times under one daemon: a web server, an
// idle VM stopped early, and a client whose manifest raises an alert when it
// probes a port it may not use. Reading commands work meanwhile; every
// recording verifies byte-exact.
TEST_F(DaemonTest, ThreeVmsStartedAtDifferentTimesEachStopOnTheirOwnAndVerify) {
  StartDaemon();
  const std::string web = StartVm({WriteSpec("web.yaml", NetVm("web", "http-server", 1, ""))});
  ASSERT_FALSE(web.empty());
  const std::string idle = StartVm({Example("idle.yaml")});
  ASSERT_FALSE(idle.empty());
  ASSERT_TRUE(WaitVm(
      "web", [](const json& vm) { return vm["console_bytes"] > 20; }, seconds(60)));

  // The client joins the running web server on the switch, under its manifest.
  const std::string client =
      StartVm({WriteSpec("client.yaml", NetVm("client", "prober", 2,
                                              "bb.peer=10.0.0.1 bb.port=2222 bb.poweroff=1")),
               "--manifest", "client=" + Example("manifests/client.yaml")});
  ASSERT_FALSE(client.empty());
  EXPECT_EQ(Vm("client")["manifest"], true);

  // Reading commands beside the daemon, while all three run.
  EXPECT_EQ(Blackbox({"ls"}).exit_code, 0);
  EXPECT_EQ(Blackbox({"alerts"}).exit_code, 0);
  EXPECT_EQ(Blackbox({"flows", "web"}).exit_code, 0);
  EXPECT_EQ(Blackbox({"show", idle}).exit_code, 0);

  // The idle VM is stopped early; the others are not disturbed.
  CommandResult stop = Blackbox({"vm", "stop", "idle"}, seconds(150));
  ASSERT_EQ(stop.exit_code, 0) << stop.output;
  EXPECT_NE(stop.output.find("complete"), std::string::npos) << stop.output;
  EXPECT_EQ(Vm("web")["state"], "running");

  // The client probes, is alerted on, and powers itself off.
  ASSERT_TRUE(WaitVm(
      "client", [](const json& vm) { return vm["state"] != "running"; }, seconds(150)))
      << ReadFileOrEmpty(log_);
  json c = Vm("client");
  EXPECT_EQ(c["state"], "complete") << c.dump();
  EXPECT_GE(c["alerts"].get<int>(), 1) << c.dump();
  const std::string console = Console(client);
  EXPECT_NE(console.find("BB-PROBE-HTTP-OK"), std::string::npos) << console;
  EXPECT_NE(console.find("BB-PROBE-PORT-NO-ANSWER 2222"), std::string::npos) << console;
  CommandResult alerts = Blackbox({"alerts", "--json", "--vm", "client"});
  ASSERT_EQ(alerts.exit_code, 0) << alerts.output;
  EXPECT_NE(alerts.output.find("2222"), std::string::npos) << alerts.output;
  EXPECT_NE(alerts.output.find(client), std::string::npos) << alerts.output;

  // The console of a running VM, from the daemon's store.
  CommandResult wc = Blackbox({"vm", "console", "web"});
  EXPECT_EQ(wc.exit_code, 0) << wc.output;
  EXPECT_NE(wc.output.find("BB-READY"), std::string::npos) << wc.output;

  EXPECT_EQ(StopDaemon(), 0) << ReadFileOrEmpty(log_);
  auto recs = Recordings();
  for (const std::string& id : {web, idle, client}) {
    ASSERT_TRUE(recs.count(id)) << id;
    EXPECT_EQ(recs[id]["state"], "complete") << recs[id].dump();
  }
  // The client's flow to the server was captured on the host's switch.
  CommandResult flows = Blackbox({"flows", client});
  EXPECT_EQ(flows.exit_code, 0) << flows.output;
  EXPECT_NE(flows.output.find("10.0.0.1"), std::string::npos) << flows.output;
  for (const std::string& id : {web, idle, client}) ExpectVerifies(id);
}

// A lab's VMs start together; with stop_when: first-exit the daemon stops
// the server once the client has powered off, as `blackbox record` does.
TEST_F(DaemonTest, ALabStartsTogetherAndStopsAtItsFirstExit) {
  StartDaemon();
  CommandResult start = Blackbox({"vm", "start", Example("lab-web.yaml")});
  ASSERT_EQ(start.exit_code, 0) << start.output;
  EXPECT_NE(start.output.find("web: recording web-"), std::string::npos) << start.output;
  EXPECT_NE(start.output.find("client: recording client-"), std::string::npos) << start.output;
  EXPECT_EQ(Vm("web")["lab"], "web");

  // The console as the client writes it, until it powers off.
  CommandResult follow = Blackbox({"vm", "console", "client", "--follow"}, seconds(200));
  EXPECT_EQ(follow.exit_code, 0) << follow.output;
  EXPECT_NE(follow.output.find("BB-HTTP-GOT blackbox http-server"), std::string::npos)
      << follow.output;
  CommandResult client = Blackbox({"vm", "wait", "client", "--timeout", "60s"});
  EXPECT_EQ(client.exit_code, 0) << client.output;
  CommandResult web = Blackbox({"vm", "wait", "web", "--timeout", "60s"});
  EXPECT_EQ(web.exit_code, 0) << web.output;
  EXPECT_NE(web.output.find("stopped by Blackbox"), std::string::npos) << web.output;
  EXPECT_EQ(StopDaemon(), 0);
}

// kill -9 of the daemon takes its QEMUs with it; the next daemon cleans up,
// marks what was interrupted (each still verifies for its stored prefix) and
// starts the VM marked --autostart again as a new recording.
TEST_F(DaemonTest, AfterKillDashNineTheRestartCleansUpAndStartsTheMarkedVmAgain) {
  StartDaemon({"--chunk-age", "1s"});
  const std::string idle = StartVm({Example("idle.yaml"), "--autostart"});
  const std::string cpu = StartVm({Example("cpu.yaml")});
  ASSERT_FALSE(idle.empty());
  ASSERT_FALSE(cpu.empty());
  for (const char* name : {"idle", "cpu-demo"}) {
    ASSERT_TRUE(WaitVm(
        name, [](const json& vm) { return vm["log_stored_bytes"] > 0 && vm["console_bytes"] > 0; },
        seconds(60)))
        << name;
  }
  EXPECT_EQ(Vm("idle")["autostart"], true);

  // Who runs QEMU for this data directory (its log path names it).
  auto qemus = [&] {
    auto out = RunCommand({"pgrep", "-f", "rrfile=" + data() + "/recordings/"});
    return out.ok() ? *out : std::string();
  };
  ASSERT_FALSE(qemus().empty());
  daemon_->Signal(SIGKILL);
  ASSERT_TRUE(daemon_->Wait(std::chrono::seconds(10)).ok());
  const auto deadline = std::chrono::steady_clock::now() + seconds(10);
  while (!qemus().empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(qemus().empty()) << "QEMUs outlived their daemon: " << qemus();
  struct stat st {};
  EXPECT_EQ(::stat(Socket().c_str(), &st), 0) << "the killed daemon's socket should be left over";
  CommandResult none = Blackbox({"vm", "list"});
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.output.find("no Blackbox daemon is listening"), std::string::npos) << none.output;

  StartDaemon();
  EXPECT_TRUE(WaitForText(log_, "marked interrupted", seconds(5))) << ReadFileOrEmpty(log_);
  ASSERT_TRUE(WaitVm(
      "idle", [](const json& vm) { return !vm["recording"].get<std::string>().empty(); },
      seconds(60)));
  const std::string again = Vm("idle")["recording"];
  EXPECT_NE(again, idle);
  EXPECT_EQ(Vm("idle")["state"], "running");
  EXPECT_TRUE(Vm("cpu-demo").is_null()) << "cpu-demo was not marked to start with the daemon";
  auto recs = Recordings();
  EXPECT_EQ(recs[idle]["state"], "interrupted") << recs[idle].dump();
  EXPECT_EQ(recs[cpu]["state"], "interrupted") << recs[cpu].dump();
  ExpectVerifies(idle);
  ExpectVerifies(cpu);

  // `vm stop` takes it out of autostart: the next daemon does not start it.
  ASSERT_EQ(Blackbox({"vm", "stop", "idle"}, seconds(150)).exit_code, 0);
  EXPECT_EQ(StopDaemon(), 0);
  EXPECT_EQ(Recordings()[again]["state"], "complete");
  StartDaemon();
  EXPECT_TRUE(Vm("idle").is_null());
}

// Bad requests get one clear error each and disturb nothing; `record` says
// to go through the daemon.
TEST_F(DaemonTest, BadRequestsGetOneClearErrorAndLeaveTheRunningVmAlone) {
  StartDaemon();
  const std::string idle = StartVm({Example("idle.yaml")});
  ASSERT_FALSE(idle.empty());

  struct Case {
    std::string request;
    int status;
    std::string says;
  };
  const std::string big(200 * 1024, 'x');
  const std::vector<Case> cases = {
      {"NONSENSE\r\n\r\n", 400, "malformed"},
      {Post("/v1/vms", "{\"spec\": \"" + big + "\"}"), 413, "too large"},
      {"GET /v1/" + std::string(16 * 1024, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n", 413, "too large"},
      {"GET /v2/everything HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no such endpoint"},
      {"DELETE /v1/vms HTTP/1.1\r\nHost: x\r\n\r\n", 405, "not allowed"},
      {Post("/v1/vms", "{not json"), 400, "not JSON"},
      {Post("/v1/vms", "[1,2]"), 400, "JSON object"},
      {Post("/v1/vms", "{\"spec\": \"/x.yaml\", \"colour\": 1}"), 400, "unknown field 'colour'"},
      {Post("/v1/vms", "{\"spec\": \"relative.yaml\"}"), 400, "absolute path"},
      {Post("/v1/vms", "{\"spec\": \"/nonexistent/vm.yaml\"}"), 400, "/nonexistent/vm.yaml"},
      {Post("/v1/vms", "{\"spec\": \"" + WriteSpec("broken.yaml", "name: [unclosed\n") + "\"}"),
       400, "broken.yaml"},
      {Post("/v1/vms",
            "{\"spec\": \"" +
                WriteSpec("nokernel.yaml",
                          "name: nokernel\nkernel: /nonexistent/vmlinuz\nmemory: 64M\n") +
                "\"}"),
       400, "/nonexistent/vmlinuz"},
      {Post("/v1/vms", "{\"spec\": \"" + Example("idle.yaml") + "\"}"), 409, "already running"},
      {Post("/v1/vms/ghost/stop", ""), 404, "no VM named ghost"},
      {"GET /v1/vms/..%2f..%2fetc HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not a VM name"},
  };
  for (const Case& c : cases) {
    const std::string answer = Exchange(Socket(), c.request);
    EXPECT_EQ(HttpStatus(answer), c.status) << c.request.substr(0, 80) << "\n" << answer;
    EXPECT_NE(answer.find(c.says), std::string::npos) << c.request.substr(0, 80) << "\n" << answer;
    const size_t body = answer.find("\r\n\r\n");
    if (body != std::string::npos) {
      json j = json::parse(answer.substr(body + 4), nullptr, false);
      EXPECT_TRUE(j.is_object() && j.contains("error")) << answer;
    }
  }
  // A client that connects and says nothing is dropped, not waited for.
  int silent = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", Socket().c_str());
  ASSERT_EQ(::connect(silent, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);

  // The CLI's own errors: one line each.
  CommandResult dup = Blackbox({"vm", "start", Example("idle.yaml")});
  EXPECT_EQ(dup.exit_code, 2) << dup.output;
  EXPECT_NE(dup.output.find("VM idle is already running (recording " + idle + ")"),
            std::string::npos)
      << dup.output;
  CommandResult rec = Blackbox({"record", Example("cpu.yaml")});
  EXPECT_NE(rec.exit_code, 0);
  EXPECT_NE(rec.output.find("blackbox vm start"), std::string::npos) << rec.output;
  CommandResult stop_ghost = Blackbox({"vm", "stop", "ghost"});
  EXPECT_EQ(stop_ghost.exit_code, 2) << stop_ghost.output;

  // The VM ran on undisturbed.
  json vm = Vm("idle");
  EXPECT_EQ(vm["state"], "running") << vm.dump();
  EXPECT_EQ(vm["recording"], idle);
  char b;
  EXPECT_EQ(::read(silent, &b, 1), 0) << "the silent client should have been dropped";
  ::close(silent);
  EXPECT_EQ(StopDaemon(), 0);
  ExpectVerifies(idle);
}

// Only the socket's group may control the daemon: another user is refused
// by the kernel, and the CLI names the group to join.
TEST_F(DaemonTest, OnlyTheControlGroupMayUseTheSocket) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as other users";
  group* nogroup = ::getgrnam("nogroup");
  ASSERT_NE(nogroup, nullptr);
  // A socket directory others may enter (the data directory is private).
  const std::string dir = data() + "-sock";
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  const std::string sock = dir + "/control.sock";
  StartDaemon({"--socket", sock, "--group", "nogroup"});
  struct stat st {};
  ASSERT_EQ(::stat(sock.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  EXPECT_EQ(st.st_gid, nogroup->gr_gid);

  // As user nobody: with the group, then without it.
  auto status_as = [&](gid_t gid) {
    pid_t pid = ::fork();
    if (pid == 0) {
      if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(65534) != 0) _exit(99);
      const std::string a = Exchange(sock, "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n");
      _exit(HttpStatus(a) == 200 ? 0 : a.find("Permission denied") != std::string::npos ? 13 : 1);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  EXPECT_EQ(status_as(nogroup->gr_gid), 0);
  EXPECT_EQ(status_as(1), 13);

  auto cli = RunCommand({"setpriv", "--reuid=65534", "--regid=1", "--clear-groups", BlackboxBin(),
                         "--data", data(), "vm", "list", "--socket", sock});
  ASSERT_FALSE(cli.ok());
  EXPECT_NE(cli.status().message().find("permission denied on " + sock), std::string::npos)
      << cli.status().message();
  EXPECT_NE(cli.status().message().find("group nogroup"), std::string::npos)
      << cli.status().message();
  EXPECT_EQ(StopDaemon(), 0);
  ::rmdir(dir.c_str());
}

// The daemon tells systemd (sd_notify on $NOTIFY_SOCKET) it is ready once
// its socket serves, and that it is stopping on SIGTERM.
TEST_F(DaemonTest, ReadinessAndStoppingAreNotifiedToSystemd) {
  const std::string notify = data() + "/notify.sock";
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", notify.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  timeval tv{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  auto next = [&] {
    char buf[512];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("(nothing)");
  };
  ::setenv("NOTIFY_SOCKET", notify.c_str(), 1);
  StartDaemon();
  ::unsetenv("NOTIFY_SOCKET");
  const std::string ready = next();
  EXPECT_NE(ready.find("READY=1"), std::string::npos) << ready;
  // Ready means serving: the socket answers at once.
  EXPECT_EQ(HttpStatus(Exchange(Socket(), "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")), 200);
  daemon_->Signal(SIGTERM);
  const std::string stopping = next();
  EXPECT_NE(stopping.find("STOPPING=1"), std::string::npos) << stopping;
  auto status = daemon_->Wait(std::chrono::seconds(60));
  ASSERT_TRUE(status.ok());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
  ::close(fd);
}

// systemd accepts the unit file that ships with the daemon.
TEST_F(DaemonTest, SystemdAcceptsTheUnitFile) {
  auto unit = ReadFileToString(Example("../daemon/blackbox.service"));
  ASSERT_TRUE(unit.ok()) << unit.status().ToString();
  // Verified as installed: ExecStart's binary must exist, so point it at ours.
  std::string text =
      std::regex_replace(*unit, std::regex("/usr/local/bin/blackbox"), BlackboxBin());
  const std::string path = data() + "/blackbox.service";
  std::ofstream(path) << text;
  auto out = RunCommand({"systemd-analyze", "verify", path});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  // It exits 0 even on lines it ignores; those print a warning.
  EXPECT_EQ(*out, "") << *out;
  EXPECT_NE(text.find("Type=notify"), std::string::npos);
  EXPECT_NE(text.find("KillMode=mixed"), std::string::npos);
}

}  // namespace
}  // namespace blackbox::e2e
