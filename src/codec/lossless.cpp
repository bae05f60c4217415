// Lossless units (docs/format.md §6.1). Each source weight is coded as the
// distance, in representable values of its type, from the value the device
// already holds. Weights with a non-zero index lie within half a step of it,
// so the distance is small and nearly uniform: its bit length goes through a
// rANS table chosen by the index's magnitude (the larger the index, the
// finer the type's spacing relative to the step) and the bits under the
// leading one go raw, which together cost within a fraction of a bit of the
// uniform optimum. Weights with a zero index can be anywhere in
// (-step/2, step/2), down to zero: their exponent goes through its own table
// and sign and mantissa go raw, as exponent-aware float coders do.
#include "codec/lossless.hpp"

#include <array>
#include <bit>
#include <cstring>

#include "bitinc/codec.hpp"
#include "codec/range_coder.hpp"
#include "codec/rans.hpp"
#include "core/half_float.hpp"

namespace bitinc::codec {

namespace {

// Context 0: zero index; context c >= 1: index magnitude of bit width c,
// the widths above 16 sharing context 16.
constexpr int context_count = 17;
// Tokens: bit lengths 0..32 of the distance (contexts >= 1), or how far the
// exponent lies below the unit's reference exponent, 0..31, and 32 for an
// exponent sent raw (context 0).
constexpr int alphabet = 33;
constexpr std::uint32_t exponent_escape = 32;

struct FloatFormat {
    int width = 32;
    int mantissa_bits = 23;
    int exponent_bits = 8;
};

FloatFormat format_of(StoredType type) {
    switch (type) {
        case StoredType::float16:
            return {16, 10, 5};
        case StoredType::bfloat16:
            return {16, 7, 8};
        default:
            return {32, 23, 8};
    }
}

std::uint32_t pattern_of(StoredType type, float value) {
    switch (type) {
        case StoredType::float16:
            return core::float_to_half(value);
        case StoredType::bfloat16:
            return core::float_to_bfloat16(value);
        default:
            return std::bit_cast<std::uint32_t>(value);
    }
}

float value_of(StoredType type, std::uint32_t pattern) {
    switch (type) {
        case StoredType::float16:
            return core::half_to_float(static_cast<std::uint16_t>(pattern));
        case StoredType::bfloat16:
            return core::bfloat16_to_float(static_cast<std::uint16_t>(pattern));
        default:
            return std::bit_cast<float>(pattern);
    }
}

// The patterns of a type in the order of their values, -0 just below +0.
std::int64_t key_of(std::uint32_t pattern, int width) {
    const std::uint32_t sign_bit = std::uint32_t{1} << (width - 1);
    const std::int64_t magnitude = pattern & (sign_bit - 1);
    return (pattern & sign_bit) ? -magnitude - 1 : magnitude;
}

// The inverse of key_of; false for a key no pattern has.
bool pattern_of_key(std::int64_t key, int width, std::uint32_t& pattern) {
    const std::int64_t half = std::int64_t{1} << (width - 1);
    if (key < -half || key >= half) return false;
    pattern = key >= 0 ? std::uint32_t(key) : std::uint32_t(half) | std::uint32_t(-key - 1);
    return true;
}

int context_of(std::int32_t parent) {
    if (parent == 0) return 0;
    const std::uint32_t magnitude =
        static_cast<std::uint32_t>(parent < 0 ? -std::int64_t{parent} : parent);
    return std::min(int(std::bit_width(magnitude)), context_count - 1);
}

void put_u32(std::vector<std::uint8_t>& out, std::uint32_t value) {
    for (int b = 0; b < 4; ++b) out.push_back(static_cast<std::uint8_t>(value >> (8 * b)));
}

constexpr std::size_t preamble_bytes = 7;  // coder, type, reference exponent, context mask

}  // namespace

bool lossless_type_is_valid(std::uint8_t code) {
    return code == std::uint8_t(StoredType::float32) || code == std::uint8_t(StoredType::float16) ||
           code == std::uint8_t(StoredType::bfloat16);
}

LosslessPayload encode_lossless(StoredType type, std::span<const float> values,
                                std::span<const float> reference,
                                std::span<const std::int32_t> parent) {
    const FloatFormat format = format_of(type);
    const std::uint32_t exponent_mask = (std::uint32_t{1} << format.exponent_bits) - 1;
    const auto exponent_of = [&](std::uint32_t pattern) {
        return (pattern >> format.mantissa_bits) & exponent_mask;
    };
    const std::size_t count = values.size();
    std::uint32_t reference_exponent = 0;
    for (std::size_t i = 0; i < count; ++i) {
        if (parent[i] == 0)
            reference_exponent =
                std::max(reference_exponent, exponent_of(pattern_of(type, values[i])));
    }
    std::vector<std::uint8_t> tokens(count);
    std::array<std::uint32_t, context_count * alphabet> counts{};
    BitWriter raw;
    raw.reserve(count * std::size_t(format.width) / 8 + 8);
    for (std::size_t i = 0; i < count; ++i) {
        const std::uint32_t pattern = pattern_of(type, values[i]);
        const int context = context_of(parent[i]);
        std::uint32_t token = 0;
        if (context == 0) {
            const std::uint32_t exponent = exponent_of(pattern);
            token = reference_exponent - exponent;
            if (token >= exponent_escape) {
                token = exponent_escape;
                raw.write(exponent, format.exponent_bits);
            }
            raw.write(pattern >> (format.width - 1), 1);
            raw.write(pattern, format.mantissa_bits);
        } else {
            const std::int64_t distance = key_of(pattern, format.width) -
                                          key_of(pattern_of(type, reference[i]), format.width);
            const std::uint64_t magnitude =
                static_cast<std::uint64_t>(distance < 0 ? -distance : distance);
            token = static_cast<std::uint32_t>(std::bit_width(magnitude));
            if (token > 0) {
                raw.write(distance < 0 ? 1u : 0u, 1);
                raw.write(magnitude, int(token) - 1);  // the bits under the leading one
            }
        }
        tokens[i] = static_cast<std::uint8_t>(token);
        ++counts[std::size_t(context * alphabet) + token];
    }
    // A table for each context that occurs.
    std::uint32_t mask = 0;
    BitWriter table_bits;
    std::array<rans::EncodeTable, context_count> tables{};
    for (int c = 0; c < context_count; ++c) {
        const auto histogram = std::span(counts).subspan(std::size_t(c * alphabet), alphabet);
        bool used = false;
        for (const std::uint32_t n : histogram) used |= n > 0;
        if (!used) continue;
        mask |= 1u << c;
        const std::vector<std::uint16_t> frequencies = rans::normalize(histogram);
        rans::write_table(table_bits, frequencies);
        tables[std::size_t(c)] = rans::make_encode_table(frequencies);
    }
    rans::Encoder encoder(count);
    for (std::size_t i = count; i-- > 0;)
        encoder.put(i, tables[std::size_t(context_of(parent[i]))], tokens[i]);
    LosslessPayload payload;
    payload.coded = {std::uint8_t(UnitCoder::rans), std::uint8_t(type),
                     static_cast<std::uint8_t>(reference_exponent)};
    put_u32(payload.coded, mask);
    const std::vector<std::uint8_t> packed = table_bits.finish();
    const std::vector<std::uint8_t> stream = encoder.finish();
    payload.coded.insert(payload.coded.end(), packed.begin(), packed.end());
    payload.coded.insert(payload.coded.end(), stream.begin(), stream.end());
    payload.raw = raw.finish();
    return payload;
}

const char* decode_lossless(std::span<const std::uint8_t> coded, std::span<const std::uint8_t> raw,
                            std::span<const float> reference, std::span<const std::int32_t> parent,
                            std::span<float> out) {
    if (coded.size() < preamble_bytes) return "lossless payload too short";
    if (coded[0] != std::uint8_t(UnitCoder::rans)) return "lossless payload names an unknown coder";
    if (!lossless_type_is_valid(coded[1])) return "lossless payload names an unknown element type";
    const auto type = static_cast<StoredType>(coded[1]);
    const FloatFormat format = format_of(type);
    const std::uint32_t reference_exponent = coded[2];
    if (reference_exponent >> format.exponent_bits)
        return "lossless payload: bad reference exponent";
    std::uint32_t mask = 0;
    for (int b = 3; b >= 0; --b) mask = (mask << 8) | coded[3 + std::size_t(b)];
    if (mask >> context_count) return "lossless payload: bad context mask";
    // Tables of the contexts present, in context order.
    BitReader table_bits(coded.subspan(preamble_bytes));
    std::vector<rans::DecodeTable> tables(std::size_t(std::popcount(mask)));
    std::array<const rans::DecodeTable*, context_count> table_of{};
    std::array<std::uint16_t, rans::max_alphabet> frequencies{};
    std::size_t next = 0;
    for (int c = 0; c < context_count; ++c) {
        if (!((mask >> c) & 1u)) continue;
        if (!rans::read_table(table_bits, alphabet, frequencies.data()))
            return "lossless payload: bad rANS frequency table";
        rans::build_decode_table(std::span(frequencies).first(alphabet), tables[next]);
        table_of[std::size_t(c)] = &tables[next++];
    }
    const std::size_t stream_at = preamble_bytes + table_bits.bytes_used();
    if (coded.size() < stream_at + rans::state_bytes) return "lossless rANS stream too short";
    rans::Decoder decoder(coded.subspan(stream_at));
    auto& lanes = decoder.states();
    const std::size_t count = out.size();
    std::vector<std::uint8_t> tokens(count);
    for (std::size_t i = 0; i < count; ++i) {
        const rans::DecodeTable* table = table_of[std::size_t(context_of(parent[i]))];
        if (table == nullptr) return "lossless payload: an element's context has no table";
        tokens[i] = static_cast<std::uint8_t>(decoder.get(lanes[i % rans::lanes], *table));
    }
    if (decoder.ended_badly()) return "lossless rANS stream does not end cleanly";
    rans::RawReader bits(raw);
    const std::uint32_t exponent_mask = (std::uint32_t{1} << format.exponent_bits) - 1;
    for (std::size_t i = 0; i < count; ++i) {
        const std::uint32_t token = tokens[i];
        std::uint32_t pattern = 0;
        if (parent[i] == 0) {
            std::uint32_t exponent = 0;
            if (token == exponent_escape) {
                exponent = bits.read(format.exponent_bits);
            } else {
                if (token > reference_exponent) return "lossless payload: exponent below zero";
                exponent = reference_exponent - token;
            }
            const std::uint32_t sign = bits.read(1);
            const std::uint32_t mantissa = bits.read(format.mantissa_bits);
            pattern = (sign << (format.width - 1)) |
                      ((exponent & exponent_mask) << format.mantissa_bits) | mantissa;
        } else {
            if (int(token) > format.width) return "lossless payload: distance too long";
            std::int64_t distance = 0;
            if (token > 0) {
                const bool negative = bits.read(1) != 0;
                const std::uint64_t magnitude =
                    (std::uint64_t{1} << (token - 1)) | bits.read(int(token) - 1);
                distance = negative ? -std::int64_t(magnitude) : std::int64_t(magnitude);
            }
            const std::int64_t key =
                key_of(pattern_of(type, reference[i]), format.width) + distance;
            if (!pattern_of_key(key, format.width, pattern))
                return "lossless payload: a value beyond its type";
        }
        out[i] = value_of(type, pattern);
    }
    if (bits.overran()) return "lossless raw bits too short";
    return nullptr;
}

}  // namespace bitinc::codec
