// The packer's calibration step (src/package/refinement_order.hpp): each
// refinement rung in order of value, and the accuracy point.
#include <algorithm>
#include <limits>
#include <map>

#include "bitinc/calibration.hpp"
#include "bitinc/error.hpp"
#include "package/refinement_order.hpp"

namespace bitinc {

ImageSet load_calibration_images(const PackCalibration& calibration) {
    return load_fashion_mnist(calibration.data_dir, Split::train);
}

void calibrate_refinements(const std::filesystem::path& directory, Manifest& manifest,
                           const std::filesystem::path& model_path,
                           const PackCalibration& calibration, const ImageSet& images) {
    const Model model = read_onnx_file(model_path);
    CalibrationOptions options;
    options.images = calibration.images;
    options.engine.threads = calibration.engine_threads;
    const LadderPlan& plan = manifest.ladder;
    const double target =
        top1_at_rung(model, plan, plan.top_bits(), images, options) - calibration.tolerance_points;
    manifest.accuracy_point.reset();
    for (std::size_t r = 1; r < plan.bits.size(); ++r) {
        RungEntry& rung = manifest.rungs[r];
        // What refining each tensor through this rung costs.
        std::vector<std::uint64_t> bytes(model.weights.size(), 0);
        std::map<std::size_t, std::size_t> units_of;
        for (const UnitEntry& unit : rung.units) {
            bytes[unit.tensor] += unit.length;
            ++units_of[unit.tensor];
        }
        CalibrationOptions ranking = options;
        if (calibration.sensitivity_images > 0)
            ranking.images = std::min(calibration.sensitivity_images, options.images);
        const std::vector<TensorSensitivity> sensitivity =
            measure_sensitivity(model, plan, rung.parent_bits, images, ranking);
        // Past the rung holding the point only the order is wanted: an
        // unreachable target skips the search for a second point.
        const double rung_target =
            manifest.accuracy_point ? std::numeric_limits<double>::infinity() : target;
        const RefinementPlan order =
            plan_refinement(model, plan, rung.parent_bits, rung.bits, sensitivity, bytes, images,
                            options, rung_target);
        reorder_refinement_units(directory, manifest, r, order.order);
        if (manifest.accuracy_point || !order.reaches) continue;
        AccuracyPoint point;
        point.rung = r;
        for (std::size_t i = 0; i < order.accuracy_prefix; ++i)
            point.units += units_of[order.order[i]];
        point.metric = "top1_percent";
        point.calibration_images = std::min(calibration.images, images.count);
        point.value = order.point_top1;
        point.top_value = target + calibration.tolerance_points;
        point.tolerance = calibration.tolerance_points;
        manifest.accuracy_point = point;
    }
}

}  // namespace bitinc
