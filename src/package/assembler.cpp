// The device's copy of a model while units arrive.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "bitinc/assembler.hpp"
#include "bitinc/codec.hpp"
#include "bitinc/error.hpp"
#include "core/checked_index.hpp"
#include "core/sha256.hpp"

namespace bitinc {

namespace {

constexpr int exact_bits = exact_rung_bits;

}  // namespace

ModelAssembler::ModelAssembler(Manifest manifest, std::string topology, std::string_view source)
    : manifest_(std::move(manifest)) {
    if (topology.size() != manifest_.topology.bytes ||
        core::sha256_hex(topology) != manifest_.topology.sha256) {
        throw Error(ErrorCode::corrupt_data,
                    std::string(source) + ": the topology does not match the manifest's SHA-256");
    }
    model_ = parse_topology(topology, source);
    validate_graph(model_, source);
    if (model_.weights.size() != manifest_.tensors.size()) {
        throw Error(ErrorCode::corrupt_data, std::string(source) + ": the topology has " +
                                                 std::to_string(model_.weights.size()) +
                                                 " weight tensors, the manifest " +
                                                 std::to_string(manifest_.tensors.size()));
    }
    tensors_.resize(manifest_.tensors.size());
    for (std::size_t t = 0; t < manifest_.tensors.size(); ++t) {
        const TensorEntry& entry = manifest_.tensors[t];
        const Tensor& tensor = model_.weights[t];
        if (tensor.name != entry.name || tensor.shape != entry.shape ||
            tensor.stored_as != entry.stored_as) {
            throw Error(ErrorCode::corrupt_data,
                        std::string(source) + ": tensor '" + entry.name +
                            "' differs between the topology and the manifest");
        }
        TensorState& state = tensors_[t];
        const std::uint64_t elements = entry.element_count();
        if (entry.quantized) {
            const bool per_channel =
                manifest_.ladder.per_channel && entry.shape.size() >= 2 && entry.shape[0] > 0;
            const std::uint64_t channels = per_channel ? std::uint64_t(entry.shape[0]) : 1;
            state.channel_size = elements / channels;
            state.channels = channels;
        }
        // Storage comes with the tensor's first unit (allocate_storage), so
        // what a manifest merely claims costs no memory.
    }
    // Chunks as the base rung cuts them; every other rung cuts alike
    // (parse_manifest checks it).
    for (const UnitEntry& unit : manifest_.rungs.front().units) {
        tensors_[unit.tensor].chunks.push_back({unit.first, unit.count, 0});
    }
}

void ModelAssembler::allocate_storage(std::size_t tensor_index) {
    TensorState& state = tensors_[tensor_index];
    const TensorEntry& entry = manifest_.tensors[tensor_index];
    if (!entry.quantized) {
        if (state.values.empty()) state.values.resize(entry.element_count());
    } else if (state.indices.empty()) {
        state.steps.assign(state.channels, 0.0f);
        state.indices.resize(entry.element_count());
    }
}

ModelAssembler::ChunkState& ModelAssembler::chunk_of(const UnitEntry& entry) {
    std::vector<ChunkState>& chunks = tensors_[entry.tensor].chunks;
    const auto found =
        std::lower_bound(chunks.begin(), chunks.end(), entry.first,
                         [](const ChunkState& c, std::uint64_t first) { return c.first < first; });
    if (found == chunks.end() || found->first != entry.first || found->count != entry.count) {
        throw Error(ErrorCode::corrupt_data, "unit does not match a chunk of tensor '" +
                                                 manifest_.tensors[entry.tensor].name + "'");
    }
    return *found;
}

const ModelAssembler::ChunkState& ModelAssembler::chunk_of(const UnitEntry& entry) const {
    return const_cast<ModelAssembler*>(this)->chunk_of(entry);
}

int ModelAssembler::chunk_bits(std::size_t rung_index, std::size_t unit_index) const {
    const std::lock_guard lock(mutex_);
    const RungEntry& rung = core::checked_at(manifest_.rungs, rung_index, "rung");
    return chunk_of(core::checked_at(rung.units, unit_index, "unit")).bits;
}

UnitHeader ModelAssembler::checked_header(const UnitEntry& entry,
                                          std::span<const std::uint8_t> unit,
                                          std::size_t unit_index, std::string_view source,
                                          const std::string& where) const {
    const TensorEntry& tensor = manifest_.tensors[entry.tensor];
    if (unit.size() != entry.length) {
        throw Error(ErrorCode::corrupt_data, where + " has " + std::to_string(unit.size()) +
                                                 " bytes, the manifest says " +
                                                 std::to_string(entry.length));
    }
    // The SHA-256 first: forged bytes (a CRC is easy to recompute) never
    // reach a parser.
    if (unit_sha256(unit) != entry.sha256) {
        throw Error(ErrorCode::corrupt_data,
                    std::string(source) + ": unit " + std::to_string(unit_index) +
                        ": SHA-256 differs from the manifest's (tensor '" + tensor.name + "')");
    }
    UnitHeader header = read_unit_header(unit, where);
    if (unit_crc32c(unit) != entry.crc32c)
        throw Error(ErrorCode::corrupt_data, where + ": CRC32C differs from the manifest's");
    if (header.target.tensor_index != entry.tensor || header.target.first != entry.first ||
        header.target.count != entry.count ||
        header.target.tensor_elements != tensor.element_count()) {
        throw Error(ErrorCode::corrupt_data,
                    where + ": the unit's header names other elements than the manifest");
    }
    return header;
}

void ModelAssembler::apply_unit(std::size_t rung_index, std::size_t unit_index,
                                std::span<const std::uint8_t> unit, std::string_view source) {
    const RungEntry& rung = core::checked_at(manifest_.rungs, rung_index, "rung");
    const UnitEntry& entry = core::checked_at(rung.units, unit_index, "unit");
    const TensorEntry& tensor = manifest_.tensors[entry.tensor];
    const std::string where = std::string(source) + ": unit " + std::to_string(unit_index) +
                              " (tensor '" + tensor.name + "')";
    const UnitHeader header = checked_header(entry, unit, unit_index, source, where);
    TensorState& state = tensors_[entry.tensor];
    int parent_bits = 0;
    {
        const std::lock_guard lock(mutex_);
        parent_bits = chunk_of(entry).bits;
        allocate_storage(entry.tensor);
    }
    if (!tensor.quantized) {
        if (header.type != UnitType::exact || builds_on_earlier_rung(rung.kind)) {
            throw Error(ErrorCode::corrupt_data, where + ": expected an exact unit");
        }
        store_exact(entry, header, unit);
        return;
    }
    // The tensor's own bits at this rung (mixed precision; else the rung's).
    const int bits = manifest_.unit_bits(rung, entry.tensor);
    if (rung.kind == RungKind::exact) {
        const int from_bits = manifest_.unit_parent_bits(rung, entry.tensor);
        if (header.type != UnitType::lossless || header.parent_bits != from_bits ||
            header.stored_as != tensor.stored_as) {
            throw Error(ErrorCode::corrupt_data,
                        where + ": expected a lossless unit of " +
                            std::string(stored_type_name(tensor.stored_as)) + " weights on " +
                            std::to_string(from_bits) + " bits");
        }
        if (parent_bits != from_bits) {
            throw Error(ErrorCode::corrupt_data,
                        where + ": its chunk is at " + std::to_string(parent_bits) +
                            " bits, not at the ladder's top of " + std::to_string(from_bits));
        }
        // The chunk at the top rung (steps are kept at the top rung).
        const RungChunk top{from_bits, state.steps, state.channel_size,
                            std::span(state.indices).subspan(entry.first, entry.count), 0};
        std::vector<float> values(entry.count);
        decode_lossless_unit(header, unit, top, values);
        // The chunk keeps its values' bit patterns where its indices were.
        const std::lock_guard lock(mutex_);
        std::transform(values.begin(), values.end(),
                       state.indices.begin() + std::ptrdiff_t(entry.first),
                       [](float value) { return std::bit_cast<std::int32_t>(value); });
        chunk_of(entry).bits = exact_bits;
        return;
    }
    if (rung.kind == RungKind::refinement) {
        const int from_bits = manifest_.unit_parent_bits(rung, entry.tensor);
        if (header.type != UnitType::refinement || header.bits != bits ||
            header.parent_bits != from_bits) {
            throw Error(ErrorCode::corrupt_data, where + ": expected a refinement unit from " +
                                                     std::to_string(from_bits) + " to " +
                                                     std::to_string(bits) + " bits");
        }
        if (parent_bits != from_bits) {
            throw Error(ErrorCode::corrupt_data,
                        where + ": its chunk is at " + std::to_string(parent_bits) +
                            " bits, not at the parent rung's " + std::to_string(from_bits));
        }
        std::vector<std::int32_t> fine(entry.count);
        const std::span<const std::int32_t> coarse =
            std::span(state.indices).subspan(entry.first, entry.count);
        decode_refinement_unit(header, unit, coarse, fine);
        const std::lock_guard lock(mutex_);
        std::copy(fine.begin(), fine.end(), state.indices.begin() + std::ptrdiff_t(entry.first));
        chunk_of(entry).bits = bits;
        return;
    } else {
        store_levels(entry, header, unit, bits, where);
    }
}

void ModelAssembler::store_exact(const UnitEntry& entry, const UnitHeader& header,
                                 std::span<const std::uint8_t> unit) {
    std::vector<float> values(entry.count);
    decode_exact_unit(header, unit, values);
    // Values and bits change together under the lock, so that model()
    // never sees a chunk half updated.
    const std::lock_guard lock(mutex_);
    TensorState& state = tensors_[entry.tensor];
    std::copy(values.begin(), values.end(), state.values.begin() + std::ptrdiff_t(entry.first));
    chunk_of(entry).bits = exact_bits;
}

void ModelAssembler::store_levels(const UnitEntry& entry, const UnitHeader& header,
                                  std::span<const std::uint8_t> unit, int bits,
                                  const std::string& where) {
    TensorState& state = tensors_[entry.tensor];
    if (header.type != UnitType::levels || header.bits != bits ||
        header.channel_size != state.channel_size) {
        throw Error(ErrorCode::corrupt_data,
                    where + ": expected a " + std::to_string(bits) + "-bit levels unit");
    }
    std::vector<std::int32_t> indices(entry.count);
    decode_level_unit(header, unit, indices);
    store_indices(entry, header.steps, indices, bits);
}

void ModelAssembler::store_indices(const UnitEntry& entry, std::span<const float> steps,
                                   std::span<const std::int32_t> indices, int bits) {
    TensorState& state = tensors_[entry.tensor];
    // Steps are kept at the ladder's top rung, from which every rung's
    // step is an exact power-of-two multiple (ladder.hpp).
    const std::size_t first_channel = entry.first / state.channel_size;
    const std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < steps.size(); ++i) {
        state.steps[first_channel + i] = std::ldexp(steps[i], bits - manifest_.ladder.top_bits());
    }
    std::copy(indices.begin(), indices.end(), state.indices.begin() + std::ptrdiff_t(entry.first));
    chunk_of(entry).bits = bits;
}

void ModelAssembler::hold_previous(const Model& previous, std::size_t delta_index,
                                   std::string_view source, std::string_view previous_sha256) {
    const DeltaEntry& delta = core::checked_at(manifest_.deltas, delta_index, "delta");
    const std::string held =
        previous_sha256.empty() ? model_weights_sha256(previous) : std::string(previous_sha256);
    if (held != delta.from.weights_sha256) {
        throw Error(ErrorCode::untrusted,
                    std::string(source) +
                        ": the model held is not the version this delta applies to (its "
                        "weights' SHA-256 differs from the delta's base)");
    }
    std::vector<bool> carried(tensors_.size(), false);
    for (const UnitEntry& unit : delta.units) carried[unit.tensor] = true;
    const std::lock_guard lock(mutex_);
    for (const Tensor& held : previous.weights) {
        const auto found =
            std::find_if(manifest_.tensors.begin(), manifest_.tensors.end(),
                         [&](const TensorEntry& entry) { return entry.name == held.name; });
        if (found == manifest_.tensors.end() || found->shape != held.shape ||
            held.values.size() != found->element_count())
            continue;  // a tensor of the earlier version only, or reshaped
        const std::size_t t = std::size_t(found - manifest_.tensors.begin());
        TensorState& state = tensors_[t];
        if (!found->quantized && !carried[t]) {
            // Unchanged: the held values are this version's.
            state.values = held.values;
            for (ChunkState& chunk : state.chunks) chunk.bits = exact_bits;
        } else {
            state.held = held.values;
        }
    }
}

void ModelAssembler::apply_delta_unit(std::size_t delta_index, std::size_t unit_index,
                                      std::span<const std::uint8_t> unit, std::string_view source) {
    const DeltaEntry& delta = core::checked_at(manifest_.deltas, delta_index, "delta");
    const UnitEntry& entry = core::checked_at(delta.units, unit_index, "unit");
    const TensorEntry& tensor = manifest_.tensors[entry.tensor];
    const std::string where = std::string(source) + ": delta unit " + std::to_string(unit_index) +
                              " (tensor '" + tensor.name + "')";
    const UnitHeader header = checked_header(entry, unit, unit_index, source, where);
    TensorState& state = tensors_[entry.tensor];
    {
        const std::lock_guard lock(mutex_);
        if (chunk_of(entry).bits != 0)
            throw Error(ErrorCode::corrupt_data, where + ": its chunk has arrived already");
        allocate_storage(entry.tensor);
    }
    if (!tensor.quantized) {
        if (header.type != UnitType::exact)
            throw Error(ErrorCode::corrupt_data, where + ": expected an exact unit");
        store_exact(entry, header, unit);
        return;
    }
    // The tensor's bits at the delta's rung.
    const auto position = std::size_t(
        std::find(manifest_.ladder.bits.begin(), manifest_.ladder.bits.end(), delta.bits) -
        manifest_.ladder.bits.begin());
    const int bits = manifest_.tensor_bits(entry.tensor, position);
    if (header.type == UnitType::levels) {
        store_levels(entry, header, unit, bits, where);
        return;
    }
    if (header.type != UnitType::difference || header.bits != bits ||
        header.channel_size != state.channel_size) {
        throw Error(ErrorCode::corrupt_data, where + ": expected a " + std::to_string(bits) +
                                                 "-bit difference or levels unit");
    }
    if (state.held.size() != tensor.element_count()) {
        throw Error(ErrorCode::corrupt_data,
                    where + ": a difference from a tensor the model held does not have");
    }
    std::vector<std::int32_t> indices(entry.count);
    decode_level_unit(header, unit, indices);
    // Each level is predicted from the value held, on this rung's grid, and
    // the unit carries the rest.
    const std::int64_t largest =
        largest_index(bits, manifest_.tensor_ladder(entry.tensor).base_bits());
    const std::uint64_t first_channel = entry.first / state.channel_size;
    for (std::size_t i = 0; i < indices.size(); ++i) {
        const std::uint64_t element = entry.first + i;
        const float step = header.steps[element / state.channel_size - first_channel];
        const std::int64_t level =
            predicted_level(state.held[element], step, largest) + std::int64_t{indices[i]};
        if (level < -largest || level > largest)
            throw Error(ErrorCode::corrupt_data, where + ": a level falls outside its rung");
        indices[i] = std::int32_t(level);
    }
    store_indices(entry, header.steps, indices, bits);
}

QuantizedTensor ModelAssembler::levels(std::size_t tensor) const {
    const std::lock_guard lock(mutex_);
    const TensorEntry& entry = core::checked_at(manifest_.tensors, tensor, "tensor");
    const TensorState& state = tensors_[tensor];
    if (!entry.quantized)
        throw Error(ErrorCode::invalid_argument,
                    "tensor '" + entry.name + "' travels exactly: it has no levels");
    const int bits = state.chunks.empty() ? 0 : state.chunks.front().bits;
    const bool one_rung = std::all_of(state.chunks.begin(), state.chunks.end(),
                                      [&](const ChunkState& chunk) { return chunk.bits == bits; });
    if (bits == 0 || bits == exact_bits || !one_rung)
        throw Error(ErrorCode::not_ready,
                    "tensor '" + entry.name + "' is not all at one quantized rung");
    QuantizedTensor result;
    result.bits = bits;
    result.channel_size = state.channel_size;
    for (const float step : state.steps)
        result.steps.push_back(std::ldexp(step, manifest_.ladder.top_bits() - bits));
    result.indices = state.indices;
    return result;
}

bool ModelAssembler::complete() const {
    const std::lock_guard lock(mutex_);
    for (const TensorState& tensor : tensors_) {
        for (const ChunkState& chunk : tensor.chunks) {
            if (chunk.bits == 0) return false;
        }
    }
    return true;
}

int ModelAssembler::reached_rung_bits() const {
    const std::lock_guard lock(mutex_);
    // With mixed precision a tensor's bits at a rung are its own, so the
    // rung is found by comparing each chunk with its tensor's bits there.
    const auto every_chunk_at = [&](const auto& bits_of_tensor) {
        for (std::size_t t = 0; t < tensors_.size(); ++t) {
            if (!manifest_.tensors[t].quantized) continue;
            const int wanted = bits_of_tensor(t);
            for (const ChunkState& chunk : tensors_[t].chunks)
                if (chunk.bits < wanted) return false;
        }
        return true;
    };
    if (every_chunk_at([](std::size_t) { return exact_bits; })) return exact_bits;
    int reached = 0;
    for (std::size_t rung = 0; rung < manifest_.ladder.bits.size(); ++rung) {
        if (!every_chunk_at([&](std::size_t t) { return manifest_.tensor_bits(t, rung); })) break;
        reached = manifest_.ladder.bits[rung];
    }
    return reached;
}

void ModelAssembler::read_values(std::size_t tensor_index, std::uint64_t first,
                                 std::span<float> out) const {
    const std::lock_guard lock(mutex_);
    const TensorState& state = core::checked_at(tensors_, tensor_index, "tensor");
    const std::string& name = manifest_.tensors[tensor_index].name;
    const std::uint64_t end = first + out.size();
    const int top = manifest_.ladder.top_bits();
    for (const ChunkState& chunk : state.chunks) {
        if (chunk.first + chunk.count <= first || chunk.first >= end) continue;
        if (chunk.bits == 0)
            throw Error(ErrorCode::not_ready, "tensor '" + name + "' has not arrived");
    }
    if (out.empty()) return;
    if (!manifest_.tensors[tensor_index].quantized) {
        if (end > state.values.size())
            throw Error(ErrorCode::not_ready, "tensor '" + name + "' has not arrived");
        std::copy_n(state.values.begin() + std::ptrdiff_t(first), out.size(), out.begin());
        return;
    }
    if (end > state.indices.size())
        throw Error(ErrorCode::not_ready, "tensor '" + name + "' has not arrived");
    const auto chunk_at = [&](std::uint64_t i) {
        return std::upper_bound(
                   state.chunks.begin(), state.chunks.end(), i,
                   [](std::uint64_t at, const ChunkState& c) { return at < c.first; }) -
               1;
    };
    for (std::uint64_t i = first; i < end;) {
        const ChunkState& chunk = *chunk_at(i);
        const std::uint64_t channel = i / state.channel_size;
        const std::uint64_t stop =
            std::min({end, chunk.first + chunk.count, (channel + 1) * state.channel_size});
        if (chunk.bits == exact_bits && manifest_.ladder.exact_top) {
            // The exact rung's chunk: the source values' bit patterns (the
            // quantized top is then below 32 bits).
            for (; i < stop; ++i) out[i - first] = std::bit_cast<float>(state.indices[i]);
            continue;
        }
        // value = step * index with the chunk's rung step, exactly as
        // reconstruct() computes it.
        const float step = std::ldexp(state.steps[channel], top - chunk.bits);
        for (; i < stop; ++i) {
            out[i - first] = step * static_cast<float>(state.indices[i]);
        }
    }
}

void ModelAssembler::release_tensor(std::size_t tensor_index) {
    const std::lock_guard lock(mutex_);
    TensorState& state = core::checked_at(tensors_, tensor_index, "tensor");
    // Swapped with empty vectors: `= {}` would keep the capacity.
    std::vector<float>().swap(state.values);
    std::vector<std::int32_t>().swap(state.indices);
    std::vector<float>().swap(state.steps);
    for (ChunkState& chunk : state.chunks) chunk.bits = 0;
}

Model ModelAssembler::model() const {
    Model model;
    fill_model(model);
    return model;
}

void ModelAssembler::fill_model(Model& model) const {
    if (model.weights.size() != model_.weights.size() || model.topology != model_.topology)
        model = model_;
    for (std::size_t t = 0; t < tensors_.size(); ++t) {
        Tensor& tensor = model.weights[t];
        tensor.values.resize(manifest_.tensors[t].element_count());
        read_values(t, 0, tensor.values);
    }
}

bool write_model_file(const ModelAssembler& assembler, const std::filesystem::path& path,
                      bool external_data) {
    return write_onnx_file(
        assembler.topology().topology,
        [&](std::size_t tensor, std::uint64_t first, std::span<float> out) {
            assembler.read_values(tensor, first, out);
        },
        path, external_data);
}

}  // namespace bitinc
