// Small file-system helpers. All return Status; none throw.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace blackbox {

// Owns a file descriptor; closes it on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.Release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = o.Release();
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void Reset();

 private:
  int fd_ = -1;
};

// Writes all of `data` to `fd`, retrying short writes and EINTR. IOError
// names `what` (usually the path).
Status WriteAll(int fd, std::string_view data, const std::string& what);

// Reads a whole file, refusing files larger than max_bytes (ResourceExhausted).
StatusOr<std::string> ReadFileToString(const std::string& path, size_t max_bytes = 64 << 20);
// Writes via a temporary file, fsync and rename, so readers see old or new, never half.
Status WriteFileAtomic(const std::string& path, std::string_view data);
// mkdir -p.
Status MakeDirs(const std::string& path);
// Copies a file (sparse-friendly, reflink when the file system offers it).
Status CopyFile(const std::string& from, const std::string& to);
bool PathExists(const std::string& path);
// Absolute, normalised path; relative paths are taken against `base_dir`.
std::string ResolvePath(const std::string& path, const std::string& base_dir);

// A directory under $TMPDIR (or /tmp) removed with its contents on destruction,
// unless Keep() was called.
class TempDir {
 public:
  static StatusOr<TempDir> Create(const std::string& prefix);
  TempDir(TempDir&&) noexcept;
  TempDir& operator=(TempDir&&) noexcept;
  ~TempDir();
  const std::string& path() const { return path_; }
  void Keep() { keep_ = true; }

 private:
  TempDir() = default;
  std::string path_;
  bool keep_ = false;
};

}  // namespace blackbox
