#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>

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

}  // namespace
}  // namespace bitinc::core
