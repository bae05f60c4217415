// The bundled small-cnn packed once for a fuzz target that feeds a package's
// bytes to the device side: the manifest (text and parsed), the topology and
// every rung file, read back and the package removed.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "bitinc/package.hpp"
#include "core/crc32c.hpp"

#ifndef BITINC_SOURCE_DIR
#error "BITINC_SOURCE_DIR must name the source tree (for models/small-cnn.onnx)"
#endif

namespace bitinc::fuzzing {

struct PackedFixture {
    std::string manifest_text;
    Manifest manifest;
    std::string topology;
    std::vector<std::string> rung_files;  // in the manifest's order of rungs
};

// Recomputes the CRC32C a unit ends with, as a forger would after
// changing it.
inline void put_crc(std::vector<std::uint8_t>& unit) {
    if (unit.size() < 4) return;
    const std::uint32_t crc = core::crc32c({unit.data(), unit.size() - 4});
    for (int i = 0; i < 4; ++i)
        unit[unit.size() - 4 + std::size_t(i)] = std::uint8_t(crc >> (8 * i));
}

inline std::string read_whole(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    return bytes.str();
}

inline PackedFixture pack_small_cnn(PackOptions options, std::string_view tag) {
    namespace fs = std::filesystem;
    const fs::path directory = fs::temp_directory_path() / ("bitinc-fuzz-" + std::string(tag) +
                                                            "-" + std::to_string(::getpid()));
    options.threads = 1;
    options.replace = true;
    pack_model(fs::path(BITINC_SOURCE_DIR) / "models" / "small-cnn.onnx", options, directory);
    PackedFixture fixture;
    fixture.manifest_text = read_whole(directory / manifest_file_name);
    fixture.manifest = read_manifest(directory);
    fixture.topology = read_whole(directory / fixture.manifest.topology.file);
    for (const RungEntry& rung : fixture.manifest.rungs)
        fixture.rung_files.push_back(read_whole(directory / rung.data.file));
    std::error_code ignored;
    fs::remove_all(directory, ignored);
    return fixture;
}

}  // namespace bitinc::fuzzing
