// Packages in a directory: reading, unpacking any rung, verifying.
// (Device audience.)
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bitinc/manifest.hpp"
#include "bitinc/model.hpp"

namespace bitinc {

// Reads `directory`/manifest.json.
Manifest read_manifest(const std::filesystem::path& directory);

// Reads one file of the package in `directory`, checking its size against
// the manifest (its hash is the caller's business). Throws Error naming it.
std::string read_package_file(const std::filesystem::path& directory, const FileEntry& entry);

// Rebuilds the model of a package at `bits`: through the ladder (base plus
// refinements) by default, or from the direct rung at `bits` when `direct`.
Model unpack_package(const std::filesystem::path& directory, int bits, bool direct);

// The same, written to `output` (write_onnx_file's rules) one tensor at a
// time: memory holds one tensor, never the model. Returns true when it wrote
// external data.
bool unpack_package_to_file(const std::filesystem::path& directory, int bits, bool direct,
                            const std::filesystem::path& output, bool external_data = false);

// The levels (ModelAssembler::levels) of every quantized tensor at the
// ladder's rung of `bits`, by tensor index; nothing for exact tensors.
std::vector<std::optional<QuantizedTensor>> unpack_levels(const std::filesystem::path& directory,
                                                          int bits);

// Version deltas (format 7). The delta of `manifest` that starts from
// `previous` (an earlier version at one of its rungs, as unpack or fetch
// wrote it), found by its weights' SHA-256, or nothing.
std::optional<std::size_t> find_delta(const Manifest& manifest, const Model& previous);
// The same by the held model's model_weights_sha256, computed beforehand.
std::optional<std::size_t> find_delta(const Manifest& manifest, std::string_view weights_sha256);

// Rebuilds the package's model at `bits` (0: the ladder's top quantized
// rung) from `previous`: the delta that starts from it, then the
// refinements above the delta's rung. Throws Error when no delta starts
// from `previous` or it starts above `bits`.
Model unpack_from_previous(const std::filesystem::path& directory, const Model& previous,
                           int bits = 0);

struct VerifyReport {
    std::size_t files = 0;
    std::size_t units = 0;
    std::uint64_t bytes = 0;
    // Problems found, one line each; empty when the package is sound.
    std::vector<std::string> problems;
};

// Checks every file's size and SHA-256, every unit's CRC and header, decodes
// every rung and confirms that the ladder's top equals each direct rung of
// the same bits.
VerifyReport verify_package(const std::filesystem::path& directory,
                            const std::function<void(std::size_t, std::size_t)>& progress = {});

}  // namespace bitinc
