// Internal pieces of the IDX reader, separate so tests and fuzzers reach them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string_view>
#include <vector>

namespace bitinc::eval {

// No IDX file we read holds more than 1 GiB of data.
inline constexpr std::size_t max_idx_bytes = std::size_t{1} << 30;

struct IdxArray {
    std::vector<std::uint32_t> dims;
    std::vector<std::uint8_t> data;
};

// Reads a file whole, inflating it if it is gzipped; at most `max_bytes`
// after inflation. Throws Error on a missing, corrupt or truncated file.
std::vector<std::uint8_t> read_possibly_gzipped(const std::filesystem::path& path,
                                                std::size_t max_bytes);

// Parses an unsigned-byte IDX array of rank 1 to 3. Every dimension is
// bounded before anything is allocated; the data must be exactly as long as
// the header says.
IdxArray parse_idx(std::span<const std::uint8_t> bytes, std::string_view source);

}  // namespace bitinc::eval
