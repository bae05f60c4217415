// Protobuf plumbing shared by the onnx module.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bitinc/model.hpp"

namespace bitinc::onnx_io {

// Parses a serialized ModelProto; throws Error naming `source` if it fails.
onnx::ModelProto parse_model_proto(std::string_view bytes, std::string_view source);

// Serializes with protobuf's deterministic option, so equal messages give
// equal bytes. Throws Error if the result would exceed 2 GiB.
std::string serialize_deterministically(const onnx::ModelProto& proto);

// serialize_onnx the slow way, through protobuf messages holding every
// weight: the reference the spliced writer is tested against.
std::string serialize_with_protobuf(const Model& model);

// The weight type of an ONNX element type: float32, float16, bfloat16 and
// float64 tensors are the weights bitinc codes; any other type, nothing.
std::optional<StoredType> weight_type(std::int32_t data_type);
// The ONNX data type a weight of `type` is stored as (weight_type's inverse).
std::int32_t onnx_data_type(StoredType type);
bool is_weight_initializer(const onnx::TensorProto& tensor);

// `out.size()` elements stored as `type` (little-endian, at `stored`) as
// float32. A finite float64 value beyond float32's range throws Error
// naming `what` (a file and a tensor).
void decode_stored(StoredType type, const char* stored, std::span<float> out,
                   std::string_view what);
// `values` as `type`'s stored bytes at `stored` (stored_type_bytes(type)
// each): float16 and bfloat16 rounded to nearest even, float64 exact.
void encode_stored(StoredType type, std::span<const float> values, char* stored);

// The index of `node`'s attribute that holds a weight, or -1: a Constant
// node (default domain, one output) whose `value` is a float32, float16,
// bfloat16 or float64 tensor of more than one element. Only top-level nodes are asked;
// subgraphs keep their constants, and so do scalars.
int constant_weight_attribute(const onnx::NodeProto& node);

// Where one weight lives in a ModelProto.
struct WeightSlot {
    onnx::TensorProto* tensor = nullptr;
    std::string name;  // the initializer's name, or the Constant's output
    bool in_constant = false;
};

// The weights of `proto` in Model::weights order: the Constant nodes'
// tensors in node order, then the weight initializers in order. That is the
// order protobuf serializes them in (GraphProto.node is field 1,
// initializer field 5), so the writer splices each weight in one pass.
std::vector<WeightSlot> weight_slots(onnx::ModelProto& proto);

// Element count of `tensor`, each dimension checked so that a hostile file
// cannot make a reader allocate more than the file could hold.
std::size_t checked_element_count(const onnx::TensorProto& tensor, std::string_view source);

[[noreturn]] void throw_bad_size(const onnx::TensorProto& tensor, std::string_view source,
                                 std::size_t found, std::size_t expected);

// The values of a weight initializer that carries its data inline (raw_data,
// float_data, int32_data or double_data). Throws Error naming `source` and the tensor.
Tensor extract_weight(const onnx::TensorProto& proto, std::string_view source);

// Structural checks that catch a truncated file or one that is no model.
void validate_structure(const onnx::ModelProto& proto, std::string_view source);

}  // namespace bitinc::onnx_io
