// Calibration: how much each weight tensor matters to a model's outputs,
// measured on training images (never the test split, which judges the
// result), so that a package can send the refinements that buy the most
// accuracy per byte first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bitinc/dataset.hpp"
#include "bitinc/engine.hpp"
#include "bitinc/ladder.hpp"
#include "bitinc/model.hpp"

namespace bitinc {

struct CalibrationOptions {
    std::size_t images = 512;  // the first N images of the calibration set
    std::size_t batch_size = 128;
    EngineOptions engine;
    // Called after each model measured: (models done, models in all).
    std::function<void(std::size_t, std::size_t)> progress;
};

// A classifier's fit to labelled images.
struct CalibrationLoss {
    double cross_entropy = 0;  // mean, natural log, of the softmax of the outputs
    double top1_percent = 0;
};

// The model's loss on the first `options.images` images. Throws Error when
// the model cannot take them (check_model_fits_images) or its outputs are
// not one score per class.
CalibrationLoss calibration_loss(const Model& model, const ImageSet& images,
                                 const CalibrationOptions& options);

struct TensorSensitivity {
    std::size_t tensor = 0;  // in Model::weights
    std::string name;
    std::size_t elements = 0;
    // Mean cross-entropy with this tensor alone at the rung, minus the
    // float32 model's: what refining this tensor from that rung wins back.
    double loss_increase = 0;
};

// For every tensor the plan quantizes: the loss increase when that tensor
// alone is replaced by its `bits` rung of `plan` (every other weight stays
// float32). One engine per tensor. Throws Error if `bits` is not a rung of
// the plan.
std::vector<TensorSensitivity> measure_sensitivity(const Model& model, const LadderPlan& plan,
                                                   int bits, const ImageSet& calibration,
                                                   const CalibrationOptions& options);

// `model` with tensor `tensor` replaced by its `bits` rung of `plan`
// (steps times indices, as a device rebuilds it).
Model with_tensor_at_rung(Model model, std::size_t tensor, const LadderPlan& plan, int bits);

// The order in which to refine tensors from one rung to the top, and the
// point where the model is already as good as at the top.
struct RefinementPlan {
    std::vector<std::size_t> order;   // tensor indices, most loss per byte first
    std::size_t accuracy_prefix = 0;  // how many of `order` the accuracy point refines
    double from_top1 = 0;             // calibration top-1: every tensor at the lower rung
    double point_top1 = 0;            // the first accuracy_prefix tensors at the top
    double top_top1 = 0;              // every tensor at the top
};

// Orders the tensors of `sensitivity` by loss_increase / refinement_bytes
// (bytes indexed by tensor: what refining each costs), then finds the
// shortest prefix of that order whose model — those tensors at the top rung,
// every other quantized tensor at `from_bits` — has a calibration top-1 no
// more than `tolerance_points` below the top rung's. Searches by bisection,
// measuring each candidate; the point it reports was measured.
RefinementPlan plan_refinement(const Model& model, const LadderPlan& plan, int from_bits,
                               const std::vector<TensorSensitivity>& sensitivity,
                               const std::vector<std::uint64_t>& refinement_bytes,
                               const ImageSet& calibration, const CalibrationOptions& options,
                               double tolerance_points = 0.1);

}  // namespace bitinc
