#include "switch/capture_writer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "common/files.h"
#include "switch/frame_builder.h"

namespace blackbox {
namespace {

using frames::Bytes;
using ::testing::HasSubstr;

constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kWallOffset = 1'700'000'000 * kSecond;

using frames::Mac;
IpAddr V4(uint8_t last) { return IpAddr::V4(std::array<uint8_t, 4>{10, 0, 0, last}); }

// Drives a CaptureWriter the way SwitchServer does: an L2Switch decides, the
// writer gets every frame with the decision, and a flush after each burst.
class CaptureWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("bb-capture-writer-test");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    dir_ = std::make_unique<TempDir>(std::move(dir).value());
    StoreOptions so;
    so.path = dir_->path() + "/store";
    auto store = Store::Open(so);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
    a_ = switch_.AddPort({"a/n0", "lan", Mac(1), {V4(1)}});
    b_ = switch_.AddPort({"b/n0", "lan", Mac(2), {V4(2)}});
  }

  void Start(CaptureWriter::Options options) {
    writer_ = std::make_unique<CaptureWriter>(store_.get(), "cap", options, kWallOffset);
    writer_->SetPortInfo(a_, {"a/n0", "rec-a"});
    writer_->SetPortInfo(b_, {"b/n0", ""});
  }

  // Offers `frame` on `port` at mono time `t`; returns the switch's decision.
  L2Switch::Decision Offer(uint32_t port, const Bytes& frame, int64_t t) {
    L2Switch::Decision d = switch_.Process(port, frame, t);
    writer_->OnFrame(port, frame, d, t);
    return d;
  }

  std::vector<CapturedFrame> StoredFrames() {
    std::vector<CapturedFrame> out;
    Status s = store_->ReadFrames("cap", {}, [&](const CapturedFrame& f) {
      out.push_back(f);
      return Status::Ok();
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  std::vector<nlohmann::json> Events(const std::string& id, const std::string& what) {
    std::vector<nlohmann::json> out;
    auto events = store_->ListEvents(id);
    EXPECT_TRUE(events.ok()) << events.status().ToString();
    if (!events.ok()) return out;
    for (const StoredEvent& e : *events) {
      if (e.body.value("what", "") == what) out.push_back(e.body);
    }
    return out;
  }

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<Store> store_;
  L2Switch switch_;
  uint32_t a_ = 0, b_ = 0;
  std::unique_ptr<CaptureWriter> writer_;
};

TEST_F(CaptureWriterTest, StoresEveryFrameWithItsDecisionAndTheFlows) {
  Start({});
  const Bytes request = frames::Udp4(Mac(2), Mac(1), V4(1), V4(2), 100);
  const Bytes reply = frames::Udp4(Mac(1), Mac(2), V4(2), V4(1), 300, 5678, 1234);
  const Bytes spoofed = frames::Udp4(Mac(2), Mac(1), V4(66), V4(2), 80);
  ASSERT_EQ(Offer(a_, request, 10).drop, L2Switch::Drop::kNone);
  ASSERT_EQ(Offer(b_, reply, 20).drop, L2Switch::Drop::kNone);
  writer_->FlushStaged();
  ASSERT_EQ(Offer(a_, spoofed, 30).drop, L2Switch::Drop::kSpoofedIp);
  ASSERT_TRUE(writer_->Close().ok());

  std::vector<CapturedFrame> got = StoredFrames();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].wall_ns, kWallOffset + 10);
  EXPECT_EQ(got[0].ingress, a_);
  EXPECT_EQ(got[0].egress, std::vector<uint32_t>{b_});
  EXPECT_EQ(got[0].drop_reason, "");
  EXPECT_EQ(got[0].bytes, std::string(request.begin(), request.end()));
  EXPECT_EQ(got[1].ingress, b_);
  EXPECT_EQ(got[1].bytes.size(), 300u);
  EXPECT_TRUE(got[2].egress.empty());
  EXPECT_THAT(got[2].drop_reason, HasSubstr("spoofed_ip: source IP 10.0.0.66"));

  CaptureWriter::Stats st = writer_->GetStats();
  EXPECT_EQ(st.frames, 3u);
  EXPECT_EQ(st.frame_bytes, 480u);
  EXPECT_EQ(st.shed_frames, 0u);

  // The exchange is one flow, both directions counted; the spoofed frame is a
  // flow of its own, marked dropped.
  auto flows = store_->ListFlows("cap");
  ASSERT_TRUE(flows.ok());
  ASSERT_EQ(flows->size(), 2u) << nlohmann::json(*flows).dump();
  const nlohmann::json& exchange = (*flows)[0];
  EXPECT_EQ(exchange["a_ip"], "10.0.0.1");
  EXPECT_EQ(exchange["packets_a_to_b"], 1);
  EXPECT_EQ(exchange["packets_b_to_a"], 1);
  EXPECT_EQ(exchange["bytes_a_to_b"], 100);
  EXPECT_EQ(exchange["bytes_b_to_a"], 300);
  EXPECT_EQ(exchange["port_a"], "a/n0");
  EXPECT_EQ(exchange["port_b"], "b/n0");
  EXPECT_EQ(exchange["recordings"], nlohmann::json::array({"rec-a"}));
  EXPECT_EQ(exchange["dropped"], false);
  EXPECT_EQ((*flows)[1]["a_ip"], "10.0.0.66");
  EXPECT_EQ((*flows)[1]["dropped"], true);

  // The policy drop is an event of the capture and of the port's recording.
  ASSERT_EQ(Events("cap", "drop").size(), 1u);
  auto drops = Events("rec-a", "drop");
  ASSERT_EQ(drops.size(), 1u);
  EXPECT_EQ(drops[0]["reason"], "spoofed_ip");
  EXPECT_EQ(drops[0]["port"], "a/n0");
  EXPECT_EQ(drops[0]["frame_bytes"], 80);
}

TEST_F(CaptureWriterTest, DropEventsAreRateLimitedPerPortAndSecond) {
  CaptureWriter::Options o;
  o.drop_events_per_second = 10;
  Start(o);
  const Bytes spoofed = frames::Udp4(Mac(2), Mac(1), V4(66), V4(2), 60);
  for (int i = 0; i < 15; ++i) Offer(a_, spoofed, 5 * kSecond + i);
  Offer(a_, spoofed, 6 * kSecond);  // a new second: stored again
  ASSERT_TRUE(writer_->Close().ok());

  EXPECT_EQ(Events("cap", "drop").size(), 11u);
  auto suppressed = Events("cap", "drop_suppressed");
  ASSERT_EQ(suppressed.size(), 1u);
  EXPECT_EQ(suppressed[0]["frames"], 5);
  EXPECT_EQ(writer_->GetStats().suppressed_drop_events, 5u);
  EXPECT_EQ(StoredFrames().size(), 16u);  // every dropped frame is still captured
}

TEST_F(CaptureWriterTest, FullQueueWithoutWaitingShedsAndSaysSo) {
  CaptureWriter::Options o;
  o.max_queued_bytes = 1;  // no burst fits
  o.max_block_ns = 0;
  Start(o);
  const Bytes frame = frames::Udp4(Mac(2), Mac(1), V4(1), V4(2), 100);
  for (int burst = 0; burst < 3; ++burst) {
    for (int i = 0; i < 4; ++i) Offer(a_, frame, burst * 100 + i);
    writer_->FlushStaged();
  }
  ASSERT_TRUE(writer_->Close().ok());

  CaptureWriter::Stats st = writer_->GetStats();
  EXPECT_EQ(st.shed_frames, 12u);
  EXPECT_EQ(st.shed_bytes, 1200u);
  EXPECT_EQ(st.frames, 0u);
  EXPECT_TRUE(StoredFrames().empty());
  EXPECT_GE(Events("cap", "capture_shed").size(), 1u);
  auto ends = Events("cap", "capture_shed_end");
  ASSERT_GE(ends.size(), 1u);
  uint64_t counted = 0;
  for (const auto& e : ends) counted += e["frames"].get<uint64_t>();
  EXPECT_EQ(counted, 12u);
}

TEST_F(CaptureWriterTest, SmallQueueMakesTheSwitchWaitInsteadOfShedding) {
  CaptureWriter::Options o;
  o.max_queued_bytes = 4096;  // about two bursts
  o.max_block_ns = 60 * kSecond;
  Start(o);
  const Bytes frame = frames::Udp4(Mac(2), Mac(1), V4(1), V4(2), 100);
  constexpr int kBursts = 500, kPerBurst = 16;
  for (int burst = 0; burst < kBursts; ++burst) {
    for (int i = 0; i < kPerBurst; ++i) Offer(a_, frame, burst * 100 + i);
    writer_->FlushStaged();
  }
  ASSERT_TRUE(writer_->Close().ok());
  CaptureWriter::Stats st = writer_->GetStats();
  EXPECT_EQ(st.shed_frames, 0u);
  EXPECT_EQ(st.frames, uint64_t{kBursts} * kPerBurst);
  EXPECT_EQ(StoredFrames().size(), size_t{kBursts} * kPerBurst);
  EXPECT_TRUE(Events("cap", "capture_shed").empty());
}

}  // namespace
}  // namespace blackbox
