// Protobuf plumbing shared by the onnx module.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstddef>
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

// float32 and float16 initializers are the weights bitinc codes.
bool is_weight_initializer(const onnx::TensorProto& tensor);

// The index of `node`'s attribute that holds a weight, or -1: a Constant
// node (default domain, one output) whose `value` is a float32 or float16
// tensor of more than one element. Only top-level nodes are asked;
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
// float_data or int32_data). Throws Error naming `source` and the tensor.
Tensor extract_weight(const onnx::TensorProto& proto, std::string_view source);

// Structural checks that catch a truncated file or one that is no model.
void validate_structure(const onnx::ModelProto& proto, std::string_view source);

}  // namespace bitinc::onnx_io
