// Every model of Debian's libonnx-testdata (ONNX's own backend test models:
// one or more per operator, plus converted PyTorch models and a few simple
// graphs) through the package pipeline, as issue 13 asks of real-world
// shapes: each one is summarized (inspect), packs, verifies and unpacks to
// the model it came from, or is refused with a one-line bitinc::Error —
// never a crash, and no foreign exception.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include "bitinc/error.hpp"
#include "bitinc/model.hpp"
#include "bitinc/package.hpp"
#include "test_support.hpp"

namespace bitinc {
namespace {

namespace fs = std::filesystem;

const fs::path testdata = "/usr/share/libonnx-testdata/data";

std::vector<fs::path> testdata_models() {
    std::vector<fs::path> models;
    std::error_code error;
    for (auto it = fs::recursive_directory_iterator(testdata, error);
         !error && it != fs::recursive_directory_iterator(); it.increment(error)) {
        if (it->path().filename() == "model.onnx") models.push_back(it->path());
    }
    std::sort(models.begin(), models.end());
    return models;
}

// Packs `model` with `options`, verifies the package, and returns the model
// unpacked at the top rung through the ladder.
Model pack_verify_unpack(const fs::path& model, PackOptions options, const fs::path& package) {
    options.threads = 1;
    options.replace = true;
    pack_model(model, options, package);
    const VerifyReport report = verify_package(package);
    if (!report.problems.empty())
        throw Error("verify: " + report.problems.front());  // reported as a failure below
    return unpack_package(package, options.ladder.top_bits(), false);
}

TEST(OnnxTestdata, EveryModelRoundTripsOrIsRefusedClearly) {
    if (!fs::is_directory(testdata)) {
        GTEST_SKIP() << "libonnx-testdata is not installed (scripts/install-deps.sh installs it)";
    }
    const std::vector<fs::path> models = testdata_models();
    ASSERT_GT(models.size(), 100u) << "too few models under " << testdata;
    testing::TemporaryDirectory directory;
    std::size_t exact = 0, quantized = 0, refused = 0;
    for (const fs::path& path : models) {
        const std::string name = fs::relative(path.parent_path(), testdata).string();
        try {
            const Model original = read_onnx_file(path);
            summarize_topology(original);
            // Every tensor exact: the unpacked model is the original.
            PackOptions exact_options;
            exact_options.ladder = LadderPlan::parse("8,16");
            exact_options.ladder.min_quantized_elements = std::size_t{1} << 31;
            const Model unpacked = pack_verify_unpack(path, exact_options, directory.path() / "x");
            EXPECT_EQ(serialize_onnx(unpacked), serialize_onnx(original)) << name;
            ++exact;
            // With quantization (every float tensor of 2 or more elements):
            // the same graph, tensors and types back.
            PackOptions quantized_options;
            quantized_options.ladder = LadderPlan::parse("4,8");
            quantized_options.ladder.min_quantized_elements = 2;
            const Model rounded =
                pack_verify_unpack(path, quantized_options, directory.path() / "q");
            ASSERT_EQ(rounded.weights.size(), original.weights.size()) << name;
            for (std::size_t t = 0; t < original.weights.size(); ++t) {
                EXPECT_EQ(rounded.weights[t].name, original.weights[t].name) << name;
                EXPECT_EQ(rounded.weights[t].shape, original.weights[t].shape) << name;
                EXPECT_EQ(rounded.weights[t].stored_as, original.weights[t].stored_as) << name;
            }
            ++quantized;
        } catch (const Error& error) {
            const std::string message = error.what();
            EXPECT_FALSE(message.empty()) << name;
            EXPECT_EQ(message.find('\n'), std::string::npos) << name << ": " << message;
            EXPECT_EQ(message.find("verify: "), std::string::npos) << name << ": " << message;
            if (refused < 3) std::printf("refused %s: %s\n", name.c_str(), message.c_str());
            ++refused;
        } catch (const std::exception& error) {
            ADD_FAILURE() << name << ": a foreign exception left the library: " << error.what();
        }
    }
    std::printf(
        "libonnx-testdata: %zu models, %zu round-tripped exactly (%zu also with every float tensor "
        "quantized), "
        "%zu refused with a message\n",
        models.size(), exact, quantized, refused);
    // Refusals are for models bitinc cannot read (they say why); nearly all
    // of ONNX's own test models must go through.
    EXPECT_GT(exact * 10, models.size() * 9);
}

}  // namespace
}  // namespace bitinc
