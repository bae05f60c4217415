// The package server: static files over HTTP/1.1 (cpp-httplib), with byte
// ranges checked here, link emulation and fault injection.
#include <fcntl.h>
#include <httplib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>

#include "bitinc/error.hpp"
#include "bitinc/net.hpp"

namespace bitinc {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr std::size_t max_ranges = 64;
constexpr std::size_t write_size = 64 * 1024;

// An open file, closed when the last response using it is done.
class OpenFile {
  public:
    explicit OpenFile(int descriptor) : descriptor_(descriptor) {}
    ~OpenFile() {
        if (descriptor_ >= 0) ::close(descriptor_);
    }
    OpenFile(const OpenFile&) = delete;
    OpenFile& operator=(const OpenFile&) = delete;
    int get() const { return descriptor_; }

  private:
    int descriptor_;
};

// The faults that hit one response, decided when its request comes in.
struct ResponseFaults {
    bool drop = false;
    std::uint64_t drop_after = 0;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> flips;  // [first, last)
};

std::string content_type_of(const fs::path& path) {
    const std::string extension = path.extension().string();
    return extension == ".json" ? "application/json" : "application/octet-stream";
}

bool inside(const fs::path& root, const fs::path& candidate) {
    const auto [root_end, _] =
        std::mismatch(root.begin(), root.end(), candidate.begin(), candidate.end());
    return root_end == root.end();
}

}  // namespace

struct PackageServer::Impl {
    ServerOptions options;
    fs::path root;
    httplib::Server server;
    std::thread listener;
    int port = 0;
    std::atomic<bool> stopping{false};
    std::mutex faults_mutex;
    std::vector<FaultRule> faults;  // times count down as faults fire

    // The faults that apply to this response of `file`, consuming their counts.
    ResponseFaults take_faults(const std::string& file, double& delay, bool& fail) {
        const std::lock_guard lock(faults_mutex);
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
                    delay += fault.seconds;
                    break;
                case FaultRule::Kind::fail:
                    fail = true;
                    break;
            }
            if (fault.times > 0) --fault.times;
        }
        return result;
    }

    // Resolves a request path to a regular file under the root, or nothing.
    std::optional<fs::path> resolve(const std::string& request_path) const {
        if (request_path.empty() || request_path.front() != '/' ||
            request_path.find('\0') != std::string::npos) {
            return std::nullopt;
        }
        const fs::path relative = fs::path(request_path.substr(1)).lexically_normal();
        for (const auto& part : relative) {
            if (part == "..") return std::nullopt;
        }
        std::error_code error;
        const fs::path resolved = fs::weakly_canonical(root / relative, error);
        if (error || !inside(root, resolved) || !fs::is_regular_file(resolved, error)) {
            return std::nullopt;
        }
        return resolved;
    }

    void handle(const httplib::Request& request, httplib::Response& response) {
        const auto started = Clock::now();
        const auto path = resolve(request.path);
        if (!path) {
            response.status = 404;
            response.set_content("not found\n", "text/plain");
            return;
        }
        struct stat status {};
        const int descriptor = ::open(path->c_str(), O_RDONLY | O_CLOEXEC);
        auto file = std::make_shared<OpenFile>(descriptor);
        if (descriptor < 0 || ::fstat(descriptor, &status) != 0) {
            response.status = 404;
            response.set_content("not found\n", "text/plain");
            return;
        }
        const std::uint64_t size = std::uint64_t(status.st_size);
        const std::string name = path->filename().string();
        double delay = options.rtt_seconds;
        bool fail = false;
        ResponseFaults faults = take_faults(name, delay, fail);
        if (delay > 0) std::this_thread::sleep_for(std::chrono::duration<double>(delay));
        if (fail) {
            response.status = 503;
            response.set_content("injected failure\n", "text/plain");
            return;
        }

        char etag[64];
        std::snprintf(etag, sizeof etag, "\"%llx-%llx\"", static_cast<unsigned long long>(size),
                      static_cast<unsigned long long>(status.st_mtim.tv_sec) * 1'000'000'000ULL +
                          static_cast<unsigned long long>(status.st_mtim.tv_nsec));
        response.set_header("ETag", etag);
        response.set_header("Accept-Ranges", "bytes");
        // Package files never change; the manifest is the entry point and
        // is revalidated (cheaply, by ETag).
        response.set_header("Cache-Control", name == manifest_file_name
                                                 ? "no-cache"
                                                 : "public, max-age=31536000, immutable");
        if (request.get_header_value("If-None-Match") == etag) {
            response.status = 304;
            return;
        }

        // Byte ranges: httplib 0.11 mishandles ranges that start past the
        // end or run past it, so they are checked and clamped here first.
        // The request object is not const where httplib made it.
        auto& ranges = const_cast<httplib::Request&>(request).ranges;
        if (!ranges.empty()) {
            bool satisfiable = ranges.size() <= max_ranges && size > 0;
            for (auto& [first, last] : ranges) {
                if (first < 0) {  // suffix: the last `last` bytes
                    if (last <= 0) satisfiable = false;
                    first = std::max<ssize_t>(0, ssize_t(size) - last);
                    last = ssize_t(size) - 1;
                } else {
                    if (std::uint64_t(first) >= size) satisfiable = false;
                    if (last < 0 || std::uint64_t(last) >= size) last = ssize_t(size) - 1;
                }
                if (last < first) satisfiable = false;
            }
            if (!satisfiable) {
                ranges.clear();
                response.status = 416;
                response.set_header("Content-Range", "bytes */" + std::to_string(size));
                return;
            }
        }

        const double rate_bytes = options.rate_bits_per_second / 8;
        // Per-response pacing: bytes may leave no earlier than sent / rate
        // after the first byte (a token bucket with a 64 KiB burst).
        struct Pacing {
            Clock::time_point start;
            std::uint64_t sent = 0;
        };
        auto pacing = std::make_shared<Pacing>();
        pacing->start = started + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(delay));
        response.set_content_provider(
            std::size_t(size), content_type_of(*path),
            [this, file, pacing, faults, rate_bytes](std::size_t offset, std::size_t length,
                                                     httplib::DataSink& sink) {
                if (stopping) return false;
                std::size_t chunk = std::min(length, write_size);
                if (faults.drop) {
                    if (pacing->sent >= faults.drop_after) return false;
                    chunk = std::size_t(
                        std::min<std::uint64_t>(chunk, faults.drop_after - pacing->sent));
                }
                std::string buffer(chunk, '\0');
                const ssize_t got = ::pread(file->get(), buffer.data(), chunk, off_t(offset));
                if (got <= 0) return false;
                buffer.resize(std::size_t(got));
                for (const auto& [first, last] : faults.flips) {
                    for (std::uint64_t at = std::max<std::uint64_t>(first, offset);
                         at < std::min<std::uint64_t>(last, offset + buffer.size()); ++at) {
                        buffer[at - offset] = char(~buffer[at - offset]);
                    }
                }
                if (rate_bytes > 0) {
                    const auto due =
                        pacing->start +
                        std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
                            double(pacing->sent + buffer.size()) / rate_bytes));
                    std::this_thread::sleep_until(due - std::chrono::milliseconds(5));
                }
                pacing->sent += buffer.size();
                return sink.write(buffer.data(), buffer.size());
            });
    }
};

PackageServer::PackageServer(ServerOptions options) : impl_(std::make_unique<Impl>()) {
    impl_->options = std::move(options);
    impl_->faults = impl_->options.faults;
    std::error_code error;
    impl_->root = fs::canonical(impl_->options.root, error);
    if (error || !fs::is_directory(impl_->root)) {
        throw Error(impl_->options.root.string() + ": not a directory to serve");
    }
    const int threads = std::max(1, impl_->options.threads);
    // httplib owns the queue it asks for and deletes it.
    impl_->server.new_task_queue = [threads] {
        return new httplib::ThreadPool(std::size_t(threads));
    };
    impl_->server.set_tcp_nodelay(true);
    impl_->server.set_read_timeout(30, 0);
    impl_->server.set_write_timeout(30, 0);
    impl_->server.Get(
        ".*", [impl = impl_.get()](const httplib::Request& request, httplib::Response& response) {
            impl->handle(request, response);
        });
    if (impl_->options.access_log) {
        impl_->server.set_logger([impl = impl_.get()](const httplib::Request& request,
                                                      const httplib::Response& response) {
            std::string line = request.remote_addr + " " + request.method + " " + request.path;
            const std::string range = request.get_header_value("Range");
            if (!range.empty()) line += " [" + range + "]";
            line += " " + std::to_string(response.status);
            const std::string length = response.get_header_value("Content-Length");
            if (!length.empty()) line += " " + length;
            impl->options.access_log(line);
        });
    }
}

PackageServer::~PackageServer() {
    stop();
}

void PackageServer::start() {
    if (impl_->listener.joinable()) return;
    const std::string& host = impl_->options.host;
    if (impl_->options.port == 0) {
        impl_->port = impl_->server.bind_to_any_port(host.c_str());
    } else if (impl_->server.bind_to_port(host.c_str(), impl_->options.port)) {
        impl_->port = impl_->options.port;
    } else {
        impl_->port = -1;
    }
    if (impl_->port <= 0) {
        throw Error("cannot listen on " + host + ":" + std::to_string(impl_->options.port) +
                    " (address in use, or not allowed)");
    }
    impl_->listener = std::thread([impl = impl_.get()] { impl->server.listen_after_bind(); });
}

void PackageServer::stop() {
    if (!impl_ || !impl_->listener.joinable()) return;
    impl_->stopping = true;
    impl_->server.stop();
    impl_->listener.join();
}

int PackageServer::port() const {
    return impl_->port;
}

std::string PackageServer::url() const {
    return "http://" + impl_->options.host + ":" + std::to_string(impl_->port);
}

}  // namespace bitinc
