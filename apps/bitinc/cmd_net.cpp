// bitinc serve / fetch: packages over HTTP.
#include <signal.h>
#include <unistd.h>
#include <bitinc/bitinc.hpp>
#include <bitinc/fetch.hpp>
#include <bitinc/server.hpp>
#include <charconv>

#include <cstdio>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>

#include "command_line.hpp"
#include "commands.hpp"
#include "fetch_options.hpp"
#include "format.hpp"
#include "progress_bar.hpp"

namespace bitinc::cli {

namespace {

nlohmann::json timeline_json(const FetchResult& result) {
    nlohmann::json rungs = nlohmann::json::array();
    for (const RungTimeline& rung : result.rungs) {
        rungs.push_back(
            {{"kind", rung.from_previous ? std::string_view("delta") : rung_kind_name(rung.kind)},
             {"bits", rung.bits},
             {"parent_bits", rung.parent_bits},
             {"bytes", rung.bytes},
             {"requested_at", rung.requested_at},
             {"first_byte_at", rung.first_byte_at},
             {"downloaded_at", rung.downloaded_at},
             {"ready_at", rung.ready_at},
             {"decode_seconds", rung.decode_seconds},
             {"decode_hidden_seconds", rung.decode_hidden_seconds},
             {"units_refetched", rung.units_refetched},
             {"units_degraded", rung.units_degraded},
             {"file_sha256_checked", rung.file_sha256_checked}});
    }
    const auto download = [](const DownloadTimes& times) {
        return nlohmann::json{{"requested_at", times.requested_at},
                              {"first_byte_at", times.first_byte_at},
                              {"downloaded_at", times.downloaded_at}};
    };
    return {{"manifest_at", result.manifest_at},
            {"topology_at", result.topology_at},
            {"manifest_download", download(result.manifest_download)},
            {"seconds", result.seconds},
            {"bytes_downloaded", result.bytes_downloaded},
            {"retries", result.retries},
            {"reached_bits", result.reached_bits},
            {"target_bits", result.target_bits},
            {"at_accuracy_point", result.at_accuracy_point},
            {"degraded_tensors", result.degraded_tensors},
            {"rungs", rungs}};
}

// Throws Error unless `output` can be created: its directory exists and is
// writable.
void check_output_directory(const std::string& output) {
    const std::filesystem::path path(output);
    const std::filesystem::path directory =
        path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
    std::error_code error;
    if (!std::filesystem::is_directory(directory, error)) {
        throw Error(bitinc::ErrorCode::io,
                    output + ": the directory '" + directory.string() + "' does not exist");
    }
    if (::access(directory.c_str(), W_OK | X_OK) != 0) {
        throw Error(bitinc::ErrorCode::io,
                    output + ": the directory '" + directory.string() + "' is not writable");
    }
    if (std::filesystem::is_directory(path, error))
        throw Error(bitinc::ErrorCode::invalid_argument, output + ": is a directory");
}

}  // namespace

void add_transfer_options(CommandLine& command_line) {
    command_line.add_option("until", "WHERE",
                            "exact (default: the ladder's last rung, the exact one where the "
                            "package has one), accuracy (the package's accuracy point) or a "
                            "rung's bits, e.g. 8");
    command_line.add_option(
        "retries", "N", "failed tries of a file without new bytes before giving up (default 8)");
    command_line.add_option("timeout", "SECONDS",
                            "connect timeout and longest wait for a byte (default 30)");
    command_line.add_option("deadline", "DURATION",
                            "give up the whole download after this long, e.g. 30s (default never)");
    command_line.add_option(
        "min-rate", "RATE",
        "a request slower than this over --min-rate-window fails, e.g. 100kbit");
    command_line.add_option("min-rate-window", "DURATION", "the window of --min-rate (default 5s)");
    command_line.add_option("trust", "KEY.pub",
                            "accept only packages signed with this Ed25519 key (bitinc keygen): "
                            "the manifest's signature is checked before any byte is used, and a "
                            "release older than one installed is refused");
    command_line.add_option("installed-releases", "FILE",
                            "with --trust: where the device keeps the releases it installed "
                            "(default $XDG_STATE_HOME/bitinc/installed.json or "
                            "~/.local/state/bitinc/installed.json)");
}

void read_transfer_options(const CommandLine& command_line, FetchOptions& options) {
    if (const auto until = command_line.value("until"); until && *until == "accuracy") {
        options.until_accuracy_point = true;
    } else if (until && *until != "exact") {
        int bits = 0;
        const auto [end, error] =
            std::from_chars(until->data(), until->data() + until->size(), bits);
        if (error != std::errc() || end != until->data() + until->size() ||
            bits < min_ladder_bits || bits > max_ladder_bits) {
            throw UsageError("--until takes exact, accuracy or a rung's bits (2 to 32), not '" +
                             *until + "'");
        }
        options.until_bits = bits;
    }
    options.max_attempts = int(command_line.integer("retries", 8, 1, 1000));
    options.timeout_seconds = command_line.real("timeout", 30, 0.001, 1e6);
    if (const auto deadline = command_line.value("deadline")) {
        options.deadline_seconds = parse_duration(*deadline);
        if (options.deadline_seconds <= 0) throw UsageError("--deadline must be longer than 0");
    }
    if (const auto rate = command_line.value("min-rate")) {
        options.min_rate_bytes_per_second = parse_rate(*rate) / 8;
    }
    if (const auto window = command_line.value("min-rate-window")) {
        options.min_rate_window_seconds = parse_duration(*window);
        if (options.min_rate_window_seconds <= 0)
            throw UsageError("--min-rate-window must be longer than 0");
    }
    if (const auto key = command_line.value("trust")) {
        FetchOptions::Trust trust;
        trust.public_key_pem = read_key_file(*key);
        if (is_private_key(trust.public_key_pem))
            throw UsageError("--trust takes the public key (" + *key +
                             " is private: keep it off devices; give KEY.pub)");
        trust.installed_releases = command_line.value("installed-releases").value_or("");
        options.trust = std::move(trust);
    } else if (command_line.value("installed-releases")) {
        throw UsageError("--installed-releases goes with --trust KEY.pub");
    }
}

nlohmann::json transfer_options_json(const FetchOptions& options) {
    return {
        {"until", options.until_accuracy_point ? nlohmann::json("accuracy")
                  : options.until_bits > 0     ? nlohmann::json(options.until_bits)
                                               : nlohmann::json("exact")},
        {"deadline_seconds", options.deadline_seconds},
        {"min_rate_bytes_per_second", options.min_rate_bytes_per_second},
        {"min_rate_window_seconds", options.min_rate_window_seconds},
        {"retries", options.max_attempts},
        {"trusted_key_id", options.trust ? nlohmann::json(key_id_of(options.trust->public_key_pem))
                                         : nlohmann::json(nullptr)}};
}

int run_serve(int argc, char** argv) {
    CommandLine command_line(
        "serve",
        "Serves a directory of packages over HTTP/1.1: GET and HEAD, byte ranges, ETag and\n"
        "Cache-Control; dotfiles are not served. One event loop serves every connection;\n"
        "request heads are limited to 16 KiB (64 header lines of 8 KiB at most) and must\n"
        "arrive within --request-timeout; idle connections are closed after --idle-timeout\n"
        "or when the server is full. --rate and --rtt emulate a link per response; --fault\n"
        "injects faults for tests (repeatable):\n"
        "  drop:FILE:BYTES[:TIMES]          close the connection after BYTES of a response\n"
        "  flip:FILE:OFFSET[:LENGTH[:TIMES]] invert bytes of FILE at OFFSET\n"
        "  delay:FILE:DURATION[:TIMES]      hold responses for DURATION\n"
        "  fail:FILE[:TIMES]                answer 503\n"
        "FILE is a file name or '*'; TIMES a count (default 1) or 'always'.\n"
        "Stops cleanly on SIGINT or SIGTERM.");
    command_line.add_positional("DIR", "the directory to serve (packages inside it)");
    command_line.add_option("port", "P", "TCP port (default 8080; 0 picks a free one)");
    command_line.add_option("host", "ADDRESS", "address to listen on (default 127.0.0.1)");
    command_line.add_option("rate", "RATE",
                            "link rate per response, e.g. 100Mbit (default unlimited)");
    command_line.add_option("rtt", "DURATION", "round-trip time added to each response, e.g. 20ms");
    command_line.add_option("fault", "RULE", "inject a fault (see above; repeatable)");
    command_line.add_option("max-connections", "N", "open connections at most (default 10000)");
    command_line.add_option("request-timeout", "DURATION",
                            "time allowed for a whole request head (default 10s)");
    command_line.add_option("idle-timeout", "DURATION",
                            "close keep-alive connections idle this long (default 60s)");
    command_line.add_option("log", "FILE", "append the access log to FILE (default stderr)");
    command_line.add_flag("quiet", "no access log");
    if (!command_line.parse(argc, argv)) return 0;

    ServerOptions options;
    options.root = command_line.positional(0);
    options.host = command_line.value("host").value_or("127.0.0.1");
    options.port = int(command_line.integer("port", 8080, 0, 65535));
    options.max_connections = int(command_line.integer("max-connections", 10000, 1, 1'000'000));
    const auto positive_duration = [&](const char* name, double fallback) {
        const auto text = command_line.value(name);
        if (!text) return fallback;
        const double seconds = parse_duration(*text);
        if (seconds <= 0)
            throw Error(bitinc::ErrorCode::invalid_argument,
                        "--" + std::string(name) + " " + *text + ": must be positive");
        return seconds;
    };
    options.request_timeout_seconds = positive_duration("request-timeout", 10);
    options.idle_timeout_seconds = positive_duration("idle-timeout", 60);
    if (const auto rate = command_line.value("rate"))
        options.rate_bits_per_second = parse_rate(*rate);
    if (const auto rtt = command_line.value("rtt")) options.rtt_seconds = parse_duration(*rtt);
    for (const std::string& rule : command_line.values("fault"))
        options.faults.push_back(parse_fault(rule));

    std::mutex log_mutex;
    std::ofstream log_file;
    if (const auto log = command_line.value("log")) {
        log_file.open(*log, std::ios::app);
        if (!log_file) throw Error(bitinc::ErrorCode::io, *log + ": cannot open the access log");
    }
    if (!command_line.flag("quiet")) {
        options.access_log = [&](const std::string& line) {
            const std::lock_guard lock(log_mutex);
            if (log_file.is_open()) {
                log_file << line << '\n' << std::flush;
            } else {
                std::fprintf(stderr, "%s\n", line.c_str());
            }
        };
    }
    // Signals are taken by sigwait below; every thread inherits the mask.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    PackageServer server(options);
    server.start();
    std::printf("serving %s at %s", options.root.c_str(), server.url().c_str());
    if (options.rate_bits_per_second > 0)
        std::printf(", %.1f Mbit/s", options.rate_bits_per_second / 1e6);
    if (options.rtt_seconds > 0) std::printf(", RTT %.0f ms", options.rtt_seconds * 1e3);
    if (!options.faults.empty()) std::printf(", %zu fault rule(s)", options.faults.size());
    std::printf("\n");
    std::fflush(stdout);
    int received = 0;
    sigwait(&signals, &received);
    std::fprintf(stderr, "bitinc serve: %s, stopping\n",
                 received == SIGINT ? "interrupted" : "terminated");
    server.stop();
    return 0;
}

int run_fetch(int argc, char** argv) {
    CommandLine command_line(
        "fetch",
        "Downloads a package as a device does and writes the model. The manifest and the\n"
        "topology come first (the topology is used only if its SHA-256 matches), then the\n"
        "base rung and refinements (incremental) or the direct rung (direct), with range\n"
        "requests; units are decoded while the download goes on. Failed requests are\n"
        "retried with backoff, interrupted downloads resume from .part files, and units\n"
        "that fail their CRC are fetched again. A refinement that cannot be had leaves its\n"
        "tensors at the lower rung (a warning; --strict makes it an error).");
    command_line.add_positional(
        "URL", "the package, e.g. http://host:8080/small-cnn/, or a package directory");
    command_line.add_option("mode", "MODE", "incremental (default) or direct");
    command_line.add_option("o", "OUT.onnx", "output model (required)");
    command_line.add_option("parts", "DIR",
                            "where partial downloads are kept (default OUT.onnx.parts)");
    add_transfer_options(command_line);
    command_line.add_option("decode-threads", "N", "threads decoding units (default 2)");
    command_line.add_option("from", "OLD.onnx",
                            "an earlier version of the model held here (as fetch or unpack "
                            "wrote it): fetch the package's delta from it instead of the rungs "
                            "up to the delta's bits, when the package has one");
    command_line.add_flag("strict", "a refinement that cannot be had is an error");
    command_line.add_flag("external-data",
                          "weights in OUT.onnx.data (ONNX external data; automatic past 2 GiB)");
    command_line.add_flag("json", "print the timeline as JSON");
    command_line.add_flag("no-progress", "never draw a progress bar");
    if (!command_line.parse(argc, argv)) return 0;
    const auto output = command_line.value("o");
    if (!output) throw UsageError("give the output model with -o OUT.onnx");
    // Found before the download, not after it.
    check_output_directory(*output);

    FetchOptions options;
    const std::string mode = command_line.value("mode").value_or("incremental");
    if (mode == "incremental") {
        options.mode = FetchMode::incremental;
    } else if (mode == "direct") {
        options.mode = FetchMode::direct;
    } else {
        throw UsageError("--mode is incremental or direct");
    }
    options.part_directory = command_line.value("parts").value_or(*output + ".parts");
    options.decode_threads = int(command_line.integer("decode-threads", 2, 1, 64));
    options.strict = command_line.flag("strict");
    if (const auto previous = command_line.value("from"))
        options.previous = std::make_shared<const Model>(read_onnx_file(*previous));
    read_transfer_options(command_line, options);
    ProgressBar progress("fetch", "B",
                         !command_line.flag("no-progress") && ProgressBar::stderr_is_terminal());
    options.on_event = [&](const FetchEvent& event) {
        switch (event.kind) {
            case FetchEvent::Kind::progress:
                progress.update(event.bytes_done, event.bytes_total);
                break;
            case FetchEvent::Kind::retry:
                progress.finish();
                std::fprintf(stderr, "bitinc fetch: %s\n", printable_text(event.message).c_str());
                break;
            case FetchEvent::Kind::degraded:
                progress.finish();
                std::fprintf(
                    stderr, "bitinc fetch: warning: %s; %zu tensor(s) stay below %d bits\n",
                    printable_text(event.message).c_str(), event.tensors.size(), event.bits);
                break;
            default:
                break;
        }
    };
    // The model is written from the assembler block by block: no float copy.
    options.keep_model = false;
    const FetchResult result = fetch_package(command_line.positional(0), options);
    progress.finish();
    write_model_file(*result.assembler, *output, command_line.flag("external-data"));
    std::error_code ignored;
    std::filesystem::remove(options.part_directory, ignored);  // only if empty

    if (command_line.flag("json")) {
        nlohmann::json json = timeline_json(result);
        json["url"] = command_line.positional(0);
        json["mode"] = mode;
        json["output"] = *output;
        json["options"] = transfer_options_json(options);
        std::printf("%s\n", json_text(json).c_str());
    } else {
        std::printf("%s: manifest %.3f s, topology %.3f s\n",
                    printable_text(command_line.positional(0)).c_str(), result.manifest_at,
                    result.topology_at);
        for (const RungTimeline& rung : result.rungs) {
            const std::string bits = rung_bits_label(rung);
            std::printf(
                "  %-10s %-8s %12s  downloaded %7.3f s  ready %7.3f s  decode %.3f s (%.0f %% "
                "hidden)\n",
                rung.from_previous ? "delta" : std::string(rung_kind_name(rung.kind)).c_str(),
                bits.c_str(), megabytes(rung.bytes).c_str(), rung.downloaded_at, rung.ready_at,
                rung.decode_seconds,
                rung.decode_seconds > 0 ? 100 * rung.decode_hidden_seconds / rung.decode_seconds
                                        : 100.0);
        }
        const std::string model_name =
            result.at_accuracy_point
                ? "model at the accuracy point (" + std::to_string(result.reached_bits) + "-" +
                      std::to_string(result.target_bits) + " bits)"
            : result.manifest.exact_rung() && result.reached_bits == exact_rung_bits
                ? std::string("exact model (the source weights)")
                : std::to_string(result.reached_bits) + "-bit model";
        std::printf(
            "%s%s written to %s (%s downloaded, %zu retries, %.3f s)\n", model_name.c_str(),
            result.degraded_tensors.empty()
                ? ""
                : (" (degraded: " + std::to_string(result.target_bits) + " bits asked)").c_str(),
            output->c_str(), megabytes(result.bytes_downloaded).c_str(), result.retries,
            result.seconds);
    }
    if (!result.degraded_tensors.empty()) {
        std::fprintf(stderr, "bitinc fetch: warning: %zu tensor(s) did not reach the top rung\n",
                     result.degraded_tensors.size());
    }
    // Asked to start from a model held, but no delta of the package starts
    // there: say so, the whole ladder came instead.
    if (options.previous && options.mode == FetchMode::incremental &&
        (result.rungs.empty() || !result.rungs.front().from_previous)) {
        std::fprintf(stderr,
                     "bitinc fetch: note: the package has no delta from %s (at the rung asked "
                     "for); fetched the ladder instead\n",
                     printable_text(*command_line.value("from")).c_str());
    }
    return 0;
}

}  // namespace bitinc::cli
