// Fuzz target: everything the library does with untrusted ONNX bytes before
// an engine sees them. Must never crash, hang or allocate without bound.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "bitinc/engine.hpp"
#include "bitinc/error.hpp"
#include "bitinc/model.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        bitinc::Model model =
            bitinc::parse_onnx(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
        bitinc::summarize_topology(model);
        bitinc::read_input_spec(model, "fuzz");
        bitinc::apply_engine_fixups(model);
        bitinc::serialize_onnx(model);
    } catch (const bitinc::Error&) {
        // Rejecting bad input with an Error is the expected outcome.
    }
    return 0;
}
