// Calibration loss and per-tensor sensitivity (include/bitinc/calibration.hpp).
#include "bitinc/calibration.hpp"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>

#include "bitinc/accuracy.hpp"
#include "bitinc/error.hpp"

namespace bitinc {

namespace {

// Fashion-MNIST: the only labelled set the calibration reads so far.
constexpr std::size_t calibration_classes = 10;

// Cross-entropy of one row of scores (logits) against its label, with the
// largest score subtracted first so that exp cannot overflow.
double row_cross_entropy(const float* row, std::size_t classes, std::size_t label) {
    const float largest = *std::max_element(row, row + classes);
    double sum = 0;
    for (std::size_t c = 0; c < classes; ++c) sum += std::exp(double(row[c]) - double(largest));
    return std::log(sum) - (double(row[label]) - double(largest));
}

}  // namespace

CalibrationLoss calibration_loss(const Model& model, const ImageSet& images,
                                 const CalibrationOptions& options) {
    const InputSpec spec = read_input_spec(model, "calibration model");
    check_model_fits_images(spec, images, "fashion-mnist", calibration_classes,
                            "calibration model");
    const std::unique_ptr<Engine> engine =
        create_opencv_engine(model, "calibration model", options.engine);
    const std::size_t total = std::min(options.images, images.count);
    if (total == 0) throw Error("calibration: no images");
    const std::size_t batch_size = std::max<std::size_t>(1, options.batch_size);
    double cross_entropy = 0;
    std::size_t correct = 0;
    for (std::size_t first = 0; first < total; first += batch_size) {
        const std::size_t count = std::min(batch_size, total - first);
        const FloatArray scores = engine->run(make_input_batch(spec, images, first, count));
        if (scores.shape.size() != 2 || scores.shape[0] != std::int64_t(count) ||
            scores.shape[1] != std::int64_t(calibration_classes)) {
            throw Error("calibration: the model's output is not a [batch, " +
                        std::to_string(calibration_classes) + "] array of scores");
        }
        for (std::size_t n = 0; n < count; ++n) {
            const float* row = scores.values.data() + n * calibration_classes;
            const std::size_t label = images.labels[first + n];
            cross_entropy += row_cross_entropy(row, calibration_classes, label);
            correct += std::size_t(std::max_element(row, row + calibration_classes) - row) == label;
        }
    }
    return {cross_entropy / double(total), 100.0 * double(correct) / double(total)};
}

namespace {

// The float32 weights of `tensor` at its `bits` rung of `plan`.
std::vector<float> rung_values(const Tensor& tensor, const LadderPlan& plan, int bits) {
    const auto rung = std::find(plan.bits.begin(), plan.bits.end(), bits);
    if (rung == plan.bits.end()) {
        throw Error("calibration: " + std::to_string(bits) + " bits is not a rung of the ladder");
    }
    return reconstruct(quantize_ladder(tensor, plan)[std::size_t(rung - plan.bits.begin())]);
}

}  // namespace

Model with_tensor_at_rung(Model model, std::size_t tensor, const LadderPlan& plan, int bits) {
    if (tensor >= model.weights.size()) throw Error("calibration: no such tensor");
    model.weights[tensor].values = rung_values(model.weights[tensor], plan, bits);
    return model;
}

std::vector<TensorSensitivity> measure_sensitivity(const Model& model, const LadderPlan& plan,
                                                   int bits, const ImageSet& calibration,
                                                   const CalibrationOptions& options) {
    std::vector<std::size_t> quantized;
    for (std::size_t t = 0; t < model.weights.size(); ++t) {
        if (plan.quantizes(model.weights[t])) quantized.push_back(t);
    }
    const std::size_t total = quantized.size() + 1;
    const double reference = calibration_loss(model, calibration, options).cross_entropy;
    if (options.progress) options.progress(1, total);
    std::vector<TensorSensitivity> result;
    for (const std::size_t t : quantized) {
        TensorSensitivity entry;
        entry.tensor = t;
        entry.name = model.weights[t].name;
        entry.elements = model.weights[t].element_count();
        entry.loss_increase =
            calibration_loss(with_tensor_at_rung(model, t, plan, bits), calibration, options)
                .cross_entropy -
            reference;
        result.push_back(std::move(entry));
        if (options.progress) options.progress(result.size() + 1, total);
    }
    return result;
}

double top1_at_rung(const Model& model, const LadderPlan& plan, int bits,
                    const ImageSet& calibration, const CalibrationOptions& options) {
    Model at_rung = model;
    for (std::size_t t = 0; t < model.weights.size(); ++t) {
        if (plan.quantizes(model.weights[t]))
            at_rung.weights[t].values = rung_values(model.weights[t], plan, bits);
    }
    return calibration_loss(at_rung, calibration, options).top1_percent;
}

RefinementPlan plan_refinement(const Model& model, const LadderPlan& plan, int from_bits,
                               int to_bits, const std::vector<TensorSensitivity>& sensitivity,
                               const std::vector<std::uint64_t>& refinement_bytes,
                               const ImageSet& calibration, const CalibrationOptions& options,
                               double target_top1) {
    const auto value = [&](const TensorSensitivity& entry) {
        const std::uint64_t bytes =
            entry.tensor < refinement_bytes.size() ? refinement_bytes[entry.tensor] : 0;
        return entry.loss_increase / double(std::max<std::uint64_t>(bytes, 1));
    };
    std::vector<TensorSensitivity> ranked = sensitivity;
    std::stable_sort(ranked.begin(), ranked.end(),
                     [&](const auto& a, const auto& b) { return value(a) > value(b); });
    RefinementPlan result;
    for (const TensorSensitivity& entry : ranked) result.order.push_back(entry.tensor);

    // The model with the first `prefix` tensors of the order at to_bits and
    // the others at from_bits (tensors outside the order at to_bits too: a
    // caller orders every quantized tensor); its top-1, measured once.
    Model refined = model;
    for (std::size_t t = 0; t < model.weights.size(); ++t) {
        if (plan.quantizes(model.weights[t]))
            refined.weights[t].values = rung_values(model.weights[t], plan, to_bits);
    }
    std::vector<std::optional<double>> measured(result.order.size() + 1);
    const auto top1_at = [&](std::size_t prefix) {
        if (!measured[prefix]) {
            Model mixed = refined;
            for (std::size_t i = prefix; i < result.order.size(); ++i)
                mixed.weights[result.order[i]].values =
                    rung_values(model.weights[result.order[i]], plan, from_bits);
            measured[prefix] = calibration_loss(mixed, calibration, options).top1_percent;
        }
        return *measured[prefix];
    };
    result.to_top1 = top1_at(result.order.size());
    result.from_top1 = top1_at(0);
    result.reaches = result.to_top1 >= target_top1;
    if (!result.reaches) return result;
    std::size_t low = 0, high = result.order.size();  // top1_at(high) meets the target
    while (low < high) {
        const std::size_t middle = low + (high - low) / 2;
        if (top1_at(middle) >= target_top1) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    result.accuracy_prefix = high;
    result.point_top1 = top1_at(high);
    return result;
}

}  // namespace bitinc
