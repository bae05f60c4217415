// ONNX ModelProto <-> Model: take the float weights out of the graph and put
// them back, exactly.
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/unknown_field_set.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
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
        throw Error(
            ErrorCode::corrupt_data,
            std::string(source) + ": larger than 2 GiB, which ONNX protobuf files cannot be");
    }
    onnx::ModelProto proto;
    if (!proto.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
        throw Error(ErrorCode::corrupt_data,
                    std::string(source) + ": not an ONNX model, or the file is truncated");
    }
    return proto;
}

std::string serialize_deterministically(const onnx::ModelProto& proto) {
    if (proto.ByteSizeLong() > max_onnx_bytes) {
        throw Error(ErrorCode::unsupported,
                    "model would serialize to more than 2 GiB, which ONNX protobuf cannot hold");
    }
    std::string bytes;
    {
        google::protobuf::io::StringOutputStream string_stream(&bytes);
        google::protobuf::io::CodedOutputStream coded_stream(&string_stream);
        coded_stream.SetSerializationDeterministic(true);
        if (!proto.SerializeToCodedStream(&coded_stream)) {
            throw Error(ErrorCode::internal, "failed to serialize the ONNX model");
        }
    }
    return bytes;
}

using onnx::TensorProto;

std::optional<StoredType> weight_type(std::int32_t data_type) {
    switch (data_type) {
        case TensorProto::FLOAT:
            return StoredType::float32;
        case TensorProto::FLOAT16:
            return StoredType::float16;
        case TensorProto::DOUBLE:
            return StoredType::float64;
        case TensorProto::BFLOAT16:
            return StoredType::bfloat16;
        default:
            return std::nullopt;
    }
}

std::int32_t onnx_data_type(StoredType type) {
    for (const std::int32_t data_type :
         {TensorProto::FLOAT, TensorProto::FLOAT16, TensorProto::DOUBLE, TensorProto::BFLOAT16}) {
        if (weight_type(data_type) == type) return data_type;
    }
    return TensorProto::FLOAT;
}

bool is_weight_initializer(const TensorProto& tensor) {
    return weight_type(tensor.data_type()).has_value();
}

namespace {

// A float64 value as the float32 bitinc codes; a finite one that float32
// cannot hold is refused rather than turned into infinity.
float narrow_double(double value, std::string_view what) {
    const auto narrowed = static_cast<float>(value);
    if (std::isinf(narrowed) && std::isfinite(value)) {
        char text[32];
        std::snprintf(text, sizeof text, "%.6g", value);
        throw Error(ErrorCode::unsupported,
                    std::string(what) + " holds the float64 value " + text +
                        ", beyond float32's range (3.4e38), in which bitinc codes weights");
    }
    return narrowed;
}

template <typename Stored>
Stored load(const char* bytes) {
    Stored value;
    std::memcpy(&value, bytes, sizeof value);
    return value;
}

}  // namespace

void decode_stored(StoredType type, const char* stored, std::span<float> out,
                   std::string_view what) {
    const std::size_t count = out.size();
    switch (type) {
        case StoredType::float32:
            if (count > 0) std::memcpy(out.data(), stored, count * sizeof(float));
            return;
        case StoredType::float16:
            for (std::size_t i = 0; i < count; ++i)
                out[i] = core::half_to_float(load<std::uint16_t>(stored + 2 * i));
            return;
        case StoredType::bfloat16:
            for (std::size_t i = 0; i < count; ++i)
                out[i] = core::bfloat16_to_float(load<std::uint16_t>(stored + 2 * i));
            return;
        case StoredType::float64:
            for (std::size_t i = 0; i < count; ++i)
                out[i] = narrow_double(load<double>(stored + 8 * i), what);
            return;
    }
}

void encode_stored(StoredType type, std::span<const float> values, char* stored) {
    const std::size_t count = values.size();
    switch (type) {
        case StoredType::float32:
            if (count > 0) std::memcpy(stored, values.data(), count * sizeof(float));
            return;
        case StoredType::float16:
            for (std::size_t i = 0; i < count; ++i) {
                const std::uint16_t half = core::float_to_half(values[i]);
                std::memcpy(stored + 2 * i, &half, 2);
            }
            return;
        case StoredType::bfloat16:
            for (std::size_t i = 0; i < count; ++i) {
                const std::uint16_t bfloat = core::float_to_bfloat16(values[i]);
                std::memcpy(stored + 2 * i, &bfloat, 2);
            }
            return;
        case StoredType::float64:
            for (std::size_t i = 0; i < count; ++i) {
                const auto wide = static_cast<double>(values[i]);
                std::memcpy(stored + 8 * i, &wide, 8);
            }
            return;
    }
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
            throw Error(ErrorCode::corrupt_data, std::string(source) + ": initializer '" +
                                                     tensor.name() + "' has an impossible shape " +
                                                     shape_text(tensor));
        }
        count *= static_cast<std::uint64_t>(dim);
    }
    return static_cast<std::size_t>(count);
}

[[noreturn]] void throw_bad_size(const TensorProto& tensor, std::string_view source,
                                 std::size_t found, std::size_t expected) {
    throw Error(ErrorCode::corrupt_data,
                std::string(source) + ": initializer '" + tensor.name() + "' holds " +
                    std::to_string(found) + " values where its shape " + shape_text(tensor) +
                    " needs " + std::to_string(expected) + " (truncated or malformed file?)");
}

Tensor extract_weight(const TensorProto& proto, std::string_view source) {
    if (proto.data_location() == TensorProto::EXTERNAL || proto.external_data_size() > 0) {
        throw Error(ErrorCode::unsupported,
                    std::string(source) + ": initializer '" + proto.name() +
                        "' keeps its data in an external file, which only a model read from a "
                        "file can have");
    }
    if (proto.has_segment()) {
        throw Error(ErrorCode::unsupported, std::string(source) + ": initializer '" + proto.name() +
                                                "' is segmented, which bitinc does not support");
    }
    Tensor tensor;
    tensor.name = proto.name();
    tensor.shape.assign(proto.dims().begin(), proto.dims().end());
    const std::optional<StoredType> type = weight_type(proto.data_type());
    if (!type) {
        throw Error(ErrorCode::unsupported,
                    std::string(source) + ": initializer '" + proto.name() +
                        "' is not a float32, float16, bfloat16 or float64 tensor");
    }
    tensor.stored_as = *type;
    const std::size_t count = checked_element_count(proto, source);
    const std::string what = std::string(source) + ": initializer '" + proto.name() + "'";
    const std::size_t element_bytes = stored_type_bytes(*type);
    const std::string& raw = proto.raw_data();
    // Sizes are checked before allocating: the shape alone proves nothing.
    if (!raw.empty()) {
        if (raw.size() != count * element_bytes) {
            throw_bad_size(proto, source, raw.size() / element_bytes, count);
        }
        tensor.values.resize(count);
        decode_stored(*type, raw.data(), tensor.values, what);
        return tensor;
    }
    // The typed fields ONNX keeps values in when they are not raw.
    switch (*type) {
        case StoredType::float32: {
            const auto found = static_cast<std::size_t>(proto.float_data_size());
            if (found != count) throw_bad_size(proto, source, found, count);
            tensor.values.assign(proto.float_data().begin(), proto.float_data().end());
            break;
        }
        case StoredType::float16:
        case StoredType::bfloat16: {
            // 16-bit floats are kept in the low bits of int32_data.
            const auto found = static_cast<std::size_t>(proto.int32_data_size());
            if (found != count) throw_bad_size(proto, source, found, count);
            tensor.values.resize(count);
            for (std::size_t i = 0; i < count; ++i) {
                const auto bits = static_cast<std::uint16_t>(proto.int32_data(int(i)));
                tensor.values[i] = *type == StoredType::float16 ? core::half_to_float(bits)
                                                                : core::bfloat16_to_float(bits);
            }
            break;
        }
        case StoredType::float64: {
            const auto found = static_cast<std::size_t>(proto.double_data_size());
            if (found != count) throw_bad_size(proto, source, found, count);
            tensor.values.resize(count);
            for (std::size_t i = 0; i < count; ++i)
                tensor.values[i] = narrow_double(proto.double_data(int(i)), what);
            break;
        }
    }
    return tensor;
}

// Structural checks that catch a file cut at a protobuf field boundary (which
// protobuf itself accepts) and things that are not models at all.
void validate_structure(const onnx::ModelProto& proto, std::string_view source) {
    const std::string where(source);
    if (!proto.has_graph() || proto.graph().node_size() == 0) {
        throw Error(ErrorCode::corrupt_data, where + ": not an ONNX model (it has no graph nodes)");
    }
    if (proto.opset_import_size() == 0) {
        throw Error(ErrorCode::corrupt_data,
                    where + ": the model names no operator set (truncated file?)");
    }
    const onnx::GraphProto& graph = proto.graph();
    // A graph may have no inputs (one that computes constants, as ONNX's
    // test_constant); one without outputs computes nothing.
    if (graph.output_size() == 0) {
        throw Error(ErrorCode::corrupt_data,
                    where + ": the graph has no outputs (truncated file?)");
    }
    if (graph.sparse_initializer_size() > 0) {
        // Engines and bitinc's ladder take dense tensors; without this, the
        // nodes reading it would be "reading what nothing defines".
        throw Error(ErrorCode::unsupported,
                    where + ": sparse initializer '" + graph.sparse_initializer(0).values().name() +
                        "' is not supported (bitinc reads dense tensors: store it as an ordinary "
                        "initializer)");
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
                throw Error(ErrorCode::corrupt_data,
                            where + ": node '" + node.name() + "' (" + node.op_type() +
                                ") reads '" + input + "', which nothing defines (truncated file?)");
            }
        }
    }
    for (const auto& output : graph.output()) {
        if (!defined.count(output.name())) {
            throw Error(ErrorCode::corrupt_data, where + ": graph output '" + output.name() +
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
    proto.clear_double_data();
    std::string& raw = *proto.mutable_raw_data();
    raw.resize(tensor.values.size() * stored_type_bytes(tensor.stored_as));
    onnx_io::encode_stored(tensor.stored_as, tensor.values, raw.data());
}

}  // namespace

std::string_view stored_type_name(StoredType type) {
    switch (type) {
        case StoredType::float16:
            return "float16";
        case StoredType::float64:
            return "float64";
        case StoredType::bfloat16:
            return "bfloat16";
        case StoredType::float32:
            break;
    }
    return "float32";
}

std::optional<StoredType> stored_type_from_name(std::string_view name) {
    for (const StoredType type :
         {StoredType::float32, StoredType::float16, StoredType::bfloat16, StoredType::float64}) {
        if (name == stored_type_name(type)) return type;
    }
    return std::nullopt;
}

std::size_t stored_type_bytes(StoredType type) {
    switch (type) {
        case StoredType::float16:
        case StoredType::bfloat16:
            return 2;
        case StoredType::float64:
            return 8;
        case StoredType::float32:
            break;
    }
    return 4;
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
            stored.int32_data_size() > 0 || stored.double_data_size() > 0) {
            throw Error(ErrorCode::corrupt_data,
                        std::string(source_name) + ": " +
                            (slot.in_constant ? "Constant '" : "initializer '") + slot.name +
                            "' carries data; a topology has none");
        }
        Tensor tensor;
        tensor.name = slot.name;
        tensor.shape.assign(stored.dims().begin(), stored.dims().end());
        checked_element_count(stored, source_name);
        tensor.stored_as = *onnx_io::weight_type(stored.data_type());
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
            throw Error(ErrorCode::invalid_argument,
                        "model has no weight for initializer '" + slot.name + "'");
        }
        const Tensor& tensor = *found->second;
        const bool same_shape = std::equal(tensor.shape.begin(), tensor.shape.end(),
                                           initializer.dims().begin(), initializer.dims().end());
        std::size_t expected = 1;
        for (const std::int64_t dim : tensor.shape) expected *= static_cast<std::size_t>(dim);
        if (!same_shape || expected != tensor.values.size() ||
            static_cast<int>(tensor.stored_as) != initializer.data_type()) {
            throw Error(
                ErrorCode::invalid_argument,
                "weight '" + tensor.name + "' does not match its initializer's shape or type");
        }
        store_weight(tensor, *slot.tensor);
        ++stored;
    }
    if (stored != model.weights.size()) {
        throw Error(ErrorCode::invalid_argument,
                    "model has weights that no initializer of its topology names");
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
        // Top-level float Constants of more than one element are weights: counted apart.
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

// A tensor's element type as the file wrote it: protobuf keeps a value its
// enum does not know (a newer ONNX's float8 or int4) among unknown fields.
std::int64_t written_data_type(const TensorProto& tensor) {
    if (tensor.has_data_type()) return tensor.data_type();
    std::int64_t type = TensorProto::UNDEFINED;
    const google::protobuf::UnknownFieldSet& unknown = tensor.unknown_fields();
    for (int i = 0; i < unknown.field_count(); ++i) {
        const google::protobuf::UnknownField& field = unknown.field(i);
        constexpr int data_type_field = 2;
        if (field.number() == data_type_field &&
            field.type() == google::protobuf::UnknownField::TYPE_VARINT) {
            type = static_cast<std::int64_t>(field.varint());
        }
    }
    return type;
}

// Element types of ONNX versions after the bundled one, by their codes.
constexpr std::int64_t float8_first = 17, float8_last = 20, uint4_type = 21, int4_type = 22,
                       float4_type = 23;

std::string data_type_name(std::int64_t type) {
    if (type != TensorProto::UNDEFINED && TensorProto::DataType_IsValid(static_cast<int>(type))) {
        return TensorProto::DataType_Name(static_cast<TensorProto::DataType>(type));
    }
    if (type >= float8_first && type <= float8_last)
        return "FLOAT8 (type " + std::to_string(type) + ")";
    if (type == uint4_type) return "UINT4";
    if (type == int4_type) return "INT4";
    if (type == float4_type) return "FLOAT4E2M1";
    return "type " + std::to_string(type);
}

// Bits per element, or 0 where unknown (strings, undefined types).
std::uint64_t element_bits(std::int64_t type) {
    switch (type) {
        case TensorProto::UINT8:
        case TensorProto::INT8:
        case TensorProto::BOOL:
            return 8;
        case TensorProto::UINT16:
        case TensorProto::INT16:
        case TensorProto::FLOAT16:
        case TensorProto::BFLOAT16:
            return 16;
        case TensorProto::FLOAT:
        case TensorProto::INT32:
        case TensorProto::UINT32:
            return 32;
        case TensorProto::INT64:
        case TensorProto::UINT64:
        case TensorProto::DOUBLE:
        case TensorProto::COMPLEX64:
            return 64;
        case TensorProto::COMPLEX128:
            return 128;
        default:
            if (type >= float8_first && type <= float8_last) return 8;
            if (type == uint4_type || type == int4_type || type == float4_type) return 4;
            return 0;
    }
}

bool is_integer_type(std::int64_t type) {
    switch (type) {
        case TensorProto::UINT8:
        case TensorProto::INT8:
        case TensorProto::UINT16:
        case TensorProto::INT16:
        case TensorProto::INT32:
        case TensorProto::UINT32:
        case TensorProto::INT64:
        case TensorProto::UINT64:
        case uint4_type:
        case int4_type:
            return true;
        default:
            return false;
    }
}

// 8- and 4-bit integers: what quantized models keep their weights in.
bool is_low_precision_integer(std::int64_t type) {
    return type == TensorProto::INT8 || type == TensorProto::UINT8 || type == uint4_type ||
           type == int4_type;
}

std::uint64_t saturating_elements(const google::protobuf::RepeatedField<std::int64_t>& dims) {
    std::uint64_t elements = 1;
    for (const std::int64_t dim : dims) {
        const auto size = std::uint64_t(std::max<std::int64_t>(dim, 0));
        elements = size != 0 && elements > UINT64_MAX / size ? UINT64_MAX : elements * size;
    }
    return elements;
}

KeptTensor kept_tensor(KeptTensor::Kind kind, const std::string& name, const TensorProto& tensor,
                       std::uint64_t elements) {
    const std::int64_t type = written_data_type(tensor);
    const std::uint64_t bits = element_bits(type);
    const std::uint64_t bytes =
        bits == 0 || elements > UINT64_MAX / bits ? 0 : (elements * bits + 7) / 8;
    return {kind, name, data_type_name(type), elements, bytes};
}

// Names that nodes of `graph` read as quantized data: the integer tensors
// that DequantizeLinear turns back into floats and the weights of the
// quantized operators (zero points and scales are not counted).
std::set<std::string> quantized_data_inputs(const onnx::GraphProto& graph) {
    static const std::map<std::string, std::vector<int>> positions = {
        {"DequantizeLinear", {0}}, {"QLinearConv", {0, 3, 8}}, {"QLinearMatMul", {0, 3}},
        {"ConvInteger", {0, 1}},   {"MatMulInteger", {0, 1}},
    };
    std::set<std::string> names;
    for (const auto& node : graph.node()) {
        const auto found = positions.find(node.op_type());
        if (found == positions.end()) continue;
        for (const int position : found->second) {
            if (position < node.input_size()) names.insert(node.input(position));
        }
    }
    return names;
}

// Classifies a top-level tensor that is not a weight; nothing if it is
// not worth a mention (shapes, indices, masks, scalars).
std::optional<KeptTensor> classify_top_level(const std::string& name, const TensorProto& tensor,
                                             const std::set<std::string>& quantized_inputs) {
    const std::uint64_t elements = saturating_elements(tensor.dims());
    const std::int64_t type = written_data_type(tensor);
    if (onnx_io::weight_type(type) || elements < 2) return std::nullopt;
    if ((is_integer_type(type) && quantized_inputs.count(name)) || is_low_precision_integer(type))
        return kept_tensor(KeptTensor::Kind::quantized, name, tensor, elements);
    const bool known =
        type != TensorProto::UNDEFINED && TensorProto::DataType_IsValid(static_cast<int>(type));
    if (!known || type == TensorProto::COMPLEX64 || type == TensorProto::COMPLEX128)
        return kept_tensor(KeptTensor::Kind::unsupported_type, name, tensor, elements);
    return std::nullopt;
}

// The float tensors of more than one element inside `graph`, a subgraph,
// and the graphs nested in it.
void collect_subgraph_floats(const onnx::GraphProto& graph, std::vector<KeptTensor>& kept,
                             int depth) {
    constexpr int deepest_listed = 64;  // as count_constant_floats
    if (depth > deepest_listed) return;
    const auto consider = [&](const std::string& name, const TensorProto& tensor) {
        const std::uint64_t elements = saturating_elements(tensor.dims());
        if (elements > 1 && onnx_io::weight_type(tensor.data_type()))
            kept.push_back(kept_tensor(KeptTensor::Kind::in_subgraph, name, tensor, elements));
    };
    for (const auto& initializer : graph.initializer()) consider(initializer.name(), initializer);
    for (const auto& node : graph.node()) {
        for (const auto& attribute : node.attribute()) {
            if (node.op_type() == "Constant" && attribute.name() == "value" && attribute.has_t() &&
                node.output_size() == 1) {
                consider(node.output(0), attribute.t());
            }
            if (attribute.has_g()) collect_subgraph_floats(attribute.g(), kept, depth + 1);
            for (const auto& nested : attribute.graphs())
                collect_subgraph_floats(nested, kept, depth + 1);
        }
    }
}

std::vector<KeptTensor> kept_tensors(const onnx::GraphProto& graph) {
    std::vector<KeptTensor> kept;
    const std::set<std::string> quantized_inputs = quantized_data_inputs(graph);
    for (const auto& node : graph.node()) {
        const bool constant = node.op_type() == "Constant" && node.output_size() == 1 &&
                              (node.domain().empty() || node.domain() == "ai.onnx");
        for (const auto& attribute : node.attribute()) {
            if (constant && attribute.name() == "value" && attribute.has_t()) {
                if (auto found =
                        classify_top_level(node.output(0), attribute.t(), quantized_inputs))
                    kept.push_back(std::move(*found));
            } else if (constant && attribute.name() == "sparse_value" &&
                       attribute.has_sparse_tensor()) {
                const auto& sparse = attribute.sparse_tensor();
                kept.push_back(kept_tensor(KeptTensor::Kind::sparse, node.output(0),
                                           sparse.values(), saturating_elements(sparse.dims())));
            }
            if (attribute.has_g()) collect_subgraph_floats(attribute.g(), kept, 1);
            for (const auto& nested : attribute.graphs()) collect_subgraph_floats(nested, kept, 1);
        }
    }
    for (const auto& initializer : graph.initializer()) {
        if (auto found = classify_top_level(initializer.name(), initializer, quantized_inputs))
            kept.push_back(std::move(*found));
    }
    return kept;
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
    summary.kept_tensors = kept_tensors(proto.graph());
    std::set<std::string> quantized_by_graph;
    for (const auto& node : proto.graph().node()) {
        if (node.op_type() == "QuantizeLinear" && node.input_size() > 0)
            quantized_by_graph.insert(node.input(0));
    }
    for (const Tensor& weight : model.weights) {
        if (quantized_by_graph.count(weight.name))
            summary.requantized_weights.push_back(weight.name);
    }
    return summary;
}

Model model_of_weights(std::vector<Tensor> weights, const std::string& name) {
    onnx::ModelProto proto;
    proto.set_ir_version(8);
    proto.set_producer_name("bitinc");
    proto.add_opset_import()->set_version(13);
    onnx::GraphProto& graph = *proto.mutable_graph();
    graph.set_name(name);
    if (weights.empty()) throw Error(ErrorCode::invalid_argument, "weights: no tensors to pack");
    std::set<std::string> names;
    for (const Tensor& tensor : weights) {
        if (tensor.name.empty() || !names.insert(tensor.name).second)
            throw Error(ErrorCode::invalid_argument,
                        "weights: every tensor needs a name of its own ('" + tensor.name + "')");
        TensorProto& initializer = *graph.add_initializer();
        initializer.set_name(tensor.name);
        initializer.set_data_type(onnx_io::onnx_data_type(tensor.stored_as));
        for (const std::int64_t dim : tensor.shape) initializer.add_dims(dim);
        // The same shape check as a read model's initializers get.
        const std::size_t elements = checked_element_count(initializer, "weights");
        if (elements != tensor.values.size())
            throw Error(ErrorCode::invalid_argument, "weights: tensor '" + tensor.name + "' has " +
                                                         std::to_string(tensor.values.size()) +
                                                         " values for its shape's " +
                                                         std::to_string(elements));
        // An Identity per weight makes it a graph output: valid ONNX that
        // any tool reads, with each weight's name, shape and type.
        const std::string output = tensor.name + ".value";
        onnx::NodeProto& node = *graph.add_node();
        node.set_op_type("Identity");
        node.set_name(tensor.name + ".identity");
        node.add_input(tensor.name);
        node.add_output(output);
        onnx::ValueInfoProto& info = *graph.add_output();
        info.set_name(output);
        onnx::TypeProto_Tensor& type = *info.mutable_type()->mutable_tensor_type();
        type.set_elem_type(onnx_io::onnx_data_type(tensor.stored_as));
        for (const std::int64_t dim : tensor.shape)
            type.mutable_shape()->add_dim()->set_dim_value(dim);
    }
    Model model;
    model.topology = onnx_io::serialize_deterministically(proto);
    model.weights = std::move(weights);
    return model;
}

}  // namespace bitinc
