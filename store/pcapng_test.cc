#include "store/pcapng.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "common/files.h"
#include "common/process.h"

namespace blackbox {
namespace {

// --- Test-side pcapng parser (little-endian only). -------------------------

uint16_t GetU16(const std::string& s, size_t at) {
  return static_cast<uint16_t>(static_cast<uint8_t>(s[at]) |
                               (static_cast<uint8_t>(s[at + 1]) << 8));
}

uint32_t GetU32(const std::string& s, size_t at) {
  return static_cast<uint32_t>(GetU16(s, at)) | (static_cast<uint32_t>(GetU16(s, at + 2)) << 16);
}

struct Block {
  uint32_t type = 0;
  std::string body;  // between the leading length and the trailing length
};

struct Option {
  uint16_t code = 0;
  std::string value;
};

// Splits `data` into blocks, checking every structural invariant on the way.
std::vector<Block> ParseBlocks(const std::string& data) {
  std::vector<Block> blocks;
  size_t at = 0;
  while (at < data.size()) {
    EXPECT_LE(at + 12, data.size()) << "truncated block header at " << at;
    if (at + 12 > data.size()) break;
    const uint32_t type = GetU32(data, at);
    const uint32_t length = GetU32(data, at + 4);
    EXPECT_EQ(length % 4, 0u) << "block at " << at;
    EXPECT_GE(length, 12u);
    EXPECT_LE(at + length, data.size()) << "block at " << at << " overruns the file";
    if (length < 12 || at + length > data.size()) break;
    EXPECT_EQ(GetU32(data, at + length - 4), length) << "trailing length of block at " << at;
    blocks.push_back({type, data.substr(at + 8, length - 12)});
    at += length;
  }
  return blocks;
}

// Parses options starting at `at` in `body` up to and including opt_endofopt.
std::vector<Option> ParseOptions(const std::string& body, size_t at) {
  std::vector<Option> options;
  bool saw_end = false;
  while (at + 4 <= body.size()) {
    const uint16_t code = GetU16(body, at);
    const uint16_t length = GetU16(body, at + 2);
    if (code == 0) {
      EXPECT_EQ(length, 0);
      EXPECT_EQ(at + 4, body.size()) << "bytes after opt_endofopt";
      saw_end = true;
      break;
    }
    const size_t padded = (length + 3u) & ~3u;
    EXPECT_LE(at + 4 + padded, body.size());
    if (at + 4 + padded > body.size()) break;
    for (size_t i = length; i < padded; ++i) EXPECT_EQ(body[at + 4 + i], '\0') << "padding";
    options.push_back({code, body.substr(at + 4, length)});
    at += 4 + padded;
  }
  EXPECT_TRUE(saw_end || options.empty()) << "options without opt_endofopt";
  return options;
}

const Option* FindOption(const std::vector<Option>& options, uint16_t code) {
  for (const Option& o : options) {
    if (o.code == code) return &o;
  }
  return nullptr;
}

// --- Hand-built frames. ----------------------------------------------------

void Put16Be(std::vector<uint8_t>* f, uint16_t v) {
  f->push_back(static_cast<uint8_t>(v >> 8));
  f->push_back(static_cast<uint8_t>(v));
}

void PutIpv4Header(std::vector<uint8_t>* f, uint8_t protocol, uint16_t payload_len,
                   const uint8_t src[4], const uint8_t dst[4]) {
  const size_t start = f->size();
  f->push_back(0x45);  // version 4, IHL 5
  f->push_back(0);
  Put16Be(f, static_cast<uint16_t>(20 + payload_len));
  Put16Be(f, 0x1234);  // identification
  Put16Be(f, 0x4000);  // don't fragment
  f->push_back(64);    // TTL
  f->push_back(protocol);
  Put16Be(f, 0);  // checksum, filled below
  f->insert(f->end(), src, src + 4);
  f->insert(f->end(), dst, dst + 4);
  uint32_t sum = 0;
  for (size_t i = start; i < start + 20; i += 2) sum += ((*f)[i] << 8) | (*f)[i + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  const uint16_t checksum = static_cast<uint16_t>(~sum);
  (*f)[start + 10] = static_cast<uint8_t>(checksum >> 8);
  (*f)[start + 11] = static_cast<uint8_t>(checksum);
}

void PutEthernetHeader(std::vector<uint8_t>* f) {
  const uint8_t dst[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x02};
  const uint8_t src[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x01};
  f->insert(f->end(), dst, dst + 6);
  f->insert(f->end(), src, src + 6);
  Put16Be(f, 0x0800);  // IPv4
}

const uint8_t kSrcIp[4] = {10, 0, 0, 1};
const uint8_t kDstIp[4] = {10, 0, 0, 2};

// Ethernet / IPv4 10.0.0.1 -> 10.0.0.2 / UDP 40000 -> 9 (discard), 5-byte payload
// (47 bytes, so the EPB needs 1 byte of padding).
std::vector<uint8_t> UdpFrame() {
  std::vector<uint8_t> f;
  PutEthernetHeader(&f);
  const std::string payload = "hello";
  PutIpv4Header(&f, 17, static_cast<uint16_t>(8 + payload.size()), kSrcIp, kDstIp);
  Put16Be(&f, 40000);
  Put16Be(&f, 9);
  Put16Be(&f, static_cast<uint16_t>(8 + payload.size()));
  Put16Be(&f, 0);  // checksum: none
  f.insert(f.end(), payload.begin(), payload.end());
  return f;
}

// Ethernet / IPv4 10.0.0.1 -> 10.0.0.2 / TCP SYN 40001 -> 22 (54 bytes).
std::vector<uint8_t> TcpSynFrame() {
  std::vector<uint8_t> f;
  PutEthernetHeader(&f);
  PutIpv4Header(&f, 6, 20, kSrcIp, kDstIp);
  Put16Be(&f, 40001);
  Put16Be(&f, 22);
  Put16Be(&f, 0x1111);  // seq
  Put16Be(&f, 0x2222);
  Put16Be(&f, 0);  // ack
  Put16Be(&f, 0);
  f.push_back(0x50);   // data offset 5
  f.push_back(0x02);   // SYN
  Put16Be(&f, 64240);  // window
  Put16Be(&f, 0);      // checksum (not validated by default)
  Put16Be(&f, 0);      // urgent
  return f;
}

std::string FormatEpoch(int64_t ns) {
  char buf[64];
  snprintf(buf, sizeof(buf), "%lld.%09lld", static_cast<long long>(ns / 1000000000),
           static_cast<long long>(ns % 1000000000));
  return buf;
}

constexpr int64_t kT0 = 1700000000123456789;  // high word is non-zero

// --- Structural tests. -----------------------------------------------------

TEST(PcapngWriterTest, SectionHeaderOnly) {
  std::ostringstream out;
  PcapngWriter writer(&out);
  ASSERT_TRUE(writer.Finish().ok());
  const std::string data = out.str();
  std::vector<Block> blocks = ParseBlocks(data);
  ASSERT_EQ(blocks.size(), 1u);
  EXPECT_EQ(blocks[0].type, 0x0A0D0D0Au);
  const std::string& shb = blocks[0].body;
  ASSERT_GE(shb.size(), 16u);
  EXPECT_EQ(GetU32(shb, 0), 0x1A2B3C4Du);
  EXPECT_EQ(GetU16(shb, 4), 1);
  EXPECT_EQ(GetU16(shb, 6), 0);
  EXPECT_EQ(GetU32(shb, 8), 0xFFFFFFFFu);
  EXPECT_EQ(GetU32(shb, 12), 0xFFFFFFFFu);
  std::vector<Option> options = ParseOptions(shb, 16);
  const Option* appl = FindOption(options, 4);
  ASSERT_NE(appl, nullptr);
  EXPECT_EQ(appl->value, "Blackbox");
  // The magic is written byte by byte little-endian, whatever the host.
  EXPECT_EQ(data.substr(8, 4), std::string("\x4D\x3C\x2B\x1A", 4));
}

TEST(PcapngWriterTest, BlocksParseBack) {
  std::ostringstream out;
  PcapngWriter writer(&out);
  EXPECT_EQ(writer.AddInterface("vm-a", "Blackbox switch port of vm-a"), 0u);
  EXPECT_EQ(writer.AddInterface("vm-b", ""), 1u);
  const std::vector<uint8_t> udp = UdpFrame();
  const std::vector<uint8_t> syn = TcpSynFrame();
  ASSERT_TRUE(writer.WritePacket(0, kT0, udp).ok());
  ASSERT_TRUE(writer.WritePacket(1, kT0 + 1, syn, "dropped: port down").ok());
  ASSERT_TRUE(writer.WritePacket(1, 5, std::span<const uint8_t>(syn).first(20), "", 1514).ok());
  ASSERT_TRUE(writer.Finish().ok());

  std::vector<Block> blocks = ParseBlocks(out.str());
  ASSERT_EQ(blocks.size(), 6u);
  EXPECT_EQ(out.str().size() % 4, 0u);

  // IDBs.
  for (int i : {1, 2}) {
    const std::string& idb = blocks[i].body;
    EXPECT_EQ(blocks[i].type, 1u);
    ASSERT_GE(idb.size(), 8u);
    EXPECT_EQ(GetU16(idb, 0), 1);  // LINKTYPE_ETHERNET
    EXPECT_EQ(GetU16(idb, 2), 0);
    EXPECT_EQ(GetU32(idb, 4), 262144u);
    std::vector<Option> options = ParseOptions(idb, 8);
    const Option* name = FindOption(options, 2);
    const Option* tsresol = FindOption(options, 9);
    ASSERT_NE(name, nullptr);
    ASSERT_NE(tsresol, nullptr);
    EXPECT_EQ(name->value, i == 1 ? "vm-a" : "vm-b");
    EXPECT_EQ(tsresol->value, std::string(1, '\x09'));
    const Option* desc = FindOption(options, 3);
    if (i == 1) {
      ASSERT_NE(desc, nullptr);
      EXPECT_EQ(desc->value, "Blackbox switch port of vm-a");
    } else {
      EXPECT_EQ(desc, nullptr);
    }
  }

  // EPBs.
  struct Want {
    uint32_t interface_id;
    int64_t ts;
    std::string data;
    uint32_t original;
    std::string comment;
  };
  const std::vector<Want> wants = {
      {0, kT0, std::string(udp.begin(), udp.end()), static_cast<uint32_t>(udp.size()), ""},
      {1, kT0 + 1, std::string(syn.begin(), syn.end()), static_cast<uint32_t>(syn.size()),
       "dropped: port down"},
      {1, 5, std::string(syn.begin(), syn.begin() + 20), 1514, ""},
  };
  for (size_t i = 0; i < wants.size(); ++i) {
    SCOPED_TRACE("packet " + std::to_string(i));
    const Block& b = blocks[3 + i];
    const Want& w = wants[i];
    EXPECT_EQ(b.type, 6u);
    ASSERT_GE(b.body.size(), 20u);
    EXPECT_EQ(GetU32(b.body, 0), w.interface_id);
    const uint64_t ts = (static_cast<uint64_t>(GetU32(b.body, 4)) << 32) | GetU32(b.body, 8);
    EXPECT_EQ(ts, static_cast<uint64_t>(w.ts));
    const uint32_t captured = GetU32(b.body, 12);
    EXPECT_EQ(captured, w.data.size());
    EXPECT_EQ(GetU32(b.body, 16), w.original);
    const size_t padded = (captured + 3u) & ~3u;
    ASSERT_LE(20 + padded, b.body.size());
    EXPECT_EQ(b.body.substr(20, captured), w.data);
    for (size_t j = captured; j < padded; ++j) EXPECT_EQ(b.body[20 + j], '\0');
    std::vector<Option> options = ParseOptions(b.body, 20 + padded);
    const Option* comment = FindOption(options, 1);
    if (w.comment.empty()) {
      EXPECT_EQ(b.body.size(), 20 + padded) << "no options block expected";
    } else {
      ASSERT_NE(comment, nullptr);
      EXPECT_EQ(comment->value, w.comment);
    }
  }
}

TEST(PcapngWriterTest, RejectsBadInput) {
  std::ostringstream out;
  PcapngWriter writer(&out);
  const std::vector<uint8_t> frame(64, 0xab);
  EXPECT_EQ(writer.WritePacket(0, kT0, frame).code(), StatusCode::kInvalidArgument);
  const uint32_t id = writer.AddInterface("vm-a", "");
  const size_t size_before = out.str().size();
  EXPECT_EQ(writer.WritePacket(id + 1, kT0, frame).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(writer.WritePacket(id, -1, frame).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(writer.WritePacket(id, kT0, frame, "", 10).code(), StatusCode::kInvalidArgument);
  const std::vector<uint8_t> huge(kPcapngMaxFrameBytes + 1, 0);
  EXPECT_EQ(writer.WritePacket(id, kT0, huge).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(out.str().size(), size_before) << "rejected packets must write nothing";
  const std::vector<uint8_t> max(kPcapngMaxFrameBytes, 0);
  EXPECT_TRUE(writer.WritePacket(id, kT0, max).ok());
  EXPECT_TRUE(writer.Finish().ok());
  EXPECT_EQ(writer.WritePacket(id, kT0, frame).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(ParseBlocks(out.str()).size(), 3u);
}

TEST(PcapngWriterTest, LongCommentIsTruncatedToFitOption) {
  std::ostringstream out;
  PcapngWriter writer(&out);
  const uint32_t id = writer.AddInterface("vm-a", "");
  // 2-byte UTF-8 characters so the cut has to avoid splitting one.
  std::string comment;
  while (comment.size() < 70000) comment += "\xC3\xA9";
  ASSERT_TRUE(writer.WritePacket(id, kT0, std::vector<uint8_t>(60, 1), comment).ok());
  ASSERT_TRUE(writer.Finish().ok());
  std::vector<Block> blocks = ParseBlocks(out.str());
  ASSERT_EQ(blocks.size(), 3u);
  std::vector<Option> options = ParseOptions(blocks[2].body, 20 + 60);
  const Option* c = FindOption(options, 1);
  ASSERT_NE(c, nullptr);
  EXPECT_LE(c->value.size(), kPcapngMaxOptionBytes);
  EXPECT_GT(c->value.size(), kPcapngMaxOptionBytes - 2);
  EXPECT_EQ(c->value.size() % 2, 0u);
  EXPECT_EQ(c->value, comment.substr(0, c->value.size()));
}

TEST(PcapngWriterTest, StreamErrorsAreReported) {
  std::ostream broken(nullptr);  // every write sets badbit
  PcapngWriter writer(&broken);
  const uint32_t id = writer.AddInterface("vm-a", "");
  Status s = writer.WritePacket(id, kT0, std::vector<uint8_t>(60, 1));
  EXPECT_EQ(s.code(), StatusCode::kIOError) << s.ToString();
  EXPECT_EQ(writer.Finish().code(), StatusCode::kIOError);
}

TEST(PcapngWriterTest, OpenFileFailsForMissingDirectory) {
  auto writer = PcapngWriter::OpenFile("/nonexistent-dir/x.pcapng");
  EXPECT_EQ(writer.status().code(), StatusCode::kIOError);
}

// --- The real check: Wireshark reads it. -----------------------------------

bool TsharkInstalled() { return RunCommand({"sh", "-c", "command -v tshark"}).ok(); }

// Runs tshark with stderr (its "running as root" warning) sent to a file.
StatusOr<std::string> RunTshark(const std::string& stderr_path,
                                const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"sh", "-c", "exec tshark \"$@\" 2>\"$0\"", stderr_path};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv);
}

std::vector<std::vector<std::string>> SplitLines(const std::string& out) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::vector<std::string> fields;
    size_t start = 0;
    while (true) {
      size_t tab = line.find('\t', start);
      fields.push_back(line.substr(start, tab == std::string::npos ? tab : tab - start));
      if (tab == std::string::npos) break;
      start = tab + 1;
    }
    rows.push_back(fields);
  }
  return rows;
}

TEST(PcapngWriterTest, TsharkReadsEveryPacket) {
  if (!TsharkInstalled()) {
    GTEST_SKIP() << "tshark is not installed; install it with "
                    "`apt-get install -y --no-install-recommends tshark` to run this check";
  }
  auto dir = TempDir::Create("pcapng_test");
  ASSERT_TRUE(dir.ok()) << dir.status().ToString();
  const std::string path = dir->path() + "/capture.pcapng";
  const std::string err_path = dir->path() + "/tshark.stderr";
  {
    auto writer = PcapngWriter::OpenFile(path);
    ASSERT_TRUE(writer.ok()) << writer.status().ToString();
    PcapngWriter& w = **writer;
    const uint32_t a = w.AddInterface("vm-a", "Blackbox switch port of vm-a");
    const uint32_t b = w.AddInterface("vm-b", "Blackbox switch port of vm-b");
    const std::vector<uint8_t> udp = UdpFrame();
    const std::vector<uint8_t> syn = TcpSynFrame();
    ASSERT_TRUE(w.WritePacket(a, kT0, udp).ok());
    ASSERT_TRUE(w.WritePacket(b, kT0 + 1000000001, syn, "dropped: port down").ok());
    ASSERT_TRUE(w.WritePacket(a, kT0 + 2000000002, syn).ok());
    ASSERT_TRUE(w.WritePacket(b, kT0 + 3000000003, udp, "", 1514).ok());
    ASSERT_TRUE(w.Finish().ok());
  }

  // The comment field is frame.comment in Wireshark >= 3.6, pkt_comment before.
  StatusOr<std::string> out = Internal("tshark not run");
  for (const char* comment_field : {"frame.comment", "pkt_comment"}) {
    out = RunTshark(err_path, {"-r", path,
                               "-T", "fields",
                               "-E", "occurrence=f",
                               "-e", "frame.interface_id",
                               "-e", "frame.interface_name",
                               "-e", "frame.interface_description",
                               "-e", "frame.time_epoch",
                               "-e", comment_field,
                               "-e", "ip.src",
                               "-e", "ip.dst",
                               "-e", "udp.dstport",
                               "-e", "tcp.flags.syn",
                               "-e", "frame.len",
                               "-e", "frame.cap_len"});
    if (out.ok()) break;
  }
  ASSERT_TRUE(out.ok()) << out.status().ToString() << "\n" << TailOfFile(err_path);

  const auto rows = SplitLines(*out);
  ASSERT_EQ(rows.size(), 4u) << *out;
  struct Want {
    std::string id, name, desc, epoch, comment, udp_port, syn, len, cap_len;
  };
  const std::vector<Want> wants = {
      {"0", "vm-a", "Blackbox switch port of vm-a", FormatEpoch(kT0), "", "9", "", "47", "47"},
      {"1", "vm-b", "Blackbox switch port of vm-b", FormatEpoch(kT0 + 1000000001),
       "dropped: port down", "", "1", "54", "54"},
      {"0", "vm-a", "Blackbox switch port of vm-a", FormatEpoch(kT0 + 2000000002), "", "", "1",
       "54", "54"},
      {"1", "vm-b", "Blackbox switch port of vm-b", FormatEpoch(kT0 + 3000000003), "", "9", "",
       "1514", "47"},
  };
  for (size_t i = 0; i < wants.size(); ++i) {
    SCOPED_TRACE("packet " + std::to_string(i) + ": " + *out);
    const auto& r = rows[i];
    ASSERT_EQ(r.size(), 11u);
    const Want& w = wants[i];
    EXPECT_EQ(r[0], w.id);
    EXPECT_EQ(r[1], w.name);
    EXPECT_EQ(r[2], w.desc);
    EXPECT_EQ(r[3], w.epoch);
    EXPECT_EQ(r[4], w.comment);
    EXPECT_EQ(r[5], "10.0.0.1");
    EXPECT_EQ(r[6], "10.0.0.2");
    EXPECT_EQ(r[7], w.udp_port);
    // tcp.flags.syn prints "1" (4.0) or "True" (4.2+) when set.
    if (w.syn.empty()) {
      EXPECT_EQ(r[8], "");
    } else {
      EXPECT_TRUE(r[8] == "1" || r[8] == "True") << r[8];
    }
    EXPECT_EQ(r[9], w.len);
    EXPECT_EQ(r[10], w.cap_len);
  }

  // No frame may trip a dissector's malformed-packet check.
  auto malformed = RunTshark(err_path, {"-r", path, "-Y", "_ws.malformed"});
  ASSERT_TRUE(malformed.ok()) << malformed.status().ToString();
  EXPECT_EQ(*malformed, "");
}

}  // namespace
}  // namespace blackbox
