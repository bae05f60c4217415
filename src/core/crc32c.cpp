#include "core/crc32c.hpp"

#include <array>

namespace bitinc::core {

namespace {

// Slicing-by-8 tables: table[k][b] is the CRC of byte b followed by k zero bytes.
constexpr std::array<std::array<std::uint32_t, 256>, 8> make_tables() {
    std::array<std::array<std::uint32_t, 256>, 8> tables{};
    for (std::uint32_t byte = 0; byte < 256; ++byte) {
        std::uint32_t crc = byte;
        for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
        tables[0][byte] = crc;
    }
    for (std::size_t k = 1; k < 8; ++k) {
        for (std::size_t byte = 0; byte < 256; ++byte) {
            const std::uint32_t previous = tables[k - 1][byte];
            tables[k][byte] = (previous >> 8) ^ tables[0][previous & 0xFF];
        }
    }
    return tables;
}

constexpr auto tables = make_tables();

#if defined(__x86_64__) && defined(__GNUC__)
// SSE4.2's crc32 instruction computes CRC-32C 8 bytes at a time, 4-5 times
// faster than the tables; every unit is checked before it is decoded, so
// this is part of the decoding rate. Chosen at run time (the build targets
// plain x86-64).
__attribute__((target("sse4.2"))) std::uint32_t crc32c_sse42(const std::uint8_t* data,
                                                             std::size_t size, std::uint32_t crc) {
    std::uint64_t wide = crc;
    for (; size >= 8; data += 8, size -= 8) {
        std::uint64_t word;
        __builtin_memcpy(&word, data, 8);  // x86 is little-endian
        wide = __builtin_ia32_crc32di(wide, word);
    }
    crc = static_cast<std::uint32_t>(wide);
    for (; size > 0; --size) crc = __builtin_ia32_crc32qi(crc, *data++);
    return crc;
}
const bool has_sse42 = [] {
    __builtin_cpu_init();  // may run before the CPU model's own initializer
    return __builtin_cpu_supports("sse4.2") != 0;
}();
#endif

}  // namespace

std::uint32_t crc32c(std::span<const std::uint8_t> bytes, std::uint32_t previous) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (has_sse42) return ~crc32c_sse42(bytes.data(), bytes.size(), ~previous);
#endif
    return crc32c_tables(bytes, previous);
}

std::uint32_t crc32c_tables(std::span<const std::uint8_t> bytes, std::uint32_t previous) {
    std::uint32_t crc = ~previous;
    const std::uint8_t* data = bytes.data();
    std::size_t size = bytes.size();
    while (size >= 8) {
        const std::uint32_t low =
            crc ^ (std::uint32_t(data[0]) | std::uint32_t(data[1]) << 8 |
                   std::uint32_t(data[2]) << 16 | std::uint32_t(data[3]) << 24);
        crc = tables[7][low & 0xFF] ^ tables[6][(low >> 8) & 0xFF] ^ tables[5][(low >> 16) & 0xFF] ^
              tables[4][low >> 24] ^ tables[3][data[4]] ^ tables[2][data[5]] ^ tables[1][data[6]] ^
              tables[0][data[7]];
        data += 8;
        size -= 8;
    }
    while (size--) crc = (crc >> 8) ^ tables[0][(crc ^ *data++) & 0xFF];
    return ~crc;
}

}  // namespace bitinc::core
