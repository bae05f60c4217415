// bitinc pack / unpack / verify / keygen: building, signing and reading packages locally.
#include <bitinc/bitinc.hpp>

#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "command_line.hpp"
#include "commands.hpp"
#include "format.hpp"
#include "progress_bar.hpp"

namespace bitinc::cli {

namespace {

nlohmann::json package_json(const Manifest& manifest) {
    nlohmann::json rungs = nlohmann::json::array();
    for (const RungEntry& rung : manifest.rungs) {
        rungs.push_back({{"kind", rung_kind_name(rung.kind)},
                         {"bits", rung.bits},
                         {"parent_bits", rung.parent_bits},
                         {"file", rung.data.file},
                         {"bytes", rung.data.bytes},
                         {"units", rung.units.size()}});
    }
    return {{"model", manifest.model_name},
            {"parameters", manifest.parameters},
            {"float32_bytes", manifest.float32_bytes},
            {"topology_bytes", manifest.topology.bytes},
            {"ladder", manifest.ladder.bits},
            {"exact_rung", manifest.ladder.exact_top},
            {"per_channel", manifest.ladder.per_channel},
            {"release", manifest.release ? nlohmann::json{{"model_id", manifest.release->model_id},
                                                          {"number", manifest.release->number}}
                                         : nlohmann::json(nullptr)},
            {"rungs", rungs},
            {"deltas", deltas_json(manifest)}};
}

void print_package(const Manifest& manifest) {
    std::printf("%s: %s weights, %s as float32, topology %s\n", manifest.model_name.c_str(),
                with_commas(manifest.parameters).c_str(), megabytes(manifest.float32_bytes).c_str(),
                megabytes(manifest.topology.bytes).c_str());
    // What a device downloads up to each rung (base and direct files begin
    // with the topology).
    std::uint64_t cumulative = 0;
    std::printf("  %-10s %-7s %-22s %14s %14s %7s\n", "rung", "bits", "file", "bytes",
                "with earlier", "ratio");
    for (const RungEntry& rung : manifest.rungs) {
        const std::string bits = rung_bits_label(rung);
        const std::uint64_t total =
            rung.kind == RungKind::direct ? rung.data.bytes : (cumulative += rung.data.bytes);
        std::printf("  %-10s %-7s %-22s %14s %14s %6.1fx\n",
                    std::string(rung_kind_name(rung.kind)).c_str(), bits.c_str(),
                    rung.data.file.c_str(), with_commas(rung.data.bytes).c_str(),
                    with_commas(total).c_str(), double(manifest.float32_bytes) / double(total));
    }
    for (const DeltaEntry& delta : manifest.deltas) {
        // A device holding the earlier version at these bits fetches the
        // delta instead of the ladder up to them.
        const RungEntry* rung = manifest.find_rung(RungKind::direct, delta.bits);
        std::printf("  %-10s %-7d %-22s %14s %14s", "delta", delta.bits, delta.data.file.c_str(),
                    with_commas(delta.data.bytes).c_str(), "");
        if (rung != nullptr)
            std::printf(" %.3fx the direct rung",
                        double(delta.data.bytes) / double(rung->data.bytes));
        std::printf("\n");
    }
    if (!manifest.deltas.empty()) {
        std::printf(
            "  deltas start from %s (source SHA-256 %.12s...)\n",
            manifest.deltas.front().from.release
                ? ("release " + std::to_string(manifest.deltas.front().from.release)).c_str()
                : "an unsigned package",
            manifest.deltas.front().from.source_sha256.c_str());
    }
    if (const auto& release = manifest.release) {
        std::printf("  signed: release %llu of '%s' (%s beside the manifest)\n",
                    static_cast<unsigned long long>(release->number), release->model_id.c_str(),
                    std::string(signature_file_name).c_str());
    }
}

// "4 at 3, 1 at 8": how many quantized tensors are at each bit depth after
// the ladder's rung `rung`.
std::string tensors_by_bits(const BitAllocation& allocation, std::size_t rung) {
    std::map<int, int> tensors_at;
    for (const std::vector<int>& bits : allocation.rung_bits) {
        if (!bits.empty()) ++tensors_at[bits[rung]];
    }
    std::string counts;
    for (const auto& [bits, count] : tensors_at)
        counts +=
            (counts.empty() ? "" : ", ") + std::to_string(count) + " at " + std::to_string(bits);
    return counts;
}

void print_allocation(const BitAllocation& allocation) {
    const double reference = double(allocation.reference_bytes);
    std::printf(
        "  budget: base rung %s bytes of %s allowed (%.3fx the uniform ladder's direct top rung "
        "of %s bytes; its uniform base: %.3fx)\n",
        with_commas(allocation.base_bytes).c_str(), with_commas(allocation.budget_bytes).c_str(),
        double(allocation.base_bytes) / reference, with_commas(allocation.reference_bytes).c_str(),
        double(allocation.uniform_base_bytes) / reference);
    std::printf(
        "  base bits by tensor: %s (summed loss increase %.4f on training images; "
        "'bitinc inspect DIR' lists them)\n",
        tensors_by_bits(allocation, 0).c_str(), allocation.loss_increase);
    for (std::size_t r = 0; r < allocation.refinements.size(); ++r) {
        const BitAllocation::Refinement& refinement = allocation.refinements[r];
        std::printf(
            "  budget: base to rung %zu %s bytes of %s allowed (%.3fx); bits there: %s (summed "
            "loss increase %.4f)\n",
            r + 1, with_commas(refinement.bytes).c_str(),
            with_commas(refinement.budget_bytes).c_str(), double(refinement.bytes) / reference,
            tensors_by_bits(allocation, r + 1).c_str(), refinement.loss_increase);
    }
}

}  // namespace

int run_pack(int argc, char** argv) {
    CommandLine command_line(
        "pack",
        "Builds a package: the topology, a base rung the device runs at once, refinement\n"
        "rungs up to the top of the ladder, and direct rung(s) for devices that download\n"
        "one model whole. The package is a directory of static files any web server can\n"
        "serve (docs/format.md).");
    command_line.add_positional("MODEL.onnx", "the model to pack");
    command_line.add_option("ladder", "BITS",
                            "bit depths of the rungs, e.g. 4,8,16 (default 8,16); end with "
                            "exact (4,8,exact) for a last rung that gives back the source "
                            "weights bit for bit");
    command_line.add_option("direct", "BITS", "rungs also stored whole (default: the top rung)");
    command_line.add_flag("per-channel", "one step per output channel instead of per tensor");
    command_line.add_option("chunk", "N", "weights per unit at most (default 1048576)");
    command_line.add_flag("compact",
                          "use the adaptive coder where it codes smaller (0-2 % fewer bytes, "
                          "5-10x slower to decode: for storage or very slow links)");
    command_line.add_option("min-elements", "N",
                            "smaller tensors travel exactly as float32 (default 256)");
    command_line.add_option("threads", "T", "coding threads (default: all cores)");
    command_line.add_option("o", "DIR", "output directory (required; new or empty)");
    command_line.add_flag("force", "replace a package already in DIR (nothing else is replaced)");
    command_line.add_flag("calibrate",
                          "order refinements by accuracy per byte and name the accuracy point, "
                          "measured on Fashion-MNIST training images");
    add_budget_options(command_line);
    add_calibration_options(command_line,
                            "training images calibration and --budget run on (default 1000)");
    add_data_dir_option(command_line);
    command_line.add_option(
        "sign", "KEY",
        "sign the package with this Ed25519 private key (bitinc keygen): "
        "devices that trust its public key check every byte (package format 6)");
    command_line.add_option("package-version", "N",
                            "with --sign: the release number, which must grow from one release "
                            "of the model to the next (default: the time now, in seconds since "
                            "1970)");
    command_line.add_option("model-id", "ID",
                            "with --sign: the model this is a release of (default: the model "
                            "file's name)");
    command_line.add_option("from", "PACKAGE",
                            "the package of an earlier version of this model: adds deltas that "
                            "take a device holding it (at any rung) to this version, and keeps "
                            "its ladder, bits and steps where they fit (package format 7)");
    command_line.add_flag("json", "print a JSON summary instead of text");
    command_line.add_flag("no-progress", "never draw a progress bar");
    if (!command_line.parse(argc, argv)) return 0;
    const auto output = command_line.value("o");
    if (!output) throw UsageError("give the output directory with -o DIR");

    PackOptions options;
    if (const auto key = command_line.value("sign")) {
        PackOptions::Signing signing;
        signing.private_key_pem = read_key_file(*key);
        if (!is_private_key(signing.private_key_pem))
            throw UsageError("--sign needs the private key (" + *key + " is a public key)");
        const auto now = std::chrono::duration_cast<std::chrono::seconds>(
            std::chrono::system_clock::now().time_since_epoch());
        signing.release = std::uint64_t(command_line.integer(
            "package-version", now.count(), 0, static_cast<long long>(max_release_number)));
        signing.model_id = command_line.value("model-id").value_or("");
        options.signing = std::move(signing);
    } else if (command_line.value("package-version") || command_line.value("model-id")) {
        throw UsageError("--package-version and --model-id name a signed release: add --sign KEY");
    }
    if (command_line.flag("calibrate")) {
        options.calibration = calibration_options(command_line);
    }
    options.budget = budget_options(command_line);
    const auto previous = command_line.value("from");
    if (previous) {
        options.previous_package = *previous;
        // The earlier version's ladder unless another is asked for: the
        // deltas need rungs in common.
        if (!command_line.value("ladder")) options.ladder = read_manifest(*previous).ladder;
    }
    if (!previous || command_line.value("ladder")) {
        options.ladder = LadderPlan::parse(command_line.value("ladder").value_or("8,16"));
        options.ladder.per_channel = command_line.flag("per-channel");
    }
    if (command_line.flag("compact")) options.coder_choice = CoderChoice::compact;
    if (!previous || command_line.value("min-elements"))
        options.ladder.min_quantized_elements =
            std::size_t(command_line.integer("min-elements", 256, 0, 1LL << 31));
    if (const auto direct = command_line.value("direct")) {
        for (const std::string& part : split(*direct, ',')) {
            options.direct_bits.push_back(LadderPlan::parse(part).bits.front());
        }
    }
    options.chunk_elements = std::uint64_t(command_line.integer("chunk", 1 << 20, 1, 1LL << 26));
    options.threads = int(command_line.integer("threads", 0, 1, 256));
    options.replace = command_line.flag("force");
    const bool draw = !command_line.flag("no-progress") && ProgressBar::stderr_is_terminal();
    ProgressBar budget_progress("budget", "bit depths measured",
                                draw && options.budget.has_value());
    if (options.budget) {
        options.budget->progress = [&](std::size_t done, std::size_t total) {
            budget_progress.update(done, total);
        };
    }
    ProgressBar progress("pack", "units", draw);
    options.progress = [&](std::size_t done, std::size_t total) {
        budget_progress.finish();
        progress.update(done, total);
    };
    const PackResult result = pack_model(command_line.positional(0), options, *output);
    progress.finish();
    for (const std::string& warning : result.warnings)
        std::fprintf(stderr, "warning: %s\n", warning.c_str());
    for (const std::string& note : result.notes) std::fprintf(stderr, "note: %s\n", note.c_str());

    if (command_line.flag("json")) {
        nlohmann::json json = package_json(result.manifest);
        json["directory"] = *output;
        json["seconds"] = result.seconds;
        if (const auto& allocation = result.allocation) {
            json["budget"] = {{"budget_bytes", allocation->budget_bytes},
                              {"base_bytes", allocation->base_bytes},
                              {"reference_bytes", allocation->reference_bytes},
                              {"uniform_base_bytes", allocation->uniform_base_bytes},
                              {"loss_increase", allocation->loss_increase},
                              {"base_bits", allocation->base_bits},
                              {"rung_bits", allocation->rung_bits}};
            for (const BitAllocation::Refinement& refinement : allocation->refinements) {
                json["budget"]["refinements"].push_back(
                    {{"budget_bytes", refinement.budget_bytes},
                     {"bytes", refinement.bytes},
                     {"loss_increase", refinement.loss_increase}});
            }
        }
        json["warnings"] = result.warnings;
        json["notes"] = result.notes;
        std::printf("%s\n", json_text(json).c_str());
    } else {
        print_package(result.manifest);
        if (const auto& allocation = result.allocation) print_allocation(*allocation);
        if (const auto& point = result.manifest.accuracy_point) {
            const RungEntry& rung = result.manifest.rungs[point->rung];
            std::printf(
                "  accuracy point: %zu of %zu units of %s (%s of %s), top-1 %.2f %% against %.2f "
                "%% at the top on %llu training images\n",
                point->units, rung.units.size(), rung.data.file.c_str(),
                with_commas(result.manifest.accuracy_point_bytes()).c_str(),
                with_commas(rung.data.bytes).c_str(), point->value, point->top_value,
                static_cast<unsigned long long>(point->calibration_images));
        } else if (options.calibration) {
            std::printf("  no accuracy point before the top rung\n");
        }
        std::printf("packed into %s in %.2f s\n", output->c_str(), result.seconds);
    }
    return 0;
}

int run_unpack(int argc, char** argv) {
    CommandLine command_line(
        "unpack",
        "Rebuilds the ONNX model of a package at one rung: the base rung plus\n"
        "refinements up to it, or the direct rung with --direct.");
    command_line.add_positional("PACKAGE", "the package directory");
    command_line.add_option("rung", "BITS",
                            "bit depth to rebuild, or exact (default: the ladder's last rung)");
    command_line.add_flag("direct", "rebuild from the direct rung instead of the ladder");
    command_line.add_option("o", "OUT.onnx", "output model (required)");
    command_line.add_flag("external-data",
                          "weights in OUT.onnx.data (ONNX external data; automatic past 2 GiB)");
    command_line.add_option("from", "OLD.onnx",
                            "an earlier version of the model, as unpack or fetch wrote it at one "
                            "of its rungs: rebuild from it with the package's delta instead of "
                            "the base rung");
    if (!command_line.parse(argc, argv)) return 0;
    const auto output = command_line.value("o");
    if (!output) throw UsageError("give the output model with -o OUT.onnx");
    const std::string directory = command_line.positional(0);
    const Manifest manifest = read_manifest(directory);
    if (const auto previous = command_line.value("from")) {
        if (command_line.flag("direct")) throw UsageError("--from and --direct exclude each other");
        const int bits = command_line.value("rung") ? int(command_line.integer("rung", 0, 2, 31))
                                                    : manifest.ladder.top_bits();
        const Model held = read_onnx_file(*previous);
        const std::optional<std::size_t> delta = find_delta(manifest, held);
        write_onnx_file(unpack_from_previous(directory, held, bits), *output,
                        command_line.flag("external-data"));
        const std::uint64_t sent = delta ? manifest.deltas[*delta].data.bytes : std::uint64_t{0};
        std::printf(
            "%s: %d-bit model rebuilt from %s with the %d-bit delta (%s bytes), written to %s\n",
            directory.c_str(), bits, previous->c_str(), delta ? manifest.deltas[*delta].bits : 0,
            with_commas(sent).c_str(), output->c_str());
        return 0;
    }
    const bool direct = command_line.flag("direct");
    // "exact" names the exact rung (its bits are exact_rung_bits).
    const auto rung = command_line.value("rung");
    const int bits = rung && *rung == "exact" ? exact_rung_bits
                     : rung                   ? int(command_line.integer("rung", 0, 2, 32))
                     : direct                 ? manifest.ladder.top_bits()
                                              : manifest.last_rung_bits();
    unpack_package_to_file(directory, bits, direct, *output, command_line.flag("external-data"));
    const bool exact = !direct && manifest.exact_rung() && bits == exact_rung_bits;
    const std::string what = exact ? "exact (source weights bit for bit) "
                                   : std::to_string(bits) + "-bit " +
                                         (manifest.mixed() ? "rung's mixed-precision " : "");
    std::printf("%s: %smodel (%s) written to %s\n", directory.c_str(), what.c_str(),
                direct ? "direct rung" : "base + refinements", output->c_str());
    return 0;
}

int run_verify(int argc, char** argv) {
    CommandLine command_line(
        "verify",
        "Checks a package: every file's size and SHA-256, every unit's CRC32C\n"
        "and header, decodes every rung, and confirms that the ladder reaches\n"
        "exactly each direct rung. Exit status 1 if anything is wrong.");
    command_line.add_positional("PACKAGE", "the package directory");
    command_line.add_option("trust", "KEY.pub",
                            "also check that the manifest is signed with this Ed25519 key");
    command_line.add_flag("json", "print a JSON report");
    command_line.add_flag("no-progress", "never draw a progress bar");
    if (!command_line.parse(argc, argv)) return 0;
    const std::string directory = command_line.positional(0);
    ProgressBar progress("verify", "units",
                         !command_line.flag("no-progress") && ProgressBar::stderr_is_terminal());
    VerifyReport report = verify_package(
        directory, [&](std::size_t done, std::size_t total) { progress.update(done, total); });
    progress.finish();
    if (const auto key = command_line.value("trust")) {
        const std::string public_key = read_key_file(*key);
        try {
            verify_package_signature(directory, public_key);
        } catch (const Error& error) {
            report.problems.push_back(error.what());
        }
    }
    if (command_line.flag("json")) {
        const nlohmann::json json = {{"package", directory},  {"ok", report.problems.empty()},
                                     {"files", report.files}, {"units", report.units},
                                     {"bytes", report.bytes}, {"problems", report.problems}};
        std::printf("%s\n", json_text(json).c_str());
    } else {
        for (const std::string& problem : report.problems)
            std::printf("problem: %s\n", problem.c_str());
        std::printf("%s: %s (%zu files, %zu units, %s)\n", directory.c_str(),
                    report.problems.empty() ? "ok" : "DAMAGED", report.files, report.units,
                    megabytes(report.bytes).c_str());
    }
    return report.problems.empty() ? 0 : 1;
}

}  // namespace bitinc::cli

namespace bitinc::cli {

int run_keygen(int argc, char** argv) {
    CommandLine command_line(
        "keygen",
        "Makes an Ed25519 key pair for signing packages: KEY (private, readable by you\n"
        "only; keep it off the servers) and KEY.pub (give it to devices: fetch/run\n"
        "--trust KEY.pub). PEM files, as `openssl pkey` reads them.");
    command_line.add_option("o", "KEY", "where to write the private key (required)");
    command_line.add_flag("force", "replace KEY and KEY.pub if they exist");
    command_line.add_flag("json", "print the key id and paths as JSON");
    if (!command_line.parse(argc, argv)) return 0;
    const auto output = command_line.value("o");
    if (!output) throw UsageError("give the private key's path with -o KEY");
    const SigningKeyPair key = generate_signing_key();
    write_signing_key(key, *output, command_line.flag("force"));
    const std::string id = key_id_of(key.public_pem);
    if (command_line.flag("json")) {
        std::printf("%s\n", json_text(nlohmann::json{{"private_key", *output},
                                                     {"public_key", *output + ".pub"},
                                                     {"key_id", id}})
                                .c_str());
    } else {
        std::printf("wrote %s (private) and %s.pub; key id %s\n", output->c_str(), output->c_str(),
                    id.c_str());
    }
    return 0;
}

}  // namespace bitinc::cli
