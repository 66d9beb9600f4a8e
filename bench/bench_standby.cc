#include "bench/bench_standby.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "common/clock.h"
#include "common/files.h"
#include "common/net.h"
#include "common/process.h"
#include "failover/lag_governor.h"
#include "failover/log_relay.h"
#include "recorder/qmp_client.h"
#include "switch/frame.h"
#include "switch/frame_builder.h"

namespace blackbox::bench {

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

int64_t MonoNow() { return RealClock::Get().MonotonicNanos(); }

// One QEMU run of the test guest, started directly (no Blackbox recorder):
// the patch series is measured on its own.
struct GuestLine {
  std::vector<std::string> prefix;  // e.g. taskset -c N: what runs QEMU
  std::string qemu;
  std::string rr;    // "" (no record/replay) or "rr=...,rrfile=..."
  std::string role;  // appended to the kernel command line
  std::string serial;
  std::vector<std::string> extra;
};

std::vector<std::string> Argv(const StandbyBenchOptions& o, const GuestLine& g) {
  std::vector<std::string> a = g.prefix;
  a.insert(a.end(), {g.qemu, "-machine", "pc", "-accel", "tcg", "-icount",
                     "shift=auto" + (g.rr.empty() ? "" : "," + g.rr)});
  for (const char* s :
       {"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-m", "256"}) {
    a.push_back(s);
  }
  a.insert(a.end(), {"-kernel", o.guest_dir + "/vmlinuz", "-initrd", o.guest_dir + "/initrd.img",
                     "-append", "console=ttyS0 quiet panic=-1 " + g.role, "-chardev",
                     "file,id=serial0,path=" + g.serial, "-serial", "chardev:serial0"});
  a.insert(a.end(), g.extra.begin(), g.extra.end());
  return a;
}

// The NIC Blackbox gives recorded VMs (e1000 without interrupt mitigation,
// docs/vm-spec.md) on `netdev`, behind filter-replay when `rr`.
std::vector<std::string> Nic(const std::string& netdev, const std::string& mac, bool rr) {
  std::vector<std::string> a = {"-netdev", netdev, "-device",
                                "e1000,mitigation=off,romfile=,netdev=n0,mac=" + mac};
  if (rr) a.insert(a.end(), {"-object", "filter-replay,id=fr0,netdev=n0"});
  return a;
}

std::string Stream(const std::string& sock, bool listen) {
  return "stream,id=n0,server=" + std::string(listen ? "on" : "off") +
         ",addr.type=unix,addr.path=" + sock;
}

// A QMP monitor QEMU serves on `sock`, made with -chardev/-mon: a monitor
// made with -qmp takes part in record/replay (qemu-patches/README.md).
std::vector<std::string> Qmp(const std::string& sock) {
  return {"-chardev", "socket,id=qmp0,path=" + sock + ",server=on,wait=off", "-mon",
          "chardev=qmp0,mode=control"};
}

bool WaitForFileText(const std::string& path, const std::string& text, int64_t timeout_ns,
                     ChildProcess* alive = nullptr) {
  const int64_t deadline = MonoNow() + timeout_ns;
  while (MonoNow() < deadline) {
    auto content = ReadFileToString(path, 64 << 20);
    if (content.ok() && content->find(text) != std::string::npos) return true;
    if (alive && !alive->running()) return false;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return false;
}

std::string ReadOrEmpty(const std::string& path) {
  auto s = ReadFileToString(path, 64 << 20);
  return s.ok() ? *s : "";
}

// Runs a QEMU until it exits (the guest powers off), or until SIGINT after
// `stop_after_s` (> 0). Returns the wall seconds from start to exit.
StatusOr<double> RunQemu(const std::vector<std::string>& argv, const std::string& out,
                         double stop_after_s, int timeout_s) {
  const int64_t start = MonoNow();
  ASSIGN_OR_RETURN(ChildProcess child, ChildProcess::Spawn(argv, out));
  if (stop_after_s > 0) {
    auto early = child.Wait(milliseconds(static_cast<int64_t>(stop_after_s * 1000)));
    if (early.ok()) {
      return Internal(argv[0] + " ended early: " + TailOfFile(out, 3));
    }
    child.Signal(SIGINT);
  }
  auto status = child.Wait(seconds(timeout_s));
  if (!status.ok()) return status.status().WithContext(argv[0] + ": " + TailOfFile(out, 3));
  if (*status != 0) {
    return Internal(argv[0] + " " + ChildProcess::DescribeWaitStatus(*status) + ": " +
                    TailOfFile(out, 3));
  }
  return (MonoNow() - start) / 1e9;
}

enum class Workload { kCpu, kIdle, kNet };
const char* Name(Workload w) {
  return w == Workload::kCpu ? "cpu" : w == Workload::kIdle ? "idle" : "net";
}

struct SpeedRun {
  double record_s = 0, replay_s = 0;
  bool byte_exact = false;
};

constexpr char kClientMac[] = "52:54:00:00:30:02";
constexpr char kServerMac[] = "52:54:00:00:30:01";

// Records a workload with `qemu` into a file and replays it with the same
// binary; compares the consoles.
StatusOr<SpeedRun> RecordAndReplay(const StandbyBenchOptions& o, const std::string& qemu,
                                   Workload w) {
  ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("bb-bench-standby"));
  const std::string d = dir.path();
  GuestLine rec{{}, qemu, "rr=record,rrfile=" + d + "/log.rr", "", d + "/record.serial", {}};
  std::optional<ChildProcess> server;
  double stop_after = 0;
  if (w == Workload::kCpu) {
    rec.role = "bb.role=cpu bb.poweroff=1 bb.rounds=" + std::to_string(o.cpu_rounds);
  } else if (w == Workload::kIdle) {
    rec.role = "bb.role=idle";
    stop_after = o.idle_seconds;
  } else {
    // An HTTP server guest (stock QEMU, not recorded) serves the file; the
    // recorded guest fetches it over a direct -netdev stream link.
    const std::string sock = d + "/link.sock";
    GuestLine web{{},
                  o.stock_qemu,
                  "",
                  "bb.role=http-server bb.bigsize=" + std::to_string(o.net_mib),
                  d + "/server.serial",
                  Nic(Stream(sock, true), kServerMac, false)};
    ASSIGN_OR_RETURN(ChildProcess s, ChildProcess::Spawn(Argv(o, web), d + "/server.out"));
    server.emplace(std::move(s));
    if (!WaitForFileText(web.serial, "BB-READY", 300'000'000'000, &*server)) {
      return Internal("the HTTP server guest did not get ready: " + TailOfFile(web.serial, 3) +
                      TailOfFile(d + "/server.out", 3));
    }
    rec.role = "bb.role=http-client bb.poweroff=1 bb.wait=120";
    rec.extra = Nic(Stream(sock, false), kClientMac, true);
  }
  SpeedRun run;
  ASSIGN_OR_RETURN(run.record_s, RunQemu(Argv(o, rec), d + "/record.out", stop_after, 900));
  if (server) server->Kill();
  const std::string recorded = ReadOrEmpty(rec.serial);
  if (w == Workload::kNet && recorded.find("BB-HTTP-OK") == std::string::npos) {
    return Internal("the network workload did not complete: " + TailOfFile(rec.serial, 3));
  }
  GuestLine rep = rec;
  rep.rr = "rr=replay,rrfile=" + d + "/log.rr";
  rep.serial = d + "/replay.serial";
  if (w == Workload::kNet) {
    // Network input comes from the log; the NIC's peer is gone.
    rep.extra = Nic(Stream(d + "/nobody.sock", false), kClientMac, true);
  }
  ASSIGN_OR_RETURN(run.replay_s, RunQemu(Argv(o, rep), d + "/replay.out", 0, 1800));
  run.byte_exact = ReadOrEmpty(rep.serial) == recorded && !recorded.empty();
  return run;
}

// Records the CPU workload with `qemu`, into a file, or, `streamed`, into a
// pipe that a relay drains (the streamed, flushed log of patch 0001).
// Returns QEMU's wall seconds.
StatusOr<double> RecordCpu(const StandbyBenchOptions& o, const std::string& qemu, bool streamed) {
  ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("bb-bench-standby"));
  const std::string log = dir.path() + (streamed ? "/log.fifo" : "/log.rr");
  if (streamed && ::mkfifo(log.c_str(), 0600) != 0) return Internal("mkfifo " + log);
  std::optional<LogRelay> drain;
  if (streamed) drain.emplace(log, "");
  GuestLine rec{{},
                qemu,
                "rr=record,rrfile=" + log,
                "bb.role=cpu bb.poweroff=1 bb.rounds=" + std::to_string(o.cpu_rounds),
                dir.path() + "/record.serial",
                {}};
  ASSIGN_OR_RETURN(double s, RunQemu(Argv(o, rec), dir.path() + "/record.out", 0, 900));
  if (drain) {
    drain->Join();
    if (!drain->ok()) return Internal("the streamed log did not reach its end");
  }
  return s;
}

// A primary recording into a pipe, a relay, and a follower replaying the
// other end (__org.blackbox_follow=on); a sampler asks the follower how far
// it got every 20 ms.
struct FollowRun {
  std::vector<double> stream_lag_ms, replay_lag_ms;
  double slowest_qmp_ms = 0;  // the follower's slowest answer to the sampler
  double follower_after_primary_s = 0;
  bool byte_exact = false;
  // go-live: end of stream to the go-live point (the backlog the follower
  // still had to replay), and from there to its first live instruction
  double eof_to_live_ms = -1, live_to_exec_ms = -1;
  // probed: end of stream to the live standby's first answer (an ARP reply)
  // to the requests sent to it from the moment the primary was killed
  double eof_to_answer_ms = -1;
  bool went_on_live = false;
  std::string final_console;
  // the primary's run (start to exit), and, governed, how often and how long
  // it was held back for its follower
  double primary_s = 0;
  uint64_t holds = 0, forced = 0;  // forced: released by the governor's watchdog
  double held_s = 0;
};

// Connects to the QMP monitor of a QEMU that may still be starting (its
// socket may not be there yet), trying every 10 ms until `give_up()` is true;
// then returns the last error.
StatusOr<QmpSyncClient> ConnectQmpWhileStarting(const std::string& path,
                                                const std::function<bool()>& give_up) {
  while (true) {
    auto c = QmpSyncClient::Connect(path, seconds(2));
    if (c.ok() || give_up()) return c;
    std::this_thread::sleep_for(milliseconds(10));
  }
}

constexpr char kTraceHeader[] =
    "run,mono_ms,t_ms,qmp_ms,consumed_bytes,published_bytes,read_bytes,hard_waits,lag_ms,"
    "replayable_lag_ms,primary_held\n";

// With a governor, every lag figure is also handed to it, and the follower
// is asked every 10 ms instead of 20 (a held primary is released sooner).
class Sampler {
 public:
  // trace: if not null, every sample is appended to it as a CSV row
  // (kTraceHeader) that starts with `label`.
  Sampler(const std::string& qmp_path, const LogRelay& relay, LagGovernor* governor,
          std::FILE* trace, std::string label, int64_t origin_ns)
      : relay_(relay),
        governor_(governor),
        interval_(milliseconds(governor ? 10 : 20)),
        trace_(trace),
        label_(std::move(label)),
        start_ns_(origin_ns) {
    thread_ = std::thread([this, qmp_path] { Run(qmp_path); });
  }
  ~Sampler() { Stop(); }
  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  // After Stop().
  const std::vector<double>& stream_lag_ms() const { return stream_; }
  const std::vector<double>& replay_lag_ms() const { return replay_; }
  // The longest the follower took to answer a sample's query (the lag
  // trace's qmp_ms), while it followed.
  double slowest_answer_ms() const { return slowest_ms_; }
  // The follower's last answer (null before the first).
  nlohmann::json last() const {
    std::lock_guard<std::mutex> lock(mu_);
    return last_;
  }

 private:
  void Run(const std::string& path) {
    auto qmp = ConnectQmpWhileStarting(path, [this] { return stop_.load(); });
    if (!qmp.ok()) return;  // stopped before the follower listened
    int live_polls = 0;
    while (!stop_.load()) {
      const int64_t asked = MonoNow();
      auto info = qmp->Execute("__org.blackbox_query-replay-follow", nullptr, seconds(5));
      if (!info.ok()) break;  // the follower exited
      const int64_t now = MonoNow();
      const bool live = (*info)["live"].get<bool>();
      if (live && !info->contains("first-live-exec-ns") && ++live_polls < 50) {
        // Live, but the vCPU has not executed yet: ask again.
        std::this_thread::sleep_for(interval_);
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        last_ = *info;
      }
      if (live) break;
      const uint64_t consumed = (*info)["consumed-bytes"].get<uint64_t>();
      const uint64_t published = (*info)["published-bytes"].get<uint64_t>();
      // How long the oldest byte the follower has not replayed has waited:
      // of all it received (stream lag), of what it could replay (replay lag).
      const int64_t oldest = relay_.ArrivalNanos(consumed);
      const double lag = oldest < 0 ? 0 : (now - oldest) / 1e6;
      stream_.push_back(lag);
      replay_.push_back(consumed >= published ? 0 : lag);
      slowest_ms_ = std::max(slowest_ms_, (now - asked) / 1e6);
      if (trace_) {
        std::fprintf(trace_, "%s,%.3f,%.3f,%.3f,%llu,%llu,%llu,%llu,%.3f,%.3f,%d\n", label_.c_str(),
                     now / 1e6, (now - start_ns_) / 1e6, (now - asked) / 1e6,
                     static_cast<unsigned long long>(consumed),
                     static_cast<unsigned long long>(published),
                     static_cast<unsigned long long>((*info)["read-bytes"].get<uint64_t>()),
                     static_cast<unsigned long long>((*info)["hard-waits"].get<uint64_t>()), lag,
                     replay_.back(), governor_ && governor_->held() ? 1 : 0);
      }
      // The governor goes by what the follower could replay: bytes of an
      // event the primary has not finished writing wait for the primary, and
      // holding it then would hold it for ever.
      if (governor_) governor_->Observe(static_cast<int64_t>(replay_.back() * 1e6), now);
      std::this_thread::sleep_for(interval_);
    }
  }

  const LogRelay& relay_;
  LagGovernor* const governor_;
  const milliseconds interval_;
  std::FILE* const trace_;
  const std::string label_;
  const int64_t start_ns_;
  std::atomic<bool> stop_{false};
  std::vector<double> stream_, replay_;
  double slowest_ms_ = 0;
  mutable std::mutex mu_;
  nlohmann::json last_;
  std::thread thread_;
};

// New network input for a standby about to go live: from the moment the
// primary is killed, an ARP request for the guest's address every 2 ms to
// the follower's UDP socket netdev (filter-replay drops what arrives while
// it replays); the time of the first ARP reply from the guest, read on the
// UDP port both QEMUs send to.
class ArpProber {
 public:
  static constexpr char kGuestIp[] = "10.0.2.15";  // the counter role's default
  static constexpr char kProbeIp[] = "10.0.2.99";

  // Binds 127.0.0.1:listen_port (where the guests' frames go).
  static StatusOr<std::unique_ptr<ArpProber>> Create(int listen_port, int follower_port) {
    UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return ErrnoError("socket", errno);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(listen_port));
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      return ErrnoError("bind 127.0.0.1:" + std::to_string(listen_port), errno);
    }
    timeval tv{0, 50000};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return std::unique_ptr<ArpProber>(new ArpProber(std::move(fd), follower_port));
  }
  ~ArpProber() {
    stop_ = true;
    if (reader_.joinable()) reader_.join();
    if (sender_.joinable()) sender_.join();
  }
  // Starts sending requests (the primary has just been killed).
  void Start() {
    sender_ = std::thread([this] {
      sockaddr_in to{};
      to.sin_family = AF_INET;
      to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      to.sin_port = htons(static_cast<uint16_t>(follower_port_));
      const MacAddr bcast{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};
      const frames::Bytes req =
          frames::Arp(bcast, ProbeMac(), ProbeMac(), IpAddr::Parse(kProbeIp).value(),
                      IpAddr::Parse(kGuestIp).value());
      const int64_t until = MonoNow() + 30'000'000'000;
      while (!stop_ && answer_wall_ns_.load() == 0 && MonoNow() < until) {
        ::sendto(fd_.get(), req.data(), req.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
        std::this_thread::sleep_for(milliseconds(2));
      }
    });
  }
  // Host CLOCK_REALTIME of the first answer, 0 if none yet.
  int64_t answer_wall_ns() const { return answer_wall_ns_.load(); }

 private:
  ArpProber(UniqueFd fd, int follower_port) : fd_(std::move(fd)), follower_port_(follower_port) {
    reader_ = std::thread([this] { Read(); });
  }
  static MacAddr ProbeMac() { return MacAddr{{0x52, 0x54, 0x00, 0x00, 0x30, 0x99}}; }
  void Read() {
    std::vector<uint8_t> buf(65536);
    const IpAddr guest = IpAddr::Parse(kGuestIp).value(), probe = IpAddr::Parse(kProbeIp).value();
    while (!stop_) {
      const ssize_t n = ::recv(fd_.get(), buf.data(), buf.size(), 0);
      if (n <= 0) continue;
      auto f = ParseFrame(std::span<const uint8_t>(buf.data(), static_cast<size_t>(n)));
      if (f.ok() && f->l3 == ParsedFrame::L3::kArp && f->arp.op == 2 && f->arp.sender_ip == guest &&
          f->arp.target_ip == probe && answer_wall_ns_.load() == 0) {
        answer_wall_ns_ = RealClock::Get().WallNanos();
      }
    }
  }

  UniqueFd fd_;
  int follower_port_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> answer_wall_ns_{0};
  std::thread reader_, sender_;
};

// The n of the last complete "BB-COUNTER n" line; -1 if none.
int LastCounter(const std::string& console) {
  int last = -1;
  for (size_t at = console.find("BB-COUNTER "); at != std::string::npos;
       at = console.find("BB-COUNTER ", at + 1)) {
    if (console.find('\n', at) != std::string::npos) last = std::atoi(console.c_str() + at + 11);
  }
  return last;
}

enum class FollowMode {
  kToEnd,           // the CPU workload, followed until the guest powers off
  kKillIdle,        // the counter guest, mostly idle, followed for follow_seconds; SIGKILL
  kKillIdleProbed,  // the same, with ARP requests to the standby from the kill on
  kKillBusy,        // the CPU workload, SIGKILL in the middle of its computation
};

// The longest a governor holds the primary. Held by QMP, the primary's main
// loop goes on flushing the log, so the follower can always catch up and the
// cap is only a safety net: draining a backlog of L takes about L at replay
// speed (a cap of hold_ms cut most holds short). Stopped by a signal, the
// primary leaves bytes unflushed that the follower may need: end it soon.
int MaxHoldMs(const StandbyBenchOptions& o) {
  return o.hold_by == "qmp" ? 4 * o.hold_ms : o.hold_ms;
}

// Keeps a follow run's log (LABEL.rr), when its pieces reached the relay
// (LABEL.arrivals.csv: offset just past the piece, ms since the primary
// started, the origin of the lag trace's t_ms) and both consoles, in `dir`
// (LABEL: '/' becomes '-').
Status KeepLogs(const std::string& dir, std::string label, const LogRelay& relay, int64_t origin_ns,
                const std::string& run_dir) {
  std::replace(label.begin(), label.end(), '/', '-');
  const std::string base = dir + "/" + label;
  RETURN_IF_ERROR(WriteFileAtomic(base + ".rr", relay.copy()));
  std::string csv = "offset_end,t_ms\n";
  for (const auto& [end, ns] : relay.Arrivals()) {
    csv += std::to_string(end) + "," + std::to_string((ns - origin_ns) / 1e6) + "\n";
  }
  RETURN_IF_ERROR(WriteFileAtomic(base + ".arrivals.csv", csv));
  RETURN_IF_ERROR(
      WriteFileAtomic(base + ".primary.serial", ReadOrEmpty(run_dir + "/primary.serial")));
  return WriteFileAtomic(base + ".follower.serial", ReadOrEmpty(run_dir + "/follower.serial"));
}

// A primary recording into a pipe, the relay, and a follower replaying the
// other end (__org.blackbox_follow=on, __org.blackbox_live_at_end=on). In
// the kill modes the follower replays what it got, goes live and must carry
// on where the primary was.
// pinned: the primary's QEMU on CPU 0 and the follower's on CPU 1 (as on two
// hosts, as far as one machine can); else both wherever the kernel puts them.
// governed: a LagGovernor holds the primary (QMP stop, or SIGSTOP with
// --hold-by signal) while the follower is more than o.hold_ms behind, until
// it is back within half of that (cont, SIGCONT).
StatusOr<FollowRun> Follow(const StandbyBenchOptions& o, FollowMode mode, bool pinned,
                           bool governed, std::FILE* trace) {
  ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("bb-bench-standby"));
  const std::string d = dir.path();
  const std::string rec_fifo = d + "/record.fifo", fol_fifo = d + "/follow.fifo";
  if (::mkfifo(rec_fifo.c_str(), 0600) != 0 || ::mkfifo(fol_fifo.c_str(), 0600) != 0) {
    return Internal("mkfifo in " + d);
  }
  const bool kill = mode != FollowMode::kToEnd;
  const bool idle = mode == FollowMode::kKillIdle || mode == FollowMode::kKillIdleProbed;
  const std::string role =
      idle ? "bb.role=counter"
           : "bb.role=cpu bb.poweroff=1 bb.rounds=" + std::to_string(o.cpu_rounds);
  GuestLine fol{
      {},
      o.patched_qemu,
      // The bench decides that the end of the stream means the primary died.
      "rr=replay,rrfile=" + fol_fifo + ",__org.blackbox_follow=on,__org.blackbox_live_at_end=on",
      role,
      d + "/follower.serial",
      Qmp(d + "/qmp.sock")};
  GuestLine pri{{},   o.patched_qemu,        "rr=record,rrfile=" + rec_fifo,
                role, d + "/primary.serial", {}};
  const bool by_qmp = o.hold_by == "qmp";
  if (governed && by_qmp) {
    auto m = Qmp(d + "/primary-qmp.sock");
    pri.extra.insert(pri.extra.end(), m.begin(), m.end());
  }
  if (pinned) {
    pri.prefix = {"taskset", "-c", "0"};
    fol.prefix = {"taskset", "-c", "1"};
  }
  std::unique_ptr<ArpProber> prober;
  if (idle) {
    // A NIC, as a real standby has: both ends send to a UDP port nobody uses.
    const int a = FreeLoopbackUdpPort(), b = FreeLoopbackUdpPort(), c = FreeLoopbackUdpPort();
    if (a < 0 || b < 0 || c < 0) return Internal("no free UDP port on 127.0.0.1");
    auto udp = [c](int local) {
      return "socket,id=n0,udp=127.0.0.1:" + std::to_string(c) +
             ",localaddr=127.0.0.1:" + std::to_string(local);
    };
    for (auto& [line, port] : {std::pair{&pri, a}, std::pair{&fol, b}}) {
      auto nic = Nic(udp(port), kClientMac, true);
      line->extra.insert(line->extra.end(), nic.begin(), nic.end());
    }
    if (mode == FollowMode::kKillIdleProbed) {
      ASSIGN_OR_RETURN(prober, ArpProber::Create(c, b));
    }
  }
  ASSIGN_OR_RETURN(ChildProcess follower, ChildProcess::Spawn(Argv(o, fol), d + "/follower.out"));
  const int64_t primary_start = MonoNow();
  ASSIGN_OR_RETURN(ChildProcess primary, ChildProcess::Spawn(Argv(o, pri), d + "/primary.out"));
  LogRelay relay(rec_fifo, fol_fifo, LogRelay::Options{.keep_copy = !o.keep_logs.empty()});
  // The primary's monitor, for a governor that holds it by QMP (after the
  // relay: QEMU opens its log, the FIFO, before it listens on the socket).
  std::optional<QmpSyncClient> primary_qmp;
  if (governed && by_qmp) {
    const int64_t deadline = MonoNow() + 60'000'000'000;
    auto c = ConnectQmpWhileStarting(d + "/primary-qmp.sock",
                                     [&] { return MonoNow() > deadline || !primary.running(); });
    if (!c.ok()) return c.status().WithContext("the primary's QMP monitor");
    primary_qmp.emplace(std::move(c).value());
  }
  std::optional<LagGovernor> governor;
  if (governed) {
    const int64_t hold_ns = static_cast<int64_t>(o.hold_ms) * 1'000'000;
    const LagGovernor::Options go{hold_ns, hold_ns / 2,
                                  static_cast<int64_t>(MaxHoldMs(o)) * 1'000'000};
    if (by_qmp) {
      // Errors are ignored: the primary may have just exited.
      QmpSyncClient* q = &*primary_qmp;
      governor.emplace(
          go, [q] { (void)q->Execute("stop", nullptr, seconds(2)); },
          [q] { (void)q->Execute("cont", nullptr, seconds(2)); });
    } else {
      const pid_t pid = primary.pid();
      governor.emplace(
          go, [pid] { ::kill(pid, SIGSTOP); }, [pid] { ::kill(pid, SIGCONT); });
    }
  }
  static const char* const kModeNames[] = {"cpu-to-end", "counter-kill", "counter-kill-probed",
                                           "cpu-kill"};  // in FollowMode's order
  const std::string label = std::string(pinned ? "pinned" : "shared") +
                            (governed ? "-governed" : "") + "/" +
                            kModeNames[static_cast<int>(mode)];
  Sampler sampler(d + "/qmp.sock", relay, governor ? &*governor : nullptr, trace, label,
                  primary_start);
  FollowRun run;
  if (idle) {
    if (!WaitForFileText(pri.serial, "BB-READY", 300'000'000'000, &primary)) {
      return Internal("the counter guest did not get ready: " + TailOfFile(pri.serial, 3));
    }
    std::this_thread::sleep_for(seconds(o.follow_seconds));
  } else if (mode == FollowMode::kKillBusy) {
    const std::string round = "BB-CPU-ROUND " + std::to_string((o.cpu_rounds + 1) / 2);
    if (!WaitForFileText(pri.serial, round, 300'000'000'000, &primary)) {
      return Internal("the CPU workload did not get to " + round + ": " +
                      TailOfFile(pri.serial, 3));
    }
  }
  if (kill) primary.Signal(SIGKILL);
  if (prober) prober->Start();
  // Exited but not reaped yet, so that the governor's last signal cannot
  // reach another process that got the pid.
  if (!primary.WaitExited(seconds(900))) {
    return DeadlineExceeded("the primary did not end within 900 s");
  }
  const int64_t primary_end = MonoNow();
  run.primary_s = (primary_end - primary_start) / 1e9;
  if (governor) {
    governor->Stop(primary_end);
    run.holds = governor->holds();
    run.forced = governor->forced_releases();
    run.held_s = governor->held_ns(primary_end) / 1e9;
  }
  auto pst = primary.Wait(seconds(10));
  if (!pst.ok()) return pst.status().WithContext("primary");
  relay.Join();
  if (!relay.ok()) {
    return Internal("the log did not reach the follower: " + TailOfFile(d + "/follower.out", 3));
  }
  if (kill) {
    // The sampler stops asking once the follower reports it is live.
    const int64_t deadline = MonoNow() + 300'000'000'000;
    nlohmann::json info;
    while (MonoNow() < deadline && follower.running()) {
      info = sampler.last();
      if (!info.is_null() && info["live"].get<bool>()) break;
      std::this_thread::sleep_for(milliseconds(20));
    }
    sampler.Stop();
    info = sampler.last();
    if (info.is_null() || !info["live"].get<bool>()) {
      return Internal("the follower did not go live: " + info.dump() +
                      TailOfFile(d + "/follower.out", 3));
    }
    const int64_t eof = relay.end_wall_ns(), live = info["live-ns"].get<int64_t>();
    run.eof_to_live_ms = (live - eof) / 1e6;
    if (info.contains("first-live-exec-ns")) {
      run.live_to_exec_ms = (info["first-live-exec-ns"].get<int64_t>() - live) / 1e6;
    }
    // Live, the guest carries on from where the primary was.
    const std::string next =
        idle ? "BB-COUNTER " + std::to_string(LastCounter(ReadOrEmpty(pri.serial)) + 1)
             : "BB-CPU-RESULT";
    run.went_on_live = WaitForFileText(fol.serial, next, 300'000'000'000, &follower);
    if (prober) {
      const int64_t until = MonoNow() + 30'000'000'000;
      while (prober->answer_wall_ns() == 0 && MonoNow() < until) {
        std::this_thread::sleep_for(milliseconds(5));
      }
      if (prober->answer_wall_ns() == 0) {
        return Internal("the live standby did not answer ARP within 30 s");
      }
      run.eof_to_answer_ms = (prober->answer_wall_ns() - eof) / 1e6;
    }
    run.final_console = ReadOrEmpty(fol.serial);
    follower.Kill();
  } else {
    auto fst = follower.Wait(seconds(900));
    sampler.Stop();
    if (!fst.ok()) return fst.status().WithContext("follower");
    run.follower_after_primary_s = (MonoNow() - primary_end) / 1e9;
    run.final_console = ReadOrEmpty(pri.serial);
    run.byte_exact = ReadOrEmpty(fol.serial) == run.final_console;
  }
  if (!o.keep_logs.empty()) RETURN_IF_ERROR(KeepLogs(o.keep_logs, label, relay, primary_start, d));
  run.stream_lag_ms = sampler.stream_lag_ms();
  run.replay_lag_ms = sampler.replay_lag_ms();
  run.slowest_qmp_ms = sampler.slowest_answer_ms();
  return run;
}

// The "BB-CPU-RESULT ..." line of a console, empty if none.
std::string CpuResult(const std::string& console) {
  const size_t at = console.find("BB-CPU-RESULT ");
  return at == std::string::npos ? "" : console.substr(at, console.find('\n', at) - at);
}

double Max(const std::vector<double>& v) {
  return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
}
double Min(const std::vector<double>& v) {
  return v.empty() ? -1 : *std::min_element(v.begin(), v.end());
}

std::string Yes(bool met) { return met ? "yes" : "NO"; }

// Follow figures gathered over runs.
struct Lags {
  std::vector<double> stream, replay;
  void Add(const FollowRun& r) {
    stream.insert(stream.end(), r.stream_lag_ms.begin(), r.stream_lag_ms.end());
    replay.insert(replay.end(), r.replay_lag_ms.begin(), r.replay_lag_ms.end());
  }
  nlohmann::json Json() const {
    return {{"samples", stream.size()},
            {"lag_ms_median", Median(stream)},
            {"lag_ms_max", Max(stream)},
            {"replayable_lag_ms_median", Median(replay)},
            {"replayable_lag_ms_max", Max(replay)}};
  }
  void Print(const char* name) const {
    std::printf("  %-30s %8zu %10.1f %10.1f %12.1f %12.1f\n", name, stream.size(), Median(stream),
                Max(stream), Median(replay), Max(replay));
  }
};
struct GoLive {
  // to_first: end of stream to the first live instruction (to_live +
  // to_exec), the figure the < 50 ms target is on
  // Runs where no live instruction was seen before the sampler gave up
  // count in no_exec, not in to_exec / to_first.
  std::vector<double> to_live, to_exec, to_first, to_answer;
  int no_exec = 0;
  bool carried_on = true;
  void Add(const FollowRun& r, bool ok) {
    to_live.push_back(r.eof_to_live_ms);
    if (r.live_to_exec_ms >= 0) {
      to_exec.push_back(r.live_to_exec_ms);
      to_first.push_back(r.eof_to_live_ms + r.live_to_exec_ms);
    } else {
      ++no_exec;
    }
    if (r.eof_to_answer_ms >= 0) to_answer.push_back(r.eof_to_answer_ms);
    carried_on = carried_on && ok;
  }
  // The < 50 ms target on the end of stream -> first live instruction:
  // met only if every run saw one.
  bool FirstMet() const { return no_exec == 0 && !to_first.empty() && Max(to_first) < 50; }
  std::string NoExecNote() const {
    return no_exec == 0 ? std::string()
                        : "; " + std::to_string(no_exec) + " of " +
                              std::to_string(to_live.size()) +
                              " runs saw no live instruction before the sampler gave up";
  }
  nlohmann::json Json() const {
    nlohmann::json j = {{"eof_to_live_ms", to_live},
                        {"live_to_first_live_exec_ms", to_exec},
                        {"eof_to_first_live_exec_ms", to_first},
                        {"runs_without_live_exec", no_exec},
                        {"carried_on", carried_on}};
    if (!to_answer.empty()) j["eof_to_first_answer_ms"] = to_answer;
    return j;
  }
};

// The follow figures of one placement and governor setting, over its runs.
struct FollowConfig {
  bool governed = false;
  Lags busy, idle;
  GoLive busy_live, idle_live, probed_live;
  // CPU workload followed to its end, one entry per run
  std::vector<double> finish, primary_s;
  std::vector<double> held_share;  // every run
  uint64_t holds = 0, forced = 0;
  double slowest_qmp_ms = 0;
  bool exact = true;
  std::string full_result;  // BB-CPU-RESULT of a CPU run followed to its end
};

// What a follow run does, in FollowMode's order.
const char* const kFollowSteps[] = {
    "follow the CPU workload to its end", "follow the counter guest, kill the primary, go live",
    "follow the counter guest, kill the primary, go live (ARP requests sent to it)",
    "follow the CPU workload, kill the primary mid-way, go live"};

// One follow run of `mode`, added to c's figures.
Status FollowOnce(const StandbyBenchOptions& o, FollowMode mode, bool pinned, FollowConfig& c,
                  std::FILE* trace, int run) {
  std::fprintf(stderr, "bench: %s%s: %s, run %d/%d...\n", pinned ? "pinned" : "shared",
               c.governed ? ", governed" : "", kFollowSteps[static_cast<int>(mode)], run + 1,
               o.runs);
  ASSIGN_OR_RETURN(FollowRun r, Follow(o, mode, pinned, c.governed, trace));
  c.holds += r.holds;
  c.forced += r.forced;
  c.held_share.push_back(r.primary_s > 0 ? r.held_s / r.primary_s : 0);
  c.slowest_qmp_ms = std::max(c.slowest_qmp_ms, r.slowest_qmp_ms);
  switch (mode) {
    case FollowMode::kToEnd:
      c.busy.Add(r);
      c.finish.push_back(r.follower_after_primary_s);
      c.primary_s.push_back(r.primary_s);
      c.exact = c.exact && r.byte_exact;
      c.full_result = CpuResult(r.final_console);
      break;
    case FollowMode::kKillBusy:
      c.busy.Add(r);
      // Live, the standby finishes the computation with the primary's result.
      c.busy_live.Add(r, r.went_on_live && !c.full_result.empty() &&
                             CpuResult(r.final_console) == c.full_result);
      break;
    case FollowMode::kKillIdle:
    case FollowMode::kKillIdleProbed:
      c.idle.Add(r);
      (mode == FollowMode::kKillIdleProbed ? c.probed_live : c.idle_live).Add(r, r.went_on_live);
      break;
  }
  return Status::Ok();
}

// Prints c's tables and returns them as JSON. vs_free: per-pair ratios of
// the governed primary's run time to the free one's (governed c only; empty
// when the free runs were not made). has_governed: a free c is the baseline
// of governed runs.
nlohmann::json PrintFollow(const StandbyBenchOptions& o, bool pinned, const FollowConfig& c,
                           const std::vector<double>& vs_free, bool has_governed) {
  const bool governed = c.governed;
  const std::string where =
      std::string(pinned ? "pinned" : "shared") + (governed ? ", governed" : "");
  const std::string how =
      std::string(pinned ? "primary's QEMU on CPU 0, follower's on CPU 1"
                         : "primary and follower on the same CPUs") +
      (governed ? "; primary held (" + std::string(o.hold_by == "qmp" ? "QMP stop" : "SIGSTOP") +
                      ") while the follower is > " + std::to_string(o.hold_ms) + " ms behind"
                : "; primary never held");
  const Lags& busy = c.busy;
  const Lags& idle = c.idle;
  const GoLive& busy_live = c.busy_live;
  const GoLive& idle_live = c.idle_live;
  const GoLive& probed_live = c.probed_live;
  std::printf(
      "\nstandby benchmark (%s: %s): a follower replaying the primary's log as it "
      "is written; lag = age of the oldest byte it has not replayed; replayable = the "
      "same while it holds complete events it has not replayed, else 0 (the rest waits "
      "for the primary to finish an event); sampled every %d ms, all runs\n",
      where.c_str(), how.c_str(), governed ? 10 : 20);
  std::printf("  %-30s %8s %10s %10s %12s %12s\n", "WORKLOAD", "SAMPLES", "LAG MED", "LAG MAX",
              "REPLAYABLE", "REPLAYABLE");
  std::printf("  %-30s %8s %10s %10s %12s %12s\n", "", "", "MS", "MS", "MED MS", "MAX MS");
  busy.Print("cpu (busy)");
  idle.Print("counter (mostly idle)");
  // The target is on what the follower could replay: bytes it holds that
  // are not replayable yet wait for the primary (the rest of its main loop's
  // iteration, up to a second in an idle guest), not for the follower.
  const double worst = std::max(Max(busy.replay), Max(idle.replay));
  const double median = std::max(Median(busy.replay), Median(idle.replay));
  const bool sampled = !busy.replay.empty() && !idle.replay.empty();
  Row("replayable lag target < 100 ms", "",
      sampled ? "median " + Yes(median < 100) + ", max " + Yes(worst < 100) + " (worst " +
                    F(worst, "%.0f") + " ms)"
              : std::string("NOT MEASURED (no lag samples)"));
  Row("slowest QMP answer of the follower", F(c.slowest_qmp_ms, "%.1f") + " ms",
      "all samples of all runs (the lag trace's qmp_ms)");
  Row("cpu followed to its end: done after primary", F(Median(c.finish), "%.3f") + " s",
      "median of " + std::to_string(c.finish.size()) +
          "; console byte-exact: " + (c.exact ? "yes" : "NO"));
  const double run_s = Median(c.primary_s);
  Row("cpu followed to its end: primary's run (median)", F(run_s, "%.2f") + " s",
      !vs_free.empty() ? PairRatioText(vs_free, "%.3f") + " the run never held, per pair (its cost)"
      : has_governed   ? std::string("(baseline of the governed runs, paired per run)")
                       : std::string());
  if (governed) {
    Row("primary held back", F(100 * Median(c.held_share), "%.1f") + "% of its run",
        "median over all runs; max " + F(100 * Max(c.held_share), "%.1f") + "%, " +
            std::to_string(c.holds) + " holds in all, " + std::to_string(c.forced) +
            " ended by the " + std::to_string(MaxHoldMs(o)) + " ms cap");
  }
  std::printf(
      "\nstandby benchmark (%s): go live when the primary is killed (SIGKILL), "
      "median of %d\n",
      where.c_str(), o.runs);
  Row("busy guest: end of stream -> go-live point", F(Median(busy_live.to_live), "%.1f") + " ms",
      "max " + F(Max(busy_live.to_live), "%.1f") + " ms (the backlog it still had to replay)");
  Row("busy guest: go-live -> first live instruction", F(Median(busy_live.to_exec), "%.2f") + " ms",
      "max " + F(Max(busy_live.to_exec), "%.2f") + " ms");
  Row("busy guest: end of stream -> first live instr.",
      F(Median(busy_live.to_first), "%.1f") + " ms",
      "max " + F(Max(busy_live.to_first), "%.1f") + " ms (target < 50 ms: " +
          Yes(busy_live.FirstMet()) + ")" + busy_live.NoExecNote());
  Row("busy guest: live standby printed the same result", busy_live.carried_on ? "yes" : "NO");
  Row("idle guest: end of stream -> go-live point", F(Median(idle_live.to_live), "%.1f") + " ms",
      "max " + F(Max(idle_live.to_live), "%.1f") + " ms");
  Row("idle guest: go-live -> first live instruction", F(Median(idle_live.to_exec), "%.1f") + " ms",
      "max " + F(Max(idle_live.to_exec), "%.1f") +
          " ms (no input: a halted guest runs at its next timer)" + idle_live.NoExecNote());
  Row("idle guest with input: go-live -> first live instr.",
      F(Median(probed_live.to_exec), "%.1f") + " ms",
      "max " + F(Max(probed_live.to_exec), "%.1f") + " ms");
  Row("idle guest with input: end of stream -> first live",
      F(Median(probed_live.to_first), "%.1f") + " ms",
      "max " + F(Max(probed_live.to_first), "%.1f") + " ms (target < 50 ms: " +
          Yes(probed_live.FirstMet()) + ")" + probed_live.NoExecNote());
  Row("idle guest with input: end of stream -> answer",
      F(Median(probed_live.to_answer), "%.1f") + " ms",
      "max " + F(Max(probed_live.to_answer), "%.1f") +
          " ms (ARP requests sent from the kill on; the first reply)");
  Row("idle guest: counter went on after going live",
      idle_live.carried_on && probed_live.carried_on ? "yes" : "NO");
  nlohmann::json fj = {
      {"cpu", busy.Json()},
      {"counter", idle.Json()},
      {"slowest_qmp_answer_ms", c.slowest_qmp_ms},
      {"cpu_followed_to_end",
       {{"done_after_primary_s", c.finish},
        {"done_after_primary_median_s", Median(c.finish)},
        {"byte_exact", c.exact},
        {"primary_s", c.primary_s},
        {"primary_median_s", Median(c.primary_s)}}},
      {"go_live_busy", busy_live.Json()},
      {"go_live_idle", idle_live.Json()},
      {"go_live_idle_with_input", probed_live.Json()}};
  if (governed) {
    fj["governor"] = {
        {"hold_by", o.hold_by},        {"hold_ms", o.hold_ms}, {"release_ms", o.hold_ms / 2.0},
        {"max_hold_ms", MaxHoldMs(o)}, {"holds", c.holds},     {"holds_ended_by_cap", c.forced},
        {"held_share", c.held_share}};
    if (!vs_free.empty()) fj["cpu_followed_to_end"]["primary_s_vs_free"] = PairRatioJson(vs_free);
  }
  return fj;
}

// The follow figures of one placement: every follow mode o.runs times for
// each governor setting in `governs` (false: free, true: governed). Within a
// run, the settings of one mode run back to back, in an order that
// alternates from run to run, so that the governed primary's run time is
// compared with a free one made next to it. Prints the tables; returns
// {"shared" or "pinned" (+ "_governed"): figures}.
StatusOr<nlohmann::json> FollowFigures(const StandbyBenchOptions& o, bool pinned,
                                       const std::vector<bool>& governs, std::FILE* trace) {
  std::vector<FollowConfig> configs(governs.size());
  for (size_t k = 0; k < governs.size(); ++k) configs[k].governed = governs[k];
  for (int i = 0; i < o.runs; ++i) {
    for (FollowMode mode : {FollowMode::kToEnd, FollowMode::kKillBusy, FollowMode::kKillIdle,
                            FollowMode::kKillIdleProbed}) {
      for (size_t k = 0; k < configs.size(); ++k) {
        FollowConfig& c = configs[(static_cast<size_t>(i) + k) % configs.size()];
        RETURN_IF_ERROR(FollowOnce(o, mode, pinned, c, trace, i));
        if (trace) std::fflush(trace);
      }
    }
  }
  const FollowConfig* free_runs = nullptr;
  bool has_governed = false;
  for (const auto& c : configs) {
    if (c.governed) {
      has_governed = true;
    } else {
      free_runs = &c;
    }
  }
  nlohmann::json out;
  for (const auto& c : configs) {
    const std::vector<double> vs_free = c.governed && free_runs
                                            ? PairRatios(c.primary_s, free_runs->primary_s)
                                            : std::vector<double>{};
    out[std::string(pinned ? "pinned" : "shared") + (c.governed ? "_governed" : "")] =
        PrintFollow(o, pinned, c, vs_free, has_governed);
  }
  return out;
}

}  // namespace

StatusOr<nlohmann::json> RunStandbyBench(const StandbyBenchOptions& o) {
  nlohmann::json out = {{"benchmark", "standby"},
                        {"runs", o.runs},
                        {"patched_qemu", o.patched_qemu},
                        {"stock_qemu", o.stock_qemu}};
  if (o.speed) {
    nlohmann::json speed;
    std::printf(
        "\nstandby benchmark: replay speed (record time / replay time of one run; >= 1.0x keeps "
        "up); %d pair(s) per workload,\n  stock and Blackbox's QEMU back to back, the order "
        "alternating. Record and replay s: median of the runs.\n  Speeds and Blackbox / stock: "
        "median [min-max] of the per-run and per-pair ratios.\n",
        o.runs);
    std::printf("  %-8s %-8s %10s %10s  %-22s %s\n", "WORKLOAD", "QEMU", "RECORD S", "REPLAY S",
                "SPEED", "BYTE-EXACT");
    for (Workload w : {Workload::kCpu, Workload::kIdle, Workload::kNet}) {
      struct Side {
        std::vector<double> rec, rep, speed;
        bool exact = true;
      } side[2];  // stock, patched
      for (int i = 0; i < o.runs; ++i) {
        for (int k = 0; k < 2; ++k) {
          const bool patched = (i + k) % 2 == 1;
          std::fprintf(stderr, "bench: %s workload, pair %d/%d, %s QEMU: record, replay...\n",
                       Name(w), i + 1, o.runs, patched ? "Blackbox's" : "stock");
          ASSIGN_OR_RETURN(SpeedRun r,
                           RecordAndReplay(o, patched ? o.patched_qemu : o.stock_qemu, w));
          Side& sd = side[patched];
          sd.rec.push_back(r.record_s);
          sd.rep.push_back(r.replay_s);
          sd.speed.push_back(r.record_s / r.replay_s);
          sd.exact = sd.exact && r.byte_exact;
        }
      }
      nlohmann::json row;
      for (bool patched : {false, true}) {
        const Side& sd = side[patched];
        std::printf("  %-8s %-8s %10.2f %10.2f  %-22s %s\n", Name(w),
                    patched ? "Blackbox" : "stock", Median(sd.rec), Median(sd.rep),
                    PairRatioText(sd.speed).c_str(), sd.exact ? "yes" : "NO");
        row[patched ? "patched" : "stock"] = {{"record_s", sd.rec},
                                              {"replay_s", sd.rep},
                                              {"record_median_s", Median(sd.rec)},
                                              {"replay_median_s", Median(sd.rep)},
                                              {"speed", PairRatioJson(sd.speed)},
                                              {"byte_exact", sd.exact}};
      }
      const auto vs_stock = PairRatios(side[1].speed, side[0].speed);
      std::printf("  %-8s Blackbox / stock speed, per pair: %s\n", Name(w),
                  PairRatioText(vs_stock).c_str());
      row["speedup_vs_stock"] = PairRatioJson(vs_stock);
      speed[Name(w)] = row;
    }
    out["replay_speed"] = speed;

    // Record overhead: its own pairs, back to back, so that neither a replay
    // nor another workload comes between baseline and subject.
    std::vector<double> file, streamed;
    for (int i = 0; i < o.runs; ++i) {
      for (int k = 0; k < 2; ++k) {
        const bool stream = (i + k) % 2 == 1;
        std::fprintf(
            stderr, "bench: record overhead, pair %d/%d: %s...\n", i + 1, o.runs,
            stream ? "Blackbox's QEMU into a pipe (streamed log)" : "stock QEMU rr into a file");
        ASSIGN_OR_RETURN(double t, RecordCpu(o, stream ? o.patched_qemu : o.stock_qemu, stream));
        (stream ? streamed : file).push_back(t);
      }
    }
    const auto overhead = PairRatios(streamed, file);
    const double ov = Median(overhead);
    out["record_overhead"] = {{"stock_record_file_s", file},
                              {"streamed_record_pipe_s", streamed},
                              {"stock_record_file_median_s", Median(file)},
                              {"streamed_record_pipe_median_s", Median(streamed)},
                              {"ratio", PairRatioJson(overhead)}};
    std::printf(
        "\nstandby benchmark: record overhead, CPU workload; %d pair(s), back to back, the order "
        "alternating.\n  Times: median of the runs. Ratio: median [min-max] of the per-pair "
        "ratios.\n",
        o.runs);
    Row("stock QEMU rr to a file (baseline)", F(Median(file)) + " s");
    Row("Blackbox's QEMU, streamed log into a pipe", F(Median(streamed)) + " s",
        PairRatioText(overhead, "%.3f") + " stock (target <= 1.05x: " + Yes(ov <= 1.05) + ")");
  }
  if (o.follow) {
    std::vector<bool> placements;  // pinned?
    if (o.placement != "pinned") placements.push_back(false);
    if (o.placement != "shared") {
      if (::sysconf(_SC_NPROCESSORS_ONLN) >= 2) {
        placements.push_back(true);
      } else {
        std::fprintf(stderr, "bench: one CPU only: the pinned placement is skipped\n");
      }
    }
    std::vector<bool> governs;  // governed?
    if (o.governor != "on") governs.push_back(false);
    if (o.governor != "off") governs.push_back(true);
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> trace(nullptr, &std::fclose);
    if (!o.lag_trace.empty()) {
      trace.reset(std::fopen(o.lag_trace.c_str(), "w"));
      if (!trace) return ErrnoError("open " + o.lag_trace, errno);
      std::fputs(kTraceHeader, trace.get());
    }
    nlohmann::json follow_json;
    for (bool pinned : placements) {
      ASSIGN_OR_RETURN(nlohmann::json fj, FollowFigures(o, pinned, governs, trace.get()));
      follow_json.update(fj);
    }
    out["follow"] = follow_json;
  }
  return out;
}

}  // namespace blackbox::bench
