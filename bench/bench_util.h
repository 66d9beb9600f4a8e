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

}  // namespace blackbox::bench
