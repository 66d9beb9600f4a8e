// Subcommands that read switch captures: flows and export --pcapng.
#pragma once

#include <string>
#include <vector>

#include "cli/commands.h"

namespace blackbox::cli {

struct CaptureSelection {
  std::string id;     // recording id or prefix, VM name, or capture id or prefix
  std::string since;  // RFC 3339 UTC or +SECONDS from the capture's start
  std::string until;
  std::vector<std::string> ports;  // "vm/nic" or port ids; empty: all of the target
};

int RunFlows(const GlobalOptions& g, const CaptureSelection& sel, bool json);
int RunExportPcapng(const GlobalOptions& g, const CaptureSelection& sel, const std::string& path);

}  // namespace blackbox::cli
