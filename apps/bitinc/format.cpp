#include "format.hpp"

#include <bitinc/dataset.hpp>
#include <bitinc/error.hpp>
#include <bitinc/model.hpp>

#include <cstdio>
#include <string>

namespace bitinc::cli {

std::string json_text(const nlohmann::json& json, int indent) {
    return json.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string with_commas(std::uint64_t number) {
    std::string digits = std::to_string(number);
    for (int i = static_cast<int>(digits.size()) - 3; i > 0; i -= 3) {
        digits.insert(static_cast<std::size_t>(i), ",");
    }
    return digits;
}

std::string dims_text(const std::vector<std::int64_t>& dims,
                      const std::vector<std::string>& symbolic) {
    if (dims.empty()) return "scalar";
    std::string text;
    for (std::size_t i = 0; i < dims.size(); ++i) {
        if (i) text += "x";
        if (dims[i] >= 0) {
            text += std::to_string(dims[i]);
        } else {
            text += i < symbolic.size() && !symbolic[i].empty() ? symbolic[i] : "?";
        }
    }
    return text;
}

std::vector<std::string> split(const std::string& text, char separator) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    for (;;) {
        const auto end = text.find(separator, start);
        parts.push_back(text.substr(start, end - start));
        if (end == std::string::npos) return parts;
        start = end + 1;
    }
}

std::string rung_bits_label(RungKind kind, int bits, int parent_bits) {
    const std::string to = kind == RungKind::exact ? std::string("exact") : std::to_string(bits);
    return parent_bits > 0 ? std::to_string(parent_bits) + "->" + to : to;
}

std::string ladder_text(const LadderPlan& ladder) {
    std::string text;
    for (const int bits : ladder.bits) text += (text.empty() ? "" : ",") + std::to_string(bits);
    return ladder.exact_top ? text + ",exact" : text;
}

void add_data_dir_option(CommandLine& command_line) {
    command_line.add_option(
        "data-dir", "DIR",
        "Fashion-MNIST IDX files (default " + std::string(default_fashion_mnist_dir) + ")");
}

std::string data_dir(const CommandLine& command_line) {
    return command_line.value("data-dir").value_or(std::string(default_fashion_mnist_dir));
}

void add_input_shape_option(CommandLine& command_line) {
    command_line.add_option("input-shape", "NAME:DIMS",
                            "the shape of an input the graph leaves open, e.g. "
                            "input:1x3x224x224 (repeatable)");
}

InputShapes input_shapes(const CommandLine& command_line) {
    InputShapes shapes;
    for (const std::string& text : command_line.values("input-shape")) {
        try {
            auto [name, dims] = parse_input_shape(text);
            if (!shapes.emplace(name, std::move(dims)).second) {
                throw UsageError("--input-shape gives input '" + name + "' twice");
            }
        } catch (const Error& error) {
            throw UsageError(std::string("--input-shape: ") + error.what());
        }
    }
    return shapes;
}

void add_dataset_options(CommandLine& command_line) {
    command_line.add_option("dataset", "PATH",
                            "a .npy file (float32 inputs, or uint8 NCHW pixels), a folder of "
                            "class folders of images, an IDX image file, or 'random' (normal "
                            "noise; --limit inputs, default 100). Default: Fashion-MNIST test");
    command_line.add_option("labels", "FILE",
                            "classes of the --dataset inputs: .npy of N int64/int32, or IDX");
    add_input_shape_option(command_line);
    add_data_dir_option(command_line);
}

DatasetRequest dataset_request(const CommandLine& command_line) {
    DatasetRequest request;
    request.dataset = command_line.value("dataset").value_or("");
    if (request.dataset.empty() && command_line.value("dataset")) {
        throw UsageError("--dataset needs a path or 'random'");
    }
    if (const auto labels = command_line.value("labels")) request.labels = *labels;
    request.fashion_mnist_dir = data_dir(command_line);
    request.generated_count =
        static_cast<std::size_t>(command_line.integer("limit", 100, 1, 1'000'000'000));
    request.input_shapes = input_shapes(command_line);
    return request;
}

std::optional<InputSpec> optional_input_spec(const Model& model, const std::string& model_name,
                                             const InputShapes& shapes) {
    // Without shape metadata, only a 4-D graph input is an image batch;
    // anything else read_input_spec finds wrong is an error whatever the
    // dataset.
    const TopologySummary summary = summarize_topology(model);
    if (!model.metadata.count("bitinc.input.shape") &&
        (summary.inputs.empty() || summary.inputs.front().dims.size() != 4)) {
        const auto given =
            summary.inputs.empty() ? shapes.end() : shapes.find(summary.inputs.front().name);
        if (given == shapes.end() || given->second.size() != 4) return std::nullopt;
    }
    InputSpec spec = read_input_spec(model, model_name);
    apply_input_shapes(spec, shapes);
    return spec;
}

// The largest batch the graph's first input allows: its batch axis when the
// graph (or --input-shape) fixes it, e.g. at 1 for many exported models.
std::size_t batch_cap(const Model& model, const InputShapes& shapes) {
    const TopologySummary summary = summarize_topology(model);
    if (summary.inputs.empty()) return 0;
    const ValueInfo& input = summary.inputs.front();
    if (const auto given = shapes.find(input.name); given != shapes.end()) {
        return static_cast<std::size_t>(given->second.front());
    }
    return !input.dims.empty() && input.dims.front() > 0
               ? static_cast<std::size_t>(input.dims.front())
               : 0;
}

void add_calibration_options(CommandLine& command_line, const std::string& images_help) {
    command_line.add_option("calibration-images", "N", images_help);
    command_line.add_option("sensitivity-images", "M",
                            "rank tensors on the first M of them only (default: all)");
    command_line.add_option("point-images", "K",
                            "search the accuracy point on the last K training images (default "
                            "5000: its top-1 must be right to a tenth of a point; held apart "
                            "from the calibration images at the front)");
    command_line.add_option("tolerance", "POINTS",
                            "top-1 the accuracy point may lose to the top rung (default 0.1)");
}

PackCalibration calibration_options(const CommandLine& command_line) {
    PackCalibration calibration;
    calibration.images = std::size_t(command_line.integer("calibration-images", 1000, 1, 60'000));
    calibration.sensitivity_images =
        std::size_t(command_line.integer("sensitivity-images", 0, 1, 60'000));
    calibration.point_images = std::size_t(command_line.integer("point-images", 5000, 1, 60'000));
    calibration.tolerance_points = command_line.real("tolerance", 0.1, 0, 100);
    calibration.data_dir = data_dir(command_line);  // its training split only
    return calibration;
}

void add_budget_options(CommandLine& command_line) {
    command_line.add_option("budget", "SIZE",
                            "mixed precision: the base rung at most SIZE, as bytes (800000, "
                            "800kB) or a ratio of the direct top rung (0.2x); each tensor's base "
                            "bits chosen by measured loss per byte on training images. More "
                            "sizes after commas budget the next rungs, each counting the rungs "
                            "below it (0.19x,0.3x: the sensitive tensors reach high bits first)");
    command_line.add_option("base-bits", "BITS",
                            "the base bit depths --budget may give a tensor (default "
                            "2,3,4,5,6,7,8)");
}

std::optional<PackBudget> budget_options(const CommandLine& command_line) {
    const auto budget_text = command_line.value("budget");
    if (!budget_text) {
        if (command_line.value("base-bits")) throw UsageError("--base-bits goes with --budget");
        return std::nullopt;
    }
    PackBudget budget = parse_pack_budget(*budget_text);
    if (const auto bits = command_line.value("base-bits"))
        budget.candidate_bits = LadderPlan::parse(*bits).bits;
    budget.calibration.images =
        std::size_t(command_line.integer("calibration-images", 1000, 1, 60'000));
    budget.calibration.data_dir = data_dir(command_line);
    return budget;
}

std::string megabytes(std::uint64_t bytes) {
    char text[32];
    std::snprintf(text, sizeof text, "%.3f MB", double(bytes) / 1e6);
    return text;
}

nlohmann::json deltas_json(const Manifest& manifest) {
    nlohmann::json deltas = nlohmann::json::array();
    for (const DeltaEntry& delta : manifest.deltas) {
        deltas.push_back({{"bits", delta.bits},
                          {"file", delta.data.file},
                          {"bytes", delta.data.bytes},
                          {"units", delta.units.size()},
                          {"from_weights_sha256", delta.from.weights_sha256},
                          {"from_source_sha256", delta.from.source_sha256},
                          {"from_release", delta.from.release}});
    }
    return deltas;
}

}  // namespace bitinc::cli
