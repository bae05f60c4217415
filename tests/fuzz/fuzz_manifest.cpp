// Fuzz target: the package manifest parser, the first thing a device reads
// from the network.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "bitinc/error.hpp"
#include "bitinc/package.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        const bitinc::Manifest manifest = bitinc::parse_manifest(
            std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
        // What parses must serialize and parse again to the same text.
        const std::string text = bitinc::serialize_manifest(manifest);
        if (bitinc::serialize_manifest(bitinc::parse_manifest(text, "again")) != text)
            __builtin_trap();
    } catch (const bitinc::Error&) {
    }
    return 0;
}
