// Unit tests for QmpClient against a fake QMP server on the other end of a
// socketpair, driven on the same io_context. No sleeps: each test runs the
// io_context until the event it waits for has happened (with a generous
// safety limit), and uses the ordering of the byte stream to know that
// earlier messages were processed.
#include "recorder/qmp_client.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <deque>
#include <filesystem>
#include <functional>
#include <istream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace blackbox {
namespace {

namespace asio = boost::asio;
using json = nlohmann::json;
using stream_protocol = asio::local::stream_protocol;
using namespace std::chrono_literals;

const char kGreeting[] =
    R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, )"
    R"("capabilities": ["oob"]}})";

// The QEMU side of the connection: records every line it receives and sends
// whatever the test tells it to, in order.
class FakeQmpServer {
 public:
  explicit FakeQmpServer(stream_protocol::socket socket) : socket_(std::move(socket)) {
    ReadMore();
  }

  void SendRaw(std::string bytes) {
    queue_.push_back(std::move(bytes));
    if (!writing_) WriteNext();
  }
  void Send(const json& message) { SendRaw(message.dump() + "\r\n"); }
  void SendGreeting() { SendRaw(std::string(kGreeting) + "\r\n"); }
  void Reply(const json& id, const json& value) { Send({{"return", value}, {"id", id}}); }

  // Closes the socket once everything queued has been written.
  void Close() {
    closing_ = true;
    if (!writing_) CloseNow();
  }

  const std::vector<json>& received() const { return received_; }
  bool eof() const { return eof_; }

 private:
  void WriteNext() {
    writing_ = true;
    asio::async_write(socket_, asio::buffer(queue_.front()),
                      [this](const boost::system::error_code& ec, size_t) {
                        queue_.pop_front();
                        if (ec || queue_.empty()) {
                          writing_ = false;
                          if (closing_) CloseNow();
                          return;
                        }
                        WriteNext();
                      });
  }

  void ReadMore() {
    socket_.async_read_some(asio::buffer(chunk_),
                            [this](const boost::system::error_code& ec, size_t n) {
                              if (ec) {
                                eof_ = true;
                                return;
                              }
                              buffer_.append(chunk_, n);
                              size_t newline;
                              while ((newline = buffer_.find('\n')) != std::string::npos) {
                                received_.push_back(json::parse(buffer_.substr(0, newline)));
                                buffer_.erase(0, newline + 1);
                              }
                              ReadMore();
                            });
  }

  void CloseNow() {
    boost::system::error_code ignored;
    socket_.shutdown(stream_protocol::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

  stream_protocol::socket socket_;
  std::deque<std::string> queue_;
  bool writing_ = false;
  bool closing_ = false;
  char chunk_[4096];
  std::string buffer_;
  std::vector<json> received_;
  bool eof_ = false;
};

// Records what a ReplyCallback received.
struct ReplySlot {
  int calls = 0;
  std::optional<StatusOr<json>> result;

  QmpClient::ReplyCallback Callback() {
    return [this](StatusOr<json> reply) {
      ++calls;
      result.emplace(std::move(reply));
    };
  }
  bool done() const { return calls > 0; }
  const Status& status() const { return result->status(); }
};

class QmpClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    stream_protocol::socket client_end(io_);
    stream_protocol::socket server_end(io_);
    asio::local::connect_pair(client_end, server_end);
    client_socket_.emplace(std::move(client_end));
    server_.emplace(std::move(server_end));
  }

  // Runs the io_context until pred() holds. Returns false if it does not
  // within `limit` or the io_context runs out of work first.
  bool RunUntil(const std::function<bool()>& pred, std::chrono::milliseconds limit = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return false;
      io_.restart();
      if (io_.run_one_for(deadline - now) == 0 && io_.stopped()) return pred();
    }
    return true;
  }

  // Runs until no work is left (the client and the server have both closed).
  bool Drain() {
    io_.restart();
    io_.run_for(5s);
    return io_.stopped();
  }

  std::shared_ptr<QmpClient> StartClient(QmpClient::Options options = {}) {
    auto client = QmpClient::Create(io_, options);
    client->Start(std::move(*client_socket_), [this](Status status) {
      ++ready_calls_;
      ready_status_ = status;
    });
    return client;
  }

  // Starts a client and runs the handshake to completion.
  std::shared_ptr<QmpClient> StartReadyClient(QmpClient::Options options = {}) {
    auto client = StartClient(options);
    server_->SendGreeting();
    EXPECT_TRUE(RunUntil([&] { return server_->received().size() == 1; }));
    const json caps = server_->received().at(0);
    EXPECT_EQ(caps.value("execute", ""), "qmp_capabilities");
    server_->Reply(caps.at("id"), json::object());
    EXPECT_TRUE(RunUntil([&] { return ready_calls_ == 1; }));
    EXPECT_TRUE(ready_status_.ok()) << ready_status_.ToString();
    EXPECT_TRUE(client->IsReady());
    return client;
  }

  // A copy of the request the server received at `index` (the vector grows).
  json Request(size_t index) { return server_->received().at(index); }
  bool Received(size_t count) {
    return RunUntil([&] { return server_->received().size() >= count; });
  }

  asio::io_context io_;
  std::optional<stream_protocol::socket> client_socket_;
  std::optional<FakeQmpServer> server_;
  int ready_calls_ = 0;
  Status ready_status_;
};

TEST_F(QmpClientTest, HandshakeSendsCapabilitiesAndBecomesReady) {
  auto client = StartClient();
  EXPECT_FALSE(client->IsReady());
  server_->SendGreeting();
  ASSERT_TRUE(Received(1));
  const json caps = Request(0);
  EXPECT_EQ(caps.at("execute"), "qmp_capabilities");
  EXPECT_TRUE(caps.contains("id"));
  EXPECT_FALSE(caps.contains("arguments"));
  EXPECT_EQ(ready_calls_, 0) << "ready before the capabilities reply";
  EXPECT_FALSE(client->IsReady());

  server_->Reply(caps.at("id"), json::object());
  ASSERT_TRUE(RunUntil([&] { return ready_calls_ > 0; }));
  EXPECT_EQ(ready_calls_, 1);
  EXPECT_TRUE(ready_status_.ok()) << ready_status_.ToString();
  EXPECT_TRUE(client->IsReady());

  // The first command is sent with arguments and a different id.
  ReplySlot slot;
  client->Execute("query-status", json{{"x", 1}}, slot.Callback());
  ASSERT_TRUE(Received(2));
  EXPECT_EQ(Request(1).at("execute"), "query-status");
  EXPECT_EQ(Request(1).at("arguments"), (json{{"x", 1}}));
  EXPECT_NE(Request(1).at("id"), caps.at("id"));
  server_->Reply(Request(1).at("id"), json{{"status", "running"}});
  ASSERT_TRUE(RunUntil([&] { return slot.done(); }));
  ASSERT_TRUE(slot.result->ok()) << slot.status().ToString();
  EXPECT_EQ(slot.result->value(), (json{{"status", "running"}}));

  client->Close();
  server_->Close();
  EXPECT_TRUE(Drain());
  EXPECT_EQ(client.use_count(), 1) << "a handler still holds the client";
}

// Out of band: with Options::out_of_band and a greeting that offers "oob",
// the handshake enables it and ExecuteOutOfBand sends {"exec-oob": ...};
// without the option nothing is enabled and ExecuteOutOfBand fails at once.
TEST_F(QmpClientTest, OutOfBandIsNegotiatedOnlyWhenAskedAndOffered) {
  QmpClient::Options options;
  options.out_of_band = true;
  auto client = StartClient(options);
  server_->SendGreeting();
  ASSERT_TRUE(Received(1));
  EXPECT_EQ(Request(0).at("execute"), "qmp_capabilities");
  EXPECT_EQ(Request(0).at("arguments"), (json{{"enable", json::array({"oob"})}}));
  server_->Reply(Request(0).at("id"), json::object());
  ASSERT_TRUE(RunUntil([&] { return ready_calls_ == 1; }));

  ReplySlot oob;
  client->ExecuteOutOfBand("__org.blackbox_replay-go-live", nullptr, oob.Callback());
  ASSERT_TRUE(Received(2));
  EXPECT_EQ(Request(1).value("exec-oob", ""), "__org.blackbox_replay-go-live");
  EXPECT_FALSE(Request(1).contains("execute"));
  server_->Reply(Request(1).at("id"), json::object());
  ASSERT_TRUE(RunUntil([&] { return oob.done(); }));
  EXPECT_TRUE(oob.result->ok()) << oob.status().ToString();
  client->Close();
  server_->Close();
  EXPECT_TRUE(Drain());
}

TEST_F(QmpClientTest, OutOfBandWithoutNegotiationFailsWithoutSending) {
  auto client = StartReadyClient();  // default options: the offer is declined
  EXPECT_FALSE(Request(0).contains("arguments"));
  ReplySlot oob;
  client->ExecuteOutOfBand("__org.blackbox_replay-go-live", nullptr, oob.Callback());
  ASSERT_TRUE(RunUntil([&] { return oob.done(); }));
  EXPECT_EQ(oob.status().code(), StatusCode::kFailedPrecondition) << oob.status().ToString();
  EXPECT_EQ(server_->received().size(), 1u) << "nothing was sent";
  client->Close();
  server_->Close();
  EXPECT_TRUE(Drain());
}

TEST_F(QmpClientTest, MessagesSplitAcrossReadsAndBatchedInOneRead) {
  auto client = StartClient();
  // The greeting arrives one byte at a time.
  const std::string greeting = std::string(kGreeting) + "\r\n";
  for (char c : greeting) server_->SendRaw(std::string(1, c));
  ASSERT_TRUE(Received(1));
  server_->Reply(Request(0).at("id"), json::object());
  ASSERT_TRUE(RunUntil([&] { return ready_calls_ == 1; }));
  ASSERT_TRUE(ready_status_.ok());

  ReplySlot a, b;
  client->Execute("a", nullptr, a.Callback());
  client->Execute("b", nullptr, b.Callback());
  ASSERT_TRUE(Received(3));
  // Both replies and an event in one write, with a blank line thrown in.
  std::vector<json> events;
  client->SetEventHandler([&](const json& e) { events.push_back(e); });
  server_->SendRaw(json{{"return", 1}, {"id", Request(1).at("id")}}.dump() + "\r\n\r\n" +
                   json{{"event", "STOP"}}.dump() + "\n" +
                   json{{"return", 2}, {"id", Request(2).at("id")}}.dump() + "\r\n");
  ASSERT_TRUE(RunUntil([&] { return a.done() && b.done(); }));
  EXPECT_EQ(a.result->value(), 1);
  EXPECT_EQ(b.result->value(), 2);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].at("event"), "STOP");
}

TEST_F(QmpClientTest, OutOfOrderRepliesAreMatchedById) {
  auto client = StartReadyClient();
  ReplySlot first, second;
  client->Execute("query-first", nullptr, first.Callback());
  client->Execute("query-second", nullptr, second.Callback());
  ASSERT_TRUE(Received(3));
  EXPECT_EQ(Request(1).at("execute"), "query-first");
  EXPECT_EQ(Request(2).at("execute"), "query-second");
  EXPECT_NE(Request(1).at("id"), Request(2).at("id"));

  server_->Reply(Request(2).at("id"), "second-result");
  ASSERT_TRUE(RunUntil([&] { return second.done(); }));
  EXPECT_FALSE(first.done());
  server_->Reply(Request(1).at("id"), "first-result");
  ASSERT_TRUE(RunUntil([&] { return first.done(); }));

  ASSERT_TRUE(first.result->ok());
  ASSERT_TRUE(second.result->ok());
  EXPECT_EQ(first.result->value(), "first-result");
  EXPECT_EQ(second.result->value(), "second-result");
  EXPECT_EQ(first.calls, 1);
  EXPECT_EQ(second.calls, 1);
}

TEST_F(QmpClientTest, EventsGoToTheEventHandlerNotToReplies) {
  auto client = StartReadyClient();
  std::vector<json> events;
  client->SetEventHandler([&](const json& event) { events.push_back(event); });

  ReplySlot slot;
  client->Execute("stop", nullptr, slot.Callback());
  ASSERT_TRUE(Received(2));
  const json stop_event = {{"event", "STOP"}, {"timestamp", {{"seconds", 1}, {"microseconds", 2}}}};
  server_->Send(stop_event);
  // An event that carries an "id"-like field in its data must not complete a call.
  server_->Send({{"event", "JOB_STATUS_CHANGE"}, {"data", {{"id", Request(1).at("id")}}}});
  server_->Reply(Request(1).at("id"), json::object());
  ASSERT_TRUE(RunUntil([&] { return slot.done(); }));
  ASSERT_TRUE(slot.result->ok());
  EXPECT_EQ(slot.result->value(), json::object());
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0], stop_event);
  EXPECT_EQ(events[1].at("event"), "JOB_STATUS_CHANGE");

  // Events with no call pending still arrive; the handler may be replaced.
  std::vector<std::string> names;
  client->SetEventHandler(
      [&](const json& event) { names.push_back(event.at("event").get<std::string>()); });
  server_->Send({{"event", "RESUME"}});
  ASSERT_TRUE(RunUntil([&] { return !names.empty(); }));
  EXPECT_EQ(names, std::vector<std::string>{"RESUME"});
  EXPECT_EQ(events.size(), 2u);
  EXPECT_EQ(slot.calls, 1);
}

TEST_F(QmpClientTest, ErrorRepliesBecomeStatusWithClassAndDesc) {
  auto client = StartReadyClient();
  ReplySlot not_found, generic, inactive;
  client->Execute("no-such-command", nullptr, not_found.Callback());
  client->Execute("device_del", json{{"id", "x"}}, generic.Callback());
  client->Execute("block_resize", nullptr, inactive.Callback());
  ASSERT_TRUE(Received(4));
  server_->Send(
      {{"error",
        {{"class", "CommandNotFound"}, {"desc", "The command no-such-command has not been found"}}},
       {"id", Request(1).at("id")}});
  server_->Send({{"error", {{"class", "GenericError"}, {"desc", "Device 'x' not found"}}},
                 {"id", Request(2).at("id")}});
  server_->Send({{"error", {{"class", "DeviceNotActive"}, {"desc", "No medium"}}},
                 {"id", Request(3).at("id")}});
  ASSERT_TRUE(RunUntil([&] { return not_found.done() && generic.done() && inactive.done(); }));

  ASSERT_FALSE(not_found.result->ok());
  EXPECT_EQ(not_found.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(not_found.status().message().find("CommandNotFound"), std::string::npos)
      << not_found.status().ToString();
  EXPECT_NE(not_found.status().message().find("The command no-such-command has not been found"),
            std::string::npos);
  EXPECT_NE(not_found.status().message().find("'no-such-command'"), std::string::npos);

  ASSERT_FALSE(generic.result->ok());
  EXPECT_EQ(generic.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(generic.status().message().find("GenericError: Device 'x' not found"),
            std::string::npos)
      << generic.status().ToString();

  ASSERT_FALSE(inactive.result->ok());
  EXPECT_EQ(inactive.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(inactive.status().message().find("DeviceNotActive: No medium"), std::string::npos);

  // The connection is still usable.
  EXPECT_TRUE(client->IsReady());
}

TEST_F(QmpClientTest, CommandTimeoutThenLateReplyIsDropped) {
  auto client = StartReadyClient();
  ReplySlot slow;
  client->Execute("slow", nullptr, slow.Callback(), 20ms);
  ASSERT_TRUE(Received(2));
  const json slow_id = Request(1).at("id");
  ASSERT_TRUE(RunUntil([&] { return slow.done(); }));
  ASSERT_FALSE(slow.result->ok());
  EXPECT_EQ(slow.status().code(), StatusCode::kDeadlineExceeded) << slow.status().ToString();
  EXPECT_NE(slow.status().message().find("'slow'"), std::string::npos);
  EXPECT_TRUE(client->IsReady());

  // A new call is pending when the late reply arrives: it must not take it.
  ReplySlot next;
  client->Execute("next", nullptr, next.Callback());
  ASSERT_TRUE(Received(3));
  EXPECT_NE(Request(2).at("id"), slow_id);
  server_->Reply(slow_id, "late");
  server_->Reply(Request(2).at("id"), "on time");
  ASSERT_TRUE(RunUntil([&] { return next.done(); }));
  ASSERT_TRUE(next.result->ok());
  EXPECT_EQ(next.result->value(), "on time");
  EXPECT_EQ(slow.calls, 1);
  EXPECT_EQ(next.calls, 1);
  EXPECT_TRUE(client->IsReady());
}

TEST_F(QmpClientTest, DefaultCommandTimeoutComesFromOptions) {
  QmpClient::Options options;
  options.command_timeout = 20ms;
  auto client = StartReadyClient(options);
  ReplySlot slot;
  client->Execute("slow", nullptr, slot.Callback());
  ASSERT_TRUE(RunUntil([&] { return slot.done(); }));
  EXPECT_EQ(slot.status().code(), StatusCode::kDeadlineExceeded);
}

TEST_F(QmpClientTest, GreetingTimeout) {
  QmpClient::Options options;
  options.greeting_timeout = 20ms;
  auto client = StartClient(options);
  int disconnects = 0;
  client->SetDisconnectHandler([&](Status) { ++disconnects; });
  ASSERT_TRUE(RunUntil([&] { return ready_calls_ > 0; }));
  EXPECT_EQ(ready_status_.code(), StatusCode::kDeadlineExceeded) << ready_status_.ToString();
  EXPECT_FALSE(client->IsReady());
  // The client closed its end; the server sees EOF.
  ASSERT_TRUE(RunUntil([&] { return server_->eof(); }));
  EXPECT_TRUE(Drain());
  EXPECT_EQ(ready_calls_, 1);
  EXPECT_EQ(disconnects, 0) << "handshake failures go to on_ready only";
  EXPECT_EQ(client.use_count(), 1);
}

TEST_F(QmpClientTest, HandshakeTimeoutWhenCapabilitiesAreNeverAcknowledged) {
  QmpClient::Options options;
  options.greeting_timeout = 20ms;
  auto client = StartClient(options);
  server_->SendGreeting();
  ASSERT_TRUE(Received(1));
  ASSERT_TRUE(RunUntil([&] { return ready_calls_ > 0; }));
  EXPECT_EQ(ready_status_.code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(ready_status_.message().find("qmp_capabilities"), std::string::npos);
}

TEST_F(QmpClientTest, BadGreetingFailsTheHandshake) {
  auto client = StartClient();
  server_->Send({{"return", json::object()}, {"id", 1}});
  ASSERT_TRUE(RunUntil([&] { return ready_calls_ > 0; }));
  EXPECT_EQ(ready_status_.code(), StatusCode::kInvalidArgument) << ready_status_.ToString();
  EXPECT_NE(ready_status_.message().find("greeting"), std::string::npos);
  ASSERT_TRUE(RunUntil([&] { return server_->eof(); }));
  EXPECT_TRUE(server_->received().empty()) << "qmp_capabilities sent without a greeting";
}

TEST_F(QmpClientTest, GreetingWhoseQmpMemberIsNotAnObjectIsRejected) {
  auto client = StartClient();
  server_->Send({{"QMP", "hello"}});
  ASSERT_TRUE(RunUntil([&] { return ready_calls_ > 0; }));
  EXPECT_EQ(ready_status_.code(), StatusCode::kInvalidArgument) << ready_status_.ToString();
}

// QEMU 7.2 can emit an event before the greeting (server=on,wait=off start-up
// race); it is delivered and the handshake proceeds.
TEST_F(QmpClientTest, EventBeforeGreetingIsDeliveredAndHandshakeContinues) {
  auto client = StartClient();
  std::vector<json> events;
  client->SetEventHandler([&](const json& event) { events.push_back(event); });
  server_->Send({{"timestamp", {{"seconds", 1}, {"microseconds", 0}}}, {"event", "RESUME"}});
  server_->SendGreeting();
  ASSERT_TRUE(Received(1));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].at("event"), "RESUME");
  EXPECT_EQ(ready_calls_, 0);
  EXPECT_EQ(Request(0).at("execute"), "qmp_capabilities");
  server_->Reply(Request(0).at("id"), json::object());
  ASSERT_TRUE(RunUntil([&] { return ready_calls_ > 0; }));
  EXPECT_TRUE(ready_status_.ok()) << ready_status_.ToString();
}

TEST_F(QmpClientTest, RefusedCapabilitiesFailTheHandshake) {
  auto client = StartClient();
  server_->SendGreeting();
  ASSERT_TRUE(Received(1));
  server_->Send(
      {{"error", {{"class", "GenericError"}, {"desc", "nope"}}}, {"id", Request(0).at("id")}});
  ASSERT_TRUE(RunUntil([&] { return ready_calls_ > 0; }));
  EXPECT_EQ(ready_status_.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(ready_status_.message().find("GenericError: nope"), std::string::npos);
  EXPECT_FALSE(client->IsReady());
}

TEST_F(QmpClientTest, PeerCloseDuringHandshakeIsUnavailable) {
  auto client = StartClient();
  server_->Close();
  ASSERT_TRUE(RunUntil([&] { return ready_calls_ > 0; }));
  EXPECT_EQ(ready_status_.code(), StatusCode::kUnavailable);
}

TEST_F(QmpClientTest, DisconnectFailsPendingCallsAndNotifiesOnce) {
  auto client = StartReadyClient();
  int disconnects = 0;
  Status disconnect_status;
  client->SetDisconnectHandler([&](Status status) {
    ++disconnects;
    disconnect_status = status;
  });
  ReplySlot a, b;
  client->Execute("a", nullptr, a.Callback());
  client->Execute("b", nullptr, b.Callback(), 60s);
  ASSERT_TRUE(Received(3));
  server_->Close();
  ASSERT_TRUE(RunUntil([&] { return disconnects > 0; }));
  // Pending calls fail before the disconnect handler runs.
  ASSERT_TRUE(a.done());
  ASSERT_TRUE(b.done());
  EXPECT_EQ(a.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(b.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(a.status().message().find("QMP connection closed"), std::string::npos)
      << a.status().ToString();
  EXPECT_EQ(disconnect_status.code(), StatusCode::kUnavailable);
  EXPECT_FALSE(client->IsReady());

  // Later calls fail with FailedPrecondition, and nothing runs twice.
  ReplySlot after;
  client->Execute("after", nullptr, after.Callback());
  EXPECT_FALSE(after.done()) << "must be posted, not called re-entrantly";
  ASSERT_TRUE(RunUntil([&] { return after.done(); }));
  EXPECT_EQ(after.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Drain()) << "the 60 s timer must have been cancelled";
  EXPECT_EQ(disconnects, 1);
  EXPECT_EQ(a.calls, 1);
  EXPECT_EQ(b.calls, 1);
  EXPECT_EQ(client.use_count(), 1);
}

TEST_F(QmpClientTest, OversizeLineIsResourceExhausted) {
  QmpClient::Options options;
  options.max_message_bytes = 1024;
  auto client = StartReadyClient(options);
  int disconnects = 0;
  Status disconnect_status;
  client->SetDisconnectHandler([&](Status status) {
    ++disconnects;
    disconnect_status = status;
  });
  ReplySlot pending;
  client->Execute("a", nullptr, pending.Callback());
  ASSERT_TRUE(Received(2));

  // A line of exactly the limit is accepted.
  json event = {{"event", "X"}, {"data", ""}};
  const size_t overhead = event.dump().size();
  event["data"] = std::string(1024 - overhead, 'p');
  ASSERT_EQ(event.dump().size(), 1024u);
  std::vector<json> events;
  client->SetEventHandler([&](const json& e) { events.push_back(e); });
  server_->SendRaw(event.dump() + "\n");
  ASSERT_TRUE(RunUntil([&] { return !events.empty(); }));
  EXPECT_TRUE(client->IsReady());

  // A longer one, not even terminated, is not.
  server_->SendRaw(std::string(4000, ' '));
  ASSERT_TRUE(RunUntil([&] { return disconnects > 0; }));
  EXPECT_EQ(disconnect_status.code(), StatusCode::kResourceExhausted)
      << disconnect_status.ToString();
  ASSERT_TRUE(pending.done());
  EXPECT_EQ(pending.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(pending.status().message().find("limit"), std::string::npos);
  ASSERT_TRUE(RunUntil([&] { return server_->eof(); }));
}

TEST_F(QmpClientTest, OversizeTerminatedLineIsResourceExhausted) {
  QmpClient::Options options;
  options.max_message_bytes = 100;
  auto client = StartClient(options);
  // 101 bytes and a newline, delivered in a single read.
  server_->SendRaw(std::string(101, 'x') + "\n");
  ASSERT_TRUE(RunUntil([&] { return ready_calls_ > 0; }));
  EXPECT_EQ(ready_status_.code(), StatusCode::kResourceExhausted) << ready_status_.ToString();
}

TEST_F(QmpClientTest, MalformedJsonClosesWithInvalidArgument) {
  auto client = StartReadyClient();
  int disconnects = 0;
  Status disconnect_status;
  client->SetDisconnectHandler([&](Status status) {
    ++disconnects;
    disconnect_status = status;
  });
  ReplySlot pending;
  client->Execute("a", nullptr, pending.Callback());
  ASSERT_TRUE(Received(2));
  server_->SendRaw("{\"return\": {}, \"id\": \x01 nope\r\n");
  ASSERT_TRUE(RunUntil([&] { return disconnects > 0; }));
  EXPECT_EQ(disconnect_status.code(), StatusCode::kInvalidArgument) << disconnect_status.ToString();
  EXPECT_NE(disconnect_status.message().find("malformed JSON"), std::string::npos);
  ASSERT_TRUE(pending.done());
  EXPECT_EQ(pending.status().code(), StatusCode::kUnavailable);
  ASSERT_TRUE(RunUntil([&] { return server_->eof(); }));
  EXPECT_EQ(disconnects, 1);
}

TEST_F(QmpClientTest, MessageThatIsNeitherReplyNorEventClosesTheConnection) {
  auto client = StartReadyClient();
  Status disconnect_status;
  client->SetDisconnectHandler([&](Status status) { disconnect_status = status; });
  server_->Send({{"surprise", true}});
  ASSERT_TRUE(RunUntil([&] { return !disconnect_status.ok(); }));
  EXPECT_EQ(disconnect_status.code(), StatusCode::kInvalidArgument);
}

TEST_F(QmpClientTest, NonObjectMessageClosesTheConnection) {
  auto client = StartReadyClient();
  Status disconnect_status;
  client->SetDisconnectHandler([&](Status status) { disconnect_status = status; });
  server_->SendRaw("[1, 2, 3]\n");
  ASSERT_TRUE(RunUntil([&] { return !disconnect_status.ok(); }));
  EXPECT_EQ(disconnect_status.code(), StatusCode::kInvalidArgument);
}

TEST_F(QmpClientTest, UnknownIdIsIgnored) {
  auto client = StartReadyClient();
  ReplySlot slot;
  client->Execute("a", nullptr, slot.Callback());
  ASSERT_TRUE(Received(2));
  server_->Reply(987654, "stray");
  server_->Reply("not-a-number", "stray");
  // QEMU omits the id when it cannot parse a request.
  server_->Send({{"error", {{"class", "GenericError"}, {"desc", "JSON parse error"}}}});
  server_->Reply(Request(1).at("id"), "mine");
  ASSERT_TRUE(RunUntil([&] { return slot.done(); }));
  ASSERT_TRUE(slot.result->ok());
  EXPECT_EQ(slot.result->value(), "mine");
  EXPECT_TRUE(client->IsReady());
}

TEST_F(QmpClientTest, ExecuteBeforeReadyFailsWithoutReentrancy) {
  auto idle = QmpClient::Create(io_);
  ReplySlot before_start;
  idle->Execute("query-status", nullptr, before_start.Callback());
  EXPECT_FALSE(before_start.done());
  ASSERT_TRUE(RunUntil([&] { return before_start.done(); }));
  EXPECT_EQ(before_start.status().code(), StatusCode::kFailedPrecondition);

  // During the handshake, too; nothing is sent.
  auto client = StartClient();
  ReplySlot during_handshake;
  client->Execute("query-status", nullptr, during_handshake.Callback());
  EXPECT_FALSE(during_handshake.done());
  ASSERT_TRUE(RunUntil([&] { return during_handshake.done(); }));
  EXPECT_EQ(during_handshake.status().code(), StatusCode::kFailedPrecondition);
  server_->SendGreeting();
  ASSERT_TRUE(Received(1));
  server_->Reply(Request(0).at("id"), json::object());
  ASSERT_TRUE(RunUntil([&] { return ready_calls_ == 1; }));
  ReplySlot probe;
  client->Execute("probe", nullptr, probe.Callback());
  ASSERT_TRUE(Received(2));
  EXPECT_EQ(Request(1).at("execute"), "probe") << "query-status must not have been sent";
}

TEST_F(QmpClientTest, BadArgumentsAreRejected) {
  auto client = StartReadyClient();
  ReplySlot not_object, empty_name, bad_utf8;
  client->Execute("x", json::array({1}), not_object.Callback());
  client->Execute("", nullptr, empty_name.Callback());
  client->Execute("x", json{{"s", std::string("\xff\xfe")}}, bad_utf8.Callback());
  EXPECT_FALSE(not_object.done() || empty_name.done() || bad_utf8.done());
  ASSERT_TRUE(RunUntil([&] { return not_object.done() && empty_name.done() && bad_utf8.done(); }));
  EXPECT_EQ(not_object.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(empty_name.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad_utf8.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(client->IsReady());
}

TEST_F(QmpClientTest, CloseCancelsPendingCallsWithoutDisconnectHandler) {
  auto client = StartReadyClient();
  int disconnects = 0;
  client->SetDisconnectHandler([&](Status) { ++disconnects; });
  ReplySlot pending;
  client->Execute("a", nullptr, pending.Callback());
  ASSERT_TRUE(Received(2));
  client->Close();
  EXPECT_FALSE(pending.done()) << "must be posted, not called re-entrantly";
  ASSERT_TRUE(RunUntil([&] { return pending.done(); }));
  EXPECT_EQ(pending.status().code(), StatusCode::kCancelled);
  ASSERT_TRUE(RunUntil([&] { return server_->eof(); }));
  client->Close();  // idempotent
  server_->Close();
  EXPECT_TRUE(Drain());
  EXPECT_EQ(disconnects, 0);
  EXPECT_EQ(pending.calls, 1);
  EXPECT_EQ(client.use_count(), 1);
}

TEST_F(QmpClientTest, CloseDuringHandshakeCancelsOnReady) {
  auto client = StartClient();
  client->Close();
  EXPECT_EQ(ready_calls_, 0);
  ASSERT_TRUE(RunUntil([&] { return ready_calls_ > 0; }));
  EXPECT_EQ(ready_status_.code(), StatusCode::kCancelled);
}

TEST_F(QmpClientTest, CloseFromInsideEventHandler) {
  auto client = StartReadyClient();
  int events = 0;
  // The handler captures the client: Close() must drop it to break the cycle.
  client->SetEventHandler([&events, client](const json&) {
    ++events;
    client->Close();
  });
  server_->Send({{"event", "A"}});
  server_->Send({{"event", "B"}});
  ASSERT_TRUE(RunUntil([&] { return server_->eof(); }));
  server_->Close();
  EXPECT_TRUE(Drain());
  EXPECT_EQ(events, 1);
  EXPECT_EQ(client.use_count(), 1);
}

TEST_F(QmpClientTest, StartTwiceFails) {
  auto client = StartReadyClient();
  Status second;
  bool called = false;
  client->Start(stream_protocol::socket(io_), [&](Status s) {
    called = true;
    second = s;
  });
  EXPECT_FALSE(called);
  ASSERT_TRUE(RunUntil([&] { return called; }));
  EXPECT_EQ(second.code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(client->IsReady());
}

// QmpSyncClient against a scripted server thread on a unix socket.
class QmpSyncClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/qmp_sync_test.XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    path_ = dir_ + "/qmp.sock";
  }
  // The test body's QmpSyncClient is gone by now, so a server thread still
  // blocked in a read sees EOF and exits.
  void TearDown() override {
    if (server_thread_.joinable()) server_thread_.join();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  std::string dir_;
  std::string path_;
  // Shared with the server thread; members so that they outlive it even when
  // an ASSERT returns from the test body early.
  asio::io_context server_io_;
  std::optional<stream_protocol::acceptor> acceptor_;
  std::vector<json> seen_;  // written by the server thread, read after join()
  std::thread server_thread_;
};

TEST_F(QmpSyncClientTest, ConnectExecuteAndErrors) {
  acceptor_.emplace(server_io_, stream_protocol::endpoint(path_));
  server_thread_ = std::thread([this] {
    std::vector<json>& seen = seen_;
    try {
      stream_protocol::socket socket = acceptor_->accept();
      asio::streambuf buffer;
      auto read_request = [&] {
        asio::read_until(socket, buffer, '\n');
        std::istream in(&buffer);
        std::string line;
        std::getline(in, line);
        seen.push_back(json::parse(line));
        return seen.back();
      };
      auto send = [&](const json& j) { asio::write(socket, asio::buffer(j.dump() + "\r\n")); };
      asio::write(socket, asio::buffer(std::string(kGreeting) + "\r\n"));
      json caps = read_request();
      send({{"return", json::object()}, {"id", caps["id"]}});
      json status = read_request();
      send({{"event", "RESUME"}});  // dropped by the sync client
      send({{"return", {{"status", "running"}, {"running", true}}}, {"id", status["id"]}});
      json bogus = read_request();
      send({{"error",
             {{"class", "CommandNotFound"}, {"desc", "The command bogus has not been found"}}},
            {"id", bogus["id"]}});
      json quit = read_request();
      send({{"return", json::object()}, {"id", quit["id"]}});
    } catch (const std::exception& e) {
      ADD_FAILURE() << "server: " << e.what();
    }
  });

  auto client = QmpSyncClient::Connect(path_, 5s);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto status = client->Execute("query-status");
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_EQ(status->at("status"), "running");
  auto bogus = client->Execute("bogus", json{{"a", 1}});
  ASSERT_FALSE(bogus.ok());
  EXPECT_EQ(bogus.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bogus.status().message().find("CommandNotFound"), std::string::npos);
  auto quit = client->Execute("quit");
  EXPECT_TRUE(quit.ok()) << quit.status().ToString();
  server_thread_.join();
  // The server has closed: the next call fails cleanly.
  auto after = client->Execute("query-status", nullptr, 2s);
  ASSERT_FALSE(after.ok());
  EXPECT_TRUE(after.status().code() == StatusCode::kUnavailable ||
              after.status().code() == StatusCode::kFailedPrecondition)
      << after.status().ToString();

  ASSERT_EQ(seen_.size(), 4u);
  EXPECT_EQ(seen_[1].at("execute"), "query-status");
  EXPECT_FALSE(seen_[1].contains("arguments"));
  EXPECT_EQ(seen_[2].at("arguments"), (json{{"a", 1}}));

  // Moving keeps the connection state; the moved-from object is inert.
  QmpSyncClient moved = std::move(client).value();
  auto again = moved.Execute("query-status", nullptr, 1s);
  EXPECT_FALSE(again.ok());
}

TEST_F(QmpSyncClientTest, ConnectErrors) {
  auto missing = QmpSyncClient::Connect(path_, 1s);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kUnavailable) << missing.status().ToString();

  auto too_long = QmpSyncClient::Connect("/tmp/" + std::string(200, 'x'), 1s);
  ASSERT_FALSE(too_long.ok());
  EXPECT_EQ(too_long.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(QmpSyncClientTest, ConnectTimesOutWithoutGreeting) {
  acceptor_.emplace(server_io_, stream_protocol::endpoint(path_));
  // Never accepted: the kernel completes the connection, nobody greets.
  auto client = QmpSyncClient::Connect(path_, 50ms);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), StatusCode::kDeadlineExceeded) << client.status().ToString();
}

}  // namespace
}  // namespace blackbox
