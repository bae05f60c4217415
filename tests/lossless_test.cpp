// Lossless units: the exact rung's source weights, bit for bit, on top of
// the top quantized rung.
#include <gtest/gtest.h>

#include <bit>
#include <cstring>
#include <random>

#include "bitinc/codec.hpp"
#include "bitinc/error.hpp"
#include "core/half_float.hpp"
#include "test_support.hpp"

namespace bitinc {
namespace {

struct Coded {
    std::vector<std::uint8_t> unit;
    QuantizedTensor top;
    RungChunk chunk() const { return {top.bits, top.steps, top.channel_size, top.indices, 0}; }
};

Coded code_lossless(const Tensor& tensor, const LadderPlan& plan) {
    Coded coded;
    coded.top = quantize_ladder(tensor, plan).back();
    const UnitTarget target{0, tensor.element_count(), 0, tensor.element_count()};
    coded.unit = encode_lossless_unit(target, tensor.stored_as, tensor.values, coded.chunk());
    return coded;
}

std::vector<float> decode(const Coded& coded) {
    const UnitHeader header = read_unit_header(coded.unit, "test");
    EXPECT_EQ(header.type, UnitType::lossless);
    std::vector<float> out(header.target.count);
    decode_lossless_unit(header, coded.unit, coded.chunk(), out);
    return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), 4 * a.size()) == 0;
}

Tensor gaussian_tensor(StoredType type, std::size_t rows, std::size_t columns) {
    Tensor tensor{"w", {std::int64_t(rows), std::int64_t(columns)}, {}, type};
    std::mt19937 random(7);
    std::normal_distribution<float> normal(0.0f, 0.05f);
    for (std::size_t i = 0; i < rows * columns; ++i) {
        // Values a coder might trip on first: zeros of both signs, a
        // denormal, the largest weight.
        float value = i == 0   ? 0.0f
                      : i == 1 ? -0.0f
                      : i == 2 ? 1e-40f
                      : i == 3 ? 0.4f
                               : normal(random);
        if (type == StoredType::float16) value = core::half_to_float(core::float_to_half(value));
        if (type == StoredType::bfloat16)
            value = core::bfloat16_to_float(core::float_to_bfloat16(value));
        tensor.values.push_back(value);
    }
    return tensor;
}

TEST(Lossless, Float32WeightsComeBackBitForBitInUnderThreeBytes) {
    const Tensor tensor = gaussian_tensor(StoredType::float32, 64, 1024);
    const Coded coded = code_lossless(tensor, LadderPlan::parse("4,8"));
    EXPECT_TRUE(same_bits(decode(coded), tensor.values));
    // Raw float32 is 4 bytes; given the 8-bit rung a weight needs about
    // 23 - log2|index| + 1 bits.
    EXPECT_LT(double(coded.unit.size()) / double(tensor.element_count()), 3.0);
}

TEST(Lossless, Float16AndBfloat16WeightsComeBackExactlyAndSmall) {
    for (const StoredType type : {StoredType::float16, StoredType::bfloat16}) {
        const Tensor tensor = gaussian_tensor(type, 32, 512);
        const Coded coded = code_lossless(tensor, LadderPlan::parse("4,8"));
        EXPECT_TRUE(same_bits(decode(coded), tensor.values)) << stored_type_name(type);
        // bfloat16 keeps 8 significant bits, a few more than the 8-bit rung
        // gives a typical weight (|index| around 16 here).
        const double limit = type == StoredType::bfloat16 ? 0.75 : 1.4;
        EXPECT_LT(double(coded.unit.size()) / double(tensor.element_count()), limit)
            << stored_type_name(type);
    }
}

TEST(Lossless, PerChannelTrainedWeightsComeBackExactly) {
    const Model model = read_onnx_file(testing::source_dir() / "models" / "small-cnn.onnx");
    LadderPlan plan = LadderPlan::parse("3,6,12");
    plan.per_channel = true;
    for (const Tensor& tensor : model.weights) {
        if (!plan.quantizes(tensor)) continue;
        EXPECT_TRUE(same_bits(decode(code_lossless(tensor, plan)), tensor.values)) << tensor.name;
    }
}

TEST(Lossless, AWrongReferenceOrDamagedPayloadIsAnErrorNotACrash) {
    const Tensor tensor = gaussian_tensor(StoredType::float32, 16, 256);
    Coded coded = code_lossless(tensor, LadderPlan::parse("4,8"));
    const UnitHeader header = read_unit_header(coded.unit, "test");
    std::vector<float> out(header.target.count);
    // Other indices than the encoder's: other cells, other tables.
    std::vector<std::int32_t> parent = coded.top.indices;
    for (std::int32_t& index : parent) index = index == 0 ? 1 : 0;
    const RungChunk wrong{coded.top.bits, coded.top.steps, coded.top.channel_size, parent, 0};
    EXPECT_THROW(decode_lossless_unit(header, coded.unit, wrong, out), Error);
    // A top rung of other bits than the unit's.
    RungChunk other_bits = coded.chunk();
    other_bits.bits = 6;
    EXPECT_THROW(decode_lossless_unit(header, coded.unit, other_bits, out), Error);
    // A corrupted element type is refused by the header check.
    std::vector<std::uint8_t> damaged = coded.unit;
    damaged[testing::coded_offset(damaged) + 1] = 11;  // float64
    EXPECT_THROW(read_unit_header(damaged, "test"), Error);
}

}  // namespace
}  // namespace bitinc
