// End-to-end tests of the switch: real guests talk through Blackbox's switch
// in a lab; the capture is exported as pcapng and read back with tshark, the
// flow records are compared with tshark's dissection, and a spoofing guest is
// dropped and recorded; two recorded guests answer HTTP promptly.
#include <map>
#include <regex>
#include <sstream>

#include "store/store.h"
#include "switch/exchange_timing.h"
#include "tests/e2e/e2e_util.h"

namespace blackbox::e2e {
namespace {

using std::chrono::seconds;

class SwitchTest : public E2eTest {
 protected:
  // tshark's output lines (its own warnings about running as root dropped).
  std::vector<std::string> Tshark(std::vector<std::string> args) {
    args.insert(args.begin(), "tshark");
    auto out = RunCommand(args, seconds(120));
    EXPECT_TRUE(out.ok()) << out.status().ToString();
    std::vector<std::string> lines;
    if (!out.ok()) return lines;
    std::istringstream in(*out);
    for (std::string line; std::getline(in, line);) {
      if (line.find("Running as user") != std::string::npos || line.empty()) continue;
      lines.push_back(line);
    }
    return lines;
  }
};

TEST_F(SwitchTest, HttpGuestsThroughTheSwitchAreCapturedAndReplayable) {
  CommandResult rec = Blackbox({"record", "-q", Example("lab-http.yaml")}, seconds(400));
  ASSERT_EQ(rec.exit_code, 0) << rec.output;
  auto recs = RecordingsByVm();
  ASSERT_TRUE(recs.count("web") && recs.count("client")) << rec.output;
  std::string client = recs["client"]["id"], web = recs["web"]["id"];
  EXPECT_EQ(recs["client"]["state"], "complete");
  EXPECT_EQ(recs["web"]["state"], "complete");
  std::string capture = recs["client"]["capture"];
  EXPECT_EQ(recs["web"]["capture"], capture);

  // The client fetched the server's file intact through the switch.
  std::smatch m;
  std::string web_console = Console(web), client_console = Console(client);
  ASSERT_TRUE(std::regex_search(web_console, m, std::regex("BB-HTTP-BIG ([0-9a-f]{32})")))
      << web_console;
  std::string big_md5 = m[1];
  EXPECT_NE(client_console.find("BB-HTTP-OK " + big_md5), std::string::npos) << client_console;

  // The exported pcapng holds the GET and the 200, on one interface per port.
  std::string pcap = data() + "/client.pcapng";
  CommandResult exp = Blackbox({"export", client, "--pcapng", pcap});
  ASSERT_EQ(exp.exit_code, 0) << exp.output;
  auto gets = Tshark({"-r", pcap, "-Y", "http.request.method == \"GET\"", "-T", "fields", "-e",
                      "http.request.uri", "-e", "frame.interface_name"});
  EXPECT_NE(std::find(gets.begin(), gets.end(), "/big.bin\tclient/n0"), gets.end())
      << ::testing::PrintToString(gets);
  auto oks = Tshark({"-r", pcap, "-Y", "http.response.code == 200", "-T", "fields", "-e",
                     "frame.interface_name"});
  EXPECT_GE(oks.size(), 1u);
  for (const auto& line : oks) EXPECT_EQ(line, "web/n0");

  // The flow record of the download matches tshark's count of its frames and
  // bytes in each direction.
  auto fields = Tshark({"-r", pcap, "-Y", "tcp.port == 80", "-T", "fields", "-e", "ip.src", "-e",
                        "tcp.srcport", "-e", "tcp.dstport", "-e", "frame.len", "-e", "tcp.stream"});
  struct Dir {
    uint64_t packets = 0, bytes = 0;
  };
  // (client port) -> {client->server, server->client}
  std::map<int, std::pair<Dir, Dir>> convs;
  for (const auto& line : fields) {
    std::istringstream in(line);
    std::string src;
    int sport = 0, dport = 0;
    uint64_t len = 0;
    in >> src >> sport >> dport >> len;
    ASSERT_FALSE(in.fail()) << line;
    bool from_client = src == "10.0.0.2";
    auto& c = convs[from_client ? sport : dport];
    Dir& d = from_client ? c.first : c.second;
    ++d.packets;
    d.bytes += len;
  }
  ASSERT_FALSE(convs.empty());
  CommandResult flows = Blackbox({"flows", client, "--json"});
  ASSERT_EQ(flows.exit_code, 0) << flows.output;
  std::istringstream in(flows.output);
  int matched = 0;
  uint64_t biggest = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] != '{') continue;
    auto f = nlohmann::json::parse(line);
    if (f.value("proto", 0) != 6 || f.value("b_port", 0) != 80) continue;
    EXPECT_EQ(f["a_ip"], "10.0.0.2");
    EXPECT_EQ(f["b_ip"], "10.0.0.1");
    EXPECT_EQ(f["community_id"].get<std::string>().rfind("1:", 0), 0u);
    auto it = convs.find(f["a_port"].get<int>());
    ASSERT_NE(it, convs.end()) << line;
    EXPECT_EQ(f["packets_a_to_b"].get<uint64_t>(), it->second.first.packets) << line;
    EXPECT_EQ(f["bytes_a_to_b"].get<uint64_t>(), it->second.first.bytes) << line;
    EXPECT_EQ(f["packets_b_to_a"].get<uint64_t>(), it->second.second.packets) << line;
    EXPECT_EQ(f["bytes_b_to_a"].get<uint64_t>(), it->second.second.bytes) << line;
    EXPECT_EQ(f["port_a"], "client/n0");
    EXPECT_EQ(f["port_b"], "web/n0");
    biggest = std::max(biggest, f["bytes_b_to_a"].get<uint64_t>());
    ++matched;
  }
  EXPECT_EQ(matched, static_cast<int>(convs.size())) << flows.output;
  EXPECT_GT(biggest, 1u << 20) << "the 1 MiB download's flow";

  // Network input is in the rr log: both guests replay byte-exact without
  // any peer on their NICs, and end with the RAM they were recorded with.
  for (const std::string& id : {client, web}) {
    CommandResult verify = Blackbox({"verify", "-q", id}, seconds(400));
    EXPECT_EQ(verify.exit_code, 0) << verify.output;
    EXPECT_NE(verify.output.find("final RAM identical"), std::string::npos) << verify.output;
  }
}

TEST_F(SwitchTest, SpoofingGuestIsDroppedAndRecorded) {
  CommandResult rec = Blackbox({"record", "-q", Example("lab-spoof.yaml")}, seconds(400));
  ASSERT_EQ(rec.exit_code, 0) << rec.output;
  // The switch's own counters (kept with the capture) saw the drops.
  EXPECT_TRUE(std::regex_search(rec.output, std::regex("\\([1-9][0-9]* dropped by the switch\\)")))
      << rec.output;
  auto recs = RecordingsByVm();
  ASSERT_TRUE(recs.count("web") && recs.count("spoofer")) << rec.output;
  std::string spoofer = recs["spoofer"]["id"], web = recs["web"]["id"];

  // Its own identity works; forged ones get no answer.
  std::string console = Console(spoofer);
  EXPECT_NE(console.find("BB-SPOOF-PEER-OK"), std::string::npos) << console;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(console, m, std::regex("BB-SPOOF-IP-SENT ([0-9]+)"))) << console;
  EXPECT_GT(std::stoi(m[1]), 0);
  EXPECT_NE(console.find("BB-SPOOF-IP-REPLIES 0"), std::string::npos) << console;
  EXPECT_NE(console.find("BB-SPOOF-MAC-REPLIES 0"), std::string::npos) << console;

  // The drops are events of the spoofer's recording.
  CommandResult show = Blackbox({"show", "--json", spoofer});
  ASSERT_EQ(show.exit_code, 0) << show.output;
  auto j = nlohmann::json::parse(show.output);
  std::map<std::string, int> drops;
  for (const auto& e : j["events"]) {
    if (e["event"].value("what", "") == "drop") ++drops[e["event"].value("reason", "")];
  }
  EXPECT_GT(drops["spoofed_ip"], 0) << show.output;
  EXPECT_GT(drops["spoofed_mac"], 0) << show.output;

  // The dropped frames are in the capture, with the reason as a comment.
  std::string pcap = data() + "/spoof.pcapng";
  CommandResult exp = Blackbox({"export", spoofer, "--pcapng", pcap});
  ASSERT_EQ(exp.exit_code, 0) << exp.output;
  auto forged_ip = Tshark({"-r", pcap, "-Y",
                           "ip.src == 10.0.0.66 && frame.comment contains \"dropped: spoofed_ip\"",
                           "-T", "fields", "-e", "frame.interface_name"});
  EXPECT_GE(forged_ip.size(), 1u);
  for (const auto& line : forged_ip) EXPECT_EQ(line, "spoofer/n0");
  auto forged_mac = Tshark({"-r", pcap, "-Y",
                            "eth.src == 52:54:00:66:66:66 && frame.comment contains "
                            "\"dropped: spoofed_mac\"",
                            "-T", "fields", "-e", "frame.number"});
  EXPECT_GE(forged_mac.size(), 1u);
  // None of them reached the server's port.
  auto leaked = Tshark({"-r", pcap, "-Y", "ip.src == 10.0.0.66 && !frame.comment", "-T", "fields",
                        "-e", "frame.number"});
  EXPECT_TRUE(leaked.empty()) << ::testing::PrintToString(leaked);

  // The server ran on the switch without rr: nothing to replay, said plainly.
  CommandResult verify = Blackbox({"verify", "-q", web});
  EXPECT_EQ(verify.exit_code, 2) << verify.output;
  EXPECT_NE(verify.output.find("without rr"), std::string::npos) << verify.output;
}

// Prompt I/O under record (qemu-patches 0006): two recorded guests on the
// switch, a client making 50 HTTP exchanges (connect, GET /, close) with a
// server. Timed by the switch's clock, each exchange takes ~20 ms unrecorded
// and ~30 ms recorded with the patched QEMU, but 1.5-2.5 s recorded without
// the patch (a frame waited for the idle receiver's next timer): every one
// must finish within kExchangeBound, which leaves a wide margin for a loaded
// machine and fails at once if the receiving guest again takes frames late.
// Both recordings then replay byte-exact.
TEST_F(SwitchTest, RecordedGuestsAnswerHttpPromptlyAndBothVerify) {
  constexpr int kExchanges = 50;
  constexpr double kExchangeBoundMs = 1000;
  const std::string guest = GuestDir();
  auto vm = [&](const std::string& name, const std::string& role, const std::string& ip,
                const std::string& mac, const std::string& extra) {
    return "  - vm:\n"
           "      name: " +
           name +
           "\n"
           "      kernel: " +
           guest +
           "/vmlinuz\n"
           "      initrd: " +
           guest +
           "/initrd.img\n"
           "      append: console=ttyS0 quiet panic=-1 bb.role=" +
           role + " bb.ip=" + ip + "/24 " + extra +
           "\n"
           "      memory: 256M\n"
           "      nics:\n"
           "        - {name: n0, mac: \"" +
           mac + "\", segment: lan, ips: [" + ip + "]}\n";
  };
  const std::string lab_path = data() + "/lab-loop.yaml";
  ASSERT_TRUE(
      WriteFileAtomic(
          lab_path, "lab: http-loop\nstop_when: first-exit\nvms:\n" +
                        vm("web", "http-server", "10.0.0.1", "52:54:00:00:00:01", "") +
                        vm("client", "http-loop", "10.0.0.2", "52:54:00:00:00:02",
                           "bb.peer=10.0.0.1 bb.poweroff=1 bb.count=" + std::to_string(kExchanges)))
          .ok());
  CommandResult rec = Blackbox({"record", "-q", lab_path}, seconds(600));
  ASSERT_EQ(rec.exit_code, 0) << rec.output;
  auto recs = RecordingsByVm();
  ASSERT_TRUE(recs.count("web") && recs.count("client")) << rec.output;
  const std::string client = recs["client"]["id"], web = recs["web"]["id"];
  const std::string client_console = Console(client);
  ASSERT_NE(client_console.find("BB-LOOP-GETS " + std::to_string(kExchanges) + "/" +
                                std::to_string(kExchanges)),
            std::string::npos)
      << client_console;

  StoreOptions so;
  so.path = data() + "/store";
  so.read_only = true;
  auto store = Store::Open(so);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto times = TimeExchanges(**store, recs["client"]["capture"].get<std::string>(), "10.0.0.2",
                             "10.0.0.1", 80);
  ASSERT_TRUE(times.ok()) << times.status().ToString();
  // The loop's exchanges are the last 50 connections (the client polled the
  // server before, while it came up).
  ASSERT_GE(times->exchange_ms.size(), static_cast<size_t>(kExchanges));
  const std::vector<double> loop(times->exchange_ms.end() - kExchanges, times->exchange_ms.end());
  std::ostringstream all;
  for (double ms : loop) all << static_cast<int>(ms) << " ";
  for (size_t i = 0; i < loop.size(); ++i) {
    EXPECT_LT(loop[i], kExchangeBoundMs)
        << "exchange " << i + 1 << " of " << kExchanges << "; all (ms): " << all.str();
  }
  store->reset();

  for (const std::string& id : {web, client}) {
    CommandResult verify = Blackbox({"verify", "-q", id}, seconds(600));
    EXPECT_EQ(verify.exit_code, 0) << id << ": " << verify.output;
    EXPECT_NE(verify.output.find("final RAM identical"), std::string::npos)
        << id << ": " << verify.output;
  }
}

}  // namespace
}  // namespace blackbox::e2e
