#include "core/half_float.hpp"

#include <bit>

namespace bitinc::core {

std::uint16_t float_to_half(float value) {
    const std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
    const std::uint16_t sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
    const std::uint32_t exponent = (bits >> 23) & 0xFFu;
    const std::uint32_t mantissa = bits & 0x7FFFFFu;
    if (exponent == 0xFF) {  // infinity stays infinity; NaN stays a quiet NaN
        return static_cast<std::uint16_t>(sign | 0x7C00u |
                                          (mantissa ? (0x200u | (mantissa >> 13)) : 0u));
    }
    const int half_exponent = int(exponent) - 127 + 15;
    if (half_exponent >= 0x1F) return static_cast<std::uint16_t>(sign | 0x7C00u);  // overflow
    if (half_exponent <= 0) {
        if (half_exponent < -10) return sign;  // underflows to zero
        // Subnormal half: shift the full significand, rounding to nearest even.
        const std::uint32_t significand = mantissa | 0x800000u;
        const int shift = 14 - half_exponent;
        std::uint32_t result = significand >> shift;
        const std::uint32_t remainder = significand & ((1u << shift) - 1);
        const std::uint32_t halfway = 1u << (shift - 1);
        if (remainder > halfway || (remainder == halfway && (result & 1u))) ++result;
        return static_cast<std::uint16_t>(sign | result);
    }
    std::uint32_t result = (std::uint32_t(half_exponent) << 10) | (mantissa >> 13);
    const std::uint32_t remainder = mantissa & 0x1FFFu;
    // A carry out of the mantissa correctly bumps the exponent (up to infinity).
    if (remainder > 0x1000u || (remainder == 0x1000u && (result & 1u))) ++result;
    return static_cast<std::uint16_t>(sign | result);
}

std::uint16_t float_to_bfloat16(float value) {
    const std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
    if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x7FFFFFu) != 0) {
        // NaN: keep the sign and the top payload bits, and make it quiet so
        // that truncation cannot turn it into infinity.
        return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);
    }
    const std::uint32_t upper = bits >> 16;
    const std::uint32_t remainder = bits & 0xFFFFu;
    // A carry out of the mantissa bumps the exponent, up to infinity.
    const bool round_up = remainder > 0x8000u || (remainder == 0x8000u && (upper & 1u));
    return static_cast<std::uint16_t>(upper + (round_up ? 1u : 0u));
}

}  // namespace bitinc::core
