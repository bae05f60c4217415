// Signal-to-noise ratios, one formula for outputs and weights alike.
#pragma once

#include <cmath>
#include <limits>

namespace bitinc::eval {

// 10 log10(signal / noise) in dB; infinite when nothing differs.
inline double signal_to_noise_db(double signal_energy, double noise_energy) {
    if (noise_energy == 0.0) return std::numeric_limits<double>::infinity();
    return 10.0 * std::log10(signal_energy / noise_energy);
}

}  // namespace bitinc::eval
