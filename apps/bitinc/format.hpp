// Small text-formatting helpers shared by the subcommands.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>
#include "bitinc/inputs.hpp"
#include "bitinc/package.hpp"
#include "command_line.hpp"

namespace bitinc::cli {

// 1234567 -> "1,234,567"
std::string with_commas(std::uint64_t number);
// {64, 3, 3, 3} -> "64x3x3x3"; a symbolic dimension (-1) prints its name or "?".
std::string dims_text(const std::vector<std::int64_t>& dims,
                      const std::vector<std::string>& symbolic = {});

// "a,b,,c" split at ',' -> {"a", "b", "", "c"}
std::vector<std::string> split(const std::string& text, char separator);
// "8->16" for a refinement from 8 bits, "16" for a rung with no parent (0).
// "4->8", "8" or "8->exact": a rung's bits (from its parent's).
std::string rung_bits_label(RungKind kind, int bits, int parent_bits);
template <typename Rung>  // RungEntry, RungTimeline
std::string rung_bits_label(const Rung& rung) {
    return rung_bits_label(rung.kind, rung.bits, rung.parent_bits);
}
// "4,8,16" or "4,8,exact".
std::string ladder_text(const LadderPlan& ladder);
// JSON for stdout: names that are not valid UTF-8 (they come from models and
// servers) are replaced with U+FFFD instead of failing the whole output.
std::string json_text(const nlohmann::json& json, int indent = 2);
// A package's version deltas (pack --json, inspect --json).
nlohmann::json deltas_json(const Manifest& manifest);
// --data-dir: where the Fashion-MNIST IDX files are (every command that
// reads images takes it), and its value or the default.
void add_data_dir_option(CommandLine& command_line);
std::string data_dir(const CommandLine& command_line);
// --input-shape NAME:1x3x224x224 (repeatable): shapes for inputs the graph
// leaves open; UsageError on a malformed or repeated one.
void add_input_shape_option(CommandLine& command_line);
InputShapes input_shapes(const CommandLine& command_line);
// --dataset, --labels, --input-shape and --data-dir: which inputs a model is
// measured on (Fashion-MNIST's test split by default).
void add_dataset_options(CommandLine& command_line);
DatasetRequest dataset_request(const CommandLine& command_line);
// The model's image preprocessing (read_input_spec with --input-shape
// applied), or none when its input is no image batch: the datasets that
// need one say so.
std::optional<InputSpec> optional_input_spec(const Model& model, const std::string& model_name,
                                             const InputShapes& shapes);
// The largest batch the graph's first input allows (0: any): its batch
// axis when the graph or --input-shape fixes it.
std::size_t batch_cap(const Model& model, const InputShapes& shapes);
// The calibration options of pack and eval (--calibration-images,
// --sensitivity-images, --tolerance, and --data-dir's training split), and
// the calibration they ask for.
void add_calibration_options(CommandLine& command_line, const std::string& images_help);
PackCalibration calibration_options(const CommandLine& command_line);
// --budget SIZE and --base-bits BITS (mixed precision, issue 12), for pack and
// eval; budget_options gives nothing without --budget.
void add_budget_options(CommandLine& command_line);
std::optional<PackBudget> budget_options(const CommandLine& command_line);

// "12.5 MB" style: decimal megabytes with three significant decimals.
std::string megabytes(std::uint64_t bytes);

}  // namespace bitinc::cli
