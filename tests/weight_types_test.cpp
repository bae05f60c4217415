// Every weight type an exporter writes: float32, float16, bfloat16 and
// float64 tensors go through the ladder and come back in their own type;
// already-quantized (QDQ int8, int4) tensors travel unchanged with a note;
// what bitinc cannot code is named.
#include <gtest/gtest.h>

#include <bitinc/bitinc.hpp>
#include <cmath>
#include <cstring>

#include "core/half_float.hpp"
#include "onnx_builder.hpp"
#include "test_support.hpp"

namespace bitinc {
namespace {

namespace fs = std::filesystem;
using testing::Encoding;
using testing::OnnxBuilder;
using testing::random_values;
using testing::slurp;
using testing::spit;
using testing::TemporaryDirectory;

onnx::ModelProto parse_proto(const std::string& bytes) {
    onnx::ModelProto proto;
    EXPECT_TRUE(proto.ParseFromString(bytes));
    return proto;
}

// A float32 value as the file stores it in `type` and reads it back.
float as_stored(float value, StoredType type) {
    switch (type) {
        case StoredType::float16:
            return core::half_to_float(core::float_to_half(value));
        case StoredType::bfloat16:
            return core::bfloat16_to_float(core::float_to_bfloat16(value));
        default:
            return value;  // float32, and float64 holds every float exactly
    }
}

// Graph nodes that use every tensor, so that the graph is valid: each
// weight is cast to float and is an output of the graph.
void use_as_outputs(OnnxBuilder& builder, const std::vector<std::string>& names) {
    for (const std::string& name : names) {
        onnx::NodeProto& cast = builder.node("Cast", {name}, {name + "_float"});
        testing::add_int_attribute(cast, "to", onnx::TensorProto::FLOAT);
        builder.output(name + "_float", {});
    }
}

// Weights as PyTorch exports a bfloat16 model (raw bytes) and as other
// exporters write float64 ones (typed double_data), in initializers and in
// Constant nodes, with small tensors that travel exactly.
fs::path write_mixed_type_model(const fs::path& path) {
    OnnxBuilder builder;
    builder.input("x", {-1, 40}).output("x_copy", {-1, 40});
    builder.node("Identity", {"x"}, {"x_copy"});
    builder.constant("c_bf16", {32, 40}, random_values(32 * 40, 0.1f, 11), Encoding::bfloat16_raw);
    builder.constant("c_f64", {24, 20}, random_values(24 * 20, 0.3f, 12), Encoding::double_list);
    builder.initializer("w_f32", {64, 40}, random_values(64 * 40, 0.05f, 13));
    builder.initializer("w_bf16", {64, 40}, random_values(64 * 40, 0.05f, 14),
                        Encoding::bfloat16_raw);
    builder.initializer("w_f64", {48, 40}, random_values(48 * 40, 0.02f, 15), Encoding::double_raw);
    builder.initializer("b_bf16", {64}, random_values(64, 0.1f, 16), Encoding::bfloat16_int32);
    builder.initializer("b_f64", {48}, random_values(48, 0.1f, 17), Encoding::double_raw);
    builder.initializer("w_f16", {16, 40}, random_values(16 * 40, 0.1f, 18), Encoding::half_raw);
    use_as_outputs(builder,
                   {"c_bf16", "c_f64", "w_f32", "w_bf16", "w_f64", "b_bf16", "b_f64", "w_f16"});
    spit(path, builder.bytes());
    return path;
}

PackOptions options_for(const std::string& ladder) {
    PackOptions options;
    options.ladder = LadderPlan::parse(ladder);
    options.ladder.per_channel = true;
    options.chunk_elements = 1000;  // chunks that straddle channels
    options.direct_bits = options.ladder.bits;
    options.threads = 2;
    return options;
}

// What a model file holds besides weight values: nodes, initializer names,
// order, types and dims.
std::string structure_of(const onnx::ModelProto& proto) {
    std::string text;
    for (const auto& node : proto.graph().node()) {
        text += node.op_type() + "(";
        for (const auto& input : node.input()) text += input + ",";
        text += ")->";
        for (const auto& output : node.output()) text += output + ",";
        for (const auto& attribute : node.attribute()) {
            text += " @" + attribute.name();
            if (attribute.has_t()) {
                text += ":" + std::to_string(attribute.t().data_type());
                for (const auto dim : attribute.t().dims()) text += "x" + std::to_string(dim);
            }
        }
        text += "\n";
    }
    for (const auto& initializer : proto.graph().initializer()) {
        text += "init " + initializer.name() + ":" + std::to_string(initializer.data_type());
        for (const auto dim : initializer.dims()) text += "x" + std::to_string(dim);
        text += "\n";
    }
    return text;
}

class WeightTypes : public ::testing::Test {
  protected:
    TemporaryDirectory directory_;
};

TEST_F(WeightTypes, EveryFloatTypeIsQuantizedAndRestoredInItsOwnType) {
    const fs::path model = write_mixed_type_model(directory_.path() / "mixed.onnx");
    const Model source = read_onnx_file(model);
    std::vector<std::string> names;
    std::vector<StoredType> types;
    for (const Tensor& tensor : source.weights) {
        names.push_back(tensor.name);
        types.push_back(tensor.stored_as);
    }
    // Constants first, in node order, then initializers in order.
    EXPECT_EQ(names, (std::vector<std::string>{"c_bf16", "c_f64", "w_f32", "w_bf16", "w_f64",
                                               "b_bf16", "b_f64", "w_f16"}));
    EXPECT_EQ(types, (std::vector<StoredType>{StoredType::bfloat16, StoredType::float64,
                                              StoredType::float32, StoredType::bfloat16,
                                              StoredType::float64, StoredType::bfloat16,
                                              StoredType::float64, StoredType::float16}));
    EXPECT_TRUE(summarize_topology(source).kept_tensors.empty());

    const fs::path package = directory_.path() / "package";
    const PackOptions options = options_for("4,8,16");
    const PackResult result = pack_model(model, options, package);
    EXPECT_TRUE(result.warnings.empty()) << result.warnings.front();
    EXPECT_TRUE(result.notes.empty()) << result.notes.front();
    ASSERT_EQ(result.manifest.tensors.size(), source.weights.size());
    for (std::size_t t = 0; t < source.weights.size(); ++t) {
        const TensorEntry& entry = result.manifest.tensors[t];
        EXPECT_EQ(entry.stored_as, source.weights[t].stored_as) << entry.name;
        EXPECT_EQ(entry.quantized, entry.name[0] != 'b') << entry.name;
    }
    // The manifest names the types and reads back.
    const Manifest manifest = read_manifest(package);
    for (std::size_t t = 0; t < source.weights.size(); ++t)
        EXPECT_EQ(manifest.tensors[t].stored_as, source.weights[t].stored_as);
    const VerifyReport report = verify_package(package);
    EXPECT_TRUE(report.problems.empty()) << report.problems.front();

    const onnx::ModelProto original = parse_proto(slurp(model));
    LadderPlan plan = options.ladder;
    for (std::size_t rung = 0; rung < plan.bits.size(); ++rung) {
        const int bits = plan.bits[rung];
        for (const bool external : {false, true}) {
            SCOPED_TRACE(std::to_string(bits) + " bits" + (external ? ", external data" : ""));
            const fs::path out = directory_.path() / (external ? "external.onnx" : "inline.onnx");
            EXPECT_EQ(unpack_package_to_file(package, bits, false, out, external), external);
            const onnx::ModelProto rebuilt = parse_proto(slurp(out));
            EXPECT_EQ(structure_of(rebuilt), structure_of(original));
            const Model read_back = read_onnx_file(out);
            ASSERT_EQ(read_back.weights.size(), source.weights.size());
            for (std::size_t t = 0; t < source.weights.size(); ++t) {
                const Tensor& tensor = source.weights[t];
                const Tensor& back = read_back.weights[t];
                EXPECT_EQ(back.stored_as, tensor.stored_as) << tensor.name;
                if (!result.manifest.tensors[t].quantized) {
                    // Exact: bit for bit in its own type.
                    EXPECT_EQ(back.values, tensor.values) << tensor.name;
                    continue;
                }
                // The rung's reconstruction, rounded to the tensor's type.
                std::vector<float> expected = reconstruct(quantize_ladder(tensor, plan)[rung]);
                float largest = 0, worst = 0;
                for (std::size_t i = 0; i < expected.size(); ++i) {
                    expected[i] = as_stored(expected[i], tensor.stored_as);
                    largest = std::max(largest, std::fabs(tensor.values[i]));
                    worst = std::max(worst, std::fabs(back.values[i] - tensor.values[i]));
                }
                EXPECT_EQ(back.values, expected) << tensor.name;
                // Within the rung's error: half a step of a 4-bit grid (7
                // levels a side), plus the type's own rounding.
                const float step = largest / float((1 << (plan.bits.front() - 1)) - 1) /
                                   float(1 << (bits - plan.bits.front()));
                EXPECT_LE(worst, 0.51f * step + largest / 128.0f) << tensor.name;
            }
        }
    }
    // float64 stores the double of the float reconstruction, bit for bit.
    const Model top = unpack_package(package, 16, false);
    const fs::path out = directory_.path() / "top.onnx";
    unpack_package_to_file(package, 16, true, out);
    const onnx::ModelProto rebuilt = parse_proto(slurp(out));
    const onnx::TensorProto& f64 = rebuilt.graph().initializer(2);
    ASSERT_EQ(f64.name(), "w_f64");
    ASSERT_EQ(f64.raw_data().size(), 48u * 40u * 8u);
    for (std::size_t i = 0; i < 48 * 40; ++i) {
        double stored;
        std::memcpy(&stored, f64.raw_data().data() + 8 * i, 8);
        ASSERT_EQ(stored, double(top.weights[4].values[i])) << i;
    }
    // A bfloat16 Constant stays a bfloat16 Constant.
    EXPECT_EQ(rebuilt.graph().node(1).attribute(0).t().data_type(), onnx::TensorProto::BFLOAT16);
    EXPECT_EQ(rebuilt.graph().node(1).attribute(0).t().raw_data().size(), 32u * 40u * 2u);
}

// A model with external data (the streaming reader's positioned reads for
// 2- and 8-byte elements) packs to the same package as the same model
// inline, and unpacks to the same values.
TEST_F(WeightTypes, ExternalDataPacksLikeInlineData) {
    const Model model = read_onnx_file(write_mixed_type_model(directory_.path() / "source.onnx"));
    const auto [inline_model, external_model] =
        testing::write_inline_and_external(model, directory_.path());
    // Every initializer's data is in the side file: 2 + 8 + 2 + 8 + 2 bytes
    // an element for the non-float32 ones.
    EXPECT_EQ(fs::file_size(external_data_path(external_model)),
              64u * 40 * 4 + 64 * 40 * 2 + 48 * 40 * 8 + 64 * 2 + 48 * 8 + 16 * 40 * 2);
    const OnnxWeightReader reader(external_model);
    EXPECT_TRUE(reader.has_external_data());
    for (std::size_t t = 0; t < model.weights.size(); ++t) {
        EXPECT_EQ(reader.read_values(t), model.weights[t].values) << model.weights[t].name;
    }
    const PackOptions options = options_for("4,8");
    pack_model(inline_model, options, directory_.path() / "p1");
    pack_model(external_model, options, directory_.path() / "p2");
    for (const RungEntry& rung : read_manifest(directory_.path() / "p1").rungs) {
        EXPECT_EQ(slurp(directory_.path() / "p1" / rung.data.file),
                  slurp(directory_.path() / "p2" / rung.data.file))
            << rung.data.file;
    }
    const fs::path unpacked = directory_.path() / "unpacked.onnx";
    unpack_package_to_file(directory_.path() / "p2", 8, false, unpacked, true);
    const Model expected =
        parse_onnx(serialize_onnx(unpack_package(directory_.path() / "p1", 8, false)), "expected");
    const Model read_back = read_onnx_file(unpacked);
    ASSERT_EQ(read_back.weights.size(), expected.weights.size());
    for (std::size_t t = 0; t < expected.weights.size(); ++t) {
        EXPECT_EQ(read_back.weights[t].stored_as, expected.weights[t].stored_as);
        EXPECT_EQ(read_back.weights[t].values, expected.weights[t].values);
    }
}

// A QDQ model as ONNX Runtime's static quantization writes it: int8
// weights and an int32 bias, each read by a DequantizeLinear, per-channel
// float scales and int8 zero points, and the input quantized on the fly.
fs::path write_qdq_model(const fs::path& path) {
    OnnxBuilder builder;
    builder.input("x", {-1, 64}).output("y", {-1, 16});
    auto& graph = *builder.proto().mutable_graph();
    const auto add_integer = [&](const std::string& name, std::vector<std::int64_t> dims, int type,
                                 std::size_t element_bytes, unsigned seed) {
        onnx::TensorProto& tensor = *graph.add_initializer();
        tensor.set_name(name);
        tensor.set_data_type(type);
        std::size_t count = 1;
        for (const auto dim : dims) {
            tensor.add_dims(dim);
            count *= std::size_t(dim);
        }
        std::string bytes(count * element_bytes, '\0');
        std::mt19937 random(seed);
        for (char& byte : bytes) byte = char(random());
        tensor.set_raw_data(bytes);
    };
    add_integer("W_quantized", {16, 64}, onnx::TensorProto::INT8, 1, 1);
    add_integer("W_zero_point", {16}, onnx::TensorProto::INT8, 1, 2);
    add_integer("b_quantized", {16}, onnx::TensorProto::INT32, 4, 3);
    builder.initializer("W_scale", {16}, random_values(16, 0.01f, 4));
    builder.initializer("b_scale", {16}, random_values(16, 0.001f, 5));
    builder.initializer("x_scale", {}, {0.02f});
    add_integer("x_zero_point", {}, onnx::TensorProto::UINT8, 1, 6);
    builder.node("QuantizeLinear", {"x", "x_scale", "x_zero_point"}, {"x_q"});
    builder.node("DequantizeLinear", {"x_q", "x_scale", "x_zero_point"}, {"x_dq"});
    testing::add_int_attribute(
        builder.node("DequantizeLinear", {"W_quantized", "W_scale", "W_zero_point"}, {"W"}), "axis",
        0);
    builder.node("DequantizeLinear", {"b_quantized", "b_scale"}, {"b"});
    testing::add_int_attribute(builder.node("Gemm", {"x_dq", "W", "b"}, {"y"}), "transB", 1);
    spit(path, builder.bytes());
    return path;
}

TEST_F(WeightTypes, QuantizedModelTravelsLosslesslyWithANote) {
    const fs::path model = write_qdq_model(directory_.path() / "qdq.onnx");
    const TopologySummary summary = summarize_topology(read_onnx_file(model));
    ASSERT_EQ(summary.kept_tensors.size(), 3u);
    for (const KeptTensor& kept : summary.kept_tensors)
        EXPECT_EQ(kept.kind, KeptTensor::Kind::quantized) << kept.name;
    EXPECT_EQ(summary.kept_tensors[0].name, "W_quantized");
    EXPECT_EQ(summary.kept_tensors[0].element_type, "INT8");
    EXPECT_EQ(summary.kept_tensors[0].bytes, 1024u);
    EXPECT_EQ(summary.kept_tensors[2].name, "b_quantized");  // int32, read by DequantizeLinear
    EXPECT_EQ(summary.kept_tensors[2].bytes, 64u);

    const fs::path package = directory_.path() / "package";
    const PackResult result = pack_model(model, options_for("4,8"), package);
    ASSERT_EQ(result.notes.size(), 1u);
    EXPECT_NE(result.notes[0].find("3 already-quantized tensors (INT32, INT8, 1104 bytes)"),
              std::string::npos)
        << result.notes[0];
    // The float scales travel exactly; nothing goes through the ladder.
    ASSERT_EQ(result.warnings.size(), 1u);
    EXPECT_NE(result.warnings[0].find("0.0 %"), std::string::npos) << result.warnings[0];
    for (const TensorEntry& tensor : result.manifest.tensors) EXPECT_FALSE(tensor.quantized);

    const onnx::ModelProto original = parse_proto(slurp(model));
    for (const int bits : {4, 8}) {
        for (const bool external : {false, true}) {
            SCOPED_TRACE(std::to_string(bits) + " bits" + (external ? ", external data" : ""));
            const fs::path out = directory_.path() / "out.onnx";
            unpack_package_to_file(package, bits, false, out, external);
            const onnx::ModelProto rebuilt = parse_proto(slurp(out));
            EXPECT_EQ(structure_of(rebuilt), structure_of(original));
            // Every tensor, quantized or float, comes back bit for bit.
            const Model read_back = read_onnx_file(out);
            const Model source = read_onnx_file(model);
            EXPECT_EQ(read_back.topology, source.topology);
            for (std::size_t t = 0; t < source.weights.size(); ++t)
                EXPECT_EQ(read_back.weights[t].values, source.weights[t].values);
        }
    }
    EXPECT_TRUE(verify_package(package).problems.empty());
}

// A QDQ export that keeps float weights (quantization-aware training):
// the weight goes through the ladder, and pack warns that the graph
// quantizes each rung's values again; at the top rung the model's integers
// are off by at most one step, for few weights.
TEST_F(WeightTypes, FloatWeightsTheGraphQuantizesAreNamed) {
    OnnxBuilder builder;
    builder.input("x", {-1, 64}).output("y", {-1, 16});
    const std::vector<float> weights = random_values(16 * 64, 0.1f, 3);
    float largest = 0;
    for (const float weight : weights) largest = std::max(largest, std::fabs(weight));
    const float scale = largest / 127;
    builder.initializer("W", {16, 64}, weights);
    builder.initializer("W_scale", {}, {scale});
    onnx::TensorProto& zero = *builder.proto().mutable_graph()->add_initializer();
    zero.set_name("W_zero_point");
    zero.set_data_type(onnx::TensorProto::INT8);
    zero.set_raw_data(std::string(1, '\0'));
    builder.node("QuantizeLinear", {"W", "W_scale", "W_zero_point"}, {"W_q"});
    builder.node("DequantizeLinear", {"W_q", "W_scale", "W_zero_point"}, {"W_dq"});
    testing::add_int_attribute(builder.node("Gemm", {"x", "W_dq"}, {"y"}), "transB", 1);
    const fs::path model = directory_.path() / "qat.onnx";
    spit(model, builder.bytes());

    const fs::path package = directory_.path() / "package";
    const PackResult result = pack_model(model, options_for("4,8,16"), package);
    bool named = false;
    for (const std::string& warning : result.warnings)
        named |= warning.find("1 float weight feeds QuantizeLinear") != std::string::npos &&
                 warning.find("'W'") != std::string::npos;
    EXPECT_TRUE(named);
    const Model top = unpack_package(package, 16, false);
    std::size_t moved = 0;
    for (std::size_t i = 0; i < weights.size(); ++i) {
        const float model_integer = std::nearbyint(weights[i] / scale);
        const float rung_integer = std::nearbyint(top.weights[0].values[i] / scale);
        EXPECT_LE(std::fabs(model_integer - rung_integer), 1.0f) << i;
        moved += model_integer != rung_integer;
    }
    EXPECT_LT(moved, weights.size() / 50);
}

// Element types the bundled ONNX does not know (int4 and float8 of later
// ONNX versions) survive in the topology as protobuf keeps them: an int4
// weight read by DequantizeLinear is noted as quantized, a float8 tensor
// is named in a warning.
TEST_F(WeightTypes, TypesOfNewerOnnxVersionsTravelUnchangedAndAreNamed) {
    OnnxBuilder builder;
    builder.input("x", {-1, 8}).output("y", {-1, 4});
    auto& graph = *builder.proto().mutable_graph();
    const auto add_unknown_type = [&](const std::string& name, std::uint64_t type,
                                      std::vector<std::int64_t> dims, std::size_t bytes) {
        onnx::TensorProto& tensor = *graph.add_initializer();
        tensor.set_name(name);
        for (const auto dim : dims) tensor.add_dims(dim);
        tensor.mutable_unknown_fields()->AddVarint(2, type);  // data_type
        tensor.set_raw_data(std::string(bytes, '\x35'));
    };
    add_unknown_type("W_int4", 22, {4, 8}, 16);
    add_unknown_type("table_float8", 17, {4, 8}, 32);
    builder.initializer("W_scale", {}, {0.1f});
    builder.node("DequantizeLinear", {"W_int4", "W_scale"}, {"W"});
    testing::add_int_attribute(builder.node("Gemm", {"x", "W"}, {"y"}), "transB", 1);
    const fs::path model = directory_.path() / "int4.onnx";
    spit(model, builder.bytes());

    const TopologySummary summary = summarize_topology(read_onnx_file(model));
    ASSERT_EQ(summary.kept_tensors.size(), 2u);
    EXPECT_EQ(summary.kept_tensors[0].kind, KeptTensor::Kind::quantized);
    EXPECT_EQ(summary.kept_tensors[0].element_type, "INT4");
    EXPECT_EQ(summary.kept_tensors[0].bytes, 16u);
    EXPECT_EQ(summary.kept_tensors[1].kind, KeptTensor::Kind::unsupported_type);

    const fs::path package = directory_.path() / "package";
    const PackResult result = pack_model(model, options_for("4,8"), package);
    ASSERT_EQ(result.notes.size(), 1u);
    EXPECT_NE(result.notes[0].find("INT4"), std::string::npos) << result.notes[0];
    bool named = false;
    for (const std::string& warning : result.warnings)
        named |= warning.find("'table_float8' (FLOAT8") != std::string::npos;
    EXPECT_TRUE(named);
    // Both come back bit for bit, their unknown element type included.
    const fs::path out = directory_.path() / "out.onnx";
    unpack_package_to_file(package, 8, false, out);
    const onnx::ModelProto original = parse_proto(slurp(model));
    const onnx::ModelProto rebuilt = parse_proto(slurp(out));
    ASSERT_EQ(rebuilt.graph().initializer_size(), 3);
    for (int i = 0; i < 2; ++i) {
        EXPECT_EQ(rebuilt.graph().initializer(i).SerializeAsString(),
                  original.graph().initializer(i).SerializeAsString());
    }
}

// float64 values float32 cannot hold are refused, naming the tensor,
// whichever encoding and reader meets them.
TEST_F(WeightTypes, Float64BeyondFloat32RangeIsRefusedNamingTheTensor) {
    for (const Encoding encoding : {Encoding::double_raw, Encoding::double_list}) {
        std::vector<float> values = random_values(16 * 20, 0.1f, 1);
        OnnxBuilder builder;
        builder.input("x", {-1, 20}).output("y", {-1, 16});
        builder.initializer("too_wide", {16, 20}, values, encoding);
        testing::add_int_attribute(builder.node("Gemm", {"x", "too_wide"}, {"y"}), "transB", 1);
        onnx::TensorProto& tensor = *builder.proto().mutable_graph()->mutable_initializer(0);
        if (encoding == Encoding::double_raw) {
            const double huge = 1e300;
            std::memcpy(tensor.mutable_raw_data()->data() + 8 * 5, &huge, 8);
        } else {
            tensor.set_double_data(5, -1e300);
        }
        const fs::path model = directory_.path() / "wide.onnx";
        spit(model, builder.bytes());
        for (const auto& read : std::vector<std::function<void()>>{
                 [&] { read_onnx_file(model); },
                 [&] { pack_model(model, options_for("4,8"), directory_.path() / "p"); }}) {
            try {
                read();
                ADD_FAILURE() << "accepted";
            } catch (const Error& error) {
                const std::string message = error.what();
                EXPECT_NE(message.find("'too_wide'"), std::string::npos) << message;
                EXPECT_NE(message.find("float64 value"), std::string::npos) << message;
                EXPECT_NE(message.find("e+300"), std::string::npos) << message;
            }
        }
    }
}

// Sparse tensors: a sparse initializer is refused naming it; a Constant's
// sparse_value stays in the topology and pack names it in a warning.
TEST_F(WeightTypes, SparseTensorsAreRefusedOrNamed) {
    const auto sparse_tensor = [](onnx::SparseTensorProto& sparse, const std::string& name) {
        sparse.add_dims(16);
        sparse.add_dims(16);
        onnx::TensorProto& values = *sparse.mutable_values();
        values.set_name(name);
        values.set_data_type(onnx::TensorProto::FLOAT);
        values.add_dims(3);
        for (const float value : {1.0f, -2.0f, 0.5f}) values.add_float_data(value);
        onnx::TensorProto& indices = *sparse.mutable_indices();
        indices.set_data_type(onnx::TensorProto::INT64);
        indices.add_dims(3);
        for (const std::int64_t index : {3, 100, 250}) indices.add_int64_data(index);
    };
    {
        OnnxBuilder builder;
        builder.input("x", {-1, 16}).output("y", {-1, 16});
        sparse_tensor(*builder.proto().mutable_graph()->add_sparse_initializer(), "S");
        builder.node("MatMul", {"x", "S"}, {"y"});
        const fs::path model = directory_.path() / "sparse.onnx";
        spit(model, builder.bytes());
        try {
            read_onnx_file(model);
            ADD_FAILURE() << "accepted";
        } catch (const Error& error) {
            EXPECT_NE(std::string(error.what()).find("sparse initializer 'S' is not supported"),
                      std::string::npos)
                << error.what();
        }
    }
    OnnxBuilder builder;
    builder.input("x", {-1, 16}).output("y", {-1, 16});
    onnx::NodeProto& constant = builder.node("Constant", {}, {"S"});
    onnx::AttributeProto& value = *constant.add_attribute();
    value.set_name("sparse_value");
    value.set_type(onnx::AttributeProto::SPARSE_TENSOR);
    sparse_tensor(*value.mutable_sparse_tensor(), "");
    builder.node("MatMul", {"x", "S"}, {"y"});
    const fs::path model = directory_.path() / "sparse-constant.onnx";
    spit(model, builder.bytes());
    const PackResult result = pack_model(model, options_for("4,8"), directory_.path() / "p");
    bool named = false;
    for (const std::string& warning : result.warnings)
        named |= warning.find("sparse Constant values") != std::string::npos &&
                 warning.find("'S' (FLOAT, 256 elements)") != std::string::npos;
    EXPECT_TRUE(named);
    const fs::path out = directory_.path() / "out.onnx";
    unpack_package_to_file(directory_.path() / "p", 8, false, out);
    EXPECT_EQ(parse_proto(slurp(out)).graph().node(0).SerializeAsString(),
              parse_proto(slurp(model)).graph().node(0).SerializeAsString());
}

// A reader that predates a weight type refuses its package clearly; this
// one refuses a type it does not know the same way.
TEST_F(WeightTypes, ManifestWithAnUnknownStoredTypeIsRefused) {
    const fs::path model = write_mixed_type_model(directory_.path() / "mixed.onnx");
    const fs::path package = directory_.path() / "package";
    pack_model(model, options_for("4,8"), package);
    std::string manifest = slurp(package / manifest_file_name);
    const std::string bfloat16 = "\"stored_as\":\"bfloat16\"";
    ASSERT_NE(manifest.find(bfloat16), std::string::npos);
    manifest.replace(manifest.find(bfloat16), bfloat16.size(), "\"stored_as\":\"float8e4m3\"");
    spit(package / manifest_file_name, manifest);
    try {
        read_manifest(package);
        ADD_FAILURE() << "accepted";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what())
                      .find("stored_as 'float8e4m3' is not float32, float16, "
                            "bfloat16 or float64"),
                  std::string::npos)
            << error.what();
    }
}

// ---- The exact rung (--ladder 4,8,exact): the source weights bit for bit.

// Float32, float16 and bfloat16 weights, in initializers and a Constant,
// each used by a Cast so that the graph is valid; and a float64 tensor
// "t_f64" of `float64_shape` when one is given.
fs::path write_model_of_every_exact_type(const fs::path& path,
                                         const std::vector<std::int64_t>& float64_shape = {}) {
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
    if (!float64_shape.empty()) {
        std::size_t elements = 1;
        for (const std::int64_t dim : float64_shape) elements *= std::size_t(dim);
        builder.initializer("t_f64", float64_shape, random_values(elements, 0.02f, 26),
                            Encoding::double_raw);
        names.push_back("t_f64");
    }
    use_as_outputs(builder, names);
    spit(path, builder.bytes());
    return path;
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
    const PackResult packed = pack_model(model, options_for("3,8,exact"), package);
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

// Quantized or travelling exactly (a bias), float64 weights reach the
// package as float32: no rung could give them back.
TEST(ExactRung, Float64WeightsAreRefusedByName) {
    for (const std::vector<std::int64_t>& shape :
         {std::vector<std::int64_t>{48, 40}, std::vector<std::int64_t>{64}}) {
        TemporaryDirectory directory;
        const fs::path model = write_model_of_every_exact_type(directory.path() / "m.onnx", shape);
        try {
            pack_model(model, options_for("4,8,exact"), directory.path() / "p");
            ADD_FAILURE() << "a float64 model packed with an exact rung";
        } catch (const Error& error) {
            EXPECT_NE(std::string(error.what()).find("'t_f64' is float64"), std::string::npos)
                << error.what();
        }
        EXPECT_FALSE(fs::exists(directory.path() / "p"));
        EXPECT_NO_THROW(pack_model(model, options_for("4,8"), directory.path() / "p"));
    }
}

TEST(ExactRung, AFetchEndsAtTheSourceWeightsOrWhereAsked) {
    TemporaryDirectory directory;
    const fs::path model = write_model_of_every_exact_type(directory.path() / "m.onnx");
    pack_model(model, options_for("4,8,exact"), directory.path() / "root" / "p");
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
    pack_model(model, options_for("4,8,exact"), directory.path() / "p");
    const std::string good = slurp(directory.path() / "p" / "manifest.json");
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
