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

// `values` are the chunk's source weights (each exactly representable in
// `type`: float32, float16 or bfloat16), `reference` the float32 values the
// device holds (step * index), `parent` those indices.
LosslessPayload encode_lossless(StoredType type, std::span<const float> values,
                                std::span<const float> reference,
                                std::span<const std::int32_t> parent);

// The element type a coded payload names (its second byte), or nothing if
// that is no type a lossless unit carries. `coded` holds at least 2 bytes.
bool lossless_type_is_valid(std::uint8_t code);

// Decodes into `out` (the spans all have the unit's element count). Returns
// an error message for a payload that does not decode cleanly, or nullptr.
const char* decode_lossless(std::span<const std::uint8_t> coded, std::span<const std::uint8_t> raw,
                            std::span<const float> reference, std::span<const std::int32_t> parent,
                            std::span<float> out);

}  // namespace bitinc::codec
