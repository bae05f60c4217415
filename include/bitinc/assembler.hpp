// The device's copy of a model while units arrive, and writing it out.
// (Device audience.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bitinc/manifest.hpp"
#include "bitinc/model.hpp"

namespace bitinc {

// The device's copy of a model while rungs arrive: every tensor chunk at
// the rung its latest unit brought. Units of different chunks may be applied
// from different threads at once; the same chunk's units must come in rung
// order.
class ModelAssembler {
  public:
    // `topology` must be the manifest's topology file (its SHA-256 is checked).
    ModelAssembler(Manifest manifest, std::string topology, std::string_view source);

    const Manifest& manifest() const { return manifest_; }

    // Checks `unit` against its manifest entry (length, SHA-256 — the check a
    // forger cannot pass —, CRC32C, header) and
    // decodes it into the model. A refinement unit needs its chunk at the
    // parent rung. Throws Error naming `source` on any fault, leaving the
    // model unchanged.
    void apply_unit(std::size_t rung_index, std::size_t unit_index,
                    std::span<const std::uint8_t> unit, std::string_view source);

    // Version deltas (format 7). Takes `previous`, an earlier version of the
    // model rebuilt at the rung of delta `delta_index` (as unpack or fetch
    // wrote it), as the values that delta applies to: each of its weights
    // goes with this package's tensor of the same name and shape, and an
    // exact tensor the delta does not carry keeps its values. Throws Error
    // (untrusted) when `previous` is not the model the delta was made
    // against (DeltaBase::weights_sha256). Call it before any unit. A caller
    // that hashed `previous` already (model_weights_sha256, e.g. while the
    // manifest was on its way) passes the hash.
    void hold_previous(const Model& previous, std::size_t delta_index, std::string_view source,
                       std::string_view previous_sha256 = {});
    // Like apply_unit, for unit `unit_index` of delta `delta_index`: after
    // all of them every chunk is at the delta's rung, and this package's
    // refinements above it apply.
    void apply_delta_unit(std::size_t delta_index, std::size_t unit_index,
                          std::span<const std::uint8_t> unit, std::string_view source);

    // The bit depth a unit of `rung_index` would find its chunk at (0: not
    // yet received; 32: an exact tensor).
    int chunk_bits(std::size_t rung_index, std::size_t unit_index) const;
    // True once every chunk of every tensor has arrived at some rung.
    bool complete() const;
    // The ladder rung every quantized chunk has reached, as its bits in the
    // manifest (with mixed precision a tensor may be below them: its own
    // bits at that rung count); 0 before the first rung; exact_rung_bits
    // once every quantized chunk holds its source weights.
    int reached_rung_bits() const;

    // The model as it stands; throws Error if a chunk has not arrived.
    // A whole float copy: write_model_file streams instead.
    Model model() const;
    // The same into `model`, reusing its weights' buffers when it is a copy
    // of topology() whose values are already sized (a device may allocate
    // them while the rung is still in flight); otherwise it starts from
    // topology().
    void fill_model(Model& model) const;
    // Values of tensor `tensor` from element `first` on, as model() would
    // give them; throws Error if a chunk of that range has not arrived.
    void read_values(std::size_t tensor, std::uint64_t first, std::span<float> out) const;
    // Quantized tensor `tensor` as integer levels: its bits, its steps at
    // those bits and its indices (value = step of the channel x index), for
    // engines that run integer weights. Throws Error (not_ready) unless all
    // its chunks have arrived at one quantized rung.
    QuantizedTensor levels(std::size_t tensor) const;
    // Frees a tensor's storage and forgets its units, for readers that
    // assemble one tensor at a time (unpack, verify).
    void release_tensor(std::size_t tensor);
    // The graph and metadata, with weight tensors named and shaped but empty.
    const Model& topology() const { return model_; }

  private:
    struct ChunkState {
        std::uint64_t first = 0;
        std::uint64_t count = 0;
        int bits = 0;
    };
    struct TensorState {
        std::vector<float> values;          // exact tensors
        std::vector<std::int32_t> indices;  // quantized tensors
        std::vector<float> steps;           // quantized: per channel, at steps_bits
        int steps_bits = 0;
        std::uint64_t channel_size = 0;
        std::uint64_t channels = 1;
        std::vector<ChunkState> chunks;
        // The earlier version's values, while a delta is applied.
        std::vector<float> held;
    };
    // The checks every unit passes before it is parsed (length, SHA-256,
    // CRC32C, header against the manifest's entry); `where` names the unit
    // in errors.
    UnitHeader checked_header(const UnitEntry& entry, std::span<const std::uint8_t> unit,
                              std::size_t unit_index, std::string_view source,
                              const std::string& where) const;
    // Decode a unit into its chunk and mark the chunk's new bits.
    void store_exact(const UnitEntry& entry, const UnitHeader& header,
                     std::span<const std::uint8_t> unit);
    void store_levels(const UnitEntry& entry, const UnitHeader& header,
                      std::span<const std::uint8_t> unit, int bits, const std::string& where);
    void store_indices(const UnitEntry& entry, std::span<const float> steps,
                       std::span<const std::int32_t> indices, int bits);
    // Sizes a tensor's storage when its first unit arrives; under mutex_.
    void allocate_storage(std::size_t tensor_index);
    ChunkState& chunk_of(const UnitEntry& entry);
    const ChunkState& chunk_of(const UnitEntry& entry) const;

    Manifest manifest_;
    mutable std::mutex mutex_;  // guards chunk bits and steps
    Model model_;               // topology and tensor names/shapes; values filled by model()
    std::vector<TensorState> tensors_;
};

// Writes the assembler's model to `path` as write_onnx_file does, one block
// of values at a time (no float copy of the model).
bool write_model_file(const ModelAssembler& assembler, const std::filesystem::path& path,
                      bool external_data = false);

}  // namespace bitinc
