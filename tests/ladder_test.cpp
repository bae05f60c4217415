#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <random>

#include "bitinc/error.hpp"
#include "bitinc/ladder.hpp"
#include "test_support.hpp"

namespace bitinc {
namespace {

Tensor make_tensor(std::vector<std::int64_t> shape, std::vector<float> values) {
    Tensor tensor;
    tensor.name = "t";
    tensor.shape = std::move(shape);
    tensor.values = std::move(values);
    return tensor;
}

// Weights shaped like a trained conv layer: mostly small, a few large.
Tensor random_tensor(std::size_t out_channels, std::size_t per_channel, unsigned seed) {
    std::mt19937 generator(seed);
    std::student_t_distribution<float> heavy_tailed(3.0f);
    std::vector<float> values(out_channels * per_channel);
    for (std::size_t c = 0; c < out_channels; ++c) {
        const float scale = 0.01f * float(1 + c % 7);  // channels differ in range
        for (std::size_t i = 0; i < per_channel; ++i) {
            values[c * per_channel + i] = scale * heavy_tailed(generator);
        }
    }
    return make_tensor({std::int64_t(out_channels), std::int64_t(per_channel)}, std::move(values));
}

// Applies every refinement in turn, as a device does, and checks that each
// rung it reaches equals the directly quantized rung, index for index and
// float for float.
void expect_ladder_is_exact(const Tensor& tensor, const LadderPlan& plan) {
    const std::vector<QuantizedTensor> direct = quantize_ladder(tensor, plan);
    QuantizedTensor current = direct.front();
    for (std::size_t rung = 1; rung < direct.size(); ++rung) {
        const auto residuals = refinement_residuals(direct[rung - 1], direct[rung]);
        current = refine(current, residuals, plan.bits[rung]);
        ASSERT_EQ(current.indices, direct[rung].indices) << "rung " << plan.bits[rung];
        ASSERT_EQ(current.steps, direct[rung].steps) << "rung " << plan.bits[rung];
        const auto a = reconstruct(current);
        const auto b = reconstruct(direct[rung]);
        // Bit patterns, so that -0.0 and NaN payloads count too.
        ASSERT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end(), [](float x, float y) {
            return std::bit_cast<std::uint32_t>(x) == std::bit_cast<std::uint32_t>(y);
        }));
    }
}

const char* const every_ladder[] = {"8,16",  "4,16", "4,8,16",       "16",
                                    "2,3,4", "2,32", "8,12,16,24,32"};

TEST(Ladder, BasePlusRefinementsEqualsDirectForRandomTensors) {
    for (const bool per_channel : {false, true}) {
        for (const char* text : every_ladder) {
            LadderPlan plan = LadderPlan::parse(text);
            plan.per_channel = per_channel;
            for (unsigned seed = 0; seed < 3; ++seed) {
                SCOPED_TRACE(std::string(text) + (per_channel ? " per-channel" : "") + " seed " +
                             std::to_string(seed));
                expect_ladder_is_exact(random_tensor(16, 300, seed), plan);
            }
        }
    }
}

TEST(Ladder, BasePlusRefinementsEqualsDirectForTrainedWeights) {
    const Model model = read_onnx_file(testing::source_dir() / "models" / "small-cnn.onnx");
    for (const bool per_channel : {false, true}) {
        for (const char* text : every_ladder) {
            LadderPlan plan = LadderPlan::parse(text);
            plan.per_channel = per_channel;
            std::size_t quantized = 0;
            for (const Tensor& tensor : model.weights) {
                if (!plan.quantizes(tensor)) continue;
                SCOPED_TRACE(tensor.name + " " + text + (per_channel ? " per-channel" : ""));
                expect_ladder_is_exact(tensor, plan);
                ++quantized;
            }
            EXPECT_GE(quantized, 5u);
        }
    }
}

// A chunk quantized on its own (pack's way) equals that chunk of the whole
// ladder, at every rung, for chunks across channel boundaries.
TEST(Ladder, ChunksQuantizeLikeTheWholeLadder) {
    const Tensor tensor = random_tensor(7, 131, 3);
    for (const char* text : {"4,8,16", "2,3,12,32", "8"}) {
        for (const bool per_channel : {false, true}) {
            SCOPED_TRACE(std::string(text) + (per_channel ? " per channel" : ""));
            LadderPlan plan = LadderPlan::parse(text);
            plan.per_channel = per_channel;
            const auto rungs = quantize_ladder(tensor, plan);
            const TopGrid grid = top_grid(tensor, plan);
            for (std::size_t r = 0; r < rungs.size(); ++r) {
                EXPECT_EQ(rung_steps(grid, plan, plan.bits[r]), rungs[r].steps);
                for (const auto& [first, count] : {std::pair<std::size_t, std::size_t>{0, 917},
                                                   {100, 200},
                                                   {130, 1},
                                                   {500, 417}}) {
                    std::vector<std::int32_t> chunk(count);
                    quantize_chunk(tensor, grid, plan, plan.bits[r], first, chunk);
                    EXPECT_TRUE(std::equal(chunk.begin(), chunk.end(),
                                           rungs[r].indices.begin() + std::ptrdiff_t(first)))
                        << plan.bits[r] << " bits, chunk at " << first;
                }
            }
            std::vector<std::int32_t> too_far(2);
            EXPECT_THROW(quantize_chunk(tensor, grid, plan, plan.top_bits(), 916, too_far), Error);
        }
    }
}

TEST(Ladder, EveryRungStaysInItsBitDepth) {
    LadderPlan plan = LadderPlan::parse("2,4,8,16,32");
    const auto rungs = quantize_ladder(random_tensor(8, 1000, 7), plan);
    for (const QuantizedTensor& rung : rungs) {
        const std::int64_t limit = (std::int64_t{1} << (rung.bits - 1)) - 1;
        std::int64_t largest = 0;
        for (const std::int32_t index : rung.indices)
            largest = std::max<std::int64_t>(largest, std::abs(std::int64_t{index}));
        EXPECT_LE(largest, limit) << rung.bits << " bit";
        // Steps are rounded up to 8 significant bits: the largest weight lands
        // within 1/128 of the grid's end.
        EXPECT_GE(double(largest), double(largest_index(rung.bits, 2)) * (1 - 1.0 / 128) - 1)
            << rung.bits;
        for (const float step : rung.steps)
            EXPECT_EQ(std::bit_cast<std::uint32_t>(step) & 0xFFFFu, 0u);
    }
}

TEST(Ladder, ResidualsStayInTheirRanges) {
    const LadderPlan plan = LadderPlan::parse("4,8,16");
    const auto rungs = quantize_ladder(random_tensor(4, 5000, 3), plan);
    for (std::size_t rung = 1; rung < rungs.size(); ++rung) {
        const int k = rungs[rung].bits - rungs[rung - 1].bits;
        const auto residuals = refinement_residuals(rungs[rung - 1], rungs[rung]);
        for (std::size_t i = 0; i < residuals.size(); ++i) {
            const std::int32_t parent = rungs[rung - 1].indices[i];
            const ResidualRange range = residual_range(parent, k);
            ASSERT_GE(residuals[i], range.low);
            ASSERT_LE(residuals[i], range.high);
            // 2^k values under a non-zero coarse index, 2^k + 1 at zero.
            ASSERT_EQ(range.high - range.low + 1, (1 << k) + (parent == 0 ? 1 : 0));
        }
    }
}

// The top rung is the weights rounded at its step (half away from zero);
// each coarser rung is the next finer one divided by 2^k, ties toward zero.
TEST(Ladder, TopRungRoundsAndCoarserRungsDivideIt) {
    for (const bool per_channel : {false, true}) {
        for (const char* text : every_ladder) {
            LadderPlan plan = LadderPlan::parse(text);
            plan.per_channel = per_channel;
            const Tensor tensor = random_tensor(8, 500, 11);
            const auto rungs = quantize_ladder(tensor, plan);
            const QuantizedTensor& top = rungs.back();
            const double limit = double(largest_index(top.bits, plan.base_bits()));
            for (std::size_t i = 0; i < top.indices.size(); ++i) {
                const double step = top.steps[i / top.channel_size];
                const double expected =
                    std::clamp(std::round(double(tensor.values[i]) / step), -limit, limit);
                ASSERT_EQ(top.indices[i], std::int32_t(expected)) << text << " " << i;
            }
            for (std::size_t r = 0; r + 1 < rungs.size(); ++r) {
                const int k = rungs[r + 1].bits - rungs[r].bits;
                for (std::size_t i = 0; i < top.indices.size(); ++i) {
                    const double scaled = std::ldexp(double(rungs[r + 1].indices[i]), -k);
                    // ceil(x - 1/2) rounds halves down: toward zero for x >= 0.
                    const double magnitude = std::ceil(std::fabs(scaled) - 0.5);
                    ASSERT_EQ(rungs[r].indices[i],
                              std::int32_t(scaled < 0 ? -magnitude : magnitude))
                        << text << " rung " << rungs[r].bits << " " << i;
                }
                ASSERT_EQ(rungs[r].steps.size(), top.steps.size());
                for (std::size_t c = 0; c < top.steps.size(); ++c) {
                    ASSERT_EQ(rungs[r].steps[c],
                              std::ldexp(top.steps[c], plan.top_bits() - rungs[r].bits));
                }
            }
        }
    }
}

// Zeroth-order entropy in bits of a list of indices.
double entropy_bits(std::span<const std::int32_t> indices) {
    std::map<std::int32_t, double> counts;
    for (const std::int32_t index : indices) counts[index] += 1;
    double bits = 0;
    for (const auto& [index, count] : counts)
        bits -= count * std::log2(count / double(indices.size()));
    return bits;
}

// The base of a trained model's ladder is no larger than plain rounding of
// the weights at its step (its zero cell is a finer step wider), and no
// index is more than one from plain rounding's.
TEST(Ladder, BaseIsNoLargerThanPlainRounding) {
    const Model model = read_onnx_file(testing::source_dir() / "models" / "small-cnn.onnx");
    for (const char* text : {"4,8,16", "8,16", "2,3,4"}) {
        const LadderPlan plan = LadderPlan::parse(text);
        double ladder_bits = 0, plain_bits = 0;
        for (const Tensor& tensor : model.weights) {
            if (!plan.quantizes(tensor)) continue;
            const QuantizedTensor base = quantize_ladder(tensor, plan).front();
            const double limit = double(largest_index(base.bits, plan.base_bits()));
            std::vector<std::int32_t> plain(base.indices.size());
            for (std::size_t i = 0; i < plain.size(); ++i) {
                const double step = base.steps[i / base.channel_size];
                plain[i] = std::int32_t(
                    std::clamp(std::round(double(tensor.values[i]) / step), -limit, limit));
                ASSERT_LE(std::abs(plain[i] - base.indices[i]), 1) << text << " " << i;
            }
            ladder_bits += entropy_bits(base.indices);
            plain_bits += entropy_bits(plain);
        }
        EXPECT_LE(ladder_bits, plain_bits) << text;
    }
}

// Weights exactly halfway between grid points of every rung, and at the
// largest |w|: the top rung rounds them away from zero, each coarser rung
// rounds a finer index that lies halfway toward zero, and the residual that
// takes a rung to the next is in its range and exact.
TEST(Ladder, TiesAtHalfAreExactAcrossRungs) {
    for (const char* text : {"4,8,16", "2,3,4", "8,16", "2,32", "4,16"}) {
        const LadderPlan plan = LadderPlan::parse(text);
        // The step comes from the largest weight; place ties on every rung's grid.
        const Tensor probe = make_tensor({1, 1}, {1.0f});
        const float top_step = quantize_top(probe, plan).steps[0];
        std::vector<float> values = {1.0f, -1.0f};
        for (const int bits : plan.bits) {
            const float step = std::ldexp(top_step, plan.top_bits() - bits);
            for (int j = 0; j < 6; ++j) {
                const float tie = (float(j) + 0.5f) * step;  // exact in binary32
                if (tie < 1.0f) {
                    values.push_back(tie);
                    values.push_back(-tie);
                }
            }
        }
        values.push_back(0.0f);
        const Tensor tensor = make_tensor({1, std::int64_t(values.size())}, values);
        SCOPED_TRACE(text);
        const auto rungs = quantize_ladder(tensor, plan);
        const QuantizedTensor& top = rungs.back();
        for (std::size_t i = 0; i < values.size(); ++i) {
            const double scaled = double(values[i]) / double(top.steps[0]);
            if (std::fabs(scaled) == std::trunc(std::fabs(scaled)) + 0.5) {
                const double away = std::trunc(std::fabs(scaled)) + 1;
                EXPECT_EQ(top.indices[i], std::int32_t(scaled < 0 ? -away : away)) << "tie " << i;
            }
        }
        int ties = 0;
        for (std::size_t r = 0; r + 1 < rungs.size(); ++r) {
            const int k = rungs[r + 1].bits - rungs[r].bits;
            const auto residuals = refinement_residuals(rungs[r], rungs[r + 1]);
            for (std::size_t i = 0; i < values.size(); ++i) {
                const std::int32_t fine = rungs[r + 1].indices[i];
                const std::int32_t half = std::int32_t{1} << (k - 1);
                if (std::abs(fine) % (2 * half) == half) {  // halfway: toward zero
                    const std::int32_t toward = (std::abs(fine) - half) >> k;
                    EXPECT_EQ(rungs[r].indices[i], fine < 0 ? -toward : toward) << "tie " << i;
                    ++ties;
                }
                const ResidualRange range = residual_range(rungs[r].indices[i], k);
                EXPECT_GE(residuals[i], range.low);
                EXPECT_LE(residuals[i], range.high);
            }
        }
        EXPECT_GT(ties, 0);
        expect_ladder_is_exact(tensor, plan);
    }
}

TEST(Ladder, QuantizationErrorIsBounded) {
    // The top rung is within half a top step of each weight. Each coarser
    // rung divides the next finer one's index with rounding, adding at most
    // half its own step: the base of 4,8,16 is within (step4 + step8 +
    // step16) / 2 (docs/format.md §1).
    const Tensor tensor = random_tensor(8, 1000, 11);
    for (const bool per_channel : {false, true}) {
        LadderPlan plan = LadderPlan::parse("4,8,16");
        plan.per_channel = per_channel;
        for (const QuantizedTensor& rung : quantize_ladder(tensor, plan)) {
            const auto values = reconstruct(rung);
            for (std::size_t i = 0; i < values.size(); ++i) {
                const float step = rung.steps[i / rung.channel_size];
                float bound = 0.0f;
                for (const int bits : plan.bits) {
                    if (bits >= rung.bits) bound += 0.5f * std::ldexp(step, rung.bits - bits);
                }
                ASSERT_LE(std::fabs(values[i] - tensor.values[i]),
                          bound * 1.0001f + 1e-6f * std::fabs(tensor.values[i]))
                    << rung.bits << " bit, element " << i;
            }
        }
    }
}

TEST(Ladder, PerChannelStepsFollowEachChannelsRange) {
    LadderPlan plan = LadderPlan::parse("8,16");
    plan.per_channel = true;
    const Tensor tensor = make_tensor({2, 2}, {1.0f, -0.5f, 100.0f, 3.0f});
    const QuantizedTensor top = quantize_top(tensor, plan);
    ASSERT_EQ(top.steps.size(), 2u);
    EXPECT_GE(top.indices[0], largest_index(16, 8) * 127 / 128);
    EXPECT_GE(top.indices[2], largest_index(16, 8) * 127 / 128);
    EXPECT_NEAR(top.steps[1] / top.steps[0], 100.0f, 1.0f);
}

TEST(Ladder, EdgeCases) {
    const LadderPlan plan = LadderPlan::parse("4,8,16");
    // All zeros: zero steps, zero indices, zeros back.
    const Tensor zeros = make_tensor({4, 4}, std::vector<float>(16, 0.0f));
    const auto zero_rungs = quantize_ladder(zeros, plan);
    EXPECT_EQ(reconstruct(zero_rungs.back()), zeros.values);
    expect_ladder_is_exact(zeros, plan);
    // One element, a constant tensor, negative constant: exact at every rung.
    for (const float value : {0.75f, -3.0f}) {
        const Tensor constant = make_tensor({3, 3}, std::vector<float>(9, value));
        for (const QuantizedTensor& rung : quantize_ladder(constant, plan)) {
            for (const float reconstructed : reconstruct(rung))
                EXPECT_LE(std::fabs(reconstructed - value), 0.5f * rung.steps[0] * 1.0001f)
                    << rung.bits;
        }
        expect_ladder_is_exact(make_tensor({1, 1}, {value}), plan);
    }
    // Huge magnitudes: no overflow at any rung.
    const float huge = std::numeric_limits<float>::max();
    const Tensor extremes = make_tensor({2, 2}, {huge, -huge, huge / 3, 1.0f});
    for (const QuantizedTensor& rung : quantize_ladder(extremes, plan)) {
        const auto values = reconstruct(rung);
        for (const float value : values) EXPECT_TRUE(std::isfinite(value)) << rung.bits;
        EXPECT_NEAR(values[0] / huge, 1.0f, 0.01f) << rung.bits;
    }
    expect_ladder_is_exact(extremes, plan);
    // Denormals: a tensor of only denormals quantizes without dividing by zero.
    const float tiny = std::numeric_limits<float>::denorm_min();
    const Tensor denormals = make_tensor({2, 2}, {tiny, -tiny, 0.0f, 4 * tiny});
    for (const QuantizedTensor& rung : quantize_ladder(denormals, plan)) {
        for (const float value : reconstruct(rung)) EXPECT_TRUE(std::isfinite(value));
    }
    expect_ladder_is_exact(denormals, plan);
    // Empty tensor.
    expect_ladder_is_exact(make_tensor({0, 4}, {}), plan);
}

TEST(Ladder, NanAndInfinityAreErrors) {
    const LadderPlan plan = LadderPlan::parse("8,16");
    for (const float bad :
         {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
        Tensor tensor = random_tensor(2, 10, 1);
        tensor.values[7] = bad;
        tensor.name = "conv.weight";
        try {
            quantize_top(tensor, plan);
            FAIL() << "no error";
        } catch (const Error& error) {
            EXPECT_NE(std::string(error.what()).find("conv.weight"), std::string::npos);
            EXPECT_NE(std::string(error.what()).find("element 7"), std::string::npos);
        }
    }
}

TEST(Ladder, RefineRejectsResidualsOutOfRange) {
    const LadderPlan plan = LadderPlan::parse("4,8");
    const auto rungs = quantize_ladder(random_tensor(2, 50, 5), plan);
    auto residuals = refinement_residuals(rungs[0], rungs[1]);
    residuals[3] = 100;  // |r| <= 8 for k = 4
    EXPECT_THROW(refine(rungs[0], residuals, 8), Error);
    // Each end of a non-zero cell's range, and one past it.
    residuals = refinement_residuals(rungs[0], rungs[1]);
    QuantizedTensor coarse = rungs[0];
    coarse.indices[3] = 2;
    for (const auto& [residual, valid] :
         {std::pair{-7, true}, std::pair{8, true}, std::pair{-8, false}, std::pair{9, false}}) {
        residuals[3] = residual;
        if (valid) {
            EXPECT_EQ(refine(coarse, residuals, 8).indices[3], 32 + residual);
        } else {
            EXPECT_THROW(refine(coarse, residuals, 8), Error) << residual;
        }
    }
    coarse.indices[3] = -2;  // mirrored
    residuals[3] = 8;
    EXPECT_THROW(refine(coarse, residuals, 8), Error);
    residuals[3] = -8;
    EXPECT_EQ(refine(coarse, residuals, 8).indices[3], -40);
    // A coarse index beyond the 4-bit rung's depth.
    coarse.indices[3] = 8;
    residuals[3] = 0;
    EXPECT_THROW(refine(coarse, residuals, 8), Error);
    residuals.pop_back();
    EXPECT_THROW(refine(rungs[0], residuals, 8), Error);
}

TEST(Ladder, ParsesPlans) {
    EXPECT_EQ(LadderPlan::parse("4,8,16").bits, (std::vector<int>{4, 8, 16}));
    EXPECT_EQ(LadderPlan::parse("16").bits, std::vector<int>{16});
    for (const char* bad : {"", "8,8", "16,8", "1,8", "8,33", "8,", "8;16", "a", ",8"}) {
        EXPECT_THROW(LadderPlan::parse(bad), Error) << bad;
    }
}

TEST(Ladder, WhichTensorsAreQuantized) {
    const LadderPlan plan = LadderPlan::parse("8,16");
    EXPECT_TRUE(plan.quantizes(random_tensor(16, 16, 0)));
    EXPECT_FALSE(plan.quantizes(make_tensor({1000}, std::vector<float>(1000))));  // a bias
    EXPECT_FALSE(plan.quantizes(random_tensor(2, 8, 0)));                         // tiny
}

}  // namespace
}  // namespace bitinc
