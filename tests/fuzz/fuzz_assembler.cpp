// Fuzz target: ModelAssembler fed unit sequences a hostile server could send —
// units in any order, repeated, truncated, with flipped bytes, and with
// flipped bytes whose CRC32C (and manifest entry) were recomputed so that the
// decoders see them. The package is the bundled small-cnn, packed once with
// small chunks, mixed precision and an exact rung. Every fault must be an Error; nothing may crash
// or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "bitinc/codec.hpp"
#include "bitinc/error.hpp"
#include "bitinc/package.hpp"
#include "packed_fixture.hpp"

namespace {

using Fixture = bitinc::fuzzing::PackedFixture;

Fixture make_fixture() {
    bitinc::PackOptions options;
    // With an exact rung (format 5): lossless units on the 16-bit top.
    options.ladder = bitinc::LadderPlan::parse("4,8,16,exact");
    options.ladder.per_channel = true;
    options.chunk_elements = 1024;
    // Mixed precision (package format 4): the quantized tensors' bases below,
    // at, between and above the ladder's, so the decoders meet units whose
    // bits are the tensor's own.
    options.base_bits = {3, 0, 2, 0, 6, 0, 4, 0, 8, 0, 5, 0};
    return bitinc::fuzzing::pack_small_cnn(options, "assembler");
}

const Fixture& fixture() {
    static const Fixture instance = make_fixture();
    return instance;
}

// One step of the sequence, 8 bytes of the input.
struct Step {
    std::size_t rung = 0;
    std::size_t unit = 0;
    int action = 0;  // 0 genuine, 1 flipped, 2 flipped with a fresh CRC, 3 truncated
    std::uint32_t offset = 0;
    std::uint8_t value = 0;
    std::vector<std::uint8_t> bytes;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const Fixture& base = fixture();
    bitinc::Manifest manifest = base.manifest;
    std::vector<Step> steps;
    for (std::size_t at = 0; at + 8 <= size && steps.size() < 48; at += 8) {
        Step step;
        step.rung = data[at] % manifest.rungs.size();
        const auto& units = manifest.rungs[step.rung].units;
        if (units.empty()) continue;
        step.unit = (std::size_t(data[at + 1]) | std::size_t(data[at + 2]) << 8) % units.size();
        step.action = data[at + 3] % 4;
        step.offset = std::uint32_t(data[at + 4]) | std::uint32_t(data[at + 5]) << 8 |
                      std::uint32_t(data[at + 6]) << 16;
        step.value = std::uint8_t(data[at + 7] | 1);  // never a no-op flip
        const bitinc::UnitEntry& entry = units[step.unit];
        const auto genuine = bitinc::unit_bytes(base.rung_files[step.rung], entry);
        step.bytes.assign(genuine.begin(), genuine.end());
        if (step.action == 1 || step.action == 2) {
            step.bytes[step.offset % step.bytes.size()] ^= step.value;
        }
        if (step.action == 2) {
            bitinc::fuzzing::put_crc(step.bytes);
            // The manifest entry must agree, as a forged manifest would.
            bitinc::UnitEntry& forged = manifest.rungs[step.rung].units[step.unit];
            forged.crc32c = bitinc::unit_crc32c(step.bytes);
            forged.sha256 = bitinc::unit_sha256(step.bytes);
        }
        if (step.action == 3) step.bytes.resize(step.offset % step.bytes.size());
        steps.push_back(std::move(step));
    }
    try {
        bitinc::ModelAssembler assembler(manifest, base.topology, "fuzz");
        for (const Step& step : steps) {
            try {
                assembler.apply_unit(step.rung, step.unit, step.bytes, "fuzz");
            } catch (const bitinc::Error&) {
                // Refused: the model must stay as it was.
            }
        }
        if (assembler.complete()) assembler.model();
        assembler.reached_rung_bits();
    } catch (const bitinc::Error&) {
    }
    return 0;
}
