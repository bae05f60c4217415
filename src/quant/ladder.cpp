#include "bitinc/ladder.hpp"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <limits>
#include <string>

#include "bitinc/error.hpp"

namespace bitinc {

namespace {

// Steps keep 8 significant bits (the top 16 bits of the float32 pattern), so
// a unit stores each in 2 bytes. Rounding up keeps the largest weight on the
// grid and makes it at most 0.4 % coarser; where that would let
// step * limit overflow float32 (weights near FLT_MAX) the step is rounded
// down and the largest indices clamp. A step below the smallest normal float
// becomes 0 (its channel quantizes to zeros), which keeps every rung's step
// exactly representable in 16 bits.
float compact_step(float step, std::int64_t limit) {
    if (!(step >= std::numeric_limits<float>::min())) return 0.0f;
    const std::uint32_t bits = std::bit_cast<std::uint32_t>(step);
    if ((bits & 0xFFFFu) == 0) return step;
    const float down = std::bit_cast<float>(bits & 0xFFFF0000u);
    const float up = std::bit_cast<float>((bits + 0x10000u) & 0xFFFF0000u);
    return double(up) * double(limit) <= double(std::numeric_limits<float>::max()) ? up : down;
}

std::size_t channel_count(const Tensor& tensor, const LadderPlan& plan) {
    if (!plan.per_channel || tensor.shape.size() < 2 || tensor.shape[0] <= 0) return 1;
    return static_cast<std::size_t>(tensor.shape[0]);
}

}  // namespace

LadderPlan LadderPlan::parse(std::string_view text) {
    LadderPlan plan;
    const std::string original(text);
    while (!text.empty()) {
        if (text == "exact") {
            if (plan.bits.empty() || plan.bits.back() >= max_ladder_bits) {
                throw Error(ErrorCode::invalid_argument,
                            "ladder '" + original +
                                "': exact follows a quantized rung below 32 bits, e.g. 4,8,exact");
            }
            plan.exact_top = true;
            break;
        }
        int bits = 0;
        const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), bits);
        if (error != std::errc() || bits < min_ladder_bits || bits > max_ladder_bits) {
            throw Error(ErrorCode::invalid_argument,
                        "ladder '" + original +
                            "': each rung is a bit depth from 2 to 32, the last may be 'exact'");
        }
        if (!plan.bits.empty() && bits <= plan.bits.back()) {
            throw Error(ErrorCode::invalid_argument,
                        "ladder '" + original + "': bit depths must increase, e.g. 4,8,16");
        }
        plan.bits.push_back(bits);
        text.remove_prefix(static_cast<std::size_t>(end - text.data()));
        if (!text.empty()) {
            if (text.front() != ',' || text.size() == 1) {
                throw Error(
                    ErrorCode::invalid_argument,
                    "ladder '" + original + "': expected a comma-separated list such as 8,16");
            }
            text.remove_prefix(1);
        }
    }
    if (plan.bits.empty())
        throw Error(ErrorCode::invalid_argument, "ladder is empty: give bit depths such as 8,16");
    return plan;
}

std::vector<int> LadderPlan::rung_bits_with_base(int base) const {
    std::vector<int> result;
    for (std::size_t i = 0; i < bits.size(); ++i)
        result.push_back(i == 0 ? base : std::max(base, bits[i]));
    return result;
}

LadderPlan LadderPlan::with_base(int base) const {
    return with_rung_bits(rung_bits_with_base(base));
}

LadderPlan LadderPlan::with_rung_bits(std::vector<int> rung_bits) const {
    LadderPlan plan = *this;
    plan.bits = std::move(rung_bits);
    plan.bits.erase(std::unique(plan.bits.begin(), plan.bits.end()), plan.bits.end());
    return plan;
}

bool LadderPlan::quantizes(const Tensor& tensor) const {
    return tensor.shape.size() >= 2 && tensor.element_count() >= min_quantized_elements;
}

std::int64_t predicted_level(float value, float step, std::int64_t largest) {
    if (step == 0.0f) return 0;
    const double scaled = std::round(double(value) / double(step));
    if (!std::isfinite(scaled)) return 0;
    return std::int64_t(std::clamp(scaled, -double(largest), double(largest)));
}

std::int64_t largest_index(int bits, int base_bits) {
    return ((std::int64_t{1} << (base_bits - 1)) - 1) << (bits - base_bits);
}

namespace {

// The steps of the top rung: one per channel, from the channel's largest
// |weight|. Throws Error on a NaN or infinite weight.
std::vector<float> top_steps(const Tensor& tensor, const LadderPlan& plan, std::size_t channels,
                             std::size_t channel_size) {
    const std::int64_t limit = largest_index(plan.top_bits(), plan.base_bits());
    std::vector<float> steps(channels);
    for (std::size_t channel = 0; channel < channels; ++channel) {
        const float* values = tensor.values.data() + channel * channel_size;
        float largest = 0.0f;
        for (std::size_t i = 0; i < channel_size; ++i) {
            if (!std::isfinite(values[i])) {
                throw Error(ErrorCode::invalid_argument,
                            "tensor '" + tensor.name + "': element " +
                                std::to_string(channel * channel_size + i) + " is " +
                                (std::isnan(values[i]) ? "NaN" : "infinite") +
                                "; only finite weights can be quantized");
            }
            largest = std::max(largest, std::fabs(values[i]));
        }
        steps[channel] = compact_step(static_cast<float>(double(largest) / double(limit)), limit);
    }
    return steps;
}

// Rounds `count` values at `step` (halves away from zero, as the format
// says), clamped to +-limit; a zero step (all zeros, or a step too small to
// be a normal float) gives zeros.
void round_at_step(const float* values, std::size_t count, double step, double limit,
                   std::int32_t* indices) {
    if (step == 0.0) {
        std::fill(indices, indices + count, 0);
        return;
    }
    for (std::size_t i = 0; i < count; ++i) {
        const double scaled = std::round(double(values[i]) / step);
        indices[i] = static_cast<std::int32_t>(std::clamp(scaled, -limit, limit));
    }
}

// Direct rounding of every weight at the top rung's step.
QuantizedTensor quantize_rung(const Tensor& tensor, const LadderPlan& plan,
                              std::span<const float> top, std::size_t channel_size, int bits) {
    const int shift = plan.top_bits() - bits;
    const double limit = double(largest_index(bits, plan.base_bits()));
    QuantizedTensor result;
    result.bits = bits;
    result.channel_size = channel_size;
    result.row_length = row_length(tensor);
    result.steps.reserve(top.size());
    for (const float step : top) result.steps.push_back(std::ldexp(step, shift));  // exact
    result.indices.resize(tensor.element_count());
    for (std::size_t channel = 0; channel < top.size(); ++channel) {
        round_at_step(tensor.values.data() + channel * channel_size, channel_size,
                      result.steps[channel], limit, result.indices.data() + channel * channel_size);
    }
    return result;
}

// The next coarser rung, k bits below `fine`: every index divided by 2^k,
// halves rounded toward zero, so that the coarse index is a function of the
// fine one (docs/format.md §1).
QuantizedTensor coarser_rung(const QuantizedTensor& fine, int k) {
    QuantizedTensor result;
    result.bits = fine.bits - k;
    result.channel_size = fine.channel_size;
    result.row_length = fine.row_length;
    result.steps.reserve(fine.steps.size());
    for (const float step : fine.steps) result.steps.push_back(std::ldexp(step, k));  // exact
    result.indices.resize(fine.indices.size());
    for (std::size_t i = 0; i < fine.indices.size(); ++i)
        result.indices[i] = divide_toward_zero_on_ties(fine.indices[i], k);
    return result;
}

}  // namespace

std::size_t row_length(const Tensor& tensor) {
    if (tensor.shape.size() < 2 || tensor.shape[0] <= 0) return 0;
    return tensor.element_count() / std::size_t(tensor.shape[0]);
}

std::int32_t divide_toward_zero_on_ties(std::int32_t fine_index, int k) {
    const std::int64_t bias = (std::int64_t{1} << (k - 1)) - 1;
    const std::int64_t magnitude = std::abs(std::int64_t{fine_index});
    const auto quotient = static_cast<std::int32_t>((magnitude + bias) >> k);
    return fine_index < 0 ? -quotient : quotient;
}

QuantizedTensor quantize_top(const Tensor& tensor, const LadderPlan& plan) {
    const std::size_t channels = channel_count(tensor, plan);
    const std::size_t channel_size = tensor.element_count() / channels;
    const auto steps = top_steps(tensor, plan, channels, channel_size);
    return quantize_rung(tensor, plan, steps, channel_size, plan.top_bits());
}

std::vector<QuantizedTensor> quantize_ladder(const Tensor& tensor, const LadderPlan& plan) {
    std::vector<QuantizedTensor> rungs(plan.bits.size());
    rungs.back() = quantize_top(tensor, plan);
    for (std::size_t rung = rungs.size() - 1; rung-- > 0;)
        rungs[rung] = coarser_rung(rungs[rung + 1], plan.bits[rung + 1] - plan.bits[rung]);
    return rungs;
}

TopGrid top_grid(const Tensor& tensor, const LadderPlan& plan) {
    TopGrid grid;
    const std::size_t channels = channel_count(tensor, plan);
    grid.channel_size = tensor.element_count() / channels;
    grid.steps = top_steps(tensor, plan, channels, grid.channel_size);
    return grid;
}

std::vector<float> rung_steps(const TopGrid& grid, const LadderPlan& plan, int bits) {
    std::vector<float> steps;
    steps.reserve(grid.steps.size());
    for (const float step : grid.steps)
        steps.push_back(std::ldexp(step, plan.top_bits() - bits));  // exact
    return steps;
}

void quantize_chunk(const Tensor& tensor, const TopGrid& grid, const LadderPlan& plan, int bits,
                    std::uint64_t first, std::span<std::int32_t> out) {
    const auto rung = std::find(plan.bits.begin(), plan.bits.end(), bits);
    if (rung == plan.bits.end() || grid.channel_size == 0 ||
        first + out.size() > tensor.values.size()) {
        throw Error(ErrorCode::invalid_argument,
                    "quantize_chunk: the chunk or the rung is not the tensor's");
    }
    const double limit = double(largest_index(plan.top_bits(), plan.base_bits()));
    // The top rung, a channel's part at a time.
    for (std::uint64_t at = first; at < first + out.size();) {
        const std::uint64_t channel = at / grid.channel_size;
        const std::uint64_t channel_end = (channel + 1) * grid.channel_size;
        const std::size_t count =
            std::size_t(std::min<std::uint64_t>(channel_end, first + out.size()) - at);
        round_at_step(tensor.values.data() + at, count, grid.steps[channel], limit,
                      out.data() + (at - first));
        at += count;
    }
    coarsen_chunk(plan, plan.top_bits(), bits, out);
}

void coarsen_chunk(const LadderPlan& plan, int from_bits, int to_bits,
                   std::span<std::int32_t> indices) {
    const auto to = std::find(plan.bits.begin(), plan.bits.end(), to_bits);
    const auto from = std::find(plan.bits.begin(), plan.bits.end(), from_bits);
    if (to == plan.bits.end() || from == plan.bits.end() || to > from)
        throw Error(ErrorCode::invalid_argument,
                    "coarsen_chunk: the rungs are not the plan's, finer to coarser");
    // Down the plan's rungs one by one, as quantize_ladder does.
    for (auto finer = from; finer != to; --finer) {
        const int k = *finer - *(finer - 1);
        for (std::int32_t& index : indices) index = divide_toward_zero_on_ties(index, k);
    }
}

std::vector<std::int32_t> refinement_residuals(const QuantizedTensor& coarse,
                                               const QuantizedTensor& fine) {
    const int k = fine.bits - coarse.bits;
    if (k <= 0 || coarse.indices.size() != fine.indices.size()) {
        throw Error(ErrorCode::invalid_argument, "refinement: rungs do not match");
    }
    std::vector<std::int32_t> residuals(fine.indices.size());
    for (std::size_t i = 0; i < residuals.size(); ++i) {
        residuals[i] = static_cast<std::int32_t>(std::int64_t{fine.indices[i]} -
                                                 (std::int64_t{coarse.indices[i]} << k));
    }
    return residuals;
}

ResidualRange residual_range(std::int32_t coarse_index, int k) {
    const std::int32_t half = std::int32_t{1} << (k - 1);
    // Ties went toward zero: a cell reaches half a coarse step outwards and
    // stops short of it inwards, except the zero cell, which has both ends.
    if (coarse_index > 0) return {-half + 1, half};
    if (coarse_index < 0) return {-half, half - 1};
    return {-half, half};
}

QuantizedTensor refine(const QuantizedTensor& coarse, std::span<const std::int32_t> residuals,
                       int fine_bits) {
    const int k = fine_bits - coarse.bits;
    if (k <= 0 || coarse.bits < min_ladder_bits || fine_bits > max_ladder_bits)
        throw Error(ErrorCode::invalid_argument, "refinement: bad rung bit depths");
    if (residuals.size() != coarse.indices.size()) {
        throw Error(ErrorCode::invalid_argument,
                    "refinement: " + std::to_string(residuals.size()) + " residuals for " +
                        std::to_string(coarse.indices.size()) + " weights");
    }
    QuantizedTensor result;
    result.bits = fine_bits;
    result.channel_size = coarse.channel_size;
    result.row_length = coarse.row_length;
    result.steps.reserve(coarse.steps.size());
    for (const float step : coarse.steps) result.steps.push_back(std::ldexp(step, -k));
    result.indices.resize(coarse.indices.size());
    const std::int64_t limit = (std::int64_t{1} << (fine_bits - 1)) - 1;
    // Branch-free 32-bit arithmetic the compiler vectorizes, checked once at
    // the end: coarse indices within their bit depth, and each residual's
    // offset from the inner end of its range, r + h - 1 (mirrored below
    // zero; r + h at zero), in [0, 2^k - 1] ([0, 2^k] at zero), keep the
    // refined index within its bit depth.
    const auto coarse_limit = static_cast<std::int32_t>((std::int64_t{1} << (coarse.bits - 1)) - 1);
    const std::uint32_t half = std::uint32_t{1} << (k - 1);
    std::uint32_t bad = 0;
    std::int32_t lowest = 0, highest = 0;
    for (std::size_t i = 0; i < residuals.size(); ++i) {
        const std::int32_t parent = coarse.indices[i];
        lowest = std::min(lowest, parent);
        highest = std::max(highest, parent);
        const std::uint32_t nonzero = parent != 0;
        const auto flip = static_cast<std::uint32_t>(parent >> 31);
        const std::uint32_t toward = (static_cast<std::uint32_t>(residuals[i]) ^ flip) - flip;
        bad |= toward + half - nonzero > 2 * half - nonzero;
        result.indices[i] = static_cast<std::int32_t>((static_cast<std::uint32_t>(parent) << k) +
                                                      static_cast<std::uint32_t>(residuals[i]));
    }
    bad |= lowest < -coarse_limit || highest > coarse_limit;
    if (bad) {
        for (std::size_t i = 0; i < residuals.size(); ++i) {
            if (std::abs(std::int64_t{coarse.indices[i]}) > coarse_limit) {
                throw Error(ErrorCode::corrupt_data,
                            "refinement: coarse index " + std::to_string(coarse.indices[i]) +
                                " at weight " + std::to_string(i) + " exceeds its bit depth");
            }
            const ResidualRange range = residual_range(coarse.indices[i], k);
            const std::int64_t fine = (std::int64_t{coarse.indices[i]} << k) + residuals[i];
            if (residuals[i] < range.low || residuals[i] > range.high || fine < -limit ||
                fine > limit) {
                throw Error(ErrorCode::corrupt_data,
                            "refinement: residual " + std::to_string(residuals[i]) + " at weight " +
                                std::to_string(i) + " is out of range");
            }
        }
    }
    return result;
}

std::vector<float> reconstruct(const QuantizedTensor& tensor) {
    std::vector<float> values(tensor.indices.size());
    for (std::size_t channel = 0; channel < tensor.steps.size(); ++channel) {
        const float step = tensor.steps[channel];
        const std::size_t first = channel * tensor.channel_size;
        const std::size_t last = std::min(first + tensor.channel_size, values.size());
        for (std::size_t i = first; i < last; ++i) {
            values[i] = step * static_cast<float>(tensor.indices[i]);
        }
    }
    return values;
}

}  // namespace bitinc
