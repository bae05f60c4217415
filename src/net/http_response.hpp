// The head of an HTTP response as the fetcher reads it: status, Content-Length
// and Content-Range, with the number and size of header lines bounded. Pure
// (no I/O), so that a fuzzer can drive it; libcurl does the transport.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bitinc::net {

struct HeaderLimits {
    std::size_t max_lines = 100;        // over all responses of one request
    std::size_t max_bytes = 64 * 1024;  // likewise
};

struct ResponseHead {
    int status = 0;
    std::optional<std::uint64_t> content_length;
    // Content-Range "bytes FIRST-LAST/TOTAL" (TOTAL may be "*"), or
    // "bytes */TOTAL" (then has_range is false and total is set).
    bool has_range = false;
    std::uint64_t range_first = 0;
    std::uint64_t range_last = 0;
    std::optional<std::uint64_t> range_total;
};

// Takes header lines as libcurl hands them over: a status line, fields, a
// blank line, and again for each further response (1xx, redirects). The
// head is that of the latest response. Never throws.
class ResponseHeadParser {
  public:
    explicit ResponseHeadParser(HeaderLimits limits = {}) : limits_(limits) {}

    // False once the lines are malformed or over a limit; problem() says why.
    bool add_line(std::string_view line);
    // The blank line after the latest response's fields has come.
    bool complete() const { return complete_; }
    const ResponseHead& head() const { return head_; }
    const std::string& problem() const { return problem_; }

  private:
    bool fail(std::string problem);
    bool add_field(std::string_view name, std::string_view value);

    HeaderLimits limits_;
    std::size_t lines_ = 0;
    std::size_t bytes_ = 0;
    bool started_ = false;
    bool complete_ = false;
    ResponseHead head_;
    std::string problem_;
};

// What to make of a response to a request for bytes [from, to) of a file
// (to == 0: to its end) whose size the manifest gives as `file_size` (0: not
// known).
struct ResponseVerdict {
    bool accept = false;
    bool retryable = true;   // when not accepted
    std::uint64_t skip = 0;  // leading body bytes to drop (a 200 to a range request)
    std::optional<std::uint64_t> body_bytes;  // what the body must hold, when known
    std::string problem;
};

ResponseVerdict judge_response(const ResponseHead& head, std::uint64_t from, std::uint64_t to,
                               std::uint64_t file_size);

}  // namespace bitinc::net
