// Strict, bounded parsing of HTTP/1.1 request heads and Range headers
// (RFC 9112 §2-§5, RFC 9110 §14). Nothing here allocates more than the
// input it is given.
#include "net/http_request.hpp"

#include "net/http_text.hpp"

#include <algorithm>
#include <limits>

namespace bitinc::http {

namespace {

using http_text::equals_ignoring_case;
using http_text::is_token_char;
using http_text::Overflow;
using http_text::parse_decimal;
using http_text::trim;

bool is_token(std::string_view text) {
    return !text.empty() && std::all_of(text.begin(), text.end(), is_token_char);
}

// Calls `each` with every trimmed, non-empty element of a comma-separated list.
template <typename Each>
void for_each_element(std::string_view list, Each&& each) {
    while (true) {
        const std::size_t comma = list.find(',');
        const std::string_view element = trim(list.substr(0, comma));
        if (!element.empty()) each(element);
        if (comma == std::string_view::npos) return;
        list.remove_prefix(comma + 1);
    }
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = http_text::ascii_lower(c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

// "%2e" -> "."; nothing for a bad escape or an escaped NUL.
std::optional<std::string> percent_decode(std::string_view text) {
    std::string result;
    result.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] != '%') {
            result += text[i];
            continue;
        }
        if (i + 2 >= text.size()) return std::nullopt;
        const int high = hex_value(text[i + 1]);
        const int low = hex_value(text[i + 2]);
        if (high < 0 || low < 0 || (high == 0 && low == 0)) return std::nullopt;
        result += char(high * 16 + low);
        i += 2;
    }
    return result;
}

// The path of a request target in origin form ("/a/b?q") or absolute form
// ("http://host/a/b?q"); "*" stays "*".
std::optional<std::string> target_path(std::string_view target) {
    if (target == "*") return std::string(target);
    if (target.front() != '/') {
        const std::size_t scheme_end = target.find("://");
        if (scheme_end == std::string_view::npos ||
            !(equals_ignoring_case(target.substr(0, scheme_end), "http") ||
              equals_ignoring_case(target.substr(0, scheme_end), "https"))) {
            return std::nullopt;
        }
        const std::size_t path_start = target.find('/', scheme_end + 3);
        target = path_start == std::string_view::npos ? std::string_view("/")
                                                      : target.substr(path_start);
    }
    return percent_decode(target.substr(0, target.find_first_of("?#")));
}

HeadParse error(int status) {
    HeadParse result;
    result.outcome = HeadParse::Outcome::error;
    result.status = status;
    return result;
}

}  // namespace

std::optional<std::string_view> Request::header(std::string_view name) const {
    for (const auto& [key, value] : headers) {
        if (equals_ignoring_case(key, name)) return std::string_view(value);
    }
    return std::nullopt;
}

HeadParse parse_request_head(std::string_view bytes, const HeadLimits& limits) {
    HeadParse result;
    Request& request = result.request;
    bool have_request_line = false;
    std::size_t position = 0;
    while (true) {
        const std::size_t newline = bytes.find('\n', position);
        const std::size_t line_end = newline == std::string_view::npos ? bytes.size() : newline;
        // Limits are checked on partial lines too, so that a peer cannot make
        // the server buffer more than they allow before it answers.
        if (line_end - position > limits.max_line_bytes + 1) {
            return error(have_request_line ? 431 : 414);
        }
        if (std::min(bytes.size(), line_end + 1) > limits.max_head_bytes) return error(431);
        if (newline == std::string_view::npos) return result;  // incomplete

        std::string_view line = bytes.substr(position, line_end - position);
        position = newline + 1;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.size() > limits.max_line_bytes) return error(have_request_line ? 431 : 414);
        if (line.find('\r') != std::string_view::npos) return error(400);

        if (!have_request_line) {
            if (line.empty()) continue;  // stray CRLF between requests
            const std::size_t first_space = line.find(' ');
            const std::size_t second_space = line.find(' ', first_space + 1);
            if (first_space == std::string_view::npos || second_space == std::string_view::npos ||
                line.find(' ', second_space + 1) != std::string_view::npos) {
                return error(400);
            }
            const std::string_view method = line.substr(0, first_space);
            const std::string_view target =
                line.substr(first_space + 1, second_space - first_space - 1);
            const std::string_view version = line.substr(second_space + 1);
            if (!is_token(method) || target.empty()) return error(400);
            for (const char c : target) {
                if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return error(400);
            }
            if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' ||
                version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9') {
                return error(400);
            }
            if (version[5] != '1') return error(505);
            auto path = target_path(target);
            if (!path) return error(400);
            request.method = std::string(method);
            request.target = std::string(target);
            request.path = std::move(*path);
            request.minor_version = version[7] - '0';
            have_request_line = true;
            continue;
        }

        if (line.empty()) break;                                             // the end of the head
        if (line.front() == ' ' || line.front() == '\t') return error(400);  // obsolete folding
        if (request.headers.size() == limits.max_header_count) return error(431);
        const std::size_t colon = line.find(':');
        if (colon == std::string_view::npos || !is_token(line.substr(0, colon))) return error(400);
        const std::string_view value = trim(line.substr(colon + 1));
        for (const char c : value) {
            if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) return error(400);
        }
        request.headers.emplace_back(std::string(line.substr(0, colon)), std::string(value));
    }

    // What the headers mean for the connection.
    request.keep_alive = request.minor_version >= 1;
    std::optional<std::uint64_t> content_length;
    bool has_host = false;
    for (const auto& [name, value] : request.headers) {
        if (equals_ignoring_case(name, "Connection")) {
            for_each_element(value, [&](std::string_view option) {
                if (equals_ignoring_case(option, "close")) request.keep_alive = false;
                if (equals_ignoring_case(option, "keep-alive")) request.keep_alive = true;
            });
        } else if (equals_ignoring_case(name, "Content-Length")) {
            const auto length = parse_decimal(value, Overflow::saturate);
            if (!length || (content_length && *content_length != *length)) return error(400);
            content_length = length;
        } else if (equals_ignoring_case(name, "Transfer-Encoding")) {
            request.has_body = true;
        } else if (equals_ignoring_case(name, "Host")) {
            if (has_host) return error(400);
            has_host = true;
        }
    }
    if (request.minor_version >= 1 && !has_host) return error(400);
    if (content_length && *content_length > 0) request.has_body = true;
    result.outcome = HeadParse::Outcome::complete;
    result.head_bytes = position;
    return result;
}

RangeParse parse_range(std::string_view value, std::uint64_t size, std::size_t max_ranges) {
    RangeParse result;  // whole file unless the header is valid
    value = trim(value);
    const std::size_t equals = value.find('=');
    if (equals == std::string_view::npos ||
        !equals_ignoring_case(trim(value.substr(0, equals)), "bytes")) {
        return result;
    }
    std::vector<ByteRange> satisfiable;
    std::size_t count = 0;
    bool valid = true;
    for_each_element(value.substr(equals + 1), [&](std::string_view spec) {
        if (!valid || ++count > max_ranges) return;
        const std::size_t dash = spec.find('-');
        if (dash == std::string_view::npos) {
            valid = false;
            return;
        }
        const std::string_view first_text = spec.substr(0, dash);
        const std::string_view last_text = spec.substr(dash + 1);
        if (first_text.empty()) {  // "-N": the last N bytes
            const auto suffix = parse_decimal(last_text, Overflow::saturate);
            if (!suffix) {
                valid = false;
            } else if (*suffix > 0 && size > 0) {
                satisfiable.push_back({size - std::min(*suffix, size), size - 1});
            }
            return;
        }
        const auto first = parse_decimal(first_text, Overflow::saturate);
        const auto last =
            last_text.empty()
                ? std::optional<std::uint64_t>(std::numeric_limits<std::uint64_t>::max())
                : parse_decimal(last_text, Overflow::saturate);
        if (!first || !last || *last < *first) {
            valid = false;
        } else if (*first < size) {
            satisfiable.push_back({*first, std::min(*last, size - 1)});
        }
    });
    if (!valid || count == 0 || count > max_ranges) return result;
    if (satisfiable.empty()) {
        result.outcome = RangeParse::Outcome::unsatisfiable;
        return result;
    }
    std::sort(satisfiable.begin(), satisfiable.end(),
              [](const ByteRange& a, const ByteRange& b) { return a.first < b.first; });
    for (const ByteRange& range : satisfiable) {
        // Merge with the previous range when it overlaps or touches it.
        if (!result.ranges.empty() && range.first <= result.ranges.back().last + 1) {
            result.ranges.back().last = std::max(result.ranges.back().last, range.last);
        } else {
            result.ranges.push_back(range);
        }
    }
    result.outcome = RangeParse::Outcome::ranges;
    return result;
}

bool etag_matches(std::string_view if_none_match, std::string_view etag) {
    const auto strong_part = [](std::string_view tag) {
        return tag.substr(0, 2) == "W/" ? tag.substr(2) : tag;
    };
    bool matches = false;
    for_each_element(if_none_match, [&](std::string_view candidate) {
        if (candidate == "*" || strong_part(candidate) == strong_part(etag)) matches = true;
    });
    return matches;
}

}  // namespace bitinc::http
