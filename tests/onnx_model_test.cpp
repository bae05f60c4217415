#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>

#include "bitinc/error.hpp"
#include "bitinc/model.hpp"
#include "onnx_builder.hpp"
#include "test_support.hpp"

namespace bitinc {
namespace {

using testing::Encoding;
using testing::make_linear_model;
using testing::OnnxBuilder;

const std::vector<float> expected_weight = {0.5f,  -1.0f, 0.25f, 2.0f,  1.0f, 1.0f,
                                            -0.5f, 0.0f,  -2.0f, 0.75f, 1.5f, -0.25f};

class EveryEncoding : public ::testing::TestWithParam<Encoding> {};

TEST_P(EveryEncoding, WeightsComeOutOfTheGraphAndGoBackExactly) {
    const std::string original = make_linear_model(GetParam()).bytes();
    const Model model = parse_onnx(original, "linear.onnx");
    ASSERT_EQ(model.weights.size(), 2u);
    EXPECT_EQ(model.weights[0].name, "W");
    EXPECT_EQ(model.weights[0].shape, (std::vector<std::int64_t>{3, 4}));
    EXPECT_EQ(model.weights[0].values, expected_weight);
    EXPECT_EQ(model.weights[1].values, (std::vector<float>{0.125f, -0.5f, 1.0f}));
    EXPECT_EQ(model.weights[0].stored_as, testing::stored_type_of(GetParam()));
    EXPECT_EQ(model.parameter_count(), 15u);
    EXPECT_EQ(model.float32_bytes(), 60u);
    // The topology carries no weight data.
    EXPECT_LT(model.topology.size(), original.size());

    const std::string rebuilt = serialize_onnx(model);
    const Model again = parse_onnx(rebuilt, "rebuilt.onnx");
    EXPECT_EQ(again.topology, model.topology);
    ASSERT_EQ(again.weights.size(), model.weights.size());
    for (std::size_t i = 0; i < model.weights.size(); ++i) {
        EXPECT_EQ(again.weights[i].values, model.weights[i].values);
        EXPECT_EQ(again.weights[i].stored_as, model.weights[i].stored_as);
    }
    EXPECT_EQ(serialize_onnx(again), rebuilt) << "serialization is not deterministic";
}

INSTANTIATE_TEST_SUITE_P(Onnx, EveryEncoding, ::testing::ValuesIn(testing::every_encoding));

TEST(OnnxModel, NonFloatInitializersStayInTheTopology) {
    OnnxBuilder builder = make_linear_model();
    builder.int64_initializer("shape", {1, 3});
    builder.proto().mutable_graph()->mutable_node(0)->set_output(0, "gemm_out");
    builder.node("Reshape", {"gemm_out", "shape"}, {"y"});
    const Model model = parse_onnx(builder.bytes(), "reshape.onnx");
    EXPECT_EQ(model.weights.size(), 2u);
    EXPECT_NE(model.topology.find("shape"), std::string::npos);
    const Model again = parse_onnx(serialize_onnx(model), "again.onnx");
    EXPECT_EQ(again.topology, model.topology);
}

TEST(OnnxModel, SpecialValuesSurvive) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float denormal = std::numeric_limits<float>::denorm_min();
    OnnxBuilder builder;
    builder.input("x", {1, 4}).output("y", {1, 4});
    builder.initializer("w", {4}, {nan, denormal, -0.0f, std::numeric_limits<float>::infinity()});
    builder.node("Add", {"x", "w"}, {"y"});
    const Model model = parse_onnx(builder.bytes(), "special.onnx");
    const Model again = parse_onnx(serialize_onnx(model), "again.onnx");
    EXPECT_TRUE(std::isnan(again.weights[0].values[0]));
    EXPECT_EQ(again.weights[0].values[1], denormal);
    EXPECT_TRUE(std::signbit(again.weights[0].values[2]));
    EXPECT_TRUE(std::isinf(again.weights[0].values[3]));
}

TEST(OnnxModel, MetadataIsRead) {
    OnnxBuilder builder = make_linear_model();
    builder.metadata("bitinc.model", "linear").metadata("author", "tests");
    const Model model = parse_onnx(builder.bytes(), "meta.onnx");
    EXPECT_EQ(model.metadata.at("bitinc.model"), "linear");
    EXPECT_EQ(model.metadata.at("author"), "tests");
}

TEST(OnnxModel, SummaryDescribesTheGraph) {
    const Model model = parse_onnx(make_linear_model().bytes(), "linear.onnx");
    const TopologySummary summary = summarize_topology(model);
    EXPECT_EQ(summary.opset, 13);
    ASSERT_EQ(summary.inputs.size(), 1u);
    EXPECT_EQ(summary.inputs[0].name, "x");
    EXPECT_EQ(summary.inputs[0].dims, (std::vector<std::int64_t>{-1, 4}));
    EXPECT_EQ(summary.inputs[0].symbolic[0], "batch");
    EXPECT_EQ(summary.inputs[0].element_type, "FLOAT");
    EXPECT_EQ(summary.outputs[0].name, "y");
    EXPECT_EQ(summary.node_count, 1u);
    EXPECT_EQ(summary.op_counts.at("Gemm"), 1u);
}

void expect_error_mentioning(const std::string& bytes, const std::string& fragment) {
    try {
        parse_onnx(bytes, "bad.onnx");
        FAIL() << "no error; expected one mentioning '" << fragment << "'";
    } catch (const Error& error) {
        const std::string message = error.what();
        EXPECT_NE(message.find("bad.onnx"), std::string::npos) << message;
        EXPECT_NE(message.find(fragment), std::string::npos) << message;
        EXPECT_EQ(message.find('\n'), std::string::npos) << "not one line: " << message;
    }
}

TEST(OnnxModel, EveryTruncationIsAnError) {
    const std::string bytes = make_linear_model().bytes();
    for (std::size_t length = 0; length < bytes.size(); ++length) {
        EXPECT_THROW(parse_onnx(bytes.substr(0, length), "cut.onnx"), Error) << "cut at " << length;
    }
}

TEST(OnnxModel, TextIsNotAModel) {
    expect_error_mentioning("this is a text file, not a model\n", "not an ONNX model");
    expect_error_mentioning("", "not an ONNX model");
}

TEST(OnnxModel, ExternalDataIsRefused) {
    OnnxBuilder builder = make_linear_model();
    auto* weight = builder.proto().mutable_graph()->mutable_initializer(0);
    weight->clear_raw_data();
    weight->set_data_location(onnx::TensorProto::EXTERNAL);
    auto* location = weight->add_external_data();
    location->set_key("location");
    location->set_value("weights.bin");
    expect_error_mentioning(builder.bytes(), "external file");
}

TEST(OnnxModel, WrongValueCountIsAnError) {
    OnnxBuilder builder = make_linear_model();
    builder.proto().mutable_graph()->mutable_initializer(0)->mutable_raw_data()->resize(8);
    expect_error_mentioning(builder.bytes(), "holds 2 values");
}

TEST(OnnxModel, ImpossibleShapesAreRefusedBeforeAllocating) {
    OnnxBuilder builder = make_linear_model();
    auto* weight = builder.proto().mutable_graph()->mutable_initializer(0);
    weight->set_dims(0, std::int64_t{1} << 40);
    weight->set_dims(1, std::int64_t{1} << 40);
    expect_error_mentioning(builder.bytes(), "impossible shape");
    weight->set_dims(0, -3);
    expect_error_mentioning(builder.bytes(), "impossible shape");
}

TEST(OnnxModel, HalfTensorWithAHugeShapeButNoDataIsRefusedBeforeAllocating) {
    OnnxBuilder builder = make_linear_model(Encoding::half_raw);
    auto* weight = builder.proto().mutable_graph()->mutable_initializer(0);
    weight->clear_raw_data();
    weight->set_dims(0, std::int64_t{1} << 28);  // 2^30 values: 4 GiB as float
    expect_error_mentioning(builder.bytes(), "holds 0 values");
}

TEST(OnnxModel, EmptyTensorsRoundTrip) {
    OnnxBuilder builder = make_linear_model();
    builder.initializer("nothing", {0, 4}, {});
    const Model model = parse_onnx(builder.bytes(), "empty.onnx");
    ASSERT_EQ(model.weights.size(), 3u);
    EXPECT_EQ(model.weights[2].element_count(), 0u);
    EXPECT_EQ(parse_onnx(serialize_onnx(model), "again").weights[2].shape,
              (std::vector<std::int64_t>{0, 4}));
}

TEST(OnnxModel, DanglingReferencesAreAnError) {
    OnnxBuilder builder = make_linear_model();
    builder.proto().mutable_graph()->mutable_node(0)->set_input(1, "missing");
    expect_error_mentioning(builder.bytes(), "which nothing defines");
}

TEST(OnnxModel, AnEmptyGraphIsNotAModel) {
    OnnxBuilder builder;
    expect_error_mentioning(builder.bytes(), "no graph nodes");
}

TEST(OnnxModel, FileRoundTripIsAtomicAndExact) {
    const testing::TemporaryDirectory directory;
    const auto path = directory.path() / "linear.onnx";
    const Model model = parse_onnx(make_linear_model().bytes(), "linear.onnx");
    write_onnx_file(model, path);
    const Model again = read_onnx_file(path);
    EXPECT_EQ(again.weights[0].values, model.weights[0].values);
    EXPECT_EQ(again.topology, model.topology);
}

TEST(OnnxModel, FilesOverTwoGibibytesAreRefused) {
    const testing::TemporaryDirectory directory;
    const auto path = directory.path() / "huge.onnx";
    std::ofstream(path).put('x');
    std::filesystem::resize_file(path, max_onnx_bytes + 1);  // sparse: no disk used
    try {
        read_onnx_file(path);
        FAIL() << "no error";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("huge.onnx"), std::string::npos) << error.what();
    }
}

TEST(OnnxModel, SerializeRefusesMismatchedWeights) {
    Model model = parse_onnx(make_linear_model().bytes(), "linear.onnx");
    model.weights[0].values.pop_back();
    EXPECT_THROW(serialize_onnx(model), Error);
    model = parse_onnx(make_linear_model().bytes(), "linear.onnx");
    model.weights[1].name = "renamed";
    EXPECT_THROW(serialize_onnx(model), Error);
}

}  // namespace
}  // namespace bitinc
