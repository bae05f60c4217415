// Helpers shared by the tests.
#pragma once

#include <bitinc/codec.hpp>
#include <bitinc/dataset.hpp>
#include <bitinc/model.hpp>
#include <bitinc/package.hpp>
#include <bitinc/server.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "core/crc32c.hpp"

namespace bitinc::testing {

// A fresh directory under the system's temporary directory, removed with
// everything in it when the object goes out of scope.
class TemporaryDirectory {
  public:
    TemporaryDirectory() {
        std::string pattern =
            (std::filesystem::temp_directory_path() / "bitinc-test-XXXXXX").string();
        if (!::mkdtemp(pattern.data())) std::abort();
        path_ = pattern;
    }
    ~TemporaryDirectory() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    TemporaryDirectory(const TemporaryDirectory&) = delete;
    TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;

    const std::filesystem::path& path() const { return path_; }

  private:
    std::filesystem::path path_;
};

// The source tree, for the bundled models; set by CMake.
// `count` normally distributed values of standard deviation `scale`.
inline std::vector<float> random_values(std::size_t count, float scale, unsigned seed) {
    std::mt19937 generator(seed);
    std::normal_distribution<float> normal(0.0f, scale);
    std::vector<float> values(count);
    for (float& value : values) value = normal(generator);
    return values;
}

// Directories `root`/train-only and `root`/test-only holding links to the
// Fashion-MNIST training and test files: a reader given one cannot open the
// other split.
struct SplitDirectories {
    std::filesystem::path train;
    std::filesystem::path test;
};
inline SplitDirectories split_fashion_mnist(const std::filesystem::path& root) {
    namespace fs = std::filesystem;
    const SplitDirectories split{root / "train-only", root / "test-only"};
    fs::create_directories(split.train);
    fs::create_directories(split.test);
    for (const char* name : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"})
        fs::create_symlink(fs::path(default_fashion_mnist_dir) / name, split.train / name);
    for (const char* name : {"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"})
        fs::create_symlink(fs::path(default_fashion_mnist_dir) / name, split.test / name);
    return split;
}

// An accuracy point after the first `units` units of refinement rung `rung`
// (an index into Manifest::rungs), with plausible calibration figures.
inline AccuracyPoint accuracy_point_after(std::size_t rung, std::size_t units) {
    AccuracyPoint point;
    point.rung = rung;
    point.units = units;
    point.metric = "top1_percent";
    point.calibration_images = 512;
    point.value = 91.5;
    point.top_value = 91.6;
    point.tolerance = 0.1;
    return point;
}

inline std::filesystem::path source_dir() {
    return BITINC_SOURCE_DIR;
}

// The Fashion-MNIST files of Debian's dataset-fashion-mnist.
inline bool fashion_mnist_available() {
    return std::filesystem::exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz");
}

// A whole file's bytes ("" if it cannot be read).
// Where a unit's coded payload begins (after its header and steps).
inline std::size_t coded_offset(std::span<const std::uint8_t> unit) {
    return read_unit_header(unit, "test unit").coded_offset();
}

inline std::string slurp(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

// Replaces a file's contents with `bytes`.
inline void spit(const std::filesystem::path& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes;
}

// A running PackageServer on a free loopback port serving `root`, paced to
// `rate` bits/s (0: unlimited), with the faults in parse_fault's form.
inline std::unique_ptr<PackageServer> start_package_server(const std::filesystem::path& root,
                                                           double rate,
                                                           const std::vector<std::string>& faults) {
    ServerOptions options;
    options.root = root;
    options.rate_bits_per_second = rate;
    for (const std::string& fault : faults) options.faults.push_back(parse_fault(fault));
    auto server = std::make_unique<PackageServer>(options);
    server->start();
    return server;
}

// Forges unit `unit_index` of rung `rung_index` in the package at `package`
// the way an attacker who knows the format would: a payload byte changed,
// the CRC32C the unit ends with recomputed and the manifest's CRC32C entry
// updated, while the SHA-256 hashes (of the file and of the unit) stay.
inline void forge_unit(const std::filesystem::path& package, std::size_t rung_index,
                       std::size_t unit_index) {
    Manifest manifest = read_manifest(package);
    RungEntry& rung = manifest.rungs.at(rung_index);
    UnitEntry& unit = rung.units.at(unit_index);
    std::string bytes = slurp(package / rung.data.file);
    const auto* start = reinterpret_cast<const std::uint8_t*>(bytes.data()) + unit.offset;
    const std::size_t header_bytes = read_unit_header({start, unit.length}, "forge").header_bytes;
    const std::uint64_t payload = unit.length - header_bytes - 4;
    bytes[unit.offset + header_bytes + payload / 2] ^= 0x10;
    const std::uint32_t crc = core::crc32c({start, unit.length - 4});
    for (int i = 0; i < 4; ++i) bytes[unit.offset + unit.length - 4 + i] = char(crc >> (8 * i));
    unit.crc32c = crc;
    spit(package / rung.data.file, bytes);
    spit(package / manifest_file_name, serialize_manifest(manifest));
}

// Writes `model` twice under `directory`: inline/m.onnx and, with external
// data, external/m.onnx; returns the two paths.
inline std::pair<std::filesystem::path, std::filesystem::path> write_inline_and_external(
    const Model& model, const std::filesystem::path& directory) {
    const auto inline_model = directory / "inline" / "m.onnx";
    const auto external_model = directory / "external" / "m.onnx";
    std::filesystem::create_directories(inline_model.parent_path());
    std::filesystem::create_directories(external_model.parent_path());
    write_onnx_file(model, inline_model);
    write_onnx_file(model, external_model, true);
    return {inline_model, external_model};
}

}  // namespace bitinc::testing
