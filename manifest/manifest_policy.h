// ManifestPolicy: the switch checks every frame against the manifests of the
// VMs it connects (the FramePolicy of L2Switch, rule 7).
//
// Per frame, on the switch thread:
//   - Housekeeping (ARP; ICMPv6 router/neighbour discovery and MLD) passes
//     unless the manifest says `housekeeping: check`.
//   - Quarantine: a quarantined VM's port only exchanges frames with the
//     manifest's management peers; everything else to or from it is dropped.
//   - Flows: the frame's flow (addresses, protocol, ports; both directions
//     one flow) is judged once per VM that sends or receives it, the first
//     time that VM sees it, by the VM's RuleSet. The VM that sends the first
//     frame it sees of a flow originated it (direction out); a VM that first
//     receives it did not (in). The verdict is cached per (flow, VM), and
//     a frame that passed is remembered in the front cache (see Front) by
//     its ingress and egress ports, addresses, ports and protocol, so the
//     next frame of a known flow costs one direct-mapped lookup (about 60
//     instructions) whatever the number of rules. A violation is reported
//     once per (flow, VM) with the frame that started it. In enforce mode a
//     verdict with `drop` drops the flow's frames from and to that VM for as
//     long as the flow lives, and one with `quarantine` quarantines the VM at
//     once.
//   - Rates: each VM's envelope (and each rule's) is a set of token buckets
//     refilled continuously with a burst of one second's worth. Running dry
//     is reported once per episode (an episode ends after a second back
//     inside the envelope); in enforce mode with `drop` the frames beyond
//     the envelope are dropped.
// Pause, snapshot and power-off are not the switch's to carry out: they are
// reported in the Violation for the alert writer to carry out.
//
// Cached verdicts are forgotten after Options::flow_idle_ns without a frame
// (swept about once a second of frame time) or when the cache is full (then
// new flows are judged on every frame, counted in Stats::uncached_frames).
//
// Thread safety: Check() and everything else from the switch thread only,
// except where a method says otherwise.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "manifest/manifest.h"
#include "switch/l2_switch.h"

namespace blackbox {

class ManifestPolicy : public FramePolicy {
 public:
  struct Options {
    // Most (flow, VM) verdicts cached. Default: 65536.
    size_t max_cached = 65536;
    // Slots the verdict cache starts with (it doubles as it fills; rounded
    // up to a power of two, at least 4). Default: 1024.
    size_t initial_cache_slots = 1024;
    // A cached verdict unused this long is forgotten (and judged again, with
    // a fresh alert, if the flow comes back). Default: 120 s.
    int64_t flow_idle_ns = int64_t{120} * 1'000'000'000;
    // While a VM stays out of an envelope, a reminder alert at most this
    // often. Default: 10 s.
    int64_t rate_realert_ns = int64_t{10} * 1'000'000'000;
    // The front cache (see Front); off, every frame takes the full path
    // (the fuzzer compares the two). Default: on.
    bool front_cache = true;
  };

  // One deviation, handed to the sink on the switch thread (it must not
  // block: queue it).
  struct Violation {
    int64_t mono_ns = 0;    // when the triggering frame was read (the switch's clock)
    std::string vm;         // whose manifest
    uint32_t vm_port = 0;   // that VM's port
    uint32_t ingress = 0;   // port the triggering frame came in on
    std::string kind;       // "network" (a rule or the default), "rate", "quarantine"
    int rule = -1;          // Manifest::rules index; -1 the default or a VM envelope
    std::string rule_name;  // "http-in", "default", "rates"
    int rule_line = 0;      // YAML line
    Responses action = 0;   // as the manifest says (always includes alert)
    bool enforced = false;  // mode enforce: drop/quarantine already applied, the rest to do
    FlowFacts flow;         // as judged (direction, peer, protocol, service port)
    std::string src_ip, dst_ip;
    uint16_t src_port = 0, dst_port = 0;
    uint8_t proto = 0;
    std::string reason;  // one line
    std::string frame;   // the triggering frame, cut to 256 bytes
  };
  using Sink = std::function<void(Violation&&)>;

  struct VmPolicy {
    std::string name;
    std::shared_ptr<const Manifest> manifest;
    RuleSet rules;
    std::vector<uint32_t> ports;  // its switch ports
    std::vector<MacAddr> macs;    // the MAC of each port (same order)
  };

  struct Stats {
    uint64_t frames = 0;  // frames checked
    uint64_t judged = 0;  // (flow, VM) verdicts computed
    uint64_t violations = 0;
    uint64_t dropped = 0;          // frames dropped (whole frame)
    uint64_t pruned = 0;           // egress ports removed from frames
    uint64_t uncached_frames = 0;  // judged without caching: cache full
    uint64_t cached = 0;           // verdicts in the cache now
    uint64_t fast = 0;             // frames passed by the front cache (see Front)
  };

  ManifestPolicy(Options options, Sink sink);

  // Adds a VM with a manifest. Ports of VMs without a manifest are not
  // checked (but their frames are, by their peers'). A VM of the same name is
  // replaced: its verdicts cached under the old rules are forgotten (its
  // flows are judged, and may be alerted, again); with the same manifest
  // (rules recompiled because peers came or went) it keeps its quarantine
  // and its rate envelopes' state. Runs on the thread that calls Check (or
  // before frames flow).
  void AddVm(VmPolicy vm);
  // Stops checking a VM's ports (the VM ended); on the Check thread. False
  // if the VM is unknown.
  bool RemoveVm(const std::string& name);

  bool Check(uint32_t ingress, const ParsedFrame& frame, std::span<const uint8_t> bytes,
             int64_t now_ns, std::vector<uint32_t>* egress, std::string* reason) override;

  // Quarantines (or releases) a VM by name from any thread; takes effect on
  // the next frame. False if the VM is unknown.
  bool SetQuarantined(const std::string& vm, bool on);
  bool quarantined(const std::string& vm) const;

  Stats stats() const;

 private:
  struct Bucket {
    double rate = 0, tokens = 0;
    int64_t last_ns = 0;
    bool Take(double amount, int64_t now_ns);  // refills, then takes; false if dry
  };
  struct Envelope {
    Bucket packets, bytes, conns;
    RateEnvelope spec;
    std::string name;
    int rule = -1;
    int line = 0;
    bool exceeding = false;
    int64_t last_alert_ns = 0;
    int64_t last_exceed_ns = 0;
    bool active() const { return !spec.empty(); }
  };
  struct Vm {
    VmPolicy policy;
    bool enforce = false;
    std::atomic<bool> quarantined{false};
    Envelope vm_rate;
    std::vector<Envelope> rule_rates;  // by rule index (inactive where the rule has none)
    bool has_rates = false;            // any envelope active
    bool removed = false;              // RemoveVm: a slot AddVm reuses for the same name
  };
  // Flow key, both directions folded: the two addresses (16 bytes each, the
  // lower endpoint first), and ports, protocol, family and VM in the last
  // word.
  struct Key {
    uint64_t w[5] = {0, 0, 0, 0, 0};
    friend bool operator==(const Key&, const Key&) = default;
  };
  struct Verdict {
    int rule = -1;
    Responses action = 0;
    bool drop = false;  // enforced drop
    int64_t last_ns = 0;
  };
  // Open addressing with linear probing; grows by doubling up to twice
  // its entry limit, so probes stay short. No per-entry allocation.
  class FlowCache {
   public:
    FlowCache(size_t max_entries, size_t initial_slots);
    // Whether the next Insert moves the entries (the table grows).
    bool InsertMoves() const { return size_ < max_ && (size_ + 1) * 2 > slots_.size(); }
    // The entry of `k`; valid until generation() changes.
    Verdict* Find(const Key& k, uint64_t hash);
    // False (nothing stored) when the cache holds max_entries already;
    // else the new entry, valid until generation() changes.
    Verdict* Insert(const Key& k, uint64_t hash, const Verdict& v);
    // Changes whenever entries move (growth, EraseIdle).
    uint64_t generation() const { return generation_; }
    // Removes the entries idle since before `older_than_ns`.
    void EraseIdle(int64_t older_than_ns);
    // Removes the entries of VM `vm` (its index in vms_).
    void EraseVm(uint16_t vm);
    size_t size() const { return size_; }

   private:
    struct Slot {
      Key key;
      uint64_t hash = 0;
      Verdict v;
      bool used = false;
    };
    void Rehash(size_t capacity);
    std::vector<Slot> slots_;
    size_t mask_ = 0;
    size_t size_ = 0;
    size_t max_;
    uint64_t generation_ = 0;
  };
  static uint64_t Hash(const Key& k);

  // A frame's flow, computed once per frame for every VM that judges it.
  struct FlowId {
    Key key;            // without the VM
    uint64_t hash = 0;  // Hash(key), set by Check after the fast path
    bool ip = false;
  };
  static FlowId IdOf(const ParsedFrame& f);
  // Judges (or looks up) the flow for VM `vi`; `sending` is whether the VM
  // sends this frame. Returns false if the frame must not pass that VM.
  // `port` is the VM's port the frame leaves or reaches it by.
  // *entry (optional) gets the cache entry of the verdict, null when none
  // (housekeeping, quarantine, a full cache).
  bool Judge(size_t vi, uint32_t port, bool sending, const ParsedFrame& f, const FlowId& id,
             size_t frame_size, uint32_t ingress, int64_t now_ns, std::string* reason,
             Verdict** entry = nullptr);
  // The front cache: the switch's recent plain passes, direct-mapped by
  // (ingress port, egress port, the frame's own addresses, ports and
  // protocol). An entry is a frame that passed to one port with cached
  // verdicts on every side that has a manifest and no rate envelope to
  // feed. A frame with the same key passes with one lookup and no hashing of
  // the folded flow key; anything else (a miss, a collision, broadcast,
  // housekeeping, rates) takes the full path, which fills the entry. What a
  // hit touches (Front, 32 bytes) is apart from what only the full path
  // needs (FrontCold). The whole cache is emptied when verdict entries move
  // (after their uses are carried to them) or a quarantine changes; an
  // entry's last use is carried to its verdicts before idle ones are swept
  // and when the entry is overwritten.
  struct FrontKey {
    // w[0]: IPv4 source | destination << 32, or the first 8 bytes of the
    // IPv6 source; w[1]: ports | protocol << 32 | family << 40 (never 0);
    // w[2]: ingress | egress << 32; v6: the rest of the IPv6 addresses. An
    // IPv4 key never equals an IPv6 one (the family in w[1]), so IPv4 keys
    // compare w[0..2] only.
    uint64_t w[3];
    uint64_t v6[3];  // set only when is_v6
    bool is_v6;
  };
  struct alignas(32) Front {
    uint64_t w[3] = {0, 0, 0};  // FrontKey::w; w[1] == 0: empty
    int64_t last_ns = 0;        // last use
  };
  struct FrontCold {
    Verdict* sender = nullptr;  // the verdicts the entry stands for (may be null)
    Verdict* receiver = nullptr;
    std::array<uint64_t, 3> v6{};  // FrontKey::v6 of an IPv6 entry
  };
  static constexpr size_t kFrontSlots = 4096;  // a power of two
  static bool FrontKeyOf(uint32_t ingress, uint32_t egress, const ParsedFrame& f, FrontKey* k);
  static size_t FrontSlot(const FrontKey& k);
  bool FrontHit(size_t slot, const FrontKey& k) const;  // the whole key compared
  // Carries an entry's last use to its verdicts (whose entries must not
  // have moved since it was filled).
  void CarryUse(size_t slot);
  void CarryFrontUse();  // every entry's
  // Empties the front cache if verdict entries moved or a quarantine
  // changed since it was last in step.
  void SyncFront() {
    const uint64_t q = quarantine_changes_.load(std::memory_order_relaxed);
    if (cache_.generation() == front_cache_gen_ && q == front_quarantine_seen_) return;
    if (cache_.generation() == front_cache_gen_) CarryFrontUse();  // the pointers still hold
    ClearFront();
    front_cache_gen_ = cache_.generation();
    front_quarantine_seen_ = q;
  }
  void ClearFront();
  // Check() past its IPv4 fast path.
  [[gnu::noinline]] bool CheckMiss(uint32_t ingress, const ParsedFrame& frame,
                                   std::span<const uint8_t> bytes, int64_t now_ns,
                                   std::vector<uint32_t>* egress, std::string* reason);
  // Check() past the front cache; fkey/slot: the frame's front entry to fill
  // (null when it has none).
  [[gnu::noinline]] bool CheckFull(uint32_t ingress, const ParsedFrame& frame,
                                   std::span<const uint8_t> bytes, int64_t now_ns,
                                   std::vector<uint32_t>* egress, std::string* reason,
                                   const FrontKey* fkey, size_t slot);
  bool Rates(Vm& vm, uint32_t port, int rule, bool new_flow, size_t frame_size,
             const ParsedFrame& f, uint32_t ingress, int64_t now_ns, std::string* reason);
  bool Quarantine(Vm& vm, bool sending, const ParsedFrame& f) const;
  void Report(Vm& vm, uint32_t port, Violation v, const ParsedFrame& f, uint32_t ingress,
              int64_t now_ns);
  bool AnyChecked(const std::vector<uint32_t>& ports) const;
  void Sweep(int64_t now_ns);
  bool SweepDue(int64_t now_ns) const { return now_ns - last_sweep_ns_ > 1'000'000'000; }

  Options options_;
  Sink sink_;
  // Changed only on the Check thread (AddVm, RemoveVm), which reads it
  // without the lock; other threads (SetQuarantined) look names up under it.
  std::vector<std::unique_ptr<Vm>> vms_;
  mutable std::mutex vms_mu_;
  struct PortVm {
    bool checked = false;  // the port belongs to a VM with a manifest
    uint16_t vm = 0;       // index in vms_
    MacAddr mac;
  };
  const PortVm* PortOf(uint32_t port) const {
    return port < port_vm_.size() && port_vm_[port].checked ? &port_vm_[port] : nullptr;
  }
  std::vector<PortVm> port_vm_;  // by port id
  int64_t last_uncached_report_ns_ = 0;
  FlowCache cache_;
  std::vector<Front> front_;
  std::vector<FrontCold> front_cold_;
  std::atomic<uint64_t> quarantine_changes_{0};  // SetQuarantined and Report, any thread
  uint64_t front_quarantine_seen_ = 0;           // quarantine_changes_ the front cache is for
  uint64_t front_cache_gen_ = 0;                 // cache_.generation() the front cache is for
  int64_t last_sweep_ns_ = 0;
  // The frame being checked, for Report (set by Check).
  std::span<const uint8_t> current_frame_;
  Stats stats_;
};

}  // namespace blackbox
