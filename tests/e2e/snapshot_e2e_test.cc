// Snapshots taken while recording: `replay --from` starts near a time, and
// `replay --gdb` gives gdb a replay it can step backwards in.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <regex>

#include "tests/e2e/e2e_util.h"

namespace blackbox::e2e {
namespace {

using std::chrono::seconds;

int FreeTcpPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::vector<std::string> CounterLines(const std::string& text) {
  std::vector<std::string> out;
  std::regex re("BB-COUNTER [0-9]+");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator();
       ++it) {
    out.push_back(it->str());
  }
  return out;
}

class SnapshotTest : public E2eTest {};

TEST_F(SnapshotTest, ReplayFromATimeAndReverseStepInGdb) {
  CommandResult rec =
      Blackbox({"record", "-q", "--for", "40s", "--snapshot-every", "3s", Example("counter.yaml")});
  ASSERT_EQ(rec.exit_code, 0) << rec.output;
  nlohmann::json info = LatestRecording();
  std::string id = info["id"];
  const auto& snaps = info["snapshots"];
  ASSERT_GE(snaps.size(), 3u) << info.dump();
  int64_t previous = 0;
  for (const auto& s : snaps) {
    EXPECT_GT(s["icount"].get<int64_t>(), previous) << "snapshots carry increasing guest icounts";
    previous = s["icount"];
  }

  CommandResult console = Blackbox({"console", id});
  std::vector<std::string> recorded = CounterLines(console.output);
  ASSERT_GE(recorded.size(), 5u) << console.output;

  // --from: the replay starts at a periodic snapshot, not at boot, and runs
  // to the same end as the recording. The guest boots in about 10 s (longer
  // on a busy machine); the second-to-last snapshot, about 35 s in, is well
  // into the counting and a few counter lines before the end.
  const auto& chosen = snaps[snaps.size() - 2];
  double from_s =
      (chosen["wall_ns"].get<int64_t>() - info["started_wall_ns"].get<int64_t>()) / 1e9 + 0.01;
  CommandResult from = Blackbox({"replay", id, "--from", "+" + std::to_string(from_s)});
  EXPECT_EQ(from.exit_code, 0) << from.output;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(from.output, m, std::regex("from snapshot '(bb-[0-9]+)'")))
      << from.output;
  EXPECT_EQ(from.output.find("BB-BOOT"), std::string::npos) << "replay started at boot:\n"
                                                            << from.output;
  std::vector<std::string> replayed = CounterLines(from.output);
  ASSERT_FALSE(replayed.empty()) << from.output;
  EXPECT_LT(replayed.size(), recorded.size());
  // What it replayed is the tail of what was recorded.
  std::vector<std::string> tail(recorded.end() - static_cast<long>(replayed.size()),
                                recorded.end());
  EXPECT_EQ(replayed, tail);

  // --gdb: step forward, step back, land where we were.
  int port = FreeTcpPort();
  std::string out = data() + "/replay-gdb.out";
  ChildProcess replay = StartBlackbox({"replay", id, "-q", "--gdb", std::to_string(port)}, out);
  ASSERT_TRUE(WaitForText(out, "paused", seconds(60))) << *ReadFileToString(out);
  auto gdb = RunCommand({"timeout",
                         "120",
                         "gdb",
                         "-batch",
                         "-nx",
                         "-ex",
                         "set pagination off",
                         "-ex",
                         "target remote 127.0.0.1:" + std::to_string(port),
                         "-ex",
                         "stepi",
                         "-ex",
                         "stepi",
                         "-ex",
                         "printf \"PC1=%lx\\n\", $pc",
                         "-ex",
                         "stepi",
                         "-ex",
                         "printf \"PC2=%lx\\n\", $pc",
                         "-ex",
                         "reverse-stepi",
                         "-ex",
                         "printf \"PC3=%lx\\n\", $pc"},
                        std::chrono::minutes(3));
  replay.Signal(SIGTERM);
  replay.Wait(std::chrono::milliseconds(30000)).IgnoreError();
  replay.Kill();
  ASSERT_TRUE(gdb.ok()) << gdb.status().ToString();
  std::smatch p1, p2, p3;
  ASSERT_TRUE(std::regex_search(*gdb, p1, std::regex("PC1=([0-9a-f]+)"))) << *gdb;
  ASSERT_TRUE(std::regex_search(*gdb, p2, std::regex("PC2=([0-9a-f]+)"))) << *gdb;
  ASSERT_TRUE(std::regex_search(*gdb, p3, std::regex("PC3=([0-9a-f]+)"))) << *gdb;
  EXPECT_NE(p1[1], p2[1]) << *gdb;
  EXPECT_EQ(p3[1], p1[1]) << "reverse-stepi did not return to the previous instruction\n" << *gdb;
}

}  // namespace
}  // namespace blackbox::e2e
