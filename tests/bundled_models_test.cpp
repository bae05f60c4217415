// The models under models/: exact ONNX round trip, identical engine outputs,
// and the accuracy the docs claim.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cstdlib>
#include <cstring>

#include "bitinc/accuracy.hpp"
#include "bitinc/model.hpp"
#include "core/file_io.hpp"
#include "test_support.hpp"

namespace bitinc {
namespace {

std::filesystem::path model_path(const std::string& name) {
    return testing::source_dir() / "models" / (name + ".onnx");
}

const ImageSet& test_images() {
    static const ImageSet images = load_fashion_mnist(default_fashion_mnist_dir, Split::test);
    return images;
}

class BundledModel : public ::testing::TestWithParam<std::string> {
  protected:
    void SetUp() override {
        path_ = model_path(GetParam());
        // Only small-cnn is committed; the others exist after `make models`.
        if (GetParam() != "small-cnn" && !std::filesystem::exists(path_)) {
            GTEST_SKIP() << path_ << " not built (make models)";
        }
    }
    std::filesystem::path path_;
};

TEST_P(BundledModel, RoundTripKeepsEveryTensorByte) {
    const std::string original = core::read_file(path_, max_onnx_bytes);
    const Model model = parse_onnx(original, path_.string());
    const std::string rebuilt = serialize_onnx(model);

    onnx::ModelProto before;
    onnx::ModelProto after;
    ASSERT_TRUE(before.ParseFromString(original));
    ASSERT_TRUE(after.ParseFromString(rebuilt));
    ASSERT_EQ(before.graph().initializer_size(), after.graph().initializer_size());
    std::size_t float_tensors = 0;
    for (int i = 0; i < before.graph().initializer_size(); ++i) {
        const auto& a = before.graph().initializer(i);
        const auto& b = after.graph().initializer(i);
        EXPECT_EQ(a.name(), b.name());
        EXPECT_EQ(a.data_type(), b.data_type());
        if (a.data_type() == onnx::TensorProto::FLOAT) {
            ++float_tensors;
            // Exporters write raw_data; compare bytes either way.
            const std::string bytes_a =
                a.raw_data().empty()
                    ? std::string(reinterpret_cast<const char*>(a.float_data().data()),
                                  std::size_t(a.float_data_size()) * 4)
                    : a.raw_data();
            EXPECT_EQ(bytes_a, b.raw_data()) << a.name();
        } else {
            EXPECT_EQ(a.SerializeAsString(), b.SerializeAsString()) << a.name();
        }
    }
    // Any other weights are Constant nodes' values: the graph comparison
    // below covers their bytes.
    EXPECT_EQ(float_tensors + summarize_topology(model).constant_weight_tensors,
              model.weights.size());
    // The graph apart from the weights is unchanged.
    before.mutable_graph()->clear_initializer();
    after.mutable_graph()->clear_initializer();
    EXPECT_EQ(before.SerializeAsString(), after.SerializeAsString());
    EXPECT_EQ(parse_onnx(rebuilt, "rebuilt").topology, model.topology);
}

TEST_P(BundledModel, RoundTripGivesIdenticalEngineOutputs) {
    const Model model = read_onnx_file(path_);
    const Model again = parse_onnx(serialize_onnx(model), "rebuilt");
    const InputSpec spec = read_input_spec(model, path_.string());
    const FloatArray batch = make_input_batch(spec, test_images(), 0, 8);
    const auto first = create_opencv_engine(model, path_.string())->run(batch);
    const auto second = create_opencv_engine(again, "rebuilt")->run(batch);
    ASSERT_EQ(first.shape, (std::vector<std::int64_t>{8, 10}));
    EXPECT_EQ(first.shape, second.shape);
    ASSERT_EQ(first.values.size(), second.values.size());
    EXPECT_EQ(std::memcmp(first.values.data(), second.values.data(), first.values.size() * 4), 0);
}

TEST_P(BundledModel, AccuracyMatchesPyTorch) {
    const Model model = read_onnx_file(path_);
    const InputSpec spec = read_input_spec(model, path_.string());
    ASSERT_TRUE(spec.from_metadata);
    check_model_fits_images(spec, test_images(), "fashion-mnist", 10, path_.string());
    const auto found = model.metadata.find("bitinc.pytorch_accuracy");
    ASSERT_NE(found, model.metadata.end()) << "export records PyTorch's accuracy";
    const double pytorch = std::strtod(found->second.c_str(), nullptr);
    // The full test set for the small model; the big ones are checked by
    // docs/models.md's table (bitinc accuracy), too slow for every test run.
    if (GetParam() != "small-cnn") GTEST_SKIP() << "full-set accuracy is measured by make models";
    const auto engine = create_opencv_engine(model, path_.string());
    const AccuracyResult result = measure_accuracy(*engine, spec, test_images());
    EXPECT_EQ(result.images, 10000u);
    EXPECT_GE(result.top1_percent(), 90.0);
    EXPECT_NEAR(result.top1_percent(), pytorch, 0.05) << "engine and PyTorch disagree";
}

INSTANTIATE_TEST_SUITE_P(Models, BundledModel,
                         ::testing::Values("small-cnn", "mobilenetv2", "resnet18", "vgg16"),
                         [](const auto& info) {
                             std::string name = info.param;
                             name.erase(std::remove(name.begin(), name.end(), '-'), name.end());
                             return name;
                         });

TEST(BundledModels, SmallCnnIsSmall) {
    EXPECT_LE(std::filesystem::file_size(model_path("small-cnn")), 2u * 1024 * 1024);
}

}  // namespace
}  // namespace bitinc
