// Small helpers shared by the benchmarks.
#pragma once

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

// A VM spec (docs/vm-spec.md) of the test guest in `guest_dir`: 256 MiB, one
// NIC n0 with `mac` and `ip` (/24) in switch segment "bench", kernel command
// line "bb.role=ROLE bb.ip=IP/24 EXTRA".
std::string GuestSpec(const std::string& guest_dir, const std::string& name,
                      const std::string& role, const std::string& ip, const std::string& mac,
                      const std::string& extra);

}  // namespace blackbox::bench
