// Calibration: how much each weight tensor matters to a model's outputs,
// measured on training images (never the test split, which judges the
// result), so that a package can send the refinements that buy the most
// accuracy per byte first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
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
    // Per image, in order: its cross-entropy and whether its top-1 is right,
    // so that two models measured on the same images can be compared image
    // by image (a paired difference is far less noisy than two means).
    std::vector<double> image_cross_entropy;
    std::vector<std::uint8_t> image_correct;
};

// The standard error of the mean of a[i] - b[i] (0 for fewer than two
// pairs): how far a difference of two losses on the same images may be
// from the difference on all images like them.
double paired_standard_error(const std::vector<double>& a, const std::vector<double>& b);

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
    // measure_refinement_gain only: what refining this tensor wins back as
    // the step's first refinement (every other tensor still at its from
    // bits) and as its last (every other tensor already at its to bits).
    double gain_first = 0;
    double gain_last = 0;
    // Their standard errors over the calibration images (paired per image).
    double gain_first_error = 0;
    double gain_last_error = 0;
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

// The order in which to refine tensors from one rung to the next, and the
// point where the model is good enough.
struct RefinementPlan {
    std::vector<std::size_t> order;   // tensor indices, most loss per byte first
    bool reaches = false;             // every tensor at to_bits meets the target
    std::size_t accuracy_prefix = 0;  // how many of `order` the point refines (if reaches)
    double from_top1 = 0;             // calibration top-1: every tensor at from_bits
    double point_top1 = 0;            // the first accuracy_prefix tensors at to_bits
    double to_top1 = 0;               // every tensor at to_bits
};

// Orders the tensors of `sensitivity` by loss_increase / refinement_bytes
// (bytes indexed by tensor: what refining each costs), then, if every
// tensor at `to_bits` reaches `target_top1` on the calibration images,
// finds the shortest prefix of that order whose model — those tensors at
// `to_bits`, every other quantized tensor at `from_bits` — does. Searches
// by bisection, measuring each candidate; the point it reports was measured.
RefinementPlan plan_refinement(const Model& model, const LadderPlan& plan, int from_bits,
                               int to_bits, const std::vector<TensorSensitivity>& sensitivity,
                               const std::vector<std::uint64_t>& refinement_bytes,
                               const ImageSet& calibration, const CalibrationOptions& options,
                               double target_top1);

// The calibration top-1 with every quantized tensor at `bits`.
double top1_at_rung(const Model& model, const LadderPlan& plan, int bits,
                    const ImageSet& calibration, const CalibrationOptions& options);

// ---- mixed precision: each tensor on its own ladder, at its own bits ------
//
// `ladders` and `bits` are indexed by tensor (Model::weights); a tensor with
// bits 0 (or past the end of `bits`) stays float32.

// `model` with every tensor t of bits[t] > 0 at its bits[t] rung of ladders[t].
Model with_tensors_at(Model model, const std::vector<LadderPlan>& ladders,
                      const std::vector<int>& bits);

// For every tensor t with bits[t] > 0: the loss increase with t alone at
// its bits[t] rung of ladders[t].
std::vector<TensorSensitivity> measure_sensitivity(const Model& model,
                                                   const std::vector<LadderPlan>& ladders,
                                                   const std::vector<int>& bits,
                                                   const ImageSet& calibration,
                                                   const CalibrationOptions& options);

// Standard errors added to each measured gain before ranking (see
// measure_refinement_gain): a cheap tensor whose gain the ranking images
// cannot tell from zero goes early, where a wrong guess costs few bytes.
// Two halved the largest shortfall against tensor order on the test split
// (ResNet18 0.14 -> 0.06 point, MobileNetV2 0.13 -> 0.05; docs/evaluation.md).
inline constexpr double refinement_gain_optimism = 2.0;

// What refining each tensor wins back where the device refines it, the
// packer's refinement order: for every tensor t with from_bits[t] > 0 and
// to_bits[t] != from_bits[t], gain_first is the mean cross-entropy with
// every tensor at its from bits minus that with t alone at to_bits[t], and
// gain_last the cross-entropy with every tensor at its to bits but t (at
// from_bits[t]) minus that with all at their to bits, each with its paired
// standard error over the images; loss_increase is the larger of the two,
// each plus refinement_gain_optimism standard errors. Two engines per tensor, plus two: the losses
// with every tensor at its from bits and at its to bits, given in `losses` when it is not null.
struct RefinementLosses {
    double before = 0;
    double after = 0;
};
std::vector<TensorSensitivity> measure_refinement_gain(
    const Model& model, const std::vector<LadderPlan>& ladders, const std::vector<int>& from_bits,
    const std::vector<int>& to_bits, const ImageSet& calibration, const CalibrationOptions& options,
    RefinementLosses* losses = nullptr);

// The tensors of `sensitivity` by loss_increase / refinement_bytes (bytes
// indexed by tensor), most first, none valued below `floor_per_byte`
// (those keep their order among themselves): the order alone, measuring
// nothing.
std::vector<std::size_t> refinement_order(
    const std::vector<TensorSensitivity>& sensitivity,
    const std::vector<std::uint64_t>& refinement_bytes,
    double floor_per_byte = -std::numeric_limits<double>::infinity());

// plan_refinement with each tensor's own from and to bits: the tensors of
// `sensitivity` go from from_bits[t] to to_bits[t], every other tensor
// stays at to_bits[t]. No tensor is valued below `floor_per_byte` (loss per
// byte): those measured below it keep their order among themselves, which
// is the order of `sensitivity` (refinement_order).
RefinementPlan plan_refinement(const Model& model, const std::vector<LadderPlan>& ladders,
                               const std::vector<int>& from_bits, const std::vector<int>& to_bits,
                               const std::vector<TensorSensitivity>& sensitivity,
                               const std::vector<std::uint64_t>& refinement_bytes,
                               const ImageSet& calibration, const CalibrationOptions& options,
                               double target_top1,
                               double floor_per_byte = -std::numeric_limits<double>::infinity());

// One way a tensor may be quantized for a budget: at `bits`, costing
// `bytes`, raising the calibration loss by `loss_increase`.
struct BitChoice {
    int bits = 0;
    std::uint64_t bytes = 0;
    double loss_increase = 0;
};

// Picks one choice per tensor so that the bytes total at most
// `budget_bytes` with the least summed loss increase: greedy upgrades along
// each tensor's lower convex hull of (bytes, loss), best loss decrease per
// byte first, then any single change that still fits and lowers the loss.
// Returns the index of the chosen choice for each tensor. Throws Error when
// even the smallest choices exceed the budget.
std::vector<std::size_t> allocate_bits(const std::vector<std::vector<BitChoice>>& choices,
                                       std::uint64_t budget_bytes);

}  // namespace bitinc
