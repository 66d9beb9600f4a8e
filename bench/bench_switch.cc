#include "bench/bench_switch.h"

#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>

#include "bench/bench_util.h"
#include "common/clock.h"
#include "common/files.h"
#include "recorder/lab.h"
#include "recorder/recorder.h"
#include "store/store.h"
#include "switch/capture_writer.h"
#include "switch/frame_builder.h"
#include "switch/stream_framing.h"
#include "switch/switch_server.h"

namespace blackbox::bench {

namespace {

int64_t MonoNow() { return RealClock::Get().MonotonicNanos(); }

StatusOr<UniqueFd> ConnectUnix(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoError("socket", errno);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return ErrnoError("connect " + path, errno);
  }
  return fd;
}

// An encoded stream record: an IPv4/UDP frame of `size` bytes from bench
// host src_last to dst_last (MAC 02:00:00:00:00:xx, IP 10.9.0.xx), UDP port
// sport to 5001.
std::string UdpRecord(size_t size, uint8_t src_last, uint8_t dst_last, uint16_t sport) {
  auto mac = [](uint8_t last) { return MacAddr{{0x02, 0, 0, 0, 0, last}}; };
  auto ip = [](uint8_t last) { return IpAddr::V4(std::array<uint8_t, 4>{10, 9, 0, last}); };
  return EncodeStreamFrame(
      frames::Udp4(mac(dst_last), mac(src_last), ip(src_last), ip(dst_last), size, sport, 5001));
}

}  // namespace

StatusOr<LoadResult> RunSwitchLoad(size_t frame_size, bool capture, double seconds,
                                   FramePolicy* policy, int frames_per_flow, double toggle_ms) {
  ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("bb-bench-switch"));
  std::unique_ptr<Store> store;
  if (capture) {
    StoreOptions so;
    so.path = dir.path() + "/store";
    ASSIGN_OR_RETURN(store, Store::Open(so));
  }
  boost::asio::io_context io;
  SwitchServer server(io, SwitchServer::Options{});
  const bool toggle = toggle_ms > 0 && policy != nullptr;
  server.SetPolicy(toggle ? nullptr : policy);
  uint32_t ports[2];
  for (int i = 0; i < 2; ++i) {
    L2Switch::PortConfig pc;
    pc.name = i == 0 ? "generator" : "sink";
    pc.segment = "bench";
    pc.mac.bytes = {0x02, 0, 0, 0, 0, static_cast<uint8_t>(i + 1)};
    ASSIGN_OR_RETURN(ports[i], server.AddPort(pc, dir.path() + "/p" + std::to_string(i) + ".sock"));
  }
  std::unique_ptr<CaptureWriter> writer;
  if (capture) {
    writer = std::make_unique<CaptureWriter>(store.get(), "bench", CaptureWriter::Options{},
                                             RealClock::Get().WallNanos() - MonoNow());
    writer->SetPortInfo(ports[0], {"generator", ""});
    writer->SetPortInfo(ports[1], {"sink", ""});
    CaptureWriter* w = writer.get();
    server.SetBatchObserver([w] { w->FlushStaged(); });
    server.SetFrameObserver([w](uint32_t in, std::span<const uint8_t> f,
                                const L2Switch::Decision& d,
                                int64_t t) { w->OnFrame(in, f, d, t); });
  }
  double cpu0 = CpuSeconds();
  std::thread switch_thread([&io] {
    pthread_setname_np(pthread_self(), "bb-switch");
    auto guard = boost::asio::make_work_guard(io);
    io.run();
  });
  auto stop_switch = [&] {
    boost::asio::post(io, [&] { io.stop(); });
    if (switch_thread.joinable()) switch_thread.join();
  };

  auto gen = ConnectUnix(dir.path() + "/p0.sock");
  auto sink = ConnectUnix(dir.path() + "/p1.sock");
  if (!gen.ok() || !sink.ok()) {
    stop_switch();
    return gen.ok() ? sink.status() : gen.status();
  }
  // The sink announces itself so the switch learns its MAC; the generator
  // sees that frame flooded to it, so learning has happened before the load.
  std::string hello = UdpRecord(64, 2, 1, 1);
  Status s = WriteAll(sink->get(), hello, "sink");
  timeval tv{5, 0};
  ::setsockopt(gen->get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string first(hello.size(), '\0');
  if (s.ok() && ::recv(gen->get(), first.data(), first.size(), MSG_WAITALL) !=
                    static_cast<ssize_t>(first.size())) {
    s = Internal("the switch did not forward the sink's first frame");
  }
  if (!s.ok()) {
    stop_switch();
    return s;
  }

  // 256 frames sent in one buffer again and again: 256 flows one frame
  // each, or fewer flows with frames_per_flow consecutive frames each.
  std::string burst;
  constexpr int kBurst = 256;
  const int per_flow = std::clamp(frames_per_flow, 1, kBurst);
  for (int i = 0; i < kBurst; ++i) burst += UdpRecord(frame_size, 1, 2, 10000 + i / per_flow);

  std::atomic<bool> sending_done{false};
  std::atomic<double> sink_cpu{0}, gen_cpu{0};
  uint64_t delivered = 0;
  int64_t last_rx = 0;
  std::thread sink_thread([&] {
    pthread_setname_np(pthread_self(), "bench-sink");
    timeval t{0, 300000};
    ::setsockopt(sink->get(), SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t);
    std::vector<uint8_t> buf(1 << 20);
    StreamDecoder decoder;
    while (true) {
      ssize_t n = ::recv(sink->get(), buf.data(), buf.size(), 0);
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        if (sending_done.load()) break;  // quiet for 300 ms after the load: drained
        if (n == 0) break;
        continue;
      }
      last_rx = MonoNow();
      if (!decoder
               .Feed(std::span<const uint8_t>(buf.data(), static_cast<size_t>(n)),
                     [](std::span<const uint8_t>) {})
               .ok()) {
        break;  // the switch never sends a bad record; stop counting if it did
      }
    }
    delivered = decoder.frames();
    sink_cpu = ThreadCpuSeconds();
  });

  // Slices: a timer on the switch thread flips the policy and notes the
  // thread's CPU time and the frames written to the sink since the last flip.
  std::vector<LoadResult::Slice> slices;
  boost::asio::steady_timer slice_timer(io);
  std::function<void()> slice_tick;
  std::atomic<bool> slicing{toggle};
  double last_cpu = -1;
  uint64_t last_written = 0;
  bool on = false;
  if (toggle) {
    // Runs on the switch thread only, which ends before these locals do.
    slice_tick = [&] {
      const double cpu = ThreadCpuSeconds();
      auto ps = server.GetPortStats(ports[1]);
      const uint64_t written = ps ? ps->written_frames : 0;
      if (last_cpu >= 0) slices.push_back({on, cpu - last_cpu, written - last_written});
      last_cpu = cpu;
      last_written = written;
      if (!slicing.load()) return;
      on = !on;
      server.SetPolicy(on ? policy : nullptr);
      slice_timer.expires_after(std::chrono::microseconds(static_cast<int64_t>(toggle_ms * 1000)));
      slice_timer.async_wait([&](const boost::system::error_code& ec) {
        if (!ec) slice_tick();
      });
    };
    boost::asio::post(io, [&] { slice_tick(); });
  }

  uint64_t sent = 0;
  const double gen_cpu0 = ThreadCpuSeconds();
  int64_t start = MonoNow();
  int64_t until = start + static_cast<int64_t>(seconds * 1e9);
  Status gen_status;
  while (MonoNow() < until) {
    gen_status = WriteAll(gen->get(), burst, "generator");
    if (!gen_status.ok()) break;
    sent += kBurst;
  }
  gen_cpu = ThreadCpuSeconds() - gen_cpu0;
  // The last slice ends with the load (the drain after it is not measured).
  if (toggle) {
    slicing = false;
    boost::asio::post(io, [&] { slice_timer.cancel(); });
  }
  sending_done = true;
  sink_thread.join();
  LoadResult r;
  if (writer) {
    if (Status closed = writer->Close(); !closed.ok()) {
      stop_switch();  // a joinable thread must not outlive this frame
      return closed;
    }
    auto st = writer->GetStats();
    r.stored_frames = st.frames;
    r.shed = st.shed_frames;
    r.wait_ms = st.wait_ns / 1e6;
    r.flows = st.flows;
  }
  double cpu = CpuSeconds() - cpu0;
  boost::asio::post(io, [&] {
    if (auto ps = server.GetPortStats(ports[1])) r.queue_drops = ps->queue_drops;
  });
  stop_switch();
  RETURN_IF_ERROR(gen_status);
  r.sent = sent;
  r.delivered = delivered;
  r.wall_s = (last_rx - start) / 1e9;
  r.cpu_s = cpu - gen_cpu.load() - sink_cpu.load();
  r.slices = std::move(slices);
  return r;
}

namespace {

// Seconds from the client's BB-HTTP-START to BB-HTTP-OK, by the wall time the
// recorder read each console piece.
StatusOr<double> TransferSeconds(const Store& store, const std::string& id) {
  ASSIGN_OR_RETURN(std::vector<ConsolePiece> pieces, store.ReadConsole(id));
  int64_t start = -1, end = -1;
  std::string all;
  for (const auto& p : pieces) {
    all += p.bytes;
    if (start < 0 && all.find("BB-HTTP-START") != std::string::npos) start = p.wall_ns;
    if (end < 0 && all.find("BB-HTTP-OK") != std::string::npos) end = p.wall_ns;
  }
  if (start < 0 || end < 0) {
    return Internal("the client did not report a complete transfer; its console:\n" + all);
  }
  return (end - start) / 1e9;
}

struct GuestRun {
  double seconds = 0;
  uint64_t frames = 0;
};

StatusOr<GuestRun> RunGuests(const SwitchBenchOptions& o, bool through_switch) {
  ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("bb-bench-guests"));
  StoreOptions so;
  so.path = dir.path() + "/store";
  ASSIGN_OR_RETURN(auto store, Store::Open(so));
  ASSIGN_OR_RETURN(VmSpec web, ParseVmSpec(GuestSpec(o.guest_dir, "web", "http-server", "10.0.0.1",
                                                     "52:54:00:00:00:01",
                                                     "bb.bigsize=" + std::to_string(o.file_mib)),
                                           o.guest_dir));
  ASSIGN_OR_RETURN(VmSpec client,
                   ParseVmSpec(GuestSpec(o.guest_dir, "client", "http-client", "10.0.0.2",
                                         "52:54:00:00:00:02", "bb.peer=10.0.0.1 bb.poweroff=1"),
                               o.guest_dir));
  RecorderOptions ro;
  ro.data_dir = dir.path();
  ro.qemu_binary = o.qemu_binary;
  ro.progress_interval_ns = 0;
  ro.snapshot_interval_ns = 0;
  ro.rr = false;
  ro.duration_ns = 600'000'000'000;
  GuestRun run;
  std::string client_id;
  if (through_switch) {
    LabSpec lab;
    lab.name = "bench";
    lab.stop_when = LabSpec::StopWhen::kFirstExit;
    lab.vms = {{web, false}, {client, false}};
    LabOptions lo;
    lo.recorder = ro;
    ASSIGN_OR_RETURN(LabResult result, RunLab(store.get(), lab, lo));
    for (const auto& r : result.recordings) {
      if (r.vm_name == "client") client_id = r.id;
    }
    run.frames = result.capture.frames;
  } else {
    std::string sock = dir.path() + "/link.sock";
    RecorderOptions web_o = ro, client_o = ro;
    web_o.nic_sockets = {sock};
    web_o.nic_listen = {true};
    web_o.stop = std::make_shared<std::atomic<bool>>(false);
    client_o.nic_sockets = {sock};
    StatusOr<RecordingInfo> web_r = Internal("not run"), client_r = Internal("not run");
    std::thread web_thread([&] { web_r = RecordVm(store.get(), web, web_o); });
    // QEMU creates the listening socket as it starts.
    int64_t deadline = MonoNow() + 60'000'000'000;
    struct stat st {};
    while (::stat(sock.c_str(), &st) != 0 && MonoNow() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::thread client_thread([&] { client_r = RecordVm(store.get(), client, client_o); });
    client_thread.join();
    web_o.stop->store(true);
    web_thread.join();
    RETURN_IF_ERROR(client_r.status());
    client_id = client_r->id;
  }
  if (client_id.empty()) return Internal("the client VM did not run");
  ASSIGN_OR_RETURN(run.seconds, TransferSeconds(*store, client_id));
  return run;
}

}  // namespace

StatusOr<nlohmann::json> RunSwitchBench(const SwitchBenchOptions& o) {
  nlohmann::json out = {{"benchmark", "switch"}, {"runs", o.runs}};
  if (o.load) {
    // Per row (frame size, capture), one entry per round.
    struct LoadRow {
      std::vector<double> wall_pps, per_core, cpu_s, stored, shed, wait_ms;
      nlohmann::json runs = nlohmann::json::array();
    };
    const size_t kSizes[] = {64, 1500};
    LoadRow rows[2][2];  // [size][capture]
    for (int i = 0; i < o.runs; ++i) {
      for (size_t z = 0; z < 2; ++z) {
        // Capture off and on back to back, the order alternating.
        for (int k = 0; k < 2; ++k) {
          const bool capture = (i + k) % 2 == 1;
          const size_t size = kSizes[z];
          std::fprintf(stderr, "bench: load, round %d/%d: %zu-byte frames, capture %s...\n", i + 1,
                       o.runs, size, capture ? "on" : "off");
          ASSIGN_OR_RETURN(LoadResult r, RunSwitchLoad(size, capture, o.load_seconds));
          if (r.delivered == 0 || r.cpu_s <= 0 || r.wall_s <= 0) {
            return Internal("switch load round " + std::to_string(i + 1) + " (" +
                            std::to_string(size) + "-byte frames, capture " +
                            (capture ? "on" : "off") + ") delivered no measurable traffic");
          }
          const double per_core = r.delivered / r.cpu_s;
          const double wall_pps = r.delivered / r.wall_s;
          LoadRow& row = rows[z][capture];
          row.wall_pps.push_back(wall_pps);
          row.per_core.push_back(per_core);
          row.cpu_s.push_back(r.cpu_s);
          row.stored.push_back(static_cast<double>(r.stored_frames));
          row.shed.push_back(static_cast<double>(r.shed));
          row.wait_ms.push_back(r.wait_ms);
          row.runs.push_back({{"sent", r.sent},
                              {"delivered", r.delivered},
                              {"queue_drops", r.queue_drops},
                              {"wall_s", r.wall_s},
                              {"cpu_s", r.cpu_s},
                              {"frames_per_s", wall_pps},
                              {"frames_per_s_per_core", per_core},
                              {"stored_frames", r.stored_frames},
                              {"shed_frames", r.shed},
                              {"capture_wait_ms", r.wait_ms},
                              {"flows", r.flows}});
        }
      }
    }
    std::printf(
        "\nswitch benchmark: load generator, %.0f s per row (stream protocol over unix sockets, "
        "256 UDP flows);\n  %d round(s), each running capture off and on back to back for each "
        "frame size, the order\n  alternating. Values: %s; SHED: the most of any round. ON/OFF: "
        "median [min-max] of the\n  per-round ratios of frames/s per core.\n",
        o.load_seconds, o.runs, o.runs == 1 ? "one round (no median)" : "median of the rounds");
    std::printf("  %-6s %-8s %12s %12s %12s %8s %10s %8s %8s  %s\n", "FRAME", "CAPTURE", "FRAMES/S",
                "PER CORE", "GBIT/S/CORE", "CPU S", "STORED", "SHED", "WAIT MS", "ON/OFF PER CORE");
    nlohmann::json load = nlohmann::json::array();
    for (size_t z = 0; z < 2; ++z) {
      const size_t size = kSizes[z];
      const auto vs_off = PairRatios(rows[z][1].per_core, rows[z][0].per_core);
      for (bool capture : {false, true}) {
        const LoadRow& row = rows[z][capture];
        const double per_core = Median(row.per_core);
        const double gbit = per_core * size * 8 / 1e9;
        std::printf("  %-6zu %-8s %12.0f %12.0f %12.2f %8.2f %10.0f %8.0f %8.0f  %s\n", size,
                    capture ? "on" : "off", Median(row.wall_pps), per_core, gbit, Median(row.cpu_s),
                    Median(row.stored), *std::max_element(row.shed.begin(), row.shed.end()),
                    Median(row.wait_ms),
                    capture ? PairRatioText(vs_off).c_str() : "");
        nlohmann::json j = {
            {"frame_bytes", size},
            {"capture", capture},
            {"frames_per_s", Median(row.wall_pps)},
            {"frames_per_s_per_core", per_core},
            {"gbit_per_s_per_core", gbit},
            {"shed_frames_max", *std::max_element(row.shed.begin(), row.shed.end())},
            {"cpu_s_median", Median(row.cpu_s)},
            {"stored_frames_median", Median(row.stored)},
            {"capture_wait_ms_median", Median(row.wait_ms)},
            {"runs", row.runs}};
        if (capture) j["vs_capture_off"] = PairRatioJson(vs_off);
        load.push_back(j);
      }
    }
    out["load"] = load;
  }
  if (o.guests) {
    std::vector<double> direct, via, frames;
    for (int i = 0; i < o.runs; ++i) {
      // The two ways back to back, the order alternating.
      for (int k = 0; k < 2; ++k) {
        const bool through_switch = (i + k) % 2 == 1;
        std::fprintf(stderr, "bench: guests, pair %d/%d: %d MiB %s...\n", i + 1, o.runs, o.file_mib,
                     through_switch ? "through the switch with capture" : "over a direct link");
        ASSIGN_OR_RETURN(GuestRun r, RunGuests(o, through_switch));
        if (through_switch) {
          via.push_back(r.seconds);
          frames.push_back(static_cast<double>(r.frames));
        } else {
          direct.push_back(r.seconds);
        }
      }
    }
    // Throughput through the switch over the direct link's: direct time /
    // switch time, per pair.
    const auto ratio = PairRatios(direct, via);
    const double d = Median(direct), s = Median(via);
    const double mb = o.file_mib * 1048576.0 / 1e6;
    std::printf(
        "\nswitch benchmark: %d MiB HTTP transfer between two test guests (TCG, no rr); %d "
        "pair(s), back to back,\n  the order alternating. Times: %s. Ratio: "
        "median [min-max] of the per-pair ratios.\n",
        o.file_mib, o.runs, o.runs == 1 ? "one run each (no median)" : "median of the runs");
    Row("direct QEMU socket link (baseline)", F(d) + " s",
        F(mb / d, "%.1f") + " MB/s; runs: " + Joined(direct) + " s");
    Row("through Blackbox's switch, capture on", F(s) + " s",
        F(mb / s, "%.1f") + " MB/s; runs: " + Joined(via) + " s; " + F(Median(frames), "%.0f") +
            " frames captured (median)");
    Row("switch throughput / direct link", PairRatioText(ratio, "%.3f"),
        "direct time / switch time per pair (target >= 0.95x)");
    out["guests"] = {{"file_mib", o.file_mib},
                     {"runs", o.runs},
                     {"direct_s", direct},
                     {"switch_s", via},
                     {"direct_median_s", d},
                     {"switch_median_s", s},
                     {"ratio", PairRatioJson(ratio)},
                     {"frames_captured", frames}};
  }
  return out;
}

}  // namespace blackbox::bench
