// Reading packages from a local directory: unpack and verify.
#include <cstring>
#include <optional>

#include "bitinc/error.hpp"
#include "bitinc/package.hpp"
#include "core/file_io.hpp"
#include "core/parallel.hpp"
#include "core/sha256.hpp"

namespace bitinc {

namespace {

namespace fs = std::filesystem;

// Applies every unit of `rung` (its file already read), in parallel.
void apply_rung(ModelAssembler& assembler, const Manifest& manifest, std::size_t rung_index,
                const std::string& file, const fs::path& path) {
    const RungEntry& rung = manifest.rungs[rung_index];
    core::run_parallel(rung.units.size(), core::resolve_threads(0), [&](std::size_t u) {
        assembler.apply_unit(rung_index, u, unit_bytes(file, rung.units[u]), path.string());
    });
}

bool same_weights(const Model& a, const Model& b) {
    if (a.weights.size() != b.weights.size()) return false;
    for (std::size_t t = 0; t < a.weights.size(); ++t) {
        const auto& x = a.weights[t].values;
        const auto& y = b.weights[t].values;
        if (x.size() != y.size() ||
            (!x.empty() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) != 0)) {
            return false;
        }
    }
    return true;
}

}  // namespace

std::span<const std::uint8_t> unit_bytes(std::string_view rung_file, const UnitEntry& unit) {
    return std::span(reinterpret_cast<const std::uint8_t*>(rung_file.data()) + unit.offset,
                     unit.length);
}

std::string read_package_file(const fs::path& directory, const FileEntry& entry) {
    const fs::path path = directory / entry.file;
    std::string bytes = core::read_file(path, entry.bytes);
    if (bytes.size() != entry.bytes) {
        throw Error(path.string() + ": " + std::to_string(bytes.size()) +
                    " bytes, the manifest says " + std::to_string(entry.bytes) + " (truncated?)");
    }
    return bytes;
}

Manifest read_manifest(const fs::path& directory) {
    const fs::path path = directory / manifest_file_name;
    return parse_manifest(core::read_file(path, max_manifest_bytes), path.string());
}

Model unpack_package(const fs::path& directory, int bits, bool direct) {
    const Manifest manifest = read_manifest(directory);
    std::vector<const RungEntry*> rungs;
    if (direct) {
        const RungEntry* rung = manifest.find_rung(RungKind::direct, bits);
        if (rung == nullptr) {
            throw Error(directory.string() + ": the package has no direct rung of " +
                        std::to_string(bits) + " bits");
        }
        rungs.push_back(rung);
    } else {
        rungs = manifest.ladder_rungs(bits);
        if (rungs.empty() || rungs.back()->bits != bits) {
            throw Error(directory.string() + ": the package's ladder has no rung of " +
                        std::to_string(bits) + " bits");
        }
    }
    ModelAssembler assembler(manifest, read_package_file(directory, manifest.topology),
                             (directory / manifest.topology.file).string());
    for (const RungEntry* rung : rungs) {
        const std::string file = read_package_file(directory, rung->data);
        apply_rung(assembler, manifest, manifest.rung_index(*rung), file,
                   directory / rung->data.file);
    }
    return assembler.model();
}

VerifyReport verify_package(const fs::path& directory,
                            const std::function<void(std::size_t, std::size_t)>& progress) {
    VerifyReport report;
    const Manifest manifest = read_manifest(directory);
    std::size_t total_units = 0;
    for (const RungEntry& rung : manifest.rungs) total_units += rung.units.size();

    const auto check_file = [&](const FileEntry& entry) -> std::optional<std::string> {
        ++report.files;
        try {
            std::string bytes = read_package_file(directory, entry);
            report.bytes += bytes.size();
            if (core::sha256_hex(bytes) != entry.sha256) {
                report.problems.push_back(entry.file + ": SHA-256 differs from the manifest's");
            }
            return bytes;
        } catch (const Error& error) {
            report.problems.push_back(error.what());
            return std::nullopt;
        }
    };
    const std::optional<std::string> topology = check_file(manifest.topology);
    if (!topology) return report;
    std::optional<ModelAssembler> ladder;
    try {
        ladder.emplace(manifest, *topology, (directory / manifest.topology.file).string());
    } catch (const Error& error) {
        report.problems.push_back(error.what());
        return report;
    }
    // Ladder models after each rung, kept where a direct rung must match.
    std::vector<std::pair<int, Model>> ladder_models;
    for (std::size_t r = 0; r < manifest.rungs.size(); ++r) {
        const RungEntry& rung = manifest.rungs[r];
        const std::optional<std::string> file = check_file(rung.data);
        std::optional<ModelAssembler> direct;
        if (rung.kind == RungKind::direct) {
            direct.emplace(manifest, *topology, (directory / manifest.topology.file).string());
        }
        ModelAssembler& assembler = direct ? *direct : *ladder;
        bool sound = file.has_value();
        if (file && starts_with_topology(rung.kind) &&
            std::string_view(*file).substr(0, topology->size()) != *topology) {
            report.problems.push_back(rung.data.file + ": does not begin with the topology");
        }
        for (std::size_t u = 0; file && u < rung.units.size(); ++u) {
            try {
                assembler.apply_unit(r, u, unit_bytes(*file, rung.units[u]),
                                     (directory / rung.data.file).string());
            } catch (const Error& error) {
                report.problems.push_back(error.what());
                sound = false;
            }
            ++report.units;
            if (progress) progress(report.units, total_units);
        }
        if (!sound) continue;
        try {
            if (rung.kind != RungKind::direct) {
                const bool needed = manifest.find_rung(RungKind::direct, rung.bits) != nullptr;
                if (needed) ladder_models.emplace_back(rung.bits, ladder->model());
            } else {
                const Model model = direct->model();
                for (const auto& [bits, ladder_model] : ladder_models) {
                    if (bits == rung.bits && !same_weights(model, ladder_model)) {
                        report.problems.push_back(
                            rung.data.file +
                            ": the direct rung differs from the ladder's rung of "
                            "the same bits");
                    }
                }
            }
        } catch (const Error& error) {
            report.problems.push_back(error.what());
        }
    }
    return report;
}

}  // namespace bitinc
