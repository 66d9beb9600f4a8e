#include "bench/bench_util.h"

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace blackbox::bench {

namespace {
double Seconds(const rusage& ru) {
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}
}  // namespace

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

double CpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return Seconds(ru);
}

double ThreadCpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_THREAD, &ru);
  return Seconds(ru);
}

void Row(const char* name, const std::string& value, const std::string& note) {
  std::printf("  %-44s %14s  %s\n", name, value.c_str(), note.c_str());
}

std::string F(double v, const char* fmt) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double rank = std::ceil(p / 100.0 * static_cast<double>(v.size()));
  const size_t i = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return v[std::min(i, v.size() - 1)];
}

std::string Joined(const std::vector<double>& v, const char* fmt) {
  std::string s;
  for (double x : v) s += (s.empty() ? "" : ", ") + F(x, fmt);
  return s;
}

std::vector<double> PairRatios(const std::vector<double>& subject,
                               const std::vector<double>& base) {
  // One ratio per pair, or the pairing is wrong: a caller bug, not data.
  if (subject.size() != base.size()) {
    std::fprintf(stderr, "bench: internal error: %zu subject runs against %zu baseline runs\n",
                 subject.size(), base.size());
    std::abort();
  }
  std::vector<double> r;
  for (size_t i = 0; i < subject.size(); ++i) {
    if (base[i] > 0) {
      r.push_back(subject[i] / base[i]);
    } else {
      std::fprintf(stderr, "bench: pair %zu left out of a ratio: its baseline is %g\n", i + 1,
                   base[i]);
    }
  }
  return r;
}

std::string MedianSpread(const std::vector<double>& v, const char* fmt, const std::string& unit) {
  if (v.empty()) return "-";
  const std::string median = F(Median(v), fmt) + unit;
  if (v.size() == 1) return median + " (1 pair/run only)";
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  return median + " [" + F(*lo, fmt) + "-" + F(*hi, fmt) + "]";
}

std::string PairRatioText(const std::vector<double>& ratios, const char* fmt) {
  return MedianSpread(ratios, fmt, "x");
}

nlohmann::json PairRatioJson(const std::vector<double>& ratios) {
  if (ratios.empty()) return nullptr;
  const auto [lo, hi] = std::minmax_element(ratios.begin(), ratios.end());
  return {{"median", Median(ratios)}, {"min", *lo}, {"max", *hi}, {"per_pair", ratios}};
}

std::string GuestSpec(const std::string& guest_dir, const std::string& name,
                      const std::string& role, const std::string& ip, const std::string& mac,
                      const std::string& extra) {
  return "name: " + name + "\nkernel: " + guest_dir + "/vmlinuz\ninitrd: " + guest_dir +
         "/initrd.img\nappend: console=ttyS0 quiet panic=-1 bb.role=" + role + " bb.ip=" + ip +
         "/24 " + extra + "\nmemory: 256M\nnics:\n  - {name: n0, mac: \"" + mac +
         "\", segment: bench, ips: [" + ip + "]}\n";
}

}  // namespace blackbox::bench
