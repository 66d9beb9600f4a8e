#include "failover/lag_governor.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <string>

#include "common/clock.h"

namespace blackbox {
namespace {

constexpr int64_t kMs = 1'000'000;

// The actions the governor took, in order: "H" for hold, "R" for release.
// Times are offsets from the start of the test on the monotonic clock the
// watchdog uses; its max hold is far away except where a test says so.
class LagGovernorTest : public ::testing::Test {
 protected:
  int64_t At(int64_t offset_ns) const { return t0_ + offset_ns; }

  const int64_t t0_ = RealClock::Get().MonotonicNanos();
  std::string actions_;
  LagGovernor gov_{{50 * kMs, 20 * kMs, 600'000 * kMs},
                   [this] { actions_ += 'H'; },
                   [this] { actions_ += 'R'; }};
};

TEST_F(LagGovernorTest, HoldsAboveTheHoldLagAndReleasesAtTheReleaseLag) {
  gov_.Observe(10 * kMs, At(0));
  gov_.Observe(50 * kMs, At(10 * kMs));  // at the limit: not yet
  EXPECT_EQ(actions_, "");
  gov_.Observe(51 * kMs, At(20 * kMs));
  EXPECT_EQ(actions_, "H");
  EXPECT_TRUE(gov_.held());
  // Still above the release lag: the primary stays held, and is not held twice.
  gov_.Observe(80 * kMs, At(30 * kMs));
  gov_.Observe(21 * kMs, At(40 * kMs));
  EXPECT_EQ(actions_, "H");
  gov_.Observe(20 * kMs, At(65 * kMs));
  EXPECT_EQ(actions_, "HR");
  EXPECT_FALSE(gov_.held());
  EXPECT_EQ(gov_.holds(), 1u);
  EXPECT_EQ(gov_.forced_releases(), 0u);
  EXPECT_EQ(gov_.held_ns(At(100 * kMs)), 45 * kMs);
}

TEST_F(LagGovernorTest, CountsEveryHoldAndTheTimeOfOneStillGoingOn) {
  gov_.Observe(60 * kMs, At(0));
  gov_.Observe(0, At(5 * kMs));
  gov_.Observe(60 * kMs, At(100 * kMs));
  EXPECT_EQ(actions_, "HRH");
  EXPECT_EQ(gov_.holds(), 2u);
  EXPECT_EQ(gov_.held_ns(At(130 * kMs)), 5 * kMs + 30 * kMs);
}

TEST_F(LagGovernorTest, StopReleasesAHeldPrimaryAndEndsGoverning) {
  gov_.Observe(60 * kMs, At(0));
  gov_.Stop(At(7 * kMs));
  EXPECT_EQ(actions_, "HR");
  EXPECT_EQ(gov_.held_ns(At(50 * kMs)), 7 * kMs);
  gov_.Observe(500 * kMs, At(60 * kMs));  // the primary is gone: nothing more is done
  gov_.Stop(At(70 * kMs));
  EXPECT_EQ(actions_, "HR");
}

TEST(LagGovernorDestructionTest, APrimaryIsNotLeftHeld) {
  std::string actions;
  {
    LagGovernor gov(
        {50 * kMs, 20 * kMs, 600'000 * kMs}, [&] { actions += 'H'; }, [&] { actions += 'R'; });
    gov.Observe(90 * kMs, RealClock::Get().MonotonicNanos());
  }
  EXPECT_EQ(actions, "HR");
}

// A follower that cannot say how far it got (it waits for the rest of an
// event the held primary has not written): the hold ends after max_hold_ns
// without any further lag figure.
TEST(LagGovernorWatchdogTest, AHoldNobodyEndsIsReleasedAfterTheMaxHold) {
  std::promise<int64_t> released;
  LagGovernor gov(
      {50 * kMs, 20 * kMs, 30 * kMs}, [] {},
      [&] { released.set_value(RealClock::Get().MonotonicNanos()); });
  const int64_t held_at = RealClock::Get().MonotonicNanos();
  gov.Observe(90 * kMs, held_at);
  auto when = released.get_future();
  ASSERT_EQ(when.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_GE(when.get() - held_at, 30 * kMs);
  EXPECT_FALSE(gov.held());
  EXPECT_EQ(gov.forced_releases(), 1u);
  EXPECT_EQ(gov.holds(), 1u);
}

}  // namespace
}  // namespace blackbox
