// Decimal numbers in untrusted text (HTTP heads, ONNX external-data
// entries): digits only, with a chosen fate for numbers past 64 bits.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>

namespace bitinc::core {

// What a number too large for 64 bits becomes.
enum class Overflow { refuse, saturate };

// Decimal digits to a number; nothing if `text` is empty or not all digits
// (no sign, no spaces), or (Overflow::refuse) if the number does not fit in
// 64 bits. An HTTP byte range may name positions past any file (saturate:
// it is then cut to the file); a length, a status or an ONNX external-data
// offset may not.
inline std::optional<std::uint64_t> parse_decimal(std::string_view text, Overflow overflow) {
    if (text.empty()) return std::nullopt;
    constexpr std::uint64_t most = std::numeric_limits<std::uint64_t>::max();
    std::uint64_t value = 0;
    for (const char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        const auto digit = std::uint64_t(c - '0');
        if (value > (most - digit) / 10) {
            if (overflow == Overflow::refuse) return std::nullopt;
            value = most;
        } else {
            value = value * 10 + digit;
        }
    }
    return value;
}

}  // namespace bitinc::core
