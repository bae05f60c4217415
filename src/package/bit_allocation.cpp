// Mixed precision: the base rung's bit allocation under a byte budget.
#include "package/bit_allocation.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <iterator>
#include <string>

#include "bitinc/calibration.hpp"
#include "bitinc/codec.hpp"
#include "bitinc/error.hpp"
#include "core/parallel.hpp"

namespace bitinc {

namespace {

// A loss increase this small (nats of mean cross-entropy) counts as none:
// once a tensor's base costs no more at some bit depth, its higher bit
// depths are taken to cost the same instead of being measured (fewer
// engine runs; a tensor's loss rarely rises again with more bits).
constexpr double negligible_loss_increase = 1e-4;

// The bytes of `tensor`'s units, chunk by chunk, at `rung`.
std::uint64_t level_bytes(const std::vector<UnitTarget>& chunks, const QuantizedTensor& rung,
                          CoderChoice coder) {
    std::uint64_t bytes = 0;
    for (const UnitTarget& chunk : chunks) bytes += encode_level_unit(chunk, rung, coder).size();
    return bytes;
}

std::vector<int> checked_candidates(const PackBudget& budget, const LadderPlan& plan) {
    if (plan.bits.size() < 2) {
        throw Error(ErrorCode::invalid_argument,
                    "pack: a budget needs a ladder of at least two rungs (e.g. 4,8,16)");
    }
    std::vector<int> candidates = budget.candidate_bits;
    std::sort(candidates.begin(), candidates.end());
    candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
    if (candidates.empty())
        throw Error(ErrorCode::invalid_argument,
                    "pack: the budget has no base bit depths to choose from");
    for (const int bits : candidates) {
        if (bits < min_ladder_bits || bits >= plan.top_bits()) {
            throw Error(ErrorCode::invalid_argument,
                        "pack: a budget's base bits must lie from 2 to below the ladder's top (" +
                            std::to_string(plan.top_bits()) + "), not " + std::to_string(bits));
        }
    }
    return candidates;
}

}  // namespace

void check_budget(const PackBudget& budget, const LadderPlan& plan) {
    checked_candidates(budget, plan);
    if (!(budget.bytes > 0 || (budget.ratio > 0 && std::isfinite(budget.ratio)))) {
        throw Error(ErrorCode::invalid_argument,
                    "pack: the budget is neither a byte count nor a positive ratio");
    }
}

PackBudget parse_pack_budget(std::string_view text) {
    const std::string quoted = "budget '" + std::string(text) + "'";
    const auto fail = [&]() -> PackBudget {
        throw Error(ErrorCode::invalid_argument,
                    quoted +
                        ": expected bytes (800000, 800kB, 1.5MB) or a ratio of the direct top rung "
                        "(0.2x)");
    };
    // A plain decimal number first: digits, at most one point (no sign,
    // exponent, "inf" or "nan").
    std::size_t end = 0;
    bool point = false;
    while (end < text.size() &&
           (std::isdigit(static_cast<unsigned char>(text[end])) || (text[end] == '.' && !point))) {
        point |= text[end] == '.';
        ++end;
    }
    if (end == 0 || !std::isdigit(static_cast<unsigned char>(text[0]))) return fail();
    double number = 0;
    const auto [stop, error] =
        std::from_chars(text.data(), text.data() + end, number, std::chars_format::fixed);
    if (error != std::errc() || stop != text.data() + end || !std::isfinite(number)) return fail();
    const std::string_view unit = text.substr(end);
    PackBudget budget;
    if (unit == "x") {
        if (!(number > 0) || number > 1000)
            throw Error(ErrorCode::invalid_argument, quoted + ": the ratio must be above 0");
        budget.ratio = number;
        return budget;
    }
    static constexpr std::pair<std::string_view, double> units[] = {
        {"", 1},     {"B", 1},        {"kB", 1e3},        {"KB", 1e3},          {"MB", 1e6},
        {"GB", 1e9}, {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0}};
    const auto found = std::find_if(std::begin(units), std::end(units),
                                    [&](const auto& entry) { return entry.first == unit; });
    if (found == std::end(units)) return fail();
    const double bytes = std::floor(number * found->second);
    if (!(bytes >= 1) || bytes > 9e15)
        throw Error(ErrorCode::invalid_argument, quoted + ": the budget must be at least 1 byte");
    budget.bytes = std::uint64_t(bytes);
    return budget;
}

BitAllocation choose_base_bits(const std::filesystem::path& model_path, const LadderPlan& plan,
                               std::uint64_t chunk_elements, const PackBudget& budget,
                               const ImageSet& images, int threads, CoderChoice coder) {
    check_budget(budget, plan);
    const std::vector<int> candidates = checked_candidates(budget, plan);
    const Model model = read_onnx_file(model_path);
    chunk_elements = std::clamp<std::uint64_t>(chunk_elements, 1, max_unit_elements);

    // Bytes: what every tensor's base units cost at each candidate, and the
    // fixed part of the base rung (topology, exact units).
    BitAllocation allocation;
    allocation.base_bits.assign(model.weights.size(), 0);
    std::uint64_t fixed = model.topology.size();
    std::uint64_t uniform_levels = 0, top_levels = 0;
    std::vector<std::size_t> quantized;
    std::vector<std::vector<BitChoice>> choices;
    for (std::size_t t = 0; t < model.weights.size(); ++t) {
        const Tensor& tensor = model.weights[t];
        const std::vector<UnitTarget> chunks =
            plan_chunks(std::uint32_t(t), tensor.element_count(), chunk_elements);
        if (!plan.quantizes(tensor)) {
            for (const UnitTarget& chunk : chunks)
                fixed += encode_exact_unit(chunk, tensor.values).size();
            continue;
        }
        quantized.push_back(t);
        // Candidates in parallel; the last two jobs are the uniform
        // ladder's base and top, for the ratio and the comparison.
        std::vector<std::uint64_t> bytes(candidates.size() + 2, 0);
        core::run_parallel(bytes.size(), threads, [&](std::size_t i) {
            if (i < candidates.size()) {
                bytes[i] = level_bytes(
                    chunks, quantize_ladder(tensor, plan.with_base(candidates[i]))[0], coder);
            } else {
                const std::vector<QuantizedTensor> rungs = quantize_ladder(tensor, plan);
                bytes[i] = level_bytes(
                    chunks, i == candidates.size() ? rungs.front() : rungs.back(), coder);
            }
        });
        uniform_levels += bytes[candidates.size()];
        top_levels += bytes[candidates.size() + 1];
        std::vector<BitChoice> tensor_choices;
        for (std::size_t i = 0; i < candidates.size(); ++i)
            tensor_choices.push_back({candidates[i], bytes[i], 0.0});
        choices.push_back(std::move(tensor_choices));
    }
    allocation.reference_bytes = fixed + top_levels;
    allocation.uniform_base_bytes = fixed + uniform_levels;
    allocation.budget_bytes =
        budget.bytes > 0 ? budget.bytes
                         : std::uint64_t(budget.ratio * double(allocation.reference_bytes));
    if (allocation.budget_bytes <= fixed) {
        throw Error(ErrorCode::invalid_argument,
                    "pack: the budget of " + std::to_string(allocation.budget_bytes) +
                        " bytes does not even hold the topology and exact tensors (" +
                        std::to_string(fixed) + " bytes)");
    }

    // Loss: each tensor alone at each candidate, on the training images,
    // lowest bits first; a tensor that stops costing anything is not
    // measured further.
    CalibrationOptions options;
    options.images = budget.calibration.images;
    options.engine.threads = budget.calibration.engine_threads;
    std::vector<bool> settled(quantized.size(), false);
    for (std::size_t c = 0; c < candidates.size(); ++c) {
        const LadderPlan ladder = plan.with_base(candidates[c]);
        std::vector<int> bits(model.weights.size(), 0);
        for (std::size_t q = 0; q < quantized.size(); ++q) {
            if (settled[q]) {
                choices[q][c].loss_increase = choices[q][c - 1].loss_increase;
            } else {
                bits[quantized[q]] = candidates[c];
            }
        }
        if (std::all_of(bits.begin(), bits.end(), [](int b) { return b == 0; })) continue;
        const std::vector<LadderPlan> ladders(model.weights.size(), ladder);
        const std::vector<TensorSensitivity> measured =
            measure_sensitivity(model, ladders, bits, images, options);
        for (const TensorSensitivity& entry : measured) {
            const std::size_t q = std::size_t(
                std::find(quantized.begin(), quantized.end(), entry.tensor) - quantized.begin());
            choices[q][c].loss_increase = entry.loss_increase;
            settled[q] = entry.loss_increase < negligible_loss_increase;
        }
        if (budget.progress) budget.progress(c + 1, candidates.size());
    }

    const std::vector<std::size_t> picked = allocate_bits(choices, allocation.budget_bytes - fixed);
    allocation.base_bytes = fixed;
    for (std::size_t q = 0; q < quantized.size(); ++q) {
        const BitChoice& choice = choices[q][picked[q]];
        allocation.base_bits[quantized[q]] = choice.bits;
        allocation.base_bytes += choice.bytes;
        allocation.loss_increase += choice.loss_increase;
    }
    return allocation;
}

}  // namespace bitinc
