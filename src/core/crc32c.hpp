// CRC-32C (Castagnoli), the checksum of every unit: iSCSI's polynomial,
// reflected, initial value and final xor 0xFFFFFFFF. crc32c("123456789") is
// 0xE3069283.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace bitinc::core {

// With SSE4.2's crc32 instruction where the CPU has it, else crc32c_tables.
std::uint32_t crc32c(std::span<const std::uint8_t> bytes, std::uint32_t previous = 0);
// The portable slicing-by-8 version (the same values).
std::uint32_t crc32c_tables(std::span<const std::uint8_t> bytes, std::uint32_t previous = 0);

}  // namespace bitinc::core
