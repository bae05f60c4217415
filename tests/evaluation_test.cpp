// The 3GPP evaluation: a short run end to end, the CSV schema, and the
// equality of base + update with the direct rung.
#include <gtest/gtest.h>

#include <bitinc/bitinc.hpp>
#include <fstream>
#include <sstream>

#include "test_support.hpp"

namespace bitinc {
namespace {

using testing::slurp;

namespace fs = std::filesystem;

std::vector<std::string> split_line(const std::string& line) {
    std::vector<std::string> fields;
    std::stringstream stream(line);
    std::string field;
    while (std::getline(stream, field, ',')) fields.push_back(field);
    return fields;
}

// A scenario that scores a model by a checksum of its weights: fast, and
// equal exactly when the weights are equal — enough to test the plumbing.
class ChecksumScenario : public Scenario {
  public:
    std::string name() const override { return "checksum"; }
    std::string dataset_name() const override { return "none"; }
    std::string metric_name() const override { return "weight_sum"; }
    const ImageSet& stream_images() override { return images_; }
    Performance performance(const Model& model, std::string_view) override {
        double sum = 0;
        for (const Tensor& tensor : model.weights) {
            for (const float value : tensor.values) sum += double(value);
        }
        return {sum, 0.0};
    }

  private:
    ImageSet images_;
};

class Evaluation : public ::testing::Test {
  protected:
    EvaluationOptions short_options() {
        EvaluationOptions options;
        options.ladder = LadderPlan::parse("4,8,16");
        options.rates_bits_per_second = {100e6};
        options.rtt_seconds = 0.005;
        options.frames_per_second = 50;
        options.tail_seconds = 0.2;
        options.tag = "test";
        options.sweep = {{3, false}, {6, true}};
        options.work_directory = directory_.path() / "work";
        return options;
    }
    testing::TemporaryDirectory directory_;
};

TEST_F(Evaluation, ShortRunWritesTheStudysColumnsAndAgrees) {
    if (!testing::fashion_mnist_available())
        GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    const auto scenario = make_fashion_mnist_scenario(default_fashion_mnist_dir, 300, 1);
    const EvaluationResult result = run_evaluation(
        testing::source_dir() / "models" / "small-cnn.onnx", *scenario, short_options());

    EXPECT_TRUE(result.update_equals_direct);
    ASSERT_EQ(result.ladder.size(), 3u);
    EXPECT_EQ(result.ladder.back().performance.value, result.direct.performance.value);
    EXPECT_GT(result.original.value, 80.0);
    EXPECT_GT(result.ladder.back().performance.value, 80.0);
    EXPECT_LT(result.ladder.front().bytes, result.direct.bytes);
    ASSERT_EQ(result.runs.size(), 2u);
    const UeRun& ue1 = result.runs[0];
    const UeRun& ue2 = result.runs[1];
    EXPECT_EQ(ue1.ue, "UE1");
    EXPECT_EQ(ue2.ue, "UE2");
    EXPECT_GT(ue1.startup_latency_e2e, 0);
    EXPECT_GT(ue2.startup_latency_e2e, 0);
    ASSERT_FALSE(ue1.swaps.empty());
    EXPECT_EQ(ue1.swaps.back().second, 16);
    EXPECT_EQ(ue2.swaps.back().second, 16);
    EXPECT_EQ(ue1.stream.frames_in, ue1.stream.results_out);
    ASSERT_EQ(result.sweep.size(), 2u);
    EXPECT_LT(result.sweep[0].bytes, result.sweep[1].bytes);

    write_evaluation_results(result, directory_.path() / "results");
    std::stringstream csv(slurp(directory_.path() / "results" / "results.csv"));
    std::string line;
    ASSERT_TRUE(std::getline(csv, line));
    const std::vector<std::string> header = split_line(line);
    EXPECT_EQ(header, evaluation_csv_columns());
    // The study's columns come first, in its order.
    const std::vector<std::string> study = {
        "anc_size", "rec_size",      "compress_ratio", "metric_name", "anc_perf",
        "rec_perf", "anc_eval_time", "rec_eval_time",  "enc_time",    "dec_time"};
    ASSERT_GE(header.size(), study.size());
    EXPECT_TRUE(std::equal(study.begin(), study.end(), header.begin()));
    for (const char* column :
         {"coder_name", "scenario_name", "data_set_name", "model_name", "unique_tag"}) {
        EXPECT_NE(std::find(header.begin(), header.end(), column), header.end()) << column;
    }
    std::size_t rows = 0;
    std::map<std::string, std::string> last_perf_by_role;
    while (std::getline(csv, line)) {
        const std::vector<std::string> fields = split_line(line);
        ASSERT_EQ(fields.size(), header.size()) << line;
        ++rows;
        last_perf_by_role[fields[16]] = fields[5];
    }
    EXPECT_EQ(rows, 3u + 1u);  // UE1: base and two updates; UE2: direct
    // The accuracy after the last update equals the directly sent model's.
    EXPECT_EQ(last_perf_by_role["model update"], last_perf_by_role["high-precision model"]);
    EXPECT_NE(slurp(directory_.path() / "results" / "results.json")
                  .find("\"update_equals_direct\": true"),
              std::string::npos);
}

TEST_F(Evaluation, LadderNeedsTwoRungs) {
    ChecksumScenario scenario;
    EvaluationOptions options = short_options();
    options.ladder = LadderPlan::parse("8");
    EXPECT_THROW(
        run_evaluation(testing::source_dir() / "models" / "small-cnn.onnx", scenario, options),
        Error);
}

}  // namespace
}  // namespace bitinc
