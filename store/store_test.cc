// Tests of what is not specific to one column family: usage, secondaries, opening, reopening,
// read-only stores, locking and durability (with the cross-process tests, which re-run this
// binary).
#include "store/store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "common/files.h"
#include "store/store_test_util.h"

namespace blackbox::store_test {
namespace {

using ::testing::HasSubstr;

// ---- usage ----

TEST_F(StoreTest, Usage) {
  AppendChunks("rec", 3, 1000);
  ASSERT_TRUE(store_->AppendConsole("rec", {0, 1, "hello"}).ok());
  ASSERT_TRUE(store_->AppendConsole("rec", {5, 2, "world!"}).ok());
  ASSERT_TRUE(store_->PutEvent("rec", 1, {{"kind", "a"}}).ok());
  ASSERT_TRUE(store_->PutEvent("rec", 1, {{"kind", "b"}}).ok());
  ASSERT_TRUE(store_->Flush().ok());
  auto u = store_->GetUsage("rec");
  ASSERT_TRUE(u.ok());
  uint64_t stored = 0;
  auto chunks = store_->ListRrChunks("rec");
  ASSERT_TRUE(chunks.ok());
  for (const auto& c : *chunks) stored += c.stored_size;
  EXPECT_EQ(u->rr_raw_bytes, 3000u);
  EXPECT_EQ(u->rr_stored_bytes, stored);
  EXPECT_EQ(u->console_bytes, 11u);
  EXPECT_EQ(u->events, 2u);
  auto none = store_->GetUsage("other");
  EXPECT_EQ(none->rr_raw_bytes + none->console_bytes + none->events, 0u);
}

// ---- secondary ----

class SecondaryTest : public StoreTest {
 protected:
  StatusOr<std::unique_ptr<Store>> OpenSecondary(const std::string& name = "secondary") {
    StoreOptions opts;
    opts.path = path_;
    opts.secondary_path = dir_->path() + "/" + name;
    return Store::Open(opts);
  }
};

TEST_F(SecondaryTest, FollowsTheWriterOnlyWhenItCatchesUp) {
  ASSERT_EQ(*store_->PutAlert(10, Alert("web", "x", "before")), "10-0");
  ASSERT_TRUE(store_->PutRecording(MakeRecording("rec", 1)).ok());
  AppendChunks("rec", 2, 3000);
  const std::string sec_dir = dir_->path() + "/secondary";
  ASSERT_FALSE(PathExists(sec_dir));
  auto opened = OpenSecondary();
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::unique_ptr<Store> sec = std::move(opened).value();
  EXPECT_TRUE(PathExists(sec_dir));  // created

  // What the writer wrote before the open (still in its memtables) is there.
  EXPECT_EQ(AlertNames(sec->ListAlerts()), (std::vector<std::string>{"before"}));
  EXPECT_TRUE(sec->GetRecording("rec").ok());
  EXPECT_EQ(sec->VerifyRrChain("rec")->chunks, 2u);

  // A new alert is not seen until CatchUp.
  ASSERT_EQ(*store_->PutAlert(10, Alert("web", "x", "after")), "10-1");
  ASSERT_TRUE(store_->PutRecording(MakeRecording("later", 2)).ok());
  AppendChunks("rec", 1, 3000);
  EXPECT_EQ(AlertNames(sec->ListAlerts()), (std::vector<std::string>{"before"}));
  EXPECT_EQ(sec->GetAlert("10-1").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(sec->GetRecording("later").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(sec->CatchUp().ok());
  EXPECT_EQ(AlertNames(sec->ListAlerts()), (std::vector<std::string>{"before", "after"}));
  EXPECT_EQ(sec->GetAlert("10-1")->body["name"], "after");
  EXPECT_TRUE(sec->GetRecording("later").ok());

  // Reads that take several steps (one snapshot elsewhere) work on a secondary.
  auto report = sec->VerifyRrChain("rec");
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->chunks, 3u);
  EXPECT_FALSE(report->first_bad.has_value()) << report->problem;
  EXPECT_TRUE(sec->ReadRrChunk("rec", 2).ok());
  EXPECT_EQ(sec->GetUsage("rec")->rr_raw_bytes, 9000u);

  // Also across a flush of the writer's memtables to table files.
  ASSERT_TRUE(store_->Flush().ok());
  ASSERT_EQ(*store_->PutAlert(20, Alert("db", "y", "flushed")), "20-0");
  EXPECT_EQ(sec->ListAlerts()->size(), 2u);
  ASSERT_TRUE(sec->CatchUp().ok());
  EXPECT_EQ(AlertNames(sec->ListAlerts(15)), (std::vector<std::string>{"flushed"}));
  EXPECT_EQ(AlertNames(sec->ListAlerts()),
            (std::vector<std::string>{"before", "after", "flushed"}));

  // And after the writer has gone.
  Close();
  ASSERT_TRUE(sec->CatchUp().ok());
  EXPECT_EQ(sec->ListAlerts()->size(), 3u);
}

TEST_F(SecondaryTest, RefusesWrites) {
  auto opened = OpenSecondary();
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  Store& sec = **opened;
  auto fp = [](const Status& s) {
    EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
    EXPECT_THAT(s.message(), HasSubstr("read-only"));
  };
  fp(sec.PutAlert(1, Alert("web", "x", "a")).status());
  fp(sec.PutRecording(MakeRecording("x", 1)));
  fp(sec.AppendRrChunk("x", RrChunkInfo{}, "x").status());
  fp(sec.AppendConsole("x", {0, 0, "x"}));
  fp(sec.PutEvent("x", 0, {{"kind", "x"}}));
  fp(sec.PutCapture("cap", nlohmann::json::object()));
  CapturedFrame frame;
  frame.bytes = "frame";
  fp(sec.AppendFrameBatch("cap", std::span<const CapturedFrame>(&frame, 1)).status());
  fp(sec.PutFlow("cap", {{"start_wall_ns", 1}, {"end_wall_ns", 2}}));
  EXPECT_TRUE(sec.Flush().ok());  // nothing of its own to flush
  ASSERT_TRUE(sec.CatchUp().ok());
  EXPECT_TRUE(sec.ListAlerts()->empty());
  EXPECT_TRUE(sec.ListRecordings()->empty());
  EXPECT_TRUE(sec.ListCaptures()->empty());
}

TEST_F(SecondaryTest, CatchUpNeedsASecondary) {
  Status s = store_->CatchUp();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("not open as a secondary"));
  Close();
  StoreOptions ro;
  ro.read_only = true;
  Reopen(ro);
  EXPECT_EQ(store_->CatchUp().code(), StatusCode::kFailedPrecondition);
}

TEST_F(SecondaryTest, OpenErrors) {
  StoreOptions opts;
  opts.path = dir_->path() + "/absent";
  opts.secondary_path = dir_->path() + "/absent-secondary";
  EXPECT_EQ(Store::Open(opts).status().code(), StatusCode::kIOError);  // create_if_missing
  EXPECT_FALSE(PathExists(opts.path));
  opts.path = path_;
  opts.secondary_path = path_;
  EXPECT_EQ(Store::Open(opts).status().code(), StatusCode::kInvalidArgument);
  // Two secondaries follow one writer side by side.
  auto a = OpenSecondary("a");
  auto b = OpenSecondary("b");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_TRUE(store_->PutAlert(1, Alert("web", "x", "a")).ok());
  ASSERT_TRUE((*a)->CatchUp().ok());
  EXPECT_EQ((*a)->ListAlerts()->size(), 1u);
  EXPECT_EQ((*b)->ListAlerts()->size(), 0u);
}

TEST_F(SecondaryTest, CatchUpWhileReadingAGrowingChunk) {
  // The writer grows chunk 1 in place while one thread catches up and another verifies the
  // chain: every walk sees one consistent state.
  AppendChunks("rec", 1, 2000);
  auto chunks = store_->ListRrChunks("rec");
  ASSERT_TRUE(chunks.ok());
  const RrChunkInfo first = chunks->at(0);
  auto opened = OpenSecondary();
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  Store& sec = **opened;
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (size_t n = 1; n <= 60; ++n) {
      RrChunkInfo info;
      info.seq = 1;
      info.raw_offset = first.raw_offset + first.raw_size;
      info.prev_chain = first.chain;
      EXPECT_TRUE(store_->AppendRrChunk("rec", info, MakeRaw(n, 100 * n)).ok());
      EXPECT_TRUE(store_->PutAlert(static_cast<int64_t>(n), Alert("web", "x", "n")).ok());
    }
    done = true;
  });
  std::thread follower([&] {
    while (!done) EXPECT_TRUE(sec.CatchUp().ok());
  });
  int walks = 0;
  while (!done || walks < 5) {
    auto report = sec.VerifyRrChain("rec");
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_FALSE(report->first_bad.has_value()) << report->problem;
    ++walks;
  }
  writer.join();
  follower.join();
  ASSERT_TRUE(sec.CatchUp().ok());
  EXPECT_EQ(sec.ListAlerts()->size(), 60u);
  EXPECT_EQ(sec.ReadRrChunk("rec", 1)->size(), 6000u);
}

// ---- open, reopen, read-only, locking, durability ----

TEST_F(StoreTest, ReopenKeepsEverything) {
  ASSERT_TRUE(store_->PutRecording(MakeRecording("rec", 1)).ok());
  std::vector<std::string> raws;
  AppendChunks("rec", 3, 3000, nullptr, &raws);
  ASSERT_TRUE(store_->AppendConsole("rec", {0, 1, "boot"}).ok());
  ASSERT_TRUE(store_->PutEvent("rec", 1, {{"kind", "start"}}).ok());
  Close();
  StoreOptions opts;
  opts.create_if_missing = false;
  Reopen(opts);
  EXPECT_EQ(store_->GetRecording("rec")->vm_name, "vm-rec");
  EXPECT_EQ(*store_->ReadRrChunk("rec", 1), raws[1]);
  EXPECT_EQ(store_->VerifyRrChain("rec")->chunks, 3u);
  EXPECT_EQ(store_->ReadConsole("rec")->at(0).bytes, "boot");
  EXPECT_EQ(store_->ListEvents("rec")->at(0).body["kind"], "start");
}

TEST_F(StoreTest, MissingStoreIsNotCreatedUnlessAsked) {
  StoreOptions opts;
  opts.path = dir_->path() + "/absent";
  opts.create_if_missing = false;
  EXPECT_EQ(Store::Open(opts).status().code(), StatusCode::kIOError);
  opts.create_if_missing = true;
  opts.read_only = true;
  EXPECT_EQ(Store::Open(opts).status().code(), StatusCode::kIOError);
  EXPECT_FALSE(PathExists(opts.path));
  opts.path = dir_->path() + "/nested/dirs/db";
  opts.read_only = false;
  EXPECT_TRUE(Store::Open(opts).ok());
  opts.zstd_level = 1000;
  EXPECT_EQ(Store::Open(opts).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, ReadOnlySeesDataAndRefusesWrites) {
  ASSERT_TRUE(store_->PutRecording(MakeRecording("rec", 1)).ok());
  AppendChunks("rec", 2, 1000);
  // A reader opened while the writer is live sees the state as of its Open.
  StoreOptions ro;
  ro.path = path_;
  ro.read_only = true;
  auto reader = Store::Open(ro);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  ASSERT_TRUE(store_->PutRecording(MakeRecording("later", 2)).ok());
  EXPECT_TRUE((*reader)->GetRecording("rec").ok());
  EXPECT_EQ((*reader)->GetRecording("later").status().code(), StatusCode::kNotFound);
  EXPECT_EQ((*reader)->VerifyRrChain("rec")->chunks, 2u);

  auto fp = [](const Status& s) { EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition); };
  fp((*reader)->PutRecording(MakeRecording("x", 1)));
  fp((*reader)->AppendRrChunk("x", RrChunkInfo{}, "x").status());
  fp((*reader)->AppendConsole("x", {0, 0, "x"}));
  fp((*reader)->PutEvent("x", 0, {{"kind", "x"}}));
  EXPECT_TRUE((*reader)->Flush().ok());
  reader->reset();

  Close();
  Reopen(ro);
  EXPECT_TRUE(store_->GetRecording("later").ok());
}

TEST_F(StoreTest, SecondWriterInThisProcessGetsAClearError) {
  StoreOptions opts;
  opts.path = path_;
  auto second = Store::Open(opts);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kIOError);
  EXPECT_THAT(second.status().message(),
              HasSubstr("store " + path_ + " is in use by another Blackbox process"));
}

TEST_F(StoreTest, SyncWritesRoundTrip) {
  StoreOptions opts;
  opts.sync_writes = true;
  opts.zstd_level = 19;
  Reopen(opts);
  AppendChunks("rec", 2, 5000);
  EXPECT_FALSE(store_->VerifyRrChain("rec")->first_bad.has_value());
}

// The cross-process tests re-run this binary with a child-mode test selected by environment.
std::string SelfExe() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "";
  return std::string(buf, static_cast<size_t>(n));
}

// Runs the child test with BB_STORE_CHILD=mode:path; returns its exit status and output.
std::pair<int, std::string> RunChild(const std::string& mode, const std::string& path) {
  std::string cmd = "BB_STORE_CHILD='" + mode + ":" + path + "' '" + SelfExe() +
                    "' --gtest_also_run_disabled_tests --gtest_filter=StoreChild.DISABLED_Run 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return {-1, ""};
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = ::pclose(p);
  return {status, out};
}

TEST(StoreChild, DISABLED_Run) {
  const char* env = std::getenv("BB_STORE_CHILD");
  if (env == nullptr) GTEST_SKIP() << "only run by the cross-process tests";
  std::string arg = env;
  std::string mode = arg.substr(0, arg.find(':'));
  StoreOptions opts;
  opts.path = arg.substr(arg.find(':') + 1);
  auto store = Store::Open(opts);
  if (mode == "lock") {
    ASSERT_FALSE(store.ok());
    std::printf("CHILD-STATUS %s\n", store.status().ToString().c_str());
    std::fflush(stdout);
    return;
  }
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_TRUE((*store)->PutRecording(MakeRecording("crashed", 1)).ok());
  ASSERT_TRUE((*store)->AppendRrChunk("crashed", RrChunkInfo{}, MakeRaw(1, 10000)).ok());
  ASSERT_TRUE((*store)->PutEvent("crashed", 1, {{"kind", "last words"}}).ok());
  std::fflush(stdout);
  ::kill(::getpid(), SIGKILL);  // no close, no flush
}

TEST_F(StoreTest, SecondWriterProcessGetsAClearError) {
  auto [status, out] = RunChild("lock", path_);
  EXPECT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("CHILD-STATUS I/O error: store " + path_ +
                             " is in use by another Blackbox process"));
}

TEST_F(StoreTest, WritesSurviveAKilledWriter) {
  Close();
  auto [status, out] = RunChild("crash", path_);
  EXPECT_NE(status, 0) << out;  // killed
  Reopen();
  EXPECT_TRUE(store_->GetRecording("crashed").ok());
  auto report = store_->VerifyRrChain("crashed");
  EXPECT_EQ(report->chunks, 1u);
  EXPECT_FALSE(report->first_bad.has_value());
  EXPECT_EQ(store_->ListEvents("crashed")->size(), 1u);
}

}  // namespace
}  // namespace blackbox::store_test
