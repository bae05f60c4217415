// Fuzz target: version deltas (docs/format.md §9) as a hostile server could
// send them to a device holding the earlier version — delta units in any
// order, repeated, truncated, with flipped bytes, and with flipped bytes
// whose CRC32C and manifest hashes were recomputed so that the difference
// decoder sees them; the held model itself damaged; then the refinements
// above the delta's rung. The packages are the bundled small-cnn (v1) and
// a drifted copy packed against it (v2). Every fault must be an Error;
// nothing may crash or read out of bounds.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "bitinc/codec.hpp"
#include "bitinc/error.hpp"
#include "bitinc/package.hpp"
#include "packed_fixture.hpp"

namespace {

namespace fs = std::filesystem;

struct DeltaFixture {
    bitinc::Manifest manifest;  // v2's, with its deltas
    std::string topology;
    std::vector<std::string> rung_files;
    std::vector<std::string> delta_files;
    std::vector<bitinc::Model> held;  // v1 at each delta's bits
};

DeltaFixture make_fixture() {
    const fs::path directory =
        fs::temp_directory_path() / ("bitinc-fuzz-delta-" + std::to_string(::getpid()));
    fs::create_directories(directory);
    bitinc::PackOptions options;
    options.ladder = bitinc::LadderPlan::parse("4,8,16");
    options.ladder.per_channel = true;
    options.chunk_elements = 1024;
    options.threads = 1;
    options.replace = true;
    const fs::path source = fs::path(BITINC_SOURCE_DIR) / "models" / "small-cnn.onnx";
    bitinc::pack_model(source, options, directory / "v1");
    // v2: every weight drifts a little, one tensor grows past v1's grid.
    bitinc::Model model = bitinc::read_onnx_file(source);
    for (std::size_t t = 0; t < model.weights.size(); ++t) {
        std::vector<float>& values = model.weights[t].values;
        for (std::size_t i = 0; i < values.size(); ++i)
            values[i] *= 1.0f + 0.002f * float(int(i % 7) - 3) + (t == 2 ? 0.3f : 0.0f);
    }
    bitinc::write_onnx_file(model, directory / "v2.onnx");
    options.previous_package = directory / "v1";
    bitinc::pack_model(directory / "v2.onnx", options, directory / "v2");
    DeltaFixture fixture;
    const fs::path v2 = directory / "v2";
    fixture.manifest = bitinc::read_manifest(v2);
    fixture.topology = bitinc::fuzzing::read_whole(v2 / fixture.manifest.topology.file);
    for (const bitinc::RungEntry& rung : fixture.manifest.rungs)
        fixture.rung_files.push_back(bitinc::fuzzing::read_whole(v2 / rung.data.file));
    for (const bitinc::DeltaEntry& delta : fixture.manifest.deltas) {
        fixture.delta_files.push_back(bitinc::fuzzing::read_whole(v2 / delta.data.file));
        fixture.held.push_back(bitinc::unpack_package(directory / "v1", delta.bits, false));
    }
    std::error_code ignored;
    fs::remove_all(directory, ignored);
    return fixture;
}

const DeltaFixture& fixture() {
    static const DeltaFixture instance = make_fixture();
    return instance;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const DeltaFixture& base = fixture();
    if (size < 4 || base.manifest.deltas.empty()) return 0;
    bitinc::Manifest manifest = base.manifest;
    const std::size_t d = data[0] % manifest.deltas.size();
    bitinc::Model held = base.held[d];
    // Byte 1: damage one held value (odd) or none.
    if (data[1] & 1) {
        std::vector<float>& values = held.weights[data[2] % held.weights.size()].values;
        if (!values.empty()) values[data[3] % values.size()] *= 1.5f;
    }
    struct Step {
        std::size_t unit;
        std::vector<std::uint8_t> bytes;
    };
    std::vector<Step> steps;
    bitinc::DeltaEntry& delta = manifest.deltas[d];
    for (std::size_t at = 4; at + 8 <= size && steps.size() < 64; at += 8) {
        Step step;
        step.unit = (std::size_t(data[at]) | std::size_t(data[at + 1]) << 8) % delta.units.size();
        const int action = data[at + 2] % 4;  // genuine, flipped, flipped and re-hashed, cut
        const std::uint32_t offset = std::uint32_t(data[at + 3]) |
                                     std::uint32_t(data[at + 4]) << 8 |
                                     std::uint32_t(data[at + 5]) << 16;
        const auto genuine = bitinc::unit_bytes(base.delta_files[d], delta.units[step.unit]);
        step.bytes.assign(genuine.begin(), genuine.end());
        if (action == 1 || action == 2) {
            step.bytes[offset % step.bytes.size()] ^= std::uint8_t(data[at + 6] | 1);
        }
        if (action == 2) {
            bitinc::fuzzing::put_crc(step.bytes);
            bitinc::UnitEntry& forged = delta.units[step.unit];
            forged.crc32c = bitinc::unit_crc32c(step.bytes);
            forged.sha256 = bitinc::unit_sha256(step.bytes);
        }
        if (action == 3) step.bytes.resize(offset % step.bytes.size());
        steps.push_back(std::move(step));
    }
    try {
        bitinc::ModelAssembler assembler(manifest, base.topology, "fuzz");
        assembler.hold_previous(held, d, "fuzz");
        for (const Step& step : steps) {
            try {
                assembler.apply_delta_unit(d, step.unit, step.bytes, "fuzz");
            } catch (const bitinc::Error&) {
            }
        }
        // The genuine refinements above the delta's rung, on whatever the
        // delta left.
        for (std::size_t r = 0; r < manifest.rungs.size(); ++r) {
            const bitinc::RungEntry& rung = manifest.rungs[r];
            if (rung.kind != bitinc::RungKind::refinement || rung.bits <= delta.bits) continue;
            for (std::size_t u = 0; u < rung.units.size(); ++u) {
                try {
                    assembler.apply_unit(
                        r, u, bitinc::unit_bytes(base.rung_files[r], rung.units[u]), "fuzz");
                } catch (const bitinc::Error&) {
                }
            }
        }
        if (assembler.complete()) assembler.model();
        assembler.reached_rung_bits();
    } catch (const bitinc::Error&) {
    }
    return 0;
}
