// Reading packages from a local directory: unpack and verify.
#include <algorithm>
#include <cstring>
#include <map>
#include <optional>

#include "bitinc/assembler.hpp"
#include "bitinc/error.hpp"
#include "bitinc/package_reader.hpp"
#include "core/file_io.hpp"
#include "core/parallel.hpp"
#include "core/sha256.hpp"

namespace bitinc {

namespace {

namespace fs = std::filesystem;

// A rung file read one tensor's units at a time (positioned reads), so that
// no whole rung sits in memory.
class RungFile {
  public:
    RungFile(const fs::path& directory, const RungEntry& rung)
        : path_(directory / rung.data.file), rung_(rung), file_(path_) {
        if (file_.size() != rung.data.bytes) {
            throw Error(ErrorCode::corrupt_data,
                        path_.string() + ": " + std::to_string(file_.size()) +
                            " bytes, the manifest says " + std::to_string(rung.data.bytes) +
                            " (truncated?)");
        }
        for (std::size_t u = 0; u < rung.units.size(); ++u) {
            units_by_tensor_[rung.units[u].tensor].push_back(u);
        }
    }

    const fs::path& path() const { return path_; }

    // The unit indices of `tensor` in this rung, in file order.
    const std::vector<std::size_t>& units_of(std::size_t tensor) const {
        static const std::vector<std::size_t> none;
        const auto found = units_by_tensor_.find(tensor);
        return found == units_by_tensor_.end() ? none : found->second;
    }

    // The first `length` bytes (a format-3 rung's topology), or fewer if
    // the file is shorter.
    std::string read_head(std::uint64_t length) const {
        std::string bytes(std::size_t(std::min(length, file_.size())), '\0');
        file_.read_at(0, bytes.data(), bytes.size());
        return bytes;
    }

    std::vector<std::uint8_t> read_unit(std::size_t unit_index) const {
        const UnitEntry& unit = rung_.units[unit_index];
        std::vector<std::uint8_t> bytes(unit.length);
        file_.read_at(unit.offset, bytes.data(), bytes.size());
        return bytes;
    }

  private:
    fs::path path_;
    const RungEntry& rung_;
    core::ReadableFile file_;
    std::map<std::size_t, std::vector<std::size_t>> units_by_tensor_;
};

// Applies units `units` of `file` with apply(unit index, bytes, where), in
// parallel; each unit is read as a worker takes it. Returns the errors, one
// line each, in unit order.
template <typename Apply>
std::vector<std::string> apply_units(const RungFile& file, const std::vector<std::size_t>& units,
                                     Apply apply) {
    std::vector<std::string> errors(units.size());
    core::run_parallel(units.size(), core::resolve_threads(0), [&](std::size_t i) {
        try {
            apply(units[i], file.read_unit(units[i]), file.path().string());
        } catch (const Error& error) {
            errors[i] = error.what();
        }
    });
    std::erase(errors, std::string());
    return errors;
}

// The units of `tensor` in `file`, of rung `rung_index`.
std::vector<std::string> apply_tensor_units(ModelAssembler& assembler, std::size_t rung_index,
                                            const RungFile& file, std::size_t tensor) {
    return apply_units(
        file, file.units_of(tensor),
        [&](std::size_t unit, std::span<const std::uint8_t> bytes, const std::string& where) {
            assembler.apply_unit(rung_index, unit, bytes, where);
        });
}

std::vector<const RungEntry*> rungs_to_unpack(const fs::path& directory, const Manifest& manifest,
                                              int bits, bool direct) {
    if (direct) {
        const RungEntry* rung = manifest.find_rung(RungKind::direct, bits);
        if (rung == nullptr) {
            throw Error(ErrorCode::invalid_argument, directory.string() +
                                                         ": the package has no direct rung of " +
                                                         std::to_string(bits) + " bits");
        }
        return {rung};
    }
    std::vector<const RungEntry*> rungs = manifest.ladder_rungs(bits);
    if (rungs.empty() || rungs.back()->bits != bits) {
        throw Error(ErrorCode::invalid_argument, directory.string() +
                                                     ": the package's ladder has no rung of " +
                                                     std::to_string(bits) + " bits");
    }
    return rungs;
}

// A package opened for unpacking: its assembler and the rung files needed.
struct Unpacker {
    Manifest manifest;
    ModelAssembler assembler;
    std::vector<std::pair<std::size_t, RungFile>> files;  // (rung index, file)

    Unpacker(const fs::path& directory, int bits, bool direct)
        : manifest(read_manifest(directory)),
          assembler(manifest, read_package_file(directory, manifest.topology),
                    (directory / manifest.topology.file).string()) {
        for (const RungEntry* rung : rungs_to_unpack(directory, manifest, bits, direct)) {
            files.emplace_back(manifest.rung_index(*rung), RungFile(directory, *rung));
        }
    }

    // Brings `tensor` to the rung asked for; throws the first unit's error.
    void assemble(std::size_t tensor) {
        for (const auto& [rung_index, file] : files) {
            const std::vector<std::string> errors =
                apply_tensor_units(assembler, rung_index, file, tensor);
            if (!errors.empty()) throw Error(ErrorCode::corrupt_data, errors.front());
        }
    }
};

}  // namespace

std::span<const std::uint8_t> unit_bytes(std::string_view rung_file, const UnitEntry& unit) {
    return std::span(reinterpret_cast<const std::uint8_t*>(rung_file.data()) + unit.offset,
                     unit.length);
}

std::string read_package_file(const fs::path& directory, const FileEntry& entry) {
    const fs::path path = directory / entry.file;
    std::string bytes = core::read_file(path, entry.bytes);
    if (bytes.size() != entry.bytes) {
        throw Error(ErrorCode::corrupt_data, path.string() + ": " + std::to_string(bytes.size()) +
                                                 " bytes, the manifest says " +
                                                 std::to_string(entry.bytes) + " (truncated?)");
    }
    return bytes;
}

Manifest read_manifest(const fs::path& directory) {
    const fs::path path = directory / manifest_file_name;
    return parse_manifest(core::read_file(path, max_manifest_bytes), path.string());
}

Model unpack_package(const fs::path& directory, int bits, bool direct) {
    Unpacker unpacker(directory, bits, direct);
    for (std::size_t t = 0; t < unpacker.manifest.tensors.size(); ++t) unpacker.assemble(t);
    return unpacker.assembler.model();
}

std::vector<std::optional<QuantizedTensor>> unpack_levels(const fs::path& directory, int bits) {
    Unpacker unpacker(directory, bits, false);
    std::vector<std::optional<QuantizedTensor>> levels(unpacker.manifest.tensors.size());
    for (std::size_t t = 0; t < levels.size(); ++t) {
        if (!unpacker.manifest.tensors[t].quantized) continue;
        unpacker.assemble(t);
        levels[t] = unpacker.assembler.levels(t);
        unpacker.assembler.release_tensor(t);
    }
    return levels;
}

bool unpack_package_to_file(const fs::path& directory, int bits, bool direct,
                            const fs::path& output, bool external_data) {
    Unpacker unpacker(directory, bits, direct);
    std::optional<std::size_t> current;
    // The writer asks for tensors in order: each is assembled when first
    // asked for and freed when the next is.
    return write_onnx_file(
        unpacker.assembler.topology().topology,
        [&](std::size_t tensor, std::uint64_t first, std::span<float> out) {
            if (current != tensor) {
                if (current) unpacker.assembler.release_tensor(*current);
                unpacker.assemble(tensor);
                current = tensor;
            }
            unpacker.assembler.read_values(tensor, first, out);
        },
        output, external_data);
}

namespace {

// A delta's file and units read like a rung's.
RungEntry delta_as_rung(const DeltaEntry& delta) {
    RungEntry rung;
    rung.kind = RungKind::refinement;  // no topology at its start
    rung.bits = delta.bits;
    rung.data = delta.data;
    rung.units = delta.units;
    return rung;
}

// Every unit of `file` (`units` of them); throws the first error.
template <typename Apply>
void apply_every_unit(const RungFile& file, std::size_t units, Apply apply) {
    std::vector<std::size_t> all(units);
    for (std::size_t u = 0; u < units; ++u) all[u] = u;
    const std::vector<std::string> errors = apply_units(file, all, apply);
    if (!errors.empty()) throw Error(ErrorCode::corrupt_data, errors.front());
}

}  // namespace

std::optional<std::size_t> find_delta(const Manifest& manifest, std::string_view weights_sha256) {
    for (std::size_t d = 0; d < manifest.deltas.size(); ++d)
        if (manifest.deltas[d].from.weights_sha256 == weights_sha256) return d;
    return std::nullopt;
}

std::optional<std::size_t> find_delta(const Manifest& manifest, const Model& previous) {
    return find_delta(manifest, model_weights_sha256(previous));
}

Model unpack_from_previous(const fs::path& directory, const Model& previous, int bits) {
    const Manifest manifest = read_manifest(directory);
    const std::string held_sha256 = model_weights_sha256(previous);  // hashed once, used twice
    const std::optional<std::size_t> found = find_delta(manifest, held_sha256);
    if (!found) {
        throw Error(ErrorCode::invalid_argument,
                    directory.string() +
                        ": no delta of this package starts from the model given (it is not an "
                        "earlier version this package was made against, at one of its rungs)");
    }
    const DeltaEntry& delta = manifest.deltas[*found];
    if (bits == 0) bits = manifest.ladder.top_bits();
    if (bits < delta.bits) {
        throw Error(ErrorCode::invalid_argument,
                    directory.string() + ": the delta from the model given reaches " +
                        std::to_string(delta.bits) + " bits, above the " + std::to_string(bits) +
                        " asked for");
    }
    const std::vector<const RungEntry*> rungs = rungs_to_unpack(directory, manifest, bits, false);
    ModelAssembler assembler(manifest, read_package_file(directory, manifest.topology),
                             (directory / manifest.topology.file).string());
    assembler.hold_previous(previous, *found, directory.string(), held_sha256);
    const RungEntry delta_rung = delta_as_rung(delta);
    const RungFile delta_file(directory, delta_rung);
    apply_every_unit(
        delta_file, delta.units.size(),
        [&](std::size_t u, std::span<const std::uint8_t> bytes, const std::string& where) {
            assembler.apply_delta_unit(*found, u, bytes, where);
        });
    for (const RungEntry* rung : rungs) {
        if (rung->bits <= delta.bits) continue;  // the delta's rung and below: had already
        const RungFile file(directory, *rung);
        const std::size_t index = manifest.rung_index(*rung);
        apply_every_unit(
            file, rung->units.size(),
            [&](std::size_t u, std::span<const std::uint8_t> bytes, const std::string& where) {
                assembler.apply_unit(index, u, bytes, where);
            });
    }
    return assembler.model();
}

VerifyReport verify_package(const fs::path& directory,
                            const std::function<void(std::size_t, std::size_t)>& progress) {
    VerifyReport report;
    const Manifest manifest = read_manifest(directory);
    std::size_t total_units = 0;
    for (const RungEntry& rung : manifest.rungs) total_units += rung.units.size();

    // Every file's size and SHA-256, streamed.
    const auto check_file = [&](const FileEntry& entry) -> bool {
        ++report.files;
        try {
            const core::ReadableFile file(directory / entry.file);
            if (file.size() != entry.bytes) {
                throw Error(ErrorCode::corrupt_data,
                            (directory / entry.file).string() + ": " + std::to_string(file.size()) +
                                " bytes, the manifest says " + std::to_string(entry.bytes) +
                                " (truncated?)");
            }
            report.bytes += file.size();
            if (core::file_sha256_hex(file) != entry.sha256) {
                report.problems.push_back(entry.file + ": SHA-256 differs from the manifest's");
            }
            return true;
        } catch (const Error& error) {
            report.problems.push_back(error.what());
            return false;
        }
    };
    if (!check_file(manifest.topology)) return report;
    std::string topology;
    std::optional<ModelAssembler> ladder;
    try {
        topology = read_package_file(directory, manifest.topology);
        ladder.emplace(manifest, topology, (directory / manifest.topology.file).string());
    } catch (const Error& error) {
        report.problems.push_back(error.what());
        return report;
    }
    // Each rung's file (when its size is right) and, for direct rungs, an
    // assembler of its own.
    std::vector<std::optional<RungFile>> files(manifest.rungs.size());
    std::vector<std::optional<ModelAssembler>> direct(manifest.rungs.size());
    for (std::size_t r = 0; r < manifest.rungs.size(); ++r) {
        const RungEntry& rung = manifest.rungs[r];
        if (!check_file(rung.data)) continue;
        try {
            files[r].emplace(directory, rung);
            if (starts_with_topology(rung.kind) &&
                files[r]->read_head(topology.size()) != topology) {
                report.problems.push_back(rung.data.file + ": does not begin with the topology");
            }
            if (rung.kind == RungKind::direct) {
                direct[r].emplace(manifest, topology,
                                  (directory / manifest.topology.file).string());
            }
        } catch (const Error& error) {
            report.problems.push_back(error.what());
            files[r].reset();
        }
    }
    // Decoded one tensor at a time: each ladder rung of it and, right after
    // the ladder reaches a direct rung's bits, that direct rung, compared
    // with the ladder block by block and freed; then the ladder's tensor is
    // freed. At most two copies of one tensor's indices are alive.
    std::vector<std::vector<std::string>> errors(manifest.rungs.size());
    std::vector<bool> differs(manifest.rungs.size(), false);
    std::vector<float> ladder_block;
    std::vector<float> direct_block;
    const auto apply = [&](ModelAssembler& assembler, std::size_t r, std::size_t t) {
        std::vector<std::string> unit_errors = apply_tensor_units(assembler, r, *files[r], t);
        report.units += files[r]->units_of(t).size();
        if (progress) progress(report.units, total_units);
        const bool sound = unit_errors.empty();
        for (std::string& error : unit_errors) errors[r].push_back(std::move(error));
        return sound;
    };
    const auto same_values = [&](const ModelAssembler& direct_assembler, std::size_t t) {
        constexpr std::uint64_t block = std::uint64_t{1} << 20;
        const std::uint64_t elements = manifest.tensors[t].element_count();
        for (std::uint64_t first = 0; first < elements; first += block) {
            const std::size_t length = std::size_t(std::min(block, elements - first));
            ladder_block.resize(length);
            direct_block.resize(length);
            ladder->read_values(t, first, ladder_block);
            direct_assembler.read_values(t, first, direct_block);
            if (std::memcmp(ladder_block.data(), direct_block.data(), length * sizeof(float))) {
                return false;
            }
        }
        return true;
    };
    for (std::size_t t = 0; t < manifest.tensors.size(); ++t) {
        bool ladder_sound = true;
        std::vector<bool> direct_done(manifest.rungs.size(), false);
        for (std::size_t r = 0; r <= manifest.rungs.size(); ++r) {
            // r == size: direct rungs whose bits the ladder never reached.
            const bool past_ladder = r == manifest.rungs.size();
            if (!past_ladder && manifest.rungs[r].kind == RungKind::direct) continue;
            if (!past_ladder) {
                ladder_sound &= files[r] && apply(*ladder, r, t);
            }
            for (std::size_t d = 0; d < manifest.rungs.size(); ++d) {
                const RungEntry& rung = manifest.rungs[d];
                if (rung.kind != RungKind::direct || direct_done[d] || !files[d]) continue;
                if (!past_ladder && rung.bits != manifest.rungs[r].bits) continue;
                direct_done[d] = true;
                try {
                    if (apply(*direct[d], d, t) && ladder_sound && !past_ladder &&
                        !same_values(*direct[d], t)) {
                        differs[d] = true;
                    }
                } catch (const Error& error) {
                    errors[d].push_back(error.what());
                }
                direct[d]->release_tensor(t);
            }
        }
        ladder->release_tensor(t);
    }
    // A delta decodes only against the version it starts from; here each
    // of its units is checked against its entry and parsed.
    for (const DeltaEntry& delta : manifest.deltas) {
        if (!check_file(delta.data)) continue;
        try {
            const RungEntry delta_rung = delta_as_rung(delta);
            const RungFile file(directory, delta_rung);
            for (std::size_t u = 0; u < delta.units.size(); ++u) {
                const std::vector<std::uint8_t> unit = file.read_unit(u);
                const std::string where = delta.data.file + ": unit " + std::to_string(u);
                ++report.units;
                if (unit_sha256(unit) != delta.units[u].sha256) {
                    report.problems.push_back(where + ": SHA-256 differs from the manifest's");
                    continue;
                }
                read_unit_header(unit, where);
            }
        } catch (const Error& error) {
            report.problems.push_back(error.what());
        }
    }
    for (std::size_t r = 0; r < manifest.rungs.size(); ++r) {
        for (std::string& error : errors[r]) report.problems.push_back(std::move(error));
        if (differs[r]) {
            report.problems.push_back(manifest.rungs[r].data.file +
                                      ": the direct rung differs from the ladder's rung of the "
                                      "same bits");
        }
    }
    return report;
}

}  // namespace bitinc
