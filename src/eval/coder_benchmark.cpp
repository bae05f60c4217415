#include "bitinc/coder_benchmark.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <thread>
#include <unordered_map>

#include "bitinc/codec.hpp"
#include "bitinc/coder.hpp"
#include "bitinc/error.hpp"
#include "core/parallel.hpp"

namespace bitinc {

namespace {

using core::run_parallel;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

double entropy_bytes(const std::vector<std::int32_t>& indices) {
    std::unordered_map<std::int32_t, std::size_t> counts;
    for (const std::int32_t index : indices) ++counts[index];
    double bits = 0;
    const double total = double(indices.size());
    for (const auto& [_, count] : counts) bits -= double(count) * std::log2(double(count) / total);
    return bits / 8;
}

// Elements of the chunk starting at `first`: about default_chunk_elements,
// cut at a channel boundary so that each chunk carries whole steps, and at a
// row boundary so that a slice's rows are the tensor's.
std::size_t chunk_length(const QuantizedTensor& rung, std::size_t first) {
    const std::size_t channel = std::max<std::size_t>(rung.channel_size, 1);
    std::size_t length = std::size_t(default_chunk_elements);
    if (rung.steps.size() > 1) {
        length = std::max(channel, length / channel * channel);
    } else if (rung.row_length > 0) {
        length = std::max(rung.row_length, length / rung.row_length * rung.row_length);
    }
    return std::min(length, rung.indices.size() - first);
}

QuantizedTensor slice(const QuantizedTensor& rung, std::size_t first, std::size_t count) {
    QuantizedTensor part;
    part.bits = rung.bits;
    part.row_length = rung.row_length;
    part.indices.assign(rung.indices.begin() + std::ptrdiff_t(first),
                        rung.indices.begin() + std::ptrdiff_t(first + count));
    if (rung.steps.size() > 1) {
        part.channel_size = rung.channel_size;
        part.steps.assign(rung.steps.begin() + std::ptrdiff_t(first / rung.channel_size),
                          rung.steps.begin() + std::ptrdiff_t((first + count) / rung.channel_size));
    } else {
        part.channel_size = count;
        part.steps = rung.steps;
    }
    return part;
}

std::string ladder_text(const LadderPlan& plan) {
    std::string text;
    for (const int bits : plan.bits) text += (text.empty() ? "" : ",") + std::to_string(bits);
    return text;
}

}  // namespace

CoderBenchmark run_coder_benchmark(const Model& model, const CoderBenchmarkOptions& options) {
    const LadderPlan& plan = options.plan;
    const int threads = std::max(1, options.threads);
    CoderBenchmark result;
    result.ladder = ladder_text(plan);
    result.per_channel = plan.per_channel;
    result.threads = threads;
    result.repeats = std::max(1, options.repeats);

    std::vector<const Tensor*> tensors;
    for (const Tensor& tensor : model.weights) {
        if (plan.quantizes(tensor)) {
            tensors.push_back(&tensor);
            result.quantized_weights += tensor.element_count();
        } else {
            result.exact_weights += tensor.element_count();
        }
    }
    std::sort(tensors.begin(), tensors.end(), [](const Tensor* a, const Tensor* b) {
        return a->element_count() > b->element_count();
    });
    result.float32_bytes = 4 * result.quantized_weights;
    if (tensors.empty()) return result;

    if (options.progress) options.progress("quantizing");
    std::vector<std::vector<QuantizedTensor>> whole(tensors.size());
    result.quantize_seconds = run_parallel(tensors.size(), threads, [&](std::size_t i) {
        whole[i] = quantize_ladder(*tensors[i], plan);
    });
    for (const auto& tensor_rungs : whole) {
        result.base_entropy_bytes += entropy_bytes(tensor_rungs.front().indices);
        result.top_entropy_bytes += entropy_bytes(tensor_rungs.back().indices);
    }
    // Coding jobs are chunks, as a device decodes them, so that threads
    // share a large tensor too; largest first.
    std::vector<std::vector<QuantizedTensor>> rungs;
    for (const auto& tensor_rungs : whole) {
        const QuantizedTensor& top = tensor_rungs.back();
        for (std::size_t first = 0; first < top.indices.size();) {
            const std::size_t count = chunk_length(top, first);
            std::vector<QuantizedTensor> slices;
            for (const QuantizedTensor& rung : tensor_rungs)
                slices.push_back(slice(rung, first, count));
            rungs.push_back(std::move(slices));
            first += count;
        }
    }
    whole.clear();
    std::stable_sort(rungs.begin(), rungs.end(), [](const auto& a, const auto& b) {
        return a.front().indices.size() > b.front().indices.size();
    });
    // Applying a refinement on its own (residuals already decoded).
    if (plan.bits.size() > 1) {
        const auto residuals = refinement_residuals(rungs[0][0], rungs[0][1]);
        const auto start = Clock::now();
        int repeats = 0;
        do {
            const QuantizedTensor refined = refine(rungs[0][0], residuals, plan.bits[1]);
            if (refined.indices != rungs[0][1].indices)
                throw Error(ErrorCode::internal, "refine disagrees with quantize");
            ++repeats;
        } while (seconds_since(start) < 0.2);
        result.refine_weights_per_second =
            double(residuals.size()) * repeats / seconds_since(start);
    }

    const double weights = double(result.quantized_weights);
    const int repeats = result.repeats;
    for (const std::string& name : options.coders) {
        CoderFigures figures;
        figures.coder = name;
        // One coder per tensor and thread: coders may keep state.
        auto coder_for = [&] { return make_coder(name); };
        // Times are the best of `repeats` passes; decoded indices are checked
        // against the input after the timing.
        auto measure = [&](int parent_bits, int bits, auto encode, auto decode, auto expected) {
            RungFigures rung;
            rung.bits = bits;
            rung.parent_bits = parent_bits;
            std::vector<std::vector<std::uint8_t>> encoded(rungs.size());
            std::vector<std::vector<std::int32_t>> decoded(rungs.size());
            if (options.progress) {
                options.progress(name +
                                 (parent_bits ? " refinement " + std::to_string(parent_bits) + "->"
                                              : " levels ") +
                                 std::to_string(bits));
            }
            for (int pass = 0; pass < repeats; ++pass) {
                const double encode_seconds =
                    run_parallel(rungs.size(), threads,
                                 [&](std::size_t i) { encoded[i] = encode(*coder_for(), i); });
                const double decode_seconds = run_parallel(
                    rungs.size(), threads,
                    [&](std::size_t i) { decoded[i] = decode(*coder_for(), i, encoded[i]); });
                rung.encode_seconds =
                    pass ? std::min(rung.encode_seconds, encode_seconds) : encode_seconds;
                rung.decode_seconds =
                    pass ? std::min(rung.decode_seconds, decode_seconds) : decode_seconds;
            }
            for (std::size_t i = 0; i < rungs.size(); ++i) {
                if (decoded[i] != expected(i).indices)
                    throw Error(ErrorCode::internal,
                                "coder " + name + " did not reproduce its input");
            }
            for (const auto& bytes : encoded) rung.bytes += bytes.size();
            rung.bits_per_weight = 8.0 * double(rung.bytes) / weights;
            return rung;
        };
        figures.ladder.push_back(measure(
            0, plan.bits[0],
            [&](WeightCoder& coder, std::size_t i) { return coder.encode_levels(rungs[i][0]); },
            [&](WeightCoder& coder, std::size_t i, const std::vector<std::uint8_t>& bytes) {
                return coder.decode_levels(bytes, rungs[i][0]);
            },
            [&](std::size_t i) -> const QuantizedTensor& { return rungs[i][0]; }));
        for (std::size_t r = 1; r < plan.bits.size(); ++r) {
            figures.ladder.push_back(measure(
                plan.bits[r - 1], plan.bits[r],
                [&](WeightCoder& coder, std::size_t i) {
                    return coder.encode_refinement(rungs[i][r - 1], rungs[i][r]);
                },
                [&](WeightCoder& coder, std::size_t i, const std::vector<std::uint8_t>& bytes) {
                    return coder.decode_refinement(bytes, rungs[i][r - 1], plan.bits[r]);
                },
                [&](std::size_t i) -> const QuantizedTensor& { return rungs[i][r]; }));
        }
        figures.direct = measure(
            0, plan.top_bits(),
            [&](WeightCoder& coder, std::size_t i) { return coder.encode_levels(rungs[i].back()); },
            [&](WeightCoder& coder, std::size_t i, const std::vector<std::uint8_t>& bytes) {
                return coder.decode_levels(bytes, rungs[i].back());
            },
            [&](std::size_t i) -> const QuantizedTensor& { return rungs[i].back(); });
        for (const RungFigures& rung : figures.ladder) figures.ladder_bytes += rung.bytes;
        figures.ladder_over_direct = double(figures.ladder_bytes) / double(figures.direct.bytes);
        result.coders.push_back(std::move(figures));
    }
    return result;
}

}  // namespace bitinc
