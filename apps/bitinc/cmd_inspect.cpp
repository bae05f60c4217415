#include <bitinc/bitinc.hpp>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "command_line.hpp"
#include "commands.hpp"
#include "format.hpp"

namespace bitinc::cli {

namespace {

nlohmann::json value_info_json(const ValueInfo& value) {
    nlohmann::json dims = nlohmann::json::array();
    for (std::size_t i = 0; i < value.dims.size(); ++i) {
        if (value.dims[i] >= 0) {
            dims.push_back(value.dims[i]);
        } else {
            dims.push_back(value.symbolic[i].empty() ? "?" : value.symbolic[i]);
        }
    }
    return {{"name", value.name}, {"type", value.element_type}, {"dims", dims}};
}

const char* kept_kind_name(KeptTensor::Kind kind) {
    switch (kind) {
        case KeptTensor::Kind::quantized:
            return "quantized";
        case KeptTensor::Kind::unsupported_type:
            return "unsupported_type";
        case KeptTensor::Kind::in_subgraph:
            return "in_subgraph";
        case KeptTensor::Kind::sparse:
            return "sparse";
    }
    return "other";
}

// One line per kind of tensor that stays whole in the topology.
void print_kept_tensors(const TopologySummary& summary) {
    struct Line {
        KeptTensor::Kind kind;
        const char* what;
    };
    const Line lines[] = {
        {KeptTensor::Kind::quantized,
         "already-quantized tensors (travel unchanged, bit for bit, in the topology)"},
        {KeptTensor::Kind::unsupported_type,
         "tensors of types bitinc does not code (travel unchanged in the topology)"},
        {KeptTensor::Kind::in_subgraph,
         "float tensors in subgraphs (in the topology: not quantized)"},
        {KeptTensor::Kind::sparse, "sparse tensors (in the topology: not quantized)"},
    };
    for (const Line& line : lines) {
        std::size_t count = 0;
        std::uint64_t bytes = 0;
        std::string first;
        for (const KeptTensor& kept : summary.kept_tensors) {
            if (kept.kind != line.kind) continue;
            if (count++ == 0) first = printable_text(kept.name) + " " + kept.element_type;
            bytes += kept.bytes;
        }
        if (count == 0) continue;
        std::printf("  kept        %zu %s, %s bytes; first: %s\n", count, line.what,
                    with_commas(bytes).c_str(), first.c_str());
    }
}

nlohmann::json inspect_json(const std::string& path, std::uintmax_t file_bytes, const Model& model,
                            const TopologySummary& summary) {
    nlohmann::json json;
    json["file"] = path;
    json["file_bytes"] = file_bytes;
    json["producer"] = summary.producer;
    json["ir_version"] = summary.ir_version;
    json["opset"] = summary.opset;
    json["topology_bytes"] = summary.topology_bytes;
    json["node_count"] = summary.node_count;
    json["constant_weight_tensors"] = summary.constant_weight_tensors;
    json["constant_float_tensors"] = summary.constant_float_tensors;
    json["constant_float_elements"] = summary.constant_float_elements;
    json["op_counts"] = summary.op_counts;
    json["kept_tensors"] = nlohmann::json::array();
    for (const KeptTensor& kept : summary.kept_tensors) {
        json["kept_tensors"].push_back({{"name", kept.name},
                                        {"kind", kept_kind_name(kept.kind)},
                                        {"type", kept.element_type},
                                        {"elements", kept.elements},
                                        {"bytes", kept.bytes}});
    }
    json["inputs"] = nlohmann::json::array();
    for (const auto& input : summary.inputs) json["inputs"].push_back(value_info_json(input));
    json["outputs"] = nlohmann::json::array();
    for (const auto& output : summary.outputs) json["outputs"].push_back(value_info_json(output));
    json["metadata"] = model.metadata;
    json["parameters"] = model.parameter_count();
    json["float32_bytes"] = model.float32_bytes();
    json["tensors"] = nlohmann::json::array();
    for (const Tensor& tensor : model.weights) {
        json["tensors"].push_back({{"name", tensor.name},
                                   {"shape", tensor.shape},
                                   {"stored_as", stored_type_name(tensor.stored_as)},
                                   {"parameters", tensor.element_count()}});
    }
    return json;
}

void print_inspect_text(const std::string& path, std::uintmax_t file_bytes, const Model& model,
                        const TopologySummary& summary) {
    std::printf("%s\n", printable_text(path).c_str());
    std::printf("  producer    %s, IR version %lld, opset %lld\n",
                printable_text(summary.producer).c_str(),
                static_cast<long long>(summary.ir_version), static_cast<long long>(summary.opset));
    for (const auto& input : summary.inputs) {
        std::printf("  input       %s  %s  %s\n", printable_text(input.name).c_str(),
                    input.element_type.c_str(),
                    printable_text(dims_text(input.dims, input.symbolic)).c_str());
    }
    for (const auto& output : summary.outputs) {
        std::printf("  output      %s  %s  %s\n", printable_text(output.name).c_str(),
                    output.element_type.c_str(),
                    printable_text(dims_text(output.dims, output.symbolic)).c_str());
    }
    std::string ops;
    for (const auto& [op, count] : summary.op_counts) {
        ops += (ops.empty() ? "" : ", ") + op + " " + std::to_string(count);
    }
    std::printf("  nodes       %zu: %s\n", summary.node_count, printable_text(ops).c_str());
    for (const auto& [key, value] : model.metadata) {
        std::printf("  metadata    %s = %s\n", printable_text(key).c_str(),
                    printable_text(value).c_str());
    }
    std::printf("  weights     %zu tensors, %s parameters, %s bytes as float32\n",
                model.weights.size(), with_commas(model.parameter_count()).c_str(),
                with_commas(model.float32_bytes()).c_str());
    if (summary.constant_weight_tensors > 0) {
        std::printf(
            "  constants   %zu of the weights are Constant nodes' values (quantized like "
            "initializers)\n",
            summary.constant_weight_tensors);
    }
    if (summary.constant_float_tensors > 0) {
        std::printf(
            "  constants   %zu other Constant nodes (scalars, or in subgraphs) "
            "hold %s "
            "float parameters (in the topology: not quantized)\n",
            summary.constant_float_tensors, with_commas(summary.constant_float_elements).c_str());
    }
    print_kept_tensors(summary);
    std::printf("  file        %s bytes, of which %s are the topology\n\n",
                with_commas(file_bytes).c_str(), with_commas(summary.topology_bytes).c_str());

    std::size_t name_width = 4;
    for (const Tensor& tensor : model.weights)
        name_width = std::max(name_width, printable_text(tensor.name).size());
    std::printf("  %4s  %-*s  %-18s %-8s %12s\n", "#", int(name_width), "name", "shape", "type",
                "parameters");
    for (std::size_t i = 0; i < model.weights.size(); ++i) {
        const Tensor& tensor = model.weights[i];
        std::printf("  %4zu  %-*s  %-18s %-8s %12s\n", i, int(name_width),
                    printable_text(tensor.name).c_str(), dims_text(tensor.shape).c_str(),
                    stored_type_name(tensor.stored_as).data(),
                    with_commas(tensor.element_count()).c_str());
    }
}

// A package directory: its ladder and each tensor's bit depth at every rung
// (mixed precision gives tensors bits of their own).
int inspect_package(const std::string& directory, bool json_output) {
    const Manifest manifest = read_manifest(directory);
    const auto bits_of = [&](std::size_t t) {
        std::vector<int> bits;
        for (std::size_t i = 0; i < manifest.ladder.bits.size(); ++i)
            bits.push_back(manifest.tensor_bits(t, i));
        return bits;
    };
    if (json_output) {
        nlohmann::json json;
        json["package"] = directory;
        json["format_version"] = manifest.format_version;
        json["ladder"] = manifest.ladder.bits;
        json["exact_rung"] = manifest.ladder.exact_top;
        json["per_channel"] = manifest.ladder.per_channel;
        json["mixed"] = manifest.mixed();
        json["tensors"] = nlohmann::json::array();
        for (std::size_t t = 0; t < manifest.tensors.size(); ++t) {
            const TensorEntry& tensor = manifest.tensors[t];
            nlohmann::json entry = {{"name", tensor.name},
                                    {"shape", tensor.shape},
                                    {"stored_as", stored_type_name(tensor.stored_as)},
                                    {"parameters", tensor.element_count()},
                                    {"quantized", tensor.quantized}};
            if (tensor.quantized) entry["bits"] = bits_of(t);
            json["tensors"].push_back(std::move(entry));
        }
        nlohmann::json rungs = nlohmann::json::array();
        for (const RungEntry& rung : manifest.rungs) {
            rungs.push_back({{"kind", rung_kind_name(rung.kind)},
                             {"bits", rung.bits},
                             {"file", rung.data.file},
                             {"bytes", rung.data.bytes},
                             {"units", rung.units.size()}});
        }
        json["rungs"] = std::move(rungs);
        json["deltas"] = deltas_json(manifest);
        std::printf("%s\n", json_text(json).c_str());
        return 0;
    }
    const std::string ladder = ladder_text(manifest.ladder);
    std::printf("%s: package format %d, model %s, ladder %s%s%s\n",
                printable_text(directory).c_str(), manifest.format_version,
                printable_text(manifest.model_name).c_str(), ladder.c_str(),
                manifest.ladder.per_channel ? ", per channel" : "",
                manifest.mixed() ? ", mixed precision" : "");
    for (const RungEntry& rung : manifest.rungs) {
        std::printf("  %-10s %-8s %-22s %14s bytes %6zu units\n",
                    std::string(rung_kind_name(rung.kind)).c_str(), rung_bits_label(rung).c_str(),
                    printable_text(rung.data.file).c_str(), with_commas(rung.data.bytes).c_str(),
                    rung.units.size());
    }
    for (const DeltaEntry& delta : manifest.deltas) {
        // From an earlier version held at these bits (format.md §9).
        std::printf("  %-10s %-8d %-22s %14s bytes %6zu units  from weights %.12s...\n", "delta",
                    delta.bits, printable_text(delta.data.file).c_str(),
                    with_commas(delta.data.bytes).c_str(), delta.units.size(),
                    delta.from.weights_sha256.c_str());
    }
    std::size_t name_width = 4;
    for (const TensorEntry& tensor : manifest.tensors)
        name_width = std::max(name_width, printable_text(tensor.name).size());
    std::printf("\n  %4s  %-*s  %-18s %-8s %12s  %s\n", "#", int(name_width), "name", "shape",
                "type", "parameters", "bits at each rung");
    for (std::size_t t = 0; t < manifest.tensors.size(); ++t) {
        const TensorEntry& tensor = manifest.tensors[t];
        std::string bits = "exact";
        if (tensor.quantized) {
            bits.clear();
            for (const int b : bits_of(t)) bits += (bits.empty() ? "" : " ") + std::to_string(b);
            if (manifest.ladder.exact_top) bits += " exact";
        }
        std::printf("  %4zu  %-*s  %-18s %-8s %12s  %s\n", t, int(name_width),
                    printable_text(tensor.name).c_str(), dims_text(tensor.shape).c_str(),
                    stored_type_name(tensor.stored_as).data(),
                    with_commas(tensor.element_count()).c_str(), bits.c_str());
    }
    return 0;
}

}  // namespace

int run_inspect(int argc, char** argv) {
    CommandLine command_line(
        "inspect",
        "Shows an ONNX model's producer, opset, inputs and outputs, operator\n"
        "counts, bitinc metadata, and every float weight tensor with its shape\n"
        "and parameter count. Given a package directory, shows its rungs and each\n"
        "tensor's bit depth at every rung (mixed precision).");
    command_line.add_positional("MODEL.onnx", "the model (or package directory) to inspect");
    command_line.add_flag("json", "print one JSON object instead of text");
    if (!command_line.parse(argc, argv)) return 0;

    const std::string path = command_line.positional(0);
    if (std::filesystem::is_directory(path))
        return inspect_package(path, command_line.flag("json"));
    const Model model = read_onnx_file(path);
    const TopologySummary summary = summarize_topology(model);
    const std::uintmax_t file_bytes = std::filesystem::file_size(path);
    if (command_line.flag("json")) {
        std::printf("%s\n", json_text(inspect_json(path, file_bytes, model, summary)).c_str());
    } else {
        print_inspect_text(path, file_bytes, model, summary);
    }
    return 0;
}

}  // namespace bitinc::cli
