// The capture tests' fixture and the documented frame formats, shared by captures_test.cc and
// frame_corruption_test.cc.
#pragma once

#include <gtest/gtest.h>
#include <zstd.h>

#include <algorithm>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "store/store_test_util.h"

namespace blackbox::store_test {

// The documented frame formats, written out independently of the store's code.

// Field offsets of a frame_index value.
inline constexpr size_t kFiSeq = 5, kFiFirst = 13, kFiLast = 21, kFiFrameCount = 29,
                        kFiDropped = 33, kFiRawSize = 37, kFiStoredSize = 41, kFiRawSha = 45,
                        kFiPrevChain = 77, kFiChain = 109, kFiPortCount = 141, kFiPorts = 145;

inline std::string EncodeFrameIndex(const FrameBatchInfo& i) {
  std::string v = "BBFI";
  v.push_back(1);
  PutBE(&v, i.seq, 8);
  PutBE(&v, static_cast<uint64_t>(i.first_wall_ns), 8);
  PutBE(&v, static_cast<uint64_t>(i.last_wall_ns), 8);
  PutBE(&v, i.frame_count, 4);
  PutBE(&v, i.dropped_count, 4);
  PutBE(&v, i.raw_size, 4);
  PutBE(&v, i.stored_size, 4);
  v += Digest(i.raw_sha256) + Digest(i.prev_chain) + Digest(i.chain);
  PutBE(&v, i.ports.size(), 4);
  for (uint32_t p : i.ports) PutBE(&v, p, 4);
  v += Digest(Sha256Of(v));
  return v;
}
inline void ResealFrameIndex(std::string* v) {
  v->resize(v->size() - 32);
  *v += Digest(Sha256Of(*v));
}

inline std::string EncodeFramesRaw(const std::vector<CapturedFrame>& frames) {
  std::string raw;
  for (const auto& f : frames) {
    PutBE(&raw, static_cast<uint64_t>(f.wall_ns), 8);
    PutBE(&raw, f.ingress, 4);
    PutBE(&raw, f.egress.size(), 2);
    for (uint32_t e : f.egress) PutBE(&raw, e, 4);
    raw.push_back(static_cast<char>(f.drop_reason.size()));
    raw += f.drop_reason;
    PutBE(&raw, f.bytes.size(), 4);
    raw += f.bytes;
  }
  return raw;
}

// Times, counts and ports of a batch, as the index entry documents them.
inline FrameBatchInfo SummaryOf(const std::vector<CapturedFrame>& frames) {
  FrameBatchInfo s;
  std::set<uint32_t> ports;
  s.first_wall_ns = frames.at(0).wall_ns;
  s.last_wall_ns = frames.at(0).wall_ns;
  for (const auto& f : frames) {
    s.first_wall_ns = std::min(s.first_wall_ns, f.wall_ns);
    s.last_wall_ns = std::max(s.last_wall_ns, f.wall_ns);
    s.dropped_count += f.drop_reason.empty() ? 0 : 1;
    ports.insert(f.ingress);
    ports.insert(f.egress.begin(), f.egress.end());
  }
  s.frame_count = static_cast<uint32_t>(frames.size());
  s.ports.assign(ports.begin(), ports.end());
  return s;
}

inline std::string FramePayload(const std::string& raw) {
  std::string frame(ZSTD_compressBound(raw.size()), '\0');
  frame.resize(ZSTD_compress(frame.data(), frame.size(), raw.data(), raw.size(), 3));
  return std::string("BBFB\x01\x01", 6) + frame;
}

// Stores batch 0 of capture `id` with payload `raw` directly: the index carries summary's
// times, counts and ports, with sizes, hashes and chain made consistent with raw (what someone
// forging a batch would do).
inline void PutRawBatch(RawDb* db, const std::string& id, const std::string& raw,
                        FrameBatchInfo info) {
  std::string payload = FramePayload(raw);
  info.seq = 0;
  info.prev_chain = {};
  info.raw_size = static_cast<uint32_t>(raw.size());
  info.stored_size = static_cast<uint32_t>(payload.size() - 6);
  info.raw_sha256 = Sha256Of(raw);
  info.chain = ComputeFrameBatchChain(info);
  db->Put("frame_index", SeqKey(id, 0), EncodeFrameIndex(info));
  db->Put("frames", SeqKey(id, 0), payload);
}

inline CapturedFrame MakeFrame(int64_t wall_ns, uint32_t ingress, std::vector<uint32_t> egress,
                               std::string drop_reason = "", size_t size = 64) {
  CapturedFrame f;
  f.wall_ns = wall_ns;
  f.ingress = ingress;
  f.egress = std::move(egress);
  f.drop_reason = std::move(drop_reason);
  f.bytes = MakeRaw(static_cast<uint64_t>(wall_ns) * 31 + ingress, size);
  return f;
}

inline bool SameFrame(const CapturedFrame& a, const CapturedFrame& b) {
  return a.wall_ns == b.wall_ns && a.ingress == b.ingress && a.egress == b.egress &&
         a.drop_reason == b.drop_reason && a.bytes == b.bytes;
}

// Four batches: ports {1,2,3}, {7,8}, {1,2,4} (times out of order within it), {1,2,3,9,10}
// (port 10 only ever an egress port).
inline std::vector<std::vector<CapturedFrame>> LabBatches() {
  return {
      {MakeFrame(1000, 1, {2}), MakeFrame(1100, 2, {1}), MakeFrame(1200, 1, {2, 3}),
       MakeFrame(1300, 3, {}, "source MAC 02:00:00:00:00:09 is not port 3's"),
       MakeFrame(1900, 1, {2}, "", 1514)},
      {MakeFrame(2000, 7, {8}), MakeFrame(2500, 8, {7}), MakeFrame(2900, 7, {8})},
      {MakeFrame(3500, 1, {2}), MakeFrame(3000, 2, {1}), MakeFrame(3900, 4, {}, "port 4 is down")},
      {MakeFrame(4000, 9, {1, 2, 3, 10}, "", 60)},
  };
}

class CaptureTest : public StoreTest {
 protected:
  // Appends LabBatches() to `id`; keeps the frames (in stored order) and the infos.
  void AppendLab(const std::string& id = "cap") {
    for (const auto& batch : LabBatches()) {
      auto r = store_->AppendFrameBatch(id, batch);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      infos_.push_back(*r);
      frames_.insert(frames_.end(), batch.begin(), batch.end());
    }
  }
  // The frames ReadFrames passes to its sink, and its status.
  std::pair<Status, std::vector<CapturedFrame>> Read(const std::string& id,
                                                     const FrameQuery& q = {}) {
    std::vector<CapturedFrame> got;
    Status s = store_->ReadFrames(id, q, [&](const CapturedFrame& f) {
      got.push_back(f);
      return Status::Ok();
    });
    return {s, got};
  }
  // wall_ns of the frames a query returns; fails the test on an error.
  std::vector<int64_t> Times(const FrameQuery& q) {
    auto [s, got] = Read("cap", q);
    EXPECT_TRUE(s.ok()) << s.ToString();
    std::vector<int64_t> out;
    for (const auto& f : got) out.push_back(f.wall_ns);
    return out;
  }
  std::vector<FrameBatchInfo> infos_;
  std::vector<CapturedFrame> frames_;
};

}  // namespace blackbox::store_test
