// bitinc run: a camera stream against a model that arrives while it runs.
#include <bitinc/bitinc.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "command_line.hpp"
#include "commands.hpp"
#include "fetch_options.hpp"
#include "format.hpp"

namespace bitinc::cli {

namespace {

std::string_view event_name(ProgressiveEvent::Kind kind) {
    switch (kind) {
        case ProgressiveEvent::Kind::topology_ready:
            return "topology_ready";
        case ProgressiveEvent::Kind::rung_ready:
            return "rung_ready";
        case ProgressiveEvent::Kind::swapped:
            return "swapped";
        case ProgressiveEvent::Kind::degraded:
            return "degraded";
        case ProgressiveEvent::Kind::build_failed:
            return "build_failed";
        case ProgressiveEvent::Kind::complete:
            return "complete";
        case ProgressiveEvent::Kind::failed:
            return "failed";
        case ProgressiveEvent::Kind::accuracy_point:
            return "accuracy_point";
    }
    return "unknown";
}

// Tensors left below the rung asked for, each with the bits it stayed at:
// a degraded refinement leaves its tensors at the rung before it.
std::map<std::string, int> degraded_tensor_bits(const StreamReport& report) {
    std::map<std::string, int> stayed;
    if (!report.fetch) return stayed;
    const std::vector<int>& ladder = report.fetch->manifest.ladder.bits;
    for (const ProgressiveEvent& event : report.events) {
        if (event.kind != ProgressiveEvent::Kind::degraded) continue;
        const auto rung = std::find(ladder.begin(), ladder.end(), event.bits);
        const int below = rung == ladder.begin() || rung == ladder.end() ? 0 : *(rung - 1);
        for (const std::string& tensor : event.tensors) {
            const auto [entry, added] = stayed.emplace(tensor, below);
            if (!added) entry->second = std::min(entry->second, below);
        }
    }
    return stayed;
}

// True when the download ended below the rung asked for, or failed.
bool ended_degraded(const StreamReport& report) {
    return report.failure.has_value() || !report.fetch || !report.fetch->degraded_tensors.empty() ||
           (report.fetch->reached_bits < report.fetch->target_bits &&
            !report.fetch->at_accuracy_point);
}

nlohmann::json report_json(const StreamReport& report) {
    nlohmann::json events = nlohmann::json::array();
    for (const ProgressiveEvent& event : report.events) {
        nlohmann::json item = {
            {"time", event.seconds}, {"event", event_name(event.kind)}, {"bits", event.bits}};
        if (event.kind == ProgressiveEvent::Kind::swapped) {
            item["build_seconds"] = event.build_seconds;
            item["generation"] = event.generation;
            item["units_applied"] = event.units_applied;
            item["at_accuracy_point"] = event.at_accuracy_point;
        }
        if (!event.reason.empty()) item["reason"] = event.reason;
        if (!event.tensors.empty()) item["tensors"] = event.tensors;
        events.push_back(item);
    }
    nlohmann::json windows = nlohmann::json::array();
    for (const StreamWindow& window : report.windows) {
        windows.push_back(
            {{"start", window.start},
             {"end", window.end},
             {"results", window.results},
             {"correct", window.correct},
             {"accuracy_percent",
              window.results ? 100.0 * double(window.correct) / double(window.results) : 0.0},
             {"bits", window.bits}});
    }
    nlohmann::json served = nlohmann::json::array();
    for (const auto& [bits, rung] : report.served) {
        served.push_back({{"bits", bits},
                          {"results", rung.results},
                          {"correct", rung.correct},
                          {"accuracy_percent", rung.accuracy_percent()}});
    }
    nlohmann::json json = {{"first_result_at", report.first_result_at},
                           {"top_rung_at", report.top_rung_at},
                           {"finished_at", report.finished_at},
                           {"frames_in", report.frames_in},
                           {"results_out", report.results_out},
                           {"longest_gap_seconds", report.longest_gap},
                           {"longest_gap_at_swap_seconds", report.longest_gap_at_swap},
                           {"longest_latency_seconds", report.longest_latency},
                           {"longest_inference_seconds", report.longest_inference},
                           {"served", served},
                           {"events", events},
                           {"windows", windows}};
    if (report.failure) json["failure"] = *report.failure;
    json["degraded"] = ended_degraded(report);
    // Without labels every accuracy above is 0 and means nothing.
    json["labelled"] = report.labelled;
    const StartupBreakdown startup = startup_breakdown(report);
    json["startup"] = {{"total", startup.total},
                       {"requests", startup.requests},
                       {"waiting", startup.waiting},
                       {"transfer", startup.transfer},
                       {"bytes", startup.bytes},
                       {"decode_not_hidden", startup.decode_not_hidden},
                       {"snapshot", startup.snapshot},
                       {"engine_build", startup.engine_build},
                       {"first_inference", startup.first_inference},
                       {"other", startup.other}};
    if (report.fetch) {
        json["bytes_downloaded"] = report.fetch->bytes_downloaded;
        json["degraded_tensors"] = report.fetch->degraded_tensors;
        json["reached_bits"] = report.fetch->reached_bits;
        json["target_bits"] = report.fetch->target_bits;
        json["retries"] = report.fetch->retries;
        nlohmann::json stayed = nlohmann::json::array();
        for (const auto& [tensor, bits] : degraded_tensor_bits(report))
            stayed.push_back({{"tensor", tensor}, {"bits", bits}});
        json["degraded_tensor_bits"] = stayed;
    }
    return json;
}

void write_timeline_csv(const StreamReport& report, const std::string& path) {
    std::string text = "time,kind,bits,results,correct,accuracy_percent,detail\n";
    char line[256];
    for (const StreamWindow& window : report.windows) {
        std::snprintf(
            line, sizeof line, "%.3f,window,%d,%zu,%zu,%.2f,\n", window.end, window.bits,
            window.results, window.correct,
            window.results ? 100.0 * double(window.correct) / double(window.results) : 0.0);
        text += line;
    }
    for (const ProgressiveEvent& event : report.events) {
        std::snprintf(line, sizeof line, "%.3f,%s,%d,,,,%s\n", event.seconds,
                      std::string(event_name(event.kind)).c_str(), event.bits,
                      event.kind == ProgressiveEvent::Kind::swapped
                          ? ("build " + std::to_string(event.build_seconds) + " s").c_str()
                          : "");
        text += line;
    }
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) throw Error(bitinc::ErrorCode::io, path + ": cannot write the timeline");
}

}  // namespace

int run_run(int argc, char** argv) {
    CommandLine command_line(
        "run",
        "Streams inputs (Fashion-MNIST test images, or --dataset's) from a 'camera' at\n"
        "--fps to a model while it downloads: inference starts on the base rung and the\n"
        "engine is swapped for each better rung without pausing the stream. Prints a\n"
        "live line, then what the stream saw: time to first result, time to top rung,\n"
        "the longest gap between results during swaps, and the accuracy served by each\n"
        "rung (inputs without labels: the timings only).\n"
        "--swap-every/--swap-interval turn on progressive (layer-by-layer) mode:\n"
        "refinement units go into the running model as they arrive.");
    command_line.add_positional("URL|PACKAGE",
                                "a package URL (bitinc serve, nginx, ...) or directory");
    command_line.add_option("fps", "N", "camera frames per second (default 30)");
    command_line.add_option("tail", "SECONDS",
                            "keep streaming this long after the model is complete (default 2)");
    command_line.add_option("duration", "SECONDS",
                            "stop after this long at the latest (default 600)");
    command_line.add_option("mode", "MODE", "incremental (default) or direct");
    command_line.add_option("swap-every", "N", "progressive: rebuild every N refinement units");
    command_line.add_option("swap-interval", "MS",
                            "progressive: rebuild at most every MS milliseconds");
    command_line.add_option("threads", "T",
                            "inference engine threads (default 1, leaving a core to the download)");
    command_line.add_option("decode-threads", "N", "threads decoding units (default 1)");
    command_line.add_option("window", "SECONDS", "accuracy window (default 1)");
    command_line.add_option("from", "OLD.onnx",
                            "an earlier version of the model held here: it serves at once, and "
                            "the package's delta from it replaces the rungs up to its bits");
    add_transfer_options(command_line);
    command_line.add_option("timeline", "PREFIX", "write PREFIX.csv and PREFIX.json");
    add_dataset_options(command_line);
    command_line.add_flag("json", "print the report as JSON instead of text");
    command_line.add_flag("quiet", "no live line");
    if (!command_line.parse(argc, argv)) return 0;
    ProgressiveOptions options;
    const std::string mode = command_line.value("mode").value_or("incremental");
    if (mode != "incremental" && mode != "direct")
        throw UsageError("--mode is incremental or direct");
    options.fetch.mode = mode == "direct" ? FetchMode::direct : FetchMode::incremental;
    options.fetch.decode_threads = int(command_line.integer("decode-threads", 1, 1, 64));
    read_transfer_options(command_line, options.fetch);
    if (const auto previous = command_line.value("from"))
        options.fetch.previous = std::make_shared<const Model>(read_onnx_file(*previous));
    options.engine.threads = int(command_line.integer("threads", 1, 1, 256));
    options.swap_every_units = std::size_t(command_line.integer("swap-every", 0, 1, 1'000'000));
    options.swap_interval_seconds = command_line.real("swap-interval", 0, 1, 1e7) / 1000.0;
    StreamOptions stream;
    stream.frames_per_second = command_line.real("fps", 30, 0.1, 10000);
    stream.tail_seconds = command_line.real("tail", 2, 0, 1e6);
    stream.max_seconds = command_line.real("duration", 600, 0.1, 1e6);
    stream.window_seconds = command_line.real("window", 1, 0.01, 1e6);
    const bool live = !command_line.flag("quiet") && !command_line.flag("json");
    if (live) {
        stream.on_status = [](double seconds, int bits, double accuracy, double rate) {
            std::fprintf(stderr, "\r%7.2f s  rung %2d bit  accuracy %6.2f %%  %7.1f img/s ",
                         seconds, bits, accuracy, rate);
        };
        options.on_event = [](const ProgressiveEvent& event) {
            if (event.kind == ProgressiveEvent::Kind::swapped) {
                std::fprintf(stderr, "\r%7.2f s  engine %llu: %d bit%s (built in %.3f s)%20s\n",
                             event.seconds, static_cast<unsigned long long>(event.generation),
                             event.bits, event.at_accuracy_point ? ", accuracy point" : "",
                             event.build_seconds, "");
            } else if (event.kind == ProgressiveEvent::Kind::degraded ||
                       event.kind == ProgressiveEvent::Kind::failed ||
                       event.kind == ProgressiveEvent::Kind::build_failed) {
                std::fprintf(stderr, "\r%7.2f s  warning: %s%20s\n", event.seconds,
                             printable_text(event.reason).c_str(), "");
            }
        };
    }
    const DatasetRequest request = dataset_request(command_line);
    options.engine.input_shapes = request.input_shapes;
    const std::string url = command_line.positional(0);
    // The dataset is opened once the topology has arrived: image datasets
    // need the model's preprocessing.
    const auto open_inputs = [&request](const Model& topology, const std::string& name) {
        return open_dataset(request, topology, name,
                            optional_input_spec(topology, name, request.input_shapes));
    };
    const StreamReport report = run_stream(url, options, open_inputs, stream);
    if (live) std::fprintf(stderr, "\r%70s\r", "");

    const nlohmann::json json = report_json(report);
    if (const auto prefix = command_line.value("timeline")) {
        write_timeline_csv(report, *prefix + ".csv");
        std::ofstream out(*prefix + ".json", std::ios::binary | std::ios::trunc);
        out << json_text(json, 1) << '\n';
        if (!out) throw Error(bitinc::ErrorCode::io, *prefix + ".json: cannot write the timeline");
    }
    if (command_line.flag("json")) {
        std::printf("%s\n", json_text(json).c_str());
    } else {
        // "top rung" only when the model really got there.
        const bool degraded = ended_degraded(report);
        std::printf("%s: first result %.3f s, %s %.3f s, %zu frames in, %zu results out\n",
                    printable_text(url).c_str(), report.first_result_at,
                    degraded ? "last engine (degraded)" : "top rung", report.top_rung_at,
                    report.frames_in, report.results_out);
        if (const StartupBreakdown startup = startup_breakdown(report); startup.requests > 0) {
            std::printf(
                "  first result = %d requests waiting %.1f ms + moving %s %.1f ms + decoding "
                "after the last byte %.1f ms + copying weights out %.1f ms + engine build "
                "%.1f ms + first inference %.1f ms + other %.1f ms\n",
                startup.requests, startup.waiting * 1e3, megabytes(startup.bytes).c_str(),
                startup.transfer * 1e3, startup.decode_not_hidden * 1e3, startup.snapshot * 1e3,
                startup.engine_build * 1e3, startup.first_inference * 1e3, startup.other * 1e3);
        }
        if (report.fetch && degraded) {
            std::printf("  ended at %d of %d bits", report.fetch->reached_bits,
                        report.fetch->target_bits);
            const std::map<std::string, int> stayed = degraded_tensor_bits(report);
            const char* separator = ": ";
            for (const auto& [tensor, bits] : stayed) {
                std::printf("%s%s stayed at %d bits", separator, printable_text(tensor).c_str(),
                            bits);
                separator = ", ";
            }
            std::printf("\n");
        }
        std::printf(
            "  longest gap between results %.1f ms (%.1f ms at a swap), longest latency %.1f ms, "
            "longest inference %.1f ms\n",
            1e3 * report.longest_gap, 1e3 * report.longest_gap_at_swap,
            1e3 * report.longest_latency, 1e3 * report.longest_inference);
        // "8-bit", or "exact" for the exact rung's engine.
        const bool exact_package = report.fetch && report.fetch->manifest.exact_rung();
        const auto engine_bits = [&](int bits) {
            return exact_package && bits == exact_rung_bits ? std::string("exact")
                                                            : std::to_string(bits) + "-bit";
        };
        for (const auto& [bits, served] : report.served) {
            if (report.labelled) {
                std::printf("  %6s engine served %6zu images, accuracy %6.2f %%\n",
                            engine_bits(bits).c_str(), served.results, served.accuracy_percent());
            } else {
                std::printf("  %6s engine served %6zu inputs (no labels: no accuracy)\n",
                            engine_bits(bits).c_str(), served.results);
            }
        }
        for (const ProgressiveEvent& event : report.events) {
            if (event.kind == ProgressiveEvent::Kind::swapped) {
                std::printf("  %7.3f s  swap to engine %llu (%s%s), built in %.3f s\n",
                            event.seconds, static_cast<unsigned long long>(event.generation),
                            engine_bits(event.bits).c_str(),
                            event.at_accuracy_point ? ", accuracy point" : "", event.build_seconds);
            }
        }
        if (report.failure) {
            std::printf("  download failed: %s\n", printable_text(*report.failure).c_str());
        }
    }
    return 0;
}

}  // namespace bitinc::cli
