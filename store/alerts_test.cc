// Tests of alerts.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <limits>
#include <thread>

#include "store/store.h"
#include "store/store_test_util.h"

namespace blackbox::store_test {
namespace {

using ::testing::HasSubstr;

// ---- alerts ----

// The documented key of an alert: wall_ns u64 | seq u32, no id prefix.
std::string AlertKey(uint64_t wall_ns, uint32_t seq) {
  std::string k;
  PutBE(&k, wall_ns, 8);
  PutBE(&k, seq, 4);
  return k;
}

constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

TEST_F(StoreTest, AlertsPutListGetInTimeOrder) {
  using V = std::vector<std::string>;
  auto put = [&](int64_t wall_ns, const std::string& name) {
    auto id = store_->PutAlert(wall_ns, Alert("web", "unexpected-port", name));
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    return id.ok() ? *id : "";
  };
  EXPECT_EQ(put(300, "a"), "300-0");
  EXPECT_EQ(put(100, "b"), "100-0");
  EXPECT_EQ(put(300, "c"), "300-1");  // same time: after a
  EXPECT_EQ(put(100, "d"), "100-1");
  EXPECT_EQ(put(256, "e"), "256-0");
  EXPECT_EQ(put(0, "f"), "0-0");
  EXPECT_EQ(put(1000, "g"), "1000-0");  // sorts by time, not like its id's text
  EXPECT_EQ(put(255, "h"), "255-0");
  EXPECT_EQ(put(300, "i"), "300-2");
  // Events at the same times are another list and take no alert seqs.
  ASSERT_TRUE(store_->PutEvent("rec", 300, {{"kind", "x"}}).ok());

  auto all = store_->ListAlerts();
  EXPECT_EQ(AlertNames(all), (V{"f", "b", "d", "h", "e", "a", "c", "i", "g"}));
  ASSERT_EQ(all->size(), 9u);
  EXPECT_EQ((*all)[2].id, "100-1");
  EXPECT_EQ((*all)[2].wall_ns, 100);
  EXPECT_EQ((*all)[2].body, Alert("web", "unexpected-port", "d"));  // the whole body comes back

  // Inclusive ranges.
  EXPECT_EQ(AlertNames(store_->ListAlerts(100, 256)), (V{"b", "d", "h", "e"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(101, 299)), (V{"h", "e"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(300, 300)), (V{"a", "c", "i"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(kMin, 99)), (V{"f"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(kMin, 0)), (V{"f"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(301)), (V{"g"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(1001)), V{});
  EXPECT_EQ(AlertNames(store_->ListAlerts(kMin, -1)), V{});
  EXPECT_EQ(AlertNames(store_->ListAlerts(200, 100)), V{});  // inverted
  // Limits keep the oldest.
  EXPECT_EQ(AlertNames(store_->ListAlerts(kMin, kMax, 2)), (V{"f", "b"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(100, kMax, 3)), (V{"b", "d", "h"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(300, 300, 2)), (V{"a", "c"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(300, 300, 1)), (V{"a"}));
  EXPECT_EQ(store_->ListAlerts(kMin, kMax, 100)->size(), 9u);
  EXPECT_EQ(store_->ListAlerts(kMin, kMax, 0)->size(), 9u);

  auto got = store_->GetAlert("300-1");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->id, "300-1");
  EXPECT_EQ(got->wall_ns, 300);
  EXPECT_EQ(got->body, Alert("web", "unexpected-port", "c"));
  EXPECT_EQ(store_->GetAlert("0-0")->body["name"], "f");
  // Every listed id gets its alert back.
  for (const auto& a : *all) EXPECT_EQ(store_->GetAlert(a.id)->body, a.body) << a.id;

  // seq assignment continues after a reopen; extreme times work.
  Reopen();
  EXPECT_EQ(put(300, "j"), "300-3");
  EXPECT_EQ(put(1700000000123456789, "k"), "1700000000123456789-0");
  EXPECT_EQ(put(kMax, "l"), "9223372036854775807-0");
  EXPECT_EQ(AlertNames(store_->ListAlerts(300, 300)), (V{"a", "c", "i", "j"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(1001)), (V{"k", "l"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(kMax, kMax)), (V{"l"}));
  EXPECT_EQ(store_->GetAlert("9223372036854775807-0")->body["name"], "l");
}

TEST_F(StoreTest, ConcurrentAlertsGetDistinctIds) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        EXPECT_TRUE(store_->PutAlert(42, Alert("vm", "k", std::to_string(t))).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  auto alerts = store_->ListAlerts();
  ASSERT_EQ(alerts->size(), 100u);
  for (uint32_t i = 0; i < 100; ++i) EXPECT_EQ((*alerts)[i].id, "42-" + std::to_string(i));
}

TEST_F(StoreTest, InvalidAlertsAreRejected) {
  auto invalid = [&](int64_t wall_ns, const nlohmann::json& body, const std::string& what) {
    auto r = store_->PutAlert(wall_ns, body);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << body;
    EXPECT_THAT(r.status().message(), HasSubstr(what)) << body;
    EXPECT_EQ(r.status().message().find('\n'), std::string::npos) << r.status().message();
  };
  invalid(1, nlohmann::json::array(), "JSON object");
  invalid(1, "web", "JSON object");
  invalid(1, nullptr, "JSON object");
  invalid(1, {{"kind", "x"}}, "'vm'");
  invalid(1, {{"vm", "web"}}, "'kind'");
  invalid(1, {{"vm", 7}, {"kind", "x"}}, "'vm'");
  invalid(1, {{"vm", "web"}, {"kind", nullptr}}, "'kind'");
  invalid(1, {{"vm", "web"}, {"kind", {"x"}}}, "'kind'");
  invalid(-1, Alert("web", "x", "neg"), "negative");
  invalid(kMin, Alert("web", "x", "neg"), "negative");
  nlohmann::json big = Alert("web", "x", "big");
  big["pad"] = std::string(1u << 20, 'x');
  EXPECT_EQ(store_->PutAlert(1, big).status().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(store_->ListAlerts()->empty());
  // Just under the cap is fine.
  nlohmann::json fits = Alert("web", "x", "fits");
  fits["pad"] = "";
  fits["pad"] = std::string((1u << 20) - fits.dump().size(), 'x');
  ASSERT_EQ(fits.dump().size(), 1u << 20);
  EXPECT_TRUE(store_->PutAlert(1, fits).ok());
  EXPECT_EQ(store_->ListAlerts()->size(), 1u);
}

TEST_F(StoreTest, MalformedAndUnknownAlertIds) {
  std::vector<std::string> malformed = {"", "abc", "5", "5-", "-0", "-5-0", "5-0-0", "5--1"};
  // Not exactly as PutAlert writes ids: leading zeros, signs, spaces, other separators.
  for (const char* bad : {"05-0", "5-00", "5-01", "+5-0", "5-+0", " 5-0", "5-0 ", "5 -0"}) {
    malformed.push_back(bad);
  }
  for (const char* bad : {"5_0", "5-0\n", "0x5-0", "5.0-0"}) malformed.push_back(bad);
  // Out of range: wall_ns above int64, seq above uint32.
  for (const char* bad : {"9223372036854775808-0", "99999999999999999999999-0", "5-4294967296"}) {
    malformed.push_back(bad);
  }
  for (const std::string& bad : malformed) {
    auto r = store_->GetAlert(bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << "'" << bad << "'";
    EXPECT_THAT(r.status().message(), HasSubstr("(expected <wall_ns>-<seq>)")) << bad;
  }
  EXPECT_EQ(store_->GetAlert("abc").status().message(),
            "malformed alert id 'abc' (expected <wall_ns>-<seq>)");
  // Control characters are escaped, so the message stays one line.
  EXPECT_EQ(store_->GetAlert("5-0\n").status().message(),
            "malformed alert id '5-0\\x0a' (expected <wall_ns>-<seq>)");

  auto not_found = [&](const std::string& id) {
    auto r = store_->GetAlert(id);
    EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << id;
    EXPECT_THAT(r.status().message(), HasSubstr("'" + id + "'"));
  };
  not_found("5-0");
  ASSERT_EQ(*store_->PutAlert(5, Alert("web", "x", "five")), "5-0");
  EXPECT_TRUE(store_->GetAlert("5-0").ok());
  not_found("5-1");
  not_found("4-0");
  not_found("0-0");
  not_found("9223372036854775807-4294967295");
}

TEST_F(StoreTest, AlertValuesMatchTheDocumentedLayoutAndAreChecked) {
  ASSERT_TRUE(store_->PutAlert(5, Alert("web", "x", "a")).ok());
  ASSERT_TRUE(store_->PutAlert(5, Alert("db", "y", "b")).ok());
  ASSERT_TRUE(store_->PutAlert(9, Alert("web", "z", "c")).ok());
  Close();
  {
    RawDb raw(path_);
    std::string v = raw.Get("alerts", AlertKey(5, 1));
    ASSERT_GT(v.size(), 1u);
    EXPECT_EQ(v[0], '\x01');  // format version
    EXPECT_EQ(nlohmann::json::parse(v.substr(1)), Alert("db", "y", "b"));
    EXPECT_TRUE(raw.Has("alerts", AlertKey(9, 0)));
    raw.Put("alerts", AlertKey(5, 1), "\x01{oops");
  }
  Reopen();
  auto expect_corrupt = [&](const std::string& id, const std::string& what) {
    auto list = store_->ListAlerts();
    EXPECT_EQ(list.status().code(), StatusCode::kCorruption) << what;
    EXPECT_THAT(list.status().message(), HasSubstr(what));
    if (id.empty()) return;
    auto one = store_->GetAlert(id);
    EXPECT_EQ(one.status().code(), StatusCode::kCorruption) << what;
    EXPECT_THAT(one.status().message(), HasSubstr(what));
  };
  // The message names the alert and its key.
  expect_corrupt("5-1", "alert 5-1 (key 000000000000000500000001): stored JSON does not parse");
  // Reads that do not reach the bad alert still work.
  EXPECT_EQ(AlertNames(store_->ListAlerts(6)), (std::vector<std::string>{"c"}));
  EXPECT_EQ(AlertNames(store_->ListAlerts(kMin, kMax, 1)), (std::vector<std::string>{"a"}));
  EXPECT_EQ(store_->GetAlert("5-0")->body["name"], "a");

  auto store_raw = [&](const std::string& key, const std::string& value) {
    Close();
    {
      RawDb raw(path_);
      raw.Put("alerts", key, value);
    }
    Reopen();
  };
  store_raw(AlertKey(5, 1), "");
  expect_corrupt("5-1", "alert 5-1 (key 000000000000000500000001): bad value header");
  store_raw(AlertKey(5, 1), "\x02" + Alert("db", "y", "b").dump());
  expect_corrupt("5-1", "alert 5-1 (key 000000000000000500000001): bad value header");
  store_raw(AlertKey(5, 1), Alert("db", "y", "b").dump());  // no header
  expect_corrupt("5-1", "alert 5-1 (key 000000000000000500000001): bad value header");
  store_raw(AlertKey(5, 1), "\x01" + nlohmann::json({{"vm", "db"}}).dump());
  expect_corrupt("5-1", "alert 5-1 (key 000000000000000500000001): stored alert: ");
  store_raw(AlertKey(5, 1), "\x01[]");
  expect_corrupt("5-1", "alert 5-1 (key 000000000000000500000001): stored alert: ");
  store_raw(AlertKey(5, 1), "\x01" + Alert("db", "y", "b").dump());  // repaired
  EXPECT_EQ(store_->ListAlerts()->size(), 3u);
  // A key of the wrong length.
  store_raw(std::string("\x00\x00\x00\x00\x00\x00\x00\x07\x00", 9), "\x01{}");
  expect_corrupt("", "malformed alerts key 000000000000000700");
  EXPECT_EQ(store_->ListAlerts(kMin, 6)->size(), 2u);
}

TEST_F(StoreTest, ReadOnlyStoreWithoutAlertsListsNone) {
  ASSERT_TRUE(store_->PutRecording(MakeRecording("rec", 1)).ok());
  Close();
  StoreOptions ro;
  ro.read_only = true;
  Reopen(ro);
  EXPECT_TRUE(store_->ListAlerts()->empty());
  EXPECT_EQ(store_->GetAlert("1-0").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->PutAlert(1, Alert("web", "x", "a")).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST_F(StoreTest, StoreWithoutAlertsFamilyOpens) {
  // A store as written before alerts existed: every other column family, a recording and a
  // flow.
  Close();
  const std::string old_path = dir_->path() + "/old";
  {
    rocksdb::DBOptions o;
    o.create_if_missing = true;
    o.create_missing_column_families = true;
    std::vector<rocksdb::ColumnFamilyDescriptor> descs;
    descs.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
    for (const char* n : kCfs) descs.emplace_back(n, rocksdb::ColumnFamilyOptions());
    for (const char* n : {"captures", "frame_index", "frames", "flows"}) {
      descs.emplace_back(n, rocksdb::ColumnFamilyOptions());
    }
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* db = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(o, old_path, descs, &handles, &db).ok());
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), handles[1], "schema_version", "1").ok());
    ASSERT_TRUE(
        db->Put(rocksdb::WriteOptions(), handles[2], "old", MakeRecording("old", 1).ToJson().dump())
            .ok());
    for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
    ASSERT_TRUE(db->Close().ok());
    delete db;
  }
  path_ = old_path;
  // A reader and a secondary see no alerts.
  StoreOptions ro;
  ro.read_only = true;
  Reopen(ro);
  EXPECT_TRUE(store_->GetRecording("old").ok());
  EXPECT_TRUE(store_->ListAlerts()->empty());
  EXPECT_EQ(store_->GetAlert("1-0").status().code(), StatusCode::kNotFound);
  StoreOptions sec;
  sec.secondary_path = dir_->path() + "/old-secondary";
  Reopen(sec);
  EXPECT_TRUE(store_->GetRecording("old").ok());
  EXPECT_TRUE(store_->ListAlerts()->empty());
  EXPECT_EQ(store_->GetAlert("1-0").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store_->CatchUp().ok());
  // A writer adds the family, even without create_if_missing.
  StoreOptions rw;
  rw.create_if_missing = false;
  Reopen(rw);
  EXPECT_EQ(*store_->PutAlert(1, Alert("web", "x", "a")), "1-0");
  Close();
  {
    RawDb raw(path_);
    EXPECT_TRUE(raw.CfNames().count("alerts"));
  }
  Reopen(ro);
  EXPECT_EQ(AlertNames(store_->ListAlerts()), (std::vector<std::string>{"a"}));
}

}  // namespace
}  // namespace blackbox::store_test
