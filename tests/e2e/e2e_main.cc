// main() of the end-to-end tests: GoogleTest's, plus one rule. A test that
// skips (GTEST_SKIP: QEMU, tshark or the guest missing ...) fails, so that a
// machine that cannot run a test never reports it as passed. (ctest counts a
// GoogleTest skip as no failure.)
#include <gtest/gtest.h>

namespace {

class SkipIsFailure : public testing::EmptyTestEventListener {
  void OnTestEnd(const testing::TestInfo& info) override {
    if (info.result()->Skipped()) {
      ADD_FAILURE() << info.test_suite_name() << "." << info.name()
                    << " skipped: an end-to-end test that cannot run counts as failed";
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  // After the result printer: GoogleTest calls OnTestEnd in the reverse
  // order, so the failure is added before the printer reports the test.
  testing::UnitTest::GetInstance()->listeners().Append(new SkipIsFailure);
  return RUN_ALL_TESTS();
}
