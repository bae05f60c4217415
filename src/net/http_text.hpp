// Character-level pieces of HTTP syntax shared by the server's request
// parser and the client's response parser (RFC 9110 §5.6).
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>

namespace bitinc::http_text {

// tchar: the characters of a token (method, header name, option).
inline bool is_token_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

inline char ascii_lower(char c) {
    return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c;
}

// Header names and tokens compare without regard to ASCII case.
inline bool equals_ignoring_case(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return ascii_lower(x) == ascii_lower(y);
           });
}

// `text` without leading and trailing `characters` (by default the optional
// whitespace of RFC 9110: spaces and tabs).
inline std::string_view trim(std::string_view text, std::string_view characters = " \t") {
    const std::size_t first = text.find_first_not_of(characters);
    if (first == std::string_view::npos) return {};
    return text.substr(first, text.find_last_not_of(characters) - first + 1);
}

// What a number too large for 64 bits becomes.
enum class Overflow { refuse, saturate };

// Decimal digits to a number; nothing if `text` is empty or not all digits,
// or (Overflow::refuse) if the number does not fit in 64 bits. A byte range
// may name positions past any file (saturate: it is then cut to the file);
// a length or status may not.
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

}  // namespace bitinc::http_text
