// The daemon's control API transport: HTTP/1.1 over a unix socket (Beast),
// one thread per connection, JSON bodies. Who may connect is decided by the
// socket file's permissions (mode 0660, owned by the daemon's user and the
// control group), see docs/daemon-api.md.
//
// Limits, each answered with a JSON error and the connection closed:
//   - a request head over 8 KiB or a body over ApiServer::kMaxBody: 413
//   - a malformed request: 400
//   - more than kMaxConnections connections at once: 503
//   - a client that has not sent its whole request kIoTimeoutSeconds after
//     connecting (or does not take the answer within as long): dropped
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "common/status.h"

namespace blackbox {

struct ApiRequest {
  std::string method;  // "GET", "POST" ...
  std::string target;  // "/v1/vms/web?x=1" as sent
  std::string body;
};

struct ApiResponse {
  ApiResponse() = default;
  ApiResponse(int s, nlohmann::json b) : status(s), body(std::move(b)) {}
  int status = 200;
  nlohmann::json body = nlohmann::json::object();
  std::string allow;  // the Allow header of a 405
  static ApiResponse Error(int status, const std::string& message) {
    return {status, {{"error", message}}};
  }
};

class ApiServer {
 public:
  static constexpr size_t kMaxBody = 64 * 1024;
  static constexpr int kMaxConnections = 32;
  static constexpr int kIoTimeoutSeconds = 10;
  using Handler = std::function<ApiResponse(const ApiRequest&)>;

  ApiServer() = default;
  ~ApiServer();  // Stop()
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Listens on `path` (a stale socket file there is replaced), mode 0660 and
  // group `gid` (-1: the daemon's own), and serves `handler` on a thread per
  // connection.
  Status Start(const std::string& path, gid_t gid, Handler handler);
  // Stops accepting, removes the socket file and waits for the connections
  // in progress. Idempotent.
  void Stop();

 private:
  void AcceptLoop();
  void Serve(int fd);

  std::string path_;
  Handler handler_;
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  std::mutex mu_;
  int active_ = 0;
  std::condition_variable idle_cv_;
};

}  // namespace blackbox
