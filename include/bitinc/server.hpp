// The serving side of HTTP delivery (the lab's audience): a static-file
// server for packages with link emulation and fault injection — the lab's
// stand-in for a CDN over a mobile link — and the parsers of its link and
// fault settings. The device's fetcher is in bitinc/fetch.hpp.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace bitinc {

// ---- parsing of link and fault settings ------------------------------------

inline constexpr double max_rate_bits_per_second = 1e12;
inline constexpr double max_duration_seconds = 7 * 24 * 3600.0;

// "100Mbit", "33.6Mbit", "1.1Gbit", "500kbit", "12MB" (bytes) -> bits per
// second, from 1 bit/s to max_rate_bits_per_second. Throws Error on anything
// else.
double parse_rate(std::string_view text);
// "20ms", "1.5s", "0" -> seconds, at most max_duration_seconds. Throws Error
// on anything else.
double parse_duration(std::string_view text);

// A fault the server injects, for tests of the fetcher's recovery.
struct FaultRule {
    enum class Kind {
        drop,   // close the connection after `bytes` body bytes of a response
        flip,   // invert the bytes at file offsets [offset, offset + length)
        delay,  // hold the response `seconds` before its first byte
        fail,   // answer 503 Service Unavailable
    };
    Kind kind = Kind::drop;
    std::string file;  // a file name in the served tree, or "*" for any
    std::uint64_t bytes = 0;
    std::uint64_t offset = 0;
    std::uint64_t length = 1;
    double seconds = 0;
    // How many responses the fault hits; -1: every one.
    int times = 1;
};

// "drop:FILE:BYTES[:TIMES]", "flip:FILE:OFFSET[:LENGTH[:TIMES]]",
// "delay:FILE:DURATION[:TIMES]", "fail:FILE[:TIMES]"; TIMES is a count or
// "always". Throws Error on anything else.
FaultRule parse_fault(std::string_view text);

// ---- the server --------------------------------------------------------------

struct ServerOptions {
    std::filesystem::path root;  // only files under it are served
    std::string host = "127.0.0.1";
    int port = 0;  // 0: any free port (see PackageServer::port)
    // Each response is paced to this rate (bits/s, 0: unlimited) and starts
    // one round-trip time after its request.
    double rate_bits_per_second = 0;
    double rtt_seconds = 0;
    std::vector<FaultRule> faults;
    // Open connections at most (also kept under the process's descriptor
    // limit). When full, the longest-idle connection, or failing that the
    // slowest request head, is closed to make room for a new one.
    int max_connections = 10000;
    // A request head must arrive whole within this many seconds of its first
    // byte; a keep-alive connection with no request is closed after
    // `idle_timeout_seconds` (5 s once the server is three quarters full); a
    // response that moves less than 16 KiB in `write_timeout_seconds` (the
    // client reads too slowly, or not at all) is cut.
    double request_timeout_seconds = 10;
    double idle_timeout_seconds = 60;
    double write_timeout_seconds = 30;
    // One line per request: client, method, path, [range], status, body bytes.
    // Called on the server's thread.
    std::function<void(const std::string&)> access_log;
};

class PackageServer {
  public:
    explicit PackageServer(ServerOptions options);
    ~PackageServer();  // stops the server
    PackageServer(const PackageServer&) = delete;
    PackageServer& operator=(const PackageServer&) = delete;

    // Binds and starts serving on a background thread (one epoll loop).
    // Raises the process's soft limit on open files to its hard limit. Throws
    // Error if the address cannot be bound.
    void start();
    // Stops accepting, ends responses in progress and joins the threads.
    void stop();
    int port() const;
    std::string url() const;  // "http://host:port"

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace bitinc
