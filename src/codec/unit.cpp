// Unit layout (docs/format.md): a 64-byte little-endian header, the steps,
// the coded payload, the raw payload, and a CRC32C of everything before it.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <string>

#include "bitinc/codec.hpp"
#include "bitinc/error.hpp"
#include "codec/level_coder.hpp"
#include "codec/range_coder.hpp"
#include "core/crc32c.hpp"

namespace bitinc {

namespace {

constexpr std::uint8_t magic[4] = {'B', 'I', 'T', 'U'};

void put_u32(std::uint8_t* at, std::uint32_t value) {
    for (int i = 0; i < 4; ++i) at[i] = static_cast<std::uint8_t>(value >> (8 * i));
}
void put_u64(std::uint8_t* at, std::uint64_t value) {
    for (int i = 0; i < 8; ++i) at[i] = static_cast<std::uint8_t>(value >> (8 * i));
}
std::uint32_t get_u32(const std::uint8_t* at) {
    std::uint32_t value = 0;
    for (int i = 3; i >= 0; --i) value = (value << 8) | at[i];
    return value;
}
std::uint64_t get_u64(const std::uint8_t* at) {
    std::uint64_t value = 0;
    for (int i = 7; i >= 0; --i) value = (value << 8) | at[i];
    return value;
}

// The channels (steps) a chunk touches.
struct ChannelSpan {
    std::uint64_t first = 0;
    std::uint64_t count = 0;
};
ChannelSpan channels_of(const UnitTarget& target, std::uint64_t channel_size) {
    if (target.count == 0) return {};
    const std::uint64_t first = target.first / channel_size;
    const std::uint64_t last = (target.first + target.count - 1) / channel_size;
    return {first, last - first + 1};
}

void check_target(const UnitTarget& target, std::size_t tensor_size) {
    if (target.tensor_elements != tensor_size || target.first > tensor_size ||
        target.count > tensor_size - target.first || target.count > max_unit_elements) {
        throw Error("unit target does not fit the tensor");
    }
}

struct Payload {
    std::vector<std::uint8_t> coded;
    std::vector<std::uint8_t> raw;
};

std::vector<std::uint8_t> assemble(UnitType type, int bits, int parent_bits,
                                   const UnitTarget& target, std::uint64_t channel_size,
                                   std::uint32_t limit, std::span<const float> steps,
                                   const Payload& payload) {
    const std::uint64_t total =
        unit_header_bytes + 2 * steps.size() + payload.coded.size() + payload.raw.size() + 4;
    if (total > 0xFFFFFFFFu) throw Error("unit would exceed 4 GiB; use smaller chunks");
    std::vector<std::uint8_t> unit(total);
    std::uint8_t* at = unit.data();
    std::memcpy(at, magic, 4);
    at[4] = unit_format_version;
    at[5] = static_cast<std::uint8_t>(type);
    at[6] = static_cast<std::uint8_t>(bits);
    at[7] = static_cast<std::uint8_t>(parent_bits);
    put_u32(at + 8, static_cast<std::uint32_t>(total));
    put_u32(at + 12, target.tensor_index);
    put_u64(at + 16, target.tensor_elements);
    put_u64(at + 24, target.first);
    put_u64(at + 32, target.count);
    put_u64(at + 40, channel_size);
    put_u32(at + 48, limit);
    put_u32(at + 52, static_cast<std::uint32_t>(steps.size()));
    put_u32(at + 56, static_cast<std::uint32_t>(payload.coded.size()));
    put_u32(at + 60, static_cast<std::uint32_t>(payload.raw.size()));
    at += unit_header_bytes;
    for (const float step : steps) {
        const std::uint32_t bits_of_step = std::bit_cast<std::uint32_t>(step);
        if (bits_of_step & 0xFFFFu) throw Error("unit: a step has more than 16 significant bits");
        at[0] = static_cast<std::uint8_t>(bits_of_step >> 16);
        at[1] = static_cast<std::uint8_t>(bits_of_step >> 24);
        at += 2;
    }
    if (!payload.coded.empty()) std::memcpy(at, payload.coded.data(), payload.coded.size());
    at += payload.coded.size();
    if (!payload.raw.empty()) std::memcpy(at, payload.raw.data(), payload.raw.size());
    at += payload.raw.size();
    put_u32(at, core::crc32c({unit.data(), total - 4}));
    return unit;
}

// Indices with more significant bits than this are split: the top bits go
// through the level model, the rest through the refinement model, whose
// near-uniform low bits are nearly free to decode.
constexpr int unsplit_classes = 5;

int split_bits_for(std::uint32_t limit) {
    return std::max(0, codec::magnitude_class(limit) - unsplit_classes);
}

std::int64_t divide_rounding(std::int64_t value, int k) {
    const std::int64_t half = std::int64_t{1} << (k - 1);
    return value >= 0 ? (value + half) >> k : -((-value + half) >> k);
}

std::uint32_t coarse_limit(std::uint32_t limit, int split) {
    return split == 0 ? limit : static_cast<std::uint32_t>(divide_rounding(limit, split));
}

[[noreturn]] void corrupt(const UnitHeader& header, const char* what) {
    throw Error("unit of tensor " + std::to_string(header.target.tensor_index) + " at element " +
                std::to_string(header.target.first) + ": " + what);
}

std::span<const std::uint8_t> coded_part(const UnitHeader& header,
                                         std::span<const std::uint8_t> unit) {
    return unit.subspan(unit_header_bytes + 2 * header.steps.size(), header.coded_bytes);
}
std::span<const std::uint8_t> raw_part(const UnitHeader& header,
                                       std::span<const std::uint8_t> unit) {
    return unit.subspan(unit_header_bytes + 2 * header.steps.size() + header.coded_bytes,
                        header.raw_bytes);
}

}  // namespace

std::vector<UnitTarget> plan_chunks(std::uint32_t tensor_index, std::uint64_t elements,
                                    std::uint64_t chunk_elements) {
    chunk_elements = std::clamp<std::uint64_t>(chunk_elements, 1, max_unit_elements);
    std::vector<UnitTarget> chunks;
    std::uint64_t first = 0;
    do {
        const std::uint64_t count = std::min(chunk_elements, elements - first);
        chunks.push_back({tensor_index, elements, first, count});
        first += count;
    } while (first < elements);
    return chunks;
}

std::vector<std::uint8_t> encode_exact_unit(const UnitTarget& target,
                                            std::span<const float> values) {
    check_target(target, values.size());
    Payload payload;
    payload.coded.resize(target.count * 4);
    for (std::uint64_t i = 0; i < target.count; ++i) {
        std::uint32_t bits;
        std::memcpy(&bits, &values[target.first + i], 4);
        put_u32(payload.coded.data() + 4 * i, bits);
    }
    return assemble(UnitType::exact, 32, 0, target, 0, 0, {}, payload);
}

std::vector<std::uint8_t> encode_level_unit(const UnitTarget& target, const QuantizedTensor& rung) {
    check_target(target, rung.indices.size());
    const std::uint64_t channel_size = std::max<std::uint64_t>(rung.channel_size, 1);
    const ChannelSpan channels = channels_of(target, channel_size);
    const std::span<const std::int32_t> indices(rung.indices.data() + target.first, target.count);
    std::uint32_t limit = 0;
    for (const std::int32_t index : indices) {
        limit = std::max(limit, static_cast<std::uint32_t>(std::abs(std::int64_t{index})));
    }
    const int split = split_bits_for(limit);
    codec::RangeEncoder coder;
    codec::BitWriter raw;
    raw.reserve(target.count * std::size_t(std::max(codec::magnitude_class(limit) - 3, 0)) / 8 + 8);
    codec::LevelModel model(codec::magnitude_class(coarse_limit(limit, split)));
    if (split == 0) {
        for (const std::int32_t index : indices) model.encode(index, coder, raw);
    } else {
        codec::ResidualModel residual_model(split);
        for (const std::int32_t index : indices) {
            const std::int64_t coarse = divide_rounding(index, split);
            model.encode(static_cast<std::int32_t>(coarse), coder, raw);
            residual_model.encode(static_cast<std::int32_t>(coarse),
                                  static_cast<std::int32_t>(index - (coarse << split)), coder, raw);
        }
    }
    Payload payload{coder.finish(), raw.finish()};
    return assemble(UnitType::levels, rung.bits, split, target, channel_size, limit,
                    std::span(rung.steps).subspan(channels.first, channels.count), payload);
}

std::vector<std::uint8_t> encode_refinement_unit(const UnitTarget& target,
                                                 const QuantizedTensor& coarse,
                                                 const QuantizedTensor& fine) {
    check_target(target, fine.indices.size());
    const int k = fine.bits - coarse.bits;
    if (k <= 0 || coarse.indices.size() != fine.indices.size()) {
        throw Error("refinement: rungs do not match");
    }
    codec::RangeEncoder coder;
    codec::BitWriter raw;
    raw.reserve(target.count * std::size_t(k - 1) / 8 + 8);
    codec::ResidualModel model(k);
    // Only this chunk's residuals: r = q_fine - 2^k q_coarse.
    for (std::uint64_t i = target.first; i < target.first + target.count; ++i) {
        const std::int64_t residual =
            std::int64_t{fine.indices[i]} - (std::int64_t{coarse.indices[i]} << k);
        model.encode(coarse.indices[i], static_cast<std::int32_t>(residual), coder, raw);
    }
    Payload payload{coder.finish(), raw.finish()};
    return assemble(UnitType::refinement, fine.bits, coarse.bits, target, 0, 0, {}, payload);
}

std::uint32_t unit_length(std::span<const std::uint8_t> bytes) {
    if (bytes.size() < 12 || std::memcmp(bytes.data(), magic, 4) != 0) return 0;
    return get_u32(bytes.data() + 8);
}

std::uint32_t unit_crc32c(std::span<const std::uint8_t> unit) {
    return get_u32(unit.data() + unit.size() - 4);
}

UnitHeader read_unit_header(std::span<const std::uint8_t> unit, std::string_view source) {
    const std::string where(source);
    auto fail = [&](const std::string& what) -> void { throw Error(where + ": " + what); };
    if (unit.size() < unit_header_bytes + 4)
        fail("truncated unit (" + std::to_string(unit.size()) + " bytes)");
    const std::uint8_t* at = unit.data();
    if (std::memcmp(at, magic, 4) != 0) fail("not a bitinc unit (bad magic)");
    if (at[4] != unit_format_version) {
        fail("unit format version " + std::to_string(at[4]) +
             " is not supported (this build reads " + std::to_string(unit_format_version) + ")");
    }
    UnitHeader header;
    header.unit_bytes = get_u32(at + 8);
    if (header.unit_bytes != unit.size()) {
        fail("unit says it is " + std::to_string(header.unit_bytes) + " bytes, " +
             std::to_string(unit.size()) + " are here" +
             (header.unit_bytes > unit.size() ? " (truncated)" : ""));
    }
    const std::uint32_t stored_crc = get_u32(at + unit.size() - 4);
    if (core::crc32c(unit.first(unit.size() - 4)) != stored_crc)
        fail("checksum mismatch (corrupt unit)");

    header.type = static_cast<UnitType>(at[5]);
    header.bits = at[6];
    header.parent_bits = at[7];
    header.target = {get_u32(at + 12), get_u64(at + 16), get_u64(at + 24), get_u64(at + 32)};
    header.channel_size = get_u64(at + 40);
    header.limit = get_u32(at + 48);
    const std::uint32_t step_count = get_u32(at + 52);
    header.coded_bytes = get_u32(at + 56);
    header.raw_bytes = get_u32(at + 60);

    const UnitTarget& target = header.target;
    if (target.tensor_elements > max_tensor_elements || target.first > target.tensor_elements ||
        target.count > target.tensor_elements - target.first || target.count > max_unit_elements) {
        fail("unit's element range lies outside its tensor");
    }
    const std::uint64_t expected = std::uint64_t{unit_header_bytes} + 2ull * step_count +
                                   header.coded_bytes + header.raw_bytes + 4;
    if (expected != header.unit_bytes) fail("unit's section lengths do not add up");
    switch (header.type) {
        case UnitType::exact:
            if (header.bits != 32 || header.parent_bits != 0 || step_count != 0 ||
                header.raw_bytes != 0 || header.coded_bytes != 4 * target.count ||
                header.channel_size != 0 || header.limit != 0) {
                fail("malformed exact unit");
            }
            break;
        case UnitType::levels: {
            if (header.bits < min_ladder_bits || header.bits > max_ladder_bits) {
                fail("levels unit has a bad bit depth");
            }
            // Byte 7 of a levels unit is its split, which follows from its limit.
            header.split_bits = header.parent_bits;
            header.parent_bits = 0;
            if (header.limit > (std::uint64_t{1} << (header.bits - 1)) - 1) {
                fail("levels unit's limit exceeds its bit depth");
            }
            if (header.split_bits != split_bits_for(header.limit))
                fail("levels unit has a bad split");
            if (header.channel_size == 0 ||
                (target.tensor_elements > 0 && header.channel_size > target.tensor_elements)) {
                fail("levels unit has a bad channel size");
            }
            if (step_count != channels_of(target, header.channel_size).count)
                fail("levels unit has the wrong number of steps");
            break;
        }
        case UnitType::refinement:
            if (header.bits > max_ladder_bits || header.parent_bits < min_ladder_bits ||
                header.parent_bits >= header.bits || step_count != 0 || header.channel_size != 0 ||
                header.limit != 0) {
                fail("malformed refinement unit");
            }
            break;
        default:
            fail("unknown unit type " + std::to_string(at[5]));
    }
    header.steps.resize(step_count);
    for (std::uint32_t i = 0; i < step_count; ++i) {
        const std::uint8_t* step = at + unit_header_bytes + 2 * i;
        const std::uint32_t bits = (std::uint32_t(step[0]) << 16) | (std::uint32_t(step[1]) << 24);
        header.steps[i] = std::bit_cast<float>(bits);
        // A step is 0 or a positive normal float (docs/format.md, section 1).
        if (!(header.steps[i] == 0.0f || (std::isnormal(header.steps[i]) && header.steps[i] > 0))) {
            fail("levels unit has an invalid step");
        }
    }
    return header;
}

void decode_exact_unit(const UnitHeader& header, std::span<const std::uint8_t> unit,
                       std::span<float> out) {
    if (header.type != UnitType::exact || out.size() != header.target.count)
        corrupt(header, "not an exact unit of this size");
    const auto payload = coded_part(header, unit);
    for (std::size_t i = 0; i < out.size(); ++i) {
        const std::uint32_t bits = get_u32(payload.data() + 4 * i);
        std::memcpy(&out[i], &bits, 4);
    }
}

void decode_level_unit(const UnitHeader& header, std::span<const std::uint8_t> unit,
                       std::span<std::int32_t> out) {
    if (header.type != UnitType::levels || out.size() != header.target.count)
        corrupt(header, "not a levels unit of this size");
    codec::RangeDecoder coder(coded_part(header, unit));
    codec::BitReader raw(raw_part(header, unit));
    const int split = header.split_bits;
    codec::LevelModel model(codec::magnitude_class(coarse_limit(header.limit, split)));
    const auto limit = static_cast<std::int64_t>(header.limit);
    if (split == 0) {
        for (auto& value : out) {
            value = model.decode(coder, raw);
            if (std::abs(std::int64_t{value}) > limit)
                corrupt(header, "decoded index exceeds the unit's limit");
        }
    } else {
        codec::ResidualModel residual_model(split);
        for (auto& value : out) {
            const std::int32_t coarse = model.decode(coder, raw);
            const std::int64_t index =
                (std::int64_t{coarse} << split) + residual_model.decode(coarse, coder, raw);
            if (std::abs(index) > limit) corrupt(header, "decoded index exceeds the unit's limit");
            value = static_cast<std::int32_t>(index);
        }
    }
    if (coder.overran() || raw.overran()) corrupt(header, "payload ended early");
}

void decode_refinement_unit(const UnitHeader& header, std::span<const std::uint8_t> unit,
                            std::span<const std::int32_t> coarse, std::span<std::int32_t> out) {
    if (header.type != UnitType::refinement || out.size() != header.target.count ||
        coarse.size() != out.size()) {
        corrupt(header, "not a refinement unit of this size");
    }
    const int k = header.bits - header.parent_bits;
    const std::int64_t limit = (std::int64_t{1} << (header.bits - 1)) - 1;
    codec::RangeDecoder coder(coded_part(header, unit));
    codec::BitReader raw(raw_part(header, unit));
    codec::ResidualModel model(k);
    for (std::size_t i = 0; i < out.size(); ++i) {
        const std::int32_t parent = coarse[i];
        const std::int64_t fine = (std::int64_t{parent} << k) + model.decode(parent, coder, raw);
        if (fine < -limit || fine > limit) corrupt(header, "refined index exceeds its bit depth");
        out[i] = static_cast<std::int32_t>(fine);
    }
    if (coder.overran() || raw.overran()) corrupt(header, "payload ended early");
}

}  // namespace bitinc
