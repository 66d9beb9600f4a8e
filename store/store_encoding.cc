#include "store/store_encoding.h"

#include <cctype>
#include <limits>

namespace blackbox::store_internal {

namespace {

bool IsIdChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

}  // namespace

const char* OwnerOf(Cf c) {
  if (c == kAlerts) return "store";
  return c >= kCaptures ? "capture" : "recording";
}

std::string Printable(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 80; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      static const char* kDigits = "0123456789abcdef";
      out += "\\x";
      out.push_back(kDigits[c >> 4]);
      out.push_back(kDigits[c & 15]);
    }
  }
  if (s.size() > 80) out += "...";
  return out;
}

// ---- ids and keys ----

Status ValidateId(const std::string& id, const char* what) {
  if (id.empty() || id.size() > kMaxIdLength) {
    return InvalidArgument(std::string(what) + " must be 1 to 128 characters, got " +
                           std::to_string(id.size()));
  }
  for (char c : id) {
    if (!IsIdChar(c)) {
      return InvalidArgument(std::string(what) + " '" + Printable(id) +
                             "' may only contain A-Z a-z 0-9 . _ -");
    }
  }
  return Status::Ok();
}

std::string KeyPrefix(const std::string& id) {
  std::string k = id;
  k.push_back('\0');
  return k;
}

std::string KeyPrefixEnd(const std::string& id) {
  std::string k = id;
  k.push_back('\x01');
  return k;
}

std::string KeyHex(const std::string& id, rocksdb::Slice key_suffix) {
  return ToHex(KeyPrefix(id) + key_suffix.ToString());
}

std::string SeqKey(const std::string& id, uint64_t seq) {
  std::string k = KeyPrefix(id);
  PutBE64(&k, seq);
  return k;
}

std::string TimeKey(std::string prefix, uint64_t time, uint32_t seq) {
  PutBE64(&prefix, time);
  PutBE32(&prefix, seq);
  return prefix;
}

uint64_t EventTime(int64_t wall_ns) { return static_cast<uint64_t>(wall_ns); }

uint64_t FlowTime(int64_t wall_ns) { return static_cast<uint64_t>(wall_ns) ^ (uint64_t{1} << 63); }
int64_t FlowTimeToNs(uint64_t key_time) {
  return static_cast<int64_t>(key_time ^ (uint64_t{1} << 63));
}

// ---- sealed index entries ----

void Seal(std::string* v) { PutDigest(v, Sha256Of(*v)); }

std::string CheckSealed(std::string_view v, const char (&magic)[4], uint8_t version,
                        size_t body_size) {
  if (v.size() < 5 || std::memcmp(v.data(), magic, 4) != 0) {
    return "index entry has bad magic (index corrupted)";
  }
  if (static_cast<uint8_t>(v[4]) != version) {
    return "index entry has unsupported format version " +
           std::to_string(static_cast<uint8_t>(v[4]));
  }
  if (v.size() != body_size + kChecksumSize) {
    return "index entry is " + std::to_string(v.size()) + " bytes, expected " +
           std::to_string(body_size + kChecksumSize) + " (index corrupted)";
  }
  if (Sha256Of(v.substr(0, body_size)) != GetDigest(v.data() + body_size)) {
    return "index entry checksum mismatch (index corrupted)";
  }
  return "";
}

// ---- status conversion ----

Status FromRocks(const rocksdb::Status& s, const std::string& context) {
  std::string m = context + ": " + s.ToString();
  if (s.IsNotFound()) return NotFound(m);
  if (s.IsCorruption()) return Corruption(m);
  if (s.IsInvalidArgument()) return InvalidArgument(m);
  if (s.IsNotSupported()) return FailedPrecondition(m);
  if (s.IsBusy() || s.IsTryAgain() || s.IsTimedOut()) return Unavailable(m);
  return IOError(m);
}

bool ContainsNoCase(std::string haystack, std::string needle) {
  auto lower = [](std::string& s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  };
  lower(haystack);
  lower(needle);
  return haystack.find(needle) != std::string::npos;
}

// ---- JSON ----

std::string DumpJson(const nlohmann::json& j) {
  // `replace` never throws on invalid UTF-8 coming from a guest.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

StatusOr<nlohmann::json> ParseJson(std::string_view text, size_t cap, const std::string& what) {
  if (text.size() > cap) {
    return Corruption(what + ": stored JSON is " + std::to_string(text.size()) +
                      " bytes, above the cap of " + std::to_string(cap));
  }
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return Corruption(what + ": stored JSON does not parse: " + e.what());
  }
}

StatusOr<int64_t> JsonInt64(const nlohmann::json& v, const char* field, const char* owner) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return InvalidArgument(std::string(owner) + " field '" + field + "' is out of range");
    }
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  return InvalidArgument(std::string(owner) + " field '" + field + "' must be an integer");
}

StatusOr<std::string> JsonString(const nlohmann::json& v, const char* field) {
  if (!v.is_string()) {
    return InvalidArgument(std::string("recording field '") + field + "' must be a string");
  }
  return v.get<std::string>();
}

}  // namespace blackbox::store_internal
