// Binarization and context modelling of quantization indices.
//
// A signed level v is sent as its magnitude class c (0 for 0, else the bit
// length of |v|), its sign, and the c-1 bits below the leading one. The class
// is predicted from the two previous classes and coded relative to that
// prediction (a "greater or equal" bin, then unary steps up or down), so a
// typical level costs a few bins whatever the bit depth. The two mantissa
// bits below the leading one are context-coded; the rest are near-uniform and
// go to the raw bit stream, which is where the speed comes from.
//
// A refinement residual r (docs/format.md) is coded by its parent: if the
// coarse index is 0 the residual is a small level with its own contexts; if
// not, r spans 2^k values: the top bit of its offset, oriented towards zero,
// is context-coded by |parent| and the other k-1 bits are raw.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "codec/range_coder.hpp"

namespace bitinc::codec {

inline int magnitude_class(std::uint32_t magnitude) {
    return magnitude ? 32 - __builtin_clz(magnitude) : 0;
}

class LevelModel {
  public:
    // Levels must satisfy |v| < 2^max_class; max_class <= 31.
    explicit LevelModel(int max_class) : max_class_(max_class) {}

    void encode(std::int32_t value, RangeEncoder& coder, BitWriter& raw);
    std::int32_t decode(RangeDecoder& coder, BitReader& raw);

  private:
    static constexpr int steps = 8;  // distinct contexts for unary steps
    int predicted_class() const { return (previous_[0] + previous_[1] + 1) >> 1; }
    void remember(int magnitude_class, int sign_state) {
        previous_[1] = previous_[0];
        previous_[0] = magnitude_class;
        previous_sign_ = sign_state;
    }

    int max_class_;
    int previous_[2] = {0, 0};
    int previous_sign_ = 0;  // 0: zero, 1: positive, 2: negative
    std::array<AdaptiveBit, 32> at_least_predicted_{};
    std::array<std::array<AdaptiveBit, steps>, 32> step_up_{};
    std::array<std::array<AdaptiveBit, steps>, 32> step_down_{};
    std::array<AdaptiveBit, 3> sign_{};
    std::array<std::array<AdaptiveBit, 3>, 32> mantissa_{};
};

// Where a residual's range lies, given its coarse index's sign (h = 2^(k-1)).
enum class ResidualRanges {
    // Ladder refinements (ties of the coarse rung toward zero): [-h+1, h]
    // above zero, [-h, h-1] below, [-h, h] at zero.
    ladder,
    // The split parts of a levels unit (ties away from zero): [-h, h-1]
    // above zero, [-h+1, h] below, [-h+1, h-1] at zero.
    split,
};

// Codes the residuals of one refinement of k bits (1 <= k <= 31) given the
// coarse indices they refine.
class ResidualModel {
  public:
    ResidualModel(int k, ResidualRanges ranges)
        : k_(k),
          inward_shift_(ranges == ResidualRanges::ladder ? 1 : 0),
          zero_parent_(ranges == ResidualRanges::ladder ? k : k - 1) {}

    void encode(std::int32_t parent, std::int32_t residual, RangeEncoder& coder, BitWriter& raw);
    std::int32_t decode(std::int32_t parent, RangeDecoder& coder, BitReader& raw);

  private:
    int k_;
    // The offset of a residual under a non-zero parent is r + h - shift
    // (mirrored below zero), in [0, 2^k - 1].
    int inward_shift_;
    LevelModel zero_parent_;
    std::array<AdaptiveBit, 4> top_bit_{};  // by min(|parent|, 4)
};

}  // namespace bitinc::codec
