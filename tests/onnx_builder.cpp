#include "onnx_builder.hpp"

#include <cstring>

#include "core/half_float.hpp"

namespace bitinc::testing {

namespace {

void set_value_info(onnx::ValueInfoProto& info, const std::string& name,
                    const std::vector<std::int64_t>& dims, int element_type) {
    info.set_name(name);
    auto* tensor_type = info.mutable_type()->mutable_tensor_type();
    tensor_type->set_elem_type(element_type);
    for (const std::int64_t dim : dims) {
        auto* shape_dim = tensor_type->mutable_shape()->add_dim();
        if (dim < 0) {
            shape_dim->set_dim_param("batch");
        } else {
            shape_dim->set_dim_value(dim);
        }
    }
}

}  // namespace

OnnxBuilder::OnnxBuilder(std::int64_t opset) {
    model_.set_ir_version(8);
    model_.set_producer_name("bitinc-tests");
    auto* opset_import = model_.add_opset_import();
    opset_import->set_domain("");
    opset_import->set_version(opset);
    model_.mutable_graph()->set_name("test");
}

OnnxBuilder& OnnxBuilder::input(const std::string& name, std::vector<std::int64_t> dims,
                                int element_type) {
    set_value_info(*model_.mutable_graph()->add_input(), name, dims, element_type);
    return *this;
}

OnnxBuilder& OnnxBuilder::output(const std::string& name, std::vector<std::int64_t> dims,
                                 int element_type) {
    set_value_info(*model_.mutable_graph()->add_output(), name, dims, element_type);
    return *this;
}

namespace {

void fill_tensor(onnx::TensorProto* tensor, const std::vector<std::int64_t>& dims,
                 const std::vector<float>& values, Encoding encoding) {
    for (const std::int64_t dim : dims) tensor->add_dims(dim);
    switch (encoding) {
        case Encoding::float_raw:
            tensor->set_data_type(onnx::TensorProto::FLOAT);
            tensor->mutable_raw_data()->assign(reinterpret_cast<const char*>(values.data()),
                                               values.size() * sizeof(float));
            break;
        case Encoding::float_list:
            tensor->set_data_type(onnx::TensorProto::FLOAT);
            for (const float value : values) tensor->add_float_data(value);
            break;
        case Encoding::half_raw:
            tensor->set_data_type(onnx::TensorProto::FLOAT16);
            for (const float value : values) {
                const std::uint16_t half = core::float_to_half(value);
                tensor->mutable_raw_data()->append(reinterpret_cast<const char*>(&half), 2);
            }
            break;
        case Encoding::half_int32:
            tensor->set_data_type(onnx::TensorProto::FLOAT16);
            for (const float value : values) tensor->add_int32_data(core::float_to_half(value));
            break;
        case Encoding::bfloat16_raw:
            tensor->set_data_type(onnx::TensorProto::BFLOAT16);
            for (const float value : values) {
                const std::uint16_t bfloat = core::float_to_bfloat16(value);
                tensor->mutable_raw_data()->append(reinterpret_cast<const char*>(&bfloat), 2);
            }
            break;
        case Encoding::bfloat16_int32:
            tensor->set_data_type(onnx::TensorProto::BFLOAT16);
            for (const float value : values) tensor->add_int32_data(core::float_to_bfloat16(value));
            break;
        case Encoding::double_raw:
            tensor->set_data_type(onnx::TensorProto::DOUBLE);
            for (const float value : values) {
                const double wide = value;
                tensor->mutable_raw_data()->append(reinterpret_cast<const char*>(&wide), 8);
            }
            break;
        case Encoding::double_list:
            tensor->set_data_type(onnx::TensorProto::DOUBLE);
            for (const float value : values) tensor->add_double_data(value);
            break;
    }
}

}  // namespace

OnnxBuilder& OnnxBuilder::initializer(const std::string& name, std::vector<std::int64_t> dims,
                                      const std::vector<float>& values, Encoding encoding) {
    auto* tensor = model_.mutable_graph()->add_initializer();
    tensor->set_name(name);
    fill_tensor(tensor, dims, values, encoding);
    return *this;
}

onnx::NodeProto& OnnxBuilder::constant(const std::string& output, std::vector<std::int64_t> dims,
                                       const std::vector<float>& values, Encoding encoding) {
    onnx::NodeProto& constant = node("Constant", {}, {output});
    onnx::AttributeProto& value = *constant.add_attribute();
    value.set_name("value");
    value.set_type(onnx::AttributeProto::TENSOR);
    fill_tensor(value.mutable_t(), dims, values, encoding);
    return constant;
}

onnx::NodeProto& OnnxBuilder::int64_constant(const std::string& output,
                                             const std::vector<std::int64_t>& values) {
    onnx::NodeProto& constant = node("Constant", {}, {output});
    onnx::AttributeProto& value = *constant.add_attribute();
    value.set_name("value");
    value.set_type(onnx::AttributeProto::TENSOR);
    onnx::TensorProto& tensor = *value.mutable_t();
    tensor.set_data_type(onnx::TensorProto::INT64);
    tensor.add_dims(static_cast<std::int64_t>(values.size()));
    for (const std::int64_t item : values) tensor.add_int64_data(item);
    return constant;
}

OnnxBuilder& OnnxBuilder::int64_initializer(const std::string& name,
                                            const std::vector<std::int64_t>& values) {
    auto* tensor = model_.mutable_graph()->add_initializer();
    tensor->set_name(name);
    tensor->set_data_type(onnx::TensorProto::INT64);
    tensor->add_dims(static_cast<std::int64_t>(values.size()));
    for (const std::int64_t value : values) tensor->add_int64_data(value);
    return *this;
}

onnx::NodeProto& OnnxBuilder::node(const std::string& op_type, std::vector<std::string> inputs,
                                   std::vector<std::string> outputs) {
    auto* node = model_.mutable_graph()->add_node();
    node->set_op_type(op_type);
    node->set_name(op_type + "_" + std::to_string(model_.graph().node_size()));
    for (auto& input : inputs) node->add_input(std::move(input));
    for (auto& output : outputs) node->add_output(std::move(output));
    return *node;
}

OnnxBuilder& OnnxBuilder::metadata(const std::string& key, const std::string& value) {
    auto* entry = model_.add_metadata_props();
    entry->set_key(key);
    entry->set_value(value);
    return *this;
}

std::string OnnxBuilder::bytes() const {
    return model_.SerializeAsString();
}

void add_float_attribute(onnx::NodeProto& node, const std::string& name, float value) {
    auto* attribute = node.add_attribute();
    attribute->set_name(name);
    attribute->set_type(onnx::AttributeProto::FLOAT);
    attribute->set_f(value);
}

void add_int_attribute(onnx::NodeProto& node, const std::string& name, std::int64_t value) {
    auto* attribute = node.add_attribute();
    attribute->set_name(name);
    attribute->set_type(onnx::AttributeProto::INT);
    attribute->set_i(value);
}

OnnxBuilder make_linear_model(Encoding encoding) {
    OnnxBuilder builder;
    builder.input("x", {-1, 4}).output("y", {-1, 3});
    builder.initializer(
        "W", {3, 4},
        {0.5f, -1.0f, 0.25f, 2.0f, 1.0f, 1.0f, -0.5f, 0.0f, -2.0f, 0.75f, 1.5f, -0.25f}, encoding);
    builder.initializer("b", {3}, {0.125f, -0.5f, 1.0f}, encoding);
    auto& gemm = builder.node("Gemm", {"x", "W", "b"}, {"y"});
    add_int_attribute(gemm, "transB", 1);
    return builder;
}

}  // namespace bitinc::testing
