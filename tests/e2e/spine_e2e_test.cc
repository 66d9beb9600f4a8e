// End-to-end tests of the spine: record real guests into the store, replay
// them, verify byte-exactness, survive crashes, detect corruption.
#include <rocksdb/db.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <fstream>
#include <regex>
#include <thread>

#include "common/hash.h"
#include "recorder/rr_log.h"
#include "store/store.h"
#include "tests/e2e/e2e_util.h"

namespace blackbox::e2e {
namespace {

using std::chrono::seconds;

std::string ExpectedDiskRecords(int n) {
  std::string out;
  for (int i = 1; i <= n; ++i) {
    char rec[512] = {};
    std::snprintf(rec, sizeof rec, "record %08d\n", i);
    out.append(rec, sizeof rec);
  }
  return out;
}

class SpineTest : public E2eTest {
 protected:
  // Records a spec to completion and returns the newest recording.
  nlohmann::json RecordToEnd(const std::string& spec, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"record", "-q", Example(spec)};
    args.insert(args.end(), extra.begin(), extra.end());
    CommandResult r = Blackbox(args);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return LatestRecording();
  }
  std::string Console(const std::string& id) {
    CommandResult r = Blackbox({"console", id});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return r.output;
  }
  nlohmann::json Show(const std::string& id) {
    CommandResult r = Blackbox({"show", "--json", id});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return nlohmann::json::parse(r.output, nullptr, false);
  }
};

TEST_F(SpineTest, CpuWorkloadReplaysByteExactAndExportsAReplayableLog) {
  nlohmann::json rec = RecordToEnd("cpu.yaml");
  std::string id = rec["id"];
  EXPECT_EQ(rec["state"], "complete");
  EXPECT_TRUE(rec["rr"]["complete"].get<bool>());
  std::string console = Console(id);
  EXPECT_TRUE(std::regex_search(console, std::regex("BB-CPU-RESULT [0-9a-f]{32}"))) << console;
  EXPECT_NE(console.find("BB-DONE"), std::string::npos);

  CommandResult verify = Blackbox({"verify", "-q", id});
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  EXPECT_NE(verify.output.find("OK:"), std::string::npos) << verify.output;
  EXPECT_NE(verify.output.find(std::to_string(console.size()) + " bytes identical"),
            std::string::npos)
      << verify.output;
  EXPECT_NE(verify.output.find("final disks none"), std::string::npos) << verify.output;
  EXPECT_NE(verify.output.find("final RAM identical (256 MiB)"), std::string::npos)
      << verify.output;
  ASSERT_TRUE(rec.contains("final_ram")) << rec.dump();

  // A replay that ends with other RAM fails: the stored hash is changed.
  {
    StoreOptions so;
    so.path = data() + "/store";
    auto store = Store::Open(so);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    auto info = (*store)->GetRecording(id);
    ASSERT_TRUE(info.ok()) << info.status().ToString();
    std::string hash = info->extra["final_ram"]["sha256"];
    hash[0] = hash[0] == '0' ? '1' : '0';
    info->extra["final_ram"]["sha256"] = hash;
    ASSERT_TRUE((*store)->PutRecording(*info).ok());
  }
  CommandResult bad = Blackbox({"verify", "-q", id});
  EXPECT_NE(bad.exit_code, 0) << bad.output;
  EXPECT_NE(bad.output.find("the guest's RAM differs at the end"), std::string::npos)
      << bad.output;

  std::string exported = data() + "/exported.rr";
  CommandResult exp = Blackbox({"export", id, "--rr", exported});
  ASSERT_EQ(exp.exit_code, 0) << exp.output;
  auto log = ReadFileToString(exported, 1ull << 30);
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(log->size(), rec["rr"]["raw_bytes"].get<uint64_t>() + rr::kHeaderSize);
  EXPECT_TRUE(rr::CheckHeader(log->substr(0, rr::kHeaderSize)).ok());
  auto scan = rr::ScanBody(std::string_view(*log).substr(rr::kHeaderSize));
  ASSERT_TRUE(scan.ok()) << scan.status().ToString();
  EXPECT_EQ(scan->complete_bytes, log->size() - rr::kHeaderSize);
  EXPECT_TRUE(scan->stats.saw_end);
  EXPECT_EQ(scan->stats.console_bytes, console.size());
}

TEST_F(SpineTest, DiskWriterReplaysByteExactAndKeepsItsOverlay) {
  nlohmann::json rec = RecordToEnd("disk-writer.yaml");
  std::string id = rec["id"];
  std::string expected = Md5Hex(ExpectedDiskRecords(200));
  std::string console = Console(id);
  EXPECT_NE(console.find("BB-DISK-RESULT " + expected), std::string::npos) << console;

  // The recording keeps the disk overlay: its final contents hold the records.
  std::string overlay = rec["disks"][0]["overlay"];
  std::string raw = data() + "/disk.raw";
  auto conv = RunCommand({"qemu-img", "convert", "-O", "raw", overlay, raw});
  ASSERT_TRUE(conv.ok()) << conv.status().ToString();
  auto disk = ReadFileToString(raw, 64 << 20);
  ASSERT_TRUE(disk.ok());
  EXPECT_EQ(Md5Hex(disk->substr(0, 200 * 512)), expected);

  CommandResult verify = Blackbox({"verify", "-q", id});
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  EXPECT_NE(verify.output.find("final disks 1 identical"), std::string::npos) << verify.output;

  // A replay that ends with other disk contents fails: the recorded overlay
  // loses one record (the guest's data, not qcow2 metadata).
  auto io = RunCommand({"qemu-io", "-f", "qcow2", "-c", "write -P 0 0 512", overlay});
  ASSERT_TRUE(io.ok()) << io.status().ToString();
  CommandResult bad = Blackbox({"verify", "-q", id});
  EXPECT_NE(bad.exit_code, 0) << bad.output;
  EXPECT_NE(bad.output.find("disk data differs"), std::string::npos) << bad.output;
}

// Reads the pid QEMU ran as from the recording's events.
int QemuPid(const nlohmann::json& show) {
  for (const auto& e : show["events"]) {
    if (e["event"].value("what", "") == "qemu-started") return e["event"]["pid"];
  }
  return -1;
}

TEST_F(SpineTest, QemuKilledMidRecordingLeavesAReplayablePrefix) {
  std::string out = data() + "/record.out";
  ChildProcess recorder =
      StartBlackbox({"record", "-q", "--console", Example("counter.yaml")}, out);
  ASSERT_TRUE(WaitForText(out, "BB-COUNTER 3", seconds(120))) << *ReadFileToString(out);
  nlohmann::json rec = LatestRecording();
  int pid = QemuPid(Show(rec["id"]));
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  auto status = recorder.Wait(std::chrono::milliseconds(60000));
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(WEXITSTATUS(*status), 1) << "an interrupted recording is not a success";

  rec = LatestRecording();
  EXPECT_EQ(rec["state"], "interrupted");
  EXPECT_FALSE(rec["rr"]["complete"].get<bool>());
  EXPECT_GT(rec["rr"]["chunks"].get<int>(), 0);
  CommandResult verify = Blackbox({"verify", "-q", rec["id"]});
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  EXPECT_NE(verify.output.find("identical"), std::string::npos) << verify.output;
  EXPECT_NE(Console(rec["id"]).find("BB-COUNTER 3"), std::string::npos);
}

TEST_F(SpineTest, RecorderKilledMidRecordingLeavesACleanStore) {
  std::string out = data() + "/record.out";
  ChildProcess recorder =
      StartBlackbox({"record", "-q", "--console", Example("counter.yaml")}, out);
  ASSERT_TRUE(WaitForText(out, "BB-COUNTER 4", seconds(120))) << *ReadFileToString(out);
  nlohmann::json rec = LatestRecording();
  int qemu = QemuPid(Show(rec["id"]));
  ASSERT_GT(qemu, 0);
  recorder.Kill();
  // QEMU must not run on unrecorded: it dies with its recorder.
  bool gone = false;
  for (int i = 0; i < 200 && !gone; ++i) {
    gone = ::kill(qemu, 0) != 0;
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(gone) << "QEMU " << qemu << " outlived its recorder";

  CommandResult ls = Blackbox({"ls"});
  EXPECT_EQ(ls.exit_code, 0) << ls.output;
  EXPECT_NE(ls.output.find("interrupted*"), std::string::npos) << ls.output;
  rec = LatestRecording();
  CommandResult verify = Blackbox({"verify", "-q", rec["id"]});
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  EXPECT_NE(verify.output.find("identical"), std::string::npos) << verify.output;
  // The chunks persisted before the kill cover at least the early counter.
  nlohmann::json show = Show(rec["id"]);
  uint64_t covered = 0;
  for (const auto& c : show["chunks"]) covered += c["console_bytes"].get<uint64_t>();
  std::string console = Console(rec["id"]);
  ASSERT_LE(covered, console.size());
  EXPECT_NE(console.substr(0, covered).find("BB-COUNTER 2"), std::string::npos)
      << "log covers " << covered << " console bytes";
}

TEST_F(SpineTest, CtrlCStopsAndFinalisesARecording) {
  std::string out = data() + "/record.out";
  ChildProcess recorder =
      StartBlackbox({"record", "-q", "--console", Example("counter.yaml")}, out);
  ASSERT_TRUE(WaitForText(out, "BB-COUNTER 2", seconds(120))) << *ReadFileToString(out);
  recorder.Signal(SIGINT);
  auto status = recorder.Wait(std::chrono::milliseconds(60000));
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(WEXITSTATUS(*status), 0) << *ReadFileToString(out);
  nlohmann::json rec = LatestRecording();
  EXPECT_EQ(rec["state"], "complete");
  EXPECT_TRUE(rec["rr"]["complete"].get<bool>()) << "QEMU wrote its header and end event";
  EXPECT_NE(rec["end_reason"].get<std::string>().find("signal 2"), std::string::npos) << rec.dump();
  CommandResult verify = Blackbox({"verify", "-q", rec["id"]});
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  EXPECT_EQ(verify.output.find("log covers"), std::string::npos)
      << "a finished log covers the whole console";
}

TEST_F(SpineTest, CorruptedChunkMakesVerifyFailAndNameIt) {
  nlohmann::json rec = RecordToEnd("cpu.yaml", {"--chunk-age", "1s"});
  std::string id = rec["id"];
  ASSERT_GE(rec["rr"]["chunks"].get<int>(), 3);
  {
    // Flip one byte in the middle of chunk 1's stored payload, as a bad disk
    // or a tamperer would.
    rocksdb::Options options;
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
    std::vector<std::string> names;
    ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(options, data() + "/store", &names).ok());
    for (const auto& n : names) cfs.emplace_back(n, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw_db = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(options, data() + "/store", cfs, &handles, &raw_db).ok());
    std::unique_ptr<rocksdb::DB> db(raw_db);
    rocksdb::ColumnFamilyHandle* chunks = nullptr;
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == "rr_chunks") chunks = handles[i];
    }
    ASSERT_NE(chunks, nullptr);
    std::string key = id + std::string(1, '\0') + std::string("\0\0\0\0\0\0\0\x01", 8);
    std::string value;
    ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), chunks, key, &value).ok());
    value[value.size() / 2] ^= 0x5a;
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), chunks, key, value).ok());
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
  }
  CommandResult verify = Blackbox({"verify", "-q", id});
  EXPECT_EQ(verify.exit_code, 1) << verify.output;
  EXPECT_NE(verify.output.find("chunk 1"), std::string::npos) << verify.output;
  CommandResult exp = Blackbox({"export", id, "--rr", data() + "/x.rr"});
  EXPECT_NE(exp.exit_code, 0);
  EXPECT_NE(exp.output.find("chunk 1"), std::string::npos) << exp.output;
}

TEST_F(SpineTest, ChangedInputIsRefusedBeforeReplay) {
  // A copy of the guest whose initrd we can alter after recording.
  std::string guest = data() + "/guest";
  ASSERT_TRUE(MakeDirs(guest).ok());
  std::string src = GuestDir();
  ASSERT_TRUE(CopyFile(src + "/vmlinuz", guest + "/vmlinuz").ok());
  ASSERT_TRUE(CopyFile(src + "/initrd.img", guest + "/initrd.img").ok());
  std::string spec = data() + "/cpu.yaml";
  std::ofstream(spec)
      << "name: copy\nkernel: guest/vmlinuz\ninitrd: guest/initrd.img\n"
         "append: console=ttyS0 quiet panic=-1 bb.role=cpu bb.rounds=1 bb.poweroff=1\n";
  CommandResult r = Blackbox({"record", "-q", spec});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ofstream(guest + "/initrd.img", std::ios::app) << "tampered";
  CommandResult verify = Blackbox({"verify", "-q", "copy"});
  EXPECT_EQ(verify.exit_code, 2) << verify.output;
  EXPECT_NE(verify.output.find("initrd"), std::string::npos) << verify.output;
  EXPECT_NE(verify.output.find("changed since recording"), std::string::npos) << verify.output;
}

TEST_F(SpineTest, ReplayWithAnotherQemuIsRefusedAndTheSameBinaryFoundByHash) {
  std::string spec = data() + "/cpu.yaml";
  std::ofstream(spec) << "name: q\nkernel: " << GuestDir() << "/vmlinuz\ninitrd: " << GuestDir()
                      << "/initrd.img\n"
                         "append: console=ttyS0 quiet panic=-1 bb.role=cpu bb.rounds=1 "
                         "bb.poweroff=1\n";
  // Recorded by default with Blackbox's QEMU.
  CommandResult r = Blackbox({"record", "-q", spec});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  CommandResult show = Blackbox({"show", "q"});
  ASSERT_EQ(show.exit_code, 0) << show.output;
  EXPECT_NE(show.output.find("sha256"), std::string::npos) << show.output;

  // Debian's QEMU is another binary: refused, in one line naming both.
  CommandResult stock = Blackbox({"verify", "-q", "q", "--qemu", "qemu-system-x86_64"});
  EXPECT_EQ(stock.exit_code, 2) << stock.output;
  EXPECT_NE(stock.output.find("recorded with QEMU"), std::string::npos) << stock.output;
  EXPECT_NE(stock.output.find("not with /usr/bin/qemu-system-x86_64"), std::string::npos)
      << stock.output;
  EXPECT_NE(stock.output.find("--force-qemu"), std::string::npos) << stock.output;

  // A copy of the binary that recorded is the same QEMU (same SHA-256).
  const std::string copy = data() + "/qemu-copy";
  ASSERT_TRUE(CopyFile(PatchedQemu(), copy).ok());
  ASSERT_EQ(::chmod(copy.c_str(), 0755), 0);
  CommandResult same = Blackbox({"verify", "-q", "q", "--qemu", copy});
  EXPECT_EQ(same.exit_code, 0) << same.output;
}

TEST_F(SpineTest, BadInputGetsOneLineErrors) {
  std::string spec = data() + "/bad.yaml";
  std::ofstream(spec) << "name: x\nkernel: /nonexistent/vmlinuz\nmemory: 12Q\n";
  CommandResult r = Blackbox({"record", spec});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("memory"), std::string::npos) << r.output;
  CommandResult unknown = Blackbox({"verify", "no-such-recording"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.output.find("no-such-recording"), std::string::npos) << unknown.output;
  CommandResult dur = Blackbox({"record", "--for", "soon", Example("cpu.yaml")});
  EXPECT_EQ(dur.exit_code, 2);
  EXPECT_NE(dur.output.find("--for"), std::string::npos) << dur.output;
}

// Record/replay under host load. A second process spins on a CPU while each
// test workload is recorded and verified: unpinned (the kernel moves it and
// QEMU's threads around), and pinned with Blackbox and its QEMU to the same
// CPU (they take turns). Timing changes what each recording contains, never
// whether its replay matches it: console, final disk contents and final RAM
// are identical every time (`verify`).
class SpineLoadTest : public SpineTest {
 protected:
  void RecordAndVerifyUnderLoad(bool pinned) {
    std::vector<std::string> spin = {"sh", "-c", "while :; do :; done"};
    if (pinned) spin.insert(spin.begin(), {"taskset", "-c", "0"});
    auto busy = ChildProcess::Spawn(spin, data() + "/busy.out");
    ASSERT_TRUE(busy.ok()) << busy.status().ToString();
    cpu_set_t saved;
    ASSERT_EQ(::sched_getaffinity(0, sizeof saved, &saved), 0);
    if (pinned) {
      // Children (blackbox, QEMU) inherit the test's affinity.
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(0, &one);
      ASSERT_EQ(::sched_setaffinity(0, sizeof one, &one), 0);
    }
    struct Run {
      const char* spec;
      std::vector<std::string> extra;
      const char* disks;
    };
    const Run runs[] = {{"cpu.yaml", {}, "none"},
                        {"disk-writer.yaml", {}, "1 identical"},
                        {"idle.yaml", {"--for", "6s"}, "none"}};
    for (const Run& run : runs) {
      SCOPED_TRACE(std::string(run.spec) + (pinned ? ", pinned" : ", unpinned"));
      nlohmann::json rec = RecordToEnd(run.spec, run.extra);
      ASSERT_EQ(rec["state"], "complete") << rec.dump();
      CommandResult verify = Blackbox({"verify", "-q", rec["id"]});
      EXPECT_EQ(verify.exit_code, 0) << verify.output;
      EXPECT_NE(verify.output.find("final disks " + std::string(run.disks)), std::string::npos)
          << verify.output;
      EXPECT_NE(verify.output.find("final RAM identical"), std::string::npos) << verify.output;
    }
    ::sched_setaffinity(0, sizeof saved, &saved);
    busy->Kill();
  }
};

TEST_F(SpineLoadTest, WorkloadsReplayIdenticallyBesideABusyProcess) {
  RecordAndVerifyUnderLoad(/*pinned=*/false);
}

TEST_F(SpineLoadTest, WorkloadsReplayIdenticallyPinnedToTheBusyCpu) {
  RecordAndVerifyUnderLoad(/*pinned=*/true);
}

}  // namespace
}  // namespace blackbox::e2e
