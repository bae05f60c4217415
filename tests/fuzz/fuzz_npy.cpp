// Fuzz target: the .npy parser and the conversions of what it accepts.
#include <cstddef>
#include <cstdint>
#include <span>

#include "bitinc/error.hpp"
#include "eval/npy_reader.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        const bitinc::eval::NpyArray array = bitinc::eval::parse_npy(std::span(data, size), "fuzz");
        if (array.element_count() < (1u << 16)) {
            (void)array.as_floats();
            (void)array.as_integers();
        }
    } catch (const bitinc::Error&) {
    }
    return 0;
}
