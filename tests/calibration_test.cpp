// Calibration: the loss of a model on training images, and which tensors
// matter most when quantized.
#include <gtest/gtest.h>

#include <algorithm>
#include <bitinc/bitinc.hpp>
#include <bitinc/calibration.hpp>
#include <cmath>

#include "test_support.hpp"

namespace bitinc {
namespace {

namespace fs = std::filesystem;
using testing::TemporaryDirectory;

class Calibration : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!testing::fashion_mnist_available())
            GTEST_SKIP() << "dataset-fashion-mnist is not installed";
        model_ = read_onnx_file(testing::source_dir() / "models" / "small-cnn.onnx");
        images_ = load_fashion_mnist(default_fashion_mnist_dir, Split::train);
        options_.images = 256;
        options_.engine.threads = 1;
    }

    Model model_;
    ImageSet images_;
    CalibrationOptions options_;
};

TEST_F(Calibration, LossOfTheFloatModelIsThatOfATrainedClassifier) {
    const CalibrationLoss loss = calibration_loss(model_, images_, options_);
    EXPECT_GT(loss.cross_entropy, 0.0);
    EXPECT_LT(loss.cross_entropy, 1.0);  // ln 10 = 2.3 for a guess
    EXPECT_GT(loss.top1_percent, 80.0);
    // The per-image figures are the means' terms.
    ASSERT_EQ(loss.image_cross_entropy.size(), options_.images);
    ASSERT_EQ(loss.image_correct.size(), options_.images);
    double sum = 0;
    std::size_t correct = 0;
    for (std::size_t i = 0; i < options_.images; ++i) {
        sum += loss.image_cross_entropy[i];
        correct += loss.image_correct[i];
    }
    EXPECT_NEAR(loss.cross_entropy, sum / double(options_.images), 1e-12);
    EXPECT_DOUBLE_EQ(loss.top1_percent, 100.0 * double(correct) / double(options_.images));
}

TEST(PairedStandardError, IsTheStandardErrorOfTheMeanDifference) {
    // Differences 1, 2, 3, 4: sample variance 5/3, standard error sqrt(5/12).
    EXPECT_NEAR(paired_standard_error({1, 3, 5, 7}, {0, 1, 2, 3}), std::sqrt(5.0 / 12.0), 1e-12);
    EXPECT_EQ(paired_standard_error({1, 2, 3}, {0, 1, 2}), 0.0);  // the same difference
    EXPECT_EQ(paired_standard_error({1}, {0}), 0.0);              // one pair says nothing
}

// The measure is worth ordering by: with every tensor at a coarse rung,
// bringing back the tensor it ranks most sensitive recovers more of the loss
// than bringing back the one it ranks least sensitive.
TEST_F(Calibration, RefiningTheMostSensitiveTensorRecoversMoreLoss) {
    const LadderPlan plan = LadderPlan::parse("3,16");
    const std::vector<TensorSensitivity> sensitivity =
        measure_sensitivity(model_, plan, 3, images_, options_);
    ASSERT_GE(sensitivity.size(), 2u);
    const auto [least, most] = std::minmax_element(
        sensitivity.begin(), sensitivity.end(),
        [](const auto& a, const auto& b) { return a.loss_increase < b.loss_increase; });
    EXPECT_GT(most->loss_increase, 0.0);
    const auto all_coarse_but = [&](std::size_t kept) {
        Model model = model_;
        for (const TensorSensitivity& entry : sensitivity) {
            if (entry.tensor != kept) model = with_tensor_at_rung(model, entry.tensor, plan, 3);
        }
        return calibration_loss(model, images_, options_).cross_entropy;
    };
    EXPECT_LT(all_coarse_but(most->tensor), all_coarse_but(least->tensor));
}

// The refinement gain is what it says: each tensor refined first (every
// other tensor at the coarse rung) and last (every other tensor refined),
// measured again here model by model, each with its standard error over the
// images; the value is the larger of the two, each given the benefit of
// refinement_gain_optimism standard errors.
TEST_F(Calibration, RefinementGainIsMeasuredAtBothEndsOfTheStep) {
    const LadderPlan plan = LadderPlan::parse("3,16");
    const std::vector<LadderPlan> ladders(model_.weights.size(), plan);
    std::vector<int> from(model_.weights.size(), 0), to(model_.weights.size(), 0);
    for (std::size_t t = 0; t < model_.weights.size(); ++t) {
        if (plan.quantizes(model_.weights[t])) {
            from[t] = 3;
            to[t] = 16;
        }
    }
    const std::vector<TensorSensitivity> gain =
        measure_refinement_gain(model_, ladders, from, to, images_, options_);
    ASSERT_GE(gain.size(), 2u);
    const auto losses = [&](const std::vector<int>& bits) {
        return calibration_loss(with_tensors_at(model_, ladders, bits), images_, options_);
    };
    const auto loss = [&](const std::vector<int>& bits) { return losses(bits).cross_entropy; };
    const CalibrationLoss coarse_losses = losses(from);
    const CalibrationLoss fine_losses = losses(to);
    const double coarse = coarse_losses.cross_entropy;
    const double fine = fine_losses.cross_entropy;
    bool some_gain = false;
    for (const TensorSensitivity& entry : gain) {
        std::vector<int> first = from;
        first[entry.tensor] = 16;
        std::vector<int> last = to;
        last[entry.tensor] = 3;
        EXPECT_NEAR(entry.gain_first, coarse - loss(first), 1e-9) << entry.name;
        EXPECT_NEAR(entry.gain_last, loss(last) - fine, 1e-9) << entry.name;
        EXPECT_NEAR(entry.gain_first_error,
                    paired_standard_error(coarse_losses.image_cross_entropy,
                                          losses(first).image_cross_entropy),
                    1e-12)
            << entry.name;
        EXPECT_NEAR(entry.gain_last_error,
                    paired_standard_error(losses(last).image_cross_entropy,
                                          fine_losses.image_cross_entropy),
                    1e-12)
            << entry.name;
        EXPECT_GT(entry.gain_first_error + entry.gain_last_error, 0.0) << entry.name;
        EXPECT_DOUBLE_EQ(
            entry.loss_increase,
            std::max(entry.gain_first + refinement_gain_optimism * entry.gain_first_error,
                     entry.gain_last + refinement_gain_optimism * entry.gain_last_error));
        some_gain = some_gain || entry.loss_increase > 0;
    }
    EXPECT_TRUE(some_gain);
}

// The accuracy point is measured, within the tolerance of the top rung, and
// needs no more than every tensor; the order covers each quantized tensor once.
TEST_F(Calibration, AccuracyPointIsAsGoodAsTheTopWithinTheTolerance) {
    const LadderPlan plan = LadderPlan::parse("3,16");
    const std::vector<TensorSensitivity> sensitivity =
        measure_sensitivity(model_, plan, 3, images_, options_);
    std::vector<std::uint64_t> bytes(model_.weights.size(), 0);
    for (const TensorSensitivity& entry : sensitivity) bytes[entry.tensor] = entry.elements;
    const double top = top1_at_rung(model_, plan, 16, images_, options_);
    const RefinementPlan refinement =
        plan_refinement(model_, plan, 3, 16, sensitivity, bytes, images_, options_, top - 0.5);
    ASSERT_EQ(refinement.order.size(), sensitivity.size());
    std::vector<std::size_t> sorted = refinement.order;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end());
    EXPECT_DOUBLE_EQ(refinement.to_top1, top);
    ASSERT_TRUE(refinement.reaches);
    EXPECT_LE(refinement.accuracy_prefix, refinement.order.size());
    EXPECT_GE(refinement.point_top1, top - 0.5);
    // 3-bit small-cnn is far from its top: some refinement is needed.
    EXPECT_LT(refinement.from_top1, top - 0.5);
    EXPECT_GT(refinement.accuracy_prefix, 0u);
    // The reported point is what that model measures.
    Model point = model_;
    for (std::size_t i = 0; i < refinement.order.size(); ++i) {
        point = with_tensor_at_rung(point, refinement.order[i], plan,
                                    i < refinement.accuracy_prefix ? 16 : 3);
    }
    EXPECT_DOUBLE_EQ(calibration_loss(point, images_, options_).top1_percent,
                     refinement.point_top1);
}

// A calibrated package: refinement units in order of value, an accuracy
// point short of the whole refinement, and the top still bit-exact.
// small-cnn packed on `ladder` (4,16 unless given) per channel with
// calibration on 256 training images and the given tolerance, into `package`.
PackResult pack_calibrated(const fs::path& package, double tolerance_points,
                           std::string_view ladder = "4,16") {
    PackOptions options;
    options.ladder = LadderPlan::parse(ladder);
    options.ladder.per_channel = true;
    options.threads = 1;
    PackCalibration calibration;
    calibration.images = 256;
    calibration.tolerance_points = tolerance_points;
    calibration.engine_threads = 1;
    options.calibration = calibration;
    return pack_model(testing::source_dir() / "models" / "small-cnn.onnx", options, package);
}

TEST_F(Calibration, CalibratedPackageStopsEarlyAndStaysExact) {
    TemporaryDirectory directory;
    const fs::path package = directory.path() / "package";
    const Manifest manifest = pack_calibrated(package, 1.0).manifest;
    ASSERT_TRUE(manifest.accuracy_point.has_value());
    const AccuracyPoint& point = *manifest.accuracy_point;
    EXPECT_EQ(point.rung, 1u);
    EXPECT_LT(point.units, manifest.rungs[1].units.size());
    EXPECT_GE(point.value, point.top_value - 1.0);
    EXPECT_EQ(point.calibration_images, 256u);
    const VerifyReport report = verify_package(package);
    EXPECT_TRUE(report.problems.empty()) << report.problems.front();
    EXPECT_EQ(serialize_onnx(unpack_package(package, 16, false)),
              serialize_onnx(unpack_package(package, 16, true)));
}

// The packer sends each rung's units in order of the measured gain per
// byte, no tensor valued below the rung's average (those keep tensor
// order): the order in the manifest is the one measure_refinement_gain and
// the units' bytes give, tensor by tensor, each tensor's units together.
TEST_F(Calibration, CalibratedOrderFollowsTheMeasuredGainPerByte) {
    TemporaryDirectory directory;
    const fs::path package = directory.path() / "package";
    const Manifest manifest = pack_calibrated(package, PackCalibration{}.tolerance_points).manifest;
    std::vector<std::size_t> order;
    std::vector<std::uint64_t> bytes(model_.weights.size(), 0);
    for (const UnitEntry& unit : manifest.rungs[1].units) {
        if (order.empty() || order.back() != unit.tensor) {
            ASSERT_EQ(std::find(order.begin(), order.end(), unit.tensor), order.end())
                << "the units of tensor " << unit.tensor << " are not together";
            order.push_back(unit.tensor);
        }
        bytes[unit.tensor] += unit.length;
    }
    ASSERT_GE(order.size(), 2u);
    std::vector<LadderPlan> ladders;
    std::vector<int> from(model_.weights.size(), 0), to(model_.weights.size(), 0);
    for (std::size_t t = 0; t < model_.weights.size(); ++t) {
        ladders.push_back(manifest.tensor_ladder(t));
        if (manifest.tensors[t].quantized) {
            from[t] = manifest.tensor_bits(t, 0);
            to[t] = manifest.tensor_bits(t, 1);
        }
    }
    RefinementLosses losses;
    const std::vector<TensorSensitivity> gain =
        measure_refinement_gain(model_, ladders, from, to, images_, options_, &losses);
    ASSERT_EQ(gain.size(), order.size());
    std::uint64_t rung_bytes = 0;
    for (const std::uint64_t b : bytes) rung_bytes += b;
    const double average = (losses.before - losses.after) / double(rung_bytes);
    std::vector<double> value(model_.weights.size(), 0);
    for (const TensorSensitivity& entry : gain)
        value[entry.tensor] = std::max(entry.loss_increase / double(bytes[entry.tensor]), average);
    for (std::size_t i = 1; i < order.size(); ++i) {
        EXPECT_GE(value[order[i - 1]], value[order[i]]) << "at position " << i;
        if (value[order[i - 1]] == average && value[order[i]] == average) {
            EXPECT_LT(order[i - 1], order[i]) << "tensors at the floor keep tensor order";
        }
    }
    // Small-cnn's tensor order is not already the order of value (else this
    // test could not tell the packer's order from tensor order).
    EXPECT_FALSE(std::is_sorted(order.begin(), order.end()));
}

// A rung whose whole gain the calibration images cannot tell from chance
// (8 to 16 bits) keeps tensor order and says so in a note; a rung with a
// gain to rank (4 to 8 bits) is put in order of value.
TEST_F(Calibration, RungWithinChanceKeepsTensorOrder) {
    TemporaryDirectory directory;
    const PackResult result =
        pack_calibrated(directory.path() / "package", PackCalibration{}.tolerance_points, "4,8,16");
    const Manifest& manifest = result.manifest;
    ASSERT_EQ(manifest.rungs.size(), 4u);  // three ladder rungs and the direct one
    // Each rung's gain as the packer judges it: every tensor from its bits
    // before the rung to its bits after, on the same images.
    std::vector<LadderPlan> ladders;
    for (std::size_t t = 0; t < model_.weights.size(); ++t)
        ladders.push_back(manifest.tensor_ladder(t));
    const auto loss_at = [&](std::size_t rung) {
        std::vector<int> bits(model_.weights.size(), 0);
        for (std::size_t t = 0; t < model_.weights.size(); ++t)
            if (manifest.tensors[t].quantized) bits[t] = manifest.tensor_bits(t, rung);
        return calibration_loss(with_tensors_at(model_, ladders, bits), images_, options_);
    };
    const CalibrationLoss at4 = loss_at(0), at8 = loss_at(1), at16 = loss_at(2);
    const auto measurable = [](const CalibrationLoss& before, const CalibrationLoss& after) {
        return before.cross_entropy - after.cross_entropy >
               2 * paired_standard_error(before.image_cross_entropy, after.image_cross_entropy);
    };
    ASSERT_TRUE(measurable(at4, at8)) << "small-cnn's 4 to 8 bits should be a visible gain";
    ASSERT_FALSE(measurable(at8, at16)) << "small-cnn's 8 to 16 bits should be within chance";
    const auto tensors_in_order = [&](std::size_t rung) {
        std::vector<std::size_t> order;
        for (const UnitEntry& unit : manifest.rungs[rung].units)
            if (order.empty() || order.back() != unit.tensor) order.push_back(unit.tensor);
        return order;
    };
    const auto noted = [&](std::size_t rung) {
        return std::any_of(result.notes.begin(), result.notes.end(), [&](const std::string& note) {
            return note.rfind("rung " + std::to_string(rung) + " ", 0) == 0 &&
                   note.find("keep tensor order") != std::string::npos;
        });
    };
    const std::vector<std::size_t> ranked = tensors_in_order(1);
    EXPECT_FALSE(std::is_sorted(ranked.begin(), ranked.end()));
    EXPECT_FALSE(noted(1));
    const std::vector<std::size_t> flat = tensors_in_order(2);
    EXPECT_TRUE(std::is_sorted(flat.begin(), flat.end()));
    EXPECT_TRUE(noted(2));
    EXPECT_EQ(serialize_onnx(unpack_package(directory.path() / "package", 16, false)),
              serialize_onnx(unpack_package(directory.path() / "package", 16, true)));
}

// Calibration reads the training split and nothing else: a directory with
// only the training files is enough, one with only the test files is not.
TEST_F(Calibration, ReadsTheTrainingSplitOnly) {
    TemporaryDirectory directory;
    const auto [train, test] = testing::split_fashion_mnist(directory.path());
    PackOptions options;
    options.ladder = LadderPlan::parse("8,16");
    options.threads = 1;
    PackCalibration calibration;
    calibration.images = 64;
    calibration.engine_threads = 1;
    calibration.data_dir = train;
    options.calibration = calibration;
    const fs::path model = testing::source_dir() / "models" / "small-cnn.onnx";
    EXPECT_NO_THROW(pack_model(model, options, directory.path() / "a"));
    options.calibration->data_dir = test;
    try {
        pack_model(model, options, directory.path() / "b");
        FAIL() << "calibration ran without the training split";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("train-images"), std::string::npos)
            << error.what();
    }
    EXPECT_FALSE(fs::exists(directory.path() / "b"));
}

TEST_F(Calibration, ARungOutsideTheLadderIsAnError) {
    EXPECT_THROW(with_tensor_at_rung(model_, 0, LadderPlan::parse("8,16"), 4), Error);
}

}  // namespace
}  // namespace bitinc
