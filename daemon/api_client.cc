#include "daemon/api_client.h"

#include <grp.h>
#include <sys/stat.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>

namespace blackbox {

namespace {

namespace http = boost::beast::http;
using Local = boost::asio::local::stream_protocol;
using json = nlohmann::json;

std::string GroupOf(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "?";
  group* gr = ::getgrgid(st.st_gid);
  return gr != nullptr ? gr->gr_name : std::to_string(st.st_gid);
}

}  // namespace

StatusOr<DaemonReply> CallDaemon(const std::string& socket_path, const std::string& method,
                                 const std::string& target, const std::string& body) {
  boost::asio::io_context io;
  Local::socket socket(io);
  boost::system::error_code ec;
  socket.connect(Local::endpoint(socket_path), ec);
  if (ec == boost::asio::error::access_denied) {
    return FailedPrecondition("permission denied on " + socket_path +
                              ": controlling the daemon needs membership of group " +
                              GroupOf(socket_path));
  }
  if (ec == boost::asio::error::connection_refused || ec == boost::asio::error::not_found ||
      ec.value() == ENOENT) {
    return Unavailable("no Blackbox daemon is listening on " + socket_path +
                       " (start one: `blackbox daemon`, or `systemctl start blackbox`)");
  }
  if (ec) return IOError("cannot connect to " + socket_path + ": " + ec.message());
  http::request<http::string_body> req{method == "POST" ? http::verb::post : http::verb::get,
                                       target, 11};
  req.set(http::field::host, "blackbox");
  req.set(http::field::content_type, "application/json");
  req.body() = body;
  req.prepare_payload();
  http::write(socket, req, ec);
  if (ec) return IOError("writing to the daemon: " + ec.message());
  boost::beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  http::read(socket, buffer, parser, ec);
  if (ec) return IOError("reading the daemon's answer: " + ec.message());
  DaemonReply reply;
  reply.status = parser.get().result_int();
  try {
    reply.body = json::parse(parser.get().body());
  } catch (const json::exception& e) {
    return IOError(std::string("the daemon's answer is not JSON: ") + e.what());
  }
  return reply;
}

}  // namespace blackbox
