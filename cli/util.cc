#include "cli/util.h"

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "common/files.h"

namespace blackbox::cli {

int Report(const Status& s) {
  std::fprintf(stderr, "blackbox: error: %s\n", s.message().c_str());
  switch (s.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kNotFound:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kAlreadyExists:
      return kExitBadInput;
    case StatusCode::kCorruption:
      return kExitFailed;
    default:
      return kExitError;
  }
}

StatusOr<std::unique_ptr<Store>> OpenStore(const GlobalOptions& g, bool read_only) {
  StoreOptions o;
  o.path = g.data_dir + "/store";
  o.read_only = read_only;
  o.sync_writes = g.sync_writes;
  if (read_only && !PathExists(o.path + "/CURRENT")) {
    return NotFound("no store at " + o.path + " (nothing recorded yet; --data or $BLACKBOX_DATA?)");
  }
  if (!read_only) RETURN_IF_ERROR(MakeDirs(g.data_dir));
  auto store = Store::Open(o);
  // A store a recorder is creating this very moment may lack its column
  // families for a few milliseconds: a reader tries again before failing.
  for (int i = 0; read_only && !store.ok() && i < 10; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    store = Store::Open(o);
  }
  return store;
}

// Opens the store read-only and resolves a recording id or prefix.
StatusOr<std::pair<std::unique_ptr<Store>, std::string>> OpenRecording(const GlobalOptions& g,
                                                                       const std::string& id_arg) {
  auto store = OpenStore(g, true);
  if (!store.ok()) {
    if (store.status().code() == StatusCode::kNotFound) {
      return NotFound("no recording '" + id_arg + "': nothing recorded in " + g.data_dir + " yet");
    }
    return store.status();
  }
  ASSIGN_OR_RETURN(std::string id, (*store)->ResolveRecordingId(id_arg));
  return std::make_pair(std::move(*store), id);
}

StatusOr<std::optional<RecordingInfo>> FindRecording(
    const Store& store, const std::string& target,
    const std::function<bool(const RecordingInfo&)>& filter) {
  if (auto exact = store.GetRecording(target); exact.ok()) return std::optional(*exact);
  ASSIGN_OR_RETURN(auto all, store.ListRecordings());
  for (auto it = all.rbegin(); it != all.rend(); ++it) {  // newest first
    if (it->vm_name == target && (!filter || filter(*it))) return std::optional(*it);
  }
  auto id = store.ResolveRecordingId(target);
  if (id.ok()) {
    ASSIGN_OR_RETURN(RecordingInfo info, store.GetRecording(*id));
    return std::optional(std::move(info));
  }
  if (id.status().code() == StatusCode::kNotFound) return std::optional<RecordingInfo>();
  return id.status();
}

// A recording whose recorder process is gone but never finalised it.
std::string EffectiveState(const RecordingInfo& info) {
  if (info.state != "recording") return info.state;
  int pid = info.extra.value("recorder_pid", 0);
  if (pid > 0 && ::kill(pid, 0) == 0) return "recording";
  return "interrupted*";
}

std::string HumanBytes(double b) {
  char buf[32];
  if (b >= 1e9)
    std::snprintf(buf, sizeof buf, "%.1fG", b / 1e9);
  else if (b >= 1e6)
    std::snprintf(buf, sizeof buf, "%.1fM", b / 1e6);
  else if (b >= 1e3)
    std::snprintf(buf, sizeof buf, "%.1fK", b / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f", b);
  return buf;
}

}  // namespace blackbox::cli
