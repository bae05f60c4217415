// Fuzz target: the IDX dataset parser.
#include <cstddef>
#include <cstdint>
#include <span>

#include "bitinc/error.hpp"
#include "eval/idx_reader.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        bitinc::eval::parse_idx(std::span(data, size), "fuzz");
    } catch (const bitinc::Error&) {
    }
    return 0;
}
