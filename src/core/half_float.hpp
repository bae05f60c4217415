// IEEE 754 binary16 <-> binary32 conversion, exact for every half value and
// round-to-nearest-even from float, so results never depend on the CPU.
#pragma once

#include <cstdint>

namespace bitinc::core {

float half_to_float(std::uint16_t half);
std::uint16_t float_to_half(float value);

}  // namespace bitinc::core
