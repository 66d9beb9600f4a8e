#include "replay/replay.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio.hpp>
#include <cstdio>
#include <optional>

#include "common/clock.h"
#include "common/files.h"
#include "common/hash.h"
#include "common/process.h"
#include "recorder/qemu_binary.h"
#include "recorder/qemu_instance.h"
#include "recorder/rr_log.h"
#include "recorder/vm_spec.h"

namespace blackbox {

namespace asio = boost::asio;

namespace {

std::atomic<int> g_stop_replays{0};

std::string Str(const nlohmann::json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

// Picks the snapshot replay starts from: "init" (taken before the guest ran)
// or the latest periodic one at or before from_wall_ns.
std::string ChooseSnapshot(const RecordingInfo& info, int64_t from_wall_ns) {
  std::string best = "init";
  if (from_wall_ns <= 0 || !info.extra.contains("snapshots")) return best;
  int64_t best_wall = 0;
  for (const auto& s : info.extra["snapshots"]) {
    int64_t wall = s.value("wall_ns", int64_t{0});
    if (wall <= from_wall_ns && wall > best_wall && s.value("icount", int64_t{-1}) >= 0) {
      best = s.value("name", std::string("init"));
      best_wall = wall;
    }
  }
  return best;
}

// Reads from `peer` until it closes, dropping the bytes.
void DiscardInput(const std::shared_ptr<asio::local::stream_protocol::socket>& peer,
                  const std::shared_ptr<std::vector<char>>& buf) {
  peer->async_read_some(asio::buffer(*buf),
                        [peer, buf](const boost::system::error_code& ec, size_t) {
                          if (!ec) DiscardInput(peer, buf);
                        });
}

}  // namespace

void RequestStopAllReplays() { g_stop_replays.fetch_add(1); }

Status ExportRrLog(const Store& store, const std::string& recording_id, const std::string& path) {
  ASSIGN_OR_RETURN(RecordingInfo info, store.GetRecording(recording_id));
  RETURN_IF_ERROR(CheckReplayable(info));
  std::string header = rr::MakeHeader();
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return ErrnoError("cannot create " + path, errno);
  auto write_all = [&](std::string_view data) { return WriteAll(fd.get(), data, path); };
  RETURN_IF_ERROR(write_all(header));
  RETURN_IF_ERROR(store.ReadRrLog(
      recording_id, [&](const RrChunkInfo&, std::string_view raw) { return write_all(raw); }));
  if (::fsync(fd.get()) != 0) return ErrnoError("fsync " + path, errno);
  return Status::Ok();
}

Status CheckReplayable(const RecordingInfo& info) {
  const nlohmann::json rr = info.extra.value("rr", nlohmann::json::object());
  if (rr.is_object() && !rr.value("enabled", true)) {
    return FailedPrecondition("recording " + info.id +
                              " ran without rr (record: false in its lab): it has a console, "
                              "events and frames, but no execution log to replay");
  }
  return Status::Ok();
}

Status CheckInputs(const RecordingInfo& info) {
  if (!info.extra.contains("inputs")) return Status::Ok();
  for (const auto& in : info.extra["inputs"]) {
    std::string path = Str(in, "path"), role = Str(in, "role"), want = Str(in, "sha256");
    auto got = Sha256File(path);
    if (!got.ok()) {
      return FailedPrecondition(role + " " + path + " is needed for replay but cannot be read: " +
                                got.status().message());
    }
    if (ToHex(*got) != want) {
      return FailedPrecondition(role + " " + path + " changed since recording (sha256 " +
                                ToHex(*got).substr(0, 16) + "..., recorded " + want.substr(0, 16) +
                                "...): replay would diverge");
    }
  }
  return Status::Ok();
}

StatusOr<ReplayResult> ReplayRecording(const Store& store, const std::string& recording_id,
                                       const ReplayOptions& options) {
  ASSIGN_OR_RETURN(RecordingInfo info, store.GetRecording(recording_id));
  if (info.state == "recording") {
    // A live recording's log is still growing; its tail is not in the store yet.
    spdlog::warn("recording {} is still being written; replaying what is stored so far", info.id);
  }
  RETURN_IF_ERROR(CheckReplayable(info));
  if (options.check_inputs) RETURN_IF_ERROR(CheckInputs(info));
  const nlohmann::json recorded_qemu = info.extra.value("qemu", nlohmann::json::object());
  auto chosen_qemu = ChooseReplayQemu(recorded_qemu, options.qemu_binary, options.force_qemu);
  if (!chosen_qemu.ok()) return chosen_qemu.status().WithContext(info.id);
  const QemuIdentity qemu_id = std::move(*chosen_qemu);
  if (Str(recorded_qemu, "sha256").empty()) {
    spdlog::warn(
        "{} names no QEMU identity (recorded before Blackbox stored one); replaying "
        "with {}",
        info.id, qemu_id.resolved);
  } else if (qemu_id.sha256 != Str(recorded_qemu, "sha256")) {
    spdlog::warn("{}: replaying with {} (sha256 {}), not the QEMU that recorded (--force-qemu)",
                 info.id, qemu_id.resolved, qemu_id.sha256.substr(0, 12));
  }
  // The spec's ${VARS} resolve to what they were when it was recorded.
  const nlohmann::json spec_env = info.extra.value("spec_env", nlohmann::json::object());
  for (const auto& [var, value] : spec_env.items()) {
    if (value.is_string()) ::setenv(var.c_str(), value.get<std::string>().c_str(), 1);
  }
  ASSIGN_OR_RETURN(VmSpec spec, ParseVmSpec(Str(info.extra, "spec"), Str(info.extra, "spec_dir")));

  std::optional<TempDir> tmp;
  std::string work = options.work_dir;
  if (work.empty()) {
    ASSIGN_OR_RETURN(TempDir t, TempDir::Create("bb-replay"));
    work = t.path();
    tmp.emplace(std::move(t));
  } else {
    RETURN_IF_ERROR(MakeDirs(work));
  }
  std::string log_path = work + "/rr.log";
  RETURN_IF_ERROR(ExportRrLog(store, recording_id, log_path));

  QemuRunPaths paths;
  paths.rr_log = log_path;
  paths.rr_snapshot = ChooseSnapshot(info, options.from_wall_ns);
  paths.sandbox = options.sandbox;
  paths.gdb_port = options.gdb_port;
  paths.start_paused = options.gdb_port > 0;
  const auto& disks = info.extra.value("disks", nlohmann::json::array());
  for (const auto& d : disks) {
    std::string copy = work + "/disk-" + Str(d, "name") + ".qcow2";
    RETURN_IF_ERROR(CopyFile(Str(d, "overlay"), copy));
    paths.disk_overlays.push_back(copy);
  }
  // A VM with a NIC replays from reset rather than by loading "init": QEMU
  // 7.2's e1000 comes back from a loaded snapshot in a state the recording
  // never had, and the replay stalls within the first million instructions.
  // Starting from reset is the same guest state, so nothing is lost.
  // The disk copies go back to their "init" state, which loading the
  // snapshot would have done.
  if (paths.rr_snapshot == "init" && !spec.nics.empty()) {
    paths.rr_snapshot.clear();
    for (const std::string& disk : paths.disk_overlays) {
      auto reverted = RunCommand({"qemu-img", "snapshot", "-a", "init", disk});
      if (!reverted.ok()) return reverted.status().WithContext("reverting " + disk + " to 'init'");
    }
  }
  std::optional<GuestRamFile> ram_file;
  if (options.hash_final_ram) {
    ASSIGN_OR_RETURN(GuestRamFile ram, GuestRamFile::Create(spec.name, spec.memory_bytes));
    ram_file.emplace(std::move(ram));
    paths.ram_file = ram_file->path();
  }
  paths.state_image = work + "/state.qcow2";
  RETURN_IF_ERROR(CopyFile(Str(info.extra, "state_image"), paths.state_image));
  // Network input comes from the log in replay; the NIC still needs a peer
  // socket to connect to. The peer sends nothing and reads (and discards)
  // everything: a NIC whose output backs up would stall the replayed guest.
  std::vector<std::unique_ptr<asio::local::stream_protocol::acceptor>> nic_sinks;

  asio::io_context io;
  ReplayResult result;
  result.snapshot = paths.rr_snapshot.empty() ? "init" : paths.rr_snapshot;
  Status error;
  Clock& clock = RealClock::Get();
  int64_t start = clock.MonotonicNanos();
  bool exited = false;

  QemuInstance::Callbacks cb;
  cb.on_serial = [&](std::string_view bytes) {
    result.console.append(bytes);
    if (options.echo_console) {
      std::fwrite(bytes.data(), 1, bytes.size(), stdout);
      std::fflush(stdout);
    }
  };
  int64_t qemu_start = 0;
  cb.on_exit = [&](int status) {
    exited = true;
    result.qemu_seconds = (clock.MonotonicNanos() - qemu_start) / 1e9;
    result.qemu_wait_status = status;
    io.stop();
  };
  QemuInstance* qemu_ptr = nullptr;
  cb.on_error = [&](Status s) {
    if (error.ok()) error = s;
    if (qemu_ptr) qemu_ptr->Kill();
  };
  QemuInstance qemu(io, std::move(cb));
  qemu_ptr = &qemu;
  RETURN_IF_ERROR(qemu.Prepare());
  paths.qmp_socket = qemu.qmp_socket();
  paths.serial_file = qemu.serial_file();
  for (size_t i = 0; i < spec.nics.size(); ++i) {
    std::string sock = work + "/nic" + std::to_string(i) + ".sock";
    auto acc = std::make_unique<asio::local::stream_protocol::acceptor>(
        io, asio::local::stream_protocol::endpoint(sock));
    auto peer = std::make_shared<asio::local::stream_protocol::socket>(io);
    acc->async_accept(*peer, [peer](const boost::system::error_code& ec) {
      if (!ec) DiscardInput(peer, std::make_shared<std::vector<char>>(64 * 1024));
    });
    nic_sinks.push_back(std::move(acc));
    paths.nic_sockets.push_back(sock);
  }
  std::vector<std::string> args = BuildQemuArgs(spec, RrMode::kReplay, paths, qemu_id.resolved);
  std::string qemu_log = work + "/qemu-replay.log";
  spdlog::debug("replay: {}", ShellJoin(args));
  std::vector<int> inherit;
  if (ram_file) inherit.push_back(ram_file->fd());
  qemu_start = clock.MonotonicNanos();
  RETURN_IF_ERROR(qemu.Start(args, qemu_log, std::chrono::seconds(60), inherit));

  // Watchdog: QEMU reports its icount; a replay that stops advancing is stuck.
  asio::steady_timer watchdog(io);
  int64_t last_progress = clock.MonotonicNanos();
  uint64_t last_icount = 0;
  bool have_icount = false;
  std::function<void()> arm = [&]() {
    watchdog.expires_after(std::chrono::seconds(1));
    watchdog.async_wait([&](const boost::system::error_code& ec) {
      if (ec || exited) return;
      if (g_stop_replays.load() > 0) {
        result.stop_reason = "stopped by request";
        qemu.Kill();
        return;
      }
      QmpClient* qmp = qemu.qmp();
      if (qmp != nullptr && options.gdb_port == 0) {
        qmp->Execute(
            "query-replay", nullptr,
            [&](StatusOr<nlohmann::json> r) {
              if (!r.ok() || exited) return;
              uint64_t icount = r->value("icount", uint64_t{0});
              if (!have_icount || icount != last_icount) {
                have_icount = true;
                last_icount = icount;
                last_progress = clock.MonotonicNanos();
              }
              result.last_icount = icount;
              if (options.on_progress) options.on_progress(icount, result.console.size());
            },
            std::chrono::seconds(5));
      }
      if (options.stall_timeout_ns > 0 && options.gdb_port == 0 &&
          clock.MonotonicNanos() - last_progress > options.stall_timeout_ns) {
        result.stalled = true;
        result.stop_reason = "replay stalled at icount " + std::to_string(last_icount) + " for " +
                             std::to_string(options.stall_timeout_ns / 1'000'000'000) +
                             " s (inputs differ from the recording?)";
        qemu.Kill();
        return;
      }
      arm();
    });
  };
  arm();
  io.run();
  watchdog.cancel();
  if (options.compare_final_disks && exited) {
    for (size_t i = 0; i < disks.size() && i < paths.disk_overlays.size(); ++i) {
      ReplayResult::DiskCheck check;
      check.name = Str(disks[i], "name");
      // Guest-visible contents (backing chain included), not the files:
      // qcow2 metadata may differ where the guest's data does not.
      auto cmp = RunCommand({"qemu-img", "compare", "-f", "qcow2", "-F", "qcow2",
                             Str(disks[i], "overlay"), paths.disk_overlays[i]},
                            std::chrono::seconds(300));
      if (cmp.ok()) {
        check.identical = true;
      } else {
        check.detail = cmp.status().message();
      }
      result.disks.push_back(std::move(check));
    }
  }

  if (ram_file) {
    if (!exited) {
      result.final_ram_problem = "QEMU did not exit";
    } else if (auto digest = ram_file->Sha256Hex(); digest.ok()) {
      result.final_ram_sha256 = *digest;
    } else {
      result.final_ram_problem = digest.status().message();
    }
  }
  result.wall_seconds = (clock.MonotonicNanos() - start) / 1e9;
  result.qemu_exit = ChildProcess::DescribeWaitStatus(result.qemu_wait_status);
  result.qemu_stderr_tail = TailOfFile(qemu_log, 3);
  if (!error.ok()) return error;
  if (result.stop_reason.empty()) {
    if (result.qemu_stderr_tail.find("error reading the replay data") != std::string::npos) {
      result.stop_reason = "end of stored log (the recording was interrupted)";
    } else {
      result.stop_reason = "QEMU " + result.qemu_exit;
    }
  }
  if (!options.work_dir.empty() && tmp) tmp->Keep();
  return result;
}

StatusOr<VerifyReport> VerifyRecording(const Store& store, const std::string& recording_id,
                                       ReplayOptions options) {
  VerifyReport report;
  ASSIGN_OR_RETURN(RecordingInfo info, store.GetRecording(recording_id));
  RETURN_IF_ERROR(CheckReplayable(info));
  ASSIGN_OR_RETURN(report.chain, store.VerifyRrChain(recording_id));
  if (report.chain.first_bad) {
    report.summary = "FAIL: rr log chunk " + std::to_string(*report.chain.first_bad) + ": " +
                     report.chain.problem;
    return report;
  }
  ASSIGN_OR_RETURN(std::vector<ConsolePiece> pieces, store.ReadConsole(recording_id));
  std::string recorded;
  for (const auto& p : pieces) {
    if (p.offset != recorded.size()) {
      report.summary =
          "FAIL: stored console has a gap at offset " + std::to_string(recorded.size());
      return report;
    }
    recorded += p.bytes;
  }
  ASSIGN_OR_RETURN(auto chunks, store.ListRrChunks(recording_id));
  uint64_t expected = 0;
  for (const auto& c : chunks) expected += c.console_bytes;
  // A log cut right after a serial write: QEMU 7.2's replay reads the event
  // after a char-write before it writes the bytes, so at the end of an
  // interrupted log those bytes are never written. Only that last write is
  // not expected.
  uint64_t unreplayable = 0;
  if (!chunks.empty() && info.state != "complete") {
    ASSIGN_OR_RETURN(std::string last, store.ReadRrChunk(recording_id, chunks.back().seq));
    rr::Parser parser;
    if (parser.Parse(last).ok() && parser.stats().last_event == rr::kCharWrite) {
      unreplayable = std::min(expected, parser.stats().last_console_bytes);
      expected -= unreplayable;
    }
  }
  report.recorded_console = recorded.size();
  report.expected_console = expected;
  if (expected > recorded.size()) {
    report.summary = "FAIL: the log says the guest wrote " + std::to_string(expected) +
                     " console bytes but only " + std::to_string(recorded.size()) + " were stored";
    return report;
  }
  options.from_wall_ns = 0;
  options.gdb_port = 0;
  // The final state is comparable only where the recording ended with the
  // guest (shut down, or stopped by Blackbox): an interrupted recording's
  // replay ends at its last stored event, before where QEMU died.
  const bool complete = info.state == "complete";
  options.compare_final_disks = complete;
  const nlohmann::json final_ram = info.extra.value("final_ram", nlohmann::json::object());
  const std::string recorded_ram = complete ? Str(final_ram, "sha256") : "";
  options.hash_final_ram = !recorded_ram.empty();
  ASSIGN_OR_RETURN(report.replay, ReplayRecording(store, recording_id, options));
  const std::string& replayed = report.replay.console;
  report.replayed_console = replayed.size();
  // (If it was written after all, it is expected again.)
  if (unreplayable > 0 && replayed.size() == expected + unreplayable) {
    expected += unreplayable;
    unreplayable = 0;
  }
  std::string_view want(recorded.data(), expected);
  size_t common = 0;
  while (common < replayed.size() && common < want.size() && replayed[common] == want[common])
    ++common;
  bool same = common == want.size() && replayed.size() == want.size();
  auto show = [](std::string_view s, size_t at) {
    std::string out;
    for (size_t i = at; i < s.size() && i < at + 24; ++i) {
      unsigned char c = static_cast<unsigned char>(s[i]);
      if (c >= 32 && c < 127)
        out += static_cast<char>(c);
      else {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\x%02x", c);
        out += buf;
      }
    }
    return "\"" + out + "\"";
  };
  if (report.replay.stalled) {
    report.summary = "FAIL: " + report.replay.stop_reason + "; console matched for " +
                     std::to_string(common) + " of " + std::to_string(expected) + " bytes";
    report.first_difference = common;
    return report;
  }
  if (!same) {
    report.first_difference = common;
    report.summary = "FAIL: console differs at byte " + std::to_string(common) + " of " +
                     std::to_string(expected) + ": recorded " + show(want, common) + ", replayed " +
                     show(replayed, common) + " (replay ended: " + report.replay.stop_reason + ")";
    return report;
  }

  // Final disks.
  if (!complete) {
    report.disks = "not compared (the recording was interrupted)";
  } else if (report.replay.disks.empty()) {
    report.disks = "none";
  } else {
    for (const auto& d : report.replay.disks) {
      if (!d.identical) {
        report.disks = "disk " + d.name + " differs";
        report.summary =
            "FAIL: console identical, but disk data differs at the end from the "
            "recording's (disk " +
            d.name + "): " + d.detail;
        return report;
      }
    }
    report.disks = std::to_string(report.replay.disks.size()) + " identical";
  }

  // Final RAM.
  if (!complete) {
    report.ram = "not compared (the recording was interrupted)";
  } else if (recorded_ram.empty()) {
    report.ram = "not compared (not stored: recorded by a QEMU without Blackbox's patches)";
  } else if (report.replay.final_ram_sha256.empty()) {
    report.ram = "not compared (" + report.replay.final_ram_problem + ")";
    report.summary = "FAIL: console identical, but the replay's final RAM could not be read: " +
                     report.replay.final_ram_problem;
    return report;
  } else if (report.replay.final_ram_sha256 != recorded_ram) {
    report.ram = "differs";
    report.summary = "FAIL: console identical, but the guest's RAM differs at the end from the "
                     "recording's (sha256 " +
                     report.replay.final_ram_sha256.substr(0, 16) + "..., recorded " +
                     recorded_ram.substr(0, 16) + "...)";
    return report;
  } else {
    report.ram = "identical (" + std::to_string(final_ram.value("bytes", uint64_t{0}) >> 20) +
                 " MiB)";
  }

  report.ok = true;
  report.summary =
      "OK: " + std::to_string(report.chain.chunks) + " chunks chained, console " +
      std::to_string(expected) + " bytes identical" +
      (expected < recorded.size() ? " (log covers " + std::to_string(expected) + " of " +
                                        std::to_string(recorded.size()) + " recorded bytes)"
                                  : "") +
      (unreplayable > 0 ? " (the log ends with a serial write of " + std::to_string(unreplayable) +
                              " byte(s), which QEMU's replay reads past before writing)"
                        : "") +
      ", final disks " + report.disks + ", final RAM " + report.ram + ", replay " +
      std::to_string(report.replay.wall_seconds).substr(0, 5) + " s";
  return report;
}

}  // namespace blackbox
