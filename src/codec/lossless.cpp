// Lossless units (docs/format.md §6.1). A weight with a non-zero index at
// the top quantized rung lies in that index's cell: the values whose
// rounding at the step gives the index. Both sides know the cell, so the
// weight costs log2 of the number of representable values in it (its top
// bits range-coded as a uniform symbol, the rest raw), which is what remains
// of its information once the rung is known. A weight with a zero index can be
// anywhere in (-step/2, step/2) down to zero: its exponent goes through a
// rANS table and sign and mantissa go raw, as exponent-aware float coders
// do.
#include "codec/lossless.hpp"

#include <array>
#include <bit>
#include <cmath>
#include <cstring>

#include "bitinc/codec.hpp"
#include "codec/little_endian.hpp"
#include "codec/range_coder.hpp"
#include "codec/rans.hpp"
#include "core/half_float.hpp"

namespace bitinc::codec {

namespace {

// One rANS symbol per element. Context 0 (zero index): how far the exponent
// lies below that of the element's half step, 0..31, or 32 for an exponent
// sent raw. Context 1 (non-zero index): 0 for a weight inside its cell, 1
// for one outside it (sent whole, raw; a packer never makes one, but the
// format does not depend on how the cell was rounded).
constexpr int context_count = 2;
constexpr int alphabet = 33;
constexpr std::uint32_t exponent_escape = 32;
constexpr std::uint32_t in_cell = 0;
constexpr std::uint32_t outside_cell = 1;

struct FloatFormat {
    int width = 32;
    int mantissa_bits = 23;
    int exponent_bits = 8;
    // The key (key_of) of the largest finite value; the smallest finite
    // value's key is -largest_key - 1.
    std::int64_t largest_key = 0x7F7FFFFF;
};

constexpr FloatFormat format_of(StoredType type) {
    switch (type) {
        case StoredType::float16:
            return {16, 10, 5, 0x7BFF};
        case StoredType::bfloat16:
            return {16, 7, 8, 0x7F7F};
        default:
            return {32, 23, 8, 0x7F7FFFFF};
    }
}

inline std::uint32_t pattern_of(StoredType type, float value) {
    switch (type) {
        case StoredType::float16:
            return core::float_to_half(value);
        case StoredType::bfloat16:
            return core::float_to_bfloat16(value);
        default:
            return std::bit_cast<std::uint32_t>(value);
    }
}

inline float value_of(StoredType type, std::uint32_t pattern) {
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

std::uint32_t pattern_of_key(std::int64_t key, int width) {
    const std::int64_t half = std::int64_t{1} << (width - 1);
    return key >= 0 ? std::uint32_t(key) : std::uint32_t(half) | std::uint32_t(-key - 1);
}

// The keys of the finite values whose rounding at `step` gives `index`
// (round half away from zero of value / step in double, as the ladder
// rounds, docs/format.md §1), or nothing (first > last) if the cell does not
// lie within the finite values. Encoder and decoder run this same code.
struct Cell {
    std::int64_t first = 1;
    std::int64_t last = 0;
};

// Compiled once per element type (the type's conversions inline).
template <StoredType type>
Cell cell_of(std::int32_t index, float step) {
    constexpr FloatFormat format = format_of(type);
    const double q = double(index);
    const double bound_low = (q - 0.5) * double(step);
    const double bound_high = (q + 0.5) * double(step);
    constexpr double float_max = 3.4028234663852886e38;
    if (!(step > 0.0f) || !std::isfinite(step) || std::fabs(bound_low) > float_max ||
        std::fabs(bound_high) > float_max) {
        return {};
    }
    // round_half_away(x) >= q and <= q for x = f64(value) / f64(step),
    // without rounding (halves go away from zero) and without dividing:
    // (q -+ 1/2) * step is exact in binary64 (a step has 8 significant bits,
    // an index 32), and a float value never lies within 2^-53 of it
    // relatively unless equal to it, so comparing the value with it decides
    // exactly as comparing the correctly rounded quotient with q -+ 1/2.
    const auto value_at = [&](std::int64_t key) {
        return double(value_of(type, pattern_of_key(key, format.width)));
    };
    const auto at_least = [&](std::int64_t key) {
        const double v = value_at(key);
        return index > 0 ? v >= bound_low : v > bound_low;
    };
    const auto at_most = [&](std::int64_t key) {
        const double v = value_at(key);
        return index >= 0 ? v < bound_high : v <= bound_high;
    };
    const std::int64_t lowest = -format.largest_key - 1;
    const std::int64_t highest = format.largest_key;
    // An estimate: bfloat16 truncated (a value away at most), not rounded.
    const auto key_near = [&](double value) {
        const float near = float(value);
        const std::uint32_t pattern = type == StoredType::bfloat16
                                          ? std::bit_cast<std::uint32_t>(near) >> 16
                                          : pattern_of(type, near);
        return std::clamp(key_of(pattern, format.width), lowest, highest);
    };
    // From estimates a representable value or two away, by single steps.
    constexpr int max_steps = 64;
    int steps = 0;
    std::int64_t first = key_near(bound_low);
    while (first > lowest && at_least(first - 1)) {
        --first;
        if (++steps > max_steps) return {};
    }
    while (!at_least(first)) {
        if (++first > highest || ++steps > max_steps) return {};
    }
    std::int64_t last = key_near(bound_high);
    while (last < highest && at_most(last + 1)) {
        ++last;
        if (++steps > max_steps) return {};
    }
    while (!at_most(last)) {
        if (--last < lowest || ++steps > max_steps) return {};
    }
    if (last < first) return {};
    return {first, last};
}

Cell cell_of(std::int32_t index, float step, StoredType type) {
    switch (type) {
        case StoredType::float16:
            return cell_of<StoredType::float16>(index, step);
        case StoredType::bfloat16:
            return cell_of<StoredType::bfloat16>(index, step);
        default:
            return cell_of<StoredType::float32>(index, step);
    }
}

std::uint32_t exponent_field(std::uint32_t pattern, const FloatFormat& format) {
    return (pattern >> format.mantissa_bits) & ((std::uint32_t{1} << format.exponent_bits) - 1);
}

// The exponent field, in the weights' type, of half the step: the largest a
// weight of index 0 can have, which its exponent is coded below (channels of
// different steps thus share one table).
std::uint32_t zero_cell_exponent(StoredType type, float step) {
    return exponent_field(pattern_of(type, 0.5f * step), format_of(type));
}

// Raw writes and reads of up to 64 bits (the stream's own take 32).
void write_wide(BitWriter& out, std::uint64_t value, int count) {
    if (count > 32) {
        out.write(value, 32);
        value >>= 32;
        count -= 32;
    }
    out.write(value, count);
}
std::uint64_t read_wide(rans::RawReader& in, int count) {
    if (count <= 32) return in.read(count);
    const std::uint64_t low = in.read(32);
    return low | (std::uint64_t{in.read(count - 32)} << 32);
}

// A truncated binary code of `offset` in [0, size): floor(log2 size) or one
// more bit. The first read decides whether the extra bit follows, so a
// reader that takes bits lowest first needs no look-ahead.
void write_truncated(BitWriter& out, std::uint64_t offset, std::uint64_t size) {
    const int k = int(std::bit_width(size)) - 1;
    const std::uint64_t short_codes = (std::uint64_t{2} << k) - size;
    if (offset < short_codes) {
        write_wide(out, offset, k);
    } else {
        const std::uint64_t code = offset + short_codes;
        write_wide(out, code >> 1, k);
        out.write(code & 1, 1);
    }
}
std::uint64_t read_truncated(rans::RawReader& in, std::uint64_t size) {
    const int k = int(std::bit_width(size)) - 1;
    const std::uint64_t short_codes = (std::uint64_t{2} << k) - size;
    const std::uint64_t head = read_wide(in, k);
    if (head < short_codes) return head;
    return ((head << 1) | in.read(1)) - short_codes;
}

// An offset in [0, size), all equally likely: its top 12 bits (of
// size - 1) through the range coder, which spends log2 of their count, the
// rest raw (the last, shorter block in truncated binary). A truncated binary
// code of the whole offset would cost 0.05 bits more on average.
constexpr int uniform_coded_bits = 12;

struct UniformSplit {
    int shift = 0;             // raw low bits
    std::uint32_t blocks = 1;  // values of the coded part
    std::uint64_t last_block = 1;
};
UniformSplit split_uniform(std::uint64_t size) {
    UniformSplit split;
    split.shift = std::max(0, int(std::bit_width(size - 1)) - uniform_coded_bits);
    split.blocks = static_cast<std::uint32_t>(((size - 1) >> split.shift) + 1);
    split.last_block = size - (std::uint64_t{split.blocks - 1} << split.shift);
    return split;
}
void write_uniform(RangeEncoder& coder, BitWriter& raw, std::uint64_t offset, std::uint64_t size) {
    const UniformSplit split = split_uniform(size);
    const auto block = static_cast<std::uint32_t>(offset >> split.shift);
    coder.encode_uniform(block, split.blocks);
    if (split.shift == 0) return;
    const std::uint64_t low = offset & ((std::uint64_t{1} << split.shift) - 1);
    if (block + 1 < split.blocks) {
        write_wide(raw, low, split.shift);
    } else {
        write_truncated(raw, low, split.last_block);
    }
}
std::uint64_t read_uniform(RangeDecoder& coder, rans::RawReader& raw, std::uint64_t size) {
    const UniformSplit split = split_uniform(size);
    const std::uint32_t block = coder.decode_uniform(split.blocks);
    if (split.shift == 0) return block;
    const std::uint64_t low = block + 1 < split.blocks ? read_wide(raw, split.shift)
                                                       : read_truncated(raw, split.last_block);
    return (std::uint64_t{block} << split.shift) | low;
}

// Coder byte, element type, context mask, length of the range-coded stream.
constexpr std::size_t preamble_bytes = 10;

}  // namespace

bool lossless_type_is_valid(std::uint8_t code) {
    return code == std::uint8_t(StoredType::float32) || code == std::uint8_t(StoredType::float16) ||
           code == std::uint8_t(StoredType::bfloat16);
}

LosslessPayload encode_lossless(StoredType type, std::span<const float> values,
                                const TopRungChunk& top) {
    const FloatFormat format = format_of(type);
    const std::size_t count = values.size();
    std::vector<std::uint8_t> tokens(count);
    std::array<std::uint32_t, context_count * alphabet> counts{};
    BitWriter raw;
    raw.reserve(count * std::size_t(format.width) / 8 + 8);
    RangeEncoder cells;
    for (std::size_t i = 0; i < count; ++i) {
        const std::uint32_t pattern = pattern_of(type, values[i]);
        const int context = top.indices[i] == 0 ? 0 : 1;
        std::uint32_t token = 0;
        if (context == 0) {
            const std::uint32_t exponent = exponent_field(pattern, format);
            token = zero_cell_exponent(type, top.step_of(i)) - exponent;
            if (token >= exponent_escape) {
                token = exponent_escape;
                raw.write(exponent, format.exponent_bits);
            }
            raw.write(pattern >> (format.width - 1), 1);
            raw.write(pattern, format.mantissa_bits);
        } else {
            const Cell cell = cell_of(top.indices[i], top.step_of(i), type);
            const std::int64_t key = key_of(pattern, format.width);
            if (cell.first <= key && key <= cell.last) {
                token = in_cell;
                write_uniform(cells, raw, std::uint64_t(key - cell.first),
                              std::uint64_t(cell.last - cell.first) + 1);
            } else {
                token = outside_cell;
                raw.write(pattern, format.width);
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
        encoder.put(i, tables[top.indices[i] == 0 ? 0 : 1], tokens[i]);
    LosslessPayload payload;
    payload.coded = {std::uint8_t(UnitCoder::rans), std::uint8_t(type)};
    append_u32(payload.coded, mask);
    const std::vector<std::uint8_t> cell_stream = cells.finish();
    append_u32(payload.coded, static_cast<std::uint32_t>(cell_stream.size()));
    const std::vector<std::uint8_t> packed = table_bits.finish();
    const std::vector<std::uint8_t> stream = encoder.finish();
    payload.coded.insert(payload.coded.end(), packed.begin(), packed.end());
    payload.coded.insert(payload.coded.end(), cell_stream.begin(), cell_stream.end());
    payload.coded.insert(payload.coded.end(), stream.begin(), stream.end());
    payload.raw = raw.finish();
    return payload;
}

const char* decode_lossless(std::span<const std::uint8_t> coded, std::span<const std::uint8_t> raw,
                            const TopRungChunk& top, std::span<float> out) {
    if (coded.size() < preamble_bytes) return "lossless payload too short";
    if (coded[0] != std::uint8_t(UnitCoder::rans)) return "lossless payload names an unknown coder";
    if (!lossless_type_is_valid(coded[1])) return "lossless payload names an unknown element type";
    const auto type = static_cast<StoredType>(coded[1]);
    const FloatFormat format = format_of(type);
    const std::uint32_t mask = load_u32(coded.data() + 2);
    if (mask >> context_count) return "lossless payload: bad context mask";
    const std::uint32_t cell_bytes = load_u32(coded.data() + 6);
    BitReader table_bits(coded.subspan(preamble_bytes));
    std::array<rans::DecodeTable, context_count> tables;
    std::array<std::uint16_t, rans::max_alphabet> frequencies{};
    for (int c = 0; c < context_count; ++c) {
        if (!((mask >> c) & 1u)) continue;
        if (!rans::read_table(table_bits, alphabet, frequencies.data()))
            return "lossless payload: bad rANS frequency table";
        rans::build_decode_table(std::span(frequencies).first(alphabet), tables[std::size_t(c)]);
    }
    const std::size_t cells_at = preamble_bytes + table_bits.bytes_used();
    if (coded.size() < cells_at || coded.size() - cells_at < cell_bytes)
        return "lossless range-coded stream too short";
    const std::size_t stream_at = cells_at + cell_bytes;
    if (coded.size() < stream_at + rans::state_bytes) return "lossless rANS stream too short";
    RangeDecoder cells(coded.subspan(cells_at, cell_bytes));
    rans::Decoder decoder(coded.subspan(stream_at));
    auto& lanes = decoder.states();
    const std::size_t count = out.size();
    std::vector<std::uint8_t> tokens(count);
    for (std::size_t i = 0; i < count; ++i) {
        const int context = top.indices[i] == 0 ? 0 : 1;
        if (!((mask >> context) & 1u)) return "lossless payload: an element's context has no table";
        tokens[i] = static_cast<std::uint8_t>(
            decoder.get(lanes[i % rans::lanes], tables[std::size_t(context)]));
    }
    if (decoder.ended_badly()) return "lossless rANS stream does not end cleanly";
    rans::RawReader bits(raw);
    const std::uint32_t pattern_mask = format.width == 32 ? ~0u : (1u << format.width) - 1;
    for (std::size_t i = 0; i < count; ++i) {
        const std::uint32_t token = tokens[i];
        std::uint32_t pattern = 0;
        if (top.indices[i] == 0) {
            std::uint32_t exponent = 0;
            if (token == exponent_escape) {
                exponent = bits.read(format.exponent_bits);
            } else {
                const std::uint32_t reference = zero_cell_exponent(type, top.step_of(i));
                if (token > reference) return "lossless payload: exponent below zero";
                exponent = reference - token;
            }
            const std::uint32_t sign = bits.read(1);
            const std::uint32_t mantissa = bits.read(format.mantissa_bits);
            // A raw exponent has exponent_bits bits, a coded one is at most
            // zero_cell_exponent's: either fits its field.
            pattern = (sign << (format.width - 1)) | (exponent << format.mantissa_bits) | mantissa;
        } else if (token == in_cell) {
            const Cell cell = cell_of(top.indices[i], top.step_of(i), type);
            if (cell.last < cell.first) return "lossless payload: a weight in a cell that has none";
            const std::uint64_t size = std::uint64_t(cell.last - cell.first) + 1;
            const std::uint64_t offset = read_uniform(cells, bits, size);
            if (offset >= size) return "lossless payload: a weight beyond its cell";
            pattern = pattern_of_key(cell.first + std::int64_t(offset), format.width);
        } else if (token == outside_cell) {
            pattern = bits.read(format.width) & pattern_mask;
        } else {
            return "lossless payload: bad symbol";
        }
        out[i] = value_of(type, pattern);
    }
    if (bits.overran()) return "lossless raw bits too short";
    if (cells.overran()) return "lossless range-coded stream too short";
    return nullptr;
}

}  // namespace bitinc::codec
