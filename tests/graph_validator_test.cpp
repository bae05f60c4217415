// The graph validator: attributes an engine would divide by, loop over or
// allocate from are checked before any engine sees the graph, so no topology
// (from a file or a server) can crash the process.
#include <gtest/gtest.h>

#include <bitinc/bitinc.hpp>
#include <functional>

#include "core/sha256.hpp"
#include "onnx_builder.hpp"
#include "test_support.hpp"

namespace bitinc {
namespace {

namespace fs = std::filesystem;
using testing::add_int_attribute;
using testing::OnnxBuilder;

void set_ints(onnx::NodeProto& node, const std::string& name, std::vector<std::int64_t> values) {
    onnx::AttributeProto* attribute = nullptr;
    for (auto& candidate : *node.mutable_attribute()) {
        if (candidate.name() == name) attribute = &candidate;
    }
    if (attribute == nullptr) {
        attribute = node.add_attribute();
        attribute->set_name(name);
        attribute->set_type(onnx::AttributeProto::INTS);
    }
    attribute->clear_ints();
    for (const std::int64_t value : values) attribute->add_ints(value);
}

void set_int(onnx::NodeProto& node, const std::string& name, std::int64_t value) {
    for (auto& candidate : *node.mutable_attribute()) {
        if (candidate.name() == name) {
            candidate.set_i(value);
            return;
        }
    }
    add_int_attribute(node, name, value);
}

// x [1, 4, 8, 8] -> Conv (8 filters 3x3, 2 groups, pad 1) -> MaxPool 2x2 -> y.
// `change` alters the graph before it is serialized.
Model conv_model(const std::function<void(OnnxBuilder&, onnx::NodeProto& conv,
                                          onnx::NodeProto& pool)>& change = {}) {
    OnnxBuilder builder;
    builder.input("x", {1, 4, 8, 8}).output("y", {1, 8, 4, 4});
    builder.initializer("w", {8, 2, 3, 3}, std::vector<float>(8 * 2 * 9, 0.1f));
    builder.initializer("b", {8}, std::vector<float>(8, 0.5f));
    onnx::NodeProto& conv = builder.node("Conv", {"x", "w", "b"}, {"h"});
    set_int(conv, "group", 2);
    set_ints(conv, "kernel_shape", {3, 3});
    set_ints(conv, "pads", {1, 1, 1, 1});
    set_ints(conv, "strides", {1, 1});
    onnx::NodeProto& pool = builder.node("MaxPool", {"h"}, {"y"});
    set_ints(pool, "kernel_shape", {2, 2});
    set_ints(pool, "strides", {2, 2});
    if (change) change(builder, conv, pool);
    return parse_onnx(builder.bytes(), "conv.onnx");
}

TEST(GraphValidator, ASoundGraphPassesAndRuns) {
    const Model model = conv_model();
    EXPECT_NO_THROW(validate_graph(model, "conv.onnx"));
    const auto engine = create_opencv_engine(model, "conv.onnx", {.threads = 1});
    const FloatArray output = engine->run({{1, 4, 8, 8}, std::vector<float>(4 * 64, 1.0f)});
    EXPECT_EQ(output.shape, (std::vector<std::int64_t>{1, 8, 4, 4}));
}

TEST(GraphValidator, TheBundledModelsPass) {
    for (const char* name : {"small-cnn", "mobilenetv2"}) {
        const fs::path path = testing::source_dir() / "models" / (std::string(name) + ".onnx");
        EXPECT_NO_THROW(validate_graph(read_onnx_file(path), name)) << name;
    }
}

// The attack that crashed `run` and `accuracy` with SIGFPE inside OpenCV.
TEST(GraphValidator, ConvWithGroupZeroIsAnErrorNotACrash) {
    const Model model = conv_model(
        [](OnnxBuilder&, onnx::NodeProto& conv, onnx::NodeProto&) { set_int(conv, "group", 0); });
    try {
        create_opencv_engine(model, "conv.onnx", {.threads = 1});
        FAIL() << "no error";
    } catch (const Error& error) {
        const std::string message = error.what();
        EXPECT_NE(message.find("invalid graph"), std::string::npos) << message;
        EXPECT_NE(message.find("group"), std::string::npos) << message;
    }
}

// Found by fuzz_graph: a tensor attribute (here of a Constant, under a name
// other than `value`) holding fewer bytes than its dims need made OpenCV's
// importer read past its buffer. Any tensor that carries values must carry
// exactly its shape's worth.
TEST(GraphValidator, ATensorShorterThanItsShapeIsRefused) {
    const Model model = conv_model([](OnnxBuilder& builder, onnx::NodeProto&, onnx::NodeProto&) {
        onnx::NodeProto& constant = builder.node("Constant", {}, {"unused"});
        onnx::AttributeProto& attribute = *constant.add_attribute();
        attribute.set_name("val?e");
        attribute.set_type(onnx::AttributeProto::TENSOR);
        onnx::TensorProto& tensor = *attribute.mutable_t();
        tensor.set_data_type(onnx::TensorProto::FLOAT);
        tensor.add_dims(7);
        tensor.add_dims(4);
        tensor.set_raw_data(std::string(48, '\0'));  // 12 floats, not 28
    });
    try {
        create_opencv_engine(model, "conv.onnx", {.threads = 1});
        FAIL() << "no error";
    } catch (const Error& error) {
        const std::string message = error.what();
        EXPECT_NE(message.find("invalid graph"), std::string::npos) << message;
        EXPECT_NE(message.find("not what its shape needs"), std::string::npos) << message;
    }
}

TEST(GraphValidator, EveryBrokenAttributeIsRefused) {
    using Change = std::function<void(OnnxBuilder&, onnx::NodeProto&, onnx::NodeProto&)>;
    const std::vector<std::pair<const char*, Change>> cases = {
        {"negative group", [](auto&, auto& conv, auto&) { set_int(conv, "group", -2); }},
        {"group not dividing the filters",
         [](auto&, auto& conv, auto&) { set_int(conv, "group", 3); }},
        {"zero stride",
         [](auto&, auto& conv, auto&) {
             set_ints(conv, "strides", {1, 0});
         }},
        {"negative stride",
         [](auto&, auto& conv, auto&) {
             set_ints(conv, "strides", {-1, 1});
         }},
        {"zero dilation",
         [](auto&, auto& conv, auto&) {
             set_ints(conv, "dilations", {0, 1});
         }},
        {"negative pad",
         [](auto&, auto& conv, auto&) {
             set_ints(conv, "pads", {-1, 1, 1, 1});
         }},
        {"huge pad",
         [](auto&, auto& conv, auto&) {
             set_ints(conv, "pads", {1, 1, 1, 1 << 30});
         }},
        {"odd pad count",
         [](auto&, auto& conv, auto&) {
             set_ints(conv, "pads", {1, 1, 1});
         }},
        {"kernel unlike the weights",
         [](auto&, auto& conv, auto&) {
             set_ints(conv, "kernel_shape", {5, 5});
         }},
        {"stride count unlike the kernel",
         [](auto&, auto& conv, auto&) {
             set_ints(conv, "strides", {1, 1, 1});
         }},
        {"pool without kernel", [](auto&, auto&, auto& pool) { pool.clear_attribute(); }},
        {"zero pool kernel",
         [](auto&, auto&, auto& pool) {
             set_ints(pool, "kernel_shape", {0, 2});
         }},
        {"zero pool stride",
         [](auto&, auto&, auto& pool) {
             set_ints(pool, "strides", {2, 0});
         }},
        {"undefined input", [](auto&, auto& conv, auto&) { conv.set_input(0, "nowhere"); }},
        {"name defined twice", [](auto&, auto&, auto& pool) { pool.set_output(0, "h"); }},
        {"output nobody makes", [](auto&, auto&, auto& pool) { pool.set_output(0, "z"); }},
        {"bias of the wrong size",
         [](OnnxBuilder& builder, auto& conv, auto&) {
             builder.initializer("b3", {3}, {1, 2, 3});
             conv.set_input(2, "b3");
         }},
        {"huge input",
         [](OnnxBuilder& builder, auto&, auto&) {
             auto* dims = builder.proto()
                              .mutable_graph()
                              ->mutable_input(0)
                              ->mutable_type()
                              ->mutable_tensor_type()
                              ->mutable_shape();
             dims->mutable_dim(2)->set_dim_value(1 << 20);
             dims->mutable_dim(3)->set_dim_value(1 << 20);
         }},
    };
    for (const auto& [what, change] : cases) {
        SCOPED_TRACE(what);
        Model model;
        try {
            model = conv_model(change);
        } catch (const Error&) {
            continue;  // refused even earlier, when parsed
        }
        EXPECT_THROW(validate_graph(model, "conv.onnx"), Error);
        EXPECT_THROW(create_opencv_engine(model, "conv.onnx", {.threads = 1}), Error);
    }
}

TEST(GraphValidator, OtherOperatorsAttributes) {
    const auto single = [](const std::string& op,
                           const std::function<void(OnnxBuilder&, onnx::NodeProto&)>& change) {
        OnnxBuilder builder;
        builder.input("x", {1, 2, 3, 4}).output("y", {-1});
        onnx::NodeProto& node = builder.node(op, {"x"}, {"y"});
        change(builder, node);
        return parse_onnx(builder.bytes(), op);
    };
    const auto refused = [](const Model& model) {
        EXPECT_THROW(validate_graph(model, "model"), Error);
    };
    refused(single("Transpose", [](auto&, auto& node) { set_ints(node, "perm", {0, 1, 1, 3}); }));
    refused(single("Transpose", [](auto&, auto& node) { set_ints(node, "perm", {0, 1, 2, 9}); }));
    refused(single("Reshape", [](auto& builder, auto& node) {
        builder.int64_initializer("shape", {-1, -1});
        node.add_input("shape");
    }));
    refused(single("Reshape", [](auto& builder, auto& node) {
        builder.int64_initializer("shape", {1, -7});
        node.add_input("shape");
    }));
    refused(single("Slice", [](auto& builder, auto& node) {
        builder.int64_initializer("starts", {0});
        builder.int64_initializer("ends", {2});
        builder.int64_initializer("axes", {1});
        builder.int64_initializer("steps", {0});
        for (const char* input : {"starts", "ends", "axes", "steps"}) node.add_input(input);
    }));
    refused(single("DepthToSpace", [](auto&, auto& node) { set_int(node, "blocksize", 0); }));
    refused(single("Flatten", [](auto&, auto& node) { set_int(node, "axis", 1000); }));
    refused(single("LRN", [](auto&, auto& node) { set_int(node, "size", 0); }));
    refused(single("Gemm", [](auto&, auto& node) { set_int(node, "transB", 7); }));
    // Sound uses of the same operators pass.
    EXPECT_NO_THROW(validate_graph(single("Transpose",
                                          [](auto&, auto& node) {
                                              set_ints(node, "perm", {0, 2, 3, 1});
                                          }),
                                   "model"));
    EXPECT_NO_THROW(validate_graph(single("Reshape",
                                          [](auto& builder, auto& node) {
                                              builder.int64_initializer("shape", {0, -1});
                                              node.add_input("shape");
                                          }),
                                   "model"));
}

// A package's topology is validated on the device too, whatever the server
// claims in its manifest.
TEST(GraphValidator, APackageWithABrokenGraphIsRefusedOnTheDevice) {
    testing::TemporaryDirectory directory;
    const fs::path model_path = directory.path() / "conv.onnx";
    testing::spit(model_path, serialize_onnx(conv_model()));
    PackOptions options;
    options.ladder = LadderPlan::parse("4,8");
    options.ladder.min_quantized_elements = 16;
    const fs::path package = directory.path() / "package";
    pack_model(model_path, options, package);

    // What a hostile server would do: a broken topology with a manifest to match.
    const Model broken = conv_model(
        [](OnnxBuilder&, onnx::NodeProto& conv, onnx::NodeProto&) { set_int(conv, "group", 0); });
    testing::spit(package / "topology.onnx", broken.topology);
    Manifest manifest = read_manifest(package);
    manifest.topology.bytes = broken.topology.size();
    manifest.topology.sha256 = core::sha256_hex(broken.topology);
    testing::spit(package / "manifest.json", serialize_manifest(manifest));
    EXPECT_THROW(unpack_package(package, 8, false), Error);
    // And pack refuses the broken model outright.
    testing::spit(model_path, serialize_onnx(broken));
    EXPECT_THROW(pack_model(model_path, options, directory.path() / "other"), Error);
}

}  // namespace
}  // namespace bitinc
