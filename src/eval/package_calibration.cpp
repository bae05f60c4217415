// The packer's calibration step (src/package/refinement_order.hpp): each
// refinement rung in order of value, and the accuracy point.
#include <algorithm>
#include <map>

#include "bitinc/calibration.hpp"
#include "bitinc/error.hpp"
#include "package/refinement_order.hpp"

namespace bitinc {

ImageSet load_calibration_images(const PackCalibration& calibration) {
    return load_fashion_mnist(calibration.data_dir, Split::train);
}

namespace {

// A rung's loss gain counts as measured when it exceeds this many paired
// standard errors of the point images.
constexpr double measurable_gain_errors = 2.0;

// The last `count` images of `images` (all of them if it has fewer).
ImageSet last_images(const ImageSet& images, std::size_t count) {
    count = std::min(count, images.count);
    const std::size_t first = images.count - count;
    const std::size_t pixels_per_image = images.rows * images.cols;
    ImageSet tail;
    tail.count = count;
    tail.rows = images.rows;
    tail.cols = images.cols;
    tail.pixels.assign(images.pixels.begin() + std::ptrdiff_t(first * pixels_per_image),
                       images.pixels.end());
    tail.labels.assign(images.labels.begin() + std::ptrdiff_t(first), images.labels.end());
    return tail;
}

}  // namespace

std::vector<std::string> calibrate_refinements(const std::filesystem::path& directory,
                                               Manifest& manifest,
                                               const std::filesystem::path& model_path,
                                               const PackCalibration& calibration,
                                               const ImageSet& images) {
    std::vector<std::string> notes;
    const Model model = read_onnx_file(model_path);
    CalibrationOptions options;
    options.images = calibration.images;
    options.engine.threads = calibration.engine_threads;
    // Each tensor on its own ladder (mixed precision) at its bits after
    // each ladder rung; exact tensors stay float32 (bits 0).
    const std::size_t tensors = manifest.tensors.size();
    std::vector<LadderPlan> ladders;
    for (std::size_t t = 0; t < tensors; ++t) ladders.push_back(manifest.tensor_ladder(t));
    const auto bits_after = [&](std::size_t ladder_rung) {
        std::vector<int> bits(tensors, 0);
        for (std::size_t t = 0; t < tensors; ++t) {
            if (manifest.tensors[t].quantized) bits[t] = manifest.tensor_bits(t, ladder_rung);
        }
        return bits;
    };
    const std::size_t ladder_size = manifest.ladder.bits.size();
    // The accuracy point is searched on the tail of the split, away from
    // the front images the ranking and the budget read: a model trained
    // with a held-out tail (tools/train_fashion_mnist.py --train-limit) has
    // not seen them, and a point placed on seen images is optimistic (the
    // quick VGG16's point, on the images it was trained on, was 0.04 point
    // from the top there and 0.21 on the test split).
    // With no count given it is searched on the calibration images.
    CalibrationOptions point_options = options;
    const ImageSet point_images =
        calibration.point_images > 0 ? last_images(images, calibration.point_images) : ImageSet{};
    const ImageSet& point_set = calibration.point_images > 0 ? point_images : images;
    if (calibration.point_images > 0) point_options.images = point_images.count;
    const double target =
        calibration_loss(with_tensors_at(model, ladders, bits_after(ladder_size - 1)), point_set,
                         point_options)
            .top1_percent -
        calibration.tolerance_points;
    manifest.accuracy_point.reset();
    for (std::size_t r = 1; r < ladder_size; ++r) {
        RungEntry& rung = manifest.rungs[r];
        // What refining each tensor through this rung costs.
        std::vector<std::uint64_t> bytes(tensors, 0);
        std::map<std::size_t, std::size_t> units_of;
        for (const UnitEntry& unit : rung.units) {
            bytes[unit.tensor] += unit.length;
            ++units_of[unit.tensor];
        }
        if (units_of.empty()) continue;  // no tensor's bits rise here
        const std::vector<int> from = bits_after(r - 1);
        const std::vector<int> to = bits_after(r);
        // Measured where the device refines: every tensor at its bits before
        // this rung, each one this rung refines brought to its bits after it.
        CalibrationOptions ranking = options;
        if (calibration.sensitivity_images > 0)
            ranking.images = std::min(calibration.sensitivity_images, options.images);
        std::vector<int> refined_to = from;
        for (const auto& [tensor, count] : units_of) refined_to[tensor] = to[tensor];
        // Is the rung worth anything the point images can see? A step whose
        // loss change is within chance (8 to 16 bits) has no order of value
        // to find, and ranking its tensors would only sort noise (on the
        // test split, orders of such rungs fell below tensor order by a few
        // images as often as they rose above it). It keeps tensor order.
        const CalibrationLoss rung_before =
            calibration_loss(with_tensors_at(model, ladders, from), point_set, point_options);
        const CalibrationLoss rung_after =
            calibration_loss(with_tensors_at(model, ladders, refined_to), point_set, point_options);
        const double rung_gain = rung_before.cross_entropy - rung_after.cross_entropy;
        const double rung_gain_error =
            paired_standard_error(rung_before.image_cross_entropy, rung_after.image_cross_entropy);
        const bool measurable = rung_gain > measurable_gain_errors * rung_gain_error;
        std::vector<TensorSensitivity> sensitivity;
        double average_per_byte = 0;
        if (measurable) {
            RefinementLosses losses;
            sensitivity =
                measure_refinement_gain(model, ladders, from, refined_to, images, ranking, &losses);
            // No tensor is worth less than the rung's average gain per byte:
            // a gain too small for the ranking images to see (cheap early
            // convs of ResNet18 and MobileNetV2) is no reason to send a
            // tensor last. Those below the average keep tensor order, after
            // the winners.
            std::uint64_t rung_bytes = 0;
            for (const auto& [tensor, count] : units_of) rung_bytes += bytes[tensor];
            average_per_byte =
                (losses.before - losses.after) / double(std::max<std::uint64_t>(rung_bytes, 1));
        } else {
            // Every tensor valued alike: the ranking keeps their order.
            for (const auto& [tensor, count] : units_of) {
                TensorSensitivity entry;
                entry.tensor = tensor;
                sensitivity.push_back(entry);
            }
            notes.push_back("rung " + std::to_string(r) + " (" + rung.data.file +
                            "): its loss gain on " +
                            std::to_string(std::min(point_options.images, point_set.count)) +
                            " calibration images (" + std::to_string(rung_gain) + " +- " +
                            std::to_string(rung_gain_error) +
                            ") is within chance: its units keep tensor order");
        }
        // Past the rung holding the point only the order is wanted: no
        // model is measured for it.
        if (manifest.accuracy_point) {
            reorder_refinement_units(directory, manifest, r,
                                     refinement_order(sensitivity, bytes, average_per_byte));
            continue;
        }
        const RefinementPlan order =
            plan_refinement(model, ladders, from, to, sensitivity, bytes, point_set, point_options,
                            target, average_per_byte);
        reorder_refinement_units(directory, manifest, r, order.order);
        if (!order.reaches) continue;
        AccuracyPoint point;
        point.rung = r;
        for (std::size_t i = 0; i < order.accuracy_prefix; ++i)
            point.units += units_of[order.order[i]];
        point.metric = "top1_percent";
        point.calibration_images = std::min(point_options.images, images.count);
        point.value = order.point_top1;
        point.top_value = target + calibration.tolerance_points;
        point.tolerance = calibration.tolerance_points;
        manifest.accuracy_point = point;
    }
    return notes;
}

}  // namespace bitinc
