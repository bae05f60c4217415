// Writes a large synthetic ONNX model for the memory benchmark: a stack of
// WIDTH x WIDTH Gemm + Relu layers whose weights are Laplacian (as trained
// weights roughly are) with a bias each. The weights are generated block by
// block into write_onnx_file, so no copy of the model ever sits in memory;
// with --external-data (or past 2 GiB) they go to OUT.onnx.data.
//
//   make_big_model OUT.onnx LAYERS WIDTH [--external-data]
#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "bitinc/error.hpp"
#include "bitinc/model.hpp"

namespace {

// splitmix64: fast, and enough for weights that only need to look trained.
struct Random {
    std::uint64_t state;
    std::uint64_t next() {
        std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    // Laplace(0, scale) by inverse CDF.
    float laplace(float scale) {
        const double u = (double(next() >> 11) + 0.5) * 0x1.0p-53 - 0.5;
        return float(-scale * std::copysign(std::log1p(-2.0 * std::fabs(u)), u));
    }
};

void add_weight(onnx::GraphProto& graph, const std::string& name, std::vector<std::int64_t> dims) {
    onnx::TensorProto& tensor = *graph.add_initializer();
    tensor.set_name(name);
    tensor.set_data_type(onnx::TensorProto::FLOAT);
    for (const std::int64_t dim : dims) tensor.add_dims(dim);
}

void set_shape(onnx::ValueInfoProto& value, const std::string& name, std::int64_t width) {
    value.set_name(name);
    auto& tensor_type = *value.mutable_type()->mutable_tensor_type();
    tensor_type.set_elem_type(onnx::TensorProto::FLOAT);
    tensor_type.mutable_shape()->add_dim()->set_dim_value(1);
    tensor_type.mutable_shape()->add_dim()->set_dim_value(width);
}

std::string topology(int layers, std::int64_t width) {
    onnx::ModelProto model;
    model.set_ir_version(8);
    model.set_producer_name("bitinc make_big_model");
    model.add_opset_import()->set_version(13);
    onnx::GraphProto& graph = *model.mutable_graph();
    graph.set_name("gemm_stack");
    set_shape(*graph.add_input(), "x", width);
    std::string input = "x";
    for (int layer = 0; layer < layers; ++layer) {
        const std::string suffix = std::to_string(layer);
        add_weight(graph, "w" + suffix, {width, width});
        add_weight(graph, "b" + suffix, {width});
        onnx::NodeProto& gemm = *graph.add_node();
        gemm.set_op_type("Gemm");
        gemm.set_name("gemm" + suffix);
        gemm.add_input(input);
        gemm.add_input("w" + suffix);
        gemm.add_input("b" + suffix);
        gemm.add_output("g" + suffix);
        auto& trans_b = *gemm.add_attribute();
        trans_b.set_name("transB");
        trans_b.set_type(onnx::AttributeProto::INT);
        trans_b.set_i(1);
        onnx::NodeProto& relu = *graph.add_node();
        relu.set_op_type("Relu");
        relu.set_name("relu" + suffix);
        relu.add_input("g" + suffix);
        input = layer + 1 == layers ? "y" : "h" + suffix;
        relu.add_output(input);
    }
    set_shape(*graph.add_output(), "y", width);
    std::string bytes;
    model.SerializeToString(&bytes);
    return bytes;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: make_big_model OUT.onnx LAYERS WIDTH [--external-data]\n");
        return 2;
    }
    const int layers = std::atoi(argv[2]);
    const std::int64_t width = std::atoll(argv[3]);
    const bool external = argc > 4 && std::string_view(argv[4]) == "--external-data";
    if (layers < 1 || width < 16) {
        std::fprintf(stderr, "make_big_model: LAYERS >= 1 and WIDTH >= 16\n");
        return 2;
    }
    try {
        Random random{0x5EED};
        const float scale = 1.0f / float(std::sqrt(double(width)) * 4.0);
        const bool wrote_external = bitinc::write_onnx_file(
            topology(layers, width),
            [&](std::size_t tensor, std::uint64_t, std::span<float> out) {
                // Weights (even tensors) Laplacian; biases small and uniform-ish.
                for (float& value : out) {
                    value = tensor % 2 == 0 ? random.laplace(scale) : random.laplace(0.01f);
                }
            },
            argv[1], external);
        const double weights = double(layers) * double(width) * double(width + 1);
        std::printf("%s: %d layers of %lld, %.0f weights, %.3f GB float32%s\n", argv[1], layers,
                    static_cast<long long>(width), weights, weights * 4 / 1e9,
                    wrote_external ? " (external data)" : "");
    } catch (const bitinc::Error& error) {
        std::fprintf(stderr, "make_big_model: error: %s\n", error.what());
        return 1;
    }
    return 0;
}
