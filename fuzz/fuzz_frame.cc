// libFuzzer target: ParseFrame() alone. The input is one Ethernet frame (no
// stream prefix, no control bytes), so mutations go straight into headers.
// Checks the properties of every successful parse (fuzz_check.h), the Community
// ID of IP frames, and MacAddr::Parse on the raw input.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "fuzz/fuzz_check.h"
#include "switch/frame.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace blackbox;
  const std::span<const uint8_t> frame(data, size);
  StatusOr<ParsedFrame> parsed = ParseFrame(frame);
  if (parsed.ok()) {
    fuzz::CheckParsedFrame(frame, *parsed);
    fuzz::CheckCommunityId(*parsed);
  } else {
    FUZZ_CHECK(parsed.status().code() == StatusCode::kInvalidArgument);
    FUZZ_CHECK(!parsed.status().message().empty());
  }

  // MacAddr::Parse accepts exactly 17 characters and round-trips (lower-cased).
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  StatusOr<MacAddr> mac = MacAddr::Parse(text);
  if (mac.ok()) {
    FUZZ_CHECK(size == 17);
    const std::string back = mac->ToString();
    for (size_t i = 0; i < 17; ++i) {
      const char c = text[i];
      FUZZ_CHECK(back[i] == ((c >= 'A' && c <= 'F') ? static_cast<char>(c - 'A' + 'a') : c));
    }
  }
  return 0;
}
