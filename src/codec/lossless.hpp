// The payload of a lossless unit (docs/format.md §6.1): a chunk's source
// weights bit for bit, coded against the reconstruction the device already
// holds at the ladder's top quantized rung.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "bitinc/model.hpp"

namespace bitinc::codec {

struct LosslessPayload {
    std::vector<std::uint8_t> coded;
    std::vector<std::uint8_t> raw;
};

// What the device holds of a chunk at the top quantized rung: each
// element's index and its channel's step (value = step * index).
struct TopRungChunk {
    std::span<const std::int32_t> indices;  // the chunk's
    std::span<const float> steps;           // every channel's of the tensor
    std::uint64_t first = 0;                // the chunk's first element in its tensor
    std::uint64_t channel_size = 1;

    float step_of(std::size_t i) const { return steps[(first + i) / channel_size]; }
};

// `values` are the chunk's source weights, each exactly representable in
// `type` (float32, float16 or bfloat16).
LosslessPayload encode_lossless(StoredType type, std::span<const float> values,
                                const TopRungChunk& top);

// Whether `code` names an element type a lossless unit carries.
bool lossless_type_is_valid(std::uint8_t code);

// Decodes into `out` (as many elements as top.indices). Returns an error
// message for a payload that does not decode cleanly, or nullptr.
const char* decode_lossless(std::span<const std::uint8_t> coded, std::span<const std::uint8_t> raw,
                            const TopRungChunk& top, std::span<float> out);

}  // namespace bitinc::codec
