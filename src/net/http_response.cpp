#include "net/http_response.hpp"

#include "net/http_text.hpp"

#include <algorithm>
#include <limits>

namespace bitinc::net {

namespace {

using http_text::equals_ignoring_case;
using http_text::is_token_char;
using http_text::Overflow;
using http_text::parse_decimal;

// Response lines reach the parser with their CR LF.
std::string_view trim(std::string_view text) {
    return http_text::trim(text, " \t\r\n");
}

// "HTTP/1.1 206 Partial Content" -> 206; 0 if it is no status line.
int parse_status_line(std::string_view line) {
    if (line.substr(0, 5) != "HTTP/") return 0;
    const std::size_t space = line.find(' ');
    if (space == std::string_view::npos || space == 5) return 0;
    const std::string_view rest = line.substr(space + 1);
    if (rest.size() < 3 || (rest.size() > 3 && rest[3] != ' ')) return 0;
    const std::optional<std::uint64_t> status = parse_decimal(rest.substr(0, 3), Overflow::refuse);
    if (!status || *status < 100 || *status > 599) return 0;
    return int(*status);
}

}  // namespace

bool ResponseHeadParser::fail(std::string problem) {
    if (problem_.empty()) problem_ = std::move(problem);
    return false;
}

bool ResponseHeadParser::add_line(std::string_view line) {
    if (!problem_.empty()) return false;
    ++lines_;
    bytes_ += line.size();
    if (lines_ > limits_.max_lines) {
        return fail("more than " + std::to_string(limits_.max_lines) + " response header lines");
    }
    if (bytes_ > limits_.max_bytes) {
        return fail("more than " + std::to_string(limits_.max_bytes / 1024) +
                    " KiB of response headers");
    }
    if (line.substr(0, 5) == "HTTP/") {
        // A new response (after a 1xx or a redirect) starts over.
        const int status = parse_status_line(trim(line));
        if (status == 0) return fail("a malformed HTTP status line");
        head_ = ResponseHead{};
        head_.status = status;
        started_ = true;
        complete_ = false;
        return true;
    }
    if (!started_) return fail("the response does not start with an HTTP status line");
    const std::string_view content = trim(line);
    if (content.empty()) {
        complete_ = true;
        return true;
    }
    if (complete_) return true;  // a trailer after the body: counted, not used
    const std::size_t colon = content.find(':');
    if (colon == std::string_view::npos || colon == 0 ||
        !std::all_of(content.begin(), content.begin() + std::ptrdiff_t(colon), is_token_char)) {
        return fail("a malformed response header line");
    }
    return add_field(content.substr(0, colon), trim(content.substr(colon + 1)));
}

bool ResponseHeadParser::add_field(std::string_view name, std::string_view value) {
    if (equals_ignoring_case(name, "Content-Length")) {
        const std::optional<std::uint64_t> length = parse_decimal(value, Overflow::refuse);
        if (!length)
            return fail("an invalid Content-Length ('" + std::string(value.substr(0, 40)) + "')");
        if (head_.content_length && *head_.content_length != *length) {
            return fail("two different Content-Length headers");
        }
        head_.content_length = length;
    } else if (equals_ignoring_case(name, "Content-Range")) {
        const auto invalid = [&] {
            return fail("an invalid Content-Range ('" + std::string(value.substr(0, 60)) + "')");
        };
        if (head_.has_range || head_.range_total) return fail("two Content-Range headers");
        if (value.substr(0, 6) != "bytes ") return invalid();
        const std::string_view spec = value.substr(6);
        const std::size_t slash = spec.find('/');
        if (slash == std::string_view::npos) return invalid();
        const std::string_view range = spec.substr(0, slash);
        const std::string_view total = spec.substr(slash + 1);
        if (total != "*") {
            head_.range_total = parse_decimal(total, Overflow::refuse);
            if (!head_.range_total) return invalid();
        }
        if (range == "*") {
            if (!head_.range_total) return invalid();
            return true;
        }
        const std::size_t dash = range.find('-');
        if (dash == std::string_view::npos) return invalid();
        const std::optional<std::uint64_t> first =
            parse_decimal(range.substr(0, dash), Overflow::refuse);
        const std::optional<std::uint64_t> last =
            parse_decimal(range.substr(dash + 1), Overflow::refuse);
        if (!first || !last || *first > *last ||
            (head_.range_total && *last >= *head_.range_total)) {
            return invalid();
        }
        head_.has_range = true;
        head_.range_first = *first;
        head_.range_last = *last;
    }
    return true;
}

ResponseVerdict judge_response(const ResponseHead& head, std::uint64_t from, std::uint64_t to,
                               std::uint64_t file_size) {
    ResponseVerdict verdict;
    const auto size_mismatch = [&](std::uint64_t server_size) {
        verdict.retryable = false;
        verdict.problem = "the server's file is " + std::to_string(server_size) +
                          " bytes, the manifest says " + std::to_string(file_size);
        return verdict;
    };
    if (head.status == 200) {
        if (head.content_length && file_size > 0 && *head.content_length != file_size) {
            return size_mismatch(*head.content_length);
        }
        verdict.accept = true;
        verdict.skip = from;  // a server that ignores Range sends everything
        verdict.body_bytes = head.content_length;
        return verdict;
    }
    if (head.status == 206) {
        if (!head.has_range) {
            verdict.problem = "a 206 response without a byte range";
            return verdict;
        }
        if (head.range_total && file_size > 0 && *head.range_total != file_size) {
            return size_mismatch(*head.range_total);
        }
        if (head.range_first != from || (to > 0 && head.range_last >= to)) {
            verdict.problem = "the server answered another range (" +
                              std::to_string(head.range_first) + "-" +
                              std::to_string(head.range_last) + ")";
            return verdict;
        }
        const std::uint64_t length = head.range_last - head.range_first + 1;
        if (head.content_length && *head.content_length != length) {
            verdict.problem = "Content-Length and Content-Range disagree";
            return verdict;
        }
        verdict.accept = true;
        verdict.body_bytes = length;
        return verdict;
    }
    if (head.status == 416 && head.range_total && file_size > 0 && *head.range_total != file_size) {
        return size_mismatch(*head.range_total);
    }
    verdict.problem = "HTTP status " + std::to_string(head.status);
    // 4xx other than 408/429 will not get better by asking again.
    verdict.retryable = head.status >= 500 || head.status == 408 || head.status == 429;
    return verdict;
}

}  // namespace bitinc::net
