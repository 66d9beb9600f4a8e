#include "common/process.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>

namespace blackbox {
namespace {

using std::chrono::milliseconds;

TEST(ChildProcessTest, WaitExitedSeesTheExitAndLeavesTheStatusToWait) {
  auto child = ChildProcess::Spawn({"sh", "-c", "exit 3"}, "");
  ASSERT_TRUE(child.ok()) << child.status().ToString();
  ASSERT_TRUE(child->WaitExited(milliseconds(10000)));
  // Not reaped: the pid is still the child's (a zombie), and Wait() gets the status.
  EXPECT_TRUE(child->running());
  EXPECT_EQ(::kill(child->pid(), 0), 0);
  auto status = child->Wait(milliseconds(1000));
  ASSERT_TRUE(status.ok());
  EXPECT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 3);
  EXPECT_TRUE(child->WaitExited(milliseconds(0)));
}

TEST(ChildProcessTest, WaitExitedTimesOutOnAChildStillRunning) {
  auto child = ChildProcess::Spawn({"sleep", "30"}, "");
  ASSERT_TRUE(child.ok()) << child.status().ToString();
  EXPECT_FALSE(child->WaitExited(milliseconds(20)));
  // A stopped child has not exited either.
  child->Signal(SIGSTOP);
  EXPECT_FALSE(child->WaitExited(milliseconds(20)));
  child->Kill();
  EXPECT_FALSE(child->running());
}

}  // namespace
}  // namespace blackbox
