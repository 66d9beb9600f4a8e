#include "common/clock.h"

#include <time.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace blackbox {

namespace {
int64_t Read(clockid_t id) {
  timespec ts{};
  clock_gettime(id, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}
}  // namespace

int64_t RealClock::WallNanos() { return Read(CLOCK_REALTIME); }
int64_t RealClock::MonotonicNanos() { return Read(CLOCK_MONOTONIC); }
RealClock& RealClock::Get() {
  static RealClock clock;
  return clock;
}

std::string FormatWallTime(int64_t wall_ns) {
  time_t secs = static_cast<time_t>(wall_ns / 1'000'000'000);
  int ms = static_cast<int>((wall_ns / 1'000'000) % 1000);
  tm t{};
  gmtime_r(&secs, &t);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900,
                t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, ms);
  return buf;
}

int64_t ParseDurationNanos(const std::string& text) {
  if (text.empty()) return -1;
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || !std::isfinite(v) || v < 0) return -1;
  std::string unit(end);
  double scale;
  if (unit == "ns")
    scale = 1;
  else if (unit == "us")
    scale = 1e3;
  else if (unit == "ms")
    scale = 1e6;
  else if (unit == "s" || unit.empty())
    scale = 1e9;
  else if (unit == "m")
    scale = 60e9;
  else if (unit == "h")
    scale = 3600e9;
  else
    return -1;
  double ns = v * scale;
  if (ns > 9e18) return -1;
  return static_cast<int64_t>(ns);
}

int64_t ParseTimeNanos(const std::string& text, int64_t base_wall_ns) {
  if (text.empty()) return -1;
  if (text[0] == '+') {
    int64_t d = ParseDurationNanos(text.substr(1));
    return d < 0 ? -1 : base_wall_ns + d;
  }
  int y, mo, d, h, mi;
  double s;
  int n = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%lf%n", &y, &mo, &d, &h, &mi, &s, &n) != 6)
    return -1;
  std::string rest = text.substr(static_cast<size_t>(n));
  if (rest != "Z" && rest != "+00:00") return -1;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s < 0 || s >= 61) return -1;
  tm t{};
  t.tm_year = y - 1900;
  t.tm_mon = mo - 1;
  t.tm_mday = d;
  t.tm_hour = h;
  t.tm_min = mi;
  t.tm_sec = 0;
  time_t secs = timegm(&t);
  return int64_t{secs} * 1'000'000'000 + static_cast<int64_t>(s * 1e9);
}

}  // namespace blackbox
