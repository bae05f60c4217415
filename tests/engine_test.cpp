#include <gtest/gtest.h>

#include "bitinc/engine.hpp"
#include "bitinc/error.hpp"
#include "onnx_builder.hpp"

namespace bitinc {
namespace {

using testing::add_float_attribute;
using testing::add_int_attribute;
using testing::make_linear_model;
using testing::OnnxBuilder;

// y = x W^T + b for the weights of make_linear_model.
std::vector<float> linear_reference(const std::vector<float>& x) {
    const float w[3][4] = {
        {0.5f, -1.0f, 0.25f, 2.0f}, {1.0f, 1.0f, -0.5f, 0.0f}, {-2.0f, 0.75f, 1.5f, -0.25f}};
    const float b[3] = {0.125f, -0.5f, 1.0f};
    std::vector<float> y;
    for (std::size_t n = 0; n < x.size() / 4; ++n) {
        for (int o = 0; o < 3; ++o) {
            float sum = b[o];
            for (int i = 0; i < 4; ++i) sum += x[n * 4 + std::size_t(i)] * w[o][i];
            y.push_back(sum);
        }
    }
    return y;
}

TEST(OpenCvEngine, ComputesTheModel) {
    const Model model = parse_onnx(make_linear_model().bytes(), "linear.onnx");
    const auto engine = create_opencv_engine(model, "linear.onnx", {.threads = 1});
    const FloatArray batch{{2, 4}, {1, 2, 3, 4, -1, 0.5f, 0, 2}};
    const FloatArray output = engine->run(batch);
    EXPECT_EQ(output.shape, (std::vector<std::int64_t>{2, 3}));
    const auto expected = linear_reference(batch.values);
    ASSERT_EQ(output.values.size(), expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i)
        EXPECT_NEAR(output.values[i], expected[i], 1e-5);
}

// float16, bfloat16 and float64 weights are widened for the engine.
TEST(OpenCvEngine, WeightsOfEveryFloatTypeRunAsFloat) {
    for (const testing::Encoding encoding :
         {testing::Encoding::half_raw, testing::Encoding::bfloat16_raw,
          testing::Encoding::bfloat16_int32, testing::Encoding::double_raw,
          testing::Encoding::double_list}) {
        const Model model = parse_onnx(make_linear_model(encoding).bytes(), "narrow.onnx");
        EXPECT_EQ(model.weights[0].stored_as, testing::stored_type_of(encoding));
        Model widened = model;
        EXPECT_EQ(apply_engine_fixups(widened).weights_widened, 2u);
        EXPECT_EQ(widened.weights[0].stored_as, StoredType::float32);
        EXPECT_EQ(widened.weights[0].values, model.weights[0].values);
        const auto engine = create_opencv_engine(model, "narrow.onnx");
        const FloatArray output = engine->run({{1, 4}, {1, 2, 3, 4}});
        const auto expected = linear_reference({1, 2, 3, 4});
        for (std::size_t i = 0; i < expected.size(); ++i)
            EXPECT_NEAR(output.values[i], expected[i], 1e-5);
    }
}

// Weights held in a Constant node (as some exporters write them) run too,
// from the parsed model and after a round trip through the topology.
TEST(OpenCvEngine, RunsConstantNodeWeights) {
    OnnxBuilder builder;
    builder.input("x", {-1, 4}).output("y", {-1, 3});
    builder.constant("W", {3, 4}, {0.5f, -1, 0.25f, 2, 1, 1, -0.5f, 0, -2, 0.75f, 1.5f, -0.25f});
    builder.initializer("b", {3}, {0.125f, -0.5f, 1.0f});
    add_int_attribute(builder.node("Gemm", {"x", "W", "b"}, {"y"}), "transB", 1);
    const Model model = parse_onnx(builder.bytes(), "constant.onnx");
    ASSERT_EQ(model.weights.size(), 2u);
    for (const Model& candidate : {model, parse_onnx(serialize_onnx(model), "again.onnx")}) {
        const auto engine = create_opencv_engine(candidate, "constant.onnx", {.threads = 1});
        const FloatArray output = engine->run({{1, 4}, {1, 2, 3, 4}});
        const auto expected = linear_reference({1, 2, 3, 4});
        ASSERT_EQ(output.values.size(), expected.size());
        for (std::size_t i = 0; i < expected.size(); ++i)
            EXPECT_NEAR(output.values[i], expected[i], 1e-5);
    }
}

TEST(OpenCvEngine, UnsupportedOperatorIsAOneLineError) {
    OnnxBuilder builder;
    builder.input("x", {1, 4}).output("y", {1, 4});
    builder.node("NoSuchOperator", {"x"}, {"y"});
    const Model model = parse_onnx(builder.bytes(), "odd.onnx");
    try {
        create_opencv_engine(model, "odd.onnx");
        FAIL() << "no error";
    } catch (const Error& error) {
        const std::string message = error.what();
        EXPECT_EQ(message.rfind("odd.onnx: the engine cannot", 0), 0u) << message;
        EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    }
}

TEST(OpenCvEngine, WrongInputShapeIsAnError) {
    const Model model = parse_onnx(make_linear_model().bytes(), "linear.onnx");
    const auto engine = create_opencv_engine(model, "linear.onnx");
    EXPECT_THROW(engine->run({{1, 5}, {1, 2, 3, 4, 5}}), Error);
    EXPECT_THROW(engine->run({{1, 4}, {1, 2, 3}}), Error);  // shape and data disagree
}

TEST(EngineFixups, IdentityNodesAreFolded) {
    // PyTorch inserts Identity between a shared weight and its users.
    OnnxBuilder builder = make_linear_model();
    builder.node("Identity", {"W"}, {"W_alias"});
    builder.node("Identity", {"W_alias"}, {"W_alias2"});
    auto& graph = *builder.proto().mutable_graph();
    // Out of topological order on purpose: Identity 2, Identity 1, then Gemm.
    graph.mutable_node()->SwapElements(0, 2);
    graph.mutable_node(2)->set_input(1, "W_alias2");
    Model model = parse_onnx(builder.bytes(), "identity.onnx");
    const FixupReport report = apply_engine_fixups(model);
    EXPECT_EQ(report.identity_nodes_folded, 2u);
    const TopologySummary summary = summarize_topology(model);
    EXPECT_EQ(summary.op_counts.count("Identity"), 0u);
    const auto engine = create_opencv_engine(model, "identity.onnx");
    const FloatArray output = engine->run({{1, 4}, {1, 2, 3, 4}});
    const auto expected = linear_reference({1, 2, 3, 4});
    for (std::size_t i = 0; i < expected.size(); ++i)
        EXPECT_NEAR(output.values[i], expected[i], 1e-5);
}

TEST(EngineFixups, IdentityProducingAGraphOutputStays) {
    OnnxBuilder builder = make_linear_model();
    builder.proto().mutable_graph()->mutable_node(0)->set_output(0, "gemm");
    builder.node("Identity", {"gemm"}, {"y"});
    Model model = parse_onnx(builder.bytes(), "out.onnx");
    EXPECT_EQ(apply_engine_fixups(model).identity_nodes_folded, 0u);
}

// kernel_shape is optional in ONNX (the weights imply it); OpenCV 4.6
// refuses a Conv without it, so the fix-ups add it.
TEST(EngineFixups, ConvWithoutKernelShapeRuns) {
    OnnxBuilder builder;
    builder.input("x", {1, 1, 4, 4}).output("y", {1, 1, 2, 2});
    builder.initializer("W", {1, 1, 3, 3}, std::vector<float>(9, 1.0f));
    builder.node("Conv", {"x", "W"}, {"y"}).set_name("conv0");
    Model model = parse_onnx(builder.bytes(), "conv.onnx");
    EXPECT_EQ(apply_engine_fixups(model).kernel_shapes_added, 1u);
    EXPECT_EQ(apply_engine_fixups(model).kernel_shapes_added, 0u) << "not idempotent";
    const auto engine = create_opencv_engine(parse_onnx(builder.bytes(), "conv.onnx"), "conv.onnx");
    std::vector<float> input(16);
    for (std::size_t i = 0; i < input.size(); ++i) input[i] = float(i);
    const FloatArray output = engine->run({{1, 1, 4, 4}, input});
    EXPECT_EQ(output.values, (std::vector<float>{45, 54, 81, 90}));  // 3x3 window sums
}

// Clip(x, min, max) of opset 13 with the bounds as an initializer and as a
// Constant node, the two forms PyTorch exports produce.
Model make_clip_model() {
    OnnxBuilder builder;
    builder.input("x", {-1, 4}).output("y", {-1, 4});
    builder.initializer("low", {}, {0.0f});
    auto& constant = builder.node("Constant", {}, {"high"});
    auto* value = constant.add_attribute();
    value->set_name("value");
    value->set_type(onnx::AttributeProto::TENSOR);
    value->mutable_t()->set_data_type(onnx::TensorProto::FLOAT);
    value->mutable_t()->add_float_data(6.0f);
    builder.node("Clip", {"x", "low", "high"}, {"y"});
    return parse_onnx(builder.bytes(), "clip.onnx");
}

TEST(EngineFixups, ClipWithConstantInputsBecomesAttributes) {
    Model model = make_clip_model();
    EXPECT_EQ(apply_engine_fixups(model).clip_nodes_rewritten, 1u);
    EXPECT_EQ(apply_engine_fixups(model).clip_nodes_rewritten, 0u) << "not idempotent";
    const auto engine = create_opencv_engine(model, "clip.onnx");
    const FloatArray output = engine->run({{1, 4}, {-3.0f, 2.5f, 6.0f, 9.0f}});
    EXPECT_EQ(output.values, (std::vector<float>{0.0f, 2.5f, 6.0f, 6.0f}));
}

TEST(EngineFixups, ClipWithOneBoundOmitted) {
    OnnxBuilder builder;
    builder.input("x", {1, 3}).output("y", {1, 3});
    builder.initializer("high", {}, {1.0f});
    builder.node("Clip", {"x", "", "high"}, {"y"});
    Model model = parse_onnx(builder.bytes(), "clip-max.onnx");
    EXPECT_EQ(apply_engine_fixups(model).clip_nodes_rewritten, 1u);
    const auto engine = create_opencv_engine(model, "clip-max.onnx");
    EXPECT_EQ(engine->run({{1, 3}, {-5.0f, 0.5f, 2.0f}}).values,
              (std::vector<float>{-5.0f, 0.5f, 1.0f}));
}

TEST(EngineFixups, ClipWithComputedBoundsIsLeftAlone) {
    OnnxBuilder builder;
    builder.input("x", {1, 3}).input("bound", {}).output("y", {1, 3});
    builder.node("Clip", {"x", "", "bound"}, {"y"});
    Model model = parse_onnx(builder.bytes(), "clip-dynamic.onnx");
    EXPECT_EQ(apply_engine_fixups(model).clip_nodes_rewritten, 0u);
}

TEST(InputSpec, ReadFromMetadata) {
    OnnxBuilder builder = make_linear_model();
    builder.metadata("bitinc.input.shape", "1,32,32")
        .metadata("bitinc.input.scale", "0.5")
        .metadata("bitinc.input.mean", "0.25")
        .metadata("bitinc.input.std", "2")
        .metadata("bitinc.dataset", "fashion-mnist")
        .metadata("bitinc.classes", "10");
    const InputSpec spec = read_input_spec(parse_onnx(builder.bytes(), "m.onnx"), "m.onnx");
    EXPECT_TRUE(spec.from_metadata);
    EXPECT_EQ(spec.input_name, "x");
    EXPECT_EQ(spec.channels, 1);
    EXPECT_EQ(spec.height, 32);
    EXPECT_EQ(spec.scale, 0.5f);
    EXPECT_EQ(spec.mean, std::vector<float>{0.25f});
    EXPECT_EQ(spec.std, std::vector<float>{2.0f});
    EXPECT_EQ(spec.dataset, "fashion-mnist");
    EXPECT_EQ(spec.classes, 10);
}

TEST(InputSpec, MalformedMetadataIsAnError) {
    for (const auto& [key, value] :
         std::vector<std::pair<std::string, std::string>>{{"bitinc.input.shape", "1,28"},
                                                          {"bitinc.input.shape", "1,x,28"},
                                                          {"bitinc.input.std", "0"},
                                                          {"bitinc.input.mean", "0.1,0.2"},
                                                          {"bitinc.input.layout", "NHWC"}}) {
        OnnxBuilder builder = make_linear_model();
        builder.metadata("bitinc.input.shape", "1,28,28");
        if (key == "bitinc.input.shape") builder.proto().mutable_metadata_props()->Clear();
        builder.metadata(key, value);
        EXPECT_THROW(read_input_spec(parse_onnx(builder.bytes(), "m.onnx"), "m.onnx"), Error)
            << key << "=" << value;
    }
}

}  // namespace
}  // namespace bitinc
