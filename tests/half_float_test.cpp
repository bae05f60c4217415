#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "core/half_float.hpp"

namespace bitinc::core {
namespace {

TEST(HalfFloat, EveryHalfValueSurvivesARoundTrip) {
    for (std::uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
        const auto half = static_cast<std::uint16_t>(bits);
        const float value = half_to_float(half);
        const bool is_nan = (half & 0x7C00) == 0x7C00 && (half & 0x3FF) != 0;
        if (is_nan) {
            EXPECT_TRUE(std::isnan(value)) << bits;
            EXPECT_EQ(float_to_half(value) & 0x7C00, 0x7C00) << bits;
        } else {
            EXPECT_EQ(float_to_half(value), half) << "half bits " << bits;
        }
    }
}

TEST(HalfFloat, KnownValues) {
    EXPECT_EQ(half_to_float(0x3C00), 1.0f);
    EXPECT_EQ(half_to_float(0xC000), -2.0f);
    EXPECT_EQ(half_to_float(0x7BFF), 65504.0f);
    EXPECT_EQ(half_to_float(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
    EXPECT_TRUE(std::isinf(half_to_float(0x7C00)));
}

TEST(HalfFloat, RoundsToNearestEven) {
    // 1 + 2^-11 lies halfway between 1 and the next half (1 + 2^-10): ties go to even.
    EXPECT_EQ(float_to_half(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
    // 1 + 3 * 2^-11 lies halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even).
    EXPECT_EQ(float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
    EXPECT_EQ(float_to_half(65520.0f), 0x7C00);  // rounds up to infinity
    EXPECT_EQ(float_to_half(65519.0f), 0x7BFF);
    EXPECT_EQ(float_to_half(std::ldexp(1.0f, -25)),
              0x0000);  // halfway to the first subnormal: even
    EXPECT_EQ(float_to_half(std::ldexp(1.5f, -25)), 0x0001);
    EXPECT_EQ(float_to_half(-0.0f), 0x8000);
}

TEST(BFloat16, EveryValueSurvivesARoundTrip) {
    for (std::uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
        const auto bfloat = static_cast<std::uint16_t>(bits);
        const float value = bfloat16_to_float(bfloat);
        EXPECT_EQ(std::bit_cast<std::uint32_t>(value), bits << 16) << bits;
        if (std::isnan(value)) {
            EXPECT_TRUE(std::isnan(bfloat16_to_float(float_to_bfloat16(value)))) << bits;
        } else {
            EXPECT_EQ(float_to_bfloat16(value), bfloat) << "bfloat16 bits " << bits;
        }
    }
}

TEST(BFloat16, RoundsToNearestEven) {
    // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 (bfloat16 keeps 7 bits).
    EXPECT_EQ(float_to_bfloat16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);
    EXPECT_EQ(float_to_bfloat16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);
    EXPECT_EQ(float_to_bfloat16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3F81);
    EXPECT_EQ(float_to_bfloat16(-0.0f), 0x8000);
    // The largest float rounds up to infinity; the largest bfloat16 stays.
    EXPECT_EQ(float_to_bfloat16(std::numeric_limits<float>::max()), 0x7F80);
    EXPECT_EQ(float_to_bfloat16(bfloat16_to_float(0x7F7F)), 0x7F7F);
    // A NaN whose payload lies only in the low bits stays a NaN.
    const float low_payload_nan = std::bit_cast<float>(std::uint32_t{0x7F800001u});
    EXPECT_TRUE(std::isnan(bfloat16_to_float(float_to_bfloat16(low_payload_nan))));
    EXPECT_EQ(float_to_bfloat16(std::numeric_limits<float>::infinity()), 0x7F80);
}

}  // namespace
}  // namespace bitinc::core
