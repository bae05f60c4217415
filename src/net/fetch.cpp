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
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <set>
#include <span>
#include <system_error>
#include <thread>
#include <utility>

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

// Applies units on worker threads while the download goes on.
class UnitDecoder {
  public:
    // While *hold is true (if given), queued units wait: the device has
    // something more urgent for its cores (its first engine build).
    UnitDecoder(ModelAssembler& assembler, int threads, Clock::time_point start,
                const std::atomic<bool>* hold = nullptr)
        : assembler_(assembler), start_(start), hold_(hold) {
        try {
            for (int t = 0; t < std::max(1, threads); ++t)
                workers_.emplace_back([this] { work(); });
        } catch (const std::system_error& error) {
            // Fewer workers do; none at all cannot decode.
            if (workers_.empty())
                throw Error(ErrorCode::out_of_memory,
                            std::string("cannot start a decoding thread: ") + error.what());
        }
    }
    ~UnitDecoder() {
        {
            const std::lock_guard lock(mutex_);
            closing_ = true;
        }
        wake_.notify_all();
        workers_.clear();
    }

    struct Job {
        std::size_t rung = 0;
        std::size_t unit = 0;
        std::vector<std::uint8_t> bytes;  // the unit's own copy: nothing else need stay alive
        std::string source;
    };

    std::size_t applied() const { return applied_.load(); }
    // Units that failed their checks or were skipped so far (not yet taken).
    bool troubled() const {
        const std::lock_guard lock(mutex_);
        return !failures_.empty() || !skipped_.empty();
    }

    // Waits while the queued units hold more than max_queued_bytes, so that
    // a link faster than decoding cannot fill memory with a rung's units.
    void push(Job job) {
        {
            std::unique_lock lock(mutex_);
            room_.wait(lock, [this] { return queued_bytes_ < max_queued_bytes; });
            queued_bytes_ += job.bytes.size();
            jobs_.push_back(std::move(job));
            ++pending_;
        }
        wake_.notify_one();
    }

    // Forgets queued units and waits for those in progress.
    void abandon() {
        std::unique_lock lock(mutex_);
        pending_ -= jobs_.size();
        jobs_.clear();
        queued_bytes_ = 0;
        room_.notify_all();
        idle_.wait(lock, [this] { return pending_ == 0; });
    }

    // Waits until every pushed unit is applied or has failed.
    void drain() {
        std::unique_lock lock(mutex_);
        idle_.wait(lock, [this] { return pending_ == 0; });
    }

    // After drain(): units that failed, with the reason, and timing.
    std::vector<std::pair<std::size_t, std::string>> take_failures() {
        const std::lock_guard lock(mutex_);
        return std::exchange(failures_, {});
    }
    std::vector<std::size_t> take_skipped() {
        const std::lock_guard lock(mutex_);
        return std::exchange(skipped_, {});
    }
    // (decode seconds, seconds of it before `downloaded_at`) since the last call.
    std::pair<double, double> take_times(double downloaded_at) {
        const std::lock_guard lock(mutex_);
        double total = 0, hidden = 0;
        for (const auto& [from, to] : spans_) {
            total += to - from;
            hidden += std::max(0.0, std::min(to, downloaded_at) - from);
        }
        spans_.clear();
        return {total, hidden};
    }

  private:
    void work() {
        for (;;) {
            Job job;
            {
                std::unique_lock lock(mutex_);
                wake_.wait(lock, [this] { return closing_ || !jobs_.empty(); });
                // Held: look again every millisecond (the holder does not
                // know this queue to wake it).
                while (hold_ != nullptr && hold_->load() && !closing_)
                    wake_.wait_for(lock, std::chrono::milliseconds(1));
                if (jobs_.empty()) return;
                job = std::move(jobs_.front());
                jobs_.pop_front();
                queued_bytes_ -= job.bytes.size();
            }
            room_.notify_all();
            const RungEntry& rung = assembler_.manifest().rungs[job.rung];
            const double from = seconds_between(start_, Clock::now());
            std::string failure;
            bool skipped = false;
            try {
                // A refinement whose chunk stayed behind (degraded) is skipped.
                if (builds_on_earlier_rung(rung.kind) &&
                    assembler_.chunk_bits(job.rung, job.unit) !=
                        assembler_.manifest().unit_parent_bits(rung, rung.units[job.unit].tensor)) {
                    skipped = true;
                } else {
                    assembler_.apply_unit(job.rung, job.unit, job.bytes, job.source);
                    ++applied_;
                }
            } catch (const std::bad_alloc&) {
                // Nothing may escape a worker (it would end the process): the
                // unit counts as failed, and is fetched and applied again.
                failure = job.source + ": out of memory";
            } catch (const std::exception& error) {
                failure = error.what();
            }
            const double to = seconds_between(start_, Clock::now());
            {
                const std::lock_guard lock(mutex_);
                spans_.emplace_back(from, to);
                if (!failure.empty()) failures_.emplace_back(job.unit, failure);
                if (skipped) skipped_.push_back(job.unit);
                if (--pending_ == 0) idle_.notify_all();
            }
        }
    }

    ModelAssembler& assembler_;
    Clock::time_point start_;
    const std::atomic<bool>* hold_;
    mutable std::mutex mutex_;
    std::condition_variable wake_;
    std::condition_variable idle_;
    std::deque<Job> jobs_;
    std::size_t pending_ = 0;
    static constexpr std::size_t max_queued_bytes = std::size_t{32} << 20;
    std::size_t queued_bytes_ = 0;
    std::condition_variable room_;
    bool closing_ = false;
    std::vector<std::pair<std::size_t, std::string>> failures_;
    std::vector<std::size_t> skipped_;
    std::vector<std::pair<double, double>> spans_;
    std::atomic<std::size_t> applied_{0};
    std::vector<std::jthread> workers_;
};

// Cuts a rung file into its units as the bytes arrive, each unit into a
// buffer of its own that grows with what came (never sized by what the
// manifest claims).
class UnitSplitter {
  public:
    explicit UnitSplitter(const RungEntry& rung) : rung_(rung) {}

    // Takes the next bytes of the file; calls `complete(unit index, bytes)`
    // for each unit they finish.
    void feed(const char* data, std::size_t length,
              const std::function<void(std::size_t, std::vector<std::uint8_t>)>& complete) {
        while (length > 0 && next_ < rung_.units.size()) {
            const std::uint64_t need = rung_.units[next_].length - pending_.size();
            const std::size_t take = std::size_t(std::min<std::uint64_t>(need, length));
            pending_.insert(pending_.end(), data, data + take);
            data += take;
            length -= take;
            if (pending_.size() == rung_.units[next_].length) {
                complete(next_, std::exchange(pending_, {}));
                ++next_;
            }
        }
    }
    std::size_t next_unit() const { return next_; }
    void start_over() {
        next_ = 0;
        pending_.clear();
    }

  private:
    const RungEntry& rung_;
    std::size_t next_ = 0;
    std::vector<std::uint8_t> pending_;
};

// The topology at the head of a base or direct rung's file, gathered as the
// bytes arrive and checked against the manifest's SHA-256 once whole.
class TopologyPrefix {
  public:
    explicit TopologyPrefix(const FileEntry& topology) : expected_(topology) {}

    // Takes the bytes of [data, data + length) that belong to the topology;
    // returns how many.
    std::size_t take(const char* data, std::size_t length) {
        const std::size_t take =
            std::size_t(std::min<std::uint64_t>(length, expected_.bytes - taken_));
        bytes_.append(data, take);
        taken_ += take;
        return take;
    }
    bool complete() const { return taken_ == expected_.bytes; }
    bool intact() const { return complete() && core::sha256_hex(bytes_) == expected_.sha256; }
    // The bytes, once intact; the prefix stays complete.
    std::string release() { return std::exchange(bytes_, {}); }
    void start_over() {
        bytes_.clear();
        taken_ = 0;
    }

  private:
    const FileEntry& expected_;
    std::string bytes_;
    std::uint64_t taken_ = 0;
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
    std::vector<const RungEntry*> rungs;
    for (const FetchPlan::Part& part : plan.parts) rungs.push_back(part.rung);
    const AccuracyPoint* point = plan.at_accuracy_point ? &*manifest.accuracy_point : nullptr;
    result.target_bits = plan.target_bits;
    result.at_accuracy_point = plan.at_accuracy_point;
    // The bytes and units wanted of a rung's file: all, or up to the
    // accuracy point's last unit.
    const auto part_of = [&](const RungEntry& rung) {
        return *std::find_if(plan.parts.begin(), plan.parts.end(),
                             [&](const FetchPlan::Part& part) { return part.rung == &rung; });
    };
    const auto wanted_bytes = [&](const RungEntry& rung) { return part_of(rung).bytes; };
    const auto wanted_units = [&](const RungEntry& rung) { return part_of(rung).units; };
    std::uint64_t bytes_total = 0;
    for (const RungEntry* rung : rungs) bytes_total += wanted_bytes(*rung);
    std::uint64_t bytes_done = 0;
    std::set<std::string> degraded;
    std::vector<PartFile> parts;

    // Both come with the topology, at the head of the first rung's file: it
    // is never used unless its hash matches the manifest's.
    // Shared with the result, so that a caller can write the model from it.
    std::shared_ptr<ModelAssembler> assembler;
    std::optional<UnitDecoder> decoder;
    const auto take_topology = [&](std::string topology, const std::string& where) {
        assembler =
            std::make_shared<ModelAssembler>(manifest, std::move(topology), where + " (topology)");
        decoder.emplace(*assembler, options.decode_threads, start, options.hold_decoding);
        result.topology_at = now();
        FetchEvent event;
        event.kind = FetchEvent::Kind::topology_ready;
        event.seconds = result.topology_at;
        event.assembler = &*assembler;
        emit(event);
    };
    // A version delta from the model the device holds replaces the rungs
    // up to its bits: the topology and the delta file, each checked against
    // the manifest's SHA-256 before any byte is used.
    std::optional<std::size_t> delta_index;
    std::string held_sha256;
    if (previous_hash.valid()) {
        held_sha256 = previous_hash.get();
        delta_index = find_delta(manifest, held_sha256);
        if (delta_index && manifest.deltas[*delta_index].bits > plan.target_bits)
            delta_index.reset();
    }
    if (delta_index) {
        const DeltaEntry& delta = manifest.deltas[*delta_index];
        std::erase_if(rungs, [&](const RungEntry* rung) { return rung->bits <= delta.bits; });
        bytes_total = manifest.topology.bytes + delta.data.bytes;
        for (const RungEntry* rung : rungs) bytes_total += wanted_bytes(*rung);
        const auto whole_file = [&](const FileEntry& file) {
            return source.fetch_checked(file.file, 0, file.bytes, file.bytes, file.bytes,
                                        [&](const std::string& bytes) {
                                            return core::sha256_hex(bytes) == file.sha256
                                                       ? std::string()
                                                       : "SHA-256 differs from the manifest's";
                                        });
        };
        RungTimeline timeline;
        timeline.kind = RungKind::base;
        timeline.bits = delta.bits;
        timeline.bytes = manifest.topology.bytes + delta.data.bytes;
        timeline.from_previous = true;
        timeline.requested_at = now();
        source.first_byte_at = -1;
        const std::string topology_where = source.where(manifest.topology.file);
        take_topology(whole_file(manifest.topology), topology_where);
        assembler->hold_previous(*options.previous, *delta_index, topology_where, held_sha256);
        const std::string bytes = whole_file(delta.data);
        timeline.first_byte_at = source.first_byte_at;
        timeline.downloaded_at = now();
        bytes_done += timeline.bytes;
        const std::string where = source.where(delta.data.file);
        std::vector<std::string> errors(delta.units.size());
        core::run_parallel(delta.units.size(), std::max(options.decode_threads, 1),
                           [&](std::size_t u) {
                               try {
                                   assembler->apply_delta_unit(
                                       *delta_index, u, unit_bytes(bytes, delta.units[u]), where);
                               } catch (const Error& error) {
                                   errors[u] = error.what();
                               }
                           });
        // The file's SHA-256 was checked: a unit that fails is a bad package.
        for (const std::string& error : errors)
            if (!error.empty()) throw Error(ErrorCode::corrupt_data, error);
        timeline.ready_at = now();
        timeline.decode_seconds = timeline.ready_at - timeline.downloaded_at;
        timeline.file_sha256_checked = true;
        result.rungs.push_back(timeline);
        FetchEvent event;
        event.kind = FetchEvent::Kind::rung_ready;
        event.seconds = timeline.ready_at;
        event.bits = delta.bits;
        event.bytes_done = bytes_done;
        event.bytes_total = bytes_total;
        event.assembler = &*assembler;
        emit(event);
    }
    for (const RungEntry* rung : rungs) {
        const std::size_t rung_index = manifest.rung_index(*rung);
        const std::string where = source.where(rung->data.file);
        if (!assembler && !starts_with_topology(rung->kind)) {
            throw Error(ErrorCode::corrupt_data,
                        where + ": a refinement cannot come before the topology");
        }
        RungTimeline timeline;
        timeline.kind = rung->kind;
        timeline.bits = rung->bits;
        timeline.parent_bits = rung->parent_bits;
        const std::uint64_t wanted = wanted_bytes(*rung);
        timeline.bytes = wanted;
        // The next rung waits while the caller holds decoding (its first
        // engine is being built): its bytes would only queue, and taking
        // them in costs the cores the build needs.
        while (options.hold_decoding != nullptr && options.hold_decoding->load()) {
            source.check_stop(rung->data.file);
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        timeline.requested_at = now();
        // An event about this rung, with the download's progress so far.
        const auto rung_event = [&](FetchEvent::Kind kind) {
            FetchEvent event;
            event.kind = kind;
            event.seconds = now();
            event.bits = rung->bits;
            event.bytes_done = bytes_done;
            event.bytes_total = bytes_total;
            event.units_applied = decoder ? decoder->applied() : 0;
            event.assembler = assembler ? &*assembler : nullptr;
            return event;
        };

        // If anything below throws, no worker goes on with this rung.
        struct AbandonOnExit {
            std::optional<UnitDecoder>& decoder;
            ~AbandonOnExit() {
                if (decoder) decoder->abandon();
            }
        } abandon_on_exit{decoder};
        // A fetch that goes on past the package's accuracy point says when
        // it holds exactly the units up to it (a device can serve that model
        // while the rest arrives). Units are pushed in file order, so once
        // the point's last one is pushed, draining leaves exactly the prefix.
        const bool passes_point =
            point == nullptr && options.mode == FetchMode::incremental && manifest.accuracy_point &&
            manifest.accuracy_point->rung == rung_index && manifest.accuracy_point->units > 0;
        const auto announce_point = [&] {
            decoder->drain();
            if (decoder->troubled()) return;  // the prefix is not whole: no point to serve
            result.accuracy_point_at = now();
            FetchEvent event = rung_event(FetchEvent::Kind::accuracy_point_ready);
            event.seconds = result.accuracy_point_at;
            emit(event);
        };
        PartFile& part = parts.emplace_back(options.part_directory, rung->data);
        UnitSplitter splitter(*rung);
        std::optional<TopologyPrefix> prefix;
        if (starts_with_topology(rung->kind)) prefix.emplace(manifest.topology);
        core::Sha256 file_hash;  // of the bytes as they arrive
        std::uint64_t received = 0;
        bool topology_damaged = false;
        // False when the topology at the file's head arrived damaged.
        const auto consume = [&](const char* data, std::size_t length) {
            file_hash.update(std::string_view(data, length));
            received += length;
            if (prefix && !prefix->complete()) {
                const std::size_t taken = prefix->take(data, length);
                data += taken;
                length -= taken;
                if (!prefix->complete()) return true;
                if (!prefix->intact()) {
                    topology_damaged = true;
                    return false;
                }
                if (!assembler) take_topology(prefix->release(), where);
            }
            splitter.feed(data, length, [&](std::size_t unit, std::vector<std::uint8_t> bytes) {
                decoder->push({rung_index, unit, std::move(bytes), where});
                if (passes_point && unit + 1 == manifest.accuracy_point->units) announce_point();
            });
            return true;
        };
        // After a damaged topology: the file is fetched again from its start.
        const auto start_over = [&] {
            topology_damaged = false;
            received = 0;
            file_hash = core::Sha256();
            prefix->start_over();
            splitter.start_over();
            part.open_for_append(0);
        };
        part.restore(wanted, consume);
        if (topology_damaged) start_over();  // a damaged part file is not resumed
        bytes_done += received;
        part.open_for_append(received);
        source.first_byte_at = -1;
        bool stream_failed = false;
        try {
            source.with_retries(rung->data.file, [&] {
                if (received == wanted) return Outcome{0, received, true, true, {}};
                Outcome outcome =
                    source.request(rung->data.file, received, wanted, rung->data.bytes,
                                   rung->data.bytes, [&](const char* data, std::size_t length) {
                                       if (!consume(data, length)) return false;
                                       part.append(data, length);
                                       bytes_done += length;
                                       emit(rung_event(FetchEvent::Kind::progress));
                                       return true;
                                   });
                part.flush();
                if (topology_damaged) {
                    bytes_done -= received;
                    start_over();
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
            if (!builds_on_earlier_rung(rung->kind) || options.strict) throw;
            stream_failed = true;  // the rest of this refinement cannot be had
            FetchEvent event = rung_event(FetchEvent::Kind::retry);
            event.message = error.what();
            emit(event);
        }
        const std::size_t next_unit = splitter.next_unit();
        timeline.first_byte_at = source.first_byte_at;
        timeline.downloaded_at = now();
        decoder->drain();

        // Units that failed their checks are fetched again on their own.
        std::vector<std::size_t> lost;
        for (std::size_t u = next_unit; u < wanted_units(*rung); ++u) lost.push_back(u);
        for (const auto& failure : decoder->take_failures()) {
            const std::size_t unit_index = failure.first;
            const UnitEntry& unit = rung->units[unit_index];
            ++timeline.units_refetched;
            try {
                source.fetch_checked(
                    rung->data.file, unit.offset, unit.offset + unit.length, unit.length,
                    rung->data.bytes, [&](const std::string& bytes) {
                        const std::span unit_span(
                            reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
                        try {
                            assembler->apply_unit(rung_index, unit_index, unit_span, where);
                            return std::string();
                        } catch (const Error& error) {
                            return std::string(error.what());
                        }
                    });
            } catch (const Stopped&) {
                throw;
            } catch (const Error& error) {
                if (!builds_on_earlier_rung(rung->kind) || options.strict) {
                    throw Error(error.code(),
                                std::string(error.what()) + " (the unit never arrived intact)");
                }
                lost.push_back(unit_index);
            }
        }
        for (const std::size_t unit_index : decoder->take_skipped()) lost.push_back(unit_index);
        // The file's own hash covers the bytes as they streamed in, so it
        // speaks for the file only when none had to be fetched again; every
        // unit was checked against its own SHA-256 before it was applied.
        if (!stream_failed && received == rung->data.bytes && wanted == rung->data.bytes &&
            timeline.units_refetched == 0 && lost.empty()) {
            if (file_hash.finish_hex() != rung->data.sha256) {
                throw Error(ErrorCode::corrupt_data,
                            where +
                                ": SHA-256 differs from the manifest's (the manifest's unit "
                                "hashes and file hash disagree)");
            }
            timeline.file_sha256_checked = true;
        }
        if (!lost.empty()) {
            std::set<std::string> names;
            for (const std::size_t unit_index : lost) {
                names.insert(manifest.tensors[rung->units[unit_index].tensor].name);
            }
            timeline.units_degraded = lost.size();
            degraded.insert(names.begin(), names.end());
            FetchEvent event = rung_event(FetchEvent::Kind::degraded);
            event.tensors.assign(names.begin(), names.end());
            event.message = std::to_string(lost.size()) + " unit(s) of " + rung->data.file +
                            " could not be had" + (stream_failed ? " (the download failed)" : "");
            emit(event);
        }
        timeline.ready_at = now();
        std::tie(timeline.decode_seconds, timeline.decode_hidden_seconds) =
            decoder->take_times(timeline.downloaded_at);
        result.rungs.push_back(timeline);
        FetchEvent event = rung_event(FetchEvent::Kind::rung_ready);
        event.seconds = timeline.ready_at;
        emit(event);
    }

    if (options.keep_model) result.model = assembler->model();
    result.reached_bits = assembler->reached_rung_bits();
    result.degraded_tensors.assign(degraded.begin(), degraded.end());
    result.bytes_downloaded = source.bytes_downloaded;
    result.retries = source.retries;
    result.seconds = now();
    for (PartFile& part : parts) part.remove();
    result.assembler = assembler;
    // Installed: a later fetch of an older release of this model is refused.
    if (installed && degraded.empty()) {
        installed->record(result.signer_key_id, manifest.release->model_id,
                          manifest.release->number);
    }
    return result;
}

}  // namespace bitinc
