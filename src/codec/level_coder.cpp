#include "codec/level_coder.hpp"

#include <algorithm>
#include <cstdlib>

namespace bitinc::codec {

void LevelModel::encode(std::int32_t value, RangeEncoder& coder, BitWriter& raw) {
    const auto magnitude = static_cast<std::uint32_t>(value < 0 ? -std::int64_t{value} : value);
    const int actual = magnitude_class(magnitude);
    const int predicted = std::min(predicted_class(), max_class_);
    bool going_up = true;
    if (predicted > 0) {
        going_up = actual >= predicted;
        coder.encode(!going_up, at_least_predicted_[std::size_t(predicted)]);
    }
    if (going_up) {
        for (int j = predicted; j < max_class_; ++j) {
            const bool more = actual > j;
            coder.encode(
                more,
                step_up_[std::size_t(predicted)][std::size_t(std::min(j - predicted, steps - 1))]);
            if (!more) break;
        }
    } else {
        for (int j = predicted - 1; j > 0; --j) {
            const bool less = actual < j;
            coder.encode(less, step_down_[std::size_t(predicted)]
                                         [std::size_t(std::min(predicted - 1 - j, steps - 1))]);
            if (!less) break;
        }
    }
    int sign_state = 0;
    if (actual > 0) {
        const bool negative = value < 0;
        coder.encode(negative, sign_[std::size_t(previous_sign_)]);
        sign_state = negative ? 2 : 1;
        const int below = actual - 1;  // bits under the leading one
        if (below >= 1) {
            const bool first = (magnitude >> (below - 1)) & 1u;
            coder.encode(first, mantissa_[std::size_t(actual)][0]);
            if (below >= 2) {
                const bool second = (magnitude >> (below - 2)) & 1u;
                coder.encode(second, mantissa_[std::size_t(actual)][1 + std::size_t(first)]);
                if (below >= 3) raw.write(magnitude, below - 2);
            }
        }
    }
    remember(actual, sign_state);
}

std::int32_t LevelModel::decode(RangeDecoder& coder, BitReader& raw) {
    const int predicted = std::min(predicted_class(), max_class_);
    bool going_up = true;
    if (predicted > 0) going_up = !coder.decode(at_least_predicted_[std::size_t(predicted)]);
    int actual;
    if (going_up) {
        actual = predicted;
        while (actual < max_class_ && coder.decode(step_up_[std::size_t(predicted)][std::size_t(
                                          std::min(actual - predicted, steps - 1))])) {
            ++actual;
        }
    } else {
        actual = 0;
        for (int j = predicted - 1; j > 0; --j) {
            if (!coder.decode(step_down_[std::size_t(predicted)]
                                        [std::size_t(std::min(predicted - 1 - j, steps - 1))])) {
                actual = j;
                break;
            }
        }
    }
    std::int32_t value = 0;
    int sign_state = 0;
    if (actual > 0) {
        const bool negative = coder.decode(sign_[std::size_t(previous_sign_)]);
        sign_state = negative ? 2 : 1;
        std::uint32_t magnitude = 1;
        const int below = actual - 1;
        if (below >= 1) {
            const bool first = coder.decode(mantissa_[std::size_t(actual)][0]);
            magnitude = (magnitude << 1) | std::uint32_t(first);
            if (below >= 2) {
                const bool second =
                    coder.decode(mantissa_[std::size_t(actual)][1 + std::size_t(first)]);
                magnitude = (magnitude << 1) | std::uint32_t(second);
                if (below >= 3) magnitude = (magnitude << (below - 2)) | raw.read(below - 2);
            }
        }
        // max_class <= 31 keeps the magnitude below 2^31.
        value =
            negative ? -static_cast<std::int32_t>(magnitude) : static_cast<std::int32_t>(magnitude);
    }
    remember(actual, sign_state);
    return value;
}

void ResidualModel::encode(std::int32_t parent, std::int32_t residual, RangeEncoder& coder,
                           BitWriter& raw) {
    if (parent == 0) {
        zero_parent_.encode(residual, coder, raw);
        return;
    }
    const std::int64_t half = (std::int64_t{1} << (k_ - 1)) - inward_shift_;
    // Oriented so that small values lie towards zero, where weights are denser.
    const auto offset = static_cast<std::uint32_t>(parent > 0 ? residual + half : half - residual);
    const std::uint32_t parent_magnitude =
        static_cast<std::uint32_t>(std::abs(std::int64_t{parent}));
    const std::size_t context = std::min<std::uint32_t>(parent_magnitude, 4) - 1;
    coder.encode((offset >> (k_ - 1)) & 1u, top_bit_[context]);
    if (k_ > 1) raw.write(offset, k_ - 1);
}

std::int32_t ResidualModel::decode(std::int32_t parent, RangeDecoder& coder, BitReader& raw) {
    if (parent == 0) return zero_parent_.decode(coder, raw);
    const std::int64_t half = (std::int64_t{1} << (k_ - 1)) - inward_shift_;
    const std::uint32_t parent_magnitude =
        static_cast<std::uint32_t>(std::abs(std::int64_t{parent}));
    const std::size_t context = std::min<std::uint32_t>(parent_magnitude, 4) - 1;
    std::uint32_t offset = std::uint32_t(coder.decode(top_bit_[context])) << (k_ - 1);
    if (k_ > 1) offset |= raw.read(k_ - 1);
    return static_cast<std::int32_t>(parent > 0 ? std::int64_t{offset} - half
                                                : half - std::int64_t{offset});
}

}  // namespace bitinc::codec
