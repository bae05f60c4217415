// Protobuf plumbing shared by the onnx module.
#pragma once

#include <onnx/onnx_pb.h>

#include <string>
#include <string_view>

namespace bitinc::onnx_io {

// Parses a serialized ModelProto; throws Error naming `source` if it fails.
onnx::ModelProto parse_model_proto(std::string_view bytes, std::string_view source);

// Serializes with protobuf's deterministic option, so equal messages give
// equal bytes. Throws Error if the result would exceed 2 GiB.
std::string serialize_deterministically(const onnx::ModelProto& proto);

}  // namespace bitinc::onnx_io
