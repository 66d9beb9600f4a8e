#include "daemon/api_server.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>

namespace blackbox {

namespace http = boost::beast::http;
using Local = boost::asio::local::stream_protocol;

ApiServer::~ApiServer() { Stop(); }

Status ApiServer::Start(const std::string& path, gid_t gid, Handler handler) {
  if (path.empty() || path.size() >= sizeof(sockaddr_un::sun_path)) {
    return InvalidArgument("control socket path is empty or longer than " +
                           std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes: " + path);
  }
  handler_ = std::move(handler);
  path_ = path;
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return IOError(std::string("socket: ") + std::strerror(errno));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  ::unlink(path.c_str());  // a stale socket of a daemon that died
  // Created 0600, then opened to the group: never wider than meant.
  const mode_t old_umask = ::umask(0177);
  int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old_umask);
  if (rc != 0 || ::listen(fd, 64) != 0) {
    std::string err = std::strerror(errno);
    ::close(fd);
    return IOError("cannot listen on " + path + ": " + err);
  }
  if (gid != static_cast<gid_t>(-1) && ::chown(path.c_str(), static_cast<uid_t>(-1), gid) != 0) {
    std::string err = std::strerror(errno);
    ::close(fd);
    return IOError("cannot give " + path + " to group " + std::to_string(gid) + ": " + err);
  }
  if (::chmod(path.c_str(), 0660) != 0) {
    std::string err = std::strerror(errno);
    ::close(fd);
    return IOError("chmod " + path + ": " + err);
  }
  listen_fd_ = fd;
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  return Status::Ok();
}

void ApiServer::Stop() {
  if (listen_fd_ < 0) return;
  stopping_ = true;
  if (accept_thread_.joinable()) accept_thread_.join();
  ::close(listen_fd_);
  listen_fd_ = -1;
  ::unlink(path_.c_str());
  std::unique_lock lock(mu_);
  idle_cv_.wait(lock, [&] { return active_ == 0; });
}

void ApiServer::AcceptLoop() {
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) ::poll(nullptr, 0, 100);
      continue;
    }
    {
      std::lock_guard lock(mu_);
      if (active_ >= kMaxConnections) {
        const std::string body = "{\"error\":\"too many control connections, try again\"}\n";
        const std::string busy =
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            "Content-Length: " +
            std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
        ssize_t ignored = ::write(fd, busy.data(), busy.size());
        (void)ignored;
        ::close(fd);
        continue;
      }
      ++active_;
    }
    std::thread([this, fd] {
      try {
        Serve(fd);
      } catch (const std::exception& e) {
        spdlog::error("control connection: internal error: {}", e.what());
      }
      std::lock_guard lock(mu_);
      --active_;
      idle_cv_.notify_all();
    }).detach();
  }
}

void ApiServer::Serve(int fd) {
  boost::asio::io_context io;
  Local::socket socket(io);
  boost::system::error_code ec;
  socket.assign(Local(), fd, ec);
  if (ec) {
    ::close(fd);
    return;
  }
  // Every read and write is bounded by one deadline: a client that stalls
  // is dropped (asio's blocking calls would wait for it forever).
  boost::asio::steady_timer deadline(io);
  bool finished = false;  // the operation completed: a late timer must not close
  auto run_until_deadline = [&] {
    finished = false;
    deadline.expires_after(std::chrono::seconds(kIoTimeoutSeconds));
    deadline.async_wait([&](const boost::system::error_code& e) {
      if (!e && !finished) socket.close();
    });
    io.restart();
    io.run();
  };
  boost::beast::flat_buffer buffer;
  http::request_parser<http::string_body> parser;
  parser.header_limit(8 * 1024);
  parser.body_limit(kMaxBody);
  http::async_read(socket, buffer, parser, [&](const boost::system::error_code& e, size_t) {
    ec = e;
    finished = true;
    deadline.cancel();
  });
  run_until_deadline();
  ApiResponse response;
  if (ec == http::error::body_limit || ec == http::error::header_limit ||
      ec == http::error::buffer_overflow) {
    response = ApiResponse::Error(413, "request too large (head at most 8 KiB, body at most " +
                                           std::to_string(kMaxBody / 1024) + " KiB)");
  } else if (ec == http::error::end_of_stream || ec == boost::asio::error::eof ||
             ec == boost::asio::error::operation_aborted ||
             ec == boost::asio::error::bad_descriptor || !socket.is_open()) {
    return;  // nothing (complete) was sent in time: nothing to answer
  } else if (ec) {
    response = ApiResponse::Error(400, "malformed HTTP request: " + ec.message());
  } else {
    const auto& req = parser.get();
    ApiRequest r{std::string(req.method_string()), std::string(req.target()), req.body()};
    response = handler_(r);
  }
  http::response<http::string_body> res;
  res.version(11);
  res.result(static_cast<http::status>(response.status));
  res.set(http::field::content_type, "application/json");
  res.set(http::field::connection, "close");
  if (!response.allow.empty()) res.set(http::field::allow, response.allow);
  res.body() = response.body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  res.prepare_payload();
  if (!socket.is_open()) return;
  http::async_write(socket, res, [&](const boost::system::error_code& e, size_t) {
    ec = e;
    finished = true;
    deadline.cancel();
  });
  run_until_deadline();
  socket.shutdown(Local::socket::shutdown_both, ec);
}

}  // namespace blackbox
