// Mixed precision (issue 12): each quantized tensor's base bit depth,
// chosen so that the base rung fits a byte budget with the least loss.
#pragma once

#include <cstdint>
#include <filesystem>

#include "bitinc/codec.hpp"
#include "bitinc/dataset.hpp"
#include "bitinc/pack.hpp"

namespace bitinc {

// Throws Error if `budget` cannot apply to `plan` (a one-rung ladder, base
// bits outside 2 to below the top, neither bytes nor a ratio); pack checks
// it before reading anything.
void check_budget(const PackBudget& budget, const LadderPlan& plan);

// Codes every quantized tensor of the model at `model_path` at each of
// budget.candidate_bits (as the base of plan.with_base(bits), cut in chunks
// of `chunk_elements`), measures on `images` (training images) the loss each
// choice costs with that tensor alone quantized, and picks the base bits of
// each tensor with allocate_bits() so that the base rung file — topology,
// exact units and levels coded with `coder`, as pack codes them — fits the
// budget; then, for each of budget.refinements, each tensor's bits at that
// rung (its own or a higher candidate) so that base and refinements up to
// it fit that allowance, on what each lift codes to. Throws Error if it
// cannot.
BitAllocation choose_tensor_bits(const std::filesystem::path& model_path, const LadderPlan& plan,
                                 std::uint64_t chunk_elements, const PackBudget& budget,
                                 const ImageSet& images, int threads, CoderChoice coder);

}  // namespace bitinc
