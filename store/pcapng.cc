#include "store/pcapng.h"

#include <cerrno>
#include <string_view>
#include <utility>

namespace blackbox {
namespace {

constexpr uint32_t kSectionHeaderBlock = 0x0A0D0D0A;
constexpr uint32_t kInterfaceDescriptionBlock = 0x00000001;
constexpr uint32_t kEnhancedPacketBlock = 0x00000006;
constexpr uint32_t kByteOrderMagic = 0x1A2B3C4D;
constexpr uint16_t kLinkTypeEthernet = 1;

constexpr uint16_t kOptEndOfOpt = 0;
constexpr uint16_t kOptComment = 1;
constexpr uint16_t kShbUserAppl = 4;
constexpr uint16_t kIfName = 2;
constexpr uint16_t kIfDescription = 3;
constexpr uint16_t kIfTsresol = 9;
constexpr uint8_t kTsresolNanoseconds = 9;

void PutU16(std::string* out, uint16_t v) {
  out->push_back(static_cast<char>(v & 0xff));
  out->push_back(static_cast<char>(v >> 8));
}

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void PutU64(std::string* out, uint64_t v) {
  PutU32(out, static_cast<uint32_t>(v));
  PutU32(out, static_cast<uint32_t>(v >> 32));
}

void PadTo32Bits(std::string* out) {
  while (out->size() % 4 != 0) out->push_back('\0');
}

// Cuts `s` to at most kPcapngMaxOptionBytes without splitting a UTF-8 sequence.
std::string_view ClampOption(std::string_view s) {
  if (s.size() <= kPcapngMaxOptionBytes) return s;
  size_t n = kPcapngMaxOptionBytes;
  while (n > 0 && (static_cast<uint8_t>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

void PutOption(std::string* out, uint16_t code, std::string_view value) {
  value = ClampOption(value);
  PutU16(out, code);
  PutU16(out, static_cast<uint16_t>(value.size()));
  out->append(value);
  PadTo32Bits(out);
}

void PutEndOfOpt(std::string* out) {
  PutU16(out, kOptEndOfOpt);
  PutU16(out, 0);
}

// A block under construction: type and a placeholder total length.
std::string StartBlock(uint32_t type) {
  std::string block;
  PutU32(&block, type);
  PutU32(&block, 0);
  return block;
}

}  // namespace

PcapngWriter::PcapngWriter(std::ostream* out) : out_(out), description_("stream") {
  WriteSectionHeader();
}

PcapngWriter::PcapngWriter(std::unique_ptr<std::ofstream> file, std::string path)
    : file_(std::move(file)), out_(file_.get()), description_(std::move(path)) {
  WriteSectionHeader();
}

StatusOr<std::unique_ptr<PcapngWriter>> PcapngWriter::OpenFile(const std::string& path) {
  auto file = std::make_unique<std::ofstream>(path, std::ios::binary | std::ios::trunc);
  if (!file->is_open()) return ErrnoError("cannot create pcapng file " + path, errno);
  std::unique_ptr<PcapngWriter> writer(new PcapngWriter(std::move(file), path));
  RETURN_IF_ERROR(writer->status_);
  return writer;
}

void PcapngWriter::WriteSectionHeader() {
  std::string block = StartBlock(kSectionHeaderBlock);
  PutU32(&block, kByteOrderMagic);
  PutU16(&block, 1);             // major version
  PutU16(&block, 0);             // minor version
  PutU64(&block, ~uint64_t{0});  // section length: -1, not specified
  PutOption(&block, kShbUserAppl, "Blackbox");
  PutEndOfOpt(&block);
  EmitBlock(&block);
}

uint32_t PcapngWriter::AddInterface(const std::string& name, const std::string& description) {
  std::string block = StartBlock(kInterfaceDescriptionBlock);
  PutU16(&block, kLinkTypeEthernet);
  PutU16(&block, 0);                     // reserved
  PutU32(&block, kPcapngMaxFrameBytes);  // snaplen
  PutOption(&block, kIfName, name);
  if (!description.empty()) PutOption(&block, kIfDescription, description);
  const char tsresol = static_cast<char>(kTsresolNanoseconds);
  PutOption(&block, kIfTsresol, std::string_view(&tsresol, 1));
  PutEndOfOpt(&block);
  EmitBlock(&block);
  return interface_count_++;
}

Status PcapngWriter::WritePacket(uint32_t interface_id, int64_t wall_ns,
                                 std::span<const uint8_t> frame, const std::string& comment,
                                 std::optional<uint32_t> original_length) {
  if (interface_id >= interface_count_) {
    return InvalidArgument("pcapng: unknown interface id " + std::to_string(interface_id) + " (" +
                           std::to_string(interface_count_) + " interfaces)");
  }
  if (wall_ns < 0) return InvalidArgument("pcapng: negative timestamp " + std::to_string(wall_ns));
  if (frame.size() > kPcapngMaxFrameBytes) {
    return InvalidArgument("pcapng: frame of " + std::to_string(frame.size()) +
                           " bytes exceeds the " + std::to_string(kPcapngMaxFrameBytes) +
                           "-byte limit");
  }
  const uint32_t captured = static_cast<uint32_t>(frame.size());
  const uint32_t original = original_length.value_or(captured);
  if (original < captured) {
    return InvalidArgument("pcapng: original length " + std::to_string(original) +
                           " is below the captured length " + std::to_string(captured));
  }
  if (finished_) return FailedPrecondition("pcapng: WritePacket after Finish");

  const uint64_t ts = static_cast<uint64_t>(wall_ns);
  std::string block = StartBlock(kEnhancedPacketBlock);
  block.reserve(64 + frame.size() + comment.size());
  PutU32(&block, interface_id);
  PutU32(&block, static_cast<uint32_t>(ts >> 32));
  PutU32(&block, static_cast<uint32_t>(ts));
  PutU32(&block, captured);
  PutU32(&block, original);
  block.append(reinterpret_cast<const char*>(frame.data()), frame.size());
  PadTo32Bits(&block);
  if (!comment.empty()) {
    PutOption(&block, kOptComment, comment);
    PutEndOfOpt(&block);
  }
  EmitBlock(&block);
  return status_;
}

void PcapngWriter::EmitBlock(std::string* block) {
  PutU32(block, 0);  // trailing total length, patched below with the leading one
  const uint32_t total = static_cast<uint32_t>(block->size());
  for (int i = 0; i < 4; ++i) {
    const char byte = static_cast<char>((total >> (8 * i)) & 0xff);
    (*block)[4 + i] = byte;
    (*block)[block->size() - 4 + i] = byte;
  }
  if (!status_.ok() || finished_) return;
  out_->write(block->data(), static_cast<std::streamsize>(block->size()));
  if (!out_->good()) status_ = IOError("pcapng: write to " + description_ + " failed");
}

Status PcapngWriter::Finish() {
  if (finished_) return status_;
  finished_ = true;
  if (status_.ok()) {
    out_->flush();
    if (!out_->good()) status_ = IOError("pcapng: flush of " + description_ + " failed");
  }
  if (file_ != nullptr) {
    file_->close();
    if (file_->fail() && status_.ok()) {
      status_ = IOError("pcapng: close of " + description_ + " failed");
    }
  }
  return status_;
}

}  // namespace blackbox
