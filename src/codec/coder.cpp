// The built-in WeightCoders.
#include <zstd.h>

#include <cstring>
#include <string>

#include "bitinc/codec.hpp"
#include "bitinc/coder.hpp"
#include "bitinc/error.hpp"
#include "codec/range_coder.hpp"

namespace bitinc {

namespace {

// Units back to back, one per chunk: "bitinc" as pack codes them (rANS),
// "bitinc-compact" as `pack --compact` does (the adaptive coder where it is
// smaller), "bitinc-adaptive" with the adaptive coder only.
class BitincCoder final : public WeightCoder {
  public:
    BitincCoder(std::string_view name, CoderChoice choice) : name_(name), choice_(choice) {}
    std::string_view name() const override { return name_; }

    std::vector<std::uint8_t> encode_levels(const QuantizedTensor& rung) override {
        std::vector<std::uint8_t> bytes;
        for (const UnitTarget& chunk : plan_chunks(0, rung.indices.size())) {
            const auto unit = encode_level_unit(chunk, rung, choice_);
            bytes.insert(bytes.end(), unit.begin(), unit.end());
        }
        return bytes;
    }
    std::vector<std::int32_t> decode_levels(std::span<const std::uint8_t> bytes,
                                            const QuantizedTensor& like) override {
        std::vector<std::int32_t> indices(like.indices.size());
        for_each_unit(bytes, [&](const UnitHeader& header, std::span<const std::uint8_t> unit) {
            decode_level_unit(header, unit, chunk_of(indices, header));
        });
        return indices;
    }
    std::vector<std::uint8_t> encode_refinement(const QuantizedTensor& coarse,
                                                const QuantizedTensor& fine) override {
        std::vector<std::uint8_t> bytes;
        for (const UnitTarget& chunk : plan_chunks(0, fine.indices.size())) {
            const auto unit = encode_refinement_unit(chunk, coarse, fine, choice_);
            bytes.insert(bytes.end(), unit.begin(), unit.end());
        }
        return bytes;
    }
    std::vector<std::int32_t> decode_refinement(std::span<const std::uint8_t> bytes,
                                                const QuantizedTensor& coarse, int) override {
        std::vector<std::int32_t> indices = coarse.indices;
        for_each_unit(bytes, [&](const UnitHeader& header, std::span<const std::uint8_t> unit) {
            const auto chunk = chunk_of(indices, header);
            decode_refinement_unit(header, unit, chunk, chunk);
        });
        return indices;
    }

  private:
    std::string_view name_;
    CoderChoice choice_;

    template <typename Visit>
    static void for_each_unit(std::span<const std::uint8_t> bytes, Visit visit) {
        while (!bytes.empty()) {
            const std::uint32_t length = unit_length(bytes);
            if (length == 0 || length > bytes.size())
                throw Error(ErrorCode::corrupt_data, "bitinc coder: truncated unit stream");
            const auto unit = bytes.first(length);
            visit(read_unit_header(unit, "unit"), unit);
            bytes = bytes.subspan(length);
        }
    }
    static std::span<std::int32_t> chunk_of(std::vector<std::int32_t>& indices,
                                            const UnitHeader& header) {
        if (header.target.tensor_elements != indices.size())
            throw Error(ErrorCode::corrupt_data, "bitinc coder: unit of another tensor");
        return std::span(indices).subspan(header.target.first, header.target.count);
    }
};

// Bits a raw refinement residual needs: residuals span 2^k + 1 values.
int residual_width(int k) {
    return k + 1;
}

class RawCoder final : public WeightCoder {
  public:
    std::string_view name() const override { return "raw"; }

    std::vector<std::uint8_t> encode_levels(const QuantizedTensor& rung) override {
        return pack(rung.indices, rung.bits, std::int64_t{1} << (rung.bits - 1));
    }
    std::vector<std::int32_t> decode_levels(std::span<const std::uint8_t> bytes,
                                            const QuantizedTensor& like) override {
        return unpack(bytes, like.indices.size(), like.bits, std::int64_t{1} << (like.bits - 1));
    }
    std::vector<std::uint8_t> encode_refinement(const QuantizedTensor& coarse,
                                                const QuantizedTensor& fine) override {
        const int k = fine.bits - coarse.bits;
        return pack(refinement_residuals(coarse, fine), residual_width(k),
                    std::int64_t{1} << (k - 1));
    }
    std::vector<std::int32_t> decode_refinement(std::span<const std::uint8_t> bytes,
                                                const QuantizedTensor& coarse,
                                                int fine_bits) override {
        const int k = fine_bits - coarse.bits;
        const auto residuals =
            unpack(bytes, coarse.indices.size(), residual_width(k), std::int64_t{1} << (k - 1));
        return refine(coarse, residuals, fine_bits).indices;
    }

  private:
    // Each value + offset as `width` bits, least significant first.
    static std::vector<std::uint8_t> pack(const std::vector<std::int32_t>& values, int width,
                                          std::int64_t offset) {
        codec::BitWriter writer;
        for (const std::int32_t value : values) {
            const auto biased = static_cast<std::uint64_t>(std::int64_t{value} + offset);
            if (width > 32) {
                writer.write(biased & 0xFFFFFFFFu, 32);
                writer.write(biased >> 32, width - 32);
            } else {
                writer.write(biased, width);
            }
        }
        return writer.finish();
    }
    static std::vector<std::int32_t> unpack(std::span<const std::uint8_t> bytes, std::size_t count,
                                            int width, std::int64_t offset) {
        if (bytes.size() * 8 < count * std::size_t(width))
            throw Error(ErrorCode::corrupt_data, "raw coder: truncated data");
        codec::BitReader reader(bytes);
        std::vector<std::int32_t> values(count);
        for (auto& value : values) {
            std::uint64_t biased = 0;
            if (width > 32) {
                biased = reader.read(32);
                biased |= std::uint64_t{reader.read(width - 32)} << 32;
            } else {
                biased = reader.read(width);
            }
            value = static_cast<std::int32_t>(static_cast<std::int64_t>(biased) - offset);
        }
        return values;
    }
};

class ZstdCoder final : public WeightCoder {
  public:
    std::string_view name() const override { return "zstd"; }

    std::vector<std::uint8_t> encode_levels(const QuantizedTensor& rung) override {
        return compress(rung.indices, byte_width(rung.bits));
    }
    std::vector<std::int32_t> decode_levels(std::span<const std::uint8_t> bytes,
                                            const QuantizedTensor& like) override {
        return decompress(bytes, like.indices.size(), byte_width(like.bits));
    }
    std::vector<std::uint8_t> encode_refinement(const QuantizedTensor& coarse,
                                                const QuantizedTensor& fine) override {
        return compress(refinement_residuals(coarse, fine),
                        byte_width(fine.bits - coarse.bits + 1));
    }
    std::vector<std::int32_t> decode_refinement(std::span<const std::uint8_t> bytes,
                                                const QuantizedTensor& coarse,
                                                int fine_bits) override {
        const auto residuals =
            decompress(bytes, coarse.indices.size(), byte_width(fine_bits - coarse.bits + 1));
        return refine(coarse, residuals, fine_bits).indices;
    }

  private:
    static constexpr int level = 19;
    static int byte_width(int bits) { return bits <= 8 ? 1 : bits <= 16 ? 2 : 4; }

    static std::vector<std::uint8_t> compress(const std::vector<std::int32_t>& values, int width) {
        std::vector<std::uint8_t> packed(values.size() * std::size_t(width));
        for (std::size_t i = 0; i < values.size(); ++i) {
            for (int b = 0; b < width; ++b) {
                packed[i * std::size_t(width) + std::size_t(b)] =
                    static_cast<std::uint8_t>(values[i] >> (8 * b));
            }
        }
        std::vector<std::uint8_t> out(ZSTD_compressBound(packed.size()));
        const std::size_t size =
            ZSTD_compress(out.data(), out.size(), packed.data(), packed.size(), level);
        if (ZSTD_isError(size))
            throw Error(ErrorCode::internal, std::string("zstd: ") + ZSTD_getErrorName(size));
        out.resize(size);
        return out;
    }
    static std::vector<std::int32_t> decompress(std::span<const std::uint8_t> bytes,
                                                std::size_t count, int width) {
        std::vector<std::uint8_t> packed(count * std::size_t(width));
        const std::size_t size =
            ZSTD_decompress(packed.data(), packed.size(), bytes.data(), bytes.size());
        if (ZSTD_isError(size) || size != packed.size())
            throw Error(ErrorCode::corrupt_data, "zstd coder: corrupt data");
        std::vector<std::int32_t> values(count);
        for (std::size_t i = 0; i < count; ++i) {
            std::uint32_t value = 0;
            for (int b = 0; b < width; ++b)
                value |= std::uint32_t(packed[i * std::size_t(width) + std::size_t(b)]) << (8 * b);
            // Sign-extend from the packed width.
            const int shift = 32 - 8 * width;
            values[i] = static_cast<std::int32_t>(value << shift) >> shift;
        }
        return values;
    }
};

}  // namespace

std::unique_ptr<WeightCoder> make_coder(std::string_view name) {
    if (name == "bitinc") return std::make_unique<BitincCoder>("bitinc", CoderChoice::fast);
    if (name == "bitinc-compact")
        return std::make_unique<BitincCoder>("bitinc-compact", CoderChoice::compact);
    if (name == "bitinc-adaptive")
        return std::make_unique<BitincCoder>("bitinc-adaptive", CoderChoice::adaptive);
    if (name == "raw") return std::make_unique<RawCoder>();
    if (name == "zstd") return std::make_unique<ZstdCoder>();
    throw Error(ErrorCode::invalid_argument,
                "unknown coder '" + std::string(name) +
                    "' (bitinc, bitinc-compact, bitinc-adaptive, raw or zstd)");
}

std::vector<std::string_view> coder_names() {
    return {"bitinc", "bitinc-compact", "bitinc-adaptive", "raw", "zstd"};
}

}  // namespace bitinc
