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
    if (total == 0) throw Error(ErrorCode::invalid_argument, "calibration: no images");
    const std::size_t batch_size = std::max<std::size_t>(1, options.batch_size);
    CalibrationLoss result;
    result.image_cross_entropy.reserve(total);
    result.image_correct.reserve(total);
    double cross_entropy = 0;
    std::size_t correct = 0;
    for (std::size_t first = 0; first < total; first += batch_size) {
        const std::size_t count = std::min(batch_size, total - first);
        const FloatArray scores = engine->run(make_input_batch(spec, images, first, count));
        if (scores.shape.size() != 2 || scores.shape[0] != std::int64_t(count) ||
            scores.shape[1] != std::int64_t(calibration_classes)) {
            throw Error(ErrorCode::unsupported,
                        "calibration: the model's output is not a [batch, " +
                            std::to_string(calibration_classes) + "] array of scores");
        }
        for (std::size_t n = 0; n < count; ++n) {
            const float* row = scores.values.data() + n * calibration_classes;
            const std::size_t label = images.labels[first + n];
            const double loss = row_cross_entropy(row, calibration_classes, label);
            const bool right =
                std::size_t(std::max_element(row, row + calibration_classes) - row) == label;
            cross_entropy += loss;
            correct += right;
            result.image_cross_entropy.push_back(loss);
            result.image_correct.push_back(right);
        }
    }
    result.cross_entropy = cross_entropy / double(total);
    result.top1_percent = 100.0 * double(correct) / double(total);
    return result;
}

double paired_standard_error(const std::vector<double>& a, const std::vector<double>& b) {
    const std::size_t count = std::min(a.size(), b.size());
    if (count < 2) return 0;
    double sum = 0, sum_of_squares = 0;
    for (std::size_t i = 0; i < count; ++i) {
        const double difference = a[i] - b[i];
        sum += difference;
        sum_of_squares += difference * difference;
    }
    const double mean = sum / double(count);
    const double variance =
        std::max(0.0, (sum_of_squares - double(count) * mean * mean) / double(count - 1));
    return std::sqrt(variance / double(count));
}

namespace {

// The float32 weights of `tensor` at its `bits` rung of `plan`.
std::vector<float> rung_values(const Tensor& tensor, const LadderPlan& plan, int bits) {
    const auto rung = std::find(plan.bits.begin(), plan.bits.end(), bits);
    if (rung == plan.bits.end()) {
        throw Error(ErrorCode::invalid_argument,
                    "calibration: " + std::to_string(bits) + " bits is not a rung of the ladder");
    }
    return reconstruct(quantize_ladder(tensor, plan)[std::size_t(rung - plan.bits.begin())]);
}

// A tensor's value as a refinement: the larger of what refining it wins
// back first and last in its step. Either alone misjudges tensors whose
// errors cancel or compound with their neighbours' (in MobileNetV2 a 4-bit
// expansion conv refined alone among 4-bit neighbours raises the loss, yet
// the 8-bit model needs it), and a tensor the step needs at either end is
// worth its bytes.
//
// Each end counts at its measured gain plus two standard errors: a gain the
// ranking images cannot tell from zero may still be real, and for a cheap
// tensor that benefit of the doubt costs few bytes of delay, so cheap
// tensors of uncertain value go before large ones of modest value instead
// of last (ResNet18's and MobileNetV2's cheap early convs).
double combined_gain(const TensorSensitivity& entry) {
    return std::max(entry.gain_first + refinement_gain_optimism * entry.gain_first_error,
                    entry.gain_last + refinement_gain_optimism * entry.gain_last_error);
}

int bits_of(const std::vector<int>& bits, std::size_t tensor) {
    return tensor < bits.size() ? bits[tensor] : 0;
}

// The uniform ladder as per-tensor ladders and bits: `plan` and `bits` for
// each tensor it quantizes, float32 for the others.
std::pair<std::vector<LadderPlan>, std::vector<int>> uniform(const Model& model,
                                                             const LadderPlan& plan, int bits) {
    std::vector<LadderPlan> ladders(model.weights.size(), plan);
    std::vector<int> tensor_bits(model.weights.size(), 0);
    for (std::size_t t = 0; t < model.weights.size(); ++t) {
        if (plan.quantizes(model.weights[t])) tensor_bits[t] = bits;
    }
    return {std::move(ladders), std::move(tensor_bits)};
}

}  // namespace

Model with_tensor_at_rung(Model model, std::size_t tensor, const LadderPlan& plan, int bits) {
    if (tensor >= model.weights.size())
        throw Error(ErrorCode::invalid_argument, "calibration: no such tensor");
    model.weights[tensor].values = rung_values(model.weights[tensor], plan, bits);
    return model;
}

Model with_tensors_at(Model model, const std::vector<LadderPlan>& ladders,
                      const std::vector<int>& bits) {
    for (std::size_t t = 0; t < model.weights.size(); ++t) {
        if (bits_of(bits, t) == 0) continue;
        if (t >= ladders.size())
            throw Error(ErrorCode::invalid_argument, "calibration: a tensor has no ladder");
        model.weights[t].values = rung_values(model.weights[t], ladders[t], bits[t]);
    }
    return model;
}

std::vector<TensorSensitivity> measure_sensitivity(const Model& model,
                                                   const std::vector<LadderPlan>& ladders,
                                                   const std::vector<int>& bits,
                                                   const ImageSet& calibration,
                                                   const CalibrationOptions& options) {
    std::vector<std::size_t> measured;
    for (std::size_t t = 0; t < model.weights.size(); ++t) {
        if (bits_of(bits, t) > 0) measured.push_back(t);
    }
    if (ladders.size() < model.weights.size())
        throw Error(ErrorCode::invalid_argument, "calibration: a tensor has no ladder");
    const std::size_t total = measured.size() + 1;
    const double reference = calibration_loss(model, calibration, options).cross_entropy;
    if (options.progress) options.progress(1, total);
    std::vector<TensorSensitivity> result;
    for (const std::size_t t : measured) {
        TensorSensitivity entry;
        entry.tensor = t;
        entry.name = model.weights[t].name;
        entry.elements = model.weights[t].element_count();
        entry.loss_increase = calibration_loss(with_tensor_at_rung(model, t, ladders[t], bits[t]),
                                               calibration, options)
                                  .cross_entropy -
                              reference;
        result.push_back(std::move(entry));
        if (options.progress) options.progress(result.size() + 1, total);
    }
    return result;
}

std::vector<TensorSensitivity> measure_refinement_gain(
    const Model& model, const std::vector<LadderPlan>& ladders, const std::vector<int>& from_bits,
    const std::vector<int>& to_bits, const ImageSet& calibration, const CalibrationOptions& options,
    RefinementLosses* losses) {
    if (ladders.size() < model.weights.size())
        throw Error(ErrorCode::invalid_argument, "calibration: a tensor has no ladder");
    std::vector<std::size_t> measured;
    for (std::size_t t = 0; t < model.weights.size(); ++t) {
        if (bits_of(from_bits, t) > 0 && bits_of(to_bits, t) != bits_of(from_bits, t))
            measured.push_back(t);
    }
    const std::size_t total = 2 * measured.size() + 2;
    std::size_t done = 0;
    const auto loss = [&](const Model& m) {
        CalibrationLoss value = calibration_loss(m, calibration, options);
        if (options.progress) options.progress(++done, total);
        return value;
    };
    // The model as the device holds it before the step (every tensor at its
    // from bits, float32 where 0) and after it (at its to bits).
    const Model before = with_tensors_at(model, ladders, from_bits);
    const Model after = with_tensors_at(model, ladders, to_bits);
    const CalibrationLoss before_loss = loss(before);
    const CalibrationLoss after_loss = loss(after);
    if (losses != nullptr) *losses = {before_loss.cross_entropy, after_loss.cross_entropy};
    std::vector<TensorSensitivity> result;
    Model first = before;
    Model last = after;
    for (const std::size_t t : measured) {
        TensorSensitivity entry;
        entry.tensor = t;
        entry.name = model.weights[t].name;
        entry.elements = model.weights[t].element_count();
        first.weights[t].values = after.weights[t].values;
        const CalibrationLoss first_loss = loss(first);
        entry.gain_first = before_loss.cross_entropy - first_loss.cross_entropy;
        entry.gain_first_error =
            paired_standard_error(before_loss.image_cross_entropy, first_loss.image_cross_entropy);
        first.weights[t].values = before.weights[t].values;
        last.weights[t].values = before.weights[t].values;
        const CalibrationLoss last_loss = loss(last);
        entry.gain_last = last_loss.cross_entropy - after_loss.cross_entropy;
        entry.gain_last_error =
            paired_standard_error(last_loss.image_cross_entropy, after_loss.image_cross_entropy);
        last.weights[t].values = after.weights[t].values;
        entry.loss_increase = combined_gain(entry);
        result.push_back(std::move(entry));
    }
    return result;
}

std::vector<TensorSensitivity> measure_sensitivity(const Model& model, const LadderPlan& plan,
                                                   int bits, const ImageSet& calibration,
                                                   const CalibrationOptions& options) {
    const auto [ladders, tensor_bits] = uniform(model, plan, bits);
    return measure_sensitivity(model, ladders, tensor_bits, calibration, options);
}

double top1_at_rung(const Model& model, const LadderPlan& plan, int bits,
                    const ImageSet& calibration, const CalibrationOptions& options) {
    const auto [ladders, tensor_bits] = uniform(model, plan, bits);
    return calibration_loss(with_tensors_at(model, ladders, tensor_bits), calibration, options)
        .top1_percent;
}

RefinementPlan plan_refinement(const Model& model, const LadderPlan& plan, int from_bits,
                               int to_bits, const std::vector<TensorSensitivity>& sensitivity,
                               const std::vector<std::uint64_t>& refinement_bytes,
                               const ImageSet& calibration, const CalibrationOptions& options,
                               double target_top1) {
    const auto [ladders, from] = uniform(model, plan, from_bits);
    const std::vector<int> to = uniform(model, plan, to_bits).second;
    return plan_refinement(model, ladders, from, to, sensitivity, refinement_bytes, calibration,
                           options, target_top1);
}

std::vector<std::size_t> refinement_order(const std::vector<TensorSensitivity>& sensitivity,
                                          const std::vector<std::uint64_t>& refinement_bytes,
                                          double floor_per_byte) {
    const auto value = [&](const TensorSensitivity& entry) {
        const std::uint64_t bytes =
            entry.tensor < refinement_bytes.size() ? refinement_bytes[entry.tensor] : 0;
        return std::max(entry.loss_increase / double(std::max<std::uint64_t>(bytes, 1)),
                        floor_per_byte);
    };
    std::vector<TensorSensitivity> ranked = sensitivity;
    std::stable_sort(ranked.begin(), ranked.end(),
                     [&](const auto& a, const auto& b) { return value(a) > value(b); });
    std::vector<std::size_t> order;
    for (const TensorSensitivity& entry : ranked) order.push_back(entry.tensor);
    return order;
}

RefinementPlan plan_refinement(const Model& model, const std::vector<LadderPlan>& ladders,
                               const std::vector<int>& from_bits, const std::vector<int>& to_bits,
                               const std::vector<TensorSensitivity>& sensitivity,
                               const std::vector<std::uint64_t>& refinement_bytes,
                               const ImageSet& calibration, const CalibrationOptions& options,
                               double target_top1, double floor_per_byte) {
    RefinementPlan result;
    result.order = refinement_order(sensitivity, refinement_bytes, floor_per_byte);

    // The model with the first `prefix` tensors of the order at to_bits and
    // the others at from_bits (tensors outside the order at to_bits too: a
    // caller orders every tensor the step refines); its top-1, measured once.
    const Model refined = with_tensors_at(model, ladders, to_bits);
    std::vector<std::optional<double>> measured(result.order.size() + 1);
    const auto top1_at = [&](std::size_t prefix) {
        if (!measured[prefix]) {
            Model mixed = refined;
            for (std::size_t i = prefix; i < result.order.size(); ++i) {
                const std::size_t t = result.order[i];
                mixed.weights[t].values =
                    rung_values(model.weights[t], ladders.at(t), bits_of(from_bits, t));
            }
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

std::vector<std::size_t> allocate_bits(const std::vector<std::vector<BitChoice>>& choices,
                                       std::uint64_t budget_bytes) {
    // Each tensor's choices in order of bytes, keeping only those that lower
    // the loss (the Pareto front), then its lower convex hull: upgrades along
    // the hull have falling loss decrease per byte, so taking the best one
    // next is the classic greedy for the multiple-choice knapsack.
    struct Front {
        std::vector<std::size_t> pareto;  // indices into the tensor's choices
        std::vector<std::size_t> hull;    // positions in `pareto`
        std::size_t at = 0;               // position in `hull`
    };
    std::vector<Front> fronts(choices.size());
    std::uint64_t spent = 0;
    for (std::size_t t = 0; t < choices.size(); ++t) {
        const std::vector<BitChoice>& options = choices[t];
        if (options.empty())
            throw Error(ErrorCode::internal, "bit allocation: a tensor has no choices");
        std::vector<std::size_t> order(options.size());
        for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
        std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
            return options[a].bytes != options[b].bytes
                       ? options[a].bytes < options[b].bytes
                       : options[a].loss_increase < options[b].loss_increase;
        });
        Front& front = fronts[t];
        for (const std::size_t i : order) {
            if (front.pareto.empty() ||
                options[i].loss_increase < options[front.pareto.back()].loss_increase)
                front.pareto.push_back(i);
        }
        const auto point = [&](std::size_t p) { return options[front.pareto[p]]; };
        for (std::size_t p = 0; p < front.pareto.size(); ++p) {
            // Drop the last hull point while it lies on or above the segment
            // from the one before it to p.
            while (front.hull.size() >= 2) {
                const BitChoice a = point(front.hull[front.hull.size() - 2]);
                const BitChoice b = point(front.hull.back());
                const BitChoice c = point(p);
                const double slope_ab =
                    (a.loss_increase - b.loss_increase) / double(b.bytes - a.bytes);
                const double slope_bc =
                    (b.loss_increase - c.loss_increase) / double(c.bytes - b.bytes);
                if (slope_bc < slope_ab) break;
                front.hull.pop_back();
            }
            front.hull.push_back(p);
        }
        spent += point(0).bytes;
    }
    if (spent > budget_bytes) {
        throw Error(ErrorCode::invalid_argument,
                    "the budget of " + std::to_string(budget_bytes) +
                        " bytes for quantized weights is below the smallest allocation (" +
                        std::to_string(spent) + " bytes)");
    }
    const auto chosen = [&](std::size_t t) {
        return choices[t][fronts[t].pareto[fronts[t].hull[fronts[t].at]]];
    };
    // Greedy along the hulls: the upgrade with the best loss decrease per
    // byte; a tensor whose next upgrade does not fit is done (later hull
    // points cost more still).
    std::vector<bool> done(choices.size(), false);
    while (true) {
        std::optional<std::size_t> best;
        double best_rate = 0;
        for (std::size_t t = 0; t < choices.size(); ++t) {
            const Front& front = fronts[t];
            if (done[t] || front.at + 1 >= front.hull.size()) continue;
            const BitChoice now = chosen(t);
            const BitChoice next = choices[t][front.pareto[front.hull[front.at + 1]]];
            const double rate =
                (now.loss_increase - next.loss_increase) / double(next.bytes - now.bytes);
            if (!best || rate > best_rate) {
                best = t;
                best_rate = rate;
            }
        }
        if (!best) break;
        const BitChoice now = chosen(*best);
        const BitChoice next =
            choices[*best][fronts[*best].pareto[fronts[*best].hull[fronts[*best].at + 1]]];
        if (spent - now.bytes + next.bytes > budget_bytes) {
            done[*best] = true;
            continue;
        }
        spent = spent - now.bytes + next.bytes;
        ++fronts[*best].at;
    }
    std::vector<std::size_t> result(choices.size());
    for (std::size_t t = 0; t < choices.size(); ++t)
        result[t] = fronts[t].pareto[fronts[t].hull[fronts[t].at]];
    // What is left over may still buy a choice off the hull: take single
    // changes that fit and lower the loss most, until none does.
    while (true) {
        std::optional<std::pair<std::size_t, std::size_t>> best;
        double best_gain = 0;
        for (std::size_t t = 0; t < choices.size(); ++t) {
            const BitChoice now = choices[t][result[t]];
            for (std::size_t i = 0; i < choices[t].size(); ++i) {
                const BitChoice& other = choices[t][i];
                const double gain = now.loss_increase - other.loss_increase;
                if (gain > best_gain && spent - now.bytes + other.bytes <= budget_bytes) {
                    best = {t, i};
                    best_gain = gain;
                }
            }
        }
        if (!best) break;
        spent = spent - choices[best->first][result[best->first]].bytes +
                choices[best->first][best->second].bytes;
        result[best->first] = best->second;
    }
    return result;
}

}  // namespace bitinc
