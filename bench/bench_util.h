// Small helpers shared by the benchmarks.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace blackbox::bench {

double Median(std::vector<double> v);
// CPU seconds (user + system) of this process so far.
double CpuSeconds();
// CPU seconds of the calling thread so far.
double ThreadCpuSeconds();
// One table row: "  name      value  note".
void Row(const char* name, const std::string& value, const std::string& note = "");
// printf-formats one number.
std::string F(double v, const char* fmt = "%.2f");
// The p-th percentile (0..100) of v, nearest rank; 0 for an empty v.
double Percentile(std::vector<double> v, double p);
// The numbers of v printf-formatted, separated by ", " (per-run values next
// to the median that was taken of them).
std::string Joined(const std::vector<double>& v, const char* fmt = "%.2f");

// Element-wise subject[i] / base[i]: the ratios of runs made in pairs
// (subject[i] and base[i] back to back, in the same command), or of two
// figures of one run. Pairs with base[i] <= 0 are left out.
std::vector<double> PairRatios(const std::vector<double>& subject, const std::vector<double>& base);
// "M [lo-hi]": the median of v and its spread, each printf-formatted with
// `fmt`, `unit` after the median; "M (1 run)" for one value, "-" for none.
std::string MedianSpread(const std::vector<double>& v, const char* fmt = "%.2f",
                         const std::string& unit = "");
// MedianSpread of ratios: "1.02x [0.98-1.05]".
std::string PairRatioText(const std::vector<double>& ratios, const char* fmt = "%.2f");
// {"median", "min", "max", "per_pair"} of `ratios` (null for none).
nlohmann::json PairRatioJson(const std::vector<double>& ratios);

// A VM spec (docs/vm-spec.md) of the test guest in `guest_dir`: 256 MiB, one
// NIC n0 with `mac` and `ip` (/24) in switch segment "bench", kernel command
// line "bb.role=ROLE bb.ip=IP/24 EXTRA".
std::string GuestSpec(const std::string& guest_dir, const std::string& name,
                      const std::string& role, const std::string& ip, const std::string& mac,
                      const std::string& extra);

}  // namespace blackbox::bench
