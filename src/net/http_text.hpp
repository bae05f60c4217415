// Character-level pieces of HTTP syntax shared by the server's request
// parser and the client's response parser (RFC 9110 §5.6).
#pragma once

#include <algorithm>
#include <string_view>

#include "core/decimal.hpp"

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

using core::Overflow;
using core::parse_decimal;

}  // namespace bitinc::http_text
