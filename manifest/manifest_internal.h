// Internal to manifest/: what the .cc files of the manifest code share (the
// limits, the vocabulary of messages, numbers, CIDRs and peers, the warnings
// pass). Nobody outside manifest/ includes it; everything else talks to
// manifest/manifest.h.
//
// Where the code is: manifest.cc (the vocabulary below, PeerResolver and the
// small public functions), manifest_parse.cc (YAML to Manifest),
// manifest_warnings.cc (rules that can never match or that overlap),
// manifest_write.cc (Manifest to YAML), rule_set.cc (RuleSet).
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "common/status.h"
#include "manifest/manifest.h"

namespace blackbox::manifest_internal {

inline constexpr size_t kMaxManifestBytes = 1 << 20;
inline constexpr size_t kMaxRules = 100000;
// Literal list entries (ports, peers, devices ...), aliases counted each
// time they are used: bounds the work an alias-heavy file can cause.
inline constexpr size_t kMaxListItems = 1000000;
// Peers after groups are expanded, over all rules, groups and management.
inline constexpr size_t kMaxExpandedPeers = 4000000;
// Above this many rules the pairwise shadow/overlap checks are skipped.
inline constexpr size_t kMaxPairwiseRules = 2000;
// Peer and port comparisons the pairwise checks may spend.
inline constexpr uint64_t kPairwiseBudget = 50000000;
inline constexpr size_t kMaxWarnings = 100;
// Candidate entries one RuleSet bucket may hold before it is scanned linearly.
inline constexpr size_t kMaxBucketEntries = 4000000;

struct RespName {
  const char* name;
  Responses bit;
};
inline constexpr RespName kRespNames[] = {
    {"alert", kRespAlert}, {"drop", kRespDrop},         {"quarantine", kRespQuarantine},
    {"pause", kRespPause}, {"snapshot", kRespSnapshot}, {"poweroff", kRespPowerOff},
};

// ---- Vocabulary (manifest.cc) ----

// User text inside a message: one line, bounded.
std::string Show(std::string_view s);
std::string Quoted(std::string_view s);

std::string Join(const std::vector<std::string>& v, const char* sep);

Status Err(int line, const std::string& field, const std::string& what);

// 1-based line of a node, or `fallback` if it has none.
int NodeLine(const YAML::Node& n, int fallback);

bool ValidName(std::string_view s);

// Digits and dots only ("10.0.0.256", "80"): a mistyped address, not a name.
bool LooksNumeric(std::string_view s);

bool ParseUint(std::string_view s, uint64_t max, uint64_t* out);

// Merged, sorted, adjacent ranges joined.
std::vector<PortRange> MergePorts(std::vector<PortRange> v);

// Parses "ADDR" or "ADDR/PREFIX". On failure `why` says what is wrong and
// `suggestion` holds the network when only host bits are the problem.
bool ParseCidr(const std::string& text, Cidr* out, std::string* why, std::string* suggestion);

std::string PeerKey(const Peer& p);

std::string ProtoName(uint8_t p);

// An ordered set of peers.
struct PeerSet {
  std::vector<Peer> peers;
  std::unordered_set<std::string> keys;
  bool any = false;
  void Add(const Peer& p) {
    if (p.kind == Peer::Kind::kAny) any = true;
    if (keys.insert(PeerKey(p)).second) peers.push_back(p);
  }
};

struct Ctx {
  size_t items = 0;
  size_t expanded_peers = 0;
  int rules_line = 1;  // of network.rules, for warnings about all rules
};

// Resolves peer words ("any", addresses, CIDRs, groups, VM names).
class PeerResolver {
 public:
  struct Decl {
    YAML::Node value;
    int line = 0;
  };
  explicit PeerResolver(Ctx* ctx) : ctx_(ctx) {}

  std::map<std::string, Decl> decls;                  // groups not yet expanded
  std::map<std::string, std::vector<Peer>> expanded;  // groups expanded

  bool HasGroup(const std::string& name) const {
    return decls.count(name) > 0 || expanded.count(name) > 0;
  }

  // Expands group `name` into `expanded` (members that are groups too).
  Status Expand(const std::string& name);

  // Resolves a scalar or a list of scalars into `out`; `text` gets it as written.
  Status ReadList(const YAML::Node& node, int line, const std::string& field, PeerSet* out,
                  std::string* text);

  Status Word(const std::string& word, int line, const std::string& field, PeerSet* out);

 private:
  Status TooManyItems(int line, const std::string& field);
  Status Add(const Peer& p, int line, const std::string& field, PeerSet* out);
  Status AddGroup(const std::string& name, int line, const std::string& field, PeerSet* out);

  Ctx* ctx_;
  std::vector<std::string> stack_;
};

// ---- Warnings (manifest_warnings.cc) ----

class Warnings {
 public:
  void Add(int line, const std::string& text);
  std::vector<ManifestWarning> Take();

 private:
  std::vector<ManifestWarning> list_;
  size_t more_ = 0;
  int first_more_line_ = 0;
};

void CheckRules(const Manifest& m, int rules_line, Warnings& w);

}  // namespace blackbox::manifest_internal
