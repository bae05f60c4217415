// Writing a rung file as its units are coded.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "core/file_io.hpp"
#include "core/sha256.hpp"

namespace bitinc {

// A rung file written as its units are coded: appended to disk and hashed on
// the way, so that pack holds one tensor's units at a time.
class RungFileWriter {
  public:
    explicit RungFileWriter(const std::filesystem::path& path) : file_(path) {}

    std::uint64_t append(std::string_view bytes) {
        const std::uint64_t offset = file_.bytes_written();
        file_.write(bytes);
        hash_.update(bytes);
        return offset;
    }
    std::uint64_t append(std::span<const std::uint8_t> unit) {
        return append(std::string_view(reinterpret_cast<const char*>(unit.data()), unit.size()));
    }
    // Closes the file; returns its size and SHA-256.
    std::pair<std::uint64_t, std::string> finish() {
        file_.commit();
        return {file_.bytes_written(), hash_.finish_hex()};
    }

  private:
    core::AtomicFileWriter file_;
    core::Sha256 hash_;
};

}  // namespace bitinc
