// IEEE 754 binary16 and bfloat16 <-> binary32 conversion, exact for every
// 16-bit value and round-to-nearest-even from float, so results never
// depend on the CPU.
#pragma once

#include <bit>
#include <cstdint>

namespace bitinc::core {

// Widening is inline: the exact rung's decoder converts every candidate of a
// cell (docs/format.md §6.1).
inline float half_to_float(std::uint16_t half) {
    const std::uint32_t sign = std::uint32_t(half & 0x8000u) << 16;
    const std::uint32_t exponent = (half >> 10) & 0x1Fu;
    std::uint32_t mantissa = half & 0x3FFu;
    std::uint32_t bits;
    if (exponent == 0x1F) {  // infinity or NaN: keep the payload
        bits = sign | 0x7F800000u | (mantissa << 13);
    } else if (exponent != 0) {  // normal
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {  // signed zero
        bits = sign;
    } else {  // subnormal half: normalise into a float
        std::uint32_t shift = 0;
        while ((mantissa & 0x400u) == 0) {
            mantissa <<= 1;
            ++shift;
        }
        mantissa &= 0x3FFu;
        bits = sign | ((113 - shift) << 23) | (mantissa << 13);
    }
    return std::bit_cast<float>(bits);
}

inline float bfloat16_to_float(std::uint16_t bfloat) {
    return std::bit_cast<float>(std::uint32_t{bfloat} << 16);
}

std::uint16_t float_to_half(float value);

// bfloat16 is the top half of a binary32: widening is a shift; narrowing
// rounds to nearest even (overflow to infinity, NaN stays a quiet NaN).
std::uint16_t float_to_bfloat16(float value);

}  // namespace bitinc::core
