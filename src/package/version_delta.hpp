// Version deltas (issue 15): a new version of a model packed against the
// package of an earlier one, so that a device holding the earlier version
// receives only what changed (docs/format.md §9).
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "bitinc/ladder.hpp"
#include "bitinc/manifest.hpp"
#include "bitinc/model.hpp"

namespace bitinc {

// What the packer takes from the earlier version's package.
struct PreviousVersion {
    std::filesystem::path directory;
    Manifest manifest;
    // The top rung's grid of each quantized tensor, by name (empty when the
    // two ladders' tops differ: no step is then shared).
    std::map<std::string, TopGrid> grids;
};

// Reads the package in `directory` (its manifest and its base rung's steps).
PreviousVersion read_previous_version(const std::filesystem::path& directory, int top_bits);

// The base bits of each of `manifest`'s tensors where the earlier version has
// a quantized tensor of that name and shape (0 elsewhere: the ladder's base),
// so that the two versions' rungs line up tensor by tensor.
std::vector<int> previous_base_bits(const PreviousVersion& previous, const Manifest& manifest);

// The top grid of `tensor`: its own, except that each channel keeps the
// earlier version's step when its values fit under it, so that a weight that
// did not move keeps its level and its difference is zero.
TopGrid grid_following(const Tensor& tensor, const LadderPlan& plan, const TopGrid* previous);

// Codes a delta from each ladder rung the two packages share (quantized, up
// to max_difference_bits) into `directory` and adds it to manifest.deltas,
// unless it, with the topology, is no smaller than the ladder up to that
// rung (a model retrained from scratch): returns a note for each such.
// `manifest` describes the package being built from `reader`'s model,
// `grids` (by tensor) the top grids its rungs were quantized on.
std::vector<std::string> pack_version_deltas(const std::filesystem::path& directory,
                                             Manifest& manifest, const OnnxWeightReader& reader,
                                             const std::vector<TopGrid>& grids,
                                             const PreviousVersion& previous,
                                             CoderChoice coder_choice, int threads);

}  // namespace bitinc
