// The package server: static files over HTTP/1.1 from one epoll thread with
// non-blocking sockets, so that idle and slow connections cost a few hundred
// bytes each instead of a thread. Link emulation and injected delays are
// timers on the loop, never sleeps. Every per-connection buffer is bounded:
// a request head by http::HeadLimits, a response by one file chunk (none at
// all with sendfile, used unless a flip fault must change the bytes).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <limits>
#include <optional>
#include <queue>
#include <random>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>

#include "bitinc/error.hpp"
#include "bitinc/manifest.hpp"
#include "bitinc/server.hpp"
#include "net/http_request.hpp"

namespace bitinc {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr int listen_backlog = 4096;           // the kernel caps it at net.core.somaxconn
constexpr std::size_t read_size = 16 * 1024;   // one read of a request head
constexpr std::size_t chunk_size = 64 * 1024;  // one read of a file body
constexpr std::size_t accepts_per_turn = 256;  // then the other connections get a turn
constexpr auto sweep_interval = std::chrono::milliseconds(100);
constexpr auto drain_time = std::chrono::seconds(2);
constexpr auto pacing_slack = std::chrono::milliseconds(2);
constexpr double crowded_idle_timeout = 5;  // seconds, once 3/4 of the connections are taken
constexpr int reserved_descriptors = 64;    // for files being served, logs, the loop itself
constexpr std::uint64_t min_progress_bytes = 16 * 1024;  // per write timeout, against slow readers

Clock::duration seconds(double value) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(value));
}

// Owns a file descriptor.
class Descriptor {
  public:
    Descriptor() = default;
    explicit Descriptor(int descriptor) : descriptor_(descriptor) {}
    Descriptor(Descriptor&& other) noexcept : descriptor_(std::exchange(other.descriptor_, -1)) {}
    Descriptor& operator=(Descriptor&& other) noexcept {
        if (this != &other) {
            reset();
            descriptor_ = std::exchange(other.descriptor_, -1);
        }
        return *this;
    }
    ~Descriptor() { reset(); }
    void reset() {
        if (descriptor_ >= 0) ::close(descriptor_);
        descriptor_ = -1;
    }
    int get() const { return descriptor_; }
    explicit operator bool() const { return descriptor_ >= 0; }

  private:
    int descriptor_ = -1;
};

// The faults that hit one response, decided when its request comes in.
struct ResponseFaults {
    bool drop = false;
    std::uint64_t drop_after = 0;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> flips;  // file offsets [first, last)
    double delay = 0;
    bool fail = false;
};

// A piece of a response body: literal text (multipart headers), or a range
// of the response's file when `text` is empty.
struct BodyPart {
    std::string text;
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
};

struct Connection {
    enum class State {
        reading,   // waiting for (the rest of) a request head
        waiting,   // a response held back by the link emulation or a fault
        writing,   // sending a response
        draining,  // response sent and write side shut: discarding input until the peer closes
    };
    Descriptor socket;
    std::uint64_t key = 0;  // in PackageServer::Impl::connections and epoll
    std::string peer;
    State state = State::reading;
    std::uint32_t interest = 0;  // the epoll events registered
    bool dead = false;           // to be closed after the current event
    Clock::time_point last_activity;
    // A response must move min_progress_bytes every write timeout:
    // bytes sent since `progress_since`.
    Clock::time_point progress_since;
    std::uint64_t progress_bytes = 0;
    Clock::time_point head_started;  // when the first byte of the pending head came in
    Clock::time_point wake_at;       // state waiting: when to go on writing
    Clock::time_point drain_until;

    std::string input;  // bytes received and not yet handled (bounded by the head limits)
    // input.size() when the parser last found the head incomplete (0: not
    // since input last lost bytes): a byte-a-second client is not re-parsed
    // for every byte.
    std::size_t parsed_incomplete = 0;

    // The response in progress.
    std::string output;  // bytes ready to send: the head, multipart text, flipped chunks
    std::size_t output_sent = 0;
    std::deque<BodyPart> body;
    Descriptor file;
    ResponseFaults faults;
    Clock::time_point paced_from;      // the first body byte's earliest departure
    std::uint64_t body_bytes_out = 0;  // file bytes read into `output` so far
    bool close_after = false;
};

std::string content_type_of(const fs::path& path) {
    return path.extension() == ".json" ? "application/json" : "application/octet-stream";
}

bool inside(const fs::path& root, const fs::path& candidate) {
    const auto [root_end, _] =
        std::mismatch(root.begin(), root.end(), candidate.begin(), candidate.end());
    return root_end == root.end();
}

const char* reason_of(int status) {
    switch (status) {
        case 200:
            return "OK";
        case 206:
            return "Partial Content";
        case 304:
            return "Not Modified";
        case 400:
            return "Bad Request";
        case 404:
            return "Not Found";
        case 405:
            return "Method Not Allowed";
        case 414:
            return "URI Too Long";
        case 416:
            return "Range Not Satisfiable";
        case 431:
            return "Request Header Fields Too Large";
        case 503:
            return "Service Unavailable";
        case 505:
            return "HTTP Version Not Supported";
        default:
            return "Error";
    }
}

std::string peer_name(const sockaddr_storage& address) {
    char text[INET6_ADDRSTRLEN] = "?";
    if (address.ss_family == AF_INET) {
        const auto& ipv4 = reinterpret_cast<const sockaddr_in&>(address);
        ::inet_ntop(AF_INET, &ipv4.sin_addr, text, sizeof text);
    } else if (address.ss_family == AF_INET6) {
        const auto& ipv6 = reinterpret_cast<const sockaddr_in6&>(address);
        ::inet_ntop(AF_INET6, &ipv6.sin6_addr, text, sizeof text);
    }
    return text;
}

// Lets the process open as many sockets as it is allowed to; returns the
// resulting soft limit.
rlim_t raise_descriptor_limit() {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return 1024;
    if (limit.rlim_cur < limit.rlim_max) {
        rlimit raised = limit;
        raised.rlim_cur = limit.rlim_max;
        if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
    }
    return limit.rlim_cur;
}

}  // namespace

struct PackageServer::Impl {
    ServerOptions options;
    fs::path root;
    http::HeadLimits head_limits;
    std::size_t connection_cap = 0;
    Descriptor listener;
    Descriptor epoll;
    Descriptor wakeup;  // an eventfd that stop() writes to
    std::thread loop_thread;
    int port = 0;
    std::atomic<bool> stopping{false};
    std::vector<FaultRule> faults;  // times count down as faults fire
    std::mt19937_64 boundary_generator{std::random_device{}()};

    // The loop's state, touched by the loop thread only.
    static constexpr std::uint64_t listener_key = 0;
    static constexpr std::uint64_t wakeup_key = 1;
    std::uint64_t next_key = 2;
    std::unordered_map<std::uint64_t, Connection> connections;
    using Wake = std::pair<Clock::time_point, std::uint64_t>;
    std::priority_queue<Wake, std::vector<Wake>, std::greater<>> wakes;
    bool accepting = true;

    // ---- faults and files --------------------------------------------------

    // The faults that apply to this response of `file`, consuming their counts.
    ResponseFaults take_faults(const std::string& file) {
        ResponseFaults result;
        for (FaultRule& fault : faults) {
            if (fault.times == 0 || (fault.file != "*" && fault.file != file)) continue;
            switch (fault.kind) {
                case FaultRule::Kind::drop:
                    result.drop = true;
                    result.drop_after = fault.bytes;
                    break;
                case FaultRule::Kind::flip:
                    result.flips.emplace_back(fault.offset, fault.offset + fault.length);
                    break;
                case FaultRule::Kind::delay:
                    result.delay += fault.seconds;
                    break;
                case FaultRule::Kind::fail:
                    result.fail = true;
                    break;
            }
            if (fault.times > 0) --fault.times;
        }
        return result;
    }

    // Resolves a decoded request path to a regular file under the root, or
    // nothing. No component may start with '.': that refuses "..", "." and
    // dotfiles alike, before and after symbolic links are resolved.
    std::optional<fs::path> resolve(std::string_view request_path) const {
        if (request_path.empty() || request_path.front() != '/') return std::nullopt;
        const auto hidden = [](const fs::path& path) {
            return std::any_of(path.begin(), path.end(), [](const fs::path& part) {
                return !part.empty() && part.native().front() == '.';
            });
        };
        fs::path relative;
        std::string_view rest = request_path;
        while (!rest.empty()) {
            const std::size_t slash = rest.find('/');
            const std::string_view part = rest.substr(0, slash);
            if (!part.empty()) {
                if (part.front() == '.') return std::nullopt;
                relative /= part;
            }
            if (slash == std::string_view::npos) break;
            rest.remove_prefix(slash + 1);
        }
        if (relative.empty()) return std::nullopt;
        std::error_code error;
        const fs::path resolved = fs::canonical(root / relative, error);
        // Whether it is a regular file is checked on the open descriptor.
        if (error || !inside(root, resolved) || hidden(resolved.lexically_relative(root))) {
            return std::nullopt;
        }
        return resolved;
    }

    // ---- responses ----------------------------------------------------------

    void log(const Connection& connection, const http::Request* request, int status,
             std::uint64_t length) const {
        if (!options.access_log) return;
        std::string line = connection.peer;
        if (request) {
            line += " " + request->method + " " + request->path;
            if (const auto range = request->header("Range"))
                line += " [" + std::string(*range) + "]";
        } else {
            line += " - -";
        }
        line += " " + std::to_string(status) + " " + std::to_string(length);
        options.access_log(line);
    }

    // Starts a response: `head_fields` are the header lines after the status
    // line, `body` what follows (empty for HEAD and bodiless statuses).
    // Answers `request` (nullptr: a head that could not be parsed) and logs
    // it with the body bytes the response carries.
    void respond(Connection& connection, const http::Request* request, int status,
                 const std::string& head_fields, std::deque<BodyPart> body,
                 Clock::time_point not_before) {
        std::uint64_t body_bytes = 0;
        for (const BodyPart& part : body) body_bytes += part.text.size() + part.length;
        log(connection, request, status, body_bytes);
        std::string& head = connection.output;
        head = "HTTP/1.1 " + std::to_string(status) + " " + reason_of(status) + "\r\n";
        head += head_fields;
        head += connection.close_after ? "Connection: close\r\n" : "Connection: keep-alive\r\n";
        head += "\r\n";
        connection.output_sent = 0;
        connection.body = std::move(body);
        connection.body_bytes_out = 0;
        connection.paced_from = not_before;
        connection.progress_since = std::max(Clock::now(), not_before);
        connection.progress_bytes = 0;
        if (not_before > Clock::now()) {
            wait_until(connection, not_before);
        } else {
            connection.state = Connection::State::writing;
        }
    }

    void respond_text(Connection& connection, const http::Request* request, int status,
                      const std::string& text, const std::string& extra_fields, bool head_only,
                      Clock::time_point not_before = {}) {
        std::deque<BodyPart> body;
        if (!head_only) body.push_back({text, 0, 0});
        respond(connection, request, status,
                "Content-Type: text/plain\r\nContent-Length: " + std::to_string(text.size()) +
                    "\r\n" + extra_fields,
                std::move(body), not_before);
    }

    void handle(Connection& connection, const http::Request& request) {
        const auto now = Clock::now();
        connection.close_after = !request.keep_alive || request.has_body;
        const bool head_only = request.method == "HEAD";
        if (request.method != "GET" && !head_only) {
            connection.close_after = true;  // the body, if any, is not read
            respond_text(connection, &request, 405, "method not allowed\n", "Allow: GET, HEAD\r\n",
                         false);
            return;
        }
        const auto path = resolve(request.path);
        Descriptor file;
        struct stat status {};
        // O_NONBLOCK: opening a FIFO must not stall the loop (regular files
        // ignore it); fstat then refuses anything but a regular file.
        if (path) {
            file =
                Descriptor(::open(path->c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
        }
        if (!file || ::fstat(file.get(), &status) != 0 || !S_ISREG(status.st_mode)) {
            respond_text(connection, &request, 404, "not found\n", "", head_only);
            return;
        }
        const std::uint64_t size = std::uint64_t(status.st_size);
        const std::string name = path->filename().string();
        ResponseFaults faults = take_faults(name);
        const Clock::time_point start = now + seconds(options.rtt_seconds + faults.delay);
        if (faults.fail) {
            respond_text(connection, &request, 503, "injected failure\n", "", head_only, start);
            return;
        }

        char etag[64];
        std::snprintf(etag, sizeof etag, "\"%llx-%llx\"", static_cast<unsigned long long>(size),
                      static_cast<unsigned long long>(status.st_mtim.tv_sec) * 1'000'000'000ULL +
                          static_cast<unsigned long long>(status.st_mtim.tv_nsec));
        std::string fields = "ETag: " + std::string(etag) + "\r\nAccept-Ranges: bytes\r\n";
        // Package files never change; the manifest is the entry point and
        // is revalidated (cheaply, by ETag).
        fields += name == manifest_file_name
                      ? "Cache-Control: no-cache\r\n"
                      : "Cache-Control: public, max-age=31536000, immutable\r\n";
        if (const auto tags = request.header("If-None-Match");
            tags && http::etag_matches(*tags, etag)) {
            respond(connection, &request, 304, fields, {}, start);
            return;
        }

        http::RangeParse ranges;
        if (const auto range = request.header("Range")) ranges = http::parse_range(*range, size);
        if (ranges.outcome == http::RangeParse::Outcome::unsatisfiable) {
            respond_text(connection, &request, 416, "range not satisfiable\n",
                         fields + "Content-Range: bytes */" + std::to_string(size) + "\r\n",
                         head_only, start);
            return;
        }

        const std::string type = content_type_of(*path);
        const std::string size_text = std::to_string(size);
        std::deque<BodyPart> body;
        std::uint64_t length = 0;
        int code = 200;
        if (ranges.outcome == http::RangeParse::Outcome::whole) {
            fields += "Content-Type: " + type + "\r\n";
            body.push_back({{}, 0, size});
            length = size;
        } else if (ranges.ranges.size() == 1) {
            const http::ByteRange& range = ranges.ranges.front();
            code = 206;
            fields += "Content-Type: " + type + "\r\nContent-Range: bytes " +
                      std::to_string(range.first) + "-" + std::to_string(range.last) + "/" +
                      size_text + "\r\n";
            body.push_back({{}, range.first, range.length()});
            length = range.length();
        } else {
            // Several disjoint ranges (at most http::max_range_count, each byte
            // once): multipart/byteranges.
            code = 206;
            char boundary[24];
            std::snprintf(boundary, sizeof boundary, "%016llx",
                          static_cast<unsigned long long>(boundary_generator()));
            for (const http::ByteRange& range : ranges.ranges) {
                std::string part = std::string(body.empty() ? "" : "\r\n") + "--" + boundary +
                                   "\r\nContent-Type: " + type + "\r\nContent-Range: bytes " +
                                   std::to_string(range.first) + "-" + std::to_string(range.last) +
                                   "/" + size_text + "\r\n\r\n";
                length += part.size() + range.length();
                body.push_back({std::move(part), 0, 0});
                body.push_back({{}, range.first, range.length()});
            }
            std::string end = "\r\n--" + std::string(boundary) + "--\r\n";
            length += end.size();
            body.push_back({std::move(end), 0, 0});
            fields +=
                "Content-Type: multipart/byteranges; boundary=" + std::string(boundary) + "\r\n";
        }
        fields += "Content-Length: " + std::to_string(length) + "\r\n";
        connection.file = std::move(file);
        connection.faults = std::move(faults);
        respond(connection, &request, code, fields,
                head_only ? std::deque<BodyPart>{} : std::move(body), start);
    }

    // A request head that broke a limit or the grammar: answer and close.
    void refuse(Connection& connection, int status) {
        connection.close_after = true;
        connection.input.clear();
        connection.parsed_incomplete = 0;
        respond_text(connection, nullptr, status, std::string(reason_of(status)) + "\n", "", false);
    }

    // ---- the connection's state machine ---------------------------------------

    void set_interest(Connection& connection, std::uint32_t events) {
        if (connection.interest == events) return;
        epoll_event event{};
        event.events = events;
        event.data.u64 = connection.key;
        if (::epoll_ctl(epoll.get(), EPOLL_CTL_MOD, connection.socket.get(), &event) != 0) {
            connection.dead = true;
            return;
        }
        connection.interest = events;
    }

    void wait_until(Connection& connection, Clock::time_point when) {
        connection.state = Connection::State::waiting;
        connection.wake_at = when;
        wakes.emplace(when, connection.key);  // stale wakes are ignored when they come
    }

    enum class Progress { blocked, done };

    // Sends what the response has, pacing file bytes to the link rate.
    Progress write_some(Connection& connection) {
        const double rate_bytes = options.rate_bits_per_second / 8;
        while (true) {
            if (connection.output_sent == connection.output.size()) {
                connection.output.clear();
                connection.output_sent = 0;
                if (connection.body.empty()) return Progress::done;
                BodyPart& part = connection.body.front();
                if (part.text.empty() && part.length == 0) {  // an empty file
                    connection.body.pop_front();
                    continue;
                }
                if (!part.text.empty()) {
                    connection.output = std::move(part.text);
                    connection.body.pop_front();
                    continue;
                }
                std::uint64_t chunk = std::min<std::uint64_t>(part.length, chunk_size);
                if (rate_bytes > 0) {
                    // About 10 ms of the link at a time, so that pacing is smooth.
                    chunk = std::min<std::uint64_t>(
                        chunk, std::clamp<std::uint64_t>(std::uint64_t(rate_bytes / 100), 4096,
                                                         chunk_size));
                }
                const ResponseFaults& faults = connection.faults;
                if (faults.drop) {
                    if (connection.body_bytes_out >= faults.drop_after) {
                        connection.dead = true;  // the injected drop
                        return Progress::blocked;
                    }
                    chunk = std::min(chunk, faults.drop_after - connection.body_bytes_out);
                }
                if (rate_bytes > 0) {
                    const auto due =
                        connection.paced_from +
                        seconds(double(connection.body_bytes_out + chunk) / rate_bytes) -
                        pacing_slack;
                    if (due > Clock::now()) {
                        wait_until(connection, due);
                        return Progress::blocked;
                    }
                }
                if (faults.flips.empty()) {
                    // Straight from the page cache: no user-space buffer at all.
                    auto offset = off_t(part.offset);
                    const ssize_t sent = ::sendfile(connection.socket.get(), connection.file.get(),
                                                    &offset, std::size_t(chunk));
                    if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
                        return Progress::blocked;
                    }
                    if (sent <= 0) {  // an error, or the file shrank under us
                        connection.dead = true;
                        return Progress::blocked;
                    }
                    part.offset += std::uint64_t(sent);
                    part.length -= std::uint64_t(sent);
                    connection.body_bytes_out += std::uint64_t(sent);
                    connection.progress_bytes += std::uint64_t(sent);
                    connection.last_activity = Clock::now();
                    if (part.length == 0) connection.body.pop_front();
                    continue;
                }
                connection.output.resize(std::size_t(chunk));
                const ssize_t got = ::pread(connection.file.get(), connection.output.data(),
                                            std::size_t(chunk), off_t(part.offset));
                if (got <= 0) {  // the file shrank under us
                    connection.dead = true;
                    return Progress::blocked;
                }
                connection.output.resize(std::size_t(got));
                for (const auto& [first, last] : faults.flips) {
                    const std::uint64_t begin = std::max(first, part.offset);
                    const std::uint64_t end = std::min(last, part.offset + std::uint64_t(got));
                    for (std::uint64_t at = begin; at < end; ++at) {
                        char& byte = connection.output[std::size_t(at - part.offset)];
                        byte = char(~byte);
                    }
                }
                part.offset += std::uint64_t(got);
                part.length -= std::uint64_t(got);
                connection.body_bytes_out += std::uint64_t(got);
                if (part.length == 0) connection.body.pop_front();
            }
            // MSG_MORE: a head goes out in one segment with the body that
            // follows, unless pacing holds the body back.
            const bool more = !connection.body.empty() && rate_bytes == 0;
            const int flags = MSG_NOSIGNAL | (more ? MSG_MORE : 0);
            const ssize_t sent =
                ::send(connection.socket.get(), connection.output.data() + connection.output_sent,
                       connection.output.size() - connection.output_sent, flags);
            if (sent > 0) {
                connection.output_sent += std::size_t(sent);
                connection.progress_bytes += std::uint64_t(sent);
                connection.last_activity = Clock::now();
            } else if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
                return Progress::blocked;
            } else {
                connection.dead = true;
                return Progress::blocked;
            }
        }
    }

    void finish_response(Connection& connection) {
        connection.file.reset();
        connection.body.clear();
        connection.faults = {};
        std::string().swap(connection.output);  // the chunk buffer is not kept while idle
        connection.output_sent = 0;
        const auto now = Clock::now();
        connection.last_activity = now;
        if (connection.close_after) {
            // Shut the write side and read until the peer closes, so that
            // unread input does not make the kernel reset the connection
            // before the client has read the response.
            ::shutdown(connection.socket.get(), SHUT_WR);
            std::string().swap(connection.input);
            connection.state = Connection::State::draining;
            connection.drain_until = now + drain_time;
        } else {
            connection.state = Connection::State::reading;
            connection.head_started = now;  // for a pipelined request already in
            if (connection.input.empty()) std::string().swap(connection.input);
        }
    }

    // Whether the bytes appended since the parser last found the head
    // incomplete can change that: the complete lines before are the same, so
    // only a new line end or the unfinished line or head passing its limit
    // can (the limits parse_request_head applies to partial input).
    bool head_may_have_changed(const Connection& connection) const {
        const std::string_view input = connection.input;
        if (connection.parsed_incomplete == 0) return true;
        if (input.find('\n', connection.parsed_incomplete) != std::string_view::npos) return true;
        const std::size_t last_newline = input.rfind('\n');
        const std::size_t line_start =
            last_newline == std::string_view::npos ? 0 : last_newline + 1;
        return input.size() - line_start > head_limits.max_line_bytes + 1 ||
               input.size() > head_limits.max_head_bytes;
    }

    // Moves a connection on as far as it can go without blocking.
    void service(Connection& connection) {
        while (!connection.dead) {
            switch (connection.state) {
                case Connection::State::reading: {
                    set_interest(connection, EPOLLIN | EPOLLRDHUP);
                    if (connection.input.empty() || !head_may_have_changed(connection)) return;
                    const http::HeadParse parse =
                        http::parse_request_head(connection.input, head_limits);
                    if (parse.outcome == http::HeadParse::Outcome::incomplete) {
                        connection.parsed_incomplete = connection.input.size();
                        return;
                    }
                    if (parse.outcome == http::HeadParse::Outcome::error) {
                        refuse(connection, parse.status);
                    } else {
                        connection.input.erase(0, parse.head_bytes);
                        connection.parsed_incomplete = 0;
                        handle(connection, parse.request);
                    }
                    break;
                }
                case Connection::State::writing:
                    set_interest(connection, EPOLLOUT);
                    if (write_some(connection) == Progress::blocked) return;
                    finish_response(connection);
                    break;
                case Connection::State::waiting:
                    set_interest(connection, 0);
                    return;
                case Connection::State::draining:
                    set_interest(connection, EPOLLIN | EPOLLRDHUP);
                    return;
            }
        }
    }

    void on_readable(Connection& connection) {
        std::array<char, read_size> buffer;
        const bool draining = connection.state == Connection::State::draining;
        // At most one head's worth is buffered: more would be refused anyway.
        const std::size_t room =
            draining ? buffer.size()
                     : std::min(buffer.size(),
                                head_limits.max_head_bytes + 1 -
                                    std::min(connection.input.size(), head_limits.max_head_bytes));
        const ssize_t got = ::recv(connection.socket.get(), buffer.data(), room, 0);
        if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            connection.dead = true;
            return;
        }
        if (got < 0 || draining) return;
        const auto now = Clock::now();
        if (connection.input.empty()) connection.head_started = now;
        connection.input.append(buffer.data(), std::size_t(got));
        connection.last_activity = now;
    }

    // ---- accepting and shedding connections ---------------------------------

    // Closes the connection that matters least: the longest idle, else the
    // request head that has been trickling in longest. False if every
    // connection is busy with a response.
    // Closes the least useful connection other than `spare` (a connection
    // just accepted); false if none may go.
    bool evict_one(std::optional<std::uint64_t> spare = std::nullopt) {
        auto victim = connections.end();
        const auto rank = [](const Connection& connection) {
            // Draining and idle first, then slow heads; older before newer.
            const bool idle =
                connection.state == Connection::State::draining ||
                (connection.state == Connection::State::reading && connection.input.empty());
            return std::pair(idle ? 0 : 1,
                             idle ? connection.last_activity : connection.head_started);
        };
        for (auto it = connections.begin(); it != connections.end(); ++it) {
            const Connection& connection = it->second;
            const bool evictable =
                it->first != spare && (connection.state == Connection::State::draining ||
                                       connection.state == Connection::State::reading);
            if (evictable &&
                (victim == connections.end() || rank(connection) < rank(victim->second))) {
                victim = it;
            }
        }
        if (victim == connections.end()) return false;
        connections.erase(victim);
        return true;
    }

    void set_accepting(bool on) {
        if (accepting == on) return;
        epoll_event event{};
        event.events = on ? std::uint32_t(EPOLLIN) : 0u;
        event.data.u64 = listener_key;
        ::epoll_ctl(epoll.get(), EPOLL_CTL_MOD, listener.get(), &event);
        accepting = on;
    }

    void accept_connections() {
        for (std::size_t accepted = 0; accepted < accepts_per_turn; ++accepted) {
            sockaddr_storage address{};
            socklen_t address_length = sizeof address;
            Descriptor socket(::accept4(listener.get(), reinterpret_cast<sockaddr*>(&address),
                                        &address_length, SOCK_NONBLOCK | SOCK_CLOEXEC));
            if (!socket) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) return;
                if (errno == EMFILE || errno == ENFILE) {
                    if (evict_one()) continue;
                    set_accepting(false);  // every connection is busy: the sweep retries
                    return;
                }
                continue;  // ECONNABORTED and the like: try the next one
            }
            const int one = 1;
            ::setsockopt(socket.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            const std::uint64_t key = next_key++;
            epoll_event event{};
            event.events = EPOLLIN | EPOLLRDHUP;
            event.data.u64 = key;
            if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, socket.get(), &event) != 0) continue;
            Connection& connection = connections[key];
            connection.socket = std::move(socket);
            connection.key = key;
            connection.peer = peer_name(address);
            connection.interest = event.events;
            connection.last_activity = Clock::now();
            // Over the cap: shed the least useful other connection (the
            // longest idle, else the oldest trickling head), the new one if
            // all the others are busy sending.
            if (connections.size() > connection_cap && !evict_one(key)) connections.erase(key);
        }
    }

    // Closes connections past their deadlines.
    void sweep(Clock::time_point now) {
        const bool crowded = connections.size() * 4 > connection_cap * 3;
        const auto idle_limit =
            seconds(crowded ? std::min(options.idle_timeout_seconds, crowded_idle_timeout)
                            : options.idle_timeout_seconds);
        const auto head_limit = seconds(options.request_timeout_seconds);
        const auto write_limit = seconds(options.write_timeout_seconds);
        // Slow readers are cut too; a slow emulated link is not.
        const double rate_bytes = options.rate_bits_per_second / 8;
        const auto min_progress =
            rate_bytes > 0 ? std::min(min_progress_bytes,
                                      std::uint64_t(rate_bytes * options.write_timeout_seconds / 2))
                           : min_progress_bytes;
        // True if the connection has overstayed; starts a new progress window.
        const auto expired = [&](Connection& connection) {
            switch (connection.state) {
                case Connection::State::reading:
                    return connection.input.empty() ? now - connection.last_activity > idle_limit
                                                    : now - connection.head_started > head_limit;
                case Connection::State::writing:
                    if (now - connection.progress_since <= write_limit) return false;
                    if (connection.progress_bytes < min_progress) {
                        // Reset rather than close: a closed socket would
                        // keep trying to deliver its send buffer.
                        const linger abort{1, 0};
                        ::setsockopt(connection.socket.get(), SOL_SOCKET, SO_LINGER, &abort,
                                     sizeof abort);
                        return true;
                    }
                    connection.progress_since = now;
                    connection.progress_bytes = 0;
                    return false;
                case Connection::State::draining:
                    return now > connection.drain_until;
                case Connection::State::waiting:
                    return false;
            }
            return false;
        };
        for (auto it = connections.begin(); it != connections.end();) {
            it = expired(it->second) ? connections.erase(it) : std::next(it);
        }
        if (!accepting && connections.size() < connection_cap) set_accepting(true);
    }

    void run() {
        // sendfile to a reset connection raises SIGPIPE, which would end the
        // process: blocked in this thread, it only makes the call fail (EPIPE).
        sigset_t pipe_signal;
        sigemptyset(&pipe_signal);
        sigaddset(&pipe_signal, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_signal, nullptr);
        std::array<epoll_event, 256> events;
        auto next_sweep = Clock::now() + sweep_interval;
        while (!stopping) {
            // Nothing may escape this thread (it would end the process): a
            // turn that fails (out of memory, say) is dropped, and the
            // connections it left behind time out as idle ones do.
            try {
                auto next_timer = next_sweep;
                if (!wakes.empty()) next_timer = std::min(next_timer, wakes.top().first);
                const auto wait =
                    std::chrono::ceil<std::chrono::milliseconds>(next_timer - Clock::now());
                const int count = ::epoll_wait(epoll.get(), events.data(), int(events.size()),
                                               int(std::max<std::int64_t>(0, wait.count())));
                for (int i = 0; i < count; ++i) {
                    const std::uint64_t key = events[std::size_t(i)].data.u64;
                    if (key == listener_key) {
                        accept_connections();
                        continue;
                    }
                    if (key == wakeup_key) continue;
                    const auto found = connections.find(key);
                    if (found == connections.end()) continue;  // closed earlier in this turn
                    Connection& connection = found->second;
                    const std::uint32_t ready = events[std::size_t(i)].events;
                    if (ready & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                        if (connection.state == Connection::State::reading ||
                            connection.state == Connection::State::draining) {
                            on_readable(connection);
                        } else if (ready & (EPOLLHUP | EPOLLERR)) {
                            connection.dead = true;
                        }
                    }
                    service(connection);
                    if (connection.dead) connections.erase(found);
                }
                const auto now = Clock::now();
                while (!wakes.empty() && wakes.top().first <= now) {
                    const auto [when, key] = wakes.top();
                    wakes.pop();
                    const auto found = connections.find(key);
                    if (found == connections.end()) continue;
                    Connection& connection = found->second;
                    if (connection.state != Connection::State::waiting ||
                        connection.wake_at != when) {
                        continue;  // a stale wake
                    }
                    connection.state = Connection::State::writing;
                    connection.last_activity = now;
                    service(connection);
                    if (connection.dead) connections.erase(found);
                }
                if (now >= next_sweep) {
                    sweep(now);
                    next_sweep = now + sweep_interval;
                }
            } catch (const std::exception&) {
            }
        }
        connections.clear();
        wakes = {};
    }
};

PackageServer::PackageServer(ServerOptions options) : impl_(std::make_unique<Impl>()) {
    impl_->options = std::move(options);
    impl_->faults = impl_->options.faults;
    std::error_code error;
    impl_->root = fs::canonical(impl_->options.root, error);
    if (error || !fs::is_directory(impl_->root)) {
        throw Error(ErrorCode::invalid_argument,
                    impl_->options.root.string() + ": not a directory to serve");
    }
}

PackageServer::~PackageServer() {
    stop();
}

void PackageServer::start() {
    Impl& impl = *impl_;
    if (impl.loop_thread.joinable()) return;
    const rlim_t descriptors = raise_descriptor_limit();
    impl.connection_cap = std::size_t(std::clamp<long long>(
        std::min<long long>(impl.options.max_connections,
                            static_cast<long long>(descriptors) - reserved_descriptors),
        1, std::numeric_limits<int>::max()));

    const std::string& host = impl.options.host;
    const std::string where = host + ":" + std::to_string(impl.options.port);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    if (::getaddrinfo(host.c_str(), std::to_string(impl.options.port).c_str(), &hints, &found) !=
        0) {
        throw Error(ErrorCode::network, "cannot listen on " + where + ": unknown address");
    }
    const std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> addresses(found, ::freeaddrinfo);
    Descriptor listener;
    for (const addrinfo* address = addresses.get(); address; address = address->ai_next) {
        Descriptor candidate(::socket(address->ai_family,
                                      address->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                                      address->ai_protocol));
        if (!candidate) continue;
        const int one = 1;
        ::setsockopt(candidate.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (::bind(candidate.get(), address->ai_addr, address->ai_addrlen) == 0 &&
            ::listen(candidate.get(), listen_backlog) == 0) {
            listener = std::move(candidate);
            break;
        }
    }
    if (!listener) {
        throw Error(ErrorCode::network,
                    "cannot listen on " + where + " (address in use, or not allowed)");
    }
    sockaddr_storage bound{};
    socklen_t bound_length = sizeof bound;
    ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&bound), &bound_length);
    impl.port =
        ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6&>(bound).sin6_port
                                          : reinterpret_cast<const sockaddr_in&>(bound).sin_port);

    Descriptor epoll(::epoll_create1(EPOLL_CLOEXEC));
    Descriptor wakeup(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!epoll || !wakeup)
        throw Error(ErrorCode::network,
                    "cannot start the server: " + std::string(std::strerror(errno)));
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = Impl::listener_key;
    ::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, listener.get(), &event);
    event.data.u64 = Impl::wakeup_key;
    ::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, wakeup.get(), &event);
    impl.listener = std::move(listener);
    impl.epoll = std::move(epoll);
    impl.wakeup = std::move(wakeup);
    impl.accepting = true;
    impl.stopping = false;
    try {
        impl.loop_thread = std::thread([&impl] { impl.run(); });
    } catch (const std::system_error& error) {
        throw Error(ErrorCode::network, std::string("cannot start the server: ") + error.what());
    }
}

void PackageServer::stop() {
    if (!impl_ || !impl_->loop_thread.joinable()) return;
    impl_->stopping = true;
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t written = ::write(impl_->wakeup.get(), &one, sizeof one);
    impl_->loop_thread.join();
    impl_->listener.reset();
    impl_->epoll.reset();
    impl_->wakeup.reset();
}

int PackageServer::port() const {
    return impl_->port;
}

std::string PackageServer::url() const {
    const std::string& host = impl_->options.host;
    const bool ipv6 = host.find(':') != std::string::npos;
    return "http://" + (ipv6 ? "[" + host + "]" : host) + ":" + std::to_string(impl_->port);
}

}  // namespace bitinc
