#include "common/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace blackbox {

namespace fs = std::filesystem;

void UniqueFd::Reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

StatusOr<std::string> ReadFileToString(const std::string& path, size_t max_bytes) {
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  if (ec) return IOError("cannot read " + path + ": " + ec.message());
  if (size > max_bytes) {
    return ResourceExhausted(path + " is " + std::to_string(size) + " bytes, over the limit of " +
                             std::to_string(max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoError("cannot open " + path, errno);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Status WriteAll(int fd, std::string_view data, const std::string& what) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("cannot write " + what, errno);
    }
    off += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status WriteFileAtomic(const std::string& path, std::string_view data) {
  std::string tmp = path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return ErrnoError("cannot create " + tmp, errno);
  RETURN_IF_ERROR(WriteAll(fd.get(), data, tmp));
  if (::fsync(fd.get()) != 0) return ErrnoError("fsync " + tmp, errno);
  fd.Reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoError("rename to " + path, errno);
  return Status::Ok();
}

Status MakeDirs(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return IOError("cannot create directory " + path + ": " + ec.message());
  return Status::Ok();
}

Status CopyFile(const std::string& from, const std::string& to) {
  std::string cmd = "cp --reflink=auto --sparse=always -- '" + from + "' '" + to + "'";
  if (from.find('\'') != std::string::npos || to.find('\'') != std::string::npos) {
    return InvalidArgument("path contains a quote: " + from + " -> " + to);
  }
  int rc = std::system(cmd.c_str());
  if (rc != 0) return IOError("cannot copy " + from + " to " + to);
  return Status::Ok();
}

bool PathExists(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

std::string ResolvePath(const std::string& path, const std::string& base_dir) {
  fs::path p(path);
  if (p.is_relative()) p = fs::path(base_dir) / p;
  return p.lexically_normal().string();
}

StatusOr<TempDir> TempDir::Create(const std::string& prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/" + prefix + "-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return ErrnoError("mkdtemp " + tmpl, errno);
  TempDir d;
  d.path_ = tmpl;
  return d;
}

TempDir::TempDir(TempDir&& o) noexcept : path_(std::move(o.path_)), keep_(o.keep_) {
  o.path_.clear();
}

TempDir& TempDir::operator=(TempDir&& o) noexcept {
  if (this != &o) {
    path_ = std::move(o.path_);
    keep_ = o.keep_;
    o.path_.clear();
  }
  return *this;
}

TempDir::~TempDir() {
  if (!path_.empty() && !keep_) {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
}

}  // namespace blackbox
