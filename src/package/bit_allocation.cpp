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
    const auto valid = [](std::uint64_t bytes, double ratio) {
        return bytes > 0 || (ratio > 0 && std::isfinite(ratio));
    };
    if (!valid(budget.bytes, budget.ratio)) {
        throw Error(ErrorCode::invalid_argument,
                    "pack: the budget is neither a byte count nor a positive ratio");
    }
    // The top rung is every tensor at the top bits: no choice to budget.
    const std::size_t below_top = plan.bits.size() - 2;
    if (budget.refinements.size() > below_top) {
        throw Error(ErrorCode::invalid_argument,
                    "pack: the budget names " + std::to_string(budget.refinements.size() + 1) +
                        " rungs, but the ladder has " + std::to_string(below_top + 1) +
                        " below its top (one allowance each, base first)");
    }
    for (const PackBudget::Allowance& allowance : budget.refinements) {
        if (!valid(allowance.bytes, allowance.ratio)) {
            throw Error(ErrorCode::invalid_argument,
                        "pack: a refinement rung's budget is neither a byte count nor a positive "
                        "ratio");
        }
    }
}

namespace {

// One allowance: bytes with an optional unit, or a ratio ending in 'x'.
PackBudget::Allowance parse_allowance(std::string_view text) {
    const std::string quoted = "budget '" + std::string(text) + "'";
    const auto fail = [&]() -> PackBudget::Allowance {
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
    PackBudget::Allowance allowance;
    if (unit == "x") {
        if (!(number > 0) || number > 1000)
            throw Error(ErrorCode::invalid_argument, quoted + ": the ratio must be above 0");
        allowance.ratio = number;
        return allowance;
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
    allowance.bytes = std::uint64_t(bytes);
    return allowance;
}

}  // namespace

PackBudget parse_pack_budget(std::string_view text) {
    PackBudget budget;
    bool first = true;
    while (true) {
        const std::size_t comma = text.find(',');
        const PackBudget::Allowance allowance = parse_allowance(text.substr(0, comma));
        if (first) {
            budget.bytes = allowance.bytes;
            budget.ratio = allowance.ratio;
            first = false;
        } else {
            budget.refinements.push_back(allowance);
        }
        if (comma == std::string_view::npos) return budget;
        text.remove_prefix(comma + 1);
    }
}

namespace {

std::uint64_t allowance_bytes(std::uint64_t bytes, double ratio, std::uint64_t reference) {
    return bytes > 0 ? bytes : std::uint64_t(ratio * double(reference));
}

// A tensor's bits after every rung when its bits at the first rungs are
// `chosen` (base first): the rungs above are max(the last chosen, the
// ladder's rung).
std::vector<int> bits_with_chosen(const LadderPlan& plan, const std::vector<int>& chosen) {
    std::vector<int> bits = chosen;
    for (std::size_t i = chosen.size(); i < plan.bits.size(); ++i)
        bits.push_back(std::max(bits.back(), plan.bits[i]));
    return bits;
}

// What a tensor's units cost on its own ladder (`bits` after each rung), as
// pack codes them, for rungs `first` to `last` (inclusive): the base rung's
// levels, then each rung's refinement (0 where its bits do not rise).
std::vector<std::uint64_t> unit_bytes_by_rung(const Tensor& tensor,
                                              const std::vector<UnitTarget>& chunks,
                                              const LadderPlan& plan, const std::vector<int>& bits,
                                              std::size_t first, std::size_t last,
                                              CoderChoice coder) {
    const LadderPlan own = plan.with_rung_bits(bits);
    const std::vector<QuantizedTensor> quantized = quantize_ladder(tensor, own);
    const auto rung_of = [&](int b) -> const QuantizedTensor& {
        return quantized[std::size_t(std::find(own.bits.begin(), own.bits.end(), b) -
                                     own.bits.begin())];
    };
    std::vector<std::uint64_t> bytes(last + 1, 0);
    if (first == 0) bytes[0] = level_bytes(chunks, quantized.front(), coder);
    for (std::size_t i = std::max<std::size_t>(first, 1); i <= last; ++i) {
        if (bits[i] == bits[i - 1]) continue;
        for (const UnitTarget& chunk : chunks) {
            bytes[i] +=
                encode_refinement_unit(chunk, rung_of(bits[i - 1]), rung_of(bits[i]), coder).size();
        }
    }
    return bytes;
}

}  // namespace

BitAllocation choose_tensor_bits(const std::filesystem::path& model_path, const LadderPlan& plan,
                                 std::uint64_t chunk_elements, const PackBudget& budget,
                                 const ImageSet& images, int threads, CoderChoice coder) {
    check_budget(budget, plan);
    const std::vector<int> candidates = checked_candidates(budget, plan);
    const Model model = read_onnx_file(model_path);
    chunk_elements = std::clamp<std::uint64_t>(chunk_elements, 1, max_unit_elements);
    const auto chunks_of = [&](std::size_t t) {
        return plan_chunks(std::uint32_t(t), model.weights[t].element_count(), chunk_elements);
    };

    // Bytes: what every tensor's base units cost at each candidate, and the
    // fixed part of the base rung (topology, exact units).
    std::vector<std::size_t> quantized;           // tensor indices
    std::vector<std::vector<BitChoice>> choices;  // by quantized tensor, by candidate
    std::uint64_t fixed = model.topology.size();  // topology and exact units
    std::uint64_t uniform_levels = 0, top_levels = 0;
    for (std::size_t t = 0; t < model.weights.size(); ++t) {
        const Tensor& tensor = model.weights[t];
        const std::vector<UnitTarget> chunks = chunks_of(t);
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

    BitAllocation allocation;
    allocation.reference_bytes = fixed + top_levels;
    allocation.uniform_base_bytes = fixed + uniform_levels;
    allocation.budget_bytes =
        allowance_bytes(budget.bytes, budget.ratio, allocation.reference_bytes);
    if (allocation.budget_bytes <= fixed) {
        throw Error(ErrorCode::invalid_argument,
                    "pack: the budget of " + std::to_string(allocation.budget_bytes) +
                        " bytes does not even hold the topology and exact tensors (" +
                        std::to_string(fixed) + " bytes)");
    }
    std::vector<std::uint64_t> later_budgets;
    for (const PackBudget::Allowance& allowance : budget.refinements) {
        later_budgets.push_back(
            allowance_bytes(allowance.bytes, allowance.ratio, allocation.reference_bytes));
        const std::uint64_t below =
            later_budgets.size() == 1 ? allocation.budget_bytes : later_budgets.end()[-2];
        if (later_budgets.back() <= below) {
            throw Error(ErrorCode::invalid_argument,
                        "pack: rung " + std::to_string(later_budgets.size()) + "'s budget of " +
                            std::to_string(later_budgets.back()) +
                            " bytes is not above the one below it (" + std::to_string(below) +
                            "); each allowance counts the rungs below it too");
        }
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
        const std::vector<TensorSensitivity> sensitivity =
            measure_sensitivity(model, ladders, bits, images, options);
        for (const TensorSensitivity& entry : sensitivity) {
            const std::size_t q = std::size_t(
                std::find(quantized.begin(), quantized.end(), entry.tensor) - quantized.begin());
            choices[q][c].loss_increase = entry.loss_increase;
            settled[q] = entry.loss_increase < negligible_loss_increase;
        }
        if (budget.progress) budget.progress(c + 1, candidates.size());
    }
    const auto candidate_index = [&](int bits) {
        return std::size_t(std::find(candidates.begin(), candidates.end(), bits) -
                           candidates.begin());
    };

    // Rung by rung: the base on its candidates' bytes, then each budgeted
    // refinement rung on what lifting each tensor from where it is costs.
    // A tensor's indices on a rung depend on the rungs of its own ladder
    // above it (each is divided down from the next), so once all rungs are
    // chosen the bytes are coded again on the final ladders. If that
    // overruns an allowance, everything is chosen again, with each base
    // priced at what it coded to and then with a margin that doubles.
    std::vector<std::uint64_t> allowances{allocation.budget_bytes};
    allowances.insert(allowances.end(), later_budgets.begin(), later_budgets.end());
    const std::size_t budgeted = allowances.size();
    std::vector<std::uint64_t> margins(budgeted, 0);
    const auto throw_unmet_budgets = [] {
        throw Error(ErrorCode::invalid_argument,
                    "pack: no bit allocation meets the budgets once coded on each tensor's final "
                    "ladder; give the base or each rung more room");
    };
    for (int attempt = 0;; ++attempt) {
        std::vector<std::vector<int>> chosen(quantized.size());
        std::vector<double> rung_loss(budgeted, 0.0);
        {
            // A margin may leave the base no room past its fixed part.
            if (allowances[0] <= fixed) throw_unmet_budgets();
            const std::vector<std::size_t> picked = allocate_bits(choices, allowances[0] - fixed);
            for (std::size_t q = 0; q < quantized.size(); ++q) {
                chosen[q].push_back(choices[q][picked[q]].bits);
                rung_loss[0] += choices[q][picked[q]].loss_increase;
            }
        }
        std::uint64_t spent = 0;  // planned bytes of the rungs chosen so far
        for (std::size_t q = 0; q < quantized.size(); ++q)
            spent += choices[q][candidate_index(chosen[q][0])].bytes;
        spent += fixed;
        for (std::size_t rung = 1; rung < budgeted; ++rung) {
            if (allowances[rung] <= spent) {
                throw Error(ErrorCode::invalid_argument,
                            "pack: rung " + std::to_string(rung) + "'s budget of " +
                                std::to_string(allowances[rung]) +
                                " bytes leaves nothing after the rungs below it (" +
                                std::to_string(spent) + " bytes)");
            }
            std::vector<std::vector<BitChoice>> lifts(quantized.size());
            for (std::size_t q = 0; q < quantized.size(); ++q) {
                const int from = chosen[q].back();
                std::vector<int> options_bits{from};
                for (const int bits : candidates)
                    if (bits > from) options_bits.push_back(bits);
                const std::size_t t = quantized[q];
                const std::vector<UnitTarget> chunks = chunks_of(t);
                lifts[q].resize(options_bits.size());
                core::run_parallel(options_bits.size(), threads, [&](std::size_t i) {
                    std::vector<int> with = chosen[q];
                    with.push_back(options_bits[i]);
                    const std::uint64_t bytes =
                        i == 0 ? 0
                               : unit_bytes_by_rung(model.weights[t], chunks, plan,
                                                    bits_with_chosen(plan, with), rung, rung,
                                                    coder)[rung];
                    lifts[q][i] = {options_bits[i], bytes,
                                   choices[q][candidate_index(options_bits[i])].loss_increase};
                });
            }
            const std::vector<std::size_t> picked = allocate_bits(lifts, allowances[rung] - spent);
            for (std::size_t q = 0; q < quantized.size(); ++q) {
                chosen[q].push_back(lifts[q][picked[q]].bits);
                spent += lifts[q][picked[q]].bytes;
                rung_loss[rung] += lifts[q][picked[q]].loss_increase;
            }
        }

        // The bytes on the final ladders, rung by rung (cumulative).
        allocation.base_bits.assign(model.weights.size(), 0);
        allocation.rung_bits.assign(model.weights.size(), {});
        std::vector<std::uint64_t> cumulative(budgeted, 0);
        cumulative[0] = fixed;
        std::vector<std::pair<std::size_t, std::uint64_t>> final_base_bytes(quantized.size());
        for (std::size_t q = 0; q < quantized.size(); ++q) {
            const std::size_t t = quantized[q];
            allocation.rung_bits[t] = bits_with_chosen(plan, chosen[q]);
            allocation.base_bits[t] = chosen[q][0];
            // A base-only budget is coded on the ladder it was priced on
            // (with_base): its planned bytes are already exact.
            if (budgeted == 1) {
                const std::size_t c = candidate_index(chosen[q][0]);
                cumulative[0] += choices[q][c].bytes;
                final_base_bytes[q] = {c, choices[q][c].bytes};
                continue;
            }
            const std::vector<std::uint64_t> bytes =
                unit_bytes_by_rung(model.weights[t], chunks_of(t), plan, allocation.rung_bits[t], 0,
                                   budgeted - 1, coder);
            for (std::size_t rung = 0; rung < budgeted; ++rung) cumulative[rung] += bytes[rung];
            // The next attempt plans this base at what it coded to here.
            final_base_bytes[q] = {candidate_index(chosen[q][0]), bytes[0]};
        }
        for (std::size_t rung = 1; rung < budgeted; ++rung)
            cumulative[rung] += cumulative[rung - 1];
        bool overrun = false;
        for (std::size_t rung = 0; rung < budgeted; ++rung) {
            const std::uint64_t limit =
                rung == 0 ? allocation.budget_bytes : later_budgets[rung - 1];
            if (cumulative[rung] <= limit) continue;
            overrun = true;
            // First plan each base at what it coded to; should the choice
            // still drift over, leave a margin that doubles until it fits.
            if (attempt == 0) continue;
            margins[rung] = std::max(2 * margins[rung], 2 * (cumulative[rung] - limit));
            allowances[rung] = limit - std::min(limit, margins[rung]);
        }
        if (overrun && attempt < 8) {
            for (std::size_t q = 0; q < quantized.size(); ++q)
                choices[q][final_base_bytes[q].first].bytes = final_base_bytes[q].second;
            continue;
        }
        if (overrun) throw_unmet_budgets();
        allocation.base_bytes = cumulative[0];
        allocation.loss_increase = rung_loss[0];
        allocation.refinements.clear();
        for (std::size_t rung = 1; rung < budgeted; ++rung) {
            allocation.refinements.push_back(
                {later_budgets[rung - 1], cumulative[rung], rung_loss[rung]});
        }
        return allocation;
    }
}

}  // namespace bitinc
