// Lossless units: the exact rung's source weights, bit for bit, on top of
// the top quantized rung.
#include <gtest/gtest.h>

#include <bit>
#include <cstring>
#include <random>

#include "bitinc/bitinc.hpp"
#include "bitinc/codec.hpp"
#include "bitinc/error.hpp"
#include "core/half_float.hpp"
#include "onnx_builder.hpp"
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
    damaged[unit_header_bytes + 1] = 11;  // float64
    EXPECT_THROW(read_unit_header(damaged, "test"), Error);
}

}  // namespace
}  // namespace bitinc

namespace bitinc {
namespace {

namespace fs = std::filesystem;
using testing::Encoding;
using testing::OnnxBuilder;
using testing::random_values;
using testing::spit;
using testing::TemporaryDirectory;

// Float32, float16 and bfloat16 weights, in initializers and a Constant,
// each used by a Cast so that the graph is valid.
fs::path write_model_of_every_exact_type(const fs::path& path, bool with_float64 = false) {
    OnnxBuilder builder;
    builder.input("x", {-1, 40}).output("x_copy", {-1, 40});
    builder.node("Identity", {"x"}, {"x_copy"});
    std::vector<std::string> names{"c_bf16", "w_f32", "w_f16", "w_bf16", "b_f32"};
    builder.constant("c_bf16", {32, 40}, random_values(32 * 40, 0.1f, 21), Encoding::bfloat16_raw);
    builder.initializer("w_f32", {64, 400}, random_values(64 * 400, 0.05f, 22));
    builder.initializer("w_f16", {48, 40}, random_values(48 * 40, 0.02f, 23), Encoding::half_raw);
    builder.initializer("w_bf16", {64, 40}, random_values(64 * 40, 0.3f, 24),
                        Encoding::bfloat16_raw);
    builder.initializer("b_f32", {64}, random_values(64, 0.1f, 25));
    if (with_float64) {
        builder.initializer("w_f64", {48, 40}, random_values(48 * 40, 0.02f, 26),
                            Encoding::double_raw);
        names.push_back("w_f64");
    }
    for (const std::string& name : names) {
        onnx::NodeProto& cast = builder.node("Cast", {name}, {name + "_float"});
        testing::add_int_attribute(cast, "to", onnx::TensorProto::FLOAT);
        builder.output(name + "_float", {});
    }
    spit(path, builder.bytes());
    return path;
}

PackOptions exact_options(const std::string& ladder) {
    PackOptions options;
    options.ladder = LadderPlan::parse(ladder);
    options.ladder.per_channel = true;
    options.chunk_elements = 1000;  // chunks that straddle channels
    options.threads = 2;
    return options;
}

void expect_same_weights(const Model& got, const Model& want) {
    ASSERT_EQ(got.weights.size(), want.weights.size());
    for (std::size_t t = 0; t < got.weights.size(); ++t) {
        const Tensor& a = got.weights[t];
        const Tensor& b = want.weights[t];
        EXPECT_EQ(a.stored_as, b.stored_as) << a.name;
        EXPECT_TRUE(a.values.size() == b.values.size() &&
                    std::memcmp(a.values.data(), b.values.data(), 4 * a.values.size()) == 0)
            << a.name << " differs";
    }
}

TEST(ExactRung, LadderTextEndsInExact) {
    const LadderPlan plan = LadderPlan::parse("4,8,exact");
    EXPECT_EQ(plan.bits, (std::vector<int>{4, 8}));
    EXPECT_TRUE(plan.exact_top);
    EXPECT_FALSE(LadderPlan::parse("4,8").exact_top);
    for (const char* bad : {"exact", "4,exact,8", "4,32,exact", "4,8,exact,", "4,8,Exact"})
        EXPECT_THROW(LadderPlan::parse(bad), Error) << bad;
}

TEST(ExactRung, EveryWeightTypeComesBackBitForBit) {
    TemporaryDirectory directory;
    const fs::path model = write_model_of_every_exact_type(directory.path() / "m.onnx");
    const fs::path package = directory.path() / "p";
    const PackResult packed = pack_model(model, exact_options("3,8,exact"), package);
    const Manifest& manifest = packed.manifest;
    EXPECT_EQ(manifest.format_version, exact_rung_format_version);
    ASSERT_NE(manifest.exact_rung(), nullptr);
    EXPECT_EQ(manifest.exact_rung()->parent_bits, 8);
    EXPECT_EQ(manifest.last_rung_bits(), exact_rung_bits);
    // The manifest reads back as written, exact rung and all.
    const Manifest reread = read_manifest(package);
    EXPECT_TRUE(reread.ladder.exact_top);
    EXPECT_EQ(serialize_manifest(reread), serialize_manifest(manifest));

    const Model source = read_onnx_file(model);
    const Model exact = unpack_package(package, exact_rung_bits, false);
    expect_same_weights(exact, source);
    EXPECT_EQ(serialize_onnx(exact), serialize_onnx(source));
    // The top quantized rung is not the source: the exact rung did the work.
    EXPECT_NE(serialize_onnx(unpack_package(package, 8, false)), serialize_onnx(source));
    const VerifyReport report = verify_package(package);
    EXPECT_TRUE(report.problems.empty()) << report.problems.front();
    // Its file holds lossless units of the quantized tensors only.
    const RungEntry& rung = *manifest.exact_rung();
    for (const UnitEntry& unit : rung.units) EXPECT_TRUE(manifest.tensors[unit.tensor].quantized);
}

TEST(ExactRung, Float64WeightsAreRefusedByName) {
    TemporaryDirectory directory;
    const fs::path model = write_model_of_every_exact_type(directory.path() / "m.onnx", true);
    try {
        pack_model(model, exact_options("4,8,exact"), directory.path() / "p");
        FAIL() << "a float64 model packed with an exact rung";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("'w_f64' is float64"), std::string::npos)
            << error.what();
    }
    EXPECT_FALSE(fs::exists(directory.path() / "p"));
}

TEST(ExactRung, AFetchEndsAtTheSourceWeightsOrWhereAsked) {
    TemporaryDirectory directory;
    const fs::path model = write_model_of_every_exact_type(directory.path() / "m.onnx");
    pack_model(model, exact_options("4,8,exact"), directory.path() / "root" / "p");
    const auto server = testing::start_package_server(directory.path() / "root", 0, {});
    FetchOptions options;
    options.timeout_seconds = 5;
    const FetchResult exact = fetch_package(server->url() + "/p/", options);
    EXPECT_EQ(exact.reached_bits, exact_rung_bits);
    expect_same_weights(exact.model, read_onnx_file(model));
    options.until_bits = 8;
    const FetchResult top = fetch_package(server->url() + "/p/", options);
    EXPECT_EQ(serialize_onnx(top.model),
              serialize_onnx(unpack_package(directory.path() / "root" / "p", 8, false)));
}

TEST(ExactRung, ManifestsMustPlaceItRight) {
    TemporaryDirectory directory;
    const fs::path model = write_model_of_every_exact_type(directory.path() / "m.onnx");
    pack_model(model, exact_options("4,8,exact"), directory.path() / "p");
    const std::string good = testing::slurp(directory.path() / "p" / "manifest.json");
    EXPECT_NO_THROW(parse_manifest(good, "good"));
    const auto replaced = [&](const std::string& from, const std::string& to) {
        std::string text = good;
        const auto at = text.find(from);
        EXPECT_NE(at, std::string::npos) << from;
        return at == std::string::npos ? text : text.replace(at, from.size(), to);
    };
    for (const std::string& bad : {
             // Format 4 readers know no exact rung: the writer says 5.
             replaced("\"format_version\":5", "\"format_version\":4"),
             replaced("\"kind\":\"exact\",\"bits\":32", "\"kind\":\"exact\",\"bits\":16"),
             replaced("\"kind\":\"exact\",\"bits\":32,\"parent_bits\":8",
                      "\"kind\":\"exact\",\"bits\":32,\"parent_bits\":4"),
             replaced("\"kind\":\"exact\"", "\"kind\":\"direct\""),
         }) {
        EXPECT_THROW(parse_manifest(bad, "bad"), Error);
    }
}

}  // namespace
}  // namespace bitinc
