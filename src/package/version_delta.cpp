// Version deltas: the earlier package's grids reused, and the differences
// of the new version's levels from those predicted by the earlier one's
// values, per ladder rung.
#include "package/version_delta.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "bitinc/codec.hpp"
#include "bitinc/error.hpp"
#include "bitinc/package_reader.hpp"
#include "core/parallel.hpp"
#include "package/rung_file_writer.hpp"

namespace bitinc {

namespace fs = std::filesystem;

PreviousVersion read_previous_version(const fs::path& directory, int top_bits) {
    PreviousVersion previous;
    previous.directory = directory;
    previous.manifest = read_manifest(directory);
    const Manifest& manifest = previous.manifest;
    if (manifest.ladder.top_bits() != top_bits) return previous;  // no step in common
    // Every quantized tensor's steps travel in its base units, at its base
    // bits; the top rung's are an exact power-of-two multiple of them.
    const RungEntry& base = manifest.rungs.front();
    const std::string file = read_package_file(directory, base.data);
    for (const UnitEntry& unit : base.units) {
        const TensorEntry& tensor = manifest.tensors[unit.tensor];
        if (!tensor.quantized) continue;
        const UnitHeader header =
            read_unit_header(unit_bytes(file, unit), (directory / base.data.file).string());
        if (header.type != UnitType::levels || header.channel_size == 0)
            throw Error(ErrorCode::corrupt_data, (directory / base.data.file).string() +
                                                     ": tensor '" + tensor.name +
                                                     "' has no levels unit in the base rung");
        TopGrid& grid = previous.grids[tensor.name];
        grid.channel_size = header.channel_size;
        grid.steps.resize(std::size_t(tensor.element_count() / header.channel_size));
        const std::size_t first_channel = std::size_t(unit.first / header.channel_size);
        for (std::size_t i = 0; i < header.steps.size(); ++i) {
            if (first_channel + i >= grid.steps.size()) break;
            grid.steps[first_channel + i] = std::ldexp(header.steps[i], header.bits - top_bits);
        }
    }
    return previous;
}

namespace {

// The earlier version's tensor `name` of `shape` in `manifest`, or nullptr.
const TensorEntry* earlier_tensor(const Manifest& manifest, const std::string& name,
                                  const std::vector<std::int64_t>& shape) {
    for (const TensorEntry& tensor : manifest.tensors)
        if (tensor.name == name && tensor.shape == shape) return &tensor;
    return nullptr;
}

// The held model's weight named `name` with `elements` values, or nullptr.
const Tensor* held_weight(const Model& held, const std::string& name,
                          const std::vector<std::int64_t>& shape) {
    for (const Tensor& tensor : held.weights)
        if (tensor.name == name && tensor.shape == shape) return &tensor;
    return nullptr;
}

}  // namespace

std::vector<int> previous_base_bits(const PreviousVersion& previous, const Manifest& manifest) {
    std::vector<int> bits(manifest.tensors.size(), 0);
    const Manifest& earlier = previous.manifest;
    for (std::size_t t = 0; t < manifest.tensors.size(); ++t) {
        const TensorEntry& tensor = manifest.tensors[t];
        const TensorEntry* match = earlier_tensor(earlier, tensor.name, tensor.shape);
        if (match == nullptr || !match->quantized) continue;
        const auto index = std::size_t(match - earlier.tensors.data());
        bits[t] = earlier.tensor_ladder(index).base_bits();
    }
    return bits;
}

TopGrid grid_following(const Tensor& tensor, const LadderPlan& plan, const TopGrid* previous) {
    TopGrid grid = top_grid(tensor, plan);
    if (previous == nullptr || previous->channel_size != grid.channel_size ||
        previous->steps.size() != grid.steps.size())
        return grid;
    const double largest = double(largest_index(plan.top_bits(), plan.base_bits()));
    for (std::size_t channel = 0; channel < grid.steps.size(); ++channel) {
        const float step = previous->steps[channel];
        if (!(step > 0.0f) || !std::isfinite(step)) continue;
        const auto first = tensor.values.begin() + std::ptrdiff_t(channel * grid.channel_size);
        float biggest = 0;
        for (auto value = first; value != first + std::ptrdiff_t(grid.channel_size); ++value)
            biggest = std::max(biggest, std::fabs(*value));
        // Kept only if no value would be clipped at the rung's largest level.
        if (std::round(double(biggest) / double(step)) <= largest) grid.steps[channel] = step;
    }
    return grid;
}

std::vector<std::string> pack_version_deltas(const fs::path& directory, Manifest& manifest,
                                             const OnnxWeightReader& reader,
                                             const std::vector<TopGrid>& grids,
                                             const PreviousVersion& previous,
                                             CoderChoice coder_choice, int threads) {
    std::vector<std::string> notes;
    const Manifest& earlier = previous.manifest;
    const Model& topology = reader.topology();
    for (std::size_t position = 0; position < manifest.ladder.bits.size(); ++position) {
        const int bits = manifest.ladder.bits[position];
        const bool earlier_has_rung = earlier.find_rung(RungKind::base, bits) != nullptr ||
                                      earlier.find_rung(RungKind::refinement, bits) != nullptr;
        if (bits > max_difference_bits || !earlier_has_rung)
            continue;  // the earlier version has no such rung to start from
        const Model held = unpack_package(previous.directory, bits, false);
        DeltaEntry delta;
        delta.bits = bits;
        delta.from.weights_sha256 = model_weights_sha256(held);
        delta.from.source_sha256 = earlier.source_sha256;
        delta.from.release = earlier.release ? earlier.release->number : 0;
        delta.data.file = "delta-" + delta.from.weights_sha256.substr(0, 12) + "-" +
                          std::to_string(bits) + ".bin";
        RungFileWriter file(directory / delta.data.file);
        for (std::size_t t = 0; t < topology.weights.size(); ++t) {
            const std::uint64_t elements = reader.element_count(t);
            if (elements == 0) continue;
            const TensorEntry& entry = manifest.tensors[t];
            Tensor tensor = topology.weights[t];
            tensor.values = reader.read_values(t);
            const Tensor* held_tensor = held_weight(held, tensor.name, tensor.shape);
            const std::vector<UnitTarget> chunks =
                plan_chunks(std::uint32_t(t), elements, manifest.chunk_elements);
            std::vector<std::vector<std::uint8_t>> units(chunks.size());
            if (!entry.quantized) {
                // Sent again only if it changed.
                if (held_tensor != nullptr &&
                    std::memcmp(held_tensor->values.data(), tensor.values.data(),
                                tensor.values.size() * sizeof(float)) == 0)
                    continue;
                for (std::size_t c = 0; c < chunks.size(); ++c)
                    units[c] = encode_exact_unit(chunks[c], tensor.values);
            } else {
                const LadderPlan plan = manifest.tensor_ladder(t);
                const TopGrid& grid = grids.at(t);  // what its rungs were quantized on
                const int tensor_bits = manifest.tensor_bits(t, position);
                const std::vector<float> steps = rung_steps(grid, plan, tensor_bits);
                const std::int64_t largest = largest_index(tensor_bits, plan.base_bits());
                core::run_parallel(chunks.size(), threads, [&](std::size_t c) {
                    const UnitTarget& target = chunks[c];
                    std::vector<std::int32_t> levels(target.count);
                    quantize_chunk(tensor, grid, plan, tensor_bits, target.first, levels);
                    if (held_tensor == nullptr) {
                        units[c] =
                            encode_level_unit(target,
                                              RungChunk{tensor_bits, steps, grid.channel_size,
                                                        levels, row_length(tensor)},
                                              coder_choice);
                        return;
                    }
                    for (std::size_t i = 0; i < levels.size(); ++i) {
                        const std::uint64_t element = target.first + i;
                        levels[i] -= std::int32_t(
                            predicted_level(held_tensor->values[element],
                                            steps[element / grid.channel_size], largest));
                    }
                    units[c] =
                        encode_difference_unit(target,
                                               RungChunk{tensor_bits, steps, grid.channel_size,
                                                         levels, row_length(tensor)},
                                               coder_choice);
                });
            }
            for (std::size_t c = 0; c < chunks.size(); ++c) {
                const std::uint64_t offset = file.append(units[c]);
                delta.units.push_back({std::uint32_t(t), chunks[c].first, chunks[c].count, offset,
                                       std::uint32_t(units[c].size()), unit_crc32c(units[c]),
                                       unit_sha256(units[c])});
            }
        }
        std::tie(delta.data.bytes, delta.data.sha256) = file.finish();
        // A device takes the topology with a delta; without the delta, the
        // base (which begins with the topology) and the refinements.
        std::uint64_t ladder_bytes = 0;
        for (std::size_t r = 0; r <= position; ++r) ladder_bytes += manifest.rungs[r].data.bytes;
        if (delta.data.bytes + manifest.topology.bytes >= ladder_bytes) {
            notes.push_back("no delta at " + std::to_string(bits) + " bits: it would take " +
                            std::to_string(delta.data.bytes + manifest.topology.bytes) +
                            " bytes, the ladder up to there " + std::to_string(ladder_bytes) +
                            " (the versions differ too much)");
            std::error_code ignored;
            fs::remove(directory / delta.data.file, ignored);
            continue;
        }
        manifest.deltas.push_back(std::move(delta));
    }
    if (!manifest.deltas.empty())
        manifest.format_version = std::max(manifest.format_version, delta_format_version);
    return notes;
}

}  // namespace bitinc
