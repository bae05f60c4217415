// bitinc: the command-line face of libbitinc. It uses only the public API.
#include <bitinc/bitinc.hpp>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string_view>

#include "command_line.hpp"
#include "commands.hpp"

namespace {

struct Subcommand {
    const char* name;
    const char* summary;
    int (*run)(int, char**);
};

constexpr Subcommand subcommands[] = {
    {"inspect", "show a model's graph, inputs, outputs and weight tensors",
     bitinc::cli::run_inspect},
    {"accuracy", "measure a classifier's top-1 accuracy on Fashion-MNIST",
     bitinc::cli::run_accuracy},
    {"sensitivity", "rank a classifier's tensors by the loss their quantization costs",
     bitinc::cli::run_sensitivity},
    {"bench", "measure coder sizes and speeds on a model's weights", bitinc::cli::run_bench},
    {"pack", "build a package: topology, base rung, refinements, direct rung",
     bitinc::cli::run_pack},
    {"unpack", "rebuild a package's ONNX model at one rung", bitinc::cli::run_unpack},
    {"keygen", "make an Ed25519 key pair for signing packages", bitinc::cli::run_keygen},
    {"verify", "check every hash, CRC and unit of a package", bitinc::cli::run_verify},
    {"serve", "serve packages over HTTP, with link emulation and fault injection",
     bitinc::cli::run_serve},
    {"fetch", "download a package as a device does and write the model", bitinc::cli::run_fetch},
    {"run", "stream images to a model while it arrives and upgrades itself", bitinc::cli::run_run},
    {"eval", "the 3GPP evaluation: UE1 incremental vs UE2 direct, results, report, plots",
     bitinc::cli::run_eval},
};

void print_help() {
    std::printf(
        "usage: bitinc COMMAND [arguments] [options]\n\n"
        "bitinc delivers neural-network models bit-incrementally: a low-precision\n"
        "model first, so a device can start inference at once, then refinements to\n"
        "the exact high-precision model.\n\ncommands:\n");
    for (const Subcommand& command : subcommands) {
        std::printf("  %-12s%s\n", command.name, command.summary);
    }
    std::printf(
        "\n'bitinc COMMAND --help' describes one command.\n"
        "Exit status: 0 success, 1 bad input or failure, 2 wrong usage.\n");
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
        std::strcmp(argv[1], "help") == 0) {
        print_help();
        return argc < 2 ? 2 : 0;
    }
    if (std::strcmp(argv[1], "--version") == 0) {
        std::printf("bitinc %.*s\n", int(bitinc::version().size()), bitinc::version().data());
        return 0;
    }
    const std::string_view name = argv[1];
    for (const Subcommand& command : subcommands) {
        if (name != command.name) continue;
        try {
            return command.run(argc - 2, argv + 2);
        } catch (const bitinc::cli::UsageError& error) {
            std::fprintf(stderr, "bitinc %s: %s\n", command.name, error.what());
            return 2;
        } catch (const bitinc::Error& error) {
            std::fprintf(stderr, "bitinc %s: error: %s\n", command.name, error.what());
            return 1;
        } catch (const std::bad_alloc&) {
            std::fprintf(stderr, "bitinc %s: error: out of memory\n", command.name);
            return 1;
        } catch (const std::exception& error) {
            std::fprintf(stderr, "bitinc %s: error: %s\n", command.name, error.what());
            return 1;
        }
    }
    std::fprintf(stderr, "bitinc: unknown command '%s' (see 'bitinc --help')\n", argv[1]);
    return 2;
}
