// Graph rewrites for OpenCV DNN 4.6, which cannot import two patterns that
// PyTorch exports produce (see docs/architecture.md, "Engine fix-ups").
#include <algorithm>
#include <cstring>
#include <optional>
#include <set>
#include <unordered_map>

#include "bitinc/error.hpp"
#include "bitinc/model.hpp"
#include "onnx/proto_io.hpp"

namespace bitinc {

namespace {

bool is_default_domain(const onnx::NodeProto& node) {
    return node.domain().empty() || node.domain() == "ai.onnx";
}

// Removes Identity nodes and makes their consumers read the Identity's input.
// An Identity that produces a graph output stays: removing it would rename
// the output.
std::size_t fold_identity_nodes(onnx::GraphProto& graph) {
    std::set<std::string> graph_outputs;
    for (const auto& output : graph.output()) graph_outputs.insert(output.name());
    // Two passes, so that the rewiring does not depend on node order.
    std::unordered_map<std::string, std::string> replacement;
    for (const auto& node : graph.node()) {
        if (node.op_type() == "Identity" && is_default_domain(node) && node.input_size() == 1 &&
            node.output_size() == 1 && !graph_outputs.count(node.output(0))) {
            replacement[node.output(0)] = node.input(0);
        }
    }
    // Follows chains of Identity nodes; the step bound stops a (malformed)
    // cycle of Identity nodes from looping forever.
    auto resolve = [&](std::string name) {
        for (std::size_t step = 0; step <= replacement.size(); ++step) {
            const auto found = replacement.find(name);
            if (found == replacement.end()) return name;
            name = found->second;
        }
        throw Error(ErrorCode::corrupt_data, "model topology has a cycle of Identity nodes");
    };
    google::protobuf::RepeatedPtrField<onnx::NodeProto> kept;
    for (auto& node : *graph.mutable_node()) {
        if (node.op_type() == "Identity" && node.output_size() == 1 &&
            replacement.count(node.output(0))) {
            continue;
        }
        for (auto& input : *node.mutable_input()) {
            if (!input.empty()) input = resolve(input);
        }
        *kept.Add() = std::move(node);
    }
    const std::size_t folded = static_cast<std::size_t>(graph.node_size() - kept.size());
    graph.mutable_node()->Swap(&kept);
    return folded;
}

std::optional<float> scalar_from_tensor_proto(const onnx::TensorProto& tensor) {
    std::size_t count = 1;
    for (const auto dim : tensor.dims()) count *= static_cast<std::size_t>(dim);
    if (count != 1 || tensor.data_type() != onnx::TensorProto::FLOAT) return std::nullopt;
    if (tensor.raw_data().size() == sizeof(float)) {
        float value;
        std::memcpy(&value, tensor.raw_data().data(), sizeof value);
        return value;
    }
    if (tensor.float_data_size() == 1) return tensor.float_data(0);
    return std::nullopt;
}

// The value of a float scalar that the graph holds as a weight, a
// non-weight initializer or the output of a Constant node.
std::optional<float> constant_scalar(const std::string& name, const Model& model,
                                     const onnx::GraphProto& graph) {
    for (const Tensor& weight : model.weights) {
        if (weight.name == name) {
            if (weight.values.size() == 1) return weight.values[0];
            return std::nullopt;
        }
    }
    for (const auto& initializer : graph.initializer()) {
        if (initializer.name() == name) return scalar_from_tensor_proto(initializer);
    }
    for (const auto& node : graph.node()) {
        if (node.op_type() == "Constant" && node.output_size() == 1 && node.output(0) == name) {
            for (const auto& attribute : node.attribute()) {
                if (attribute.name() == "value" && attribute.has_t()) {
                    return scalar_from_tensor_proto(attribute.t());
                }
            }
        }
    }
    return std::nullopt;
}

// Clip(x, min, max) with constant bounds -> Clip(x) with min/max attributes.
std::size_t rewrite_clip_nodes(const Model& model, onnx::GraphProto& graph) {
    std::size_t rewritten = 0;
    for (auto& node : *graph.mutable_node()) {
        if (node.op_type() != "Clip" || !is_default_domain(node) || node.input_size() < 2) continue;
        std::optional<float> bounds[2];
        bool all_constant = true;
        for (int i = 1; i < node.input_size() && i <= 2; ++i) {
            if (node.input(i).empty()) continue;  // an omitted bound
            bounds[i - 1] = constant_scalar(node.input(i), model, graph);
            all_constant = all_constant && bounds[i - 1].has_value();
        }
        if (!all_constant) continue;  // leave it; the engine will say it cannot run it
        node.mutable_input()->DeleteSubrange(1, node.input_size() - 1);
        const char* names[2] = {"min", "max"};
        for (int i = 0; i < 2; ++i) {
            if (!bounds[i]) continue;
            auto* attribute = node.add_attribute();
            attribute->set_name(names[i]);
            attribute->set_type(onnx::AttributeProto::FLOAT);
            attribute->set_f(*bounds[i]);
        }
        ++rewritten;
    }
    return rewritten;
}

// float16, bfloat16 and float64 weights -> float32 ones, with the values
// the model holds (already float32 in memory). Only valid where the graph
// computes in float32 (weights stored narrower or wider, behind a Cast),
// which is the only kind of graph the float32 engine can run anyway.
std::size_t widen_weights(Model& model, onnx::ModelProto& proto) {
    std::set<std::string> widened;
    for (Tensor& weight : model.weights) {
        if (weight.stored_as != StoredType::float32) {
            weight.stored_as = StoredType::float32;
            widened.insert(weight.name);
        }
    }
    for (const onnx_io::WeightSlot& slot : onnx_io::weight_slots(proto)) {
        if (widened.count(slot.name)) slot.tensor->set_data_type(onnx::TensorProto::FLOAT);
    }
    return widened.size();
}

// Conv and ConvTranspose without kernel_shape (ONNX infers it from the
// weights; OpenCV 4.6 refuses the node): the weights' spatial dimensions.
std::size_t add_kernel_shapes(const Model& model, onnx::GraphProto& graph) {
    std::unordered_map<std::string, std::vector<std::int64_t>> weight_shapes;
    for (const Tensor& weight : model.weights) weight_shapes[weight.name] = weight.shape;
    for (const auto& initializer : graph.initializer()) {
        weight_shapes.try_emplace(initializer.name(), initializer.dims().begin(),
                                  initializer.dims().end());
    }
    std::size_t added = 0;
    for (auto& node : *graph.mutable_node()) {
        if ((node.op_type() != "Conv" && node.op_type() != "ConvTranspose") ||
            !is_default_domain(node) || node.input_size() < 2) {
            continue;
        }
        const bool has_kernel =
            std::any_of(node.attribute().begin(), node.attribute().end(),
                        [](const onnx::AttributeProto& a) { return a.name() == "kernel_shape"; });
        const auto found = weight_shapes.find(node.input(1));
        if (has_kernel || found == weight_shapes.end() || found->second.size() < 3) continue;
        auto* attribute = node.add_attribute();
        attribute->set_name("kernel_shape");
        attribute->set_type(onnx::AttributeProto::INTS);
        for (std::size_t i = 2; i < found->second.size(); ++i) {
            attribute->add_ints(found->second[i]);
        }
        ++added;
    }
    return added;
}

}  // namespace

FixupReport apply_engine_fixups(Model& model) {
    onnx::ModelProto proto = onnx_io::parse_model_proto(model.topology, "model topology");
    FixupReport report;
    report.identity_nodes_folded = fold_identity_nodes(*proto.mutable_graph());
    report.clip_nodes_rewritten = rewrite_clip_nodes(model, *proto.mutable_graph());
    report.weights_widened = widen_weights(model, proto);
    report.kernel_shapes_added = add_kernel_shapes(model, *proto.mutable_graph());
    if (report.changed()) model.topology = onnx_io::serialize_deterministically(proto);
    return report;
}

}  // namespace bitinc
