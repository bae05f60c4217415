// Fuzz target: the server's request-head, Range and If-None-Match parsers.
// Besides not crashing, the parsed ranges must be sorted, disjoint, inside
// the file and no more bytes than the file holds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "net/http_request.hpp"

namespace {

void check_ranges(std::string_view value, std::uint64_t size) {
    const bitinc::http::RangeParse parse = bitinc::http::parse_range(value, size);
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < parse.ranges.size(); ++i) {
        const auto& range = parse.ranges[i];
        if (range.first > range.last || range.last >= size) std::abort();
        if (i > 0 && range.first <= parse.ranges[i - 1].last + 1) std::abort();
        total += range.length();
    }
    if (total > size || parse.ranges.size() > bitinc::http::max_range_count) std::abort();
    if ((parse.outcome == bitinc::http::RangeParse::Outcome::ranges) == parse.ranges.empty()) {
        std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);
    const bitinc::http::HeadLimits limits;
    const auto head = bitinc::http::parse_request_head(bytes, limits);
    using Outcome = bitinc::http::HeadParse::Outcome;
    if (head.outcome == Outcome::complete) {
        if (head.head_bytes > bytes.size() || head.head_bytes > limits.max_head_bytes ||
            head.request.headers.size() > limits.max_header_count) {
            std::abort();
        }
        if (const auto range = head.request.header("Range")) {
            for (const std::uint64_t file_size : {std::uint64_t(0), std::uint64_t(1),
                                                  std::uint64_t(1000), std::uint64_t(1) << 40}) {
                check_ranges(*range, file_size);
            }
        }
        if (const auto tags = head.request.header("If-None-Match")) {
            bitinc::http::etag_matches(*tags, "\"1-2\"");
        }
    } else if (head.outcome == Outcome::incomplete && bytes.size() > limits.max_head_bytes) {
        std::abort();  // a head over the limit must be refused, not buffered
    }
    // The whole input as a Range value too, for a file of 4 KiB.
    check_ranges(bytes, 4096);
    return 0;
}
