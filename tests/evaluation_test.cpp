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
    EXPECT_EQ(rows, 3u + 1u + 1u);  // UE1: base, two rungs, the exact update; UE2: direct
    EXPECT_EQ(last_perf_by_role["exact update"], last_perf_by_role["high-precision model"]);
    EXPECT_EQ(last_perf_by_role.count("accuracy-matched update"), 0u);  // not calibrated
    EXPECT_EQ(result.exact_update.bytes, result.ladder[1].bytes + result.ladder[2].bytes);
    // The accuracy after the last update equals the directly sent model's.
    EXPECT_EQ(last_perf_by_role["model update"], last_perf_by_role["high-precision model"]);
    EXPECT_NE(slurp(directory_.path() / "results" / "results.json")
                  .find("\"update_equals_direct\": true"),
              std::string::npos);
}

// Calibrated: the accuracy-matched update beside the exact one, consistent
// in the result, the CSV and the timelines; calibration reads a directory
// that holds only the training split (the scenario's holds only the test
// split), so it cannot have opened the test files.
TEST_F(Evaluation, CalibratedRunReportsBothUpdates) {
    if (!testing::fashion_mnist_available())
        GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    const auto [train, test] = testing::split_fashion_mnist(directory_.path());
    const auto scenario = make_fashion_mnist_scenario(test, 300, 1);
    EvaluationOptions options = short_options();
    options.sweep.clear();
    options.rates_bits_per_second = {33.6e6};
    options.curve_points_per_rung = 3;
    PackCalibration calibration;
    calibration.data_dir = train;
    calibration.images = 128;
    calibration.sensitivity_images = 64;
    calibration.engine_threads = 1;
    options.calibration = calibration;
    // A mixed-precision base within 0.15 x the direct top rung (eval --budget).
    PackBudget budget;
    budget.ratio = 0.15;
    budget.calibration = calibration;
    options.budget = budget;
    const EvaluationResult result =
        run_evaluation(testing::source_dir() / "models" / "small-cnn.onnx", *scenario, options);

    EXPECT_GT(result.ladder.front().mean_bits, 0.0);
    EXPECT_LT(result.ladder.front().min_bits, result.ladder.front().max_bits);
    EXPECT_LE(double(result.ladder.front().bytes), 0.15 * double(result.direct.bytes) * 1.02);
    ASSERT_TRUE(result.accuracy_point.has_value());
    ASSERT_TRUE(result.accuracy_update.has_value());
    const UpdateEvaluation& point = *result.accuracy_update;
    const UpdateEvaluation& exact = result.exact_update;
    EXPECT_LE(point.bytes, exact.bytes);
    EXPECT_LE(point.units, exact.units);
    EXPECT_GT(point.units, 0u);
    EXPECT_EQ(point.parent_bits, 4);
    EXPECT_EQ(exact.parent_bits, 4);
    EXPECT_EQ(exact.bits, 16);
    EXPECT_EQ(exact.performance.value, result.direct.performance.value);
    EXPECT_EQ(result.accuracy_point->calibration_images, 128u);

    // Both curves at the same byte counts, from the base to every refinement
    // byte; where both hold every unit they agree with the top rung.
    const auto& first = result.accuracy_first_curve;
    const auto& tensor = result.tensor_order_curve;
    ASSERT_EQ(first.size(), tensor.size());
    ASSERT_GE(first.size(), 2u * 3u + 1u);
    for (std::size_t i = 0; i < first.size(); ++i) EXPECT_EQ(first[i].bytes, tensor[i].bytes);
    EXPECT_EQ(first.front().bytes, 0u);
    EXPECT_EQ(first.front().value, result.ladder.front().performance.value);
    EXPECT_EQ(first.back().bytes, exact.bytes);
    EXPECT_EQ(first.back().value, result.direct.performance.value);
    EXPECT_EQ(tensor.back().value, result.direct.performance.value);
    // The point's own byte count is on the curve, with the point's accuracy.
    const auto at_point = std::find_if(first.begin(), first.end(),
                                       [&](const CurvePoint& p) { return p.bytes == point.bytes; });
    ASSERT_NE(at_point, first.end());
    EXPECT_EQ(at_point->value, point.performance.value);

    ASSERT_EQ(result.runs.size(), 2u);
    const UeRun& ue1 = result.runs[0];
    const UeRun& ue2 = result.runs[1];
    ASSERT_GE(ue1.accuracy_point_at, 0);
    ASSERT_GE(ue1.accuracy_point_served_at, 0);
    EXPECT_LE(ue1.accuracy_point_served_at, ue1.top_rung_seconds);
    EXPECT_GE(ue1.accuracy_point_served_at, ue1.accuracy_point_at);
    EXPECT_LT(ue2.accuracy_point_at, 0);
    ASSERT_EQ(result.dominance.size(), 1u);
    const Dominance recomputed = compare_served(ue1, ue2, result.accuracy_point->tolerance);
    EXPECT_EQ(result.dominance[0].holds, recomputed.holds);
    EXPECT_EQ(result.dominance[0].worst_margin, recomputed.worst_margin);

    write_evaluation_results(result, directory_.path() / "results");
    std::stringstream csv(slurp(directory_.path() / "results" / "results.csv"));
    std::string line;
    ASSERT_TRUE(std::getline(csv, line));
    const std::vector<std::string> header = split_line(line);
    const auto column = [&](const char* name) {
        return std::size_t(std::find(header.begin(), header.end(), name) - header.begin());
    };
    std::map<std::string, std::vector<std::string>> by_role;
    while (std::getline(csv, line)) {
        const std::vector<std::string> fields = split_line(line);
        ASSERT_EQ(fields.size(), header.size());
        by_role[fields[column("model_role")]] = fields;
    }
    ASSERT_EQ(by_role.count("accuracy-matched update"), 1u);
    ASSERT_EQ(by_role.count("exact update"), 1u);
    const auto& point_row = by_role["accuracy-matched update"];
    const auto& exact_row = by_role["exact update"];
    EXPECT_EQ(std::stoull(point_row[column("rec_size")]), point.bytes);
    EXPECT_LE(std::stoull(point_row[column("total_bytes")]),
              std::stoull(exact_row[column("total_bytes")]));
    EXPECT_EQ(std::stoull(exact_row[column("total_bytes")]),
              result.ladder.front().bytes + exact.bytes);
    EXPECT_LE(std::stod(point_row[column("served_at")]), std::stod(exact_row[column("served_at")]));
    EXPECT_EQ(std::stoull(point_row[column("update_units")]), point.units);
    const std::string json = slurp(directory_.path() / "results" / "results.json");
    for (const char* key :
         {"\"accuracy_update\"", "\"exact_update\"", "\"accuracy_first_curve\"", "\"dominance\"",
          "\"accuracy_point_served_at\"", "\"curve_comparison\""})
        EXPECT_NE(json.find(key), std::string::npos) << key;
}

// Dominance from two made-up timelines: the check and its margin.
TEST(EvaluationDominance, ComparesServedMetricsAtEverySwap) {
    UeRun ue1, ue2;
    ue1.served = {{0.2, 80.0}, {0.4, 87.1}, {1.2, 87.2}};
    ue2.served = {{1.0, 87.2}};
    const Dominance within = compare_served(ue1, ue2, 0.1);
    EXPECT_TRUE(within.holds);
    EXPECT_NEAR(within.worst_margin, -0.1, 1e-9);
    EXPECT_DOUBLE_EQ(within.worst_at, 1.0);
    EXPECT_FALSE(compare_served(ue1, ue2, 0.05).holds);
    ue1.served[1].first = 1.1;  // the update now comes after UE2's model
    const Dominance late = compare_served(ue1, ue2, 0.1);
    EXPECT_FALSE(late.holds);
    EXPECT_NEAR(late.worst_margin, -7.2, 1e-9);
    EXPECT_DOUBLE_EQ(late.worst_at, 1.0);
}

TEST(EvaluationCurves, SignTestGivesExactBinomialTails) {
    EXPECT_DOUBLE_EQ(sign_test_p_value(0, 0), 1.0);
    EXPECT_DOUBLE_EQ(sign_test_p_value(10, 10), 1.0 / 1024);
    EXPECT_NEAR(sign_test_p_value(4, 2), 11.0 / 16, 1e-12);
    EXPECT_NEAR(sign_test_p_value(5, 1), 31.0 / 32, 1e-12);
    // Large n, where the terms are summed in logs: half or more of 10,000.
    EXPECT_NEAR(sign_test_p_value(10000, 5000), 0.5 + 0.5 * 0.00797871, 1e-4);
    EXPECT_LT(sign_test_p_value(10000, 5300), 1e-8);
}

// Curves on made-up answers for 1,000 samples: a shortfall chance explains
// is counted below but not beyond chance; a large one is both.
TEST(EvaluationCurves, ComparisonTellsChanceFromShortfall) {
    const auto point = [](std::uint64_t bytes, std::size_t wrong_from, std::size_t wrong_to) {
        CurvePoint result{bytes, 0, std::vector<std::uint8_t>(1000, 1)};
        for (std::size_t s = wrong_from; s < wrong_to; ++s) result.sample_correct[s] = 0;
        result.value = 100.0 * double(1000 - (wrong_to - wrong_from)) / 1000;
        return result;
    };
    // Base, a point 3 samples below (different samples wrong: 5 against 2),
    // an equal point, and a point above.
    std::vector<CurvePoint> first{point(0, 0, 100), point(10, 0, 5), point(20, 0, 1),
                                  point(30, 0, 2)};
    std::vector<CurvePoint> tensor{point(0, 0, 100), point(10, 500, 502), point(20, 0, 1),
                                   point(30, 0, 9)};
    CurveComparison c = compare_curves(first, tensor);
    EXPECT_TRUE(c.per_sample);
    EXPECT_EQ(c.points, 3u);
    EXPECT_EQ(c.above, 1u);
    EXPECT_EQ(c.equal, 1u);
    EXPECT_EQ(c.below, 1u);
    EXPECT_NEAR(c.worst_shortfall, 0.3, 1e-9);
    EXPECT_EQ(c.worst_at_bytes, 10u);
    EXPECT_EQ(c.tested, 2u);  // the equal point holds the same answers
    EXPECT_NEAR(c.smallest_p_below, sign_test_p_value(7, 5), 1e-12);
    EXPECT_EQ(c.significantly_below, 0u);
    // 60 samples below: far beyond chance, even corrected for two tests.
    first[1] = point(10, 0, 60);
    c = compare_curves(first, tensor);
    EXPECT_EQ(c.significantly_below, 1u);
    EXPECT_LT(c.smallest_p_below, 1e-10);
    // Without per-sample answers the plain counts stand alone.
    for (CurvePoint& p : first) p.sample_correct.clear();
    c = compare_curves(first, tensor);
    EXPECT_FALSE(c.per_sample);
    EXPECT_EQ(c.below, 1u);
    EXPECT_EQ(c.significantly_below, 0u);
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
