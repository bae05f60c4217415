// SHA-256 (FIPS 180-4), for the hashes of package files. Our own, so that
// the decoder needs no crypto library; on x86-64 CPUs with the SHA
// extensions the compression runs on them (chosen at run time).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace bitinc::core {

// Lowercase hex of the SHA-256 of `bytes`.
std::string sha256_hex(std::string_view bytes);

// Lowercase hex of any bytes (two digits a byte).
std::string lowercase_hex(std::span<const std::uint8_t> bytes);

// A SHA-256 computed piece by piece, for files hashed as their bytes arrive.
class Sha256 {
  public:
    Sha256();

    void update(std::string_view bytes);
    // Lowercase hex of everything passed to update(); the hash starts over.
    std::string finish_hex();
    // The 32 digest bytes of everything passed to update(); the hash starts over.
    std::array<std::uint8_t, 32> finish();

  private:
    void restart();

    std::array<std::uint32_t, 8> state_;
    std::array<std::uint8_t, 64> partial_block_;  // bytes waiting for a whole block
    std::size_t partial_size_ = 0;
    std::uint64_t total_bytes_ = 0;
};

// The block function on its own: `blocks` is a whole number of 64-byte
// blocks. `portable` forces the plain C++ rounds (tests compare both paths).
void sha256_compress(std::array<std::uint32_t, 8>& state, std::span<const std::uint8_t> blocks,
                     bool portable = false);

}  // namespace bitinc::core
