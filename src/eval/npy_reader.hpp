// Internal pieces of the .npy reader, separate so tests and fuzzers reach them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string_view>
#include <vector>

namespace bitinc::eval {

// No .npy file we read holds more than 2 GiB of data.
inline constexpr std::size_t max_npy_bytes = std::size_t{1} << 31;

enum class NpyType { float32, uint8, int32, int64 };

std::string_view npy_type_name(NpyType type);
std::size_t npy_item_size(NpyType type);

// One array of a .npy file, its data still in the file's (little-endian)
// byte order.
struct NpyArray {
    NpyType type = NpyType::float32;
    std::vector<std::uint64_t> shape;  // empty for a scalar
    std::vector<std::uint8_t> data;    // element count * item size bytes

    std::uint64_t element_count() const;
    // The elements converted to the named type; any stored type is accepted.
    std::vector<float> as_floats() const;
    std::vector<std::int64_t> as_integers() const;
};

// Parses a .npy file (format versions 1 to 3): C order, little-endian
// float32, uint8, int32 or int64 only. Every dimension is bounded before
// anything is allocated and the data must be exactly as long as the header
// says. Throws Error naming `source` with a one-line reason otherwise.
NpyArray parse_npy(std::span<const std::uint8_t> bytes, std::string_view source);

// Reads and parses a .npy file of at most max_npy_bytes.
NpyArray read_npy_file(const std::filesystem::path& path);

}  // namespace bitinc::eval
