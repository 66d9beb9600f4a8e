#include "tests/e2e/e2e_util.h"

#include <openssl/evp.h>
#include <sys/wait.h>

#include <cstdlib>
#include <sstream>
#include <thread>

#include "common/hash.h"

namespace blackbox::e2e {

namespace {
std::string Env(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}
}  // namespace

std::string BlackboxBin() { return Env("BB_BIN", BB_DEFAULT_BIN); }
std::string Example(const std::string& name) {
  return Env("BB_EXAMPLES", BB_DEFAULT_EXAMPLES) + "/" + name;
}
std::string GuestDir() { return Env("BLACKBOX_GUEST_DIR", BB_DEFAULT_GUEST_DIR); }
std::string PatchedQemu() { return Env("BLACKBOX_QEMU", BB_DEFAULT_PATCHED_QEMU); }

void E2eTest::SetUp() {
  auto dir = TempDir::Create("bb-e2e");
  ASSERT_TRUE(dir.ok()) << dir.status().ToString();
  data_.emplace(std::move(*dir));
  // Example specs name the guest through this variable.
  ::setenv("BLACKBOX_GUEST_DIR", GuestDir().c_str(), 1);
  if (std::getenv("BB_KEEP_E2E")) data_->Keep();
}

CommandResult E2eTest::Blackbox(const std::vector<std::string>& args,
                                std::chrono::seconds timeout) {
  std::vector<std::string> argv = {BlackboxBin(), "--data", data()};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string out = data() + "/cmd-output.txt";
  ::unlink(out.c_str());
  CommandResult r;
  auto child = ChildProcess::Spawn(argv, out);
  if (!child.ok()) {
    r.output = child.status().ToString();
    return r;
  }
  auto status = child->Wait(timeout);
  if (!status.ok()) {
    child->Kill();
    r.output = "timed out: " + ShellJoin(argv);
    return r;
  }
  r.exit_code = WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
  auto text = ReadFileToString(out, 64 << 20);
  if (text.ok()) r.output = *text;
  return r;
}

ChildProcess E2eTest::StartBlackbox(const std::vector<std::string>& args,
                                    const std::string& output_file) {
  std::vector<std::string> argv = {BlackboxBin(), "--data", data()};
  argv.insert(argv.end(), args.begin(), args.end());
  auto child = ChildProcess::Spawn(argv, output_file);
  EXPECT_TRUE(child.ok()) << child.status().ToString();
  return std::move(*child);
}

nlohmann::json E2eTest::LatestRecording() {
  CommandResult ls = Blackbox({"ls", "--json"});
  EXPECT_EQ(ls.exit_code, 0) << ls.output;
  std::istringstream in(ls.output);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == '{') last = line;
  }
  if (last.empty()) {
    ADD_FAILURE() << "no recordings: " << ls.output;
    return nlohmann::json::object();
  }
  return nlohmann::json::parse(last);
}

bool WaitForText(const std::string& path, const std::string& needle, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto text = ReadFileToString(path, 64 << 20);
    if (text.ok() && text->find(needle) != std::string::npos) return true;
    // The guest prints at human pace; 50 ms keeps the wait cheap and prompt.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

std::string Md5Hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_md5(), nullptr);
  return ToHex(std::string_view(reinterpret_cast<const char*>(md), len));
}

std::map<std::string, nlohmann::json> E2eTest::RecordingsByVm() {
  CommandResult ls = Blackbox({"ls", "--json"});
  EXPECT_EQ(ls.exit_code, 0) << ls.output;
  std::map<std::string, nlohmann::json> out;
  std::istringstream in(ls.output);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] != '{') continue;
    auto j = nlohmann::json::parse(line);
    out[j["vm_name"].get<std::string>()] = j;  // ls lists oldest first: the newest wins
  }
  return out;
}

std::string E2eTest::Console(const std::string& id) {
  CommandResult r = Blackbox({"console", id});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return r.output;
}

std::string ReadFileOrEmpty(const std::string& path) {
  auto text = ReadFileToString(path, 64 << 20);
  return text.ok() ? *text : "";
}

}  // namespace blackbox::e2e
