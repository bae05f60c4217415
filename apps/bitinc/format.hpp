// Small text-formatting helpers shared by the subcommands.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bitinc::cli {

// 1234567 -> "1,234,567"
std::string with_commas(std::uint64_t number);
// {64, 3, 3, 3} -> "64x3x3x3"; a symbolic dimension (-1) prints its name or "?".
std::string dims_text(const std::vector<std::int64_t>& dims,
                      const std::vector<std::string>& symbolic = {});

}  // namespace bitinc::cli
