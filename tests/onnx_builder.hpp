// Builds small ONNX models in memory for tests, without PyTorch.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace bitinc::testing {

// How an initializer's values are laid out in the TensorProto.
enum class Encoding { float_raw, float_list, half_raw, half_int32 };

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

// y = Gemm(x, W, b) with transB, W [3,4] and b [3]; x is [batch, 4].
OnnxBuilder make_linear_model(Encoding encoding = Encoding::float_raw);

void add_float_attribute(onnx::NodeProto& node, const std::string& name, float value);
void add_int_attribute(onnx::NodeProto& node, const std::string& name, std::int64_t value);

}  // namespace bitinc::testing
