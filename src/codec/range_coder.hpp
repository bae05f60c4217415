// A binary arithmetic (range) coder with adaptive context models, and a
// plain bit stream for bits that are not worth modelling.
//
// The coder keeps a 32-bit range and renormalizes a byte at a time; carries
// propagate through a pending byte and a count of 0xFF bytes. Probabilities
// are 15-bit fixed point. Every context mixes a fast and a slow adaptation
// rate, which follows both short runs and long-term statistics.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

namespace bitinc::codec {

// The probability that the next bin of a context is 0, learnt as bins pass.
class AdaptiveBit {
  public:
    static constexpr int precision = 15;
    static constexpr std::uint32_t one = 1u << precision;

    std::uint32_t probability_of_zero() const {
        const std::uint32_t p = (fast_ + slow_) >> 1;
        return p < 1 ? 1 : (p > one - 1 ? one - 1 : p);
    }
    void update(bool bit) {
        // A young context learns fast (the shift grows with the number of
        // bins seen, like a running average), then settles on the two rates.
        // Branch-free: the bin's value is unpredictable by nature.
        const int fast = std::min(seen_ + 1, fast_shift);
        const int slow = std::min(seen_ + 1, slow_shift);
        seen_ += seen_ < slow_shift;
        // x = 0: p += (one - p) >> rate;  x = 1: p -= p >> rate (docs/format.md 3.1).
        const std::uint32_t mask = 0u - std::uint32_t(bit);
        fast_ += (((one - fast_) >> fast) & ~mask) - ((fast_ >> fast) & mask);
        slow_ += (((one - slow_) >> slow) & ~mask) - ((slow_ >> slow) & mask);
    }

  private:
    static constexpr int fast_shift = 5;
    static constexpr int slow_shift = 8;
    std::uint32_t fast_ = one / 2;
    std::uint32_t slow_ = one / 2;
    int seen_ = 0;
};

class RangeEncoder {
  public:
    void encode(bool bit, AdaptiveBit& context) {
        const std::uint32_t bound =
            (range_ >> AdaptiveBit::precision) * context.probability_of_zero();
        // Branch-free, like the decoder: the bin is unpredictable.
        const std::uint32_t mask = 0u - std::uint32_t(bit);
        low_ += bound & mask;
        range_ = (bound & ~mask) | ((range_ - bound) & mask);
        context.update(bit);
        while (range_ < (1u << 24)) {
            range_ <<= 8;
            shift_low();
        }
    }
    // `value` of `count` equally likely ones (1 <= count <= 2^12): log2(count)
    // bits, give or take 0.001 (the range keeps at least 24 bits).
    void encode_uniform(std::uint32_t value, std::uint32_t count) {
        const std::uint32_t share = range_ / count;
        low_ += std::uint64_t{value} * share;
        // The last value takes what the division left over.
        range_ = value + 1 == count ? range_ - value * share : share;
        while (range_ < (1u << 24)) {
            range_ <<= 8;
            shift_low();
        }
    }
    // Flushes the coder state; the encoder must not be used afterwards.
    std::vector<std::uint8_t> finish();

  private:
    void shift_low();

    std::uint64_t low_ = 0;
    std::uint32_t range_ = 0xFFFFFFFFu;
    std::uint8_t pending_ = 0;
    std::uint64_t pending_count_ = 1;
    std::vector<std::uint8_t> bytes_;
};

// Decodes what RangeEncoder wrote. Reading past the end yields zero bytes,
// so a corrupt stream decodes to garbage (caught by the unit's CRC and range
// checks), never out of bounds.
class RangeDecoder {
  public:
    explicit RangeDecoder(std::span<const std::uint8_t> bytes);

    bool decode(AdaptiveBit& context) {
        const std::uint32_t bound =
            (range_ >> AdaptiveBit::precision) * context.probability_of_zero();
        const bool bit = code_ >= bound;
        // Branch-free selection of the sub-interval.
        const std::uint32_t mask = 0u - std::uint32_t(bit);
        code_ -= bound & mask;
        range_ = (bound & ~mask) | ((range_ - bound) & mask);
        context.update(bit);
        while (range_ < (1u << 24)) {
            range_ <<= 8;
            code_ = (code_ << 8) | next_byte();
        }
        return bit;
    }
    // What RangeEncoder::encode_uniform wrote.
    std::uint32_t decode_uniform(std::uint32_t count) {
        const std::uint32_t share = range_ / count;
        const std::uint32_t value = std::min(code_ / share, count - 1);
        code_ -= value * share;
        range_ = value + 1 == count ? range_ - value * share : share;
        while (range_ < (1u << 24)) {
            range_ <<= 8;
            code_ = (code_ << 8) | next_byte();
        }
        return value;
    }
    // True when the decoder needed bytes beyond the end of its input.
    bool overran() const { return position_ > bytes_.size() + 4; }

  private:
    std::uint32_t next_byte() {
        const std::size_t at = position_++;
        return at < bytes_.size() ? bytes_[at] : 0u;
    }

    std::span<const std::uint8_t> bytes_;
    std::size_t position_ = 0;
    std::uint32_t range_ = 0xFFFFFFFFu;
    std::uint32_t code_ = 0;
};

// Bits written least significant first into bytes.
class BitWriter {
  public:
    void reserve(std::size_t bytes) { bytes_.reserve(bytes); }
    void write(std::uint64_t value, int count) {  // count <= 32
        buffer_ |= (value & ((std::uint64_t{1} << count) - 1)) << filled_;
        filled_ += count;
        if (filled_ >= 32) {  // four whole bytes at once
            const std::size_t at = bytes_.size();
            bytes_.resize(at + 4);
            for (int i = 0; i < 4; ++i)
                bytes_[at + std::size_t(i)] = static_cast<std::uint8_t>(buffer_ >> (8 * i));
            buffer_ >>= 32;
            filled_ -= 32;
        }
    }
    std::vector<std::uint8_t> finish() {
        while (filled_ > 0) {
            bytes_.push_back(static_cast<std::uint8_t>(buffer_));
            buffer_ >>= 8;
            filled_ -= 8;
        }
        filled_ = 0;
        buffer_ = 0;
        return std::move(bytes_);
    }

  private:
    std::vector<std::uint8_t> bytes_;
    std::uint64_t buffer_ = 0;
    int filled_ = 0;
};

class BitReader {
  public:
    explicit BitReader(std::span<const std::uint8_t> bytes) : bytes_(bytes) {}

    // Reads `count` <= 32 bits; past the end it yields zeros and sets overran().
    std::uint32_t read(int count) {
        if (filled_ < count) refill(count);
        const auto value = static_cast<std::uint32_t>(buffer_ & ((std::uint64_t{1} << count) - 1));
        buffer_ >>= count;
        filled_ -= count;
        return value;
    }
    bool overran() const { return overran_; }
    // Whole bytes the bits read so far reach into (where what follows the
    // bit stream starts).
    std::size_t bytes_used() const {
        return (8 * position_ - static_cast<std::size_t>(filled_) + 7) / 8;
    }

  private:
    void refill(int count) {
        // Fast path: as many whole bytes as fit, from one 8-byte load.
        if (position_ + 8 <= bytes_.size()) {
            std::uint64_t word = 0;
            for (int i = 0; i < 8; ++i)
                word |= std::uint64_t(bytes_[position_ + std::size_t(i)]) << (8 * i);
            const int take = (63 - filled_) >> 3;  // 1..7 bytes
            buffer_ |= (word & ((std::uint64_t{1} << (8 * take)) - 1)) << filled_;
            position_ += std::size_t(take);
            filled_ += 8 * take;
            return;
        }
        while (filled_ < count) {
            const std::uint64_t byte = position_ < bytes_.size() ? bytes_[position_] : 0u;
            if (position_ >= bytes_.size()) overran_ = true;
            ++position_;
            buffer_ |= byte << filled_;
            filled_ += 8;
        }
    }

    std::span<const std::uint8_t> bytes_;
    std::size_t position_ = 0;
    std::uint64_t buffer_ = 0;
    int filled_ = 0;
    bool overran_ = false;
};

}  // namespace bitinc::codec
