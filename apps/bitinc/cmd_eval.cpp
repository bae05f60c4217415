// bitinc eval: the 3GPP evaluation in one command — results, table, report
// and plots.
#include <bitinc/bitinc.hpp>
#include <bitinc/evaluation.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "command_line.hpp"
#include "commands.hpp"
#include "format.hpp"

namespace bitinc::cli {

namespace {

namespace fs = std::filesystem;

// printf into a string of whatever length it takes (long paths in plot
// scripts must never be cut).
std::string format(const char* pattern, auto... values) {
    const int length = std::snprintf(nullptr, 0, pattern, values...);
    if (length <= 0) return {};
    std::string text(std::size_t(length) + 1, '\0');
    std::snprintf(text.data(), text.size(), pattern, values...);
    text.pop_back();
    return text;
}

std::string rate_label(double rate) {
    return format("%g Mbit/s", rate / 1e6);
}
std::string rate_slug(double rate) {
    return format("%gMbit", rate / 1e6);
}

double seed_latency(const RungEvaluation& rung) {
    return rung.encode_seconds + rung.decode_seconds + rung.reconstruct_seconds;
}

double update_latency(const UpdateEvaluation& update) {
    return update.encode_seconds + update.decode_seconds + update.reconstruct_seconds;
}

// The table of the study's results clause: high-precision model,
// low-precision model, and the two updates (to the accuracy point, to the
// top), then the ladder's refinement rungs one by one.
std::string results_table(const EvaluationResult& result) {
    const double direct = double(result.direct.bytes);
    const double base = double(result.ladder.front().bytes);
    std::string text = format(
        "| | Dataset | Model | Precision | %s | Start-up latency (s) | Bitstream size (MB) | "
        "received / direct |\n",
        result.metric_name.c_str());
    text += "|---|---|---|---|---|---|---|---|\n";
    text += format("| High-precision model | %s | %s | %d | %.2f | %.4f | %.3f | 1.000 |\n",
                   result.dataset_name.c_str(), result.model_name.c_str(), result.direct.bits,
                   result.direct.performance.value, seed_latency(result.direct), direct / 1e6);
    const RungEvaluation& low = result.ladder.front();
    // A mixed-precision rung names its range of bit depths and their mean.
    const auto precision = [](const RungEvaluation& rung) {
        return rung.mean_bits > 0 && rung.min_bits != rung.max_bits
                   ? format("mixed %d-%d (mean %.2f)", rung.min_bits, rung.max_bits, rung.mean_bits)
                   : std::to_string(rung.bits);
    };
    const std::string low_precision = precision(low);
    text += format("| Low-precision model | | | %s | %.2f | %.4f | %.3f | %.3f |\n",
                   low_precision.c_str(), low.performance.value, seed_latency(low), base / 1e6,
                   base / direct);
    if (result.accuracy_update) {
        const UpdateEvaluation& update = *result.accuracy_update;
        text += format(
            "| Model update, accuracy-matched (base to the accuracy point: %zu units) | | | %d->%d "
            "| %.2f | %.4f | %.3f | %.3f |\n",
            update.units, update.parent_bits, update.bits, update.performance.value,
            update_latency(update), double(update.bytes) / 1e6,
            (base + double(update.bytes)) / direct);
    }
    const UpdateEvaluation& exact = result.exact_update;
    text += format(
        "| Model update, exact (base to top: %zu units) | | | %d->%d | %.2f | %.4f | %.3f "
        "| %.3f |\n",
        exact.units, exact.parent_bits, exact.bits, exact.performance.value, update_latency(exact),
        double(exact.bytes) / 1e6, (base + double(exact.bytes)) / direct);
    if (result.ladder.size() > 2) {
        for (std::size_t i = 1; i < result.ladder.size(); ++i) {
            const RungEvaluation& rung = result.ladder[i];
            text += format("| (refinement rung %d->%d) | | | %s | %.2f | %.4f | %.3f | |\n",
                           rung.parent_bits, rung.bits, precision(rung).c_str(),
                           rung.performance.value, seed_latency(rung), double(rung.bytes) / 1e6);
        }
    }
    return text;
}

std::string delivery_table(const EvaluationResult& result) {
    std::string text =
        "| link | UE1 first result (s) | UE2 first result (s) | UE1 / UE2 | UE1 accuracy point (s) "
        "| UE1 top rung (s) | UE2 top rung (s) | UE1 MB | UE2 MB | longest gap at a swap (ms) "
        "|\n|---|---|---|---|---|---|---|---|---|---|\n";
    for (std::size_t i = 0; i + 1 < result.runs.size(); i += 2) {
        const UeRun& ue1 = result.runs[i];
        const UeRun& ue2 = result.runs[i + 1];
        const std::string point = ue1.accuracy_point_served_at >= 0
                                      ? format("%.3f", ue1.accuracy_point_served_at)
                                      : std::string("-");
        text += format(
            "| %s, RTT %.0f ms | %.3f | %.3f | %.2f | %s | %.3f | %.3f | %.3f | %.3f | %.1f |\n",
            rate_label(ue1.rate_bits_per_second).c_str(), ue1.rtt_seconds * 1e3,
            ue1.startup_latency_e2e, ue2.startup_latency_e2e,
            ue1.startup_latency_e2e / ue2.startup_latency_e2e, point.c_str(), ue1.top_rung_seconds,
            ue2.top_rung_seconds, double(ue1.bytes) / 1e6, double(ue2.bytes) / 1e6,
            1e3 * ue1.stream.longest_gap_at_swap);
    }
    return text;
}

// Where each first result's time went (StartupBreakdown), in ms, beside the
// line time of the bytes it needed: the physical limit at that rate.
std::string startup_table(const EvaluationResult& result) {
    std::string text =
        "| link | UE | first result | requests | bytes | line time | waiting for first bytes | "
        "moving bytes | decoding after the last byte | copying weights out | engine build | "
        "first inference | other |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for (const UeRun& run : result.runs) {
        const StartupBreakdown& parts = run.startup;
        text += format(
            "| %s | %s | %.1f | %d | %.3f MB | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | "
            "%.1f |\n",
            rate_label(run.rate_bits_per_second).c_str(), run.ue.c_str(), parts.total * 1e3,
            parts.requests, double(parts.bytes) / 1e6,
            double(parts.bytes) * 8 / run.rate_bits_per_second * 1e3, parts.waiting * 1e3,
            parts.transfer * 1e3, parts.decode_not_hidden * 1e3, parts.snapshot * 1e3,
            parts.engine_build * 1e3, parts.first_inference * 1e3, parts.other * 1e3);
    }
    return text;
}

// One line per rate, from the measured timelines: does UE1 serve at every
// instant a model at least as accurate as UE2's?
std::string dominance_lines(const EvaluationResult& result) {
    std::string text;
    for (const Dominance& entry : result.dominance) {
        text += format(
            "* %s: UE1 at least as accurate as UE2 at every instant (tolerance %.2f pt): **%s** "
            "(smallest margin %+.2f pt, at %.3f s)\n",
            rate_label(entry.rate_bits_per_second).c_str(), entry.tolerance,
            entry.holds ? "yes" : "no", entry.worst_margin, entry.worst_at);
    }
    return text;
}

// The accuracy-first curve against the tensor-order one, point by point
// (both are measured at the same byte counts).
std::string curve_summary(const EvaluationResult& result) {
    const CurveComparison c =
        compare_curves(result.accuracy_first_curve, result.tensor_order_curve);
    if (c.points == 0) return {};
    std::string text = format(
        "Accuracy-first order against tensor order, at %zu byte counts past the base: above at "
        "%zu, equal at %zu (the ends of rungs, where both hold the same units, are among them), "
        "below at %zu",
        c.points, c.above, c.equal, c.below);
    if (c.below > 0) {
        text += format(" (by up to %.2f pt, at %.3f MB past the base", c.worst_shortfall,
                       double(c.worst_at_bytes) / 1e6);
        // The same test images judge both orders: the paired standard
        // error says how large a difference chance alone makes.
        if (c.worst_in_errors > 0)
            text += format("; at most %.1f paired standard errors", c.worst_in_errors);
        text += ")";
    }
    text += format(". Never below: **%s**.", c.below == 0 ? "met" : "not met");
    if (c.per_sample) {
        text += format(
            " Never below beyond chance (one-sided sign test on the test images the two orders "
            "disagree on, %.0f %% with Holm's correction over the %zu byte counts where the models "
            "differ; smallest p where below %.3g): **%s**",
            100 * c.alpha, c.tested, c.smallest_p_below,
            c.significantly_below == 0 ? "met" : "not met");
        if (c.significantly_below > 0) text += format(" (below at %zu)", c.significantly_below);
        text += ".";
    }
    return text + "\n";
}

// What the run shows, per link, in a few words: how much sooner UE1
// answers, and when it serves the accuracy-matched model.
std::string headline(const EvaluationResult& result) {
    std::string text;
    const double direct = double(result.direct.bytes);
    for (std::size_t i = 0; i + 1 < result.runs.size(); i += 2) {
        const UeRun& ue1 = result.runs[i];
        const UeRun& ue2 = result.runs[i + 1];
        text += format("%s: UE1's first result after %.3f s, UE2's after %.3f s: UE1/UE2 = %.2f",
                       rate_label(ue1.rate_bits_per_second).c_str(), ue1.startup_latency_e2e,
                       ue2.startup_latency_e2e, ue1.startup_latency_e2e / ue2.startup_latency_e2e);
        if (result.accuracy_update && ue1.accuracy_point_served_at >= 0) {
            const UpdateEvaluation& update = *result.accuracy_update;
            text +=
                format("; UE1 serves the accuracy point (%.2f, %.3f x the direct bytes) at %.3f s",
                       update.performance.value,
                       (double(result.ladder.front().bytes) + double(update.bytes)) / direct,
                       ue1.accuracy_point_served_at);
        }
        text += "\n";
    }
    return text;
}

void write_text(const fs::path& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) throw Error(bitinc::ErrorCode::io, path.string() + ": cannot write it");
}

// Data files and one gnuplot script for the three plots, PNG and SVG.
bool write_plots(const EvaluationResult& result, const fs::path& directory) {
    const fs::path data = directory / "plot-data";
    fs::create_directories(data);
    std::string script = "set datafile separator ' '\nset key bottom right\nset grid\n";
    const auto both_formats = [&](const std::string& name, const std::string& body) {
        for (const char* terminal :
             {"pngcairo noenhanced size 900,540", "svg noenhanced size 900,540"}) {
            const bool png = std::string(terminal).rfind("png", 0) == 0;
            script += format("set terminal %s\nset output '%s'\n", terminal,
                             (directory / (name + (png ? ".png" : ".svg"))).c_str());
            script += body;
        }
    };
    double end_time = 0;
    for (const UeRun& run : result.runs) end_time = std::max(end_time, run.top_rung_seconds);
    end_time = end_time * 1.15 + 0.05;
    // Zoom on the metrics served (the step up from nothing still shows).
    double lowest = result.original.value;
    for (const UeRun& run : result.runs) {
        for (const auto& step : run.served) lowest = std::min(lowest, step.second);
    }
    const double y_low = std::max(0.0, lowest - 5);
    for (std::size_t i = 0; i + 1 < result.runs.size(); i += 2) {
        const std::string slug = rate_slug(result.runs[i].rate_bits_per_second);
        for (const std::size_t j : {i, i + 1}) {
            const UeRun& run = result.runs[j];
            std::string points = "0 0\n";
            for (const auto& [seconds, value] : run.served)
                points += format("%.4f %.4f\n", seconds, value);
            const double last = run.served.empty() ? 0.0 : run.served.back().second;
            points += format("%.4f %.4f\n", end_time, last);
            write_text(data / (run.ue + "-" + slug + ".dat"), points);
        }
        const UeRun& ue1 = result.runs[i];
        // A dotted line where UE1's accuracy-matched model starts serving.
        const std::string mark =
            ue1.accuracy_point_served_at < 0
                ? std::string()
                : format(
                      "set arrow 1 from %.4f, graph 0 to %.4f, graph 1 nohead dt 3 lc rgb "
                      "'dark-green'\nset label 1 'UE1: accuracy point' at %.4f, graph 0.06 "
                      "offset 0.4,0 tc rgb 'dark-green'\n",
                      ue1.accuracy_point_served_at, ue1.accuracy_point_served_at,
                      ue1.accuracy_point_served_at);
        both_formats(
            "accuracy-over-time-" + slug,
            mark +
                format(
                    "set title \"Accuracy of the model each UE serves, %s, RTT %.0f ms: %s\\n(each "
                    "served model's test accuracy, measured offline, from its engine swap on)\"\n"
                    "set xlabel 'seconds since the request'\nset ylabel '%s'\nset xrange "
                    "[0:%.4f]\nset yrange [%.2f:100]\n"
                    "plot '%s' using 1:2 with steps lw 2 title 'UE1: base rung, then updates', "
                    "'%s' using 1:2 with steps lw 2 dt 2 title 'UE2: high-precision model "
                    "directly', %.4f with lines lc rgb 'gray' title 'original float32'\n"
                    "unset arrow 1\nunset label 1\n",
                    rate_label(ue1.rate_bits_per_second).c_str(), ue1.rtt_seconds * 1e3,
                    result.model_name.c_str(), result.metric_name.c_str(), end_time, y_low,
                    (data / ("UE1-" + slug + ".dat")).c_str(),
                    (data / ("UE2-" + slug + ".dat")).c_str(), result.original.value));
    }
    if (!result.accuracy_first_curve.empty()) {
        const double base_mb = double(result.ladder.front().bytes) / 1e6;
        const auto curve_data = [&](const std::vector<CurvePoint>& curve) {
            std::string points;
            for (const CurvePoint& point : curve)
                points += format("%.6f %.4f\n", base_mb + double(point.bytes) / 1e6, point.value);
            return points;
        };
        write_text(data / "curve-accuracy-first.dat", curve_data(result.accuracy_first_curve));
        write_text(data / "curve-tensor-order.dat", curve_data(result.tensor_order_curve));
        const std::string mark =
            result.accuracy_update
                ? format(
                      "set arrow 2 from %.6f, graph 0 to %.6f, graph 1 nohead dt 3 lc rgb "
                      "'dark-green'\nset label 2 'accuracy point' at %.6f, graph 0.06 offset "
                      "0.4,0 tc rgb 'dark-green'\n",
                      base_mb + double(result.accuracy_update->bytes) / 1e6,
                      base_mb + double(result.accuracy_update->bytes) / 1e6,
                      base_mb + double(result.accuracy_update->bytes) / 1e6)
                : std::string();
        both_formats(
            "accuracy-vs-bytes",
            mark + format("set title \"Accuracy against bytes received: %s\\n(test accuracy "
                          "of the model the received units make)\"\n"
                          "set xlabel 'MB received (base rung, then refinement units)'\n"
                          "set ylabel '%s'\nset xrange [%.4f:*]\nset yrange [*:*]\n"
                          "plot '%s' using 1:2 with linespoints pt 7 lw 2 title 'accuracy-first "
                          "order (calibrated)', '%s' using 1:2 with linespoints pt 5 dt 2 title "
                          "'tensor order', %.4f with lines lc rgb 'gray' title 'high-precision "
                          "model (%.3f MB sent directly)'\nunset arrow 2\nunset label 2\n",
                          result.model_name.c_str(), result.metric_name.c_str(), 0.95 * base_mb,
                          (data / "curve-accuracy-first.dat").c_str(),
                          (data / "curve-tensor-order.dat").c_str(),
                          result.direct.performance.value, double(result.direct.bytes) / 1e6));
    }
    std::string bars = "link UE1 UE2\n";
    for (std::size_t i = 0; i + 1 < result.runs.size(); i += 2) {
        bars +=
            format("\"%s\" %.4f %.4f\n", rate_label(result.runs[i].rate_bits_per_second).c_str(),
                   result.runs[i].startup_latency_e2e, result.runs[i + 1].startup_latency_e2e);
    }
    write_text(data / "startup.dat", bars);
    both_formats(
        "startup-latency",
        format(
            "set title 'Start-up latency (request to first inference result): %s'\nset style data "
            "histograms\nset style histogram clustered gap 1\nset style fill solid 0.8 border "
            "-1\nset "
            "ylabel 'seconds'\nset xrange [*:*]\nset yrange [0:*]\nset key top right\n"
            "plot '%s' using 2:xtic(1) title 'UE1 (incremental)', '' using 3 title 'UE2 "
            "(direct)'\n",
            result.model_name.c_str(), (data / "startup.dat").c_str()));
    if (!result.sweep.empty()) {
        std::string tensor_points, channel_points;
        for (const SweepPoint& point : result.sweep) {
            (point.per_channel ? channel_points : tensor_points) +=
                format("%.6f %.4f %d\n", double(point.bytes) / 1e6, point.value, point.base_bits);
        }
        write_text(data / "sweep-tensor.dat",
                   tensor_points.empty() ? "nan nan 0\n" : tensor_points);
        write_text(data / "sweep-channel.dat",
                   channel_points.empty() ? "nan nan 0\n" : channel_points);
        both_formats(
            "sweep",
            format("set title 'One-rung packages (plain quantization at b bits): size and "
                   "accuracy: %s'\nset xlabel 'rung + topology (MB)'\n"
                   "set ylabel '%s'\nset xrange [0:*]\nset yrange [*:*]\nset key bottom right\n"
                   "plot '%s' using 1:2 with linespoints pt 7 title 'per-tensor steps', "
                   "'' using 1:2:(sprintf('%%d bit', $3)) with labels offset 0,1 notitle, "
                   "'%s' using 1:2 with linespoints pt 5 title 'per-channel steps', "
                   "%.4f with lines lc rgb 'gray' title 'original float32'\n",
                   result.model_name.c_str(), result.metric_name.c_str(),
                   (data / "sweep-tensor.dat").c_str(), (data / "sweep-channel.dat").c_str(),
                   result.original.value));
    }
    write_text(directory / "plots.gp", script);
    const std::string command = "gnuplot '" + (directory / "plots.gp").string() + "' 2>'" +
                                (directory / "gnuplot.log").string() + "'";
    return std::system(command.c_str()) == 0;
}

std::string report_markdown(const EvaluationResult& result, bool plots) {
    std::string text = "# Bit-incremental delivery of " + result.model_name + "\n\n";
    text +=
        format("Dataset %s, metric %s, coder %s. The original float32 model (%s) scores %.2f.\n\n",
               result.dataset_name.c_str(), result.metric_name.c_str(), result.coder_name.c_str(),
               megabytes(result.float32_bytes).c_str(), result.original.value);
    if (!result.engine_problem.empty()) {
        text += "**The engine cannot run this model** (" + result.engine_problem +
                "): the metric is `nan` throughout and no UE ran; sizes, times and weight SNR "
                "(results.json) are measured.\n\n";
    }
    text += "## The models, as in the study's results table\n\n";
    text +=
        "Start-up latency here follows the study: encode + decode + reconstruct, no transfer.\n\n";
    text += results_table(result);
    text += format(
        "\nBase + update reproduces the directly sent high-precision model bit for bit: "
        "**%s**.\n\n",
        result.update_equals_direct ? "yes" : "NO");
    if (result.accuracy_point) {
        const AccuracyPoint& point = *result.accuracy_point;
        text += format(
            "The accuracy point was chosen on %llu training images (%.2f against the top rung's "
            "%.2f, tolerance %.2f pt); the accuracies above are on the test split. The point's "
            "encode time is its rungs' coding time shared out by bytes.\n\n",
            static_cast<unsigned long long>(point.calibration_images), point.value, point.top_value,
            point.tolerance);
    }
    if (result.runs.empty()) return text;  // no UE ran (the engine cannot run the model)
    text += "## Delivery over emulated links\n\n";
    text +=
        "End to end: from the request for the manifest to the first inference result (UE1 runs the "
        "base "
        "rung, UE2 the high-precision model), and to the engine of the top rung serving.\n\n";
    text += delivery_table(result);
    if (!result.dominance.empty()) {
        text +=
            "\nAccuracy over time, from the measured timelines (each served model's test "
            "accuracy from its engine swap on; a UE serving nothing counts as 0):\n\n";
        text += dominance_lines(result);
    }
    text +=
        "\nWhere the time to the first result went, in ms (docs/evaluation.md): the line time is "
        "what the link needs for the bytes alone.\n\n";
    text += startup_table(result);
    if (plots) {
        text += "\n![start-up latency](startup-latency.png)\n\n";
        for (std::size_t i = 0; i + 1 < result.runs.size(); i += 2) {
            const std::string slug = rate_slug(result.runs[i].rate_bits_per_second);
            text += "![accuracy over time at " + rate_label(result.runs[i].rate_bits_per_second) +
                    "](accuracy-over-time-" + slug + ".png)\n\n";
        }
    }
    if (!result.accuracy_first_curve.empty()) {
        text +=
            "## Accuracy against bytes received\n\nThe test accuracy of the model a device "
            "holds after each number of refinement bytes, with the package's calibrated "
            "order (accuracy per byte) and with the same units in tensor order (as packed "
            "without calibration); both measured at the same byte counts.\n\n";
        text += curve_summary(result);
        text += "\n| MB received | accuracy-first | tensor order |\n|---|---|---|\n";
        const double base_mb = double(result.ladder.front().bytes) / 1e6;
        for (std::size_t i = 0;
             i < result.accuracy_first_curve.size() && i < result.tensor_order_curve.size(); ++i) {
            text +=
                format("| %.4f | %.2f | %.2f |\n",
                       base_mb + double(result.accuracy_first_curve[i].bytes) / 1e6,
                       result.accuracy_first_curve[i].value, result.tensor_order_curve[i].value);
        }
        if (plots) text += "\n![accuracy against bytes](accuracy-vs-bytes.png)\n\n";
    }
    if (!result.sweep.empty()) {
        text +=
            "## Sweep: one-rung packages, size against accuracy\n\nEach point is a package of a "
            "single rung: the model quantized directly at b bits (what a base rung of b bits "
            "costs and scores), not a rung of the ladder above.\n\n| bits | steps | MB | " +
            result.metric_name + " |\n|---|---|---|---|\n";
        for (const SweepPoint& point : result.sweep) {
            text += format("| %d | %s | %.4f | %.2f |\n", point.base_bits,
                           point.per_channel ? "per channel" : "per tensor",
                           double(point.bytes) / 1e6, point.value);
        }
        if (plots) text += "\n![sweep](sweep.png)\n";
    }
    text +=
        "\nFiles: `results.csv` (the study's columns, then ours), `results.json` (everything).\n";
    return text;
}

}  // namespace

int run_eval(int argc, char** argv) {
    CommandLine command_line(
        "eval",
        "The 3GPP evaluation of bit-incremental delivery: packs the model, measures the\n"
        "original and every rung as a device rebuilds it, then for every link rate runs\n"
        "UE1 (base rung, then updates) and UE2 (high-precision model directly), each over\n"
        "its own emulated link on loopback with a 30 fps camera stream. Writes\n"
        "results.csv, results.json, report.md and plots (PNG and SVG) to -o DIR.\n"
        "The metric is top-1 on the Fashion-MNIST test images, or on --dataset's inputs;\n"
        "inputs without labels (e.g. --dataset random) measure top-1 agreement with the\n"
        "float model instead, with the output SNR in results.json.");
    command_line.add_positional("MODEL.onnx",
                                "the float model (a Fashion-MNIST classifier by default)");
    command_line.add_option("ladder", "BITS",
                            "low- and high-precision bits, e.g. 8,16 (default) or 4,8,16");
    command_line.add_flag("per-channel", "one step per output channel");
    command_line.add_option("rates", "LIST", "link rates (default 33.6Mbit,100Mbit,1100Mbit)");
    command_line.add_option("rtt", "DURATION", "round-trip time of every link (default 20ms)");
    command_line.add_flag("sweep",
                          "also measure one-rung packages (plain quantization) of 2-8 bits, per "
                          "tensor and per channel");
    command_line.add_option("limit", "N",
                            "evaluate on the first N inputs (default all; --dataset random: "
                            "100)");
    command_line.add_option("fps", "N", "camera frames per second of the UEs (default 30)");
    command_line.add_option("coder", "NAME",
                            "coder of the study's table: bitinc (default), raw or zstd");
    command_line.add_option("tag", "TEXT",
                            "unique_tag column of the CSV (default: the model name)");
    command_line.add_option("threads", "T", "engine threads of the UEs' streams (default 1)");
    command_line.add_option("eval-threads", "T",
                            "engine threads when measuring accuracy (default: all cores)");
    command_line.add_flag("calibrate",
                          "pack with calibration on training images: refinements in order of "
                          "accuracy per byte, an accuracy point, and both updates in the table");
    add_budget_options(command_line);
    add_calibration_options(command_line,
                            "training images calibration and --budget run on (default 1000)");
    command_line.add_option("curve-points", "N",
                            "accuracy-against-bytes points per refinement rung, calibrated and "
                            "tensor order (default 8; 0: none)");
    add_dataset_options(command_line);
    command_line.add_option("batch", "B",
                            "inputs per forward pass with --dataset (default 100, at most what "
                            "the graph's batch axis allows)");
    command_line.add_option("o", "DIR", "results directory (required)");
    command_line.add_flag("quiet", "no progress lines");
    if (!command_line.parse(argc, argv)) return 0;
    const auto output = command_line.value("o");
    if (!output) throw UsageError("give the results directory with -o DIR");
    const fs::path model = command_line.positional(0);

    EvaluationOptions options;
    options.ladder = LadderPlan::parse(command_line.value("ladder").value_or("8,16"));
    options.ladder.per_channel = command_line.flag("per-channel");
    options.rates_bits_per_second.clear();
    for (const std::string& rate :
         split(command_line.value("rates").value_or("33.6Mbit,100Mbit,1100Mbit"), ',')) {
        options.rates_bits_per_second.push_back(parse_rate(rate));
    }
    options.rtt_seconds = parse_duration(command_line.value("rtt").value_or("20ms"));
    const auto fps = command_line.integer("fps", 30, 1, 1000);
    options.frames_per_second = double(fps);
    options.engine_threads = int(command_line.integer("threads", 1, 1, 256));
    options.tag = command_line.value("tag").value_or(model.stem().string());
    options.coder = command_line.value("coder").value_or("bitinc");
    make_coder(options.coder);  // an unknown name is an error before any work
    if (command_line.flag("sweep")) {
        options.sweep = {{2, false}, {3, false}, {4, false}, {6, false},
                         {8, false}, {4, true},  {8, true}};
    }
    options.budget = budget_options(command_line);
    if (command_line.flag("calibrate")) {
        PackCalibration calibration = calibration_options(command_line);
        calibration.engine_threads = int(command_line.integer("eval-threads", 0, 1, 256));
        options.calibration = calibration;
    }
    options.curve_points_per_rung = std::size_t(command_line.integer("curve-points", 8, 0, 1000));
    options.work_directory = fs::path(*output) / "work";
    if (!command_line.flag("quiet")) {
        // Each stage with the time since the start: where a run's minutes go.
        options.progress = [started = std::chrono::steady_clock::now()](const std::string& line) {
            const double elapsed =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
            std::fprintf(stderr, "bitinc eval: [%6.1f s] %s\n", elapsed, line.c_str());
        };
    }
    const auto limit = std::size_t(command_line.integer("limit", 0, 1, 10'000'000));
    const int eval_threads = int(command_line.integer("eval-threads", 0, 1, 256));
    const DatasetRequest request = dataset_request(command_line);
    std::unique_ptr<Scenario> scenario;
    if (request.dataset.empty() && request.input_shapes.empty()) {
        scenario = make_fashion_mnist_scenario(data_dir(command_line), limit, eval_threads);
    } else {
        if (options.calibration) {
            throw UsageError(
                "--calibrate calibrates on Fashion-MNIST's training split; it does not go with "
                "--dataset or --input-shape yet");
        }
        const Model float_model = read_onnx_file(model);
        std::unique_ptr<InputSet> inputs =
            open_dataset(request, float_model, model.string(),
                         optional_input_spec(float_model, model.string(), request.input_shapes));
        std::size_t batch = std::size_t(command_line.integer("batch", 100, 1, 10'000));
        if (const std::size_t cap = batch_cap(float_model, request.input_shapes); cap > 0) {
            batch = std::min(batch, cap);
        }
        EngineOptions engine_options;
        engine_options.threads = eval_threads;
        engine_options.input_shapes = request.input_shapes;
        options.input_shapes = request.input_shapes;
        scenario =
            make_dataset_scenario(std::move(inputs), float_model, limit, batch, engine_options);
    }

    EvaluationResult result;
    try {
        result = run_evaluation(model, *scenario, options);
    } catch (...) {
        std::error_code ignored;
        fs::remove_all(options.work_directory, ignored);  // no half-made packages left behind
        throw;
    }
    write_evaluation_results(result, *output);
    const bool plots = !result.runs.empty() && write_plots(result, *output);
    write_text(fs::path(*output) / "report.md", report_markdown(result, plots));
    std::error_code ignored;
    fs::remove_all(options.work_directory, ignored);

    if (result.runs.empty()) {
        std::printf("%s on %s: original float32 %.2f (%s)\n\n%s\n", result.model_name.c_str(),
                    result.dataset_name.c_str(), result.original.value, result.metric_name.c_str(),
                    results_table(result).c_str());
        if (!result.engine_problem.empty()) {
            std::printf(
                "The engine cannot run this model (%s): sizes, times and weight SNR "
                "only (results.json).\n",
                result.engine_problem.c_str());
        }
        std::printf("report: %s\n", (fs::path(*output) / "report.md").c_str());
        return 0;
    }
    std::printf("%s on %s: original float32 %.2f (%s)\n\n%s\n%s\n%s\n%s\n%s\n",
                result.model_name.c_str(), result.dataset_name.c_str(), result.original.value,
                result.metric_name.c_str(), results_table(result).c_str(),
                delivery_table(result).c_str(), dominance_lines(result).c_str(),
                curve_summary(result).c_str(), startup_table(result).c_str());
    if (!plots)
        std::fprintf(stderr,
                     "bitinc eval: warning: gnuplot failed; no plots (see %s/gnuplot.log)\n",
                     output->c_str());
    std::printf("%s\nreport: %s\n", headline(result).c_str(),
                (fs::path(*output) / "report.md").c_str());
    return 0;
}

}  // namespace bitinc::cli
