// Building packages from ONNX models or bare weights: the ladder, mixed
// precision under a byte budget, calibration (refinements in order of
// value, the accuracy point) and signing. (Producer audience;
// bitinc/producer.hpp gathers its headers.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bitinc/ladder.hpp"
#include "bitinc/manifest.hpp"
#include "bitinc/model.hpp"

namespace bitinc {

// Calibration of a package (issue 12): refinements in order of value and an
// accuracy point, measured on training images.
struct PackCalibration {
    // Fashion-MNIST IDX files; only the training split is read (the test
    // split judges what calibration decides).
    std::filesystem::path data_dir = "/usr/share/datasets/fashion-mnist";
    std::size_t images = 1000;  // the first N training images
    // Ranking tensors (one model per tensor) on the first M of them only
    // (0: all N): an order needs less precision than the accuracy point,
    // whose search keeps all N, and this is most of calibration's time.
    std::size_t sensitivity_images = 0;
    // The accuracy point is searched on the last K of the training split
    // (0: on the N calibration images; `pack` and `eval` default to 5,000),
    // apart from the front images the ranking and the budget read: a model
    // trained with a held-out tail has not seen them. Its top-1 must be
    // right to a tenth of a point, which 1,000 images cannot give: ResNet18's
    // 4-bit base is within 0.1 point of the 8-bit rung on the first 1,000
    // training images and 0.68 point short on 5,000.
    std::size_t point_images = 0;
    double tolerance_points = 0.1;  // top-1 the accuracy point may lose to the top rung
    int engine_threads = 0;         // 0: all cores
};

// Mixed precision (issue 12): a byte budget for the base rung, met by
// giving each quantized tensor its own base bit depth, chosen by the loss
// its quantization costs on training images against its coded bytes.
struct PackBudget {
    std::uint64_t bytes = 0;  // the base rung's file at most this; 0: `ratio` decides
    // ... or at most this fraction of the direct top rung of the uniform
    // ladder (every tensor at the ladder's base), e.g. 0.2.
    double ratio = 0;
    // Budgeted refinement rungs, from the ladder's rung 1 up (never the
    // top): entry i bounds the base and the refinements up to rung i + 1
    // together, in bytes or as a ratio like `ratio`. Each tensor then gets
    // bits of its own at that rung too, so the bytes go first to the
    // tensors whose precision buys the most (e.g. the sensitive ones to 8
    // bits while the rest stay at 4); the rungs above a budgeted one lift
    // every tensor to at least the ladder's bits.
    struct Allowance {
        std::uint64_t bytes = 0;
        double ratio = 0;
    };
    std::vector<Allowance> refinements;
    // The base bit depths a tensor may get, each below the ladder's top.
    std::vector<int> candidate_bits{2, 3, 4, 5, 6, 7, 8};
    // The training images the sensitivity is measured on (data_dir, images,
    // engine_threads; the tolerance is unused).
    PackCalibration calibration;
    // Called after each candidate's sensitivity: (candidates done, in all).
    std::function<void(std::size_t, std::size_t)> progress;
};

// "800000", "800kB", "1.5MB", "2MiB" (bytes; k, M, G are powers of 1000,
// Ki, Mi, Gi of 1024) or "0.2x" (a ratio of the direct top rung) as a
// budget; more allowances after commas ("0.19x,0.3x") budget the
// refinement rungs from rung 1 up (PackBudget::refinements). Throws Error,
// one line, on anything else or on zero.
PackBudget parse_pack_budget(std::string_view text);

// What a budget chose: each quantized tensor's base bits and what it costs.
struct BitAllocation {
    std::uint64_t budget_bytes = 0;        // the base rung's allowance
    std::uint64_t reference_bytes = 0;     // the uniform ladder's direct top rung
    std::uint64_t base_bytes = 0;          // the chosen base rung's file
    std::uint64_t uniform_base_bytes = 0;  // the uniform ladder's base rung, for comparison
    double loss_increase = 0;              // summed measured cross-entropy increases
    std::vector<int> base_bits;            // by tensor index; 0: travels exactly
    // Each tensor's bits after every rung of the ladder, by tensor index
    // (empty: travels exactly): the manifest's tensors[].bits.
    std::vector<std::vector<int>> rung_bits;
    // For each budgeted refinement rung (PackBudget::refinements): its
    // allowance, what base and refinements up to it cost, and the summed
    // loss increase of the bits chosen there.
    struct Refinement {
        std::uint64_t budget_bytes = 0;
        std::uint64_t bytes = 0;
        double loss_increase = 0;
    };
    std::vector<Refinement> refinements;
};

struct PackOptions {
    LadderPlan ladder;
    // Mixed precision: each tensor's base bit depth, by tensor index (0, or
    // an index past the end: the ladder's base); a tensor's later rungs are
    // max(its base, the ladder's rung). Set by `budget` when given.
    std::vector<int> base_bits;
    std::optional<PackBudget> budget;
    // Rungs (bit depths of the ladder) also stored whole, for devices that
    // download one model directly. Empty: the top rung.
    std::vector<int> direct_bits;
    std::uint64_t chunk_elements = std::uint64_t{1} << 20;
    // fast (rANS for every unit) or compact (the adaptive coder where it
    // codes smaller, slower to decode).
    CoderChoice coder_choice = CoderChoice::fast;
    int threads = 0;  // 0: all cores
    // Replace a package already at the output directory (never a directory
    // holding anything else); false: refuse any non-empty output.
    bool replace = false;
    // Called as units are coded: (units done, units in all).
    std::function<void(std::size_t, std::size_t)> progress;
    // Order refinements by value and name an accuracy point (needs the
    // model to run on the calibration images).
    std::optional<PackCalibration> calibration;
    // Sign the package (format 6): Release::number `release`, of model
    // `model_id` (empty: the model file's name), signed with the Ed25519
    // key in `private_key_pem` (bitinc/trust.hpp).
    struct Signing {
        std::string private_key_pem;
        std::string model_id;
        std::uint64_t release = 0;
    };
    std::optional<Signing> signing;
    // A new version of a model (format 7, docs/format.md §9): the package
    // directory of an earlier version. Each tensor keeps that package's
    // steps where its values fit them and, unless `base_bits` or `budget`
    // say otherwise, its bits; and a delta from each of that package's
    // ladder rungs this one shares takes a device holding the earlier
    // version there to this one.
    std::filesystem::path previous_package;
};

struct PackResult {
    Manifest manifest;
    double seconds = 0;
    // Coding time of each rung's units (summed over threads), in manifest order.
    std::vector<double> rung_encode_seconds;
    std::optional<BitAllocation> allocation;  // with PackOptions::budget
    // What a user should know about the package, e.g. that most of the
    // model's weights cannot travel incrementally, and why, or which tensors
    // bitinc could not code (they stay in the topology), by name.
    std::vector<std::string> warnings;
    // What is worth knowing but needs no action, e.g. how many
    // already-quantized tensors travel unchanged inside the topology.
    std::vector<std::string> notes;
};

// Packs the ONNX file at `model_path` into the directory `output`. The
// package is built beside `output` and moved into place only when complete;
// an existing non-empty `output` is replaced only with PackOptions::replace,
// and only if it holds nothing but a package's own files.
// The same input and options always give byte-identical files.
PackResult pack_model(const std::filesystem::path& model_path, const PackOptions& options,
                      const std::filesystem::path& output);

// Packs a set of weights with no graph of their own (a checkpoint, a
// PyTorch state_dict): model_of_weights(weights, model_name) written to a
// temporary ONNX file (removed afterwards), then pack_model.
PackResult pack_weights(std::vector<Tensor> weights, const PackOptions& options,
                        const std::filesystem::path& output,
                        const std::string& model_name = "weights");

}  // namespace bitinc
