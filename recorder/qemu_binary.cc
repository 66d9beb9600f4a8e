#include "recorder/qemu_binary.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <tuple>

#include "common/files.h"
#include "common/hash.h"
#include "common/process.h"

#ifndef BB_DEFAULT_PATCHED_QEMU
#error "BB_DEFAULT_PATCHED_QEMU must name the build's patched QEMU (see recorder/CMakeLists.txt)"
#endif

namespace blackbox {
namespace {

// A bare name is looked up in PATH, as execvp would.
std::string FindInPath(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// Hashing a 60 MB binary takes a fraction of a second; a lab identifies the
// same binary once per VM, so the result is kept per (path, size, mtime).
struct CacheKey {
  std::string path;
  off_t size;
  int64_t mtime_ns;
  bool operator<(const CacheKey& o) const {
    return std::tie(path, size, mtime_ns) < std::tie(o.path, o.size, o.mtime_ns);
  }
};
std::mutex cache_mu;
std::map<CacheKey, QemuIdentity> cache;

std::string Short(const std::string& sha) { return sha.substr(0, 12); }

std::string Describe(const QemuIdentity& id) {
  std::string s = id.resolved.empty() ? id.binary : id.resolved;
  if (!id.version.empty()) s += " (" + id.version + ", sha256 " + Short(id.sha256) + ")";
  return s;
}

std::string Str(const nlohmann::json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}

}  // namespace

std::string DefaultQemuBinary() {
  if (const char* q = std::getenv("BLACKBOX_QEMU"); q != nullptr && *q != '\0') return q;
  return BB_DEFAULT_PATCHED_QEMU;
}

StatusOr<QemuIdentity> IdentifyQemu(const std::string& binary) {
  if (binary.empty()) return InvalidArgument("no QEMU binary given");
  const std::string found = FindInPath(binary);
  struct stat st {};
  if (found.empty() || ::stat(found.c_str(), &st) != 0) {
    if (binary == BB_DEFAULT_PATCHED_QEMU) {
      return NotFound("Blackbox's QEMU is not built: no " + binary +
                      " (scripts/setup.sh builds it, or qemu-patches/build.sh); "
                      "--qemu or $BLACKBOX_QEMU names another");
    }
    return NotFound("no QEMU binary '" + binary + "'" +
                    (binary.find('/') == std::string::npos ? " in PATH" : ""));
  }
  std::error_code ec;
  const std::string resolved = std::filesystem::canonical(found, ec).string();
  if (ec) return IOError("cannot resolve " + found + ": " + ec.message());
  const CacheKey key{resolved, st.st_size,
                     static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec};
  {
    std::lock_guard<std::mutex> lock(cache_mu);
    if (auto it = cache.find(key); it != cache.end()) {
      QemuIdentity id = it->second;
      id.binary = binary;
      return id;
    }
  }
  QemuIdentity id;
  id.binary = binary;
  id.resolved = resolved;
  ASSIGN_OR_RETURN(Sha256Digest digest, Sha256File(resolved));
  id.sha256 = ToHex(digest);
  auto out = RunCommand({resolved, "--version"}, std::chrono::seconds(20));
  if (!out.ok()) {
    return out.status().WithContext(resolved + " --version (is it a QEMU binary?)");
  }
  id.version = out->substr(0, out->find('\n'));
  std::lock_guard<std::mutex> lock(cache_mu);
  cache[key] = id;
  return id;
}

void WriteQemuIdentity(const QemuIdentity& id, nlohmann::json& into) {
  into["binary"] = id.binary;
  into["resolved"] = id.resolved;
  into["version"] = id.version;
  into["sha256"] = id.sha256;
}

StatusOr<QemuIdentity> ChooseReplayQemu(const nlohmann::json& recorded,
                                        const std::string& requested, bool force) {
  const std::string want = Str(recorded, "sha256");
  const std::string rec_binary = Str(recorded, "binary");
  if (want.empty()) {
    // Recorded before identities were stored: nothing to compare with.
    return IdentifyQemu(!requested.empty()    ? requested
                        : !rec_binary.empty() ? rec_binary
                                              : DefaultQemuBinary());
  }
  QemuIdentity made_by;
  made_by.binary = rec_binary;
  made_by.resolved = Str(recorded, "resolved");
  made_by.version = Str(recorded, "version");
  made_by.sha256 = want;
  const std::string refused_hint =
      "; --force-qemu replays with it anyway (the replay may diverge), "
      "--qemu names the binary that recorded";

  if (!requested.empty()) {
    ASSIGN_OR_RETURN(QemuIdentity id, IdentifyQemu(requested));
    if (id.sha256 == want || force) return id;
    return FailedPrecondition("recorded with QEMU " + Describe(made_by) + ", not with " +
                              Describe(id) + refused_hint);
  }
  std::vector<std::string> candidates;
  for (const std::string& c : {made_by.resolved, rec_binary, DefaultQemuBinary()}) {
    if (!c.empty() && std::find(candidates.begin(), candidates.end(), c) == candidates.end()) {
      candidates.push_back(c);
    }
  }
  std::optional<QemuIdentity> fallback;  // the default, for the message and for --force-qemu
  for (const std::string& c : candidates) {
    auto id = IdentifyQemu(c);
    if (!id.ok()) continue;
    if (id->sha256 == want) return *id;
    if (c == DefaultQemuBinary()) fallback = *id;
  }
  if (force && fallback) return *fallback;
  if (!fallback) {
    return FailedPrecondition("recorded with QEMU " + Describe(made_by) +
                              ", which is no longer there, and the default QEMU (" +
                              DefaultQemuBinary() + ") cannot run" + refused_hint);
  }
  return FailedPrecondition("recorded with QEMU " + Describe(made_by) +
                            ", which is no longer there; the default is " + Describe(*fallback) +
                            refused_hint);
}

}  // namespace blackbox
