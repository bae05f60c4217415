// IEEE 754 binary16 and bfloat16 <-> binary32 conversion, exact for every
// 16-bit value and round-to-nearest-even from float, so results never
// depend on the CPU.
#pragma once

#include <cstdint>

namespace bitinc::core {

float half_to_float(std::uint16_t half);
std::uint16_t float_to_half(float value);

// bfloat16 is the top half of a binary32: widening is a shift; narrowing
// rounds to nearest even (overflow to infinity, NaN stays a quiet NaN).
float bfloat16_to_float(std::uint16_t bfloat);
std::uint16_t float_to_bfloat16(float value);

}  // namespace bitinc::core
