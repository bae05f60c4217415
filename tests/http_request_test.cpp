// The server's request-head and Range parsers on their own.
#include <gtest/gtest.h>

#include <string>

#include "net/http_request.hpp"

namespace bitinc::http {
namespace {

using Outcome = HeadParse::Outcome;

TEST(HttpRequest, ParsesAHeadAndLeavesAPipelinedRequest) {
    const std::string bytes =
        "GET /model/base%2d4.bin?x=1 HTTP/1.1\r\nHost: a\r\nRange:  bytes=0-9 \r\n\r\nGET /";
    const HeadParse parse = parse_request_head(bytes);
    ASSERT_EQ(parse.outcome, Outcome::complete);
    EXPECT_EQ(parse.head_bytes, bytes.size() - 5);
    EXPECT_EQ(parse.request.method, "GET");
    EXPECT_EQ(parse.request.target, "/model/base%2d4.bin?x=1");
    EXPECT_EQ(parse.request.path, "/model/base-4.bin");
    EXPECT_EQ(parse.request.header("range"), "bytes=0-9");
    EXPECT_FALSE(parse.request.header("If-None-Match"));
    EXPECT_TRUE(parse.request.keep_alive);
    EXPECT_FALSE(parse.request.has_body);
}

TEST(HttpRequest, KnowsWhenToWaitForMore) {
    const std::string head = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    for (std::size_t length = 0; length < head.size(); ++length) {
        EXPECT_EQ(parse_request_head(head.substr(0, length)).outcome, Outcome::incomplete)
            << length;
    }
    // Bare LF line ends and blank lines before the request are accepted.
    EXPECT_EQ(parse_request_head("\r\n\nHEAD / HTTP/1.0\n\n").outcome, Outcome::complete);
}

TEST(HttpRequest, ConnectionPersistenceFollowsVersionAndHeader) {
    EXPECT_FALSE(parse_request_head("GET / HTTP/1.0\r\n\r\n").request.keep_alive);
    EXPECT_TRUE(
        parse_request_head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").request.keep_alive);
    EXPECT_FALSE(parse_request_head("GET / HTTP/1.1\r\nHost: a\r\nConnection: te, close\r\n\r\n")
                     .request.keep_alive);
    EXPECT_TRUE(parse_request_head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n")
                    .request.has_body);
    EXPECT_TRUE(
        parse_request_head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
            .request.has_body);
}

TEST(HttpRequest, RefusesMalformedHeads) {
    const std::pair<const char*, int> cases[] = {
        {"GET /\r\n\r\n", 400},
        {"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400},
        {"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
        {"GET / HTTPS/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\n\r\n", 400},  // no Host
        {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nNo colon\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400},
        {"GET /%00 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET /% HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400},
    };
    for (const auto& [bytes, status] : cases) {
        const HeadParse parse = parse_request_head(bytes);
        EXPECT_EQ(parse.outcome, Outcome::error) << bytes;
        EXPECT_EQ(parse.status, status) << bytes;
    }
}

TEST(HttpRequest, EnforcesItsLimitsBeforeTheHeadIsComplete) {
    const HeadLimits limits;
    // A long target, still arriving: 414 as soon as it is too long.
    const std::string long_target = "GET /" + std::string(limits.max_line_bytes, 'a');
    EXPECT_EQ(parse_request_head(long_target).status, 414);
    // One long header line, still arriving.
    const std::string start = "GET / HTTP/1.1\r\nHost: a\r\n";
    EXPECT_EQ(parse_request_head(start + "X: " + std::string(limits.max_line_bytes, 'b')).status,
              431);
    // Too many header lines.
    std::string many = start;
    for (std::size_t i = 0; i < limits.max_header_count; ++i) many += "X: 1\r\n";
    EXPECT_EQ(parse_request_head(many + "\r\n").status, 431);
    // Lines each within the limit, too many bytes in all.
    std::string big = start;
    while (big.size() <= limits.max_head_bytes) big += "X: " + std::string(4000, 'c') + "\r\n";
    EXPECT_EQ(parse_request_head(big).status, 431);
    // The largest head allowed is accepted.
    std::string fits = start;
    for (int i = 0; i < 3; ++i) fits += "X: " + std::string(4000, 'c') + "\r\n";
    EXPECT_EQ(parse_request_head(fits + "\r\n").outcome, Outcome::complete);
}

TEST(HttpRequest, AbsoluteFormTargets) {
    const HeadParse parse =
        parse_request_head("GET http://host:80/a/b.bin?q HTTP/1.1\r\nHost: host\r\n\r\n");
    ASSERT_EQ(parse.outcome, Outcome::complete);
    EXPECT_EQ(parse.request.path, "/a/b.bin");
    EXPECT_EQ(parse_request_head("GET http://host HTTP/1.1\r\nHost: host\r\n\r\n").request.path,
              "/");
}

RangeParse ranges(std::string_view value, std::uint64_t size = 1000) {
    return parse_range(value, size);
}

TEST(HttpRange, SingleRangesAreClampedToTheFile) {
    using R = std::vector<ByteRange>;
    EXPECT_EQ(ranges("bytes=10-19").ranges, (R{{10, 19}}));
    EXPECT_EQ(ranges("bytes=990-").ranges, (R{{990, 999}}));
    EXPECT_EQ(ranges("bytes=-5").ranges, (R{{995, 999}}));
    EXPECT_EQ(ranges("bytes=-5000").ranges, (R{{0, 999}}));
    EXPECT_EQ(ranges("bytes=10-99999999999999999999999").ranges, (R{{10, 999}}));
    EXPECT_EQ(ranges("Bytes=0-0").ranges, (R{{0, 0}}));
    EXPECT_EQ(ranges("bytes=0-0").outcome, RangeParse::Outcome::ranges);
}

TEST(HttpRange, OverlappingAndAdjacentRangesAreMerged) {
    using R = std::vector<ByteRange>;
    EXPECT_EQ(ranges("bytes=50-99,0-49, 200-299 ,250-260").ranges, (R{{0, 99}, {200, 299}}));
    EXPECT_EQ(ranges("bytes=0-,0-,0-,0-").ranges, (R{{0, 999}}));
    EXPECT_EQ(ranges("bytes=-100,900-950").ranges, (R{{900, 999}}));
    // Unsatisfiable specs among satisfiable ones are dropped.
    EXPECT_EQ(ranges("bytes=5000-,0-1").ranges, (R{{0, 1}}));
}

TEST(HttpRange, UnsatisfiableInvalidAndExcessive) {
    EXPECT_EQ(ranges("bytes=1000-").outcome, RangeParse::Outcome::unsatisfiable);
    EXPECT_EQ(ranges("bytes=1000-2000,3000-").outcome, RangeParse::Outcome::unsatisfiable);
    EXPECT_EQ(ranges("bytes=-0").outcome, RangeParse::Outcome::unsatisfiable);
    EXPECT_EQ(ranges("bytes=0-", 0).outcome, RangeParse::Outcome::unsatisfiable);
    for (const char* ignored : {"", "bytes", "bytes=", "bytes=,", "items=0-1", "bytes=5-3",
                                "bytes=a-b", "bytes=1", "bytes=--1", "bytes=0-1-2", "bytes=+1-2"}) {
        const RangeParse parse = ranges(ignored);
        EXPECT_EQ(parse.outcome, RangeParse::Outcome::whole) << ignored;
        EXPECT_TRUE(parse.ranges.empty()) << ignored;
    }
    std::string many = "bytes=0-0";
    for (std::size_t i = 1; i < max_range_count; ++i)
        many += "," + std::to_string(2 * i) + "-" + std::to_string(2 * i);
    EXPECT_EQ(ranges(many).ranges.size(), max_range_count);
    EXPECT_EQ(ranges(many + ",100-100").outcome, RangeParse::Outcome::whole);
}

TEST(HttpEtag, WeakComparisonListsAndStar) {
    EXPECT_TRUE(etag_matches("\"a-1\"", "\"a-1\""));
    EXPECT_TRUE(etag_matches("\"x\", W/\"a-1\"", "\"a-1\""));
    EXPECT_TRUE(etag_matches("*", "\"a-1\""));
    EXPECT_FALSE(etag_matches("\"a-2\"", "\"a-1\""));
    EXPECT_FALSE(etag_matches("", "\"a-1\""));
}

}  // namespace
}  // namespace bitinc::http
