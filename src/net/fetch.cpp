// The device's fetcher: manifest, then the topology (verified), then rungs
// streamed with range requests and decoded on worker threads as units
// complete; retries with backoff, resumable .part files, refetch of units
// that fail their CRC, and graceful degradation of refinements.
#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "bitinc/error.hpp"
#include "bitinc/net.hpp"
#include "core/sha256.hpp"

namespace bitinc {

namespace {

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
    if (scheme == "file" || (scheme.empty() && fs::is_directory(url))) {
        parsed.local = true;
        parsed.path = scheme.empty() ? url : url.substr(scheme_end + 3);
    } else if (scheme != "http" && scheme != "https") {
        throw Error(
            "'" + url +
            "' is not an http://, https:// or file:// URL of a package, nor a package directory");
    } else {
        const std::size_t path_start = url.find('/', scheme_end + 3);
        parsed.origin = url.substr(0, path_start);
        if (parsed.origin.size() <= scheme_end + 3) throw Error("'" + url + "' names no host");
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

// Thrown when FetchOptions::cancel is set; it passes every retry.
class Cancelled : public Error {
  public:
    Cancelled() : Error("cancelled") {}
};

// What one request achieved.
struct Outcome {
    std::uint64_t received = 0;
    bool complete = false;
    bool retryable = true;
    std::string problem;
};

// HTTP access to the files of one package, with retries.
class PackageSource {
  public:
    PackageSource(const std::string& url, const FetchOptions& options, Clock::time_point start,
                  std::function<void(const FetchEvent&)> emit)
        : url_(parse_package_url(url)), options_(options), start_(start), emit_(std::move(emit)) {
        if (url_.local) return;
        client_ = std::make_unique<httplib::Client>(url_.origin);
        if (!client_->is_valid()) throw Error("'" + url + "': cannot make an HTTP client for it");
        const auto timeout = std::chrono::duration<double>(options.timeout_seconds);
        const time_t whole = time_t(options.timeout_seconds);
        const time_t micro = time_t((timeout.count() - double(whole)) * 1e6);
        client_->set_connection_timeout(whole, micro);
        client_->set_read_timeout(whole, micro);
        client_->set_keep_alive(true);
        client_->set_tcp_nodelay(true);
        client_->set_follow_location(true);
    }

    // The same contract as request(), for a package directory on disk.
    Outcome read_local(const std::string& file, std::uint64_t from, std::uint64_t to,
                       const std::function<bool(const char*, std::size_t)>& receive) {
        Outcome outcome;
        std::ifstream in(fs::path(url_.path) / file, std::ios::binary);
        if (!in) {
            outcome.retryable = false;
            outcome.problem = "no such file";
            return outcome;
        }
        in.seekg(std::streamoff(from));
        std::vector<char> buffer(1 << 20);
        while (to == 0 || from + outcome.received < to) {
            if (cancelled()) throw Cancelled();
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
        }
        return outcome;
    }

    std::string where(const std::string& file) const { return url_.origin + url_.path + file; }

    // Requests bytes [from, to) of `file` (to == 0: to the end) and hands
    // them to `receive` in order. Never throws for network faults.
    Outcome request(const std::string& file, std::uint64_t from, std::uint64_t to,
                    const std::function<bool(const char*, std::size_t)>& receive) {
        Outcome outcome = url_.local ? read_local(file, from, to, receive)
                                     : request_http(file, from, to, receive);
        bytes_downloaded += outcome.received;
        return outcome;
    }

    Outcome request_http(const std::string& file, std::uint64_t from, std::uint64_t to,
                         const std::function<bool(const char*, std::size_t)>& receive) {
        Outcome outcome;
        httplib::Headers headers;
        if (from > 0 || to > 0) {
            headers.emplace("Range", "bytes=" + std::to_string(from) + "-" +
                                         (to > 0 ? std::to_string(to - 1) : ""));
        }
        std::uint64_t skip = 0;  // a server that ignores Range sends everything
        bool status_ok = false;
        std::uint64_t expected = 0;
        const auto result = client_->Get(
            (url_.path + file).c_str(), headers,
            [&](const httplib::Response& response) {
                if (response.status == 200) {
                    skip = from;
                    status_ok = true;
                } else if (response.status == 206) {
                    const std::string range = response.get_header_value("Content-Range");
                    status_ok = range.rfind("bytes " + std::to_string(from) + "-", 0) == 0;
                    if (!status_ok)
                        outcome.problem = "the server answered another range (" + range + ")";
                    outcome.retryable = status_ok;
                } else {
                    outcome.problem = "HTTP status " + std::to_string(response.status);
                    // 4xx other than 408/429 will not get better by asking again.
                    outcome.retryable =
                        response.status >= 500 || response.status == 408 || response.status == 429;
                }
                if (status_ok && response.has_header("Content-Length")) {
                    expected = std::strtoull(response.get_header_value("Content-Length").c_str(),
                                             nullptr, 10);
                }
                return status_ok;
            },
            [&](const char* data, std::size_t length) {
                if (cancelled()) return false;
                if (skip > 0) {
                    const std::size_t dropped = std::size_t(std::min<std::uint64_t>(skip, length));
                    skip -= dropped;
                    data += dropped;
                    length -= dropped;
                }
                if (to > 0)
                    length =
                        std::size_t(std::min<std::uint64_t>(length, to - from - outcome.received));
                if (length == 0) return true;
                outcome.received += length;
                return receive(data, length);
            });
        if (cancelled()) throw Cancelled();
        if (result && status_ok) {
            // Without a Content-Length httplib reports success only for a
            // complete (chunked) body.
            outcome.complete = to > 0 ? outcome.received == to - from
                                      : expected == 0 || outcome.received == expected;
            if (!outcome.complete) outcome.problem = "the response ended early";
        } else if (outcome.problem.empty()) {
            outcome.problem =
                result ? "the transfer was interrupted"
                       : "the connection failed (" + httplib::to_string(result.error()) + ")";
        }
        return outcome;
    }

    // Runs `attempt` until it completes, with backoff between tries; gives up
    // after max_attempts tries in a row that brought nothing new.
    void with_retries(const std::string& file, const std::function<Outcome()>& attempt) {
        int fruitless = 0;
        double backoff = options_.backoff_initial;
        for (;;) {
            const Outcome outcome = attempt();
            if (outcome.complete) return;
            if (!outcome.retryable) throw Error(where(file) + ": " + outcome.problem);
            fruitless = outcome.received > 0 ? 0 : fruitless + 1;
            if (outcome.received > 0) backoff = options_.backoff_initial;
            if (fruitless >= options_.max_attempts) {
                throw Error(where(file) + ": " + outcome.problem + " (gave up after " +
                            std::to_string(options_.max_attempts) + " attempts)");
            }
            ++retries;
            FetchEvent event;
            event.kind = FetchEvent::Kind::retry;
            event.seconds = seconds_between(start_, Clock::now());
            event.message = where(file) + ": " + outcome.problem + "; retrying in " +
                            std::to_string(int(backoff * 1000)) + " ms";
            emit_(event);
            pause(backoff);
            backoff = std::min(backoff * 2, options_.backoff_max);
        }
    }

    // Bytes [from, to) of `file` (to == 0: the whole file, at most
    // `max_bytes`), retried until they arrive and `check` accepts them:
    // it returns "" or what is wrong, and a rejection counts as a try that
    // brought nothing.
    std::string fetch_checked(const std::string& file, std::uint64_t from, std::uint64_t to,
                              std::uint64_t max_bytes,
                              const std::function<std::string(const std::string&)>& check) {
        std::string bytes;
        int rejected = 0;
        with_retries(file, [&] {
            bytes.clear();
            bool too_large = false;
            Outcome outcome = request(file, from, to, [&](const char* data, std::size_t length) {
                too_large = bytes.size() + length > max_bytes;
                if (!too_large) bytes.append(data, length);
                return !too_large;
            });
            if (too_large) {
                outcome.complete = false;
                outcome.retryable = false;
                outcome.problem = "larger than " + std::to_string(max_bytes) + " bytes";
            }
            if (outcome.complete) {
                if (std::string problem = check(bytes); !problem.empty()) {
                    outcome.complete = false;
                    outcome.received = 0;
                    outcome.problem = std::move(problem);
                    if (++rejected >= options_.max_attempts) outcome.retryable = false;
                }
            }
            return outcome;
        });
        return bytes;
    }

    bool cancelled() const { return options_.cancel != nullptr && options_.cancel->load(); }

    void pause(double seconds) const {
        const auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                              std::chrono::duration<double>(seconds));
        while (Clock::now() < until) {
            if (cancelled()) throw Cancelled();
            std::this_thread::sleep_for(
                std::min<Clock::duration>(until - Clock::now(), std::chrono::milliseconds(20)));
        }
    }

    std::size_t retries = 0;
    std::uint64_t bytes_downloaded = 0;

  private:
    ParsedUrl url_;
    const FetchOptions& options_;
    Clock::time_point start_;
    std::function<void(const FetchEvent&)> emit_;
    std::unique_ptr<httplib::Client> client_;
};

// Applies units on worker threads while the download goes on.
class UnitDecoder {
  public:
    UnitDecoder(ModelAssembler& assembler, int threads, Clock::time_point start)
        : assembler_(assembler), start_(start) {
        for (int t = 0; t < std::max(1, threads); ++t) workers_.emplace_back([this] { work(); });
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
        std::span<const std::uint8_t> bytes;
        std::string source;
    };

    std::size_t applied() const { return applied_.load(); }

    void push(Job job) {
        {
            const std::lock_guard lock(mutex_);
            jobs_.push_back(std::move(job));
            ++pending_;
        }
        wake_.notify_one();
    }

    // Forgets queued units and waits for those in progress, so that the
    // bytes they point to may go away.
    void abandon() {
        std::unique_lock lock(mutex_);
        pending_ -= jobs_.size();
        jobs_.clear();
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
                if (jobs_.empty()) return;
                job = std::move(jobs_.front());
                jobs_.pop_front();
            }
            const RungEntry& rung = assembler_.manifest().rungs[job.rung];
            const double from = seconds_between(start_, Clock::now());
            std::string failure;
            bool skipped = false;
            try {
                // A refinement whose chunk stayed behind (degraded) is skipped.
                if (rung.kind == RungKind::refinement &&
                    assembler_.chunk_bits(job.rung, job.unit) != rung.parent_bits) {
                    skipped = true;
                } else {
                    assembler_.apply_unit(job.rung, job.unit, job.bytes, job.source);
                    ++applied_;
                }
            } catch (const Error& error) {
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
    std::mutex mutex_;
    std::condition_variable wake_;
    std::condition_variable idle_;
    std::deque<Job> jobs_;
    std::size_t pending_ = 0;
    bool closing_ = false;
    std::vector<std::pair<std::size_t, std::string>> failures_;
    std::vector<std::size_t> skipped_;
    std::vector<std::pair<double, double>> spans_;
    std::atomic<std::size_t> applied_{0};
    std::vector<std::jthread> workers_;
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

    // Reads what an earlier run kept (at most buffer.size() bytes) into `buffer`.
    std::uint64_t restore(std::vector<std::uint8_t>& buffer) {
        if (path_.empty()) return 0;
        std::ifstream in(path_, std::ios::binary);
        if (!in) return 0;
        in.read(reinterpret_cast<char*>(buffer.data()), std::streamsize(buffer.size()));
        return std::uint64_t(in.gcount());
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

FetchResult fetch_package(const std::string& url, const FetchOptions& options) {
    const auto start = Clock::now();
    const auto now = [&] { return seconds_between(start, Clock::now()); };
    const auto emit = [&](const FetchEvent& event) {
        if (options.on_event) options.on_event(event);
    };
    PackageSource source(url, options, start, emit);
    FetchResult result;

    const std::string manifest_text =
        source.fetch_checked(std::string(manifest_file_name), 0, 0, max_manifest_bytes,
                             [](const std::string&) { return std::string(); });
    result.manifest = parse_manifest(manifest_text, source.where(std::string(manifest_file_name)));
    const Manifest& manifest = result.manifest;
    result.manifest_at = now();
    {
        FetchEvent event;
        event.kind = FetchEvent::Kind::manifest_ready;
        event.seconds = result.manifest_at;
        emit(event);
    }

    std::vector<const RungEntry*> rungs;
    const int until = options.until_bits > 0 ? options.until_bits : manifest.ladder.top_bits();
    if (options.mode == FetchMode::direct) {
        const RungEntry* rung = manifest.find_rung(RungKind::direct, until);
        if (rung == nullptr) {
            throw Error(source.where(std::string(manifest_file_name)) +
                        ": the package has no direct rung of " + std::to_string(until) + " bits");
        }
        rungs.push_back(rung);
    } else {
        rungs = manifest.ladder_rungs(until);
        if (rungs.empty() || rungs.back()->bits != until) {
            throw Error(source.where(std::string(manifest_file_name)) +
                        ": the ladder has no rung of " + std::to_string(until) + " bits");
        }
    }

    // The topology first: it is never used unless its hash matches.
    std::string topology = source.fetch_checked(
        manifest.topology.file, 0, 0, manifest.topology.bytes, [&](const std::string& bytes) {
            const bool intact = bytes.size() == manifest.topology.bytes &&
                                core::sha256_hex(bytes) == manifest.topology.sha256;
            return intact ? std::string()
                          : std::string("arrived damaged (SHA-256 differs from the manifest's)");
        });
    ModelAssembler assembler(manifest, std::move(topology), source.where(manifest.topology.file));
    result.topology_at = now();
    {
        FetchEvent event;
        event.kind = FetchEvent::Kind::topology_ready;
        event.seconds = result.topology_at;
        event.assembler = &assembler;
        emit(event);
    }

    std::uint64_t bytes_total = 0;
    for (const RungEntry* rung : rungs) bytes_total += rung->data.bytes;
    std::uint64_t bytes_done = 0;
    std::set<std::string> degraded;
    std::vector<PartFile> parts;

    UnitDecoder decoder(assembler, options.decode_threads, start);
    for (const RungEntry* rung : rungs) {
        const std::size_t rung_index = manifest.rung_index(*rung);
        const std::string where = source.where(rung->data.file);
        RungTimeline timeline;
        timeline.kind = rung->kind;
        timeline.bits = rung->bits;
        timeline.parent_bits = rung->parent_bits;
        timeline.bytes = rung->data.bytes;
        timeline.requested_at = now();
        // An event about this rung, with the download's progress so far.
        const auto rung_event = [&](FetchEvent::Kind kind) {
            FetchEvent event;
            event.kind = kind;
            event.seconds = now();
            event.bits = rung->bits;
            event.bytes_done = bytes_done;
            event.bytes_total = bytes_total;
            event.units_applied = decoder.applied();
            event.assembler = &assembler;
            return event;
        };

        std::vector<std::uint8_t> buffer(rung->data.bytes);
        // If anything below throws, no worker may still read `buffer`.
        struct AbandonOnExit {
            UnitDecoder& decoder;
            ~AbandonOnExit() { decoder.abandon(); }
        } abandon_on_exit{decoder};
        PartFile& part = parts.emplace_back(options.part_directory, rung->data);
        std::uint64_t received = part.restore(buffer);
        part.open_for_append(received);
        std::size_t next_unit = 0;
        const auto queue_complete_units = [&] {
            while (next_unit < rung->units.size() &&
                   rung->units[next_unit].offset + rung->units[next_unit].length <= received) {
                const UnitEntry& unit = rung->units[next_unit];
                decoder.push({rung_index, next_unit,
                              std::span(buffer).subspan(unit.offset, unit.length), where});
                ++next_unit;
            }
        };
        queue_complete_units();
        bytes_done += received;
        bool stream_failed = false;
        try {
            source.with_retries(rung->data.file, [&] {
                if (received == buffer.size()) return Outcome{0, true, true, {}};
                Outcome outcome =
                    source.request(rung->data.file, received, buffer.size(),
                                   [&](const char* data, std::size_t length) {
                                       std::memcpy(buffer.data() + received, data, length);
                                       part.append(data, length);
                                       received += length;
                                       bytes_done += length;
                                       queue_complete_units();
                                       emit(rung_event(FetchEvent::Kind::progress));
                                       return true;
                                   });
                part.flush();
                return outcome;
            });
        } catch (const Cancelled&) {
            throw;
        } catch (const Error& error) {
            if (rung->kind != RungKind::refinement || options.strict) throw;
            stream_failed = true;  // the rest of this refinement cannot be had
            FetchEvent event = rung_event(FetchEvent::Kind::retry);
            event.message = error.what();
            emit(event);
        }
        timeline.downloaded_at = now();
        decoder.drain();

        // Units that failed their checks are fetched again on their own.
        std::vector<std::size_t> lost;
        for (std::size_t u = next_unit; u < rung->units.size(); ++u) lost.push_back(u);
        for (const auto& failure : decoder.take_failures()) {
            const std::size_t unit_index = failure.first;
            const UnitEntry& unit = rung->units[unit_index];
            ++timeline.units_refetched;
            try {
                source.fetch_checked(
                    rung->data.file, unit.offset, unit.offset + unit.length, unit.length,
                    [&](const std::string& bytes) {
                        try {
                            assembler.apply_unit(
                                rung_index, unit_index,
                                std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()),
                                          bytes.size()),
                                where);
                            return std::string();
                        } catch (const Error& error) {
                            return std::string(error.what());
                        }
                    });
            } catch (const Cancelled&) {
                throw;
            } catch (const Error& error) {
                if (rung->kind != RungKind::refinement || options.strict) {
                    throw Error(std::string(error.what()) + " (the unit never arrived intact)");
                }
                lost.push_back(unit_index);
            }
        }
        for (const std::size_t unit_index : decoder.take_skipped()) lost.push_back(unit_index);
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
            decoder.take_times(timeline.downloaded_at);
        result.rungs.push_back(timeline);
        FetchEvent event = rung_event(FetchEvent::Kind::rung_ready);
        event.seconds = timeline.ready_at;
        emit(event);
    }

    result.model = assembler.model();
    result.reached_bits = assembler.lowest_bits();
    result.degraded_tensors.assign(degraded.begin(), degraded.end());
    result.bytes_downloaded = source.bytes_downloaded;
    result.retries = source.retries;
    result.seconds = now();
    for (PartFile& part : parts) part.remove();
    return result;
}

}  // namespace bitinc
