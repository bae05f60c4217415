// The quantization ladder: a tensor's float weights as integer indices on a
// family of nested uniform grids, one grid per rung (e.g. 4, 8 and 16 bit).
//
// The grids nest by powers of two: the step of a b-bit rung is
//
//     step_b = step_top * 2^(top - b)
//
// The top rung is the weights rounded at its step; each coarser rung is the
// next finer one divided by 2^k (k = fine bits - coarse bits) with ties
// rounded toward zero. A coarse index is thus a function of the fine one, so
// base plus refinements costs what the top rung alone costs, and
//
//     q_fine = 2^k * q_coarse + r,
//     r in [-2^(k-1) + 1, 2^(k-1)] if q_coarse > 0 (2^k values), mirrored
//     if q_coarse < 0, and [-2^(k-1), 2^(k-1)] if q_coarse = 0.
//
// Sending the base rung and then the residuals therefore reproduces a direct
// top-rung transmission bit for bit (docs/format.md §1 gives the exact rules
// and bounds the base's distance from plain rounding).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "bitinc/model.hpp"

namespace bitinc {

inline constexpr int min_ladder_bits = 2;
inline constexpr int max_ladder_bits = 32;

struct LadderPlan {
    // Strictly ascending bit depths, each from 2 to 32, e.g. {4, 8, 16}.
    std::vector<int> bits;
    // One step per slice along dimension 0 (the output channel of Conv and
    // Gemm weights) instead of one per tensor.
    bool per_channel = false;
    // Tensors with fewer elements, or of rank below 2 (biases, norm
    // parameters), are not quantized: they travel exactly, as float32.
    std::size_t min_quantized_elements = 256;
    // The ladder ends in an exact rung ("4,8,exact"): after the top of
    // `bits`, the source weights bit for bit (docs/format.md §6.1). `bits`
    // holds the quantized rungs only, the top one below 32.
    bool exact_top = false;

    // "4,8,16" -> {4, 8, 16}; "4,8,exact" -> {4, 8} with exact_top. Throws
    // Error on anything else.
    static LadderPlan parse(std::string_view text);

    // Mixed precision: the bit depth at each rung of a tensor whose base
    // has `base` bits, max(base, the rung's bits) (base first), and the
    // ladder such a tensor follows (those bit depths, each once).
    std::vector<int> rung_bits_with_base(int base) const;
    LadderPlan with_base(int base) const;
    // The ladder a tensor follows whose bits after each rung are `rung_bits`
    // (base first, never falling): those bit depths, each once.
    LadderPlan with_rung_bits(std::vector<int> rung_bits) const;

    int base_bits() const { return bits.front(); }
    int top_bits() const { return bits.back(); }
    bool quantizes(const Tensor& tensor) const;
};

// A tensor on one rung's grid: value = steps[channel] * indices[i].
struct QuantizedTensor {
    int bits = 0;
    std::vector<float> steps;           // one per channel (one when per tensor)
    std::vector<std::int32_t> indices;  // |index| <= largest_index(bits, base bits)
    std::size_t channel_size = 0;       // indices per channel
    // Elements per row along the first axis (0 below rank 2): a hint that
    // lets a levels unit give rows of different spread their own tables.
    std::size_t row_length = 0;
};

// The elements of one slice along a tensor's first axis (an output channel
// of a convolution), or 0 for a tensor of rank below 2.
std::size_t row_length(const Tensor& tensor);

// The largest |index| a `bits` rung can hold in a ladder whose base has
// `base_bits`: (2^(base-1) - 1) * 2^(bits - base). The maximum |weight| maps
// exactly onto it at every rung.
std::int64_t largest_index(int bits, int base_bits);

// The level of `value` on a grid of `step`: round(value / step) in double
// precision, clamped to [-largest, largest] (0 for a zero step or a value
// that is not finite). A version delta predicts each level from the value a
// device holds this way (docs/format.md §9).
std::int64_t predicted_level(float value, float step, std::int64_t largest);

// Quantizes to the plan's top rung. Throws Error naming the tensor if a
// value is NaN or infinite.
QuantizedTensor quantize_top(const Tensor& tensor, const LadderPlan& plan);

// Every rung of the plan, base first: the top rung, and each coarser rung
// derived from the next finer one by divide_toward_zero_on_ties().
std::vector<QuantizedTensor> quantize_ladder(const Tensor& tensor, const LadderPlan& plan);

// A tensor's grid without its indices: the top rung's steps (one per
// channel) and the channel size, from one pass over the values. With it a
// tensor is quantized a chunk at a time (quantize_chunk), so that pack holds
// no whole rung of a large tensor. Throws Error naming the tensor if a value
// is NaN or infinite.
struct TopGrid {
    std::vector<float> steps;
    std::size_t channel_size = 0;
};
TopGrid top_grid(const Tensor& tensor, const LadderPlan& plan);

// The steps of the plan's rung of `bits`: the top steps times 2^(top - bits).
std::vector<float> rung_steps(const TopGrid& grid, const LadderPlan& plan, int bits);

// The indices [first, first + out.size()) of the plan's rung of `bits`, the
// same as quantize_ladder's: rounded at the top step, then divided down the
// plan's rungs one by one.
void quantize_chunk(const Tensor& tensor, const TopGrid& grid, const LadderPlan& plan, int bits,
                    std::uint64_t first, std::span<std::int32_t> out);
// Takes indices of the plan's rung of `from_bits` to its coarser rung of
// `to_bits` in place, dividing down the rungs between as quantize_ladder does.
void coarsen_chunk(const LadderPlan& plan, int from_bits, int to_bits,
                   std::span<std::int32_t> indices);

// r = q_fine - 2^k q_coarse for every index.
std::vector<std::int32_t> refinement_residuals(const QuantizedTensor& coarse,
                                               const QuantizedTensor& fine);

// fine_index / 2^k rounded to the nearest integer, ties toward zero: the
// coarse index of a fine one (1 <= k <= 31).
std::int32_t divide_toward_zero_on_ties(std::int32_t fine_index, int k);

// The inclusive range of a residual given its coarse index, for a refinement
// of k bits: [-2^(k-1) + 1, 2^(k-1)] above zero, [-2^(k-1), 2^(k-1) - 1]
// below, [-2^(k-1), 2^(k-1)] at zero.
struct ResidualRange {
    std::int32_t low;
    std::int32_t high;
};
ResidualRange residual_range(std::int32_t coarse_index, int k);

// Applies residuals to a coarse rung, giving the finer rung of `fine_bits`.
// Throws Error if the sizes differ or a residual is out of its range.
QuantizedTensor refine(const QuantizedTensor& coarse, std::span<const std::int32_t> residuals,
                       int fine_bits);

// float32 weights: steps[channel] * index, rounded once, the same on every
// IEEE-754 machine.
std::vector<float> reconstruct(const QuantizedTensor& tensor);

}  // namespace bitinc
