// Fuzz target: the parsers of command-line text — a subcommand's options
// (integers, reals, repeated values), link rates, durations, fault rules and
// ladders. Arguments are the input split at NUL bytes. Wrong text must give
// an error, never a crash or a value out of its range.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "bitinc/error.hpp"
#include "bitinc/ladder.hpp"
#include "bitinc/server.hpp"
#include "command_line.hpp"

namespace {

void parse_as_a_command(std::vector<std::string>& arguments) {
    bitinc::cli::CommandLine command_line("fuzz", "fuzzing");
    command_line.add_positional("INPUT", "an input");
    command_line.add_option("rate", "RATE", "link rate");
    command_line.add_option("rtt", "DURATION", "round trip");
    command_line.add_option("fault", "RULE", "faults");
    command_line.add_option("ladder", "BITS", "ladder");
    command_line.add_option("threads", "T", "threads");
    command_line.add_option("timeout", "S", "seconds");
    command_line.add_flag("json", "json");
    std::vector<char*> argv;
    for (std::string& argument : arguments) argv.push_back(argument.data());
    argv.push_back(nullptr);
    if (!command_line.parse(int(argv.size() - 1), argv.data())) return;
    const long long threads = command_line.integer("threads", 0, 1, 256);
    if (threads != 0 && (threads < 1 || threads > 256)) std::abort();
    const double timeout = command_line.real("timeout", 30, 0.001, 3600);
    if (!(timeout >= 0.001 && timeout <= 3600)) std::abort();
    if (const auto rate = command_line.value("rate")) {
        const double bits = bitinc::parse_rate(*rate);
        if (!(bits >= 1 && bits <= bitinc::max_rate_bits_per_second)) std::abort();
    }
    if (const auto rtt = command_line.value("rtt")) {
        const double seconds = bitinc::parse_duration(*rtt);
        if (!(seconds >= 0 && seconds <= bitinc::max_duration_seconds)) std::abort();
    }
    for (const std::string& rule : command_line.values("fault")) bitinc::parse_fault(rule);
    if (const auto ladder = command_line.value("ladder")) bitinc::LadderPlan::parse(*ladder);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::vector<std::string> arguments(1);
    for (std::size_t i = 0; i < size && arguments.size() < 64; ++i) {
        if (data[i] == 0) {
            arguments.emplace_back();
        } else {
            arguments.back() += char(data[i]);
        }
    }
    // Each argument alone, through every text parser.
    for (const std::string& argument : arguments) {
        try {
            bitinc::parse_rate(argument);
        } catch (const bitinc::Error&) {
        }
        try {
            bitinc::parse_duration(argument);
        } catch (const bitinc::Error&) {
        }
        try {
            bitinc::parse_fault(argument);
        } catch (const bitinc::Error&) {
        }
        try {
            bitinc::LadderPlan::parse(argument);
        } catch (const bitinc::Error&) {
        }
    }
    // All of them as one command line (unless one asks for the help, which
    // only prints).
    const bool asks_for_help = std::any_of(arguments.begin(), arguments.end(), [](const auto& a) {
        return a == "--help" || a == "-h";
    });
    try {
        if (!asks_for_help) parse_as_a_command(arguments);
    } catch (const std::runtime_error&) {
        // UsageError and Error: wrong text, reported.
    }
    return 0;
}
