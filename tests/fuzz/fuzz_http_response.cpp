// Fuzz target: the fetcher's reading of HTTP response heads (status line,
// Content-Length, Content-Range, header limits), which come straight from
// whatever server the device talks to. The first 8 bytes choose the range
// asked for; the rest is split into lines as libcurl would hand them over.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "net/http_response.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 8) return 0;
    std::uint32_t from = 0, length = 0;
    std::memcpy(&from, data, 4);
    std::memcpy(&length, data + 4, 4);
    const std::uint64_t to = length == 0 ? 0 : std::uint64_t(from) + length;
    std::string_view text(reinterpret_cast<const char*>(data) + 8, size - 8);

    bitinc::net::ResponseHeadParser parser({.max_lines = 20, .max_bytes = 2048});
    std::size_t lines = 0;
    std::size_t bytes = 0;
    bool ok = true;
    while (!text.empty() && ok) {
        const std::size_t end = text.find('\n');
        const std::size_t taken = end == std::string_view::npos ? text.size() : end + 1;
        ok = parser.add_line(text.substr(0, taken));
        ++lines;
        bytes += taken;
        text.remove_prefix(taken);
    }
    // The limits hold, and a refusal always says why.
    if (ok && (lines > 20 || bytes > 2048)) __builtin_trap();
    if (!ok && parser.problem().empty()) __builtin_trap();

    const bitinc::net::ResponseHead& head = parser.head();
    if (head.has_range && (head.range_first > head.range_last ||
                           (head.range_total && head.range_last >= *head.range_total))) {
        __builtin_trap();
    }
    const bitinc::net::ResponseVerdict verdict = bitinc::net::judge_response(head, from, to, 0);
    if (verdict.accept) {
        // An accepted 206 starts where asked and stays inside the range.
        if (head.status == 206 &&
            (head.range_first != from || (to > 0 && head.range_last >= to) || verdict.skip != 0))
            __builtin_trap();
        if (head.status != 200 && head.status != 206) __builtin_trap();
    } else if (verdict.problem.empty()) {
        __builtin_trap();
    }
    return 0;
}
