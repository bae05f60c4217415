// Coders: interchangeable ways of turning a quantized tensor's rung into bytes
// and back, the "coder" of the 3GPP evaluation framework. The built-in ones:
//
//   bitinc  the unit format of docs/format.md (context-adaptive arithmetic
//           coding, chunked, CRC-protected)
//   raw     every index packed in its rung's bit width, no entropy coding
//   zstd    indices as 8/16/32-bit integers through zstd at level 19
//
// raw and zstd are baselines for benchmarks.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "bitinc/ladder.hpp"

namespace bitinc {

class WeightCoder {
  public:
    virtual ~WeightCoder() = default;
    virtual std::string_view name() const = 0;

    // A whole rung of a tensor (its indices; steps travel separately except
    // where the format carries them).
    virtual std::vector<std::uint8_t> encode_levels(const QuantizedTensor& rung) = 0;
    // `like` gives the rung's bit depth, element count, steps and channel size.
    virtual std::vector<std::int32_t> decode_levels(std::span<const std::uint8_t> bytes,
                                                    const QuantizedTensor& like) = 0;

    // The residuals that take `coarse` to `fine`.
    virtual std::vector<std::uint8_t> encode_refinement(const QuantizedTensor& coarse,
                                                        const QuantizedTensor& fine) = 0;
    virtual std::vector<std::int32_t> decode_refinement(std::span<const std::uint8_t> bytes,
                                                        const QuantizedTensor& coarse,
                                                        int fine_bits) = 0;
};

// The coder called `name` ("bitinc", "raw" or "zstd"); throws Error otherwise.
std::unique_ptr<WeightCoder> make_coder(std::string_view name);
std::vector<std::string_view> coder_names();

}  // namespace bitinc
