#include <bitinc/bitinc.hpp>
#include <bitinc/coder_benchmark.hpp>

#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "command_line.hpp"
#include "commands.hpp"
#include "format.hpp"

namespace bitinc::cli {

namespace {

nlohmann::json rung_json(const RungFigures& rung, double weights) {
    return {
        {"bits", rung.bits},
        {"parent_bits", rung.parent_bits},
        {"bytes", rung.bytes},
        {"bits_per_weight", rung.bits_per_weight},
        {"encode_seconds", rung.encode_seconds},
        {"decode_seconds", rung.decode_seconds},
        {"encode_weights_per_second", rung.encode_seconds > 0 ? weights / rung.encode_seconds : 0},
        {"decode_weights_per_second", rung.decode_seconds > 0 ? weights / rung.decode_seconds : 0}};
}

nlohmann::json benchmark_json(const CoderBenchmark& result) {
    const double weights = double(result.quantized_weights);
    nlohmann::json json = {{"ladder", result.ladder},
                           {"per_channel", result.per_channel},
                           {"threads", result.threads},
                           {"repeats", result.repeats},
                           {"quantized_weights", result.quantized_weights},
                           {"exact_weights", result.exact_weights},
                           {"float32_bytes", result.float32_bytes},
                           {"base_entropy_bytes", result.base_entropy_bytes},
                           {"top_entropy_bytes", result.top_entropy_bytes},
                           {"quantize_seconds", result.quantize_seconds},
                           {"refine_weights_per_second", result.refine_weights_per_second}};
    for (const CoderFigures& coder : result.coders) {
        nlohmann::json entry = {
            {"coder", coder.coder},
            {"ladder_bytes", coder.ladder_bytes},
            {"direct_bytes", coder.direct.bytes},
            {"ladder_over_direct", coder.ladder_over_direct},
            {"base_over_entropy", double(coder.ladder.front().bytes) / result.base_entropy_bytes},
            {"direct_over_entropy", double(coder.direct.bytes) / result.top_entropy_bytes},
            {"direct", rung_json(coder.direct, weights)}};
        for (const RungFigures& rung : coder.ladder)
            entry["rungs"].push_back(rung_json(rung, weights));
        json["coders"].push_back(entry);
    }
    return json;
}

void print_rung(const std::string& coder, const std::string& label, const RungFigures& rung,
                double weights, double entropy) {
    const std::string ratio =
        entropy > 0 ? std::to_string(double(rung.bytes) / entropy).substr(0, 5) : "";
    std::printf("  %-7s %-10s %14s %7.3f %7s %9.1f %9.1f\n", coder.c_str(), label.c_str(),
                with_commas(rung.bytes).c_str(), rung.bits_per_weight, ratio.c_str(),
                weights / rung.encode_seconds / 1e6, weights / rung.decode_seconds / 1e6);
}

void print_benchmark(const CoderBenchmark& result) {
    const double weights = double(result.quantized_weights);
    std::printf(
        "\nladder %s, %s steps, %d thread%s: H0 base %s bytes, H0 top %s bytes; refine %.0f M "
        "weights/s\n",
        result.ladder.c_str(), result.per_channel ? "per-channel" : "per-tensor", result.threads,
        result.threads > 1 ? "s" : "",
        with_commas(std::uint64_t(result.base_entropy_bytes)).c_str(),
        with_commas(std::uint64_t(result.top_entropy_bytes)).c_str(),
        result.refine_weights_per_second / 1e6);
    std::printf("  %-7s %-10s %14s %7s %7s %9s %9s\n", "coder", "rung", "bytes", "bits/w", "xH0",
                "enc Mw/s", "dec Mw/s");
    for (const CoderFigures& coder : result.coders) {
        for (std::size_t i = 0; i < coder.ladder.size(); ++i) {
            const RungFigures& rung = coder.ladder[i];
            const std::string label = rung.parent_bits ? std::to_string(rung.parent_bits) + "->" +
                                                             std::to_string(rung.bits)
                                                       : std::to_string(rung.bits);
            print_rung(coder.coder, label, rung, weights, i == 0 ? result.base_entropy_bytes : 0);
        }
        if (coder.ladder.size() > 1) {
            print_rung(coder.coder, std::to_string(coder.direct.bits) + " direct", coder.direct,
                       weights, result.top_entropy_bytes);
            std::printf("  %-7s %-10s %14s  ladder / direct = %.4f\n", coder.coder.c_str(),
                        "ladder", with_commas(coder.ladder_bytes).c_str(),
                        coder.ladder_over_direct);
        }
    }
}

}  // namespace

int run_bench(int argc, char** argv) {
    CommandLine command_line(
        "bench",
        "Quantizes the model's weights on each ladder and measures every coder: bytes\n"
        "per rung, bits per weight, the ratio to the zeroth-order entropy H0 of the\n"
        "indices, encode and decode speed in millions of weights per second, and the\n"
        "size of base + refinements against sending the top rung directly.");
    command_line.add_positional("MODEL.onnx", "the model whose weights to code");
    command_line.add_option("ladders", "L/L/..",
                            "ladders separated by '/' (default 8,16/4,16/4,8,16/16)");
    command_line.add_flag("per-channel", "one step per output channel instead of per tensor");
    command_line.add_option("coders", "C,C",
                            "coders to compare (default bitinc,raw,zstd; also bitinc-compact, "
                            "units as pack --compact codes them, and bitinc-adaptive, the "
                            "adaptive coder only)");
    command_line.add_option("threads", "T", "threads coding tensors in parallel (default 1)");
    command_line.add_option("repeats", "N",
                            "time each encode and decode N times, report the best (default 1)");
    command_line.add_flag("json", "print one JSON object instead of text");
    if (!command_line.parse(argc, argv)) return 0;

    const std::string path = command_line.positional(0);
    CoderBenchmarkOptions options;
    options.plan.per_channel = command_line.flag("per-channel");
    options.threads = static_cast<int>(command_line.integer("threads", 1, 1, 64));
    options.repeats = static_cast<int>(command_line.integer("repeats", 1, 1, 100));
    if (const auto coders = command_line.value("coders")) {
        options.coders = split(*coders, ',');
        for (const auto& name : options.coders) make_coder(name);  // fail early on a bad name
    }
    std::vector<LadderPlan> plans;
    for (const auto& text :
         split(command_line.value("ladders").value_or("8,16/4,16/4,8,16/16"), '/')) {
        LadderPlan plan = LadderPlan::parse(text);
        if (plan.exact_top) {
            throw UsageError(
                "bench compares coders on quantized rungs; the exact rung is "
                "measured by bench/exact_rung_bench.sh");
        }
        plan.per_channel = options.plan.per_channel;
        plans.push_back(plan);
    }
    const Model model = read_onnx_file(path);
    const bool json = command_line.flag("json");
    const bool terminal = !json && ::isatty(2);
    options.progress = [&](const std::string& step) {
        if (terminal) std::fprintf(stderr, "\r\033[K%s", step.c_str());
    };
    nlohmann::json all = {{"model", path}, {"results", nlohmann::json::array()}};
    if (!json) std::printf("%s\n", path.c_str());
    for (const LadderPlan& plan : plans) {
        options.plan = plan;
        const CoderBenchmark result = run_coder_benchmark(model, options);
        if (terminal) std::fprintf(stderr, "\r\033[K");
        if (json) {
            all["results"].push_back(benchmark_json(result));
        } else {
            if (&plan == &plans.front()) {
                std::printf("  %s quantized weights (%s bytes as float32), %s sent exactly\n",
                            with_commas(result.quantized_weights).c_str(),
                            with_commas(result.float32_bytes).c_str(),
                            with_commas(result.exact_weights).c_str());
            }
            print_benchmark(result);
        }
    }
    if (json) std::printf("%s\n", json_text(all).c_str());
    return 0;
}

}  // namespace bitinc::cli
