#include "recorder/vm_spec.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>

#include "common/hash.h"
#include "common/process.h"

namespace blackbox {
namespace {

const char* kGood = R"(
name: web-1
kernel: guest/vmlinuz
initrd: /abs/initrd.img
append: console=ttyS0 bb.role=cpu
memory: 256M
disks:
  - name: data
    base: data.raw
  - name: scratch
    size: 16M
nics:
  - name: n0
    mac: 52:54:00:12:34:56
    socket: /run/bb/port0.sock
)";

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

TEST(VmSpecTest, ParsesAGoodSpecAndResolvesPaths) {
  auto spec = ParseVmSpec(kGood, "/specs");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->name, "web-1");
  EXPECT_EQ(spec->kernel, "/specs/guest/vmlinuz");
  EXPECT_EQ(spec->initrd, "/abs/initrd.img");
  EXPECT_EQ(spec->memory_bytes, 256u << 20);
  ASSERT_EQ(spec->disks.size(), 2u);
  EXPECT_EQ(spec->disks[0].base, "/specs/data.raw");
  EXPECT_EQ(spec->disks[0].base_format, "raw");
  EXPECT_EQ(spec->disks[1].size_bytes, 16u << 20);
  ASSERT_EQ(spec->nics.size(), 1u);
  EXPECT_EQ(spec->nics[0].mac, "52:54:00:12:34:56");
}

struct BadCase {
  const char* yaml;
  const char* expect;  // substring of the one-line error
};

TEST(VmSpecTest, RejectsBadSpecsNamingTheField) {
  const BadCase cases[] = {
      {"name: a\n", "kernel: is required"},
      {"kernel: k\n", "name: is required"},
      {"name: a\nkernel: k\nmemroy: 1G\n", "line 3: memroy: unknown key"},
      {"name: a\nkernel: k\nmemory: 9Z\n", "line 3: memory: '9Z' is not a size"},
      {"name: a\nkernel: k\nmemory: 1T\n", "memory: '1T' is outside"},
      {"name: a\nkernel: k\nmemory: 4M\n", "is outside 32M"},
      {"name: 'a b'\nkernel: k\n", "name: 'a b' must be"},
      {"name: a\nkernel: k\ndisks:\n  - name: d\n", "give exactly one of base"},
      {"name: a\nkernel: k\ndisks:\n  - name: d\n    size: 1M\n  - name: d\n    size: 1M\n",
       "not unique"},
      {"name: a\nkernel: k\nnics:\n  - name: n\n    mac: 01:00:5e:00:00:01\n", "multicast"},
      {"name: a\nkernel: k\nnics:\n  - name: n\n    mac: zz\n", "mac: 'zz' is not"},
      {"name: a\nkernel: k\nserial_ports: 9\n", "serial_ports: must be"},
      {"name: a\nkernel: k\npvpanic: yes please\n", "line 3: pvpanic: must be true or false"},
      {"name: a\nkernel: ${BB_SURELY_UNSET_VAR}/k\n", "BB_SURELY_UNSET_VAR is not set"},
      {"[1, 2", "spec line"},
      {"- a\n- b\n", "top level must be a mapping"},
  };
  for (const auto& c : cases) {
    auto spec = ParseVmSpec(c.yaml, "/d");
    ASSERT_FALSE(spec.ok()) << c.yaml;
    EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(spec.status().message().find(c.expect), std::string::npos)
        << "yaml:\n"
        << c.yaml << "\nerror: " << spec.status().message();
    EXPECT_EQ(spec.status().message().find('\n'), std::string::npos) << "one line";
  }
}

TEST(VmSpecTest, ExpandsEnvironmentVariables) {
  ::setenv("BB_TEST_GUEST", "/guest", 1);
  auto spec = ParseVmSpec("name: a\nkernel: ${BB_TEST_GUEST}/vmlinuz\n", "/d");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->kernel, "/guest/vmlinuz");
}

TEST(VmSpecTest, RecordAndReplayCommandLinesDifferOnlyInRrMode) {
  auto spec = ParseVmSpec(kGood, "/specs");
  ASSERT_TRUE(spec.ok());
  QemuRunPaths p;
  p.rr_log = "/r/rr.log";
  p.qmp_socket = "/r/qmp.sock";
  p.serial_file = "/r/serial.out";
  p.disk_overlays = {"/r/d0.qcow2", "/r/d1.qcow2"};
  p.state_image = "/r/state.qcow2";
  auto rec = BuildQemuArgs(*spec, RrMode::kRecord, p);
  auto rep = BuildQemuArgs(*spec, RrMode::kReplay, p);
  ASSERT_EQ(rec.size(), rep.size());
  int differences = 0;
  for (size_t i = 0; i < rec.size(); ++i) {
    if (rec[i] != rep[i]) {
      ++differences;
      EXPECT_EQ(rec[i], "shift=auto,rr=record,rrfile=/r/rr.log,rrsnapshot=init");
      EXPECT_EQ(rep[i], "shift=auto,rr=replay,rrfile=/r/rr.log,rrsnapshot=init");
    }
  }
  EXPECT_EQ(differences, 1);
  EXPECT_TRUE(Contains(rec, "-nodefaults"));
  EXPECT_TRUE(Contains(rec, "tcg"));
  EXPECT_TRUE(Contains(rec, "driver=blkreplay,if=none,image=data-file,id=data"));
  EXPECT_TRUE(Contains(rec, "file=/r/d0.qcow2,if=none,id=data-file,format=qcow2,discard=unmap"));
  EXPECT_TRUE(Contains(rec, "filter-replay,id=n0-replay,netdev=n0"));
  EXPECT_TRUE(Contains(rec, "stream,id=n0,server=off,addr.type=unix,addr.path=/run/bb/port0.sock"));
  EXPECT_TRUE(
      Contains(rec, "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"));
  EXPECT_TRUE(Contains(rec, "file,id=serial0,path=/r/serial.out"));
  EXPECT_TRUE(Contains(rec, "file=/r/state.qcow2,if=none,id=bb-state,format=qcow2"));
}

TEST(VmSpecTest, PlainModeHasNoReplayPieces) {
  auto spec = ParseVmSpec(kGood, "/specs");
  ASSERT_TRUE(spec.ok());
  QemuRunPaths p;
  p.disk_overlays = {"/r/d0.qcow2", "/r/d1.qcow2"};
  auto args = BuildQemuArgs(*spec, RrMode::kNone, p);
  for (const auto& a : args) {
    EXPECT_EQ(a.find("blkreplay"), std::string::npos);
    EXPECT_EQ(a.find("filter-replay"), std::string::npos);
    EXPECT_EQ(a.find("rr="), std::string::npos);
  }
}

TEST(VmSpecTest, PvpanicAddsTheDeviceAndLeavesThePanicToBlackbox) {
  auto plain = ParseVmSpec("name: a\nkernel: /k\n", "/d");
  auto with = ParseVmSpec("name: a\nkernel: /k\npvpanic: true\n", "/d");
  ASSERT_TRUE(plain.ok() && with.ok());
  EXPECT_FALSE(plain->pvpanic);
  EXPECT_TRUE(with->pvpanic);
  EXPECT_FALSE(Contains(BuildQemuArgs(*plain, RrMode::kRecord, {}), "pvpanic-pci,id=pvpanic"));
  for (RrMode mode : {RrMode::kRecord, RrMode::kReplay}) {
    auto args = BuildQemuArgs(*with, mode, {});
    auto dev = std::find(args.begin(), args.end(), "pvpanic-pci,id=pvpanic");
    ASSERT_NE(dev, args.end());
    EXPECT_EQ(*(dev - 1), "-device");
    auto action = std::find(args.begin(), args.end(), "panic=none");
    ASSERT_NE(action, args.end());
    EXPECT_EQ(*(action - 1), "-action");
  }
}

TEST(VmSpecTest, RamFileBacksThePcRamBlockWithSharedMemory) {
  auto spec = ParseVmSpec("name: a\nkernel: /k\nmemory: 128M\nmachine: q35\n", "/d");
  ASSERT_TRUE(spec.ok());
  QemuRunPaths p;
  EXPECT_TRUE(Contains(BuildQemuArgs(*spec, RrMode::kRecord, p), "q35"));
  p.ram_file = "/dev/shm/r";
  auto args = BuildQemuArgs(*spec, RrMode::kRecord, p);
  EXPECT_TRUE(Contains(args, "memory-backend-file,id=pc.ram,size=128M,mem-path=/dev/shm/r,share=on"));
  EXPECT_TRUE(Contains(args, "q35,memory-backend=pc.ram"));
  EXPECT_FALSE(Contains(args, "q35"));

  auto ram = GuestRamFile::Create("a", 1 << 20);
  ASSERT_TRUE(ram.ok()) << ram.status().ToString();
  const std::string path = ram->path();
  EXPECT_EQ(path, "/proc/self/fd/" + std::to_string(ram->fd()));
  // Close-on-exec here: only a child that is given it inherits it.
  EXPECT_TRUE(::fcntl(ram->fd(), F_GETFD) & FD_CLOEXEC);
  auto zeros = ram->Sha256Hex();
  ASSERT_TRUE(zeros.ok());
  EXPECT_EQ(*zeros, ToHex(Sha256Of(std::string(1 << 20, '\0'))));
  // What a child writes through the path it inherited is what gets hashed.
  auto child = ChildProcess::Spawn({"sh", "-c", "printf x >" + path}, "", {ram->fd()});
  ASSERT_TRUE(child.ok()) << child.status().ToString();
  auto st = child->Wait();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(*st, 0);
  auto written = ram->Sha256Hex();
  ASSERT_TRUE(written.ok());
  EXPECT_EQ(*written, ToHex(Sha256Of("x")));  // the shell's > truncates
  // A child not given the descriptor cannot reach it.
  auto other = ChildProcess::Spawn({"sh", "-c", "test -e " + path}, "");
  ASSERT_TRUE(other.ok());
  auto other_st = other->Wait();
  ASSERT_TRUE(other_st.ok());
  EXPECT_NE(*other_st, 0);
}

TEST(VmSpecTest, ParseSize) {
  EXPECT_EQ(ParseSize("256M"), 256ll << 20);
  EXPECT_EQ(ParseSize("1GiB"), 1ll << 30);
  EXPECT_EQ(ParseSize("4096"), 4096);
  EXPECT_EQ(ParseSize("-1M"), -1);
  EXPECT_EQ(ParseSize("M"), -1);
  EXPECT_EQ(ParseSize("99999999999999999999G"), -1);
}

}  // namespace
}  // namespace blackbox
