#include "common/hash.h"

#include <gtest/gtest.h>

#include "common/clock.h"

namespace blackbox {
namespace {

TEST(HashTest, KnownVectors) {
  EXPECT_EQ(ToHex(Sha256Of("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(ToHex(Sha256Of("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 h;
  h.Update("a");
  h.Update("bc");
  EXPECT_EQ(h.Finish(), Sha256Of("abc"));
}

TEST(HashTest, HexRoundTrip) {
  auto d = Sha256Of("x");
  auto back = Sha256FromHex(ToHex(d));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, d);
  EXPECT_FALSE(Sha256FromHex("zz").ok());
  EXPECT_FALSE(Sha256FromHex(std::string(64, 'g')).ok());
}

TEST(ClockTest, Durations) {
  EXPECT_EQ(ParseDurationNanos("30s"), 30'000'000'000);
  EXPECT_EQ(ParseDurationNanos("1.5s"), 1'500'000'000);
  EXPECT_EQ(ParseDurationNanos("2m"), 120'000'000'000);
  EXPECT_EQ(ParseDurationNanos("250ms"), 250'000'000);
  EXPECT_EQ(ParseDurationNanos("5"), 5'000'000'000);
  EXPECT_EQ(ParseDurationNanos("x"), -1);
  EXPECT_EQ(ParseDurationNanos("3y"), -1);
  EXPECT_EQ(ParseDurationNanos("-1s"), -1);
}

TEST(ClockTest, Times) {
  int64_t t = ParseTimeNanos("2026-11-21T22:10:05.5Z", 0);
  EXPECT_EQ(FormatWallTime(t), "2026-11-21T22:10:05.500Z");
  EXPECT_EQ(ParseTimeNanos("+10s", 1000), 1000 + 10'000'000'000);
  EXPECT_EQ(ParseTimeNanos("yesterday", 0), -1);
  EXPECT_EQ(ParseTimeNanos("2026-13-01T00:00:00Z", 0), -1);
}

}  // namespace
}  // namespace blackbox
