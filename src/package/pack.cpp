// Building a package: quantize every tensor on the ladder, code its units in
// parallel, lay them out in rung files, and move the directory into place.
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <tuple>

#include "bitinc/codec.hpp"
#include "bitinc/error.hpp"
#include "bitinc/pack.hpp"
#include "bitinc/package_reader.hpp"
#include "bitinc/trust.hpp"
#include "bitinc/version.hpp"
#include "core/file_io.hpp"
#include "core/parallel.hpp"
#include "core/sha256.hpp"
#include "package/bit_allocation.hpp"
#include "package/refinement_order.hpp"
#include "package/rung_file_writer.hpp"
#include "package/version_delta.hpp"

namespace bitinc {

namespace {

namespace fs = std::filesystem;

std::vector<int> checked_direct_bits(const PackOptions& options) {
    const std::vector<int>& ladder = options.ladder.bits;
    if (ladder.empty()) throw Error(ErrorCode::invalid_argument, "pack: the ladder is empty");
    std::vector<int> direct = options.direct_bits;
    if (direct.empty()) direct.push_back(options.ladder.top_bits());
    std::sort(direct.begin(), direct.end());
    direct.erase(std::unique(direct.begin(), direct.end()), direct.end());
    for (const int bits : direct) {
        if (std::find(ladder.begin(), ladder.end(), bits) == ladder.end()) {
            throw Error(ErrorCode::invalid_argument, "pack: direct rung " + std::to_string(bits) +
                                                         " is not one of the ladder's bit depths");
        }
    }
    return direct;
}

// A job codes one unit: one chunk of one tensor for one rung.
struct UnitJob {
    std::size_t rung = 0;
    UnitTarget target;
    std::vector<std::uint8_t> bytes;
    std::string sha256;
};

// The entries of `directory` that are not files of the package it holds, or
// every entry when it holds no readable package.
std::vector<std::string> foreign_entries(const fs::path& directory) {
    std::vector<std::string> allowed{std::string(manifest_file_name),
                                     std::string(signature_file_name)};
    try {
        const Manifest old = read_manifest(directory);
        allowed.push_back(old.topology.file);
        for (const RungEntry& rung : old.rungs) allowed.push_back(rung.data.file);
        for (const DeltaEntry& delta : old.deltas) allowed.push_back(delta.data.file);
    } catch (const Error&) {
        allowed.clear();
    }
    std::vector<std::string> foreign;
    try {
        for (const auto& entry : fs::directory_iterator(directory)) {
            const std::string name = entry.path().filename().string();
            const bool ours = entry.is_regular_file() && !entry.is_symlink() &&
                              std::find(allowed.begin(), allowed.end(), name) != allowed.end();
            if (!ours) foreign.push_back(name);
        }
    } catch (const fs::filesystem_error& failure) {
        throw Error(ErrorCode::io,
                    directory.string() + ": cannot list it: " + failure.code().message());
    }
    return foreign;
}

// Moves a finished package directory into place without ever leaving
// `output` half-written. An existing non-empty `output` is replaced only when
// asked to and only when it holds nothing but a package's own files, so pack
// never deletes what it did not write.
void install_directory(const fs::path& built, const fs::path& output, bool replace) {
    std::error_code error;
    if (!fs::exists(fs::symlink_status(output, error))) {
        fs::rename(built, output, error);
        if (error)
            throw Error(ErrorCode::io,
                        "cannot move the package into " + output.string() + ": " + error.message());
        return;
    }
    if (!fs::is_directory(fs::symlink_status(output, error))) {
        throw Error(ErrorCode::invalid_argument,
                    output.string() + " exists and is not a directory; not replacing it");
    }
    if (!fs::is_empty(output, error)) {
        if (!replace) {
            throw Error(
                ErrorCode::invalid_argument,
                output.string() +
                    " is not empty; not writing into it (--force replaces a package there)");
        }
        const std::vector<std::string> foreign = foreign_entries(output);
        if (!foreign.empty()) {
            throw Error(ErrorCode::invalid_argument,
                        output.string() + " holds '" + foreign.front() +
                            "', which is not a file of a bitinc package; not replacing it");
        }
    }
    // Swap the two directories in one step, so `output` is always either the
    // old package or the new one; then drop the old one.
    if (::renameat2(AT_FDCWD, built.c_str(), AT_FDCWD, output.c_str(), RENAME_EXCHANGE) == 0) {
        fs::remove_all(built, error);
        return;
    }
    const fs::path old = output.string() + ".old-" + std::to_string(::getpid());
    fs::remove_all(old, error);
    fs::rename(output, old, error);
    if (error)
        throw Error(ErrorCode::io,
                    "cannot move the old " + output.string() + " aside: " + error.message());
    fs::rename(built, output, error);
    if (error) {
        std::error_code ignored;
        fs::rename(old, output, ignored);
        throw Error(ErrorCode::io,
                    "cannot move the package into " + output.string() + ": " + error.message());
    }
    fs::remove_all(old, error);
}

void write_plain_file(const fs::path& path, std::string_view bytes) {
    std::ofstream stream(path, std::ios::binary | std::ios::trunc);
    stream.write(bytes.data(), std::streamsize(bytes.size()));
    stream.flush();
    if (!stream) throw Error(ErrorCode::io, "cannot write " + path.string() + " (disk full?)");
}

// Codes `tensor` (index `tensor_index`) into every rung it travels in, its
// units in parallel, and appends them to the rung files. Returns the grid
// it was quantized on (empty for an exact tensor).
TopGrid pack_tensor(const Tensor& tensor, std::size_t tensor_index, bool quantized,
                    const TopGrid* previous_grid, const PackOptions& options, int threads,
                    Manifest& manifest, std::deque<RungFileWriter>& files,
                    std::vector<double>& encode_seconds, std::size_t& done,
                    std::size_t total_units) {
    // The tensor's own ladder: the manifest's, or its mixed-precision bits.
    const LadderPlan plan = manifest.tensor_ladder(tensor_index);
    const std::vector<UnitTarget> chunks =
        plan_chunks(std::uint32_t(tensor_index), tensor.element_count(), manifest.chunk_elements);
    // Each unit quantizes its own chunk from the top rung's grid: no whole
    // rung of the tensor is ever held, so pack's peak stays near one copy of
    // the largest tensor's values (docs/performance.md, "Memory").
    TopGrid grid;
    std::vector<std::vector<float>> steps_by_rung(plan.bits.size());
    if (quantized) {
        grid = grid_following(tensor, plan, previous_grid);
        for (std::size_t r = 0; r < plan.bits.size(); ++r)
            steps_by_rung[r] = rung_steps(grid, plan, plan.bits[r]);
    }
    const auto chunk_of = [&](int bits, const std::vector<std::int32_t>& indices) {
        const auto position =
            std::size_t(std::find(plan.bits.begin(), plan.bits.end(), bits) - plan.bits.begin());
        return RungChunk{bits, steps_by_rung.at(position), grid.channel_size, indices,
                         row_length(tensor)};
    };
    const auto chunk_at = [&](int bits, const UnitTarget& target,
                              std::vector<std::int32_t>& indices) {
        indices.resize(target.count);
        quantize_chunk(tensor, grid, plan, bits, target.first, indices);
        return chunk_of(bits, indices);
    };

    std::vector<UnitJob> jobs;
    for (std::size_t r = 0; r < manifest.rungs.size(); ++r) {
        const RungEntry& rung = manifest.rungs[r];
        if (!manifest.carries(rung, tensor_index)) continue;
        for (const UnitTarget& chunk : chunks) jobs.push_back({r, chunk, {}, {}});
    }
    std::mutex progress_mutex;
    const auto code_job = [&](std::size_t j) {
        const auto job_start = std::chrono::steady_clock::now();
        UnitJob& job = jobs[j];
        const RungEntry& rung = manifest.rungs[job.rung];
        if (!quantized) {
            job.bytes = encode_exact_unit(job.target, tensor.values);
        } else if (rung.kind == RungKind::exact) {
            // The source values against the top rung a device holds.
            std::vector<std::int32_t> top;
            const RungChunk top_chunk =
                chunk_at(manifest.unit_parent_bits(rung, tensor_index), job.target, top);
            job.bytes = encode_lossless_unit(
                job.target, tensor.stored_as,
                std::span(tensor.values).subspan(job.target.first, job.target.count), top_chunk);
        } else if (rung.kind == RungKind::refinement) {
            // The coarse chunk from the fine one: rounded once, divided down.
            const int fine_bits = manifest.unit_bits(rung, tensor_index);
            const int coarse_bits = manifest.unit_parent_bits(rung, tensor_index);
            std::vector<std::int32_t> fine;
            const RungChunk fine_chunk = chunk_at(fine_bits, job.target, fine);
            std::vector<std::int32_t> coarse = fine;
            coarsen_chunk(plan, fine_bits, coarse_bits, coarse);
            job.bytes = encode_refinement_unit(job.target, chunk_of(coarse_bits, coarse),
                                               fine_chunk, options.coder_choice);
        } else {
            std::vector<std::int32_t> indices;
            job.bytes = encode_level_unit(
                job.target, chunk_at(manifest.unit_bits(rung, tensor_index), job.target, indices),
                options.coder_choice);
        }
        job.sha256 = unit_sha256(job.bytes);  // in parallel: hashing is not free
        const double job_seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - job_start).count();
        const std::lock_guard lock(progress_mutex);
        encode_seconds[job.rung] += job_seconds;
        if (options.progress) options.progress(++done, total_units);
    };
    // A few units per thread at a time, written in order as each batch ends,
    // so that the coded bytes of a large tensor are not all held at once.
    const std::size_t batch = 2 * std::size_t(std::max(threads, 1));
    for (std::size_t first = 0; first < jobs.size(); first += batch) {
        const std::size_t count = std::min(batch, jobs.size() - first);
        core::run_parallel(count, threads, [&](std::size_t j) { code_job(first + j); });
        for (std::size_t j = first; j < first + count; ++j) {
            UnitJob& job = jobs[j];
            const std::uint64_t offset = files[job.rung].append(job.bytes);
            manifest.rungs[job.rung].units.push_back(
                {std::uint32_t(tensor_index), job.target.first, job.target.count, offset,
                 std::uint32_t(job.bytes.size()), unit_crc32c(job.bytes), std::move(job.sha256)});
            std::vector<std::uint8_t>().swap(job.bytes);  // freed as soon as written
        }
    }
    return grid;
}

// LadderPlan::quantizes on a weight's shape, before its values are loaded.
bool quantizes_shape(const LadderPlan& plan, const Tensor& shell, std::uint64_t elements) {
    return shell.shape.size() >= 2 && elements >= plan.min_quantized_elements;
}

// Mixed precision: each quantized tensor's bits at every rung, given whole
// (`rung_bits`, from a budget) or from its base bits as max(base, the
// ladder's rung), so that each refinement lifts it from where it is to the
// next rung. Leaves every tensor on the ladder's own bits (a format-3
// package) when none differs from the ladder's.
void assign_tensor_bits(Manifest& manifest, const std::vector<int>& base_bits,
                        const std::vector<std::vector<int>>& rung_bits) {
    const LadderPlan& plan = manifest.ladder;
    std::vector<std::vector<int>> bits(manifest.tensors.size());
    bool mixed = false;
    for (std::size_t t = 0; t < manifest.tensors.size(); ++t) {
        if (!manifest.tensors[t].quantized) continue;
        const int given = t < base_bits.size() ? base_bits[t] : 0;
        bits[t] = t < rung_bits.size() && !rung_bits[t].empty()
                      ? rung_bits[t]
                      : plan.rung_bits_with_base(given == 0 ? plan.base_bits() : given);
        const std::vector<int>& own = bits[t];
        const bool valid = own.size() == plan.bits.size() && own.back() == plan.top_bits() &&
                           std::is_sorted(own.begin(), own.end()) && own.front() >= min_ladder_bits;
        if (!valid) {
            std::string listed;
            for (const int b : own) listed += (listed.empty() ? "" : ",") + std::to_string(b);
            throw Error(ErrorCode::invalid_argument,
                        "pack: tensor '" + manifest.tensors[t].name + "': bits " + listed +
                            " are not one per rung, non-decreasing from at least 2 to the "
                            "ladder's top (" +
                            std::to_string(plan.top_bits()) + ")");
        }
        mixed |= own != plan.bits;
    }
    if (!mixed) return;
    for (std::size_t t = 0; t < manifest.tensors.size(); ++t) {
        if (manifest.tensors[t].quantized) manifest.tensors[t].bits = std::move(bits[t]);
    }
    manifest.format_version = std::max(manifest.format_version, mixed_precision_format_version);
}

std::string percent_text(double share) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f %%", 100.0 * share);
    return text;
}

// A warning when less than half of the model's float parameters go through
// the ladder, naming where the rest are: a package whose rungs are (nearly)
// empty "works" but delivers nothing incrementally.
std::vector<std::string> incremental_share_warnings(const TopologySummary& summary,
                                                    const Manifest& manifest) {
    std::uint64_t quantized = 0, exact = 0;
    for (const TensorEntry& tensor : manifest.tensors)
        (tensor.quantized ? quantized : exact) += tensor.element_count();
    const std::uint64_t in_constants = summary.constant_float_elements;
    const std::uint64_t all = quantized + exact + in_constants;
    const bool prequantized = std::any_of(
        summary.kept_tensors.begin(), summary.kept_tensors.end(),
        [](const KeptTensor& kept) { return kept.kind == KeptTensor::Kind::quantized; });
    const char* const prequantized_why =
        prequantized ? " (its weights are already quantized integers, see the note)" : "";
    if (all == 0) {
        return {std::string("the model has no float weights") + prequantized_why +
                ": every rung is empty and nothing is sent incrementally"};
    }
    if (2 * quantized >= all) return {};
    std::string why = "only " + percent_text(double(quantized) / double(all)) +
                      " of the model's float parameters go through the ladder:";
    if (in_constants > 0) {
        why += " " + std::to_string(in_constants) + " are in " +
               std::to_string(summary.constant_float_tensors) +
               " Constant nodes that bitinc does not quantize (scalars, or inside subgraphs), "
               "which travel unquantized inside the topology";
        if (exact > 0) why += ";";
    }
    if (exact > 0) {
        why += " " + std::to_string(exact) +
               " are in tensors of rank below 2 or below --min-elements, which travel exactly";
    }
    return {why + prequantized_why};
}

// With an exact rung, quantized rungs finer than the weights' own precision
// (bfloat16 keeps 8 significant bits, float16 11) cost more than the exact
// rung they lead to: mobilenetv2 in bfloat16 with 4,8,16,exact takes 1.38x
// the bytes of 4,8,exact.
std::optional<std::string> exact_rung_warning(const Manifest& manifest) {
    if (!manifest.ladder.exact_top) return std::nullopt;
    const int top = manifest.ladder.top_bits();
    struct Precision {
        StoredType type;
        int significant_bits;
    };
    for (const Precision precision :
         {Precision{StoredType::bfloat16, 8}, Precision{StoredType::float16, 11}}) {
        const bool present = std::any_of(
            manifest.tensors.begin(), manifest.tensors.end(), [&](const TensorEntry& tensor) {
                return tensor.quantized && tensor.stored_as == precision.type;
            });
        if (present && top > precision.significant_bits) {
            const std::string significant = std::to_string(precision.significant_bits);
            return "the ladder's top rung of " + std::to_string(top) + " bits is finer than " +
                   std::string(stored_type_name(precision.type)) + " weights (" + significant +
                   " significant bits): rungs past that cost more than the exact rung saves; "
                   "end the ladder at " +
                   significant + " bits or below (e.g. 4,8,exact)";
        }
    }
    return std::nullopt;
}

// "'a', 'b', 'c' and 2 more": the names a message gives, not all of a
// model's thousands.
std::string some_names(const std::vector<const KeptTensor*>& tensors) {
    constexpr std::size_t named = 4;
    std::string text;
    for (std::size_t i = 0; i < tensors.size() && i < named; ++i) {
        if (i > 0) text += ", ";
        text += "'" + printable_text(tensors[i]->name) + "' (" + tensors[i]->element_type + ", " +
                std::to_string(tensors[i]->elements) + " elements)";
    }
    if (tensors.size() > named) text += " and " + std::to_string(tensors.size() - named) + " more";
    return text;
}

// Tensors that hold data but are no weights bitinc codes: a note for
// already-quantized ones (they travel losslessly, as they should), a
// warning naming the others.
void kept_tensor_messages(const TopologySummary& summary, PackResult& result) {
    using Kind = KeptTensor::Kind;
    const auto of_kind = [&](Kind kind) {
        std::vector<const KeptTensor*> found;
        for (const KeptTensor& kept : summary.kept_tensors)
            if (kept.kind == kind) found.push_back(&kept);
        return found;
    };
    if (const auto quantized = of_kind(Kind::quantized); !quantized.empty()) {
        std::uint64_t bytes = 0;
        std::set<std::string> types;
        for (const KeptTensor* kept : quantized) {
            bytes += kept->bytes;
            types.insert(kept->element_type);
        }
        std::string type_list;
        for (const std::string& type : types) type_list += (type_list.empty() ? "" : ", ") + type;
        result.notes.push_back(
            std::to_string(quantized.size()) + " already-quantized tensor" +
            (quantized.size() == 1 ? "" : "s") + " (" + type_list + ", " + std::to_string(bytes) +
            " bytes) " + (quantized.size() == 1 ? "travels" : "travel") +
            " unchanged inside the topology, bit for bit: the model's own quantization "
            "(QuantizeLinear/DequantizeLinear or QLinear operators), which re-quantizing could "
            "only make worse");
    }
    if (const auto& requantized = summary.requantized_weights; !requantized.empty()) {
        std::string names;
        for (std::size_t i = 0; i < requantized.size() && i < 4; ++i)
            names += (i ? ", '" : "'") + printable_text(requantized[i]) + "'";
        if (requantized.size() > 4)
            names += " and " + std::to_string(requantized.size() - 4) + " more";
        result.warnings.push_back(
            std::to_string(requantized.size()) + " float weight" +
            (requantized.size() == 1 ? " feeds" : "s feed") +
            " QuantizeLinear, so the graph rounds each rung's values to its own integers again: "
            "a weight within a rung's error of one of the model's rounding boundaries comes out "
            "one integer step away (a top rung of more bits makes that rarer): " +
            names);
    }
    if (const auto unsupported = of_kind(Kind::unsupported_type); !unsupported.empty()) {
        result.warnings.push_back(
            "tensors of element types bitinc does not code travel unchanged inside the "
            "topology (not incrementally; the engine may not run them): " +
            some_names(unsupported));
    }
    if (const auto in_subgraph = of_kind(Kind::in_subgraph); !in_subgraph.empty()) {
        result.warnings.push_back(
            "float tensors inside subgraphs (If/Loop/Scan bodies) travel unquantized inside the "
            "topology: " +
            some_names(in_subgraph));
    }
    if (const auto sparse = of_kind(Kind::sparse); !sparse.empty()) {
        result.warnings.push_back(
            "sparse Constant values travel unchanged inside the topology (bitinc codes dense "
            "tensors only): " +
            some_names(sparse));
    }
}

}  // namespace

PackResult pack_model(const fs::path& model_path, const PackOptions& options,
                      const fs::path& output) {
    const auto start = std::chrono::steady_clock::now();
    const std::vector<int> direct_bits = checked_direct_bits(options);
    const LadderPlan& plan = options.ladder;
    // The structure only: weights are loaded one at a time below.
    if (options.budget) check_budget(*options.budget, plan);
    const OnnxWeightReader reader(model_path);
    const Model& model = reader.topology();
    validate_graph(model, model_path.string());
    // Calibration data is read first: a wrong directory fails before any
    // unit is coded.
    std::optional<ImageSet> calibration_images;
    if (options.calibration) calibration_images = load_calibration_images(*options.calibration);
    std::optional<PreviousVersion> previous;
    if (!options.previous_package.empty())
        previous = read_previous_version(options.previous_package, plan.top_bits());
    std::optional<BitAllocation> allocation;
    std::vector<int> base_bits = options.base_bits;
    if (options.budget) {
        const ImageSet budget_images = load_calibration_images(options.budget->calibration);
        allocation = choose_tensor_bits(model_path, plan, options.chunk_elements, *options.budget,
                                        budget_images, core::resolve_threads(options.threads),
                                        options.coder_choice);
        base_bits = allocation->base_bits;
    }

    Manifest manifest;
    manifest.format_version = oldest_package_format_version;
    manifest.generator = "bitinc " + std::string(version());
    manifest.model_name = model_path.stem().string();
    {
        const core::ReadableFile source(model_path);
        manifest.source_sha256 = core::file_sha256_hex(source);
        manifest.source_bytes = source.size();
    }
    for (std::size_t t = 0; t < model.weights.size(); ++t) {
        manifest.parameters += reader.element_count(t);
    }
    manifest.float32_bytes = manifest.parameters * sizeof(float);
    manifest.topology = {"topology.onnx", model.topology.size(), core::sha256_hex(model.topology)};
    manifest.ladder = plan;
    manifest.chunk_elements =
        std::clamp<std::uint64_t>(options.chunk_elements, 1, max_unit_elements);
    for (std::size_t t = 0; t < model.weights.size(); ++t) {
        const Tensor& tensor = model.weights[t];
        manifest.tensors.push_back({tensor.name,
                                    tensor.shape,
                                    tensor.stored_as,
                                    quantizes_shape(plan, tensor, reader.element_count(t)),
                                    {}});
    }
    // A new version takes the earlier one's bits by default, so that the
    // two line up rung by rung.
    if (previous && base_bits.empty() && !options.budget)
        base_bits = previous_base_bits(*previous, manifest);
    assign_tensor_bits(manifest, base_bits,
                       allocation ? allocation->rung_bits : std::vector<std::vector<int>>{});
    for (std::size_t i = 0; i < plan.bits.size(); ++i) {
        RungEntry rung;
        rung.kind = i == 0 ? RungKind::base : RungKind::refinement;
        rung.bits = plan.bits[i];
        rung.parent_bits = i == 0 ? 0 : plan.bits[i - 1];
        rung.data.file = i == 0 ? "base-" + std::to_string(rung.bits) + ".bin"
                                : "refine-" + std::to_string(rung.parent_bits) + "-" +
                                      std::to_string(rung.bits) + ".bin";
        manifest.rungs.push_back(std::move(rung));
    }
    if (plan.exact_top) {
        // Format 5. Float64 weights reach the package rounded to float32
        // (format.md §7.2), quantized or not: no rung gives them back.
        for (const TensorEntry& tensor : manifest.tensors) {
            if (tensor.stored_as == StoredType::float64) {
                throw Error(ErrorCode::unsupported,
                            "pack: tensor '" + tensor.name +
                                "' is float64; an exact rung reproduces float32, float16 and "
                                "bfloat16 weights only (drop 'exact' from the ladder)");
            }
        }
        RungEntry rung;
        rung.kind = RungKind::exact;
        rung.bits = exact_rung_bits;
        rung.parent_bits = plan.top_bits();
        rung.data.file = "exact-" + std::to_string(rung.parent_bits) + ".bin";
        manifest.rungs.push_back(std::move(rung));
        manifest.format_version = exact_rung_format_version;
    }
    for (const int bits : direct_bits) {
        RungEntry rung;
        rung.kind = RungKind::direct;
        rung.bits = bits;
        rung.data.file = "direct-" + std::to_string(bits) + ".bin";
        manifest.rungs.push_back(std::move(rung));
    }

    std::size_t total_units = 0;
    for (std::size_t t = 0; t < model.weights.size(); ++t) {
        const std::uint64_t elements = reader.element_count(t);
        if (elements == 0) continue;
        const std::size_t chunks = plan_chunks(0, elements, manifest.chunk_elements).size();
        const std::size_t rungs = std::size_t(
            std::count_if(manifest.rungs.begin(), manifest.rungs.end(),
                          [&](const RungEntry& rung) { return manifest.carries(rung, t); }));
        total_units += chunks * rungs;
    }

    std::error_code error;
    const fs::path absolute = fs::absolute(output, error).lexically_normal();
    if (error) throw Error(ErrorCode::io, output.string() + ": " + error.message());
    const fs::path target = absolute.has_filename() ? absolute : absolute.parent_path();
    const fs::path building = target.string() + ".partial-" + std::to_string(::getpid());
    fs::remove_all(building, error);
    if (!fs::create_directories(building, error) || error) {
        throw Error(ErrorCode::io, "cannot create " + building.string() + ": " + error.message());
    }
    const int threads = core::resolve_threads(options.threads);
    std::vector<double> encode_seconds(manifest.rungs.size(), 0.0);
    std::vector<std::string> delta_notes;
    std::vector<TopGrid> grids(model.weights.size());  // what each tensor was quantized on
    try {
        write_plain_file(building / manifest.topology.file, model.topology);
        std::deque<RungFileWriter> files;
        for (const RungEntry& rung : manifest.rungs) {
            files.emplace_back(building / rung.data.file);
            // The rungs a device starts from begin with the topology (format 3).
            if (starts_with_topology(rung.kind)) files.back().append(model.topology);
        }
        std::size_t done = 0;
        for (std::size_t t = 0; t < model.weights.size(); ++t) {
            if (reader.element_count(t) == 0) continue;  // nothing to send
            Tensor tensor = model.weights[t];
            tensor.values = reader.read_values(t);
            if (plan.quantizes(tensor) != manifest.tensors[t].quantized) {
                throw Error(ErrorCode::internal,
                            "pack: internal error: tensor '" + tensor.name +
                                "' quantized by shape and by values differently");
            }
            const TopGrid* previous_grid = nullptr;
            if (previous) {
                const auto found = previous->grids.find(tensor.name);
                if (found != previous->grids.end()) previous_grid = &found->second;
            }
            grids[t] = pack_tensor(tensor, t, manifest.tensors[t].quantized, previous_grid, options,
                                   threads, manifest, files, encode_seconds, done, total_units);
        }
        for (std::size_t r = 0; r < manifest.rungs.size(); ++r) {
            std::tie(manifest.rungs[r].data.bytes, manifest.rungs[r].data.sha256) =
                files[r].finish();
        }
        // The allocation was planned on these very units' sizes: the base
        // rung must come out exactly as planned, hence within its budget.
        if (allocation && manifest.rungs.front().data.bytes != allocation->base_bytes) {
            throw Error(ErrorCode::internal, "pack: internal error: the base rung has " +
                                                 std::to_string(manifest.rungs.front().data.bytes) +
                                                 " bytes, its bit allocation planned " +
                                                 std::to_string(allocation->base_bytes));
        }
        if (allocation) {
            std::uint64_t cumulative = manifest.rungs.front().data.bytes;
            for (std::size_t r = 0; r < allocation->refinements.size(); ++r) {
                cumulative += manifest.rungs[r + 1].data.bytes;
                if (cumulative != allocation->refinements[r].bytes) {
                    throw Error(ErrorCode::internal,
                                "pack: internal error: base and refinements to rung " +
                                    std::to_string(r + 1) + " have " + std::to_string(cumulative) +
                                    " bytes, the bit allocation planned " +
                                    std::to_string(allocation->refinements[r].bytes));
                }
            }
        }
        if (previous) {
            delta_notes = pack_version_deltas(building, manifest, reader, grids, *previous,
                                              options.coder_choice, threads);
        }
        // Reorders refinement units in the finished rung files (issue 12).
        if (options.calibration) {
            const std::vector<std::string> order_notes = calibrate_refinements(
                building, manifest, model_path, *options.calibration, *calibration_images);
            delta_notes.insert(delta_notes.end(), order_notes.begin(), order_notes.end());
        }
        if (options.signing) {
            manifest.format_version = std::max(manifest.format_version, release_format_version);
            manifest.release = Release{
                options.signing->model_id.empty() ? manifest.model_name : options.signing->model_id,
                options.signing->release};
        }
        const std::string manifest_text = serialize_manifest(manifest);
        // What we wrote must read back: the writer and the reader agree.
        parse_manifest(manifest_text, "the new manifest");
        write_plain_file(building / manifest_file_name, manifest_text);
        if (options.signing) {
            write_plain_file(building / signature_file_name,
                             sign_manifest(options.signing->private_key_pem, manifest_text));
        }
        install_directory(building, target, options.replace);
    } catch (...) {
        fs::remove_all(building, error);
        throw;
    }
    PackResult result;
    const TopologySummary summary = summarize_topology(model);
    result.warnings = incremental_share_warnings(summary, manifest);
    if (const auto warning = exact_rung_warning(manifest)) result.warnings.push_back(*warning);
    kept_tensor_messages(summary, result);
    result.notes.insert(result.notes.end(), delta_notes.begin(), delta_notes.end());
    result.manifest = std::move(manifest);
    result.rung_encode_seconds = std::move(encode_seconds);
    result.allocation = std::move(allocation);
    result.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return result;
}

PackResult pack_weights(std::vector<Tensor> weights, const PackOptions& options,
                        const fs::path& output, const std::string& model_name) {
    if (model_name.empty() || model_name.find('/') != std::string::npos)
        throw Error(ErrorCode::invalid_argument,
                    "pack: the model name '" + model_name + "' is not a file name");
    const Model model = model_of_weights(std::move(weights), model_name);
    // A directory of its own (mkdtemp), removed however packing ends.
    std::error_code no_temporary;
    const fs::path temporary = fs::temp_directory_path(no_temporary);
    std::string scratch_name = (temporary / "bitinc-weights-XXXXXX").string();
    if (no_temporary || ::mkdtemp(scratch_name.data()) == nullptr)
        throw Error(ErrorCode::io,
                    "pack: cannot make a temporary directory in " + temporary.string());
    const fs::path scratch = scratch_name;
    struct RemoveOnExit {
        fs::path path;
        ~RemoveOnExit() {
            std::error_code error;
            fs::remove_all(path, error);
        }
    } remove_on_exit{scratch};
    const fs::path file = scratch / (model_name + ".onnx");
    write_onnx_file(model, file);
    return pack_model(file, options, output);
}

}  // namespace bitinc
