// End-to-end tests of manifests: real guests under Blackbox's switch, their
// manifests learned, enforced and checked from the hypervisor side.
#include <signal.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "common/clock.h"
#include "common/hash.h"
#include "store/store.h"
#include "switch/frame.h"
#include "tests/e2e/e2e_util.h"

namespace blackbox::e2e {
namespace {

using std::chrono::seconds;

class ManifestTest : public E2eTest {
 protected:
  std::vector<nlohmann::json> Alerts() {
    CommandResult r = Blackbox({"alerts", "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::vector<nlohmann::json> out;
    std::istringstream in(r.output);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty() && line[0] == '{') out.push_back(nlohmann::json::parse(line));
    }
    return out;
  }
  std::vector<nlohmann::json> Events(const std::string& recording) {
    CommandResult r = Blackbox({"show", "--json", recording});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::vector<nlohmann::json> out;
    if (r.exit_code != 0) return out;
    auto j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
    for (const auto& e : j["events"]) out.push_back(e["event"]);
    return out;
  }
  std::string Write(const std::string& name, const std::string& text) {
    std::string path = data() + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  // A manifest for the prober ("client") of examples/lab-probe.yaml: HTTP to
  // the web server allowed, port 2222 gets `probe_action`.
  std::string ClientManifest(const std::string& mode, const std::string& probe_action) {
    return Write("client-" + mode + ".yaml", R"(manifest: 1
vm: client
mode: )" + mode + R"(
network:
  default: [alert, drop]
  rules:
    - {name: web-http, direction: out, peer: web, proto: tcp, ports: [80], action: allow}
    - {name: probe, direction: out, peer: web, proto: tcp, ports: [2222], action: )" +
                                                 probe_action + R"(}
events:
  guest_shutdown: allow
)");
  }
};

// A server and a client learn their manifests over a normal run; enforcing
// them on the same workload raises no alert, and `manifest diff` agrees.
TEST_F(ManifestTest, LearnedManifestsEnforcedOnTheSameWorkloadRaiseNoAlert) {
  CommandResult rec = Blackbox({"record", "-q", Example("lab-web.yaml")}, seconds(400));
  ASSERT_EQ(rec.exit_code, 0) << rec.output;
  auto recs = RecordingsByVm();
  ASSERT_TRUE(recs.count("web") && recs.count("client")) << rec.output;
  ASSERT_NE(Console(recs["client"]["id"]).find("BB-HTTP-GOT blackbox http-server"),
            std::string::npos);

  const std::string web_yaml = data() + "/web.yaml", client_yaml = data() + "/client.yaml";
  CommandResult lw = Blackbox({"manifest", "learn", "web", "--mode", "enforce", "-o", web_yaml});
  ASSERT_EQ(lw.exit_code, 0) << lw.output;
  CommandResult lc =
      Blackbox({"manifest", "learn", "client", "--mode", "enforce", "-o", client_yaml});
  ASSERT_EQ(lc.exit_code, 0) << lc.output;
  auto web_read = ReadFileToString(web_yaml, 1 << 20);
  auto client_read = ReadFileToString(client_yaml, 1 << 20);
  ASSERT_TRUE(web_read.ok() && client_read.ok());
  const std::string web_text = *web_read, client_text = *client_read;
  // What was learned: the client talks HTTP out to web, web takes HTTP in
  // from the client; the boot chain and devices are pinned.
  EXPECT_TRUE(std::regex_search(
      client_text, std::regex("direction: out[\\s\\S]*peer: web[\\s\\S]*proto: tcp[\\s\\S]*80")))
      << client_text;
  EXPECT_TRUE(std::regex_search(
      web_text, std::regex("direction: in[\\s\\S]*peer: client[\\s\\S]*proto: tcp[\\s\\S]*80")))
      << web_text;
  auto initrd = Sha256File(GuestDir() + "/initrd.img");
  ASSERT_TRUE(initrd.ok());
  EXPECT_NE(client_text.find(ToHex(*initrd)), std::string::npos) << client_text;
  EXPECT_NE(client_text.find("8086:100e"), std::string::npos) << "e1000 in the device list\n"
                                                              << client_text;
  CommandResult check = Blackbox({"manifest", "check", client_yaml});
  EXPECT_EQ(check.exit_code, 0) << check.output;

  // Enforced on the same workload: no alert, the client still gets its page.
  CommandResult again = Blackbox({"record", "-q", Example("lab-web.yaml"), "--manifest",
                                  "web=" + web_yaml, "--manifest", "client=" + client_yaml},
                                 seconds(400));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  auto recs2 = RecordingsByVm();
  ASSERT_NE(recs2["client"]["id"], recs["client"]["id"]);
  EXPECT_NE(Console(recs2["client"]["id"]).find("BB-HTTP-GOT blackbox http-server"),
            std::string::npos);
  EXPECT_TRUE(Alerts().empty()) << Blackbox({"alerts"}).output;
  bool attested = false;
  for (const auto& e : Events(recs2["client"]["id"])) {
    if (e.value("kind", "") == "attestation") attested = e.value("result", "") == "match";
  }
  EXPECT_TRUE(attested) << "the client's boot chain and devices were checked and matched";
  CommandResult diff = Blackbox({"manifest", "diff", client_yaml, recs2["client"]["id"]});
  EXPECT_EQ(diff.exit_code, 0) << diff.output;
}

// The prober connects to a port its manifest does not allow. In enforce mode
// an alert is stored within 100 ms of the flow's first frame, with that frame
// as evidence; the connection gets no answer while HTTP keeps working.
TEST_F(ManifestTest, UnexpectedPortIsAlertedFastAndDroppedInEnforceMode) {
  CommandResult rec = Blackbox({"record", "-q", Example("lab-probe.yaml")}, seconds(400));
  ASSERT_EQ(rec.exit_code, 0) << rec.output;
  auto recs = RecordingsByVm();
  const std::string console = Console(recs["client"]["id"]);
  EXPECT_NE(console.find("BB-PROBE-HTTP-OK"), std::string::npos) << console;
  EXPECT_NE(console.find("BB-PROBE-PORT-NO-ANSWER 2222"), std::string::npos) << console;
  EXPECT_NE(console.find("BB-PROBE-HTTP2-OK"), std::string::npos) << console;

  auto alerts = Alerts();
  ASSERT_EQ(alerts.size(), 1u) << Blackbox({"alerts"}).output;
  const nlohmann::json& a = alerts[0];
  EXPECT_EQ(a["vm"], "client");
  EXPECT_EQ(a["kind"], "network");
  EXPECT_EQ(a["rule"], "default");
  EXPECT_EQ(a["mode"], "enforce");
  EXPECT_EQ(a["recording"], recs["client"]["id"]);
  EXPECT_EQ(a["flow"]["dst_port"], 2222);
  EXPECT_EQ(a["flow"]["direction"], "out");
  EXPECT_EQ(a["action"], nlohmann::json::array({"alert", "drop"}));

  // The evidence is the stored frame: a SYN to port 2222 the switch dropped.
  const int64_t frame_ns = a["evidence"]["frame_wall_ns"].get<int64_t>();
  StoreOptions so;
  so.path = data() + "/store";
  so.read_only = true;
  auto store = Store::Open(so);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  FrameQuery q;
  q.since_ns = q.until_ns = frame_ns;
  int found = 0;
  ASSERT_TRUE(
      (*store)
          ->ReadFrames(a["capture"].get<std::string>(), q,
                       [&](const CapturedFrame& f) -> Status {
                         auto p = ParseFrame(std::span(
                             reinterpret_cast<const uint8_t*>(f.bytes.data()), f.bytes.size()));
                         if (p.ok() && p->l4 == ParsedFrame::L4::kTcp &&
                             p->transport.dst_port == 2222 && (p->transport.tcp_flags & kTcpSyn)) {
                           ++found;
                           EXPECT_TRUE(f.egress.empty());
                           EXPECT_NE(f.drop_reason.find("manifest client"), std::string::npos)
                               << f.drop_reason;
                           EXPECT_EQ(ToHex(std::string_view(f.bytes).substr(0, 256)),
                                     a["evidence"]["frame_hex"]);
                         }
                         return Status::Ok();
                       })
          .ok());
  EXPECT_EQ(found, 1) << "the alert's evidence frame is in the capture";
  const int64_t delay_ns = a["wall_ns"].get<int64_t>() - frame_ns;
  EXPECT_GE(delay_ns, 0);
  EXPECT_LT(delay_ns, 100'000'000) << "alert stored " << delay_ns / 1e6 << " ms after the frame";
  std::fprintf(stderr, "alert stored %.3f ms after its first frame\n", delay_ns / 1e6);

  // The drop is recorded as a response of the client's recording.
  bool response = false;
  for (const auto& e : Events(recs["client"]["id"])) {
    if (e.value("kind", "") == "response" && e.value("action", "") == "drop") {
      response = e.value("outcome", "") == "done" && e.value("alert", "") == a["id"];
    }
  }
  EXPECT_TRUE(response);

  // --json for a SIEM: one object per line with a time.
  CommandResult siem = Blackbox({"alerts", "--json", "--vm", "client"});
  ASSERT_EQ(siem.exit_code, 0);
  auto line = nlohmann::json::parse(siem.output.substr(0, siem.output.find('\n')));
  EXPECT_TRUE(line.contains("time") && line.contains("id")) << line.dump();
  // The diff of the manifest against this recording names the flow.
  CommandResult diff =
      Blackbox({"manifest", "diff", Example("manifests/client.yaml"), recs["client"]["id"]});
  EXPECT_EQ(diff.exit_code, 1) << diff.output;
  EXPECT_NE(diff.output.find("port 2222"), std::string::npos) << diff.output;
}

// The same lab in observe mode: alerts for both ends, nothing is dropped
// (the server's kernel refuses the port itself).
TEST_F(ManifestTest, ObserveModeOnlyAlerts) {
  std::string web = ReadFileToString(Example("manifests/web.yaml"), 1 << 20).value();
  web = std::regex_replace(web, std::regex("mode: enforce"), "mode: observe");
  const std::string web_yaml = Write("web-observe.yaml", web);
  CommandResult rec =
      Blackbox({"record", "-q", Example("lab-probe.yaml"), "--manifest", "web=" + web_yaml,
                "--manifest", "client=" + ClientManifest("observe", "[alert, drop]")},
               seconds(400));
  ASSERT_EQ(rec.exit_code, 0) << rec.output;
  auto recs = RecordingsByVm();
  const std::string console = Console(recs["client"]["id"]);
  EXPECT_NE(console.find("BB-PROBE-PORT-REFUSED 2222"), std::string::npos) << console;
  auto alerts = Alerts();
  std::set<std::string> who;
  for (const auto& a : alerts) {
    EXPECT_EQ(a["mode"], "observe");
    EXPECT_EQ(a["carried_out"], nlohmann::json::array({"alert"}));
    who.insert(a["vm"].get<std::string>() + "/" + a["rule"].get<std::string>());
  }
  EXPECT_EQ(who, (std::set<std::string>{"client/probe", "web/default"}))
      << Blackbox({"alerts"}).output;
  bool noted = false;
  for (const auto& e : Events(recs["client"]["id"])) {
    if (e.value("kind", "") == "response") {
      noted = e.value("outcome", "") == "not carried out: observe mode";
    }
  }
  EXPECT_TRUE(noted);
}

// Attestation: a tampered initrd is refused before the VM starts in enforce
// mode; in observe mode the VM starts and the mismatch (a device list that
// differs) is an alert.
TEST_F(ManifestTest, TamperedInitrdIsRefusedAtLaunch) {
  auto initrd = Sha256File(GuestDir() + "/initrd.img");
  ASSERT_TRUE(initrd.ok());
  const std::string tampered = data() + "/initrd-tampered.img";
  {
    std::string bytes = ReadFileToString(GuestDir() + "/initrd.img", 256 << 20).value();
    bytes.back() ^= 0x01;
    std::ofstream(tampered, std::ios::binary) << bytes;
  }
  const std::string spec = Write("idle.yaml", R"(name: idle
kernel: )" + GuestDir() + R"(/vmlinuz
initrd: )" + tampered + R"(
append: console=ttyS0 quiet panic=-1 bb.role=idle
)");
  const std::string manifest = Write("idle-manifest.yaml", R"(manifest: 1
vm: idle
mode: enforce
boot:
  initrd: )" + ToHex(*initrd) + R"(
  machine: pc
network:
  default: [alert, drop]
)");
  CommandResult rec =
      Blackbox({"record", "-q", spec, "--manifest", "idle=" + manifest, "--for", "20s"});
  EXPECT_NE(rec.exit_code, 0) << rec.output;
  EXPECT_NE(rec.output.find("attestation failed"), std::string::npos) << rec.output;
  EXPECT_NE(rec.output.find("initrd"), std::string::npos) << rec.output;
  auto latest = LatestRecording();
  EXPECT_EQ(latest["state"], "refused");
  EXPECT_EQ(latest.value("console_bytes", 0), 0) << "no guest instruction ran";
  auto alerts = Alerts();
  ASSERT_EQ(alerts.size(), 1u);
  EXPECT_EQ(alerts[0]["kind"], "boot");
  EXPECT_TRUE(alerts[0]["refused"].get<bool>());
  EXPECT_EQ(alerts[0]["mismatches"][0]["item"], "initrd");

  // Observe mode, the right initrd, but a device list with one device too
  // many: it starts, and the probe's answer differs from the manifest.
  const std::string ok_spec = Write("idle2.yaml", R"(name: idle
kernel: )" + GuestDir() + R"(/vmlinuz
initrd: )" + GuestDir() + R"(/initrd.img
append: console=ttyS0 quiet panic=-1 bb.role=idle
)");
  const std::string observe = Write("idle-observe.yaml", R"(manifest: 1
vm: idle
mode: observe
boot:
  initrd: )" + ToHex(*initrd) + R"(
  devices: ["00:00.0 8086:1237", "00:01.0 8086:7000", "00:01.1 8086:7010", "00:01.3 8086:7113", "00:02.0 1af4:1000 id=sneaky"]
network:
  default: [alert, drop]
)");
  CommandResult rec2 =
      Blackbox({"record", "-q", ok_spec, "--manifest", "idle=" + observe, "--for", "3s"});
  EXPECT_EQ(rec2.exit_code, 0) << rec2.output;
  auto started = LatestRecording();
  EXPECT_EQ(started["state"], "complete");
  alerts = Alerts();
  ASSERT_EQ(alerts.size(), 2u) << Blackbox({"alerts"}).output;
  EXPECT_EQ(alerts[1]["kind"], "boot");
  EXPECT_FALSE(alerts[1]["refused"].get<bool>());
  EXPECT_EQ(alerts[1]["mismatches"][0]["item"], "devices");
  EXPECT_NE(alerts[1]["reason"].get<std::string>().find("-00:02.0 1af4:1000 id=sneaky"),
            std::string::npos)
      << alerts[1].dump();
}

// A guest with a pvpanic device panics: QEMU reports it, the alert is
// raised and the manifest's response (pause) keeps the crashed VM for an
// analyst; the device is part of what a learned manifest attests.
TEST_F(ManifestTest, AGuestPanicIsAlertedAndTheCrashedVmPaused) {
  const std::string spec = Write("panicker.yaml", R"(name: panicker
kernel: ${BLACKBOX_GUEST_DIR}/vmlinuz
initrd: ${BLACKBOX_GUEST_DIR}/initrd.img
append: console=ttyS0 quiet panic=0 bb.role=panic
pvpanic: true
)");
  const std::string manifest = Write("panicker.manifest.yaml", R"(manifest: 1
vm: panicker
mode: enforce
network:
  default: [alert, drop]
events:
  guest_panic: [alert, pause]
)");
  const std::string out = data() + "/record.out";
  ChildProcess rec = StartBlackbox({"record", spec, "--manifest", "panicker=" + manifest}, out);
  nlohmann::json paused;
  std::string id;
  const auto deadline = std::chrono::steady_clock::now() + seconds(240);
  while (paused.is_null() && std::chrono::steady_clock::now() < deadline && rec.running()) {
    auto recs = RecordingsByVm();
    if (recs.count("panicker")) {
      id = recs["panicker"]["id"];
      for (const auto& e : Events(id)) {
        if (e.value("kind", "") == "response" && e.value("action", "") == "pause") paused = e;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  ASSERT_FALSE(paused.is_null()) << TailOfFile(out, 20);
  EXPECT_EQ(paused["outcome"], "done");
  EXPECT_EQ(paused["detail"]["status"], "paused") << paused.dump();
  rec.Signal(SIGINT);
  ASSERT_TRUE(rec.Wait(seconds(120)).ok()) << TailOfFile(out, 20);

  const std::string console = Console(id);
  EXPECT_NE(console.find("BB-PANIC-NOW"), std::string::npos) << console;
  EXPECT_NE(console.find("Kernel panic - not syncing"), std::string::npos) << console;
  auto alerts = Alerts();
  ASSERT_EQ(alerts.size(), 1u) << Blackbox({"alerts"}).output;
  EXPECT_EQ(alerts[0]["vm"], "panicker");
  EXPECT_EQ(alerts[0]["rule"], "events.guest_panic");
  EXPECT_EQ(alerts[0]["recording"], id);
  EXPECT_EQ(alerts[0]["action"], nlohmann::json::array({"alert", "pause"}));
  // QEMU's own report comes first in the recording's events.
  bool panicked_before_alert = false, alert_seen = false;
  for (const auto& e : Events(id)) {
    if (e.value("kind", "") == "qmp" && e.value("event", "") == "GUEST_PANICKED") {
      panicked_before_alert = !alert_seen;
    }
    alert_seen = alert_seen || e.value("kind", "") == "alert";
  }
  EXPECT_TRUE(panicked_before_alert);

  const std::string learned = data() + "/learned.yaml";
  CommandResult learn = Blackbox({"manifest", "learn", "panicker", "-o", learned});
  ASSERT_EQ(learn.exit_code, 0) << learn.output;
  EXPECT_NE(ReadFileOrEmpty(learned).find("1b36:0011 id=pvpanic"), std::string::npos)
      << ReadFileOrEmpty(learned);
}

// The VM-level responses really take effect, each on its own prober:
// quarantine (its second fetch fails: it can no longer reach its peer),
// snapshot + pause (QMP reports it paused and its console stops; the
// snapshot is in the recording) and power-off (its recording ends there).
// Meanwhile `alerts --follow` prints the alerts as they are stored, and a
// manifest is learned by watching the running web server.
TEST_F(ManifestTest, QuarantinePauseSnapshotAndPowerOffTakeEffect) {
  std::string lab = ReadFileToString(Example("lab-probe.yaml"), 1 << 20).value();
  lab = std::regex_replace(lab, std::regex("stop_when: first-exit"), "stop_when: all-exit");
  lab = std::regex_replace(lab, std::regex("      manifest: manifests/[a-z]+.yaml\n"), "");
  for (int k : {2, 3}) {
    const std::string n = std::to_string(k), ip = std::to_string(k + 1);
    lab += "  - vm:\n      name: client" + n +
           "\n      kernel: ${BLACKBOX_GUEST_DIR}/vmlinuz\n      initrd: "
           "${BLACKBOX_GUEST_DIR}/initrd.img\n      append: console=ttyS0 quiet panic=-1 "
           "bb.role=prober bb.ip=10.0.0." +
           ip + "/24 bb.peer=10.0.0.1 bb.port=222" + ip +
           " bb.poweroff=1\n      memory: 256M\n      nics:\n        - {name: n0, mac: "
           "\"52:54:00:00:00:0" +
           ip + "\", segment: lan, ips: [10.0.0." + ip + "]}\n";
  }
  const std::string lab_path = Write("lab-responses.yaml", lab);
  auto manifest = [&](const std::string& vm, int port, const std::string& action) {
    return Write(vm + ".yaml", "manifest: 1\nvm: " + vm + R"(
mode: enforce
network:
  default: [alert, drop]
  rules:
    - {name: web-http, direction: out, peer: web, proto: tcp, ports: [80], action: allow}
    - {name: probe, direction: out, peer: web, proto: tcp, ports: [)" +
                                   std::to_string(port) + "], action: " + action + "}\n");
  };
  const std::string follow_out = data() + "/follow.out";
  ChildProcess follow = StartBlackbox({"alerts", "--follow", "--json"}, follow_out);
  const std::string out = data() + "/record.out";
  ChildProcess rec =
      StartBlackbox({"record", lab_path, "--manifest",
                     "client=" + manifest("client", 2222, "[alert, quarantine]"), "--manifest",
                     "client2=" + manifest("client2", 2223, "[alert, snapshot, pause]"),
                     "--manifest", "client3=" + manifest("client3", 2224, "[alert, poweroff]")},
                    out);
  // Wait until the quarantined and the powered-off probers have ended and
  // the paused one's pause is recorded.
  nlohmann::json paused_detail, snapshot_detail;
  std::map<std::string, nlohmann::json> recs;
  const auto deadline = std::chrono::steady_clock::now() + seconds(400);
  while (std::chrono::steady_clock::now() < deadline) {
    recs = RecordingsByVm();
    if (recs.count("client") && recs.count("client2") && recs.count("client3")) {
      for (const auto& e : Events(recs["client2"]["id"])) {
        if (e.value("kind", "") != "response") continue;
        if (e.value("action", "") == "pause") paused_detail = e;
        if (e.value("action", "") == "snapshot") snapshot_detail = e;
      }
      if (!paused_detail.is_null() && !snapshot_detail.is_null() &&
          recs["client"]["state"] != "recording" && recs["client3"]["state"] != "recording") {
        break;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  ASSERT_FALSE(paused_detail.is_null()) << TailOfFile(out, 30);
  EXPECT_EQ(paused_detail["outcome"], "done");
  EXPECT_EQ(paused_detail["detail"]["status"], "paused") << paused_detail.dump();
  EXPECT_EQ(snapshot_detail["outcome"], "done") << snapshot_detail.dump();

  // A manifest learned by watching the running server for a few seconds.
  const std::string live = data() + "/web-live.yaml";
  CommandResult learn = Blackbox({"manifest", "learn", "web", "--for", "3s", "-o", live});
  EXPECT_EQ(learn.exit_code, 0) << learn.output;
  EXPECT_EQ(Blackbox({"manifest", "check", live}).exit_code, 0);
  EXPECT_NE(ReadFileOrEmpty(live).find("vm: web"), std::string::npos);

  // The paused prober's console, seconds after its pause: it must not grow.
  const std::string c2_paused = Console(recs["client2"]["id"]);

  rec.Signal(SIGINT);
  auto st = rec.Wait(seconds(120));
  ASSERT_TRUE(st.ok()) << TailOfFile(out, 20);

  recs = RecordingsByVm();
  const std::string c1 = Console(recs["client"]["id"]), c2 = Console(recs["client2"]["id"]),
                    c3 = Console(recs["client3"]["id"]);
  EXPECT_NE(c1.find("BB-PROBE-HTTP-OK"), std::string::npos) << c1;
  EXPECT_NE(c1.find("BB-PROBE-HTTP2-FAIL"), std::string::npos)
      << "quarantined: the client no longer reaches its peer\n"
      << c1;
  EXPECT_NE(c2.find("BB-PROBE-HTTP-OK"), std::string::npos) << c2;
  // The pause comes after the snapshot (QEMU takes none of a paused VM under
  // record), and savevm is refused while replay events are queued, so the
  // guest may run on for a few retries of 200 ms first: what is checked is
  // that it stayed paused from then on.
  EXPECT_EQ(c2, c2_paused) << "client2 ran on after its pause";
  EXPECT_EQ(c3.find("BB-PROBE-HTTP2"), std::string::npos) << "powered off before\n" << c3;
  EXPECT_NE(recs["client3"]["end_reason"].get<std::string>().find("manifest response"),
            std::string::npos)
      << recs["client3"].dump();
  EXPECT_EQ(recs["client3"]["state"], "complete");
  bool snapshot_listed = false;
  for (const auto& snap : recs["client2"]["snapshots"]) {
    snapshot_listed = snapshot_listed || snap["name"] == snapshot_detail["detail"]["name"];
  }
  EXPECT_TRUE(snapshot_listed) << recs["client2"]["snapshots"].dump();

  std::set<std::string> rules;
  for (const auto& a : Alerts()) {
    rules.insert(a["vm"].get<std::string>() + "/" + a["rule"].get<std::string>());
  }
  // The quarantined prober powers itself off when it is done: its manifest
  // does not allow that (events.guest_shutdown), the others never get there.
  const std::set<std::string> want = {"client/probe", "client/events.guest_shutdown",
                                      "client2/probe", "client3/probe"};
  EXPECT_EQ(rules, want) << Blackbox({"alerts"}).output;
  // `alerts --follow` printed each of them while the lab ran.
  std::set<std::string> followed;
  for (int i = 0; i < 100 && followed.size() < want.size(); ++i) {
    followed.clear();
    std::istringstream in(ReadFileOrEmpty(follow_out));
    for (std::string line; std::getline(in, line);) {
      if (line.empty() || line[0] != '{') continue;
      auto j = nlohmann::json::parse(line);
      followed.insert(j["vm"].get<std::string>() + "/" + j["rule"].get<std::string>());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(followed, want) << TailOfFile(follow_out, 20);
  follow.Signal(SIGINT);
  auto fst = follow.Wait(seconds(10));
  ASSERT_TRUE(fst.ok());
  EXPECT_EQ(*fst, 0) << "Ctrl-C ends alerts --follow cleanly";
}

}  // namespace
}  // namespace blackbox::e2e
