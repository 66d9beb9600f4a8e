// SHA-256 helpers (OpenSSL's libcrypto underneath).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace blackbox {

using Sha256Digest = std::array<uint8_t, 32>;

// Incremental SHA-256. Not thread-safe; one instance per stream.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(std::string_view data);
  void Update(const void* data, size_t size);
  // Finishes the digest; the object must not be updated afterwards.
  Sha256Digest Finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

Sha256Digest Sha256Of(std::string_view data);
std::string ToHex(const Sha256Digest& digest);
std::string ToHex(std::string_view bytes);
// Parses 64 hex characters; InvalidArgument otherwise.
StatusOr<Sha256Digest> Sha256FromHex(std::string_view hex);
// Hashes a whole file, streaming; IOError names the path.
StatusOr<Sha256Digest> Sha256File(const std::string& path);

}  // namespace blackbox
