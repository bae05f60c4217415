// Fuzz target: the unit reader and the four unit decoders.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "bitinc/codec.hpp"
#include "bitinc/error.hpp"
#include "core/crc32c.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    // Odd-sized inputs are taken as they are; even-sized ones get a valid
    // checksum, so that mutations also reach the field checks and decoders.
    std::vector<std::uint8_t> bytes(data, data + size);
    if (size >= 8 && size % 2 == 0) {
        const std::uint32_t crc = bitinc::core::crc32c({bytes.data(), size - 4});
        for (int i = 0; i < 4; ++i) bytes[size - 4 + std::size_t(i)] = std::uint8_t(crc >> (8 * i));
    }
    const std::span<const std::uint8_t> unit(bytes);
    try {
        const bitinc::UnitHeader header = bitinc::read_unit_header(unit, "fuzz");
        // Units are bounded at 2^26 elements; keep fuzzing iterations fast.
        if (header.target.count > (std::uint64_t{1} << 20)) return 0;
        switch (header.type) {
            case bitinc::UnitType::exact: {
                std::vector<float> out(header.target.count);
                bitinc::decode_exact_unit(header, unit, out);
                break;
            }
            case bitinc::UnitType::levels:
            case bitinc::UnitType::difference: {
                std::vector<std::int32_t> out(header.target.count);
                bitinc::decode_level_unit(header, unit, out);
                break;
            }
            case bitinc::UnitType::refinement: {
                // Parents cycle through zero, small and large values.
                std::vector<std::int32_t> coarse(header.target.count);
                const std::int32_t limit = (1 << (header.parent_bits - 1)) - 1;
                for (std::size_t i = 0; i < coarse.size(); ++i) {
                    coarse[i] = static_cast<std::int32_t>(i % 5) - 2;
                    if (i % 7 == 0) coarse[i] = i % 2 ? limit : -limit;
                }
                std::vector<std::int32_t> out(coarse.size());
                bitinc::decode_refinement_unit(header, unit, coarse, out);
                break;
            }
            case bitinc::UnitType::lossless: {
                // A top rung as a device holds it, the one the corpus's
                // lossless units were coded on (tests/unit_test.cpp):
                // indices of every size, steps of several scales (one
                // channel in a hundred with 0).
                std::vector<std::int32_t> parent(header.target.count);
                for (std::size_t i = 0; i < parent.size(); ++i) {
                    parent[i] = static_cast<std::int32_t>(i % 9) - 4;
                    if (i % 11 == 0) parent[i] = i % 2 ? 127 : -127;
                }
                const std::uint64_t channel_size = 64;
                std::vector<float> steps(header.target.tensor_elements / channel_size + 1);
                for (std::size_t c = 0; c < steps.size(); ++c)
                    steps[c] = c % 100 == 7 ? 0.0f : 0.0123f * float(1 + c % 5);
                const bitinc::RungChunk top{header.parent_bits, steps, channel_size, parent, 0};
                std::vector<float> out(parent.size());
                bitinc::decode_lossless_unit(header, unit, top, out);
                break;
            }
        }
    } catch (const bitinc::Error&) {
    }
    return 0;
}
