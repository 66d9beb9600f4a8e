// Exchange timing: how long the request/answer exchanges between two guests
// took, as the switch saw them (wall clock of each captured frame).
//
// Read from a stored capture, so that `blackbox bench io` and the end-to-end
// tests time exactly what a client on the wire experiences, whatever the
// guests print about themselves (a recorded guest's own clock is replayed
// guest time, not host time).
//
//   TCP: one exchange per connection from `client` to `server`:`service_port`
//        (SYN to the last frame of the connection, either direction). A SYN
//        that no frame has answered yet is a retransmission and stays part of
//        its connection.
//   ICMP: one round trip per echo request from `client` answered by `server`
//         (same id and sequence); unanswered requests are counted.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "store/store.h"

namespace blackbox {

struct ExchangeTimes {
  // Per TCP connection, ordered by its SYN: milliseconds from the client's
  // first SYN to the connection's last frame.
  std::vector<double> exchange_ms;
  // Per answered echo request, ordered by request time: round trip in ms.
  std::vector<double> ping_ms;
  int pings_lost = 0;
};

// Times every exchange between `client` and `server` (IPv4 dotted quads) in
// the capture. InvalidArgument for an address that does not parse; the
// store's errors for an unknown or unreadable capture.
StatusOr<ExchangeTimes> TimeExchanges(const Store& store, const std::string& capture_id,
                                      const std::string& client, const std::string& server,
                                      uint16_t service_port);

}  // namespace blackbox
