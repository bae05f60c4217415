// Builds small ONNX models in memory for tests, without PyTorch.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "bitinc/model.hpp"

namespace bitinc::testing {

// How an initializer's values are laid out in the TensorProto.
// bfloat16 and float64 the ways exporters write them too: raw bytes (what
// torch.onnx.export writes) or ONNX's typed fields (int32_data holds a
// bfloat16's bits, double_data a float64).
enum class Encoding {
    float_raw,
    float_list,
    half_raw,
    half_int32,
    bfloat16_raw,
    bfloat16_int32,
    double_raw,
    double_list
};

class OnnxBuilder {
  public:
    explicit OnnxBuilder(std::int64_t opset = 13);

    // dims: -1 makes a symbolic dimension named "batch".
    OnnxBuilder& input(const std::string& name, std::vector<std::int64_t> dims,
                       int element_type = onnx::TensorProto::FLOAT);
    OnnxBuilder& output(const std::string& name, std::vector<std::int64_t> dims,
                        int element_type = onnx::TensorProto::FLOAT);
    OnnxBuilder& initializer(const std::string& name, std::vector<std::int64_t> dims,
                             const std::vector<float>& values,
                             Encoding encoding = Encoding::float_raw);
    OnnxBuilder& int64_initializer(const std::string& name,
                                   const std::vector<std::int64_t>& values);
    // A Constant node whose `value` tensor (unnamed, as exporters write it)
    // holds `values`, producing `output`.
    onnx::NodeProto& constant(const std::string& output, std::vector<std::int64_t> dims,
                              const std::vector<float>& values,
                              Encoding encoding = Encoding::float_list);
    onnx::NodeProto& int64_constant(const std::string& output,
                                    const std::vector<std::int64_t>& values);
    onnx::NodeProto& node(const std::string& op_type, std::vector<std::string> inputs,
                          std::vector<std::string> outputs);
    OnnxBuilder& metadata(const std::string& key, const std::string& value);

    onnx::ModelProto& proto() { return model_; }
    std::string bytes() const;

  private:
    onnx::ModelProto model_;
};

inline constexpr Encoding every_encoding[] = {
    Encoding::float_raw,    Encoding::float_list,     Encoding::half_raw,   Encoding::half_int32,
    Encoding::bfloat16_raw, Encoding::bfloat16_int32, Encoding::double_raw, Encoding::double_list};

// The element type an encoding writes, as bitinc names it.
inline StoredType stored_type_of(Encoding encoding) {
    switch (encoding) {
        case Encoding::half_raw:
        case Encoding::half_int32:
            return StoredType::float16;
        case Encoding::bfloat16_raw:
        case Encoding::bfloat16_int32:
            return StoredType::bfloat16;
        case Encoding::double_raw:
        case Encoding::double_list:
            return StoredType::float64;
        default:
            return StoredType::float32;
    }
}

// y = Gemm(x, W, b) with transB, W [3,4] and b [3]; x is [batch, 4].
OnnxBuilder make_linear_model(Encoding encoding = Encoding::float_raw);

void add_float_attribute(onnx::NodeProto& node, const std::string& name, float value);
void add_int_attribute(onnx::NodeProto& node, const std::string& name, std::int64_t value);

}  // namespace bitinc::testing
