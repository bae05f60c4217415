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
// not, r spans 2^k + 1 values: a bin tells the far end (offset 2^k) apart,
// then the top bit, oriented towards zero, is context-coded by |parent| and
// the other k-1 bits are raw.
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

// Codes the residuals of one refinement of k bits (1 <= k <= 31) given the
// coarse indices they refine.
class ResidualModel {
  public:
    // far_end: residuals may reach the far end of their range, offset 2^k
    // (ladder refinements); not so for the split parts of a levels unit,
    // which round by integer division.
    explicit ResidualModel(int k, bool far_end = true)
        : k_(k), far_end_possible_(far_end), zero_parent_(far_end ? k : k - 1) {}

    void encode(std::int32_t parent, std::int32_t residual, RangeEncoder& coder, BitWriter& raw);
    std::int32_t decode(std::int32_t parent, RangeDecoder& coder, BitReader& raw);

  private:
    int k_;
    bool far_end_possible_;
    LevelModel zero_parent_;
    std::array<AdaptiveBit, 4> far_end_{};  // by min(|parent|, 4)
    std::array<AdaptiveBit, 4> top_bit_{};
};

}  // namespace bitinc::codec
