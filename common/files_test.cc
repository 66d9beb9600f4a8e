#include "common/files.h"

#include <gtest/gtest.h>

#include "common/process.h"

namespace blackbox {
namespace {

TEST(FilesTest, AtomicWriteReadAndCap) {
  auto dir = TempDir::Create("bb-files-test");
  ASSERT_TRUE(dir.ok());
  std::string p = dir->path() + "/f";
  ASSERT_TRUE(WriteFileAtomic(p, "hello").ok());
  EXPECT_EQ(*ReadFileToString(p), "hello");
  EXPECT_EQ(ReadFileToString(p, 3).status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(ReadFileToString(dir->path() + "/missing").status().code(), StatusCode::kIOError);
  ASSERT_TRUE(CopyFile(p, p + "2").ok());
  EXPECT_EQ(*ReadFileToString(p + "2"), "hello");
}

TEST(FilesTest, TempDirIsRemoved) {
  std::string path;
  {
    auto dir = TempDir::Create("bb-files-test");
    ASSERT_TRUE(dir.ok());
    path = dir->path();
    EXPECT_TRUE(PathExists(path));
  }
  EXPECT_FALSE(PathExists(path));
}

TEST(FilesTest, ResolvePath) {
  EXPECT_EQ(ResolvePath("a/../b", "/x"), "/x/b");
  EXPECT_EQ(ResolvePath("/abs", "/x"), "/abs");
}

TEST(ProcessTest, RunCommandReportsFailure) {
  auto ok = RunCommand({"sh", "-c", "echo hi"});
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, "hi\n");
  auto bad = RunCommand({"sh", "-c", "echo broken >&2; exit 3"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("exited with status 3"), std::string::npos);
  EXPECT_NE(bad.status().message().find("broken"), std::string::npos);
  EXPECT_FALSE(RunCommand({"/nonexistent/binary"}).ok());
}

TEST(ProcessTest, ShellJoinQuotes) {
  EXPECT_EQ(ShellJoin({"qemu", "-append", "a b", "it's"}), "qemu -append 'a b' 'it'\\''s'");
}

}  // namespace
}  // namespace blackbox
