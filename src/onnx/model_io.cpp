// ONNX ModelProto <-> Model: take the float weights out of the graph and put
// them back, exactly.
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <set>
#include <unordered_map>

#include "bitinc/error.hpp"
#include "bitinc/model.hpp"
#include "core/file_io.hpp"
#include "core/half_float.hpp"
#include "onnx/proto_io.hpp"

static_assert(std::endian::native == std::endian::little,
              "ONNX raw_data is little-endian; a big-endian port must swap bytes");

namespace bitinc {

namespace onnx_io {

onnx::ModelProto parse_model_proto(std::string_view bytes, std::string_view source) {
    if (bytes.size() > max_onnx_bytes) {
        throw Error(std::string(source) +
                    ": larger than 2 GiB, which ONNX protobuf files cannot be");
    }
    onnx::ModelProto proto;
    if (!proto.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
        throw Error(std::string(source) + ": not an ONNX model, or the file is truncated");
    }
    return proto;
}

std::string serialize_deterministically(const onnx::ModelProto& proto) {
    if (proto.ByteSizeLong() > max_onnx_bytes) {
        throw Error("model would serialize to more than 2 GiB, which ONNX protobuf cannot hold");
    }
    std::string bytes;
    {
        google::protobuf::io::StringOutputStream string_stream(&bytes);
        google::protobuf::io::CodedOutputStream coded_stream(&string_stream);
        coded_stream.SetSerializationDeterministic(true);
        if (!proto.SerializeToCodedStream(&coded_stream)) {
            throw Error("failed to serialize the ONNX model");
        }
    }
    return bytes;
}

using onnx::TensorProto;

bool is_weight_initializer(const TensorProto& tensor) {
    return tensor.data_type() == TensorProto::FLOAT || tensor.data_type() == TensorProto::FLOAT16;
}

int constant_weight_attribute(const onnx::NodeProto& node) {
    const bool default_domain = node.domain().empty() || node.domain() == "ai.onnx";
    if (node.op_type() != "Constant" || !default_domain || node.output_size() != 1 ||
        node.output(0).empty()) {
        return -1;
    }
    for (int i = 0; i < node.attribute_size(); ++i) {
        const onnx::AttributeProto& attribute = node.attribute(i);
        if (attribute.name() != "value" || !attribute.has_t() ||
            !is_weight_initializer(attribute.t())) {
            continue;
        }
        // A scalar (Clip bounds, an exponent) is graph arithmetic, not a
        // learned weight: it costs a few bytes in the topology and would
        // cost a tensor entry and an exact unit per rung as a weight.
        std::uint64_t elements = 1;
        for (const std::int64_t dim : attribute.t().dims()) {
            if (dim < 0) return -1;  // malformed: left as it is
            elements = std::min<std::uint64_t>(elements * std::uint64_t(dim), 2);
        }
        return elements > 1 ? i : -1;
    }
    return -1;
}

std::vector<WeightSlot> weight_slots(onnx::ModelProto& proto) {
    std::vector<WeightSlot> slots;
    onnx::GraphProto& graph = *proto.mutable_graph();
    for (onnx::NodeProto& node : *graph.mutable_node()) {
        const int attribute = constant_weight_attribute(node);
        if (attribute < 0) continue;
        slots.push_back({node.mutable_attribute(attribute)->mutable_t(), node.output(0), true});
    }
    for (TensorProto& initializer : *graph.mutable_initializer()) {
        if (is_weight_initializer(initializer)) {
            slots.push_back({&initializer, initializer.name(), false});
        }
    }
    return slots;
}

std::string shape_text(const TensorProto& tensor) {
    std::string text = "[";
    for (int i = 0; i < tensor.dims_size(); ++i) {
        if (i) text += ",";
        text += std::to_string(tensor.dims(i));
    }
    return text + "]";
}

// Element count of `tensor`, with every dimension checked so that a hostile
// file cannot make us allocate more than it could possibly hold.
std::size_t checked_element_count(const TensorProto& tensor, std::string_view source) {
    std::uint64_t count = 1;
    for (const std::int64_t dim : tensor.dims()) {
        if (dim < 0 || (dim > 0 && count > max_onnx_bytes / static_cast<std::uint64_t>(dim))) {
            throw Error(std::string(source) + ": initializer '" + tensor.name() +
                        "' has an impossible shape " + shape_text(tensor));
        }
        count *= static_cast<std::uint64_t>(dim);
    }
    return static_cast<std::size_t>(count);
}

[[noreturn]] void throw_bad_size(const TensorProto& tensor, std::string_view source,
                                 std::size_t found, std::size_t expected) {
    throw Error(std::string(source) + ": initializer '" + tensor.name() + "' holds " +
                std::to_string(found) + " values where its shape " + shape_text(tensor) +
                " needs " + std::to_string(expected) + " (truncated or malformed file?)");
}

Tensor extract_weight(const TensorProto& proto, std::string_view source) {
    if (proto.data_location() == TensorProto::EXTERNAL || proto.external_data_size() > 0) {
        throw Error(std::string(source) + ": initializer '" + proto.name() +
                    "' keeps its data in an external file, which only a model read from a "
                    "file can have");
    }
    if (proto.has_segment()) {
        throw Error(std::string(source) + ": initializer '" + proto.name() +
                    "' is segmented, which bitinc does not support");
    }
    Tensor tensor;
    tensor.name = proto.name();
    tensor.shape.assign(proto.dims().begin(), proto.dims().end());
    const std::size_t count = checked_element_count(proto, source);
    const std::string& raw = proto.raw_data();
    if (proto.data_type() == TensorProto::FLOAT) {
        tensor.stored_as = StoredType::float32;
        if (!raw.empty()) {
            if (raw.size() != count * sizeof(float)) {
                throw_bad_size(proto, source, raw.size() / 4, count);
            }
            tensor.values.resize(count);
            std::memcpy(tensor.values.data(), raw.data(), raw.size());
        } else {
            const auto found = static_cast<std::size_t>(proto.float_data_size());
            if (found != count) throw_bad_size(proto, source, found, count);
            tensor.values.assign(proto.float_data().begin(), proto.float_data().end());
        }
    } else {
        tensor.stored_as = StoredType::float16;
        // Sizes are checked before allocating: the shape alone proves nothing.
        if (!raw.empty()) {
            if (raw.size() != count * 2) throw_bad_size(proto, source, raw.size() / 2, count);
            tensor.values.resize(count);
            for (std::size_t i = 0; i < count; ++i) {
                std::uint16_t half;
                std::memcpy(&half, raw.data() + 2 * i, 2);
                tensor.values[i] = core::half_to_float(half);
            }
        } else {
            // ONNX keeps fp16 values that are not raw in the low bits of int32_data.
            const auto found = static_cast<std::size_t>(proto.int32_data_size());
            if (found != count) throw_bad_size(proto, source, found, count);
            tensor.values.resize(count);
            for (std::size_t i = 0; i < count; ++i) {
                tensor.values[i] =
                    core::half_to_float(static_cast<std::uint16_t>(proto.int32_data(int(i))));
            }
        }
    }
    return tensor;
}

// Structural checks that catch a file cut at a protobuf field boundary (which
// protobuf itself accepts) and things that are not models at all.
void validate_structure(const onnx::ModelProto& proto, std::string_view source) {
    const std::string where(source);
    if (!proto.has_graph() || proto.graph().node_size() == 0) {
        throw Error(where + ": not an ONNX model (it has no graph nodes)");
    }
    if (proto.opset_import_size() == 0) {
        throw Error(where + ": the model names no operator set (truncated file?)");
    }
    const onnx::GraphProto& graph = proto.graph();
    if (graph.input_size() == 0 || graph.output_size() == 0) {
        throw Error(where + ": the graph has no inputs or no outputs (truncated file?)");
    }
    std::set<std::string> defined;
    for (const auto& input : graph.input()) defined.insert(input.name());
    for (const auto& initializer : graph.initializer()) defined.insert(initializer.name());
    for (const auto& node : graph.node()) {
        for (const auto& output : node.output()) defined.insert(output);
    }
    for (const auto& node : graph.node()) {
        for (const auto& input : node.input()) {
            if (!input.empty() && !defined.count(input)) {
                throw Error(where + ": node '" + node.name() + "' (" + node.op_type() +
                            ") reads '" + input + "', which nothing defines (truncated file?)");
            }
        }
    }
    for (const auto& output : graph.output()) {
        if (!defined.count(output.name())) {
            throw Error(where + ": graph output '" + output.name() +
                        "' is never computed (truncated file?)");
        }
    }
}

}  // namespace onnx_io

namespace {

using onnx::TensorProto;
using onnx_io::checked_element_count;
using onnx_io::extract_weight;
using onnx_io::is_weight_initializer;
using onnx_io::validate_structure;

void store_weight(const Tensor& tensor, TensorProto& proto) {
    proto.clear_float_data();
    proto.clear_int32_data();
    std::string& raw = *proto.mutable_raw_data();
    if (tensor.stored_as == StoredType::float32) {
        raw.resize(tensor.values.size() * sizeof(float));
        if (!raw.empty()) std::memcpy(raw.data(), tensor.values.data(), raw.size());
    } else {
        raw.resize(tensor.values.size() * 2);
        for (std::size_t i = 0; i < tensor.values.size(); ++i) {
            const std::uint16_t half = core::float_to_half(tensor.values[i]);
            std::memcpy(raw.data() + 2 * i, &half, 2);
        }
    }
}

}  // namespace

std::string_view stored_type_name(StoredType type) {
    return type == StoredType::float16 ? "float16" : "float32";
}

std::size_t Model::parameter_count() const {
    std::size_t count = 0;
    for (const Tensor& tensor : weights) count += tensor.element_count();
    return count;
}

std::size_t Model::float32_bytes() const {
    return parameter_count() * sizeof(float);
}

Model parse_topology(std::string_view topology, std::string_view source_name) {
    onnx::ModelProto proto = onnx_io::parse_model_proto(topology, source_name);
    validate_structure(proto, source_name);
    Model model;
    for (const auto& entry : proto.metadata_props()) model.metadata[entry.key()] = entry.value();
    for (const onnx_io::WeightSlot& slot : onnx_io::weight_slots(proto)) {
        const TensorProto& stored = *slot.tensor;
        if (!stored.raw_data().empty() || stored.float_data_size() > 0 ||
            stored.int32_data_size() > 0) {
            throw Error(std::string(source_name) + ": " +
                        (slot.in_constant ? "Constant '" : "initializer '") + slot.name +
                        "' carries data; a topology has none");
        }
        Tensor tensor;
        tensor.name = slot.name;
        tensor.shape.assign(stored.dims().begin(), stored.dims().end());
        checked_element_count(stored, source_name);
        tensor.stored_as =
            stored.data_type() == TensorProto::FLOAT ? StoredType::float32 : StoredType::float16;
        model.weights.push_back(std::move(tensor));
    }
    model.topology = std::string(topology);
    return model;
}

// The reference encoding (protobuf puts every weight into its message):
// serialize_onnx's splicing must give the same bytes, and tests check it.
std::string onnx_io::serialize_with_protobuf(const Model& model) {
    onnx::ModelProto proto = onnx_io::parse_model_proto(model.topology, "model topology");
    std::unordered_map<std::string_view, const Tensor*> by_name;
    for (const Tensor& tensor : model.weights) by_name.emplace(tensor.name, &tensor);
    std::size_t stored = 0;
    for (const onnx_io::WeightSlot& slot : onnx_io::weight_slots(proto)) {
        const TensorProto& initializer = *slot.tensor;
        const auto found = by_name.find(slot.name);
        if (found == by_name.end()) {
            throw Error("model has no weight for initializer '" + slot.name + "'");
        }
        const Tensor& tensor = *found->second;
        const bool same_shape = std::equal(tensor.shape.begin(), tensor.shape.end(),
                                           initializer.dims().begin(), initializer.dims().end());
        std::size_t expected = 1;
        for (const std::int64_t dim : tensor.shape) expected *= static_cast<std::size_t>(dim);
        if (!same_shape || expected != tensor.values.size() ||
            static_cast<int>(tensor.stored_as) != initializer.data_type()) {
            throw Error("weight '" + tensor.name +
                        "' does not match its initializer's shape or type");
        }
        store_weight(tensor, *slot.tensor);
        ++stored;
    }
    if (stored != model.weights.size()) {
        throw Error("model has weights that no initializer of its topology names");
    }
    return onnx_io::serialize_deterministically(proto);
}

namespace {

bool is_float_type(std::int32_t type) {
    return type == TensorProto::FLOAT || type == TensorProto::FLOAT16 ||
           type == TensorProto::BFLOAT16 || type == TensorProto::DOUBLE;
}

// Counts the float tensors of Constant nodes' `value` attributes in `graph`
// and the graphs nested in its nodes' attributes.
void count_constant_floats(const onnx::GraphProto& graph, TopologySummary& summary, int depth) {
    // Protobuf's own nesting limit bounds this; a count is all that is lost.
    constexpr int deepest_counted = 64;
    if (depth > deepest_counted) return;
    for (const auto& node : graph.node()) {
        // Top-level float32/float16 Constants are weights: counted apart.
        const int weight_attribute = depth == 0 ? onnx_io::constant_weight_attribute(node) : -1;
        if (weight_attribute >= 0) ++summary.constant_weight_tensors;
        for (int index = 0; index < node.attribute_size(); ++index) {
            const auto& attribute = node.attribute(index);
            if (index != weight_attribute && node.op_type() == "Constant" &&
                attribute.name() == "value" && attribute.has_t() &&
                is_float_type(attribute.t().data_type())) {
                // Saturating: the dims are the file's word, and this is a count.
                std::uint64_t elements = 1;
                for (const std::int64_t dim : attribute.t().dims()) {
                    const auto size = std::uint64_t(std::max<std::int64_t>(dim, 0));
                    elements =
                        size != 0 && elements > UINT64_MAX / size ? UINT64_MAX : elements * size;
                }
                ++summary.constant_float_tensors;
                summary.constant_float_elements += elements;
            }
            if (attribute.has_g()) count_constant_floats(attribute.g(), summary, depth + 1);
            for (const auto& nested : attribute.graphs())
                count_constant_floats(nested, summary, depth + 1);
        }
    }
}

}  // namespace

TopologySummary summarize_topology(const Model& model) {
    const onnx::ModelProto proto = onnx_io::parse_model_proto(model.topology, "model topology");
    TopologySummary summary;
    summary.producer = proto.producer_name();
    if (!proto.producer_version().empty()) summary.producer += " " + proto.producer_version();
    summary.ir_version = proto.ir_version();
    for (const auto& opset : proto.opset_import()) {
        if (opset.domain().empty() || opset.domain() == "ai.onnx") summary.opset = opset.version();
    }
    std::set<std::string> initializer_names;
    for (const auto& initializer : proto.graph().initializer()) {
        initializer_names.insert(initializer.name());
    }
    auto describe = [](const onnx::ValueInfoProto& info) {
        ValueInfo value;
        value.name = info.name();
        if (info.type().has_tensor_type()) {
            const auto& tensor_type = info.type().tensor_type();
            value.element_type = TensorProto::DataType_Name(
                static_cast<TensorProto::DataType>(tensor_type.elem_type()));
            for (const auto& dim : tensor_type.shape().dim()) {
                value.dims.push_back(dim.has_dim_value() ? dim.dim_value() : -1);
                value.symbolic.push_back(dim.has_dim_param() ? dim.dim_param() : "");
            }
        }
        return value;
    };
    // Before IR version 4 initializers were also listed as graph inputs.
    for (const auto& input : proto.graph().input()) {
        if (!initializer_names.count(input.name())) summary.inputs.push_back(describe(input));
    }
    for (const auto& output : proto.graph().output()) summary.outputs.push_back(describe(output));
    summary.node_count = static_cast<std::size_t>(proto.graph().node_size());
    for (const auto& node : proto.graph().node()) ++summary.op_counts[node.op_type()];
    summary.topology_bytes = model.topology.size();
    count_constant_floats(proto.graph(), summary, 0);
    return summary;
}

}  // namespace bitinc
