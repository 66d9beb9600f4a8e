#include "store/capture_export.h"

#include <cstdio>
#include <map>

#include "store/pcapng.h"

namespace blackbox {

StatusOr<PcapngExportStats> ExportCapturePcapng(
    const Store& store, const std::string& capture_id,
    const std::vector<std::pair<uint32_t, std::string>>& ports, const FrameQuery& query,
    const std::string& path) {
  std::string tmp = path + ".partial";
  ASSIGN_OR_RETURN(std::unique_ptr<PcapngWriter> writer, PcapngWriter::OpenFile(tmp));
  PcapngExportStats stats;
  std::map<uint32_t, uint32_t> interface_of;
  for (const auto& [id, name] : ports) {
    interface_of[id] = writer->AddInterface(
        name, "Blackbox switch port " + std::to_string(id) + " of capture " + capture_id);
  }
  Status read = store.ReadFrames(capture_id, query, [&](const CapturedFrame& f) -> Status {
    auto it = interface_of.find(f.ingress);
    if (it == interface_of.end()) {
      uint32_t iface = writer->AddInterface("port" + std::to_string(f.ingress), "");
      it = interface_of.emplace(f.ingress, iface).first;
    }
    std::string comment;
    if (!f.drop_reason.empty()) {
      comment = "dropped: " + f.drop_reason;
      ++stats.dropped;
    }
    ++stats.frames;
    return writer->WritePacket(
        it->second, f.wall_ns,
        std::span(reinterpret_cast<const uint8_t*>(f.bytes.data()), f.bytes.size()), comment);
  });
  Status finished = writer->Finish();
  if (read.ok()) read = finished;
  if (!read.ok()) {
    std::remove(tmp.c_str());
    return read;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    Status s = ErrnoError("cannot rename " + tmp + " to " + path, errno);
    std::remove(tmp.c_str());
    return s;
  }
  stats.interfaces = writer->interface_count();
  return stats;
}

}  // namespace blackbox
