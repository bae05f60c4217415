// Sizes and speeds of the coders on a model's weights, per ladder: what
// `bitinc bench` prints and docs/performance.md tabulates.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bitinc/ladder.hpp"
#include "bitinc/model.hpp"

namespace bitinc {

struct CoderBenchmarkOptions {
    LadderPlan plan;
    std::vector<std::string> coders{"bitinc", "raw", "zstd"};
    int threads = 1;  // tensors are coded in parallel
    int repeats = 1;  // encode/decode times: the best of this many passes
    // Called with a short description of the step being measured.
    std::function<void(const std::string&)> progress;
};

struct RungFigures {
    int bits = 0;
    int parent_bits = 0;  // 0: levels (base rung or direct)
    std::uint64_t bytes = 0;
    double bits_per_weight = 0;
    double encode_seconds = 0;  // wall time with the given threads, best pass
    double decode_seconds = 0;  // including applying refinements, best pass
};

struct CoderFigures {
    std::string coder;
    std::vector<RungFigures> ladder;  // base levels, then each refinement
    RungFigures direct;               // the top rung sent whole
    std::uint64_t ladder_bytes = 0;
    double ladder_over_direct = 0;
};

struct CoderBenchmark {
    std::string ladder;  // e.g. "4,8,16"
    bool per_channel = false;
    int threads = 1;
    int repeats = 1;
    std::uint64_t quantized_weights = 0;
    std::uint64_t exact_weights = 0;  // sent as float32
    std::uint64_t float32_bytes = 0;  // of the quantized weights
    // Zeroth-order entropy of the indices, each tensor's own histogram,
    // summed: the base rung's and the top rung's, in bytes.
    double base_entropy_bytes = 0;
    double top_entropy_bytes = 0;
    double quantize_seconds = 0;
    double refine_weights_per_second = 0;  // applying residuals, one thread
    std::vector<CoderFigures> coders;
};

// Throws Error if a coder fails to reproduce its input exactly.
CoderBenchmark run_coder_benchmark(const Model& model, const CoderBenchmarkOptions& options);

}  // namespace bitinc
