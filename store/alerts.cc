// The alerts column family: alerts of every VM, ordered by time (docs/manifest.md).
#include <rocksdb/iterator.h>
#include <rocksdb/slice.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <memory>
#include <utility>

#include "store/store.h"
#include "store/store_impl.h"

namespace blackbox {
namespace {

// Key of an alert: wall_ns (refused when negative, so its two's complement orders like the
// time, as for events) | seq. Alerts belong to no recording or capture: no id prefix.
std::string AlertKey(int64_t wall_ns, uint32_t seq) { return TimeKey("", EventTime(wall_ns), seq); }
std::string AlertId(int64_t wall_ns, uint32_t seq) {
  return std::to_string(wall_ns) + "-" + std::to_string(seq);
}

// Checks that an alert body is an object with string "vm" and "kind". InvalidArgument says
// what is wrong, in one line.
Status CheckAlertBody(const nlohmann::json& body) {
  if (!body.is_object()) return InvalidArgument("an alert must be a JSON object");
  for (const char* field : {"vm", "kind"}) {
    auto it = body.find(field);
    if (it == body.end() || !it->is_string()) {
      return InvalidArgument(std::string("an alert must have a string '") + field + "'");
    }
  }
  return Status::Ok();
}

// Parses an alert id exactly as AlertId writes it: "<wall_ns>-<seq>", both decimal without
// sign, spaces or leading zeros, wall_ns within int64 and seq within uint32.
bool ParseAlertId(std::string_view id, int64_t* wall_ns, uint32_t* seq) {
  auto number = [](std::string_view s, uint64_t max, uint64_t* out) {
    if (s.empty() || (s.size() > 1 && s[0] == '0')) return false;
    if (!std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return false;
    }
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
    return ec == std::errc() && end == s.data() + s.size() && *out <= max;
  };
  const size_t dash = id.find('-');
  if (dash == std::string_view::npos) return false;
  uint64_t w = 0;
  uint64_t q = 0;
  if (!number(id.substr(0, dash), std::numeric_limits<int64_t>::max(), &w) ||
      !number(id.substr(dash + 1), std::numeric_limits<uint32_t>::max(), &q)) {
    return false;
  }
  *wall_ns = static_cast<int64_t>(w);
  *seq = static_cast<uint32_t>(q);
  return true;
}

// Decodes one stored alert (key and value of the alerts column family). Corruption names the
// alert and its key.
StatusOr<StoredAlert> DecodeAlert(rocksdb::Slice key, rocksdb::Slice value) {
  if (key.size() != 12) return Corruption("malformed alerts key " + ToHex(View(key)));
  const uint64_t time = GetBE64(key.data());
  const uint32_t seq = GetBE32(key.data() + 8);
  if (time > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return Corruption("alerts key " + ToHex(View(key)) + " has a negative time");
  }
  StoredAlert a;
  a.wall_ns = static_cast<int64_t>(time);
  a.id = AlertId(a.wall_ns, seq);
  const std::string what = "alert " + a.id + " (key " + ToHex(View(key)) + ")";
  if (value.size() < kAlertHeaderSize) return Corruption(what + ": bad value header (empty)");
  if (static_cast<uint8_t>(value[0]) != kAlertVersion) {
    return Corruption(what + ": bad value header (format version " +
                      std::to_string(static_cast<uint8_t>(value[0])) + ", this binary knows " +
                      std::to_string(kAlertVersion) + ")");
  }
  ASSIGN_OR_RETURN(a.body, ParseJson(View(value).substr(kAlertHeaderSize), kMaxAlertSize, what));
  Status body = CheckAlertBody(a.body);
  if (!body.ok()) return Corruption(what + ": stored alert: " + body.message());
  return a;
}

}  // namespace

// ---- alerts ----

StatusOr<std::string> Store::PutAlert(int64_t wall_ns, const nlohmann::json& body) {
  RETURN_IF_ERROR(impl_->CheckWritable());
  if (wall_ns < 0) {
    return InvalidArgument("alert time " + std::to_string(wall_ns) + " is negative");
  }
  RETURN_IF_ERROR(CheckAlertBody(body));
  std::string value;
  value.push_back(static_cast<char>(kAlertVersion));
  value += DumpJson(body);
  if (value.size() - kAlertHeaderSize > kMaxAlertSize) {
    return ResourceExhausted("alert of " + std::to_string(value.size() - kAlertHeaderSize) +
                             " bytes, above the cap of " + std::to_string(kMaxAlertSize));
  }
  const std::string where = "alert at " + std::to_string(wall_ns);
  ASSIGN_OR_RETURN(uint32_t seq,
                   impl_->PutTimedKey(kAlerts, "", EventTime(wall_ns), wall_ns, value, where));
  return AlertId(wall_ns, seq);
}

StatusOr<std::vector<StoredAlert>> Store::ListAlerts(int64_t since_ns, int64_t until_ns,
                                                     size_t limit) const {
  std::vector<StoredAlert> out;
  // Stored times are never negative.
  since_ns = std::max<int64_t>(since_ns, 0);
  if (until_ns < since_ns) return out;
  std::unique_ptr<rocksdb::Iterator> it = impl_->NewIterator(rocksdb::ReadOptions(), kAlerts);
  for (it->Seek(AlertKey(since_ns, 0)); it->Valid(); it->Next()) {
    if (limit != 0 && out.size() == limit) break;
    // Keys order by time first; a malformed key shorter than a time is reported by DecodeAlert.
    if (it->key().size() >= 8 && GetBE64(it->key().data()) > EventTime(until_ns)) break;
    ASSIGN_OR_RETURN(StoredAlert a, DecodeAlert(it->key(), it->value()));
    out.push_back(std::move(a));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "listing alerts");
  return out;
}

StatusOr<StoredAlert> Store::GetAlert(const std::string& alert_id) const {
  int64_t wall_ns = 0;
  uint32_t seq = 0;
  if (!ParseAlertId(alert_id, &wall_ns, &seq)) {
    return InvalidArgument("malformed alert id '" + Printable(alert_id) +
                           "' (expected <wall_ns>-<seq>)");
  }
  const std::string key = AlertKey(wall_ns, seq);
  std::string value;
  rocksdb::Status s = impl_->Get(rocksdb::ReadOptions(), kAlerts, key, &value);
  if (s.IsNotFound()) return NotFound("no alert '" + alert_id + "'");
  if (!s.ok()) return FromRocks(s, "alert " + alert_id);
  return DecodeAlert(key, value);
}

}  // namespace blackbox
