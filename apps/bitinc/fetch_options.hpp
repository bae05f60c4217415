// Download options shared by `fetch` and `run`: --retries, --timeout,
// --deadline, --min-rate, --min-rate-window, --trust and --installed-releases
// (defined in cmd_net.cpp).
#pragma once

#include <bitinc/fetch.hpp>

#include <nlohmann/json.hpp>

#include "command_line.hpp"

namespace bitinc::cli {

void add_transfer_options(CommandLine& command_line);
// Throws UsageError (or Error from the parsers) on bad values.
void read_transfer_options(const CommandLine& command_line, FetchOptions& options);
nlohmann::json transfer_options_json(const FetchOptions& options);

}  // namespace bitinc::cli
