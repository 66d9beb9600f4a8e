// End-to-end tests of Blackbox's QEMU patch series (qemu-patches/): the
// patched qemu-system-x86_64 and Debian's stock one run the test guest
// directly, with no Blackbox service in between.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "common/files.h"
#include "common/process.h"
#include "tests/e2e/e2e_util.h"

namespace blackbox::e2e {
namespace {

using std::chrono::seconds;

// The rr log header: version 0xe0200c, then a zero qword.
const std::string kLogHeader("\x00\xe0\x20\x0c\x00\x00\x00\x00\x00\x00\x00\x00", 12);

class QemuPatchesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    patched_ = PatchedQemu();
    ASSERT_TRUE(PathExists(patched_))
        << "no patched QEMU at " << patched_ << ": run qemu-patches/build.sh (scripts/setup.sh does)";
    auto dir = TempDir::Create("bb-qemu-patches-test");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    dir_.emplace(std::move(dir).value());
  }

  std::string Path(const std::string& name) const { return dir_->path() + "/" + name; }

  // A QEMU command line for the test guest in `role`, recording or replaying
  // `rrfile`, its serial console written to `serial`. Record and replay lines
  // differ only in rr=.
  std::vector<std::string> GuestArgs(const std::string& qemu, const std::string& rr,
                                     const std::string& rrfile, const std::string& serial,
                                     const std::string& role_args) const {
    const std::string guest = GuestDir();
    return {qemu,
            "-machine", "pc",
            "-accel", "tcg",
            "-icount", "shift=auto,rr=" + rr + ",rrfile=" + rrfile,
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-m", "256",
            "-kernel", guest + "/vmlinuz",
            "-initrd", guest + "/initrd.img",
            "-append", "console=ttyS0 quiet panic=-1 bb.poweroff=1 " + role_args,
            "-chardev", "file,id=serial0,path=" + serial,
            "-serial", "chardev:serial0"};
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

  static std::string ReadFileOrEmpty(const std::string& path) {
    auto text = ReadFileToString(path);
    return text.ok() ? *text : "";
  }

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
      RunToEnd(GuestArgs(patched_, "record", log, Path("record.serial"), role), "record",
               seconds(180));
  ASSERT_NE(recorded.find("BB-CPU-RESULT"), std::string::npos) << recorded;
  auto bytes = ReadFileToString(log, size_t{256} << 20);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(bytes->substr(0, 12), kLogHeader);

  const std::string replayed =
      RunToEnd(GuestArgs(patched_, "replay", log, Path("replay.serial"), role), "replay",
               seconds(300));
  EXPECT_EQ(replayed, recorded);
}

// (a) A guest recorded into a pipe is replayed by a second QEMU reading
// another pipe while the recording is still being written; the test copies
// the stream across and keeps a copy. The replayed console equals the
// recorded one byte for byte.
TEST_F(QemuPatchesTest, ReplayFollowsARecordingThroughAPipe) {
  const std::string role = "bb.role=cpu bb.rounds=3";
  const std::string rec_fifo = Path("record.fifo"), follow_fifo = Path("follow.fifo");
  ASSERT_EQ(::mkfifo(rec_fifo.c_str(), 0600), 0);
  ASSERT_EQ(::mkfifo(follow_fifo.c_str(), 0600), 0);

  // Both QEMUs open their pipe while parsing the command line, so the copier
  // opens the other ends before anything else happens.
  auto follower = ChildProcess::Spawn(
      GuestArgs(patched_, "replay", follow_fifo, Path("follow.serial"), role), Path("follow.out"));
  ASSERT_TRUE(follower.ok()) << follower.status().ToString();
  auto recorder = ChildProcess::Spawn(
      GuestArgs(patched_, "record", rec_fifo, Path("record.serial"), role), Path("record.out"));
  ASSERT_TRUE(recorder.ok()) << recorder.status().ToString();

  std::string log;
  std::atomic<bool> copy_ok{false};
  std::thread copier([&] {
    UniqueFd in(::open(rec_fifo.c_str(), O_RDONLY | O_CLOEXEC));
    UniqueFd out(::open(follow_fifo.c_str(), O_WRONLY | O_CLOEXEC));
    if (!in.valid() || !out.valid()) return;
    std::vector<char> buf(1 << 16);
    while (true) {
      ssize_t n = ::read(in.get(), buf.data(), buf.size());
      if (n == 0) break;  // the recorder closed the log
      if (n < 0) {
        if (errno == EINTR) continue;
        return;
      }
      log.append(buf.data(), static_cast<size_t>(n));
      if (!WriteAll(out.get(), std::string_view(buf.data(), static_cast<size_t>(n)), "follow")
               .ok()) {
        return;
      }
    }
    copy_ok = true;
  });

  auto rec_status = recorder->Wait(std::chrono::minutes(5));
  // The follower is replaying while the recorder runs: the pipe holds only
  // 64 KiB of a log of megabytes, so the recorder cannot finish unless the
  // follower has consumed nearly all of it already.
  auto fol_status = follower->Wait(std::chrono::minutes(5));
  copier.join();
  ASSERT_TRUE(rec_status.ok()) << rec_status.status().ToString() << TailOfFile(Path("record.out"));
  ASSERT_TRUE(fol_status.ok()) << fol_status.status().ToString() << TailOfFile(Path("follow.out"));
  EXPECT_EQ(*rec_status, 0) << TailOfFile(Path("record.out"));
  EXPECT_EQ(*fol_status, 0) << TailOfFile(Path("follow.out"));
  ASSERT_TRUE(copy_ok);
  EXPECT_GT(log.size(), size_t{1} << 20);
  EXPECT_EQ(log.substr(0, 12), kLogHeader);

  const std::string recorded = ReadFileOrEmpty(Path("record.serial"));
  ASSERT_NE(recorded.find("BB-CPU-RESULT"), std::string::npos) << recorded;
  EXPECT_EQ(ReadFileOrEmpty(Path("follow.serial")), recorded);
}

}  // namespace
}  // namespace blackbox::e2e
