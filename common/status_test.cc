#include "common/status.h"

#include <gtest/gtest.h>

namespace blackbox {
namespace {

StatusOr<int> Half(int x) {
  if (x % 2) return InvalidArgument("odd");
  return x / 2;
}
StatusOr<int> Quarter(int x) {
  ASSIGN_OR_RETURN(int h, Half(x));
  ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}
Status Check(int x) {
  RETURN_IF_ERROR(Half(x).status());
  return Status::Ok();
}

TEST(StatusTest, MacrosPropagate) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Check(2).ok());
  EXPECT_EQ(Check(3).message(), "odd");
}

TEST(StatusTest, ContextAndToString) {
  Status s = NotFound("no x").WithContext("loading y");
  EXPECT_EQ(s.message(), "loading y: no x");
  EXPECT_EQ(s.ToString(), "not found: loading y: no x");
  EXPECT_EQ(Status::Ok().ToString(), "OK");
}

}  // namespace
}  // namespace blackbox
