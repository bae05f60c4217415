// Reading and writing whole files with the guarantees the tools promise:
// bounded reads, and writes that never leave a half-written file behind.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace bitinc::core {

// Reads `path` whole. Throws Error naming the file if it is missing, not a
// regular file, unreadable, or larger than `max_bytes`.
std::string read_file(const std::filesystem::path& path, std::uint64_t max_bytes);

// Writes `bytes` to a temporary file beside `path`, flushes it to disk and
// renames it over `path`. On any failure the temporary file is removed, an
// existing `path` is left untouched, and Error is thrown.
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes);

}  // namespace bitinc::core
