// Units: the independently decodable pieces a model travels in. One unit
// carries one chunk of one tensor at one rung; docs/format.md specifies every
// byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "bitinc/ladder.hpp"

namespace bitinc {

inline constexpr std::uint8_t unit_format_version = 5;
// A unit begins with 12 fixed bytes (magic, version, type, bits, parent or
// split, length); nine varint fields follow (docs/format.md §2).
inline constexpr std::size_t unit_fixed_header_bytes = 12;
// Fixed bytes, nine one-byte varints and the CRC.
inline constexpr std::size_t smallest_unit_bytes = unit_fixed_header_bytes + 9 + 4;
// No unit carries more elements; encoders split larger tensors into chunks.
inline constexpr std::uint64_t max_unit_elements = std::uint64_t{1} << 26;
// No ONNX file (at most 2 GiB) holds a tensor with more elements.
inline constexpr std::uint64_t max_tensor_elements = std::uint64_t{1} << 31;
inline constexpr std::uint64_t default_chunk_elements = std::uint64_t{1} << 20;

enum class UnitType : std::uint8_t {
    exact = 1,       // float32 values, bit for bit
    levels = 2,      // quantization indices of a rung, with their steps
    refinement = 3,  // residuals taking a coarser rung's indices to a finer rung
    lossless = 4,    // the source weights bit for bit, on top of a quantized rung
    // Package format 7: integers added to indices a device derives from the
    // weights of an earlier version it holds (a version delta).
    difference = 5,
};

// Difference units go up to rungs of this many bits (a difference of two
// 31-bit levels still fits a 32-bit integer).
inline constexpr int max_difference_bits = 31;

// How a levels or refinement unit's payload is coded: the first byte of its
// coded payload (docs/format.md §3).
enum class UnitCoder : std::uint8_t {
    none = 0,      // exact units
    adaptive = 1,  // adaptive binary range coder: compact, for small chunks
    rans = 2,      // interleaved rANS with per-unit tables: fast
};

// How an encoder picks each unit's coder.
enum class CoderChoice : std::uint8_t {
    // rANS for every unit: the adaptive coder saves 0.02-2 % of the bytes
    // but decodes 5-10 times slower, which costs more time than the bytes
    // it saves take even on the study's slowest link (docs/performance.md).
    fast,
    // Also tries the adaptive coder on small chunks and on chunks whose
    // signs come in runs, and keeps it where it codes smaller: for storage
    // or links far slower than the device's decoder.
    compact,
    adaptive,  // every unit with the adaptive coder (tests, benchmarks)
};

// Which elements of which tensor a unit carries: [first, first + count).
struct UnitTarget {
    std::uint32_t tensor_index = 0;
    std::uint64_t tensor_elements = 0;
    std::uint64_t first = 0;
    std::uint64_t count = 0;
};

struct UnitHeader {
    UnitType type = UnitType::exact;
    int bits = 0;         // rung bit depth (32 for exact units)
    int parent_bits = 0;  // refinement units: the coarser rung's bit depth
    // levels units: indices are coded as round(q / 2^split) plus a residual,
    // like a base rung and its refinement (0: coded whole).
    int split_bits = 0;
    std::uint32_t unit_bytes = 0;
    UnitTarget target;
    std::uint64_t channel_size = 0;  // levels: elements per step
    std::uint32_t limit = 0;         // levels: no |index| in the unit exceeds it
    std::vector<float> steps;        // levels: steps of the channels the chunk touches
    std::uint32_t header_bytes = 0;  // the header's length, its varints included
    std::uint32_t step_bytes = 0;    // length of the step section (docs/format.md §2.1)
    // Where the coded payload begins: after the header and the steps.
    std::size_t coded_offset() const { return std::size_t{header_bytes} + step_bytes; }
    UnitCoder coder = UnitCoder::none;
    std::uint32_t coded_bytes = 0;  // entropy-coded part of the payload
    std::uint32_t raw_bytes = 0;    // raw-bit part of the payload
    // lossless: the element type the weights are exact in (float32,
    // float16 or bfloat16).
    StoredType stored_as = StoredType::float32;
};

// Splits a tensor of `elements` into chunks of at most `chunk_elements`.
std::vector<UnitTarget> plan_chunks(std::uint32_t tensor_index, std::uint64_t elements,
                                    std::uint64_t chunk_elements = default_chunk_elements);

std::vector<std::uint8_t> encode_exact_unit(const UnitTarget& target,
                                            std::span<const float> values);
// `rung` holds the whole tensor; the unit carries target's chunk of it.
std::vector<std::uint8_t> encode_level_unit(const UnitTarget& target, const QuantizedTensor& rung,
                                            CoderChoice choice = CoderChoice::fast);
std::vector<std::uint8_t> encode_refinement_unit(const UnitTarget& target,
                                                 const QuantizedTensor& coarse,
                                                 const QuantizedTensor& fine,
                                                 CoderChoice choice = CoderChoice::fast);

// One chunk of one rung, for encoders that never hold a whole rung (see
// quantize_chunk): the chunk's indices with the tensor's grid.
struct RungChunk {
    int bits = 0;
    std::span<const float> steps;  // every channel's step, of the whole tensor
    std::uint64_t channel_size = 0;
    std::span<const std::int32_t> indices;  // the target's target.count indices
    // Elements per row of the tensor (0: unknown); levels units may then
    // give classes of rows tables of their own (docs/format.md §4.1).
    std::uint64_t row_length = 0;
};
std::vector<std::uint8_t> encode_level_unit(const UnitTarget& target, const RungChunk& rung,
                                            CoderChoice choice = CoderChoice::fast);
// A version delta's unit (docs/format.md §9): `differences.indices` are the
// target indices minus those predicted from the weights a device holds, on
// the grid of `differences.steps` at `differences.bits` (at most
// max_difference_bits).
std::vector<std::uint8_t> encode_difference_unit(const UnitTarget& target,
                                                 const RungChunk& differences,
                                                 CoderChoice choice = CoderChoice::fast);
std::vector<std::uint8_t> encode_refinement_unit(const UnitTarget& target, const RungChunk& coarse,
                                                 const RungChunk& fine,
                                                 CoderChoice choice = CoderChoice::fast);
// The exact rung (docs/format.md §6.1): the chunk's source weights `values`
// (target.count of them, each exact in `type`: float32, float16 or
// bfloat16), coded against what a device holds at the top quantized rung,
// `top` (its bits below 32).
std::vector<std::uint8_t> encode_lossless_unit(const UnitTarget& target, StoredType type,
                                               std::span<const float> values, const RungChunk& top);

// The total length of the unit that starts `bytes`, read from its header, or
// 0 if fewer than 12 bytes are there yet or the magic is wrong. Lets a reader
// split a stream of units without parsing them.
std::uint32_t unit_length(std::span<const std::uint8_t> bytes);

// The CRC32C a unit ends with (its last four bytes), read without checking
// it. `unit` must hold at least four bytes.
std::uint32_t unit_crc32c(std::span<const std::uint8_t> unit);

// Parses and checks a whole unit: magic, version, every field's range and
// consistency, the total length, and the CRC32C. Throws Error naming
// `source` on any fault. Nothing is allocated from an unchecked field.
UnitHeader read_unit_header(std::span<const std::uint8_t> unit, std::string_view source);

// Decoders of a unit already checked by read_unit_header. `out` has
// header.target.count elements. Throw Error on a payload that does not decode
// cleanly.
void decode_exact_unit(const UnitHeader& header, std::span<const std::uint8_t> unit,
                       std::span<float> out);
// Also decodes a difference unit's differences.
void decode_level_unit(const UnitHeader& header, std::span<const std::uint8_t> unit,
                       std::span<std::int32_t> out);
// `coarse` holds the chunk's indices at header.parent_bits; `out` receives
// them at header.bits (out may alias coarse).
void decode_refinement_unit(const UnitHeader& header, std::span<const std::uint8_t> unit,
                            std::span<const std::int32_t> coarse, std::span<std::int32_t> out);
// `top` as encode_lossless_unit had it (the chunk at header.parent_bits);
// `out` receives the source weights (float16 and bfloat16 ones widened
// exactly).
void decode_lossless_unit(const UnitHeader& header, std::span<const std::uint8_t> unit,
                          const RungChunk& top, std::span<float> out);

}  // namespace bitinc
