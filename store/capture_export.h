// Exports of a switch capture (Store::ReadFrames) as pcapng.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "store/store.h"

namespace blackbox {

struct PcapngExportStats {
  uint64_t frames = 0;
  uint64_t dropped = 0;  // frames written with a "dropped: ..." comment
  uint32_t interfaces = 0;
};

// Writes the frames of `capture_id` matching `query` to `path` as pcapng:
// one Interface Description Block per entry of `ports` (id, name), in that
// order, each frame on the interface of its ingress port (a port missing
// from `ports` gets an interface named "port<ID>" when first needed),
// nanosecond timestamps, and the comment "dropped: <reason>" on frames the
// switch dropped. The file is written beside `path` and renamed into place
// only when complete, so a failed export leaves no partial file.
StatusOr<PcapngExportStats> ExportCapturePcapng(
    const Store& store, const std::string& capture_id,
    const std::vector<std::pair<uint32_t, std::string>>& ports, const FrameQuery& query,
    const std::string& path);

}  // namespace blackbox
