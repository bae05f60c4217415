// The device's fetcher: manifest, then the topology (verified), then rungs
// streamed with range requests and decoded on worker threads as units
// complete; retries with backoff, resumable .part files, refetch of units
// that fail their CRC or SHA-256, and graceful degradation of refinements.
// The transport is libcurl: one handle per package (keep-alive), header lines
// counted and bounded by net::ResponseHeadParser, memory taken as bytes
// arrive, never as a server or manifest claims.
#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <set>
#include <span>
#include <system_error>
#include <thread>
#include <utility>

#include "bitinc/decoder.hpp"
#include "bitinc/error.hpp"
#include "bitinc/fetch.hpp"
#include "bitinc/package_reader.hpp"
#include "bitinc/trust.hpp"
#include "core/parallel.hpp"
#include "core/sha256.hpp"
#include "net/http_response.hpp"

namespace bitinc {

namespace {

// A signature file is a few hundred bytes.
constexpr std::uint64_t max_signature_bytes = 64 * 1024;

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point from, Clock::time_point to) {
    return std::chrono::duration<double>(to - from).count();
}

struct ParsedUrl {
    bool local = false;  // a package directory on this machine
    std::string origin;  // scheme://host[:port]; empty when local
    std::string path;    // ends with '/'
};

ParsedUrl parse_package_url(const std::string& url) {
    const std::size_t scheme_end = url.find("://");
    const std::string scheme = scheme_end == std::string::npos ? "" : url.substr(0, scheme_end);
    ParsedUrl parsed;
    std::error_code not_a_directory;
    if (scheme == "file" || (scheme.empty() && fs::is_directory(url, not_a_directory))) {
        parsed.local = true;
        parsed.path = scheme.empty() ? url : url.substr(scheme_end + 3);
    } else if (scheme != "http" && scheme != "https") {
        throw Error(ErrorCode::invalid_argument, "'" + url +
                                                     "' is not an http://, https:// or file:// URL "
                                                     "of a package, nor a package directory");
    } else {
        const std::size_t path_start = url.find('/', scheme_end + 3);
        parsed.origin = url.substr(0, path_start);
        if (parsed.origin.size() <= scheme_end + 3)
            throw Error(ErrorCode::invalid_argument, "'" + url + "' names no host");
        parsed.path = path_start == std::string::npos ? "/" : url.substr(path_start);
    }
    if (parsed.path.empty()) parsed.path = "./";
    const std::string manifest_name(manifest_file_name);
    if (parsed.path.size() >= manifest_name.size() &&
        parsed.path.compare(parsed.path.size() - manifest_name.size(), manifest_name.size(),
                            manifest_name) == 0) {
        parsed.path.resize(parsed.path.size() - manifest_name.size());
    }
    if (parsed.path.back() != '/') parsed.path += '/';
    return parsed;
}

// Ends the whole fetch, past every retry: FetchOptions::cancel was set, or
// the deadline passed.
class Stopped : public Error {
  public:
    using Error::Error;
};
class Cancelled : public Stopped {
  public:
    Cancelled() : Stopped(ErrorCode::cancelled, "cancelled") {}
};

// "12.3 MB" or "517 bytes", for messages.
std::string amount(std::uint64_t bytes) {
    if (bytes < 1'000'000) return std::to_string(bytes) + " bytes";
    char text[32];
    std::snprintf(text, sizeof text, "%.1f MB", double(bytes) / 1e6);
    return text;
}

std::string seconds_text(double seconds) {
    char text[32];
    std::snprintf(text, sizeof text, "%g s", seconds);
    return text;
}

// What one request achieved.
struct Outcome {
    std::uint64_t received = 0;  // new bytes handed over
    std::uint64_t reached = 0;   // the file offset the try got to (progress when it grows)
    bool complete = false;
    bool retryable = true;
    std::string problem;
    ErrorCode code = ErrorCode::network;  // of `problem`
};

// Why a transfer callback asked libcurl to stop.
enum class Abort { none, cancel, deadline, slow, stalled, receiver, done };

struct CurlFree {
    void operator()(CURL* handle) const { curl_easy_cleanup(handle); }
};

void init_curl_once() {
    static std::once_flag once;
    std::call_once(once, [] {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            throw Error(ErrorCode::internal, "libcurl could not be initialized");
        }
    });
}

// HTTP access to the files of one package, with retries.
class PackageSource {
  public:
    PackageSource(const std::string& url, const FetchOptions& options, Clock::time_point start,
                  std::function<void(const FetchEvent&)> emit)
        : url_(parse_package_url(url)), options_(options), start_(start), emit_(std::move(emit)) {
        if (url_.local) return;
        init_curl_once();
        // One handle for the whole package: its connection is kept alive.
        curl_.reset(curl_easy_init());
        if (!curl_)
            throw Error(ErrorCode::network, "'" + url + "': cannot make an HTTP client for it");
        CURL* const curl = curl_.get();
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 5L);
        curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                         long(std::max(1.0, options.timeout_seconds * 1000)));
        curl_easy_setopt(curl, CURLOPT_USERAGENT, "bitinc-fetch");
        curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, &PackageSource::on_header);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &PackageSource::on_body);
        curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, &PackageSource::on_progress);
        curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error_text_);
    }

    // The same contract as request(), for a package directory on disk.
    Outcome read_local(const std::string& file, std::uint64_t from, std::uint64_t to,
                       std::uint64_t file_size,
                       const std::function<bool(const char*, std::size_t)>& receive) {
        Outcome outcome;
        const fs::path path = fs::path(url_.path) / file;
        std::ifstream in(path, std::ios::binary);
        if (!in) {
            outcome.retryable = false;
            outcome.problem = "no such file";
            outcome.code = ErrorCode::io;
            return outcome;
        }
        std::error_code error;
        const std::uint64_t size = fs::file_size(path, error);
        if (!error && file_size > 0 && size != file_size) {
            outcome.retryable = false;
            outcome.code = ErrorCode::corrupt_data;
            outcome.problem = "the file is " + std::to_string(size) + " bytes, the manifest says " +
                              std::to_string(file_size);
            return outcome;
        }
        in.seekg(std::streamoff(from));
        std::vector<char> buffer(1 << 20);
        while (to == 0 || from + outcome.received < to) {
            check_stop(file);
            std::size_t want = buffer.size();
            if (to > 0)
                want = std::size_t(std::min<std::uint64_t>(want, to - from - outcome.received));
            in.read(buffer.data(), std::streamsize(want));
            const std::size_t got = std::size_t(in.gcount());
            if (got == 0) break;
            outcome.received += got;
            if (!receive(buffer.data(), got)) break;
        }
        outcome.complete = to == 0 || from + outcome.received == to;
        if (!outcome.complete) {
            outcome.retryable = false;
            outcome.problem = "the file is shorter than the manifest says";
            outcome.code = ErrorCode::corrupt_data;
        }
        return outcome;
    }

    std::string where(const std::string& file) const { return url_.origin + url_.path + file; }

    // Requests bytes [from, to) of `file` (to == 0: to the end, at most
    // `limit` bytes) whose size the manifest gives as `file_size` (0: not
    // known), and hands them to `receive` in order. Throws only Stopped.
    Outcome request(const std::string& file, std::uint64_t from, std::uint64_t to,
                    std::uint64_t limit, std::uint64_t file_size,
                    const std::function<bool(const char*, std::size_t)>& receive) {
        check_stop(file);
        // The first byte's arrival splits a request's time into waiting
        // (round trip, server) and transfer, for the start-up breakdown.
        const std::function<bool(const char*, std::size_t)> timed = [&](const char* data,
                                                                        std::size_t length) {
            if (first_byte_at < 0) first_byte_at = seconds_between(start_, Clock::now());
            return receive(data, length);
        };
        Outcome outcome = url_.local ? read_local(file, from, to, file_size, timed)
                                     : request_http(file, from, to, limit, file_size, timed);
        bytes_downloaded += outcome.received;
        outcome.reached = from + outcome.received;
        return outcome;
    }

    // Runs `attempt` until it completes, with backoff between tries; gives up
    // after max_attempts failed tries that did not bring the file further
    // than it has ever been.
    void with_retries(const std::string& file, const std::function<Outcome()>& attempt) {
        int failed = 0;
        std::uint64_t best = 0;
        double backoff = options_.backoff_initial;
        for (;;) {
            const Outcome outcome = attempt();
            if (outcome.complete) return;
            if (!outcome.retryable) throw Error(outcome.code, where(file) + ": " + outcome.problem);
            if (outcome.received > 0 && outcome.reached > best) {
                best = outcome.reached;  // progress: the budget starts over
                failed = 0;
                backoff = options_.backoff_initial;
            }
            if (++failed >= options_.max_attempts) {
                throw Error(outcome.code,
                            where(file) + ": " + outcome.problem + " (gave up after " +
                                std::to_string(options_.max_attempts) + " tries without progress)");
            }
            ++retries;
            FetchEvent event;
            event.kind = FetchEvent::Kind::retry;
            event.seconds = seconds_between(start_, Clock::now());
            event.message = where(file) + ": " + outcome.problem + "; retrying in " +
                            std::to_string(int(backoff * 1000)) + " ms";
            emit_(event);
            pause(file, backoff);
            backoff = std::min(backoff * 2, options_.backoff_max);
        }
    }

    // Bytes [from, to) of `file` (to == 0: the whole file, at most
    // `max_bytes`), retried until they arrive and `check` accepts them:
    // it returns "" or what is wrong, and a rejection counts as a failed try
    // that brought nothing.
    std::string fetch_checked(const std::string& file, std::uint64_t from, std::uint64_t to,
                              std::uint64_t max_bytes, std::uint64_t file_size,
                              const std::function<std::string(const std::string&)>& check) {
        std::string bytes;
        with_retries(file, [&] {
            bytes.clear();
            bool too_large = false;
            Outcome outcome = request(file, from, to, max_bytes, file_size,
                                      [&](const char* data, std::size_t length) {
                                          too_large = bytes.size() + length > max_bytes;
                                          if (!too_large) bytes.append(data, length);
                                          return !too_large;
                                      });
            if (too_large) {
                outcome.complete = false;
                outcome.retryable = false;
                outcome.problem = "larger than " + std::to_string(max_bytes) + " bytes";
                outcome.code = ErrorCode::corrupt_data;
            }
            if (outcome.complete) {
                if (std::string problem = check(bytes); !problem.empty()) {
                    outcome.complete = false;
                    outcome.received = 0;
                    outcome.reached = 0;
                    outcome.problem = std::move(problem);
                    outcome.code = ErrorCode::corrupt_data;
                }
            }
            return outcome;
        });
        return bytes;
    }

    bool cancelled() const { return options_.cancel != nullptr && options_.cancel->load(); }

    bool past_deadline() const {
        return options_.deadline_seconds > 0 &&
               seconds_between(start_, Clock::now()) >= options_.deadline_seconds;
    }

    // Throws Stopped when the fetch must end now.
    void check_stop(const std::string& file) const {
        if (cancelled()) throw Cancelled();
        if (past_deadline()) {
            throw Stopped(
                ErrorCode::network,
                where(file) + ": deadline of " + seconds_text(options_.deadline_seconds) +
                    " passed after " +
                    amount(bytes_downloaded + (transfer_ ? transfer_->outcome.received : 0)));
        }
    }

    void pause(const std::string& file, double seconds) const {
        const auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                              std::chrono::duration<double>(seconds));
        while (Clock::now() < until) {
            check_stop(file);
            std::this_thread::sleep_for(
                std::min<Clock::duration>(until - Clock::now(), std::chrono::milliseconds(20)));
        }
    }

    std::size_t retries = 0;
    std::uint64_t bytes_downloaded = 0;
    // Seconds since the fetch started when a body byte first came in since
    // this was last set to -1.
    double first_byte_at = -1;

  private:
    // The state of the request under way, for libcurl's callbacks.
    struct Transfer {
        std::uint64_t from = 0;
        std::uint64_t to = 0;
        std::uint64_t limit = 0;
        std::uint64_t file_size = 0;
        const std::function<bool(const char*, std::size_t)>* receive = nullptr;
        net::ResponseHeadParser headers;
        std::optional<net::ResponseVerdict> verdict;
        std::uint64_t skip = 0;
        Outcome outcome;
        Abort abort = Abort::none;
        Clock::time_point started;
        Clock::time_point last_byte;
        // (time, bytes received by then) over the min-rate window.
        std::deque<std::pair<Clock::time_point, std::uint64_t>> samples;
    };

    static std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
        auto& self = *static_cast<PackageSource*>(user);
        Transfer& transfer = *self.transfer_;
        const std::size_t length = size * count;
        return transfer.headers.add_line(std::string_view(data, length)) ? length : 0;
    }

    static std::size_t on_body(char* data, std::size_t size, std::size_t count, void* user) {
        auto& self = *static_cast<PackageSource*>(user);
        Transfer& transfer = *self.transfer_;
        std::size_t length = size * count;
        const std::size_t handled = length;
        if (!transfer.verdict) {
            transfer.verdict = net::judge_response(transfer.headers.head(), transfer.from,
                                                   transfer.to, transfer.file_size);
            transfer.skip = transfer.verdict->skip;
        }
        if (!transfer.verdict->accept) return 0;
        transfer.last_byte = Clock::now();
        if (transfer.skip > 0) {
            const std::size_t dropped = std::size_t(std::min<std::uint64_t>(transfer.skip, length));
            transfer.skip -= dropped;
            data += dropped;
            length -= dropped;
        }
        bool more = true;  // false: everything asked for is in
        if (transfer.to > 0) {
            const std::uint64_t wanted = transfer.to - transfer.from - transfer.outcome.received;
            if (length >= wanted) {
                length = std::size_t(wanted);
                more = false;
            }
        }
        // Only the bytes kept count against the limit: a server that ignores
        // Range sends the whole file, of which the range is cut out.
        if (transfer.outcome.received + length > transfer.limit) {
            transfer.outcome.retryable = false;
            transfer.outcome.problem = "larger than " + std::to_string(transfer.limit) + " bytes";
            transfer.outcome.code = ErrorCode::corrupt_data;
            return 0;
        }
        if (length > 0) {
            transfer.outcome.received += length;
            if (!(*transfer.receive)(data, length)) {
                transfer.abort = Abort::receiver;
                return 0;
            }
        }
        if (!more && transfer.to > 0 && handled > length) {
            transfer.abort = Abort::done;  // a server that sends more than the range
            return 0;
        }
        return handled;
    }

    static int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
        auto& self = *static_cast<PackageSource*>(user);
        Transfer& transfer = *self.transfer_;
        const auto now = Clock::now();
        if (self.cancelled()) {
            transfer.abort = Abort::cancel;
        } else if (self.past_deadline()) {
            transfer.abort = Abort::deadline;
        } else if (seconds_between(transfer.last_byte, now) > self.options_.timeout_seconds) {
            transfer.abort = Abort::stalled;
        } else if (self.options_.min_rate_bytes_per_second > 0) {
            const double window = self.options_.min_rate_window_seconds;
            auto& samples = transfer.samples;
            samples.emplace_back(now, transfer.outcome.received);
            while (samples.size() >= 2 && seconds_between(samples[1].first, now) >= window) {
                samples.pop_front();
            }
            const bool long_enough = seconds_between(transfer.started, now) >= window;
            const double arrived = double(transfer.outcome.received - samples.front().second);
            if (long_enough && arrived < self.options_.min_rate_bytes_per_second * window) {
                transfer.abort = Abort::slow;
            }
        }
        return transfer.abort == Abort::none ? 0 : 1;
    }

    Outcome request_http(const std::string& file, std::uint64_t from, std::uint64_t to,
                         std::uint64_t limit, std::uint64_t file_size,
                         const std::function<bool(const char*, std::size_t)>& receive) {
        Transfer transfer;
        transfer.from = from;
        transfer.to = to;
        transfer.limit = to > 0 ? to - from : limit;
        transfer.file_size = file_size;
        transfer.receive = &receive;
        transfer.started = transfer.last_byte = Clock::now();
        transfer.samples.emplace_back(transfer.started, 0);
        transfer_ = &transfer;

        CURL* const curl = curl_.get();
        const std::string target = url_.origin + url_.path + file;
        const std::string range =
            from > 0 || to > 0
                ? std::to_string(from) + "-" + (to > 0 ? std::to_string(to - 1) : std::string())
                : std::string();
        curl_easy_setopt(curl, CURLOPT_URL, target.c_str());
        curl_easy_setopt(curl, CURLOPT_RANGE, range.empty() ? nullptr : range.c_str());
        // A 200 to a range request carries the whole file, from its start.
        const std::uint64_t most = to > 0 ? std::max(to, file_size) : limit;
        curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE,
                         curl_off_t(std::min<std::uint64_t>(most, std::uint64_t{1} << 62)));
        // libcurl's own timer ends the request right at the deadline; the
        // progress callback alone runs only about once a second when idle.
        long timeout_ms = 0;
        if (options_.deadline_seconds > 0) {
            const double left = options_.deadline_seconds - seconds_between(start_, Clock::now());
            timeout_ms = long(std::max(1.0, left * 1000 + 1));
        }
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
        curl_easy_setopt(curl, CURLOPT_HEADERDATA, this);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, this);
        curl_easy_setopt(curl, CURLOPT_XFERINFODATA, this);
        error_text_[0] = '\0';
        const CURLcode code = curl_easy_perform(curl);
        transfer_ = nullptr;
        Outcome& outcome = transfer.outcome;
        if (transfer.abort == Abort::cancel) throw Cancelled();
        if (transfer.abort == Abort::deadline ||
            (code == CURLE_OPERATION_TIMEDOUT && past_deadline())) {
            bytes_downloaded += outcome.received;  // for the message
            outcome.received = 0;
            check_stop(file);
        }
        if (!outcome.problem.empty()) return outcome;  // decided in a callback
        if (!transfer.headers.problem().empty()) {
            outcome.problem = transfer.headers.problem();
            return outcome;
        }
        if (!transfer.verdict && transfer.headers.complete()) {
            transfer.verdict = net::judge_response(transfer.headers.head(), from, to, file_size);
        }
        if (transfer.verdict && !transfer.verdict->accept) {
            outcome.problem = transfer.verdict->problem;
            outcome.retryable = transfer.verdict->retryable;
            return outcome;
        }
        const auto ended_early = [&] {
            std::string problem = "the response ended after " + std::to_string(outcome.received);
            if (to > 0) {
                problem += " of " + std::to_string(to - from);
            } else if (transfer.verdict && transfer.verdict->body_bytes) {
                problem += " of " + std::to_string(*transfer.verdict->body_bytes);
            }
            return problem + " bytes";
        };
        switch (transfer.abort) {
            case Abort::slow:
                outcome.problem = "fewer than " +
                                  amount(std::uint64_t(options_.min_rate_bytes_per_second *
                                                       options_.min_rate_window_seconds)) +
                                  " came in " + seconds_text(options_.min_rate_window_seconds) +
                                  " (below the minimum rate)";
                return outcome;
            case Abort::stalled:
                outcome.problem =
                    "no data for " + seconds_text(options_.timeout_seconds) + " (timeout)";
                return outcome;
            case Abort::receiver:
                return outcome;  // the caller knows why
            case Abort::done:
                outcome.complete = true;
                return outcome;
            default:
                break;
        }
        if (code == CURLE_OK && transfer.verdict) {
            const std::optional<std::uint64_t> body = transfer.verdict->body_bytes;
            outcome.complete = to > 0 ? outcome.received == to - from
                                      : !body || outcome.received + transfer.verdict->skip == *body;
            if (!outcome.complete) outcome.problem = ended_early();
            return outcome;
        }
        switch (code) {
            case CURLE_OK:
                outcome.problem = "the response had no head";
                break;
            case CURLE_PARTIAL_FILE:
                outcome.problem = ended_early();
                break;
            case CURLE_FILESIZE_EXCEEDED:
                outcome.retryable = false;
                outcome.problem = "larger than " + std::to_string(transfer.limit) + " bytes";
                outcome.code = ErrorCode::corrupt_data;
                break;
            case CURLE_TOO_MANY_REDIRECTS:
            case CURLE_UNSUPPORTED_PROTOCOL:
            case CURLE_URL_MALFORMAT:
                outcome.retryable = false;
                [[fallthrough]];
            default:
                outcome.problem = std::string(curl_easy_strerror(code));
                if (error_text_[0] != '\0')
                    outcome.problem += std::string(" (") + error_text_ + ")";
                if (code == CURLE_COULDNT_CONNECT || code == CURLE_COULDNT_RESOLVE_HOST) {
                    outcome.problem = "the connection failed (" + outcome.problem + ")";
                }
        }
        return outcome;
    }

    ParsedUrl url_;
    const FetchOptions& options_;
    Clock::time_point start_;
    std::function<void(const FetchEvent&)> emit_;
    std::unique_ptr<CURL, CurlFree> curl_;
    char error_text_[CURL_ERROR_SIZE] = {};
    Transfer* transfer_ = nullptr;  // during curl_easy_perform
};

// A partial download kept on disk: the first bytes of a rung file.
class PartFile {
  public:
    PartFile(const fs::path& directory, const FileEntry& entry) {
        if (directory.empty()) return;
        std::error_code error;
        fs::create_directories(directory, error);
        // The hash in the name keeps parts of another package version apart.
        path_ = directory / (entry.file + "." + entry.sha256.substr(0, 16) + ".part");
    }

    // Hands what an earlier run kept (at most `most` bytes) to `consume`
    // piece by piece; returns how many bytes that was.
    std::uint64_t restore(std::uint64_t most,
                          const std::function<bool(const char*, std::size_t)>& consume) {
        if (path_.empty()) return 0;
        std::ifstream in(path_, std::ios::binary);
        if (!in) return 0;
        std::vector<char> buffer(std::size_t(std::min<std::uint64_t>(most, 1 << 20)));
        std::uint64_t kept = 0;
        while (kept < most) {
            const std::size_t want =
                std::size_t(std::min<std::uint64_t>(buffer.size(), most - kept));
            in.read(buffer.data(), std::streamsize(want));
            const std::size_t got = std::size_t(in.gcount());
            if (got == 0) break;
            if (!consume(buffer.data(), got)) return kept;
            kept += got;
        }
        return kept;
    }

    void open_for_append(std::uint64_t kept) {
        if (path_.empty()) return;
        std::error_code error;
        if (fs::exists(path_, error)) fs::resize_file(path_, kept, error);
        stream_.open(path_, std::ios::binary | std::ios::app);
    }

    void append(const char* data, std::size_t length) {
        if (stream_.is_open()) stream_.write(data, std::streamsize(length));
    }

    void flush() {
        if (stream_.is_open()) stream_.flush();
    }

    void remove() {
        if (stream_.is_open()) stream_.close();
        std::error_code error;
        if (!path_.empty()) fs::remove(path_, error);
    }

  private:
    fs::path path_;
    std::ofstream stream_;
};

}  // namespace

namespace {

// A ByteSource over PackageSource: HTTP range requests on one kept-alive
// connection, with the fetcher's retries, timeouts, deadline and minimum
// rate, or plain reads of a package directory.
class HttpByteSource : public ByteSource {
  public:
    HttpByteSource(const std::string& url, const FetchOptions& options)
        : url_(url), options_(options) {
        options_.cancel = &cancelled_;  // cancel() stops a request under way
        source_.emplace(url, options_, Clock::now(), [this](const FetchEvent& event) {
            if (options_.on_event) options_.on_event(event);
        });
    }

    std::string name() const override { return url_; }

    void read(const ByteRange& range, const ByteSink& sink) override {
        std::uint64_t at = range.begin;
        bool stopped = false;  // the sink has what it wants
        // A whole file (end 0) is a manifest or its signature.
        const std::uint64_t limit = range.end == 0 ? max_manifest_bytes : range.end - range.begin;
        source_->with_retries(range.file, [&] {
            // A retry resumes where the bytes stopped.
            Outcome outcome = source_->request(
                range.file, at, range.end, limit, 0, [&](const char* data, std::size_t length) {
                    at += length;
                    stopped = !sink(std::span(reinterpret_cast<const std::uint8_t*>(data), length));
                    return !stopped;
                });
            if (stopped) outcome.complete = true;
            return outcome;
        });
    }

    void cancel() override { cancelled_ = true; }

  private:
    std::string url_;
    std::atomic<bool> cancelled_{false};
    FetchOptions options_;
    std::optional<PackageSource> source_;  // refers to options_
};

}  // namespace

std::unique_ptr<ByteSource> make_package_source(const std::string& url,
                                                const FetchOptions& options) {
    return std::make_unique<HttpByteSource>(url, options);
}

FetchResult fetch_package(const std::string& url, const FetchOptions& options) {
    const auto start = Clock::now();
    const auto now = [&] { return seconds_between(start, Clock::now()); };
    const auto emit = [&](const FetchEvent& event) {
        if (options.on_event) options.on_event(event);
    };
    PackageSource source(url, options, start, emit);
    FetchResult result;
    // The model held is hashed while the manifest is on its way: which
    // delta applies (if any) is known as soon as the manifest is.
    std::future<std::string> previous_hash;
    if (options.previous && options.mode == FetchMode::incremental) {
        previous_hash = std::async(std::launch::async,
                                   [&options] { return model_weights_sha256(*options.previous); });
    }

    // A signed package's signature comes over a connection of its own, at
    // the same time as the manifest: checking it costs no round trip.
    std::future<std::string> signature_download;
    if (options.trust) {
        signature_download = std::async(std::launch::async, [&url, &options, start] {
            PackageSource signature_source(url, options, start, [](const FetchEvent&) {});
            try {
                return signature_source.fetch_checked(
                    std::string(signature_file_name), 0, 0, max_signature_bytes, 0,
                    [](const std::string&) { return std::string(); });
            } catch (const Error& error) {
                throw Error(error.code(),
                            std::string(error.what()) +
                                " (the package is not signed, or its signature cannot be had)");
            }
        });
    }
    source.first_byte_at = -1;
    const std::string manifest_text =
        source.fetch_checked(std::string(manifest_file_name), 0, 0, max_manifest_bytes, 0,
                             [](const std::string&) { return std::string(); });
    result.manifest_download.first_byte_at = source.first_byte_at;
    result.manifest_download.downloaded_at = now();
    result.manifest_bytes = manifest_text.size();
    const std::string manifest_where = source.where(std::string(manifest_file_name));
    // Nothing of an untrusted manifest is read before its signature verifies.
    std::optional<InstalledReleases> installed;
    if (options.trust) {
        installed.emplace(options.trust->installed_releases.empty()
                              ? InstalledReleases::default_path()
                              : options.trust->installed_releases);
        result.manifest =
            check_trusted_manifest(options.trust->public_key_pem, manifest_text,
                                   signature_download.get(), &*installed, manifest_where);
        result.signer_key_id = key_id_of(options.trust->public_key_pem);
    } else {
        result.manifest = parse_manifest(manifest_text, manifest_where);
    }
    const Manifest& manifest = result.manifest;
    result.manifest_at = now();
    {
        FetchEvent event;
        event.kind = FetchEvent::Kind::manifest_ready;
        event.seconds = result.manifest_at;
        event.manifest = &manifest;
        emit(event);
    }

    const FetchPlan plan =
        plan_fetch(manifest, options.mode == FetchMode::direct, options.until_bits,
                   options.until_accuracy_point, source.where(std::string(manifest_file_name)));
    result.target_bits = plan.target_bits;
    result.at_accuracy_point = plan.at_accuracy_point;

    // The device's state machine is the push decoder's: it plans the rungs
    // (or a version delta and the rungs above it), checks every byte and
    // applies the units on its worker threads. What is left here moves the
    // bytes it wants, with retries and resuming, and keeps the timeline.
    DecoderOptions decoder_options;
    decoder_options.direct = options.mode == FetchMode::direct;
    decoder_options.until_bits = options.until_bits;
    decoder_options.until_accuracy_point = options.until_accuracy_point;
    decoder_options.decode_threads = std::max(options.decode_threads, 1);
    decoder_options.hold_decoding = options.hold_decoding;
    if (previous_hash.valid()) {
        decoder_options.previous = options.previous.get();
        decoder_options.previous_sha256 = previous_hash.get();
    }
    std::string package_where = source.where("");
    if (package_where.ends_with('/')) package_where.pop_back();
    PackageDecoder decoder(decoder_options, package_where);
    decoder.push_manifest(std::span(reinterpret_cast<const std::uint8_t*>(manifest_text.data()),
                                    manifest_text.size()));
    const std::optional<std::size_t> delta_index = decoder.delta();

    // What this fetch keeps per file it wants.
    struct FileProgress {
        const RungEntry* rung = nullptr;  // nullptr: the topology or delta file
        std::uint64_t wanted = 0;         // bytes of it the plan wants
        std::uint64_t streamed = 0;       // pushed in order from its start
        core::Sha256 hash;                // of the bytes streamed
        bool started = false;
        bool stream_failed = false;  // the rest of the stream could not be had
        bool restart = false;        // its topology arrived damaged: from the start again
        std::optional<PartFile> part;
        RungTimeline timeline;
    };
    std::map<std::string, FileProgress> files;
    std::uint64_t bytes_total = 0;
    std::optional<RungTimeline> delta_timeline;
    if (delta_index) {
        const DeltaEntry& delta = manifest.deltas[*delta_index];
        for (const FileEntry* entry : {&manifest.topology, &delta.data}) {
            files[entry->file].wanted = entry->bytes;
            bytes_total += entry->bytes;
        }
        delta_timeline.emplace();
        delta_timeline->kind = RungKind::base;
        delta_timeline->bits = delta.bits;
        delta_timeline->bytes = manifest.topology.bytes + delta.data.bytes;
        delta_timeline->from_previous = true;
    }
    for (const FetchPlan::Part& part : plan.parts) {
        if (delta_index && part.rung->bits <= manifest.deltas[*delta_index].bits) continue;
        FileProgress& file = files[part.rung->data.file];
        file.rung = part.rung;
        file.wanted = part.bytes;
        file.timeline.kind = part.rung->kind;
        file.timeline.bits = part.rung->bits;
        file.timeline.parent_bits = part.rung->parent_bits;
        file.timeline.bytes = part.bytes;
        bytes_total += part.bytes;
    }
    std::uint64_t bytes_done = 0;
    std::set<std::string> degraded;
    const auto fetch_event = [&](FetchEvent::Kind kind, int bits) {
        FetchEvent event;
        event.kind = kind;
        event.seconds = now();
        event.bits = bits;
        event.bytes_done = bytes_done;
        event.bytes_total = bytes_total;
        event.units_applied = decoder.units_applied();
        event.assembler = decoder.assembler();
        return event;
    };
    // Decoding time since the last rung was ready, and how much of it came
    // before `downloaded_at` (hidden behind the transfer).
    const auto take_decode_times = [&](RungTimeline& timeline) {
        for (const ApplySpan& span : decoder.take_apply_spans()) {
            const double from = seconds_between(start, span.begin);
            const double to = seconds_between(start, span.end);
            timeline.decode_seconds += to - from;
            timeline.decode_hidden_seconds +=
                std::max(0.0, std::min(to, timeline.downloaded_at) - from);
        }
    };
    // A rung is ready (or, stopping at the accuracy point, its part is).
    const auto finish_rung = [&](FileProgress& file) {
        RungTimeline& timeline = file.timeline;
        const RungEntry& rung = *file.rung;
        const std::size_t rung_index = manifest.rung_index(rung);
        const ModelAssembler& assembler = *decoder.assembler();
        // Units whose chunk did not reach this rung: given up, or built on
        // one given up.
        std::set<std::string> names;
        // (A base or direct rung comes whole or not at all.)
        for (std::size_t u = 0; builds_on_earlier_rung(rung.kind) && u < rung.units.size() &&
                                rung.units[u].offset < file.wanted;
             ++u) {
            const std::size_t tensor = rung.units[u].tensor;
            // (Below: the workers may already be applying the next rung.)
            if (assembler.chunk_bits(rung_index, u) < manifest.unit_bits(rung, tensor)) {
                ++timeline.units_degraded;
                names.insert(manifest.tensors[tensor].name);
            }
        }
        if (!names.empty()) {
            degraded.insert(names.begin(), names.end());
            FetchEvent event = fetch_event(FetchEvent::Kind::degraded, rung.bits);
            event.tensors.assign(names.begin(), names.end());
            event.message = std::to_string(timeline.units_degraded) + " unit(s) of " +
                            rung.data.file + " could not be had" +
                            (file.stream_failed ? " (the download failed)" : "");
            emit(event);
        }
        // The file's own hash covers the bytes as they streamed in, so it
        // speaks for the file only when none had to be fetched again; every
        // unit was checked against its own SHA-256 before it was applied.
        if (!file.stream_failed && file.streamed == rung.data.bytes &&
            file.wanted == rung.data.bytes && timeline.units_refetched == 0 &&
            timeline.units_degraded == 0) {
            if (file.hash.finish_hex() != rung.data.sha256) {
                throw Error(ErrorCode::corrupt_data,
                            source.where(rung.data.file) +
                                ": SHA-256 differs from the manifest's (the manifest's unit "
                                "hashes and file hash disagree)");
            }
            timeline.file_sha256_checked = true;
        }
        timeline.ready_at = now();
        take_decode_times(timeline);
        result.rungs.push_back(timeline);
        FetchEvent event = fetch_event(FetchEvent::Kind::rung_ready, rung.bits);
        event.seconds = timeline.ready_at;
        emit(event);
    };
    // How often each unit (file, offset) arrived damaged.
    std::map<std::pair<std::string, std::uint64_t>, int> damage;
    // Takes the decoder's events up to its next need_input (kept in
    // `needed`); true once done.
    std::vector<ByteRange> needed;
    const auto drain = [&]() {
        for (;;) {
            DecoderEvent event = decoder.next_event();
            switch (event.kind) {
                case DecoderEvent::Kind::need_input:
                    needed = std::move(event.wanted);
                    return false;
                case DecoderEvent::Kind::done:
                    return true;
                case DecoderEvent::Kind::manifest_ready:
                    break;  // reported when it was parsed
                case DecoderEvent::Kind::topology_ready: {
                    result.topology_at = now();
                    FetchEvent fetched = fetch_event(FetchEvent::Kind::topology_ready, 0);
                    fetched.seconds = result.topology_at;
                    emit(fetched);
                    break;
                }
                case DecoderEvent::Kind::unit_damaged: {
                    const ByteRange& range = event.wanted.front();
                    FileProgress& file = files.at(range.file);
                    const int times = ++damage[{range.file, range.begin}];
                    const bool topology = file.rung != nullptr &&
                                          starts_with_topology(file.rung->kind) &&
                                          range.begin == 0 && range.end == manifest.topology.bytes;
                    if (topology || file.rung == nullptr) {
                        // The file's head, or a whole file: fetched again from its start.
                        if (times >= options.max_attempts) {
                            throw Error(ErrorCode::corrupt_data,
                                        event.message + " (gave up after " + std::to_string(times) +
                                            " tries)");
                        }
                        // The stream's retries report it (the topology); a
                        // whole file is checked as it is fetched.
                        if (topology) file.restart = true;
                        break;
                    }
                    // A unit fetched again on its own, a bounded number of times.
                    if (times == 1) ++file.timeline.units_refetched;
                    if (times > options.max_attempts) {
                        if (!builds_on_earlier_rung(file.rung->kind) || options.strict) {
                            throw Error(ErrorCode::corrupt_data,
                                        event.message + " (the unit never arrived intact)");
                        }
                        decoder.give_up(range);
                    }
                    break;
                }
                case DecoderEvent::Kind::degraded:
                    break;  // reported per rung when it is ready, with its tensors
                case DecoderEvent::Kind::accuracy_point_ready: {
                    // Stopping at the point: its rung's part is the last one.
                    if (plan.at_accuracy_point) {
                        finish_rung(files.at(manifest.rungs[event.rung].data.file));
                        break;
                    }
                    result.accuracy_point_at = now();
                    FetchEvent fetched =
                        fetch_event(FetchEvent::Kind::accuracy_point_ready, event.bits);
                    fetched.seconds = result.accuracy_point_at;
                    emit(fetched);
                    break;
                }
                case DecoderEvent::Kind::rung_ready: {
                    if (delta_timeline && event.bits == delta_timeline->bits &&
                        result.rungs.empty()) {
                        RungTimeline& timeline = *delta_timeline;
                        timeline.ready_at = now();
                        take_decode_times(timeline);
                        timeline.file_sha256_checked = true;
                        result.rungs.push_back(timeline);
                        bytes_done = std::max(bytes_done, timeline.bytes);
                        emit(fetch_event(FetchEvent::Kind::rung_ready, timeline.bits));
                        break;
                    }
                    finish_rung(files.at(manifest.rungs[event.rung].data.file));
                    break;
                }
            }
        }
    };

    // Pushes bytes of `range`'s file from `offset`; a sink for a request.
    // Exceptions stay out of the transfer's callbacks: caught, the transfer
    // stops, and they are thrown again after it.
    std::exception_ptr caught;
    bool finished = false;
    const auto push_bytes = [&](const ByteRange& range, std::uint64_t offset, const char* data,
                                std::size_t length) {
        try {
            decoder.push(range.file, offset,
                         std::span(reinterpret_cast<const std::uint8_t*>(data), length));
            finished = drain();
            return !finished;
        } catch (...) {
            caught = std::current_exception();
            return false;
        }
    };
    const auto rethrow_caught = [&] {
        if (caught) std::rethrow_exception(std::exchange(caught, nullptr));
    };

    // Bytes of a rung file's stream as they come (from its part file or the
    // network): hashed, counted and pushed; false to stop the read.
    const auto take_stream = [&](FileProgress& file, const char* data, std::size_t length) {
        const std::uint64_t offset = file.streamed;
        file.hash.update(std::string_view(data, length));
        file.streamed += length;
        bytes_done += length;
        if (file.streamed >= file.wanted) {  // the last byte: in before the rung is ready
            if (file.timeline.first_byte_at < 0) file.timeline.first_byte_at = source.first_byte_at;
            file.timeline.downloaded_at = now();
        }
        const bool more = push_bytes({file.rung->data.file, 0, file.wanted}, offset, data, length);
        return more && !file.restart;
    };
    // After a damaged topology at a file's head: the stream from its start.
    const auto start_over = [&](FileProgress& file) {
        file.restart = false;
        bytes_done -= std::min(bytes_done, file.streamed);
        file.streamed = 0;
        file.hash = core::Sha256();
    };
    // The main stream of a rung file: from where it stands to the end wanted,
    // resumed from a part file when there is one.
    const auto stream_rung = [&](FileProgress& file) {
        const RungEntry& rung = *file.rung;
        RungTimeline& timeline = file.timeline;
        if (!file.started) {
            file.started = true;
            // The next rung waits while the caller holds decoding (its first
            // engine is being built): its bytes would only queue, and taking
            // them in costs the cores the build needs.
            while (options.hold_decoding != nullptr && options.hold_decoding->load()) {
                source.check_stop(rung.data.file);
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
            timeline.requested_at = now();
            file.part.emplace(options.part_directory, rung.data);
            file.part->restore(file.wanted, [&](const char* data, std::size_t length) {
                return take_stream(file, data, length);
            });
            rethrow_caught();
        }
        if (file.restart) start_over(file);  // a damaged part file is not resumed
        file.part->open_for_append(file.streamed);
        if (finished) return;
        source.first_byte_at = -1;
        try {
            source.with_retries(rung.data.file, [&] {
                if (file.streamed >= file.wanted) return Outcome{0, file.streamed, true, true, {}};
                Outcome outcome =
                    source.request(rung.data.file, file.streamed, file.wanted, rung.data.bytes,
                                   rung.data.bytes, [&](const char* data, std::size_t length) {
                                       file.part->append(data, length);
                                       const bool more = take_stream(file, data, length);
                                       emit(fetch_event(FetchEvent::Kind::progress, rung.bits));
                                       return more;
                                   });
                file.part->flush();
                rethrow_caught();
                if (finished) outcome.complete = true;  // nothing more is wanted
                if (file.restart) {
                    start_over(file);
                    file.part->open_for_append(0);
                    outcome = Outcome{};
                    outcome.problem =
                        "the topology at its head arrived damaged (SHA-256 differs from the "
                        "manifest's)";
                }
                return outcome;
            });
        } catch (const Stopped&) {
            throw;
        } catch (const Error& error) {
            if (caught || !builds_on_earlier_rung(rung.kind) || options.strict) throw;
            file.stream_failed = true;  // the rest of this refinement cannot be had
            FetchEvent event = fetch_event(FetchEvent::Kind::retry, rung.bits);
            event.message = error.what();
            emit(event);
            timeline.first_byte_at = source.first_byte_at;
            timeline.downloaded_at = now();
            decoder.give_up({rung.data.file, file.streamed, file.wanted});
            finished = drain();
            return;
        }
        if (timeline.first_byte_at < 0) timeline.first_byte_at = source.first_byte_at;
        if (timeline.downloaded_at == 0) timeline.downloaded_at = now();
    };

    // Anything else wanted comes whole: a unit to read again, or, with a
    // version delta, the topology and the delta file.
    const auto fetch_range = [&](const ByteRange& range) {
        FileProgress& file = files.at(range.file);
        const FileEntry* entry = file.rung != nullptr ? &file.rung->data
                                 : range.file == manifest.topology.file
                                     ? &manifest.topology
                                     : &manifest.deltas[*delta_index].data;
        // The topology or the delta file, all of it (checked here).
        const bool whole_file =
            file.rung == nullptr && range.begin == 0 && range.end == entry->bytes;
        if (whole_file && delta_timeline && delta_timeline->requested_at == 0) {
            delta_timeline->requested_at = now();
            source.first_byte_at = -1;
        }
        std::string bytes;
        try {
            // A whole file is checked here, so that a damaged one is a failed
            // try of its own; a unit is checked by the decoder.
            bytes = source.fetch_checked(
                range.file, range.begin, range.end, range.end - range.begin, entry->bytes,
                [&](const std::string& got) {
                    return !whole_file || core::sha256_hex(got) == entry->sha256
                               ? std::string()
                               : std::string("SHA-256 differs from the manifest's");
                });
        } catch (const Stopped&) {
            throw;
        } catch (const Error& error) {
            if (whole_file || !builds_on_earlier_rung(file.rung->kind) || options.strict) {
                throw Error(error.code(),
                            std::string(error.what()) +
                                (whole_file ? "" : " (the unit never arrived intact)"));
            }
            decoder.give_up(range);
            finished = drain();
            return;
        }
        if (whole_file) {
            bytes_done += bytes.size();
            if (delta_timeline) {
                if (delta_timeline->first_byte_at < 0)
                    delta_timeline->first_byte_at = source.first_byte_at;
                delta_timeline->downloaded_at = now();
            }
        }
        push_bytes(range, range.begin, bytes.data(), bytes.size());
        rethrow_caught();
    };

    finished = drain();
    while (!finished) {
        if (needed.empty())
            throw Error(ErrorCode::internal, package_where + ": the decoder wants nothing");
        // Units to read again come first in the decoder's list, then the
        // rest of the stream.
        const ByteRange range = needed.front();
        source.check_stop(range.file);
        FileProgress& file = files.at(range.file);
        if (file.rung != nullptr && range.end == file.wanted &&
            (range.begin == file.streamed || file.restart || !file.started)) {
            stream_rung(file);
        } else {
            fetch_range(range);
        }
        if (!finished) finished = drain();
    }

    const std::shared_ptr<const ModelAssembler> assembler = decoder.shared_assembler();
    if (options.keep_model) result.model = assembler->model();
    result.reached_bits = assembler->reached_rung_bits();
    result.degraded_tensors.assign(degraded.begin(), degraded.end());
    result.bytes_downloaded = source.bytes_downloaded;
    result.retries = source.retries;
    result.seconds = now();
    for (auto& [name, file] : files)
        if (file.part) file.part->remove();
    result.assembler = assembler;
    // Installed: a later fetch of an older release of this model is refused.
    if (installed && degraded.empty()) {
        installed->record(result.signer_key_id, manifest.release->model_id,
                          manifest.release->number);
    }
    return result;
}

}  // namespace bitinc
