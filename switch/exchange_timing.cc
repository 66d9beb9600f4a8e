#include "switch/exchange_timing.h"

#include <algorithm>
#include <map>
#include <utility>

#include "switch/frame.h"

namespace blackbox {

StatusOr<ExchangeTimes> TimeExchanges(const Store& store, const std::string& capture_id,
                                      const std::string& client, const std::string& server,
                                      uint16_t service_port) {
  auto client_ip = IpAddr::Parse(client);
  if (!client_ip.ok()) return InvalidArgument("client address '" + client + "' does not parse");
  auto server_ip = IpAddr::Parse(server);
  if (!server_ip.ok()) return InvalidArgument("server address '" + server + "' does not parse");

  struct Conn {
    int64_t syn_ns = -1, last_ns = -1;
    bool answered = false;  // a frame other than the client's SYN was seen
  };
  std::map<uint16_t, std::vector<Conn>> conns;  // by client port; ports may be reused
  std::map<std::pair<uint16_t, uint16_t>, int64_t> echo_sent;  // (id, seq) -> request time
  std::vector<std::pair<int64_t, double>> pings;               // (request time, rtt ms)
  RETURN_IF_ERROR(
      store.ReadFrames(capture_id, FrameQuery{}, [&](const CapturedFrame& cf) -> Status {
        const auto* b = reinterpret_cast<const uint8_t*>(cf.bytes.data());
        auto f = ParseFrame({b, cf.bytes.size()});
        if (!f.ok() || f->l3 != ParsedFrame::L3::kIpv4) return Status::Ok();
        const bool from_client = f->ip.src == *client_ip && f->ip.dst == *server_ip;
        const bool from_server = f->ip.src == *server_ip && f->ip.dst == *client_ip;
        if (!from_client && !from_server) return Status::Ok();
        if (f->l4 == ParsedFrame::L4::kTcp) {
          const uint16_t port = from_client ? f->transport.src_port : f->transport.dst_port;
          const uint16_t service = from_client ? f->transport.dst_port : f->transport.src_port;
          if (service != service_port) return Status::Ok();
          auto& list = conns[port];
          const uint8_t flags = f->transport.tcp_flags;
          const bool syn = from_client && (flags & kTcpSyn) && !(flags & kTcpAck);
          if (syn && (list.empty() || list.back().answered)) {
            list.push_back({cf.wall_ns, cf.wall_ns, false});  // a new connection
          } else if (!list.empty()) {
            list.back().last_ns = cf.wall_ns;
            list.back().answered = list.back().answered || !syn;
          }
        } else if (f->l4 == ParsedFrame::L4::kIcmp && f->payload_length >= 4) {
          const uint8_t* p = b + f->payload_offset;
          const std::pair<uint16_t, uint16_t> key{static_cast<uint16_t>(p[0] << 8 | p[1]),
                                                  static_cast<uint16_t>(p[2] << 8 | p[3])};
          if (from_client && f->transport.icmp_type == 8) {
            echo_sent.emplace(key, cf.wall_ns);
          } else if (from_server && f->transport.icmp_type == 0) {
            auto it = echo_sent.find(key);
            if (it != echo_sent.end()) {
              pings.push_back({it->second, (cf.wall_ns - it->second) / 1e6});
              echo_sent.erase(it);
            }
          }
        }
        return Status::Ok();
      }));
  std::vector<Conn> all;
  for (const auto& [port, list] : conns) all.insert(all.end(), list.begin(), list.end());
  std::sort(all.begin(), all.end(),
            [](const Conn& a, const Conn& b) { return a.syn_ns < b.syn_ns; });
  ExchangeTimes out;
  for (const Conn& c : all) out.exchange_ms.push_back((c.last_ns - c.syn_ns) / 1e6);
  std::sort(pings.begin(), pings.end());
  for (const auto& [t, rtt] : pings) out.ping_ms.push_back(rtt);
  out.pings_lost = static_cast<int>(echo_sent.size());
  return out;
}

}  // namespace blackbox
