// Refinement in order of value (issue 12): the packer's calibration step.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "bitinc/dataset.hpp"
#include "bitinc/pack.hpp"

namespace bitinc {

// Rewrites the file of refinement rung `rung_index` in `directory` so that
// its units come tensor by tensor in `tensor_order` (each tensor's chunks
// in order), and updates the rung's unit entries and SHA-256 in `manifest`.
// The order must name every tensor the rung carries exactly once. Throws
// Error on a bad order or a file that does not match the manifest.
void reorder_refinement_units(const std::filesystem::path& directory, Manifest& manifest,
                              std::size_t rung_index, const std::vector<std::size_t>& tensor_order);

// For a package being built in `directory` from the model at `model_path`:
// measures on calibration images (the training split of
// `calibration.data_dir`) how much each tensor's refinement is worth, puts
// every refinement rung's units in order of loss per byte, and names the
// accuracy point: the first place in the ladder where the calibration top-1
// is within `calibration.tolerance_points` of the top rung's. Leaves no
// accuracy point if only the top rung gets there. A rung whose whole gain
// the point images cannot tell from chance keeps tensor order (there is no
// order of value to find); the notes say which.
std::vector<std::string> calibrate_refinements(const std::filesystem::path& directory,
                                               Manifest& manifest,
                                               const std::filesystem::path& model_path,
                                               const PackCalibration& calibration,
                                               const ImageSet& images);

// The calibration images (the training split of calibration.data_dir),
// read before any unit is coded so that a bad directory fails at once.
ImageSet load_calibration_images(const PackCalibration& calibration);

}  // namespace bitinc
