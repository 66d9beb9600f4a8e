// End-to-end tests of Blackbox's QEMU patch series (qemu-patches/): the
// patched qemu-system-x86_64 and Debian's stock one run the test guest
// directly, with no Blackbox service in between.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/files.h"
#include "common/net.h"
#include "common/process.h"
#include "failover/log_relay.h"
#include "recorder/qmp_client.h"
#include "tests/e2e/e2e_util.h"

namespace blackbox::e2e {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

// The rr log header: version 0xe0200c, then a zero qword.
const std::string kLogHeader("\x00\xe0\x20\x0c\x00\x00\x00\x00\x00\x00\x00\x00", 12);

// An e1000 NIC on a UDP socket netdev, behind filter-replay: the NIC
// Blackbox gives recorded VMs (docs/vm-spec.md). QEMU 7.2's virtio-net is
// not deterministic under rr: it transmits from a bottom half that rr does
// not order and completes a transmit when the backend can take it, so a
// follower replaying a virtio-net guest diverges within seconds (it waits
// forever for an interrupt the log has and its devices never raise).
std::vector<std::string> Nic(int local_port, int peer_port, const std::string& mac) {
  return {"-netdev",
          "socket,id=n0,udp=127.0.0.1:" + std::to_string(peer_port) +
              ",localaddr=127.0.0.1:" + std::to_string(local_port),
          "-device",
          "e1000,mitigation=off,romfile=,netdev=n0,mac=" + mac,
          "-object",
          "filter-replay,id=fr0,netdev=n0"};
}

// A QMP monitor for a replaying QEMU. It is made with -chardev and -mon:
// a character device made by -qmp or -serial (qemu_chr_new) takes part in
// record/replay, so the monitor's traffic would consume the recorded
// character events and the replay would diverge.
std::vector<std::string> QmpArgs(const std::string& socket_path) {
  return {"-chardev", "socket,id=qmp0,path=" + socket_path + ",server=on,wait=off", "-mon",
          "chardev=qmp0,mode=control"};
}

// The n of every "BB-COUNTER n" line, in console order.
std::vector<int> Counters(const std::string& console) {
  std::vector<int> out;
  const std::string marker = "BB-COUNTER ";
  for (size_t at = console.find(marker); at != std::string::npos;
       at = console.find(marker, at + 1)) {
    if (at > 0 && console[at - 1] != '\n') continue;
    size_t end = console.find('\n', at);
    if (end == std::string::npos) break;  // a line still being written
    out.push_back(std::stoi(console.substr(at + marker.size(), end - at - marker.size())));
  }
  return out;
}

// Connects to a QEMU's QMP socket, retrying while QEMU starts.
// With out_of_band, exec-oob is negotiated (QmpSyncClient::ExecuteOutOfBand).
std::optional<QmpSyncClient> ConnectQmp(const std::string& path, seconds timeout,
                                        bool out_of_band = false) {
  const auto deadline = Clock::now() + timeout;
  QmpClientOptions options;
  options.out_of_band = out_of_band;
  while (Clock::now() < deadline) {
    if (PathExists(path)) {
      auto client = QmpSyncClient::Connect(path, seconds(10), options);
      if (client.ok()) return std::move(client).value();
    }
    std::this_thread::sleep_for(milliseconds(50));
  }
  return std::nullopt;
}

// Polls __org.blackbox_query-replay-follow until the replay went live.
StatusOr<nlohmann::json> WaitForLive(QmpSyncClient& qmp, seconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    auto info = qmp.Execute("__org.blackbox_query-replay-follow");
    if (!info.ok()) return info.status();
    if ((*info)["live"].get<bool>()) return info;
    if (Clock::now() > deadline) {
      return DeadlineExceeded("replay not live: " + info->dump());
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
}

// Polls __org.blackbox_query-replay-follow until the replay stopped at the
// end of its log (and did not go live).
StatusOr<nlohmann::json> WaitForStopped(QmpSyncClient& qmp, seconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    auto info = qmp.Execute("__org.blackbox_query-replay-follow");
    if (!info.ok()) return info.status();
    if (info->value("stopped", false) || info->value("live", false)) return info;
    if (Clock::now() > deadline) {
      return DeadlineExceeded("replay neither stopped nor live: " + info->dump());
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
}

// Size of the rr log event at p (QEMU 7.2's format, replay/replay-internal.h),
// 0 if it is not complete in `avail` bytes. The test reads the format on its
// own, so that a cut can be placed inside an event.
size_t LogEventSize(const uint8_t* p, size_t avail) {
  enum : unsigned {
    kInstruction = 0,
    kAsync = 3,
    kShutdown = 10,
    kCharWrite = 22,
    kCharReadAll = 23,
    kCharReadAllError = 24,
    kAudioOut = 25,
    kAudioIn = 26,
    kRandom = 27,
    kClock = 28,
    kCheckpoint = 30,
    kEnd = 39,
  };
  auto u32 = [p](size_t off) {
    return uint32_t{p[off]} << 24 | uint32_t{p[off + 1]} << 16 | uint32_t{p[off + 2]} << 8 |
           p[off + 3];
  };
  auto need = [avail](size_t n) { return avail >= n ? n : 0; };
  if (avail == 0) return 0;
  const unsigned kind = p[0];
  if (kind == kInstruction) return need(5);
  if (kind < kAsync) return 1;
  if (kind < kShutdown) {
    switch (kind - kAsync) {
      case 0:
      case 1:
      case 5:
        return need(9);  // BH, BH oneshot, block: id
      case 3:
        return 1;  // input sync
      case 4:
        return avail >= 6 ? need(6 + u32(2)) : 0;  // char read
      case 6:
        return avail >= 10 ? need(10 + u32(6)) : 0;  // net
      default:
        return 0;  // input: not used by the test guest
    }
  }
  if (kind < kCharWrite) return 1;  // shutdown causes
  switch (kind) {
    case kCharWrite:
      return need(9);
    case kCharReadAll:
      return avail >= 5 ? need(5 + u32(1)) : 0;
    case kCharReadAllError:
      return need(5);
    case kAudioOut:
      return need(9);
    case kRandom:
      return avail >= 9 ? need(9 + u32(5)) : 0;
    default:
      break;
  }
  if (kind >= kClock && kind < kCheckpoint) return need(9);
  if (kind >= kCheckpoint && kind <= kEnd) return 1;
  return 0;
}

// Opens a FIFO for writing once `reader` has opened it for reading. A plain
// open(O_WRONLY) would wait for ever if the reader (a QEMU) died at start-up
// (a bad option, say): poll with O_NONBLOCK while the reader runs.
UniqueFd OpenFifoForWriting(const std::string& path, ChildProcess& reader, seconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline && !reader.Poll()) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
      return UniqueFd(fd);
    }
    if (errno != ENXIO) break;  // ENXIO: no reader yet
    std::this_thread::sleep_for(milliseconds(10));
  }
  return UniqueFd();
}

class QemuPatchesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    patched_ = PatchedQemu();
    ASSERT_TRUE(PathExists(patched_)) << "no patched QEMU at " << patched_
                                      << ": run qemu-patches/build.sh (scripts/setup.sh does)";
    auto dir = TempDir::Create("bb-qemu-patches-test");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    dir_.emplace(std::move(dir).value());
  }

  std::string Path(const std::string& name) const { return dir_->path() + "/" + name; }

  // A QEMU command line for the test guest with `role_args`, under
  // -icount `icount` (shift=auto is added), its serial console written to
  // `serial`. Record and replay lines differ only in their icount options.
  std::vector<std::string> GuestArgs(const std::string& qemu, const std::string& icount,
                                     const std::string& serial,
                                     const std::string& role_args) const {
    const std::string guest = GuestDir();
    return {qemu,
            "-machine",
            "pc",
            "-accel",
            "tcg",
            "-icount",
            "shift=auto," + icount,
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-m",
            "256",
            "-kernel",
            guest + "/vmlinuz",
            "-initrd",
            guest + "/initrd.img",
            "-append",
            "console=ttyS0 quiet panic=-1 bb.poweroff=1 " + role_args,
            "-chardev",
            "file,id=serial0,path=" + serial,
            "-serial",
            "chardev:serial0"};
  }

  // Runs a QEMU to completion (the guest powers off); returns its console.
  std::string RunToEnd(const std::vector<std::string>& argv, const std::string& name,
                       seconds timeout) {
    const std::string out = Path(name + ".out");
    auto child = ChildProcess::Spawn(argv, out);
    EXPECT_TRUE(child.ok()) << child.status().ToString();
    if (!child.ok()) return "";
    auto status = child->Wait(timeout);
    EXPECT_TRUE(status.ok()) << name << ": " << status.status().ToString() << "\n"
                             << TailOfFile(out, 10);
    if (status.ok()) {
      EXPECT_EQ(*status, 0) << name << " " << ChildProcess::DescribeWaitStatus(*status) << "\n"
                            << TailOfFile(out, 10);
    }
    return ReadFileOrEmpty(Path(name + ".serial"));
  }

  // Records the counter guest into counter.rr until it printed `counter`
  // lines, kills it, and returns the log (empty on failure, with a test
  // failure).
  std::string RecordCounterLog(int counter) {
    const std::string log_path = Path("counter.rr");
    auto recorder = ChildProcess::Spawn(GuestArgs(patched_, "rr=record,rrfile=" + log_path,
                                                  Path("record.serial"), "bb.role=counter"),
                                        Path("record.out"));
    EXPECT_TRUE(recorder.ok());
    if (!recorder.ok()) return "";
    EXPECT_TRUE(
        WaitForText(Path("record.serial"), "BB-COUNTER " + std::to_string(counter), seconds(240)))
        << TailOfFile(Path("record.out"));
    recorder->Signal(SIGKILL);
    EXPECT_TRUE(recorder->Wait(seconds(30)).ok());
    auto log = ReadFileToString(log_path, size_t{512} << 20);
    EXPECT_TRUE(log.ok());
    return log.ok() ? *log : "";
  }

  // Starts a counter-guest follower (QMP on qmp.sock) of follow.fifo with
  // `follow_options` after rr=replay,rrfile=..., writes `log` into the FIFO
  // and closes it (the end of the stream). Fails the test if the follower
  // does not start or take the bytes.
  std::optional<ChildProcess> FollowBytes(const std::string& follow_options, std::string_view log) {
    const std::string fifo = Path("follow.fifo");
    EXPECT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    std::vector<std::string> args =
        GuestArgs(patched_, "rr=replay,rrfile=" + fifo + "," + follow_options,
                  Path("follow.serial"), "bb.role=counter");
    for (auto& a : QmpArgs(Path("qmp.sock"))) args.push_back(a);
    auto follower = ChildProcess::Spawn(args, Path("follow.out"));
    EXPECT_TRUE(follower.ok()) << follower.status().ToString();
    if (!follower.ok()) return std::nullopt;
    UniqueFd out = OpenFifoForWriting(fifo, *follower, seconds(60));
    EXPECT_TRUE(out.valid()) << "the follower did not open its log\n"
                             << TailOfFile(Path("follow.out"));
    if (!out.valid()) return std::nullopt;
    const Status written = WriteAll(out.get(), log, "follow");
    EXPECT_TRUE(written.ok()) << written.ToString();
    if (!written.ok()) return std::nullopt;
    return std::move(follower).value();
  }

  void GoLiveOnce(int run);

  std::string patched_;
  std::optional<TempDir> dir_;
};

// (d) Stock behaviour is unchanged: recorded into a regular file without any
// new option, the patched QEMU's log starts with the usual header and replays
// byte-exact on the patched QEMU.
TEST_F(QemuPatchesTest, PatchedRecordToAFileReplaysByteExact) {
  const std::string role = "bb.role=cpu bb.rounds=3";
  const std::string log = Path("cpu.rr");
  const std::string recorded =
      RunToEnd(GuestArgs(patched_, "rr=record,rrfile=" + log, Path("record.serial"), role),
               "record", seconds(180));
  ASSERT_NE(recorded.find("BB-CPU-RESULT"), std::string::npos) << recorded;
  auto bytes = ReadFileToString(log, size_t{256} << 20);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(bytes->substr(0, 12), kLogHeader);

  const std::string replayed =
      RunToEnd(GuestArgs(patched_, "rr=replay,rrfile=" + log, Path("replay.serial"), role),
               "replay", seconds(300));
  EXPECT_EQ(replayed, recorded);
}

// 0008: the flags cmpxchg16b and cmpxchg8b leave are the guest's, not an
// operand of an earlier instruction. QEMU 7.2's helpers read a stale cc_op
// and turned a pointer into EFLAGS; Linux guests interrupted in the SLUB
// allocator's fast path corrupted their heap and oopsed (one boot in about
// sixty under record). The guest's check prints BB-CX-FLAGS-BAD with
// Debian's QEMU 7.2.
TEST_F(QemuPatchesTest, CmpxchgLeavesTheGuestsOwnFlags) {
  const std::string console =
      RunToEnd(GuestArgs(patched_, "rr=record,rrfile=" + Path("cx.rr"), Path("cx.serial"),
                         "bb.role=cx-flags"),
               "cx", seconds(120));
  EXPECT_NE(console.find("BB-CX-FLAGS-OK"), std::string::npos) << console;
  EXPECT_EQ(console.find("BB-CX-FLAGS-BAD"), std::string::npos) << console;
}

// (a) A guest recorded into a pipe is replayed by a second QEMU that follows
// another pipe (__org.blackbox_follow=on) while the recording is still being
// written; the test copies the stream across and keeps a copy. The replayed
// console equals the recorded one byte for byte.
TEST_F(QemuPatchesTest, ReplayFollowsARecordingThroughAPipe) {
  const std::string role = "bb.role=cpu bb.rounds=3";
  const std::string rec_fifo = Path("record.fifo"), follow_fifo = Path("follow.fifo");
  ASSERT_EQ(::mkfifo(rec_fifo.c_str(), 0600), 0);
  ASSERT_EQ(::mkfifo(follow_fifo.c_str(), 0600), 0);

  auto follower = ChildProcess::Spawn(
      GuestArgs(patched_, "rr=replay,rrfile=" + follow_fifo + ",__org.blackbox_follow=on",
                Path("follow.serial"), role),
      Path("follow.out"));
  ASSERT_TRUE(follower.ok()) << follower.status().ToString();
  auto recorder = ChildProcess::Spawn(
      GuestArgs(patched_, "rr=record,rrfile=" + rec_fifo, Path("record.serial"), role),
      Path("record.out"));
  ASSERT_TRUE(recorder.ok()) << recorder.status().ToString();

  // The link between primary and follower, keeping a copy of the log.
  LogRelay pipe(rec_fifo, follow_fifo, {.keep_copy = true});

  auto rec_status = recorder->Wait(std::chrono::minutes(5));
  // The follower is replaying while the recorder runs: the pipe holds only
  // 64 KiB of a log of megabytes, so the recorder cannot finish unless the
  // follower has consumed nearly all of it already.
  auto fol_status = follower->Wait(std::chrono::minutes(5));
  pipe.Join();
  ASSERT_TRUE(rec_status.ok()) << rec_status.status().ToString() << TailOfFile(Path("record.out"));
  ASSERT_TRUE(fol_status.ok()) << fol_status.status().ToString() << TailOfFile(Path("follow.out"));
  EXPECT_EQ(*rec_status, 0) << TailOfFile(Path("record.out"));
  EXPECT_EQ(*fol_status, 0) << TailOfFile(Path("follow.out"));
  ASSERT_TRUE(pipe.ok());
  EXPECT_GT(pipe.copy().size(), size_t{1} << 20);
  EXPECT_EQ(pipe.copy().substr(0, 12), kLogHeader);

  const std::string recorded = ReadFileOrEmpty(Path("record.serial"));
  ASSERT_NE(recorded.find("BB-CPU-RESULT"), std::string::npos) << recorded;
  EXPECT_EQ(ReadFileOrEmpty(Path("follow.serial")), recorded);
}

// How a lag governor holds a primary back (failover/lag_governor.h): QMP
// `stop` stops the primary's vCPU while its main loop goes on writing and
// flushing the log, so its follower catches up with everything the primary
// executed before the hold (the same instruction count), answering QMP
// meanwhile. Held and continued again and again, the recording is still
// followed byte-exact.
TEST_F(QemuPatchesTest, FollowerCatchesUpWithAPrimaryHeldOverQmp) {
  const std::string role = "bb.role=cpu bb.rounds=3";
  const std::string rec_fifo = Path("record.fifo"), follow_fifo = Path("follow.fifo");
  ASSERT_EQ(::mkfifo(rec_fifo.c_str(), 0600), 0);
  ASSERT_EQ(::mkfifo(follow_fifo.c_str(), 0600), 0);
  auto fol_args =
      GuestArgs(patched_, "rr=replay,rrfile=" + follow_fifo + ",__org.blackbox_follow=on",
                Path("follow.serial"), role);
  auto fol_qmp = QmpArgs(Path("follow-qmp.sock"));
  fol_args.insert(fol_args.end(), fol_qmp.begin(), fol_qmp.end());
  auto rec_args = GuestArgs(patched_, "rr=record,rrfile=" + rec_fifo, Path("record.serial"), role);
  auto rec_qmp = QmpArgs(Path("record-qmp.sock"));
  rec_args.insert(rec_args.end(), rec_qmp.begin(), rec_qmp.end());
  auto follower = ChildProcess::Spawn(fol_args, Path("follow.out"));
  ASSERT_TRUE(follower.ok()) << follower.status().ToString();
  auto recorder = ChildProcess::Spawn(rec_args, Path("record.out"));
  ASSERT_TRUE(recorder.ok()) << recorder.status().ToString();
  LogRelay pipe(rec_fifo, follow_fifo);
  auto primary_qmp = ConnectQmp(Path("record-qmp.sock"), seconds(60));
  ASSERT_TRUE(primary_qmp) << TailOfFile(Path("record.out"));
  auto follower_qmp = ConnectQmp(Path("follow-qmp.sock"), seconds(60));
  ASSERT_TRUE(follower_qmp) << TailOfFile(Path("follow.out"));

  auto icount = [](QmpSyncClient& qmp) -> int64_t {
    auto r = qmp.Execute("query-replay", nullptr, seconds(10));
    return r.ok() ? (*r)["icount"].get<int64_t>() : -1;
  };
  int holds = 0;
  std::optional<StatusOr<int>> rec_status;  // set if the primary ended between holds
  while (holds < 5 && !HasFailure()) {
    // Let the primary run a while between holds (the guest boots meanwhile).
    if (auto ended = recorder->Wait(milliseconds(700)); ended.ok()) {
      rec_status = ended;
      break;
    }
    if (!primary_qmp->Execute("stop", nullptr, seconds(10)).ok()) break;  // it powered off
    const int64_t held_at = icount(*primary_qmp);
    ASSERT_GT(held_at, 0);
    const auto deadline = Clock::now() + seconds(30);
    int64_t followed = icount(*follower_qmp);
    while (followed < held_at && Clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(10));
      followed = icount(*follower_qmp);
    }
    EXPECT_EQ(followed, held_at) << "hold " << holds + 1 << ": the follower did not replay all "
                                 << "that the held primary executed";
    ++holds;
    ASSERT_TRUE(primary_qmp->Execute("cont", nullptr, seconds(10)).ok());
  }
  EXPECT_GE(holds, 3) << "the primary ended before it could be held three times";

  if (!rec_status) rec_status = recorder->Wait(std::chrono::minutes(5));
  auto fol_status = follower->Wait(std::chrono::minutes(5));
  pipe.Join();
  ASSERT_TRUE(rec_status->ok()) << rec_status->status().ToString()
                                << TailOfFile(Path("record.out"));
  ASSERT_TRUE(fol_status.ok()) << fol_status.status().ToString() << TailOfFile(Path("follow.out"));
  EXPECT_EQ(**rec_status, 0) << TailOfFile(Path("record.out"));
  EXPECT_EQ(*fol_status, 0) << TailOfFile(Path("follow.out"));
  const std::string recorded = ReadFileOrEmpty(Path("record.serial"));
  ASSERT_NE(recorded.find("BB-CPU-RESULT"), std::string::npos) << recorded;
  EXPECT_EQ(ReadFileOrEmpty(Path("follow.serial")), recorded);
}

// The counter guest's NIC addresses: the primary and the follower are the
// same VM; the client is another guest.
const char kCounterMac[] = "52:54:00:00:20:0f";
const char kClientMac[] = "52:54:00:00:20:10";

// (b) Go-live, 10 times: a counter guest is recorded into a pipe and
// followed by a second QEMU started with __org.blackbox_live_at_end=on (the
// test, like a failover service that has decided so, takes the end of the
// stream for the primary's death); the recording QEMU is killed with
// SIGKILL. The follower replays to the end of what it received and goes live: its
// console continues the counter with no repeat and no gap, what it printed
// before equals the primary's console, and it answers HTTP from another
// guest. QMP answers while the follower follows.
TEST_F(QemuPatchesTest, FollowerGoesLiveWhenThePrimaryIsKilled) {
  for (int run = 1; run <= 10 && !HasFailure(); ++run) {
    SCOPED_TRACE("run " + std::to_string(run));
    GoLiveOnce(run);
  }
}

void QemuPatchesTest::GoLiveOnce(int run) {
  const std::string d = Path("run" + std::to_string(run));
  ASSERT_TRUE(MakeDirs(d).ok());
  const std::string rec_fifo = d + "/record.fifo", follow_fifo = d + "/follow.fifo";
  ASSERT_EQ(::mkfifo(rec_fifo.c_str(), 0600), 0);
  ASSERT_EQ(::mkfifo(follow_fifo.c_str(), 0600), 0);
  const int primary_port = FreeLoopbackUdpPort(), follower_port = FreeLoopbackUdpPort(),
            client_port = FreeLoopbackUdpPort(), nobody_port = FreeLoopbackUdpPort();
  ASSERT_GT(primary_port, 0);
  const std::string role = "bb.role=counter";

  std::vector<std::string> follower_args = GuestArgs(
      patched_,
      "rr=replay,rrfile=" + follow_fifo + ",__org.blackbox_follow=on,__org.blackbox_live_at_end=on",
      d + "/follower.serial", role);
  for (auto& a : Nic(follower_port, client_port, kCounterMac)) follower_args.push_back(a);
  for (auto& a : QmpArgs(d + "/qmp.sock")) follower_args.push_back(a);
  auto follower = ChildProcess::Spawn(follower_args, d + "/follower.out");
  ASSERT_TRUE(follower.ok()) << follower.status().ToString();

  // The primary's NIC sends to a port nobody listens on.
  std::vector<std::string> primary_args =
      GuestArgs(patched_, "rr=record,rrfile=" + rec_fifo, d + "/primary.serial", role);
  for (auto& a : Nic(primary_port, nobody_port, kCounterMac)) primary_args.push_back(a);
  auto primary = ChildProcess::Spawn(primary_args, d + "/primary.out");
  ASSERT_TRUE(primary.ok()) << primary.status().ToString();
  // The link between primary and follower, keeping a copy of the log.
  LogRelay pipe(rec_fifo, follow_fifo, {.keep_copy = true});

  ASSERT_TRUE(WaitForText(d + "/primary.serial", "BB-COUNTER 4", seconds(240)))
      << TailOfFile(d + "/primary.serial") << TailOfFile(d + "/primary.out");

  // QMP answers while the follower follows.
  auto qmp = ConnectQmp(d + "/qmp.sock", seconds(30));
  ASSERT_TRUE(qmp.has_value()) << TailOfFile(d + "/follower.out");
  auto replay = qmp->Execute("query-replay", nullptr, seconds(2));
  ASSERT_TRUE(replay.ok()) << replay.status().ToString();
  EXPECT_EQ((*replay)["mode"], "play");
  auto info = qmp->Execute("__org.blackbox_query-replay-follow", nullptr, seconds(2));
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_TRUE((*info)["following"].get<bool>()) << info->dump();
  EXPECT_FALSE((*info)["live"].get<bool>()) << info->dump();
  // And answers at once, though the idle primary writes its log about once
  // a second: the follower's main loop does not wait for the log with the
  // BQL held (it did: each answer then took up to a second).
  Clock::duration slowest{};
  for (int i = 0; i < 20; ++i) {
    const Clock::time_point t0 = Clock::now();
    auto q = qmp->Execute("__org.blackbox_query-replay-follow", nullptr, seconds(5));
    ASSERT_TRUE(q.ok()) << q.status().ToString();
    slowest = std::max(slowest, Clock::now() - t0);
  }
  EXPECT_LT(slowest, milliseconds(500))
      << "slowest of 20 QMP answers while following: "
      << std::chrono::duration_cast<milliseconds>(slowest).count() << " ms";

  primary->Signal(SIGKILL);
  ASSERT_TRUE(primary->Wait(seconds(30)).ok());
  pipe.Join();  // the pipe ends: the follower sees the end of the log
  ASSERT_TRUE(pipe.ok());
  const std::string primary_console = ReadFileOrEmpty(d + "/primary.serial");
  const std::vector<int> primary_counters = Counters(primary_console);
  ASSERT_FALSE(primary_counters.empty());
  const int last = primary_counters.back();

  auto live = WaitForLive(*qmp, seconds(240));
  ASSERT_TRUE(live.ok()) << live.status().ToString() << TailOfFile(d + "/follower.out");
  EXPECT_EQ((*live)["live-reason"], "end of stream") << live->dump();
  EXPECT_EQ((*live)["read-bytes"].get<uint64_t>(), pipe.copy().size()) << live->dump();
  replay = qmp->Execute("query-replay");
  ASSERT_TRUE(replay.ok());
  EXPECT_EQ((*replay)["mode"], "none");

  // Another guest (Debian's QEMU, no record/replay) asks for /counter. It
  // starts now: a standby gets no network input until it is promoted (on a
  // Blackbox switch its port carries nothing before), because host-side
  // activity in a replaying QEMU's main loop can make the replay diverge.
  const std::string guest = GuestDir();
  std::vector<std::string> client_args = {
      "qemu-system-x86_64",
      "-machine",
      "pc",
      "-accel",
      "tcg",
      "-nodefaults",
      "-no-user-config",
      "-display",
      "none",
      "-no-reboot",
      "-m",
      "256",
      "-kernel",
      guest + "/vmlinuz",
      "-initrd",
      guest + "/initrd.img",
      "-append",
      "console=ttyS0 quiet panic=-1 bb.poweroff=1 bb.role=http-get "
      "bb.ip=10.0.2.16/24 bb.peer=10.0.2.15 bb.path=/counter bb.wait=600",
      "-chardev",
      "file,id=serial0,path=" + d + "/client.serial",
      "-serial",
      "chardev:serial0",
      "-netdev",
      "socket,id=n0,udp=127.0.0.1:" + std::to_string(follower_port) +
          ",localaddr=127.0.0.1:" + std::to_string(client_port),
      "-device",
      std::string("virtio-net-pci,netdev=n0,mac=") + kClientMac};
  auto client = ChildProcess::Spawn(client_args, d + "/client.out");
  ASSERT_TRUE(client.ok()) << client.status().ToString();

  // Live: the counter goes on, and the client gets an answer.
  EXPECT_TRUE(
      WaitForText(d + "/follower.serial", "BB-COUNTER " + std::to_string(last + 2), seconds(120)))
      << TailOfFile(d + "/follower.serial") << TailOfFile(d + "/follower.out");
  if (!WaitForText(d + "/client.serial", "BB-HTTP-GOT", seconds(180))) {
    // What the live follower's network looks like, for whoever debugs this.
    std::string why = "the client got no answer from the live follower\nclient: " +
                      TailOfFile(d + "/client.serial") +
                      "\nfollower: " + TailOfFile(d + "/follower.serial") +
                      TailOfFile(d + "/follower.out");
    for (const char* hmp : {"info network", "info irq", "info pic"}) {
      auto r = qmp->Execute("human-monitor-command", {{"command-line", hmp}}, seconds(5));
      why += std::string("\n(qemu) ") + hmp + "\n" + (r.ok() ? r->dump() : r.status().ToString());
    }
    auto follow = qmp->Execute("__org.blackbox_query-replay-follow", nullptr, seconds(5));
    why += "\n" + (follow.ok() ? follow->dump() : follow.status().ToString());
    ADD_FAILURE() << why;
  }

  const std::string follower_console = ReadFileOrEmpty(d + "/follower.serial");
  const std::vector<int> counters = Counters(follower_console);
  ASSERT_FALSE(counters.empty());
  for (size_t i = 0; i < counters.size(); ++i) {
    ASSERT_EQ(counters[i], static_cast<int>(i) + 1) << "repeat or gap in the counter:\n"
                                                    << follower_console;
  }
  EXPECT_GE(counters.back(), last + 2);
  // The primary's console, but for a last line whose log was not flushed
  // when it died, was replayed exactly.
  const size_t cut = primary_console.rfind('\n', primary_console.size() - 2);
  const std::string replayed = primary_console.substr(0, cut == std::string::npos ? 0 : cut + 1);
  EXPECT_EQ(follower_console.substr(0, replayed.size()), replayed);

  const std::string client_console = ReadFileOrEmpty(d + "/client.serial");
  const size_t got = client_console.find("BB-HTTP-GOT ");
  ASSERT_NE(got, std::string::npos) << client_console;
  const int served = std::atoi(client_console.c_str() + got + 12);
  EXPECT_GE(served, last - 1) << client_console;
  EXPECT_LE(served, counters.back()) << client_console;

  follower->Kill();
  client->Kill();
}

// Go-live on request: while the primary still records, the follower is
// promoted over QMP (__org.blackbox_replay-go-live). It goes live at once,
// at the point it had replayed to, and its counter runs on without a gap;
// the log that keeps arriving is no longer read.
TEST_F(QemuPatchesTest, FollowerGoesLiveWhenAskedOverQmp) {
  const std::string role = "bb.role=counter";
  const std::string rec_fifo = Path("record.fifo"), follow_fifo = Path("follow.fifo");
  ASSERT_EQ(::mkfifo(rec_fifo.c_str(), 0600), 0);
  ASSERT_EQ(::mkfifo(follow_fifo.c_str(), 0600), 0);
  std::vector<std::string> args =
      GuestArgs(patched_, "rr=replay,rrfile=" + follow_fifo + ",__org.blackbox_follow=on",
                Path("follow.serial"), role);
  for (auto& a : QmpArgs(Path("qmp.sock"))) args.push_back(a);
  auto follower = ChildProcess::Spawn(args, Path("follow.out"));
  ASSERT_TRUE(follower.ok());
  auto primary = ChildProcess::Spawn(
      GuestArgs(patched_, "rr=record,rrfile=" + rec_fifo, Path("record.serial"), role),
      Path("record.out"));
  ASSERT_TRUE(primary.ok());
  LogRelay relay(rec_fifo, follow_fifo);

  ASSERT_TRUE(WaitForText(Path("follow.serial"), "BB-COUNTER 2", seconds(240)))
      << TailOfFile(Path("follow.serial")) << TailOfFile(Path("follow.out"));
  auto qmp = ConnectQmp(Path("qmp.sock"), seconds(30));
  ASSERT_TRUE(qmp.has_value()) << TailOfFile(Path("follow.out"));
  auto done = qmp->Execute("__org.blackbox_replay-go-live", nullptr, seconds(10));
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  auto live = WaitForLive(*qmp, seconds(30));
  ASSERT_TRUE(live.ok()) << live.status().ToString();
  EXPECT_EQ((*live)["live-reason"], "requested");
  EXPECT_FALSE((*live)["ended"].get<bool>()) << "the primary still writes: " << live->dump();
  EXPECT_GT((*live)["live-icount"].get<uint64_t>(), 0u);
  // A second request is refused with a clear error: it is live already.
  auto again = qmp->Execute("__org.blackbox_replay-go-live", nullptr, seconds(10));
  EXPECT_FALSE(again.ok());

  const std::vector<int> at_switch = Counters(ReadFileOrEmpty(Path("follow.serial")));
  ASSERT_FALSE(at_switch.empty());
  EXPECT_TRUE(WaitForText(Path("follow.serial"),
                          "BB-COUNTER " + std::to_string(at_switch.back() + 2), seconds(120)))
      << TailOfFile(Path("follow.serial"));
  const std::vector<int> counters = Counters(ReadFileOrEmpty(Path("follow.serial")));
  for (size_t i = 0; i < counters.size(); ++i) {
    ASSERT_EQ(counters[i], static_cast<int>(i) + 1) << "repeat or gap in the counter";
  }
  primary->Kill();
  follower->Kill();
}

// (c) A log cut in the middle of an event, followed without
// __org.blackbox_live_at_end: the follower replays every complete event and
// stops at the end of the last one (it does not go live on its own: the
// primary might still run), says why, and keeps answering QMP. Asked out of
// band, it goes live there and runs on.
TEST_F(QemuPatchesTest, LogCutInsideAnEventStopsThereUntilAskedToGoLive) {
  const std::string log = RecordCounterLog(3);
  ASSERT_GT(log.size(), size_t{4096});

  // Walk the events; cut inside the last event of at least 5 bytes that
  // starts before 2/3 of the log.
  const auto* bytes = reinterpret_cast<const uint8_t*>(log.data());
  size_t at = 12, event_start = 0, event_size = 0;
  while (at < log.size() * 2 / 3) {
    const size_t n = LogEventSize(bytes + at, log.size() - at);
    ASSERT_GT(n, 0u) << "unreadable event " << unsigned{bytes[at]} << " at " << at;
    if (n >= 5) event_start = at, event_size = n;
    at += n;
  }
  ASSERT_GT(event_size, 0u);
  const size_t cut = event_start + event_size / 2;

  auto follower = FollowBytes("__org.blackbox_follow=on", std::string_view(log.data(), cut));
  ASSERT_TRUE(follower.has_value());
  auto qmp = ConnectQmp(Path("qmp.sock"), seconds(30), /*out_of_band=*/true);
  ASSERT_TRUE(qmp.has_value()) << TailOfFile(Path("follow.out"));
  auto stopped = WaitForStopped(*qmp, seconds(240));
  ASSERT_TRUE(stopped.ok()) << stopped.status().ToString() << TailOfFile(Path("follow.out"));
  EXPECT_FALSE((*stopped)["live"].get<bool>()) << "went live on its own: " << stopped->dump();
  EXPECT_TRUE((*stopped)["ended"].get<bool>()) << stopped->dump();
  EXPECT_EQ((*stopped)["end-reason"], "end of stream") << stopped->dump();
  EXPECT_EQ((*stopped)["read-bytes"].get<uint64_t>(), cut);
  EXPECT_EQ((*stopped)["consumed-bytes"].get<uint64_t>(), event_start) << stopped->dump();
  auto mode = qmp->Execute("query-replay");
  ASSERT_TRUE(mode.ok());
  EXPECT_EQ((*mode)["mode"], "play");
  const std::vector<int> at_stop = Counters(ReadFileOrEmpty(Path("follow.serial")));

  auto go = qmp->ExecuteOutOfBand("__org.blackbox_replay-go-live");
  ASSERT_TRUE(go.ok()) << go.status().ToString();
  auto live = WaitForLive(*qmp, seconds(60));
  ASSERT_TRUE(live.ok()) << live.status().ToString() << TailOfFile(Path("follow.out"));
  EXPECT_EQ((*live)["live-reason"], "requested");
  EXPECT_EQ((*live)["consumed-bytes"].get<uint64_t>(), event_start) << live->dump();

  // It runs on live: two more counter lines than at the stop, no gap.
  const int next = (at_stop.empty() ? 0 : at_stop.back()) + 2;
  EXPECT_TRUE(
      WaitForText(Path("follow.serial"), "BB-COUNTER " + std::to_string(next), seconds(180)))
      << TailOfFile(Path("follow.serial")) << TailOfFile(Path("follow.out"));
  const std::vector<int> counters = Counters(ReadFileOrEmpty(Path("follow.serial")));
  for (size_t i = 0; i < counters.size(); ++i) {
    ASSERT_EQ(counters[i], static_cast<int>(i) + 1);
  }
  follower->Kill();
}

// A followed log that turns unreadable (a byte that is no event) stops the
// replay at the last complete event and reports it, even with
// __org.blackbox_live_at_end=on: a log the standby cannot read says nothing
// about whether the primary is gone, so it must not become a second live
// copy. The end of the stream that follows changes nothing.
TEST_F(QemuPatchesTest, MalformedFollowedLogStopsAndReportsInsteadOfGoingLive) {
  const std::string log = RecordCounterLog(2);
  ASSERT_GT(log.size(), size_t{4096});
  // An event boundary near the middle, then a byte no event starts with.
  const auto* bytes = reinterpret_cast<const uint8_t*>(log.data());
  size_t at = 12;
  while (at < log.size() / 2) {
    const size_t n = LogEventSize(bytes + at, log.size() - at);
    ASSERT_GT(n, 0u) << "unreadable event " << unsigned{bytes[at]} << " at " << at;
    at += n;
  }
  // The follower stops reading at the bad byte: what follows it must fit
  // in the pipe's buffer, or this writer would wait for ever.
  const std::string garbled = log.substr(0, at) + std::string(1, '\xee') + log.substr(at, 4096);

  auto follower = FollowBytes("__org.blackbox_follow=on,__org.blackbox_live_at_end=on", garbled);
  ASSERT_TRUE(follower.has_value());
  auto qmp = ConnectQmp(Path("qmp.sock"), seconds(30), /*out_of_band=*/true);
  ASSERT_TRUE(qmp.has_value()) << TailOfFile(Path("follow.out"));
  auto stopped = WaitForStopped(*qmp, seconds(240));
  ASSERT_TRUE(stopped.ok()) << stopped.status().ToString() << TailOfFile(Path("follow.out"));
  EXPECT_FALSE((*stopped)["live"].get<bool>())
      << "went live on a log it cannot read: " << stopped->dump();
  EXPECT_TRUE((*stopped)["ended"].get<bool>());
  EXPECT_EQ((*stopped)["end-reason"].get<std::string>(),
            "malformed log: unknown or unsupported event 238 at offset " + std::to_string(at))
      << stopped->dump();
  EXPECT_EQ((*stopped)["consumed-bytes"].get<uint64_t>(), at) << stopped->dump();
  EXPECT_NE(ReadFileOrEmpty(Path("follow.out")).find("unknown or unsupported event 238"),
            std::string::npos)
      << TailOfFile(Path("follow.out"));
  // Still replaying, and QMP (in band) answers.
  auto mode = qmp->Execute("query-replay");
  ASSERT_TRUE(mode.ok()) << mode.status().ToString();
  EXPECT_EQ((*mode)["mode"], "play");
  follower->Kill();
}

// Patch 0001: a record log that can no longer be written ends the recording
// at once. The log is a pipe whose reader goes away after 64 KiB: QEMU
// exits with status 1 and says why (stock QEMU printed "replay write error"
// once and ran on unrecorded).
TEST_F(QemuPatchesTest, RecordStopsWhenItsLogCannotBeWritten) {
  const std::string fifo = Path("record.fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto recorder = ChildProcess::Spawn(
      GuestArgs(patched_, "rr=record,rrfile=" + fifo, Path("record.serial"), "bb.role=counter"),
      Path("record.out"));
  ASSERT_TRUE(recorder.ok());
  {
    UniqueFd in(::open(fifo.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(in.valid());
    std::string buf(64 * 1024, '\0');
    size_t got = 0;
    while (got < buf.size()) {
      const ssize_t n = ::read(in.get(), buf.data() + got, buf.size() - got);
      ASSERT_GT(n, 0) << "the log ended after " << got << " bytes";
      got += static_cast<size_t>(n);
    }
  }  // the reader is gone
  auto status = recorder->Wait(seconds(120));
  ASSERT_TRUE(status.ok()) << "QEMU went on recording into a pipe nobody reads: "
                           << status.status().ToString() << TailOfFile(Path("record.out"));
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1)
      << ChildProcess::DescribeWaitStatus(*status);
  EXPECT_NE(ReadFileOrEmpty(Path("record.out")).find("cannot write the record log"),
            std::string::npos)
      << TailOfFile(Path("record.out"));
}

}  // namespace
}  // namespace blackbox::e2e
