#include "switch/stream_framing.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace blackbox {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes Frame(size_t size, uint8_t seed) {
  Bytes b(size);
  for (size_t i = 0; i < size; ++i) b[i] = static_cast<uint8_t>(seed + i);
  return b;
}

std::span<const uint8_t> AsBytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Feeds `stream` in pieces ending at `cuts` and collects the frames.
std::vector<Bytes> FeedAll(StreamDecoder& decoder, const std::string& stream,
                           const std::vector<size_t>& cuts, Status* status) {
  std::vector<Bytes> out;
  auto collect = [&out](std::span<const uint8_t> f) { out.emplace_back(f.begin(), f.end()); };
  std::span<const uint8_t> all = AsBytes(stream);
  size_t pos = 0;
  *status = Status::Ok();
  for (size_t cut : cuts) {
    *status = decoder.Feed(all.subspan(pos, cut - pos), collect);
    pos = cut;
    if (!status->ok()) return out;
  }
  *status = decoder.Feed(all.subspan(pos), collect);
  return out;
}

TEST(StreamFramingTest, EncodePrefixesBigEndianLength) {
  Bytes f = Frame(0x13c, 0);
  std::string rec = EncodeStreamFrame(f);
  ASSERT_EQ(rec.size(), 4 + f.size());
  EXPECT_EQ(static_cast<uint8_t>(rec[0]), 0x00);
  EXPECT_EQ(static_cast<uint8_t>(rec[1]), 0x00);
  EXPECT_EQ(static_cast<uint8_t>(rec[2]), 0x01);
  EXPECT_EQ(static_cast<uint8_t>(rec[3]), 0x3c);
  EXPECT_EQ(rec.substr(4), std::string(f.begin(), f.end()));
}

TEST(StreamFramingTest, MultipleFramesInOneFeed) {
  std::vector<Bytes> frames = {Frame(60, 1), Frame(1514, 2), Frame(14, 3)};
  std::string stream;
  for (const Bytes& f : frames) stream += EncodeStreamFrame(f);
  StreamDecoder decoder;
  Status status;
  EXPECT_EQ(FeedAll(decoder, stream, {}, &status), frames);
  ASSERT_TRUE(status.ok()) << status.ToString();
  EXPECT_EQ(decoder.frames(), 3u);
  EXPECT_EQ(decoder.bytes(), 60u + 1514u + 14u);
  EXPECT_EQ(decoder.buffered(), 0u);
}

TEST(StreamFramingTest, SplitAtEveryByteBoundary) {
  std::vector<Bytes> frames = {Frame(60, 1), Frame(3, 2), Frame(100, 3)};
  std::string stream;
  for (const Bytes& f : frames) stream += EncodeStreamFrame(f);
  stream += EncodeStreamFrame({});  // a zero-length record in the middle
  stream += EncodeStreamFrame(Frame(17, 4));
  frames.push_back(Frame(17, 4));

  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    StreamDecoder decoder;
    Status status;
    EXPECT_EQ(FeedAll(decoder, stream, {cut}, &status), frames) << "cut at " << cut;
    EXPECT_TRUE(status.ok());
    EXPECT_EQ(decoder.zero_length_frames(), 1u);
    EXPECT_EQ(decoder.buffered(), 0u);
  }
  // And one byte at a time.
  std::vector<size_t> cuts;
  for (size_t i = 1; i < stream.size(); ++i) cuts.push_back(i);
  StreamDecoder decoder;
  Status status;
  EXPECT_EQ(FeedAll(decoder, stream, cuts, &status), frames);
  EXPECT_TRUE(status.ok());
  EXPECT_EQ(decoder.frames(), 4u);
}

TEST(StreamFramingTest, PartialDataIsBuffered) {
  std::string rec = EncodeStreamFrame(Frame(60, 9));
  StreamDecoder decoder;
  int calls = 0;
  auto count = [&calls](std::span<const uint8_t>) { ++calls; };
  ASSERT_TRUE(decoder.Feed(AsBytes(rec).first(2), count).ok());
  EXPECT_EQ(decoder.buffered(), 2u);
  ASSERT_TRUE(decoder.Feed(AsBytes(rec).subspan(2, 30), count).ok());
  EXPECT_EQ(decoder.buffered(), 32u);
  EXPECT_EQ(calls, 0);
  ASSERT_TRUE(decoder.Feed(AsBytes(rec).subspan(32), count).ok());
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(decoder.buffered(), 0u);
}

TEST(StreamFramingTest, ZeroLengthFramesAreSkippedAndCounted) {
  std::string stream = EncodeStreamFrame({}) + EncodeStreamFrame({});
  StreamDecoder decoder;
  Status status;
  EXPECT_TRUE(FeedAll(decoder, stream, {}, &status).empty());
  EXPECT_TRUE(status.ok());
  EXPECT_EQ(decoder.zero_length_frames(), 2u);
  EXPECT_EQ(decoder.frames(), 0u);
}

TEST(StreamFramingTest, OversizeLengthIsAnErrorAndSticky) {
  StreamDecoder decoder(100);
  std::string stream = EncodeStreamFrame(Frame(100, 1)) + EncodeStreamFrame(Frame(101, 2)) +
                       EncodeStreamFrame(Frame(10, 3));
  Status status;
  std::vector<Bytes> got = FeedAll(decoder, stream, {}, &status);
  EXPECT_EQ(status.code(), StatusCode::kResourceExhausted);
  ASSERT_EQ(got.size(), 1u);  // the frame before the bad one was delivered
  EXPECT_EQ(got[0], Frame(100, 1));

  int calls = 0;
  Status again = decoder.Feed(AsBytes(EncodeStreamFrame(Frame(10, 3))),
                              [&calls](std::span<const uint8_t>) { ++calls; });
  EXPECT_EQ(again.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(calls, 0);
}

TEST(StreamFramingTest, DefaultCapIsLargestParsableFrame) {
  StreamDecoder decoder;
  EXPECT_EQ(decoder.max_frame(), kMaxFrameSize);
  Status status;
  EXPECT_EQ(FeedAll(decoder, EncodeStreamFrame(Frame(kMaxFrameSize, 0)), {}, &status).size(), 1u);
  EXPECT_TRUE(status.ok());
  Bytes too_big = {0x00, 0x01, 0x00, 0x0e};  // 65550 = kMaxFrameSize + 1
  EXPECT_EQ(decoder.Feed(too_big, [](std::span<const uint8_t>) {}).code(),
            StatusCode::kResourceExhausted);
}

TEST(StreamFramingTest, HugeLengthFieldDoesNotAllocate) {
  StreamDecoder decoder;
  Bytes header = {0xff, 0xff, 0xff, 0xff, 0x01, 0x02};
  Status status = decoder.Feed(header, [](std::span<const uint8_t>) { FAIL(); });
  EXPECT_EQ(status.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(decoder.buffered(), 0u);
  EXPECT_EQ(decoder.buffer_capacity(), 0u);  // nothing was reserved from the length
}

}  // namespace
}  // namespace blackbox
