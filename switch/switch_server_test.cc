#include "switch/switch_server.h"

#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/files.h"
#include "switch/frame_builder.h"
#include "switch/stream_framing.h"

namespace blackbox {
namespace {

namespace asio = boost::asio;
using Socket = asio::local::stream_protocol::socket;
using Endpoint = asio::local::stream_protocol::endpoint;
using frames::Bytes;
using frames::Udp4;
using Drop = L2Switch::Drop;

using frames::Mac;
const MacAddr kBroadcast{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};

IpAddr V4(uint8_t last) {
  std::array<uint8_t, 4> bytes = {10, 0, 0, last};
  return IpAddr::V4(bytes);
}

// A peer speaking the stream wire format, on the test's io_context.
class Client {
 public:
  Client(asio::io_context& io, const std::string& path) : socket_(io) {
    boost::system::error_code ec;
    socket_.connect(Endpoint(path), ec);
    EXPECT_FALSE(ec) << ec.message();
  }

  void StartReading() {
    socket_.async_read_some(asio::buffer(buf_), [this](const boost::system::error_code& ec,
                                                       size_t n) {
      if (ec) {
        eof_ = true;
        return;
      }
      decoder_
          .Feed(std::span<const uint8_t>(buf_.data(), n),
                [this](std::span<const uint8_t> f) { received_.emplace_back(f.begin(), f.end()); })
          .IgnoreError();
      StartReading();
    });
  }

  void SendRaw(std::string bytes) {
    auto data = std::make_shared<std::string>(std::move(bytes));
    ++sends_pending_;
    asio::async_write(socket_, asio::buffer(*data),
                      [this, data](const boost::system::error_code& ec, size_t) {
                        --sends_pending_;
                        if (ec) send_failed_ = true;
                      });
  }
  void Send(const Bytes& frame) { SendRaw(EncodeStreamFrame(frame)); }
  // Half-closes the connection: the server reads EOF after what was sent.
  void CloseWrite() {
    boost::system::error_code ignored;
    socket_.shutdown(Socket::shutdown_send, ignored);
  }

  const std::vector<Bytes>& received() const { return received_; }
  bool eof() const { return eof_; }
  int sends_pending() const { return sends_pending_; }
  bool send_failed() const { return send_failed_; }

 private:
  Socket socket_;
  StreamDecoder decoder_;
  std::array<uint8_t, 65536> buf_{};
  std::vector<Bytes> received_;
  bool eof_ = false;
  int sends_pending_ = 0;
  bool send_failed_ = false;
};

struct Event {
  std::string kind;
  uint32_t port;
  std::string detail;
};

struct Observed {
  uint32_t ingress;
  Bytes frame;
  L2Switch::Decision decision;
};

class SwitchServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("bb-switch-test");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    dir_.emplace(std::move(dir).value());
    MakeServer(SwitchServer::Options{});
  }

  void MakeServer(SwitchServer::Options options) {
    server_.reset();
    server_ = std::make_unique<SwitchServer>(io_, options, [this] { return now_ns_; });
    server_->SetEventObserver([this](const std::string& kind, uint32_t port, const std::string& d) {
      events_.push_back({kind, port, d});
    });
    server_->SetFrameObserver(
        [this](uint32_t ingress, std::span<const uint8_t> f, const L2Switch::Decision& d, int64_t) {
          observed_.push_back({ingress, Bytes(f.begin(), f.end()), d});
        });
  }

  uint32_t AddPort(const std::string& name, const std::string& segment, const MacAddr& mac) {
    auto id = server_->AddPort({name, segment, mac, {}}, Path(name));
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    return id.ok() ? *id : 0;
  }
  std::string Path(const std::string& name) const { return dir_->path() + "/" + name + ".sock"; }

  // Runs the io_context until `cond` holds or 5 s pass.
  bool RunUntil(const std::function<bool()>& cond) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!cond() && std::chrono::steady_clock::now() < deadline) {
      if (io_.stopped()) io_.restart();
      io_.run_one_for(std::chrono::milliseconds(50));
    }
    return cond();
  }
  // Runs every handler that is ready now.
  void Drain() {
    if (io_.stopped()) io_.restart();
    io_.poll();
  }

  int CountEvents(const std::string& kind, uint32_t port) const {
    int n = 0;
    for (const Event& e : events_) n += (e.kind == kind && e.port == port);
    return n;
  }

  // Connects a reading client to port `id` and waits for the server to see it.
  std::unique_ptr<Client> Connect(const std::string& name, uint32_t id, bool read = true) {
    const int before = CountEvents("connect", id);
    auto c = std::make_unique<Client>(io_, Path(name));
    if (read) c->StartReading();
    EXPECT_TRUE(RunUntil([&] { return CountEvents("connect", id) > before; }));
    return c;
  }

  asio::io_context io_;
  std::optional<TempDir> dir_;
  int64_t now_ns_ = 1'000'000;
  std::unique_ptr<SwitchServer> server_;
  std::vector<Event> events_;
  std::vector<Observed> observed_;
};

TEST_F(SwitchServerTest, ArpBroadcastAndUnicastReply) {
  const uint32_t a = AddPort("a", "lan", Mac(1));
  const uint32_t b = AddPort("b", "lan", Mac(2));
  const uint32_t c = AddPort("c", "other", Mac(3));
  auto ca = Connect("a", a);
  auto cb = Connect("b", b);
  auto cc = Connect("c", c);

  const Bytes request = frames::Arp(kBroadcast, Mac(1), Mac(1), V4(1), V4(2));
  ca->Send(request);
  ASSERT_TRUE(RunUntil([&] { return !cb->received().empty(); }));
  EXPECT_EQ(cb->received()[0], request);

  const Bytes reply = frames::Arp(Mac(1), Mac(2), Mac(2), V4(2), V4(1), /*op=*/2);
  cb->Send(reply);
  ASSERT_TRUE(RunUntil([&] { return !ca->received().empty(); }));
  EXPECT_EQ(ca->received()[0], reply);

  ASSERT_EQ(observed_.size(), 2u);
  EXPECT_EQ(observed_[0].ingress, a);
  EXPECT_EQ(observed_[0].decision.egress, std::vector<uint32_t>{b});
  EXPECT_EQ(observed_[1].ingress, b);
  EXPECT_EQ(observed_[1].decision.egress, std::vector<uint32_t>{a});

  // The other segment's port got nothing: the switch never chose it, and
  // nothing is on its way (writes are issued when the frame is processed).
  Drain();
  EXPECT_TRUE(cc->received().empty());
  EXPECT_EQ(server_->l2().GetCounters(c)->tx_frames, 0u);
  EXPECT_EQ(server_->GetPortStats(c)->written_frames, 0u);
  EXPECT_EQ(server_->GetPortStats(b)->written_frames, 1u);
}

TEST_F(SwitchServerTest, SpoofedMacIsDroppedAndObserved) {
  const uint32_t a = AddPort("a", "lan", Mac(1));
  const uint32_t b = AddPort("b", "lan", Mac(2));
  auto ca = Connect("a", a);
  auto cb = Connect("b", b);

  const Bytes spoofed = frames::Arp(kBroadcast, Mac(9), Mac(9), V4(9), V4(2));
  const Bytes good = frames::Arp(kBroadcast, Mac(1), Mac(1), V4(1), V4(2));
  ca->Send(spoofed);
  ca->Send(good);
  ASSERT_TRUE(RunUntil([&] { return !cb->received().empty(); }));
  Drain();
  // Stream order is kept, so had the spoofed frame been forwarded it would
  // have arrived first.
  ASSERT_EQ(cb->received().size(), 1u);
  EXPECT_EQ(cb->received()[0], good);

  ASSERT_EQ(observed_.size(), 2u);
  EXPECT_EQ(observed_[0].ingress, a);
  EXPECT_EQ(observed_[0].frame, spoofed);
  EXPECT_EQ(observed_[0].decision.drop, Drop::kSpoofedMac);
  EXPECT_TRUE(observed_[0].decision.egress.empty());
  EXPECT_FALSE(observed_[0].decision.reason.empty());
  EXPECT_EQ(observed_[1].decision.drop, Drop::kNone);
}

TEST_F(SwitchServerTest, OversizeLengthDisconnectsOnlyThatPeer) {
  const uint32_t a = AddPort("a", "lan", Mac(1));
  const uint32_t b = AddPort("b", "lan", Mac(2));
  const uint32_t h = AddPort("h", "lan", Mac(3));
  auto ca = Connect("a", a);
  auto cb = Connect("b", b);
  auto ch = Connect("h", h);

  ch->SendRaw(std::string("\xff\xff\xff\xff", 4));
  ASSERT_TRUE(RunUntil([&] { return ch->eof(); }));
  EXPECT_EQ(CountEvents("oversize_frame", h), 1);
  EXPECT_EQ(CountEvents("disconnect", h), 1);
  auto stats = server_->GetPortStats(h);
  EXPECT_EQ(stats->oversize_frames, 1u);
  EXPECT_FALSE(stats->connected);
  EXPECT_TRUE(server_->GetPortStats(a)->connected);

  // The other ports keep forwarding.
  const Bytes request = frames::Arp(kBroadcast, Mac(1), Mac(1), V4(1), V4(2));
  ca->Send(request);
  ASSERT_TRUE(RunUntil([&] { return !cb->received().empty(); }));
  EXPECT_EQ(cb->received()[0], request);
  EXPECT_EQ(server_->GetPortStats(h)->unconnected_drops, 1u);

  // The port accepts a reconnect, which then receives floods.
  auto ch2 = Connect("h", h);
  const Bytes from_b = frames::Arp(kBroadcast, Mac(2), Mac(2), V4(2), V4(3));
  cb->Send(from_b);
  ASSERT_TRUE(RunUntil([&] { return !ch2->received().empty(); }));
  EXPECT_EQ(ch2->received()[0], from_b);
}

TEST_F(SwitchServerTest, ZeroLengthAndTruncatedRecordsAffectOnlyThatPeer) {
  const uint32_t a = AddPort("a", "lan", Mac(1));
  const uint32_t b = AddPort("b", "lan", Mac(2));
  const uint32_t h = AddPort("h", "lan", Mac(3));
  auto ca = Connect("a", a);
  auto cb = Connect("b", b);
  auto ch = Connect("h", h);

  // Zero-length records are skipped without losing the framing: the frame
  // after them arrives whole.
  const Bytes hello = frames::Arp(kBroadcast, Mac(3), Mac(3), V4(3), V4(1));
  ch->SendRaw(std::string(12, '\0') + EncodeStreamFrame(hello));
  ASSERT_TRUE(RunUntil([&] { return ca->received().size() == 1 && cb->received().size() == 1; }));
  EXPECT_EQ(ca->received()[0], hello);
  EXPECT_EQ(cb->received()[0], hello);

  // A record cut short by the peer closing: nothing of it is forwarded, the
  // peer's port records the disconnect.
  ch->SendRaw(std::string("\x00\x00\x00\xc8", 4) + std::string(10, 'x'));
  ASSERT_TRUE(RunUntil([&] { return ch->sends_pending() == 0; }));
  ch->CloseWrite();
  ASSERT_TRUE(RunUntil([&] { return CountEvents("disconnect", h) == 1; }));
  EXPECT_FALSE(server_->GetPortStats(h)->connected);
  EXPECT_EQ(server_->l2().GetCounters(h)->rx_frames, 1u);

  // The others keep forwarding.
  const Bytes from_a = frames::Arp(kBroadcast, Mac(1), Mac(1), V4(1), V4(2));
  ca->Send(from_a);
  ASSERT_TRUE(RunUntil([&] { return cb->received().size() == 2; }));
  EXPECT_EQ(cb->received()[1], from_a);
  EXPECT_EQ(ca->received().size(), 1u);
  EXPECT_TRUE(server_->GetPortStats(a)->connected);
  EXPECT_TRUE(server_->GetPortStats(b)->connected);
}

TEST_F(SwitchServerTest, FloodFromOnePortDoesNotStarveTheOthers) {
  const uint32_t a = AddPort("a", "lan", Mac(1));
  const uint32_t b = AddPort("b", "lan", Mac(2));
  const uint32_t h = AddPort("h", "lan", Mac(3));
  auto ca = Connect("a", a);
  auto cb = Connect("b", b);
  auto ch = Connect("h", h, /*read=*/false);

  // 20000 broadcasts from h in one burst, then a unicast from a to b.
  const Bytes flood = Udp4(kBroadcast, Mac(3), V4(3), V4(255), 64);
  std::string burst;
  constexpr int kFlood = 20000;
  for (int i = 0; i < kFlood; ++i) burst += EncodeStreamFrame(flood);
  ch->SendRaw(burst);
  cb->Send(frames::Arp(kBroadcast, Mac(2), Mac(2), V4(2), V4(1)));  // b's MAC is learned
  const Bytes unicast = Udp4(Mac(2), Mac(1), V4(1), V4(2), 100);
  ASSERT_TRUE(RunUntil([&] { return !ca->received().empty(); }));
  ca->Send(unicast);
  ASSERT_TRUE(RunUntil([&] {
    const auto& got = cb->received();
    return std::find(got.begin(), got.end(), unicast) != got.end();
  }));
  ASSERT_TRUE(RunUntil(
      [&] { return server_->l2().GetCounters(h)->rx_frames == static_cast<uint64_t>(kFlood); }));
  for (uint32_t port : {a, b, h}) {
    EXPECT_TRUE(server_->GetPortStats(port)->connected) << port;
    EXPECT_EQ(server_->GetPortStats(port)->disconnects, 0u) << port;
  }
}

TEST_F(SwitchServerTest, SecondConnectionIsRefused) {
  const uint32_t a = AddPort("a", "lan", Mac(1));
  auto first = Connect("a", a);
  Client second(io_, Path("a"));
  second.StartReading();
  ASSERT_TRUE(RunUntil([&] { return second.eof(); }));
  EXPECT_EQ(CountEvents("refused", a), 1);
  EXPECT_EQ(server_->GetPortStats(a)->refused, 1u);
  EXPECT_TRUE(server_->GetPortStats(a)->connected);
  EXPECT_FALSE(first->eof());
}

TEST_F(SwitchServerTest, SlowReaderQueueIsCappedWithoutHurtingOthers) {
  SwitchServer::Options options;
  options.max_queued_bytes = 64 << 10;
  MakeServer(options);
  const uint32_t a = AddPort("a", "lan", Mac(1));
  const uint32_t b = AddPort("b", "lan", Mac(2));
  auto ca = Connect("a", a);
  auto cb = Connect("b", b, /*read=*/false);  // never reads

  // Teach the switch where Mac(2) is.
  cb->Send(frames::Arp(kBroadcast, Mac(2), Mac(2), V4(2), V4(1)));
  ASSERT_TRUE(RunUntil([&] { return ca->received().size() == 1; }));

  // 4000 x 1500 bytes (6 MB) unicast to the port that never reads: more than
  // its socket buffer plus its 64 KiB queue.
  const Bytes big = Udp4(Mac(2), Mac(1), V4(1), V4(2), 1500);
  constexpr int kFrames = 4000;
  for (int i = 0; i < kFrames; ++i) ca->Send(big);
  ASSERT_TRUE(RunUntil([&] { return ca->sends_pending() == 0; }));
  ASSERT_TRUE(RunUntil(
      [&] { return server_->l2().GetCounters(a)->rx_frames == static_cast<uint64_t>(kFrames); }));
  EXPECT_FALSE(ca->send_failed());

  auto stats_b = server_->GetPortStats(b);
  EXPECT_GT(stats_b->queue_drops, 0u);
  EXPECT_EQ(stats_b->queue_drop_bytes, stats_b->queue_drops * 1500);
  EXPECT_LE(stats_b->queued_bytes, options.max_queued_bytes);
  EXPECT_TRUE(stats_b->connected);
  EXPECT_GE(CountEvents("queue_drop", b), 1);
  // One event per congestion episode, not per frame.
  EXPECT_LT(static_cast<uint64_t>(CountEvents("queue_drop", b)), stats_b->queue_drops);

  // The sender's port is unaffected: still connected, nothing dropped, and it
  // still receives.
  auto stats_a = server_->GetPortStats(a);
  EXPECT_TRUE(stats_a->connected);
  EXPECT_EQ(stats_a->queue_drops, 0u);
  EXPECT_EQ(stats_a->disconnects, 0u);
  const Bytes reply = Udp4(Mac(1), Mac(2), V4(2), V4(1), 100);
  cb->Send(reply);
  ASSERT_TRUE(RunUntil([&] { return ca->received().size() == 2; }));
  EXPECT_EQ(ca->received()[1], reply);
}

TEST_F(SwitchServerTest, CloseRemovesSocketFiles) {
  const uint32_t a = AddPort("a", "lan", Mac(1));
  auto ca = Connect("a", a);
  EXPECT_TRUE(PathExists(Path("a")));
  server_->Close();
  EXPECT_FALSE(PathExists(Path("a")));
  EXPECT_FALSE(server_->GetPortStats(a).has_value());
  ASSERT_TRUE(RunUntil([&] { return ca->eof(); }));
  auto again = server_->AddPort({"b", "lan", Mac(2), {}}, Path("b"));
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(SwitchServerTest, RemovedPortIsDisconnectedAndNoLongerForwardedTo) {
  const uint32_t a = AddPort("a", "lan", Mac(1));
  const uint32_t b = AddPort("b", "lan", Mac(2));
  auto ca = Connect("a", a);
  auto cb = Connect("b", b);
  ca->Send(frames::Arp(kBroadcast, Mac(1), Mac(1), V4(1), V4(2)));
  ASSERT_TRUE(RunUntil([&] { return !cb->received().empty(); }));

  auto last = server_->RemovePort(b);
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->written_frames, 1u);
  EXPECT_FALSE(PathExists(Path("b")));
  EXPECT_FALSE(server_->GetPortStats(b).has_value());
  EXPECT_FALSE(server_->RemovePort(b).has_value());
  ASSERT_TRUE(RunUntil([&] { return cb->eof(); }));
  EXPECT_EQ(CountEvents("disconnect", b), 1);

  // The next broadcast from a reaches nobody; a port added later (a VM that
  // starts again) gets a new id and works.
  ca->Send(frames::Arp(kBroadcast, Mac(1), Mac(1), V4(1), V4(3)));
  ASSERT_TRUE(RunUntil([&] { return observed_.size() == 2; }));
  EXPECT_TRUE(observed_[1].decision.egress.empty());
  const uint32_t b2 = AddPort("b", "lan", Mac(2));
  EXPECT_GT(b2, b);
  auto cb2 = Connect("b", b2);
  ca->Send(frames::Arp(kBroadcast, Mac(1), Mac(1), V4(1), V4(4)));
  ASSERT_TRUE(RunUntil([&] { return !cb2->received().empty(); }));
}

TEST_F(SwitchServerTest, AddPortRejectsBadPaths) {
  auto too_long =
      server_->AddPort({"a", "lan", Mac(1), {}}, dir_->path() + "/" + std::string(200, 'x'));
  EXPECT_EQ(too_long.status().code(), StatusCode::kInvalidArgument);
  const uint32_t a = AddPort("a", "lan", Mac(1));
  EXPECT_NE(a, 0u);
  auto taken = server_->AddPort({"a2", "lan", Mac(2), {}}, Path("a"));
  EXPECT_EQ(taken.status().code(), StatusCode::kIOError);
  EXPECT_EQ(server_->l2().port_count(), 1u);
}

TEST_F(SwitchServerTest, DestroyedServerLeavesIoContextSafe) {
  const uint32_t a = AddPort("a", "lan", Mac(1));
  auto ca = Connect("a", a);
  ca->Send(frames::Arp(kBroadcast, Mac(1), Mac(1), V4(1), V4(2)));
  server_.reset();
  ASSERT_TRUE(RunUntil([&] { return ca->eof(); }));
  EXPECT_FALSE(PathExists(Path("a")));
}

}  // namespace
}  // namespace blackbox
