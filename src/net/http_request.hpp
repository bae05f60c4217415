// The parsing half of the package server's HTTP/1.1: request heads and Range
// headers, as pure functions of bytes so that they can be fuzzed. Everything
// is bounded: a request head by line length, header count and total size,
// a Range header by the number of ranges it may ask for.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bitinc::http {

struct HeadLimits {
    std::size_t max_line_bytes = 8 * 1024;  // the request line or one header line
    std::size_t max_header_count = 64;
    std::size_t max_head_bytes = 16 * 1024;  // everything up to the blank line
};

struct Request {
    std::string method;
    std::string target;     // as sent, e.g. "/model/base-4.bin?x=1"
    std::string path;       // the target's path, percent-decoded
    int minor_version = 1;  // HTTP/1.<minor_version>
    std::vector<std::pair<std::string, std::string>> headers;  // names as sent
    bool keep_alive = true;
    bool has_body = false;  // Content-Length > 0 or Transfer-Encoding: the server will not read it

    // The first header of that name (case-insensitive), if any.
    std::optional<std::string_view> header(std::string_view name) const;
};

struct HeadParse {
    enum class Outcome {
        incomplete,  // no blank line yet and no limit broken: read more
        complete,    // `request` holds the head; it took `head_bytes` bytes
        error,       // answer `status` and close the connection
    };
    Outcome outcome = Outcome::incomplete;
    int status = 0;  // for errors: 400, 414, 431, 501 or 505
    std::size_t head_bytes = 0;
    Request request;
};

// Parses the request head at the start of `bytes` (which may hold more: a
// pipelined request). Lines end in CRLF or a bare LF; empty lines before the
// request line are skipped, as RFC 9112 allows.
HeadParse parse_request_head(std::string_view bytes, const HeadLimits& limits = {});

// An inclusive byte range of a file, [first, last].
struct ByteRange {
    std::uint64_t first = 0;
    std::uint64_t last = 0;
    std::uint64_t length() const { return last - first + 1; }
    bool operator==(const ByteRange&) const = default;
};

struct RangeParse {
    enum class Outcome {
        whole,          // ignore the header and send the whole file (200)
        ranges,         // send `ranges` (206)
        unsatisfiable,  // 416 with Content-Range: bytes */SIZE
    };
    Outcome outcome = Outcome::whole;
    // Sorted, with overlapping and adjacent ranges merged: every byte of
    // the file at most once, however the header asked for it.
    std::vector<ByteRange> ranges;
};

constexpr std::size_t max_range_count = 16;

// Interprets a Range header value for a file of `size` bytes. A header that
// is not "bytes=" with valid range specs, or that asks for more than
// `max_ranges` of them, is ignored (the whole file is sent, as RFC 9110
// allows); one whose specs are all unsatisfiable is a 416.
RangeParse parse_range(std::string_view value, std::uint64_t size,
                       std::size_t max_ranges = max_range_count);

// True if an If-None-Match value names `etag` (or is "*"), weakly compared.
bool etag_matches(std::string_view if_none_match, std::string_view etag);

}  // namespace bitinc::http
