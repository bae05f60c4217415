#include "codec/range_coder.hpp"

namespace bitinc::codec {

void RangeEncoder::shift_low() {
    // A byte can be emitted once no carry can reach it: either the top byte
    // of `low` is below 0xFF, or a carry has just happened.
    if (static_cast<std::uint32_t>(low_) < 0xFF000000u || (low_ >> 32) != 0) {
        const auto carry = static_cast<std::uint8_t>(low_ >> 32);
        std::uint8_t byte = pending_;
        do {
            bytes_.push_back(static_cast<std::uint8_t>(byte + carry));
            byte = 0xFF;
        } while (--pending_count_ != 0);
        pending_ = static_cast<std::uint8_t>(low_ >> 24);
    }
    ++pending_count_;
    low_ = (low_ & 0x00FFFFFFu) << 8;
}

std::vector<std::uint8_t> RangeEncoder::finish() {
    for (int i = 0; i < 5; ++i) shift_low();
    return std::move(bytes_);
}

RangeDecoder::RangeDecoder(std::span<const std::uint8_t> bytes) : bytes_(bytes) {
    // The encoder's first byte is always the initial pending 0.
    for (int i = 0; i < 5; ++i) code_ = (code_ << 8) | next_byte();
}

}  // namespace bitinc::codec
