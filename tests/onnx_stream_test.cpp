// The streaming ONNX reader and writer: external data (good files and each
// kind of bad reference), byte-identical inline output, and packages of
// models with external data.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <random>

#include "bitinc/error.hpp"
#include "bitinc/model.hpp"
#include "bitinc/package.hpp"
#include "onnx/proto_io.hpp"
#include "onnx_builder.hpp"
#include "test_support.hpp"

namespace bitinc {
namespace {

namespace fs = std::filesystem;
using testing::Encoding;
using testing::OnnxBuilder;
using testing::slurp;
using testing::spit;

// A Gemm model big enough to be quantized: W [16, 64] random, b [16].
OnnxBuilder make_gemm_model(Encoding encoding = Encoding::float_raw) {
    std::mt19937 random(7);
    std::normal_distribution<float> normal(0.0f, 0.1f);
    std::vector<float> weights(16 * 64);
    for (float& value : weights) value = normal(random);
    OnnxBuilder builder;
    builder.input("x", {-1, 64}).output("y", {-1, 16});
    builder.initializer("W", {16, 64}, weights, encoding);
    builder.initializer("b", {16}, std::vector<float>(weights.begin(), weights.begin() + 16),
                        encoding);
    auto& gemm = builder.node("Gemm", {"x", "W", "b"}, {"y"});
    testing::add_int_attribute(gemm, "transB", 1);
    return builder;
}

bool same_model(const Model& a, const Model& b) {
    if (a.topology != b.topology || a.weights.size() != b.weights.size()) return false;
    for (std::size_t t = 0; t < a.weights.size(); ++t) {
        const Tensor& x = a.weights[t];
        const Tensor& y = b.weights[t];
        if (x.name != y.name || x.shape != y.shape || x.stored_as != y.stored_as ||
            x.values.size() != y.values.size() ||
            std::memcmp(x.values.data(), y.values.data(), x.values.size() * sizeof(float)) != 0) {
            return false;
        }
    }
    return true;
}

class OnnxStream : public ::testing::Test {
  protected:
    testing::TemporaryDirectory directory_;

    // A model whose W lives in `data_name` at `offset` (the file holds
    // `padding` bytes before and after it), with the external_data entries
    // given; b stays inline.
    fs::path write_external(const std::vector<std::pair<std::string, std::string>>& entries,
                            const std::string& data_name = "weights.bin", std::size_t padding = 0) {
        OnnxBuilder builder = make_gemm_model();
        onnx::TensorProto& weight = *builder.proto().mutable_graph()->mutable_initializer(0);
        const std::string data =
            std::string(padding, 'x') + weight.raw_data() + std::string(padding, 'y');
        if (!data_name.empty() && data_name.find('/') == std::string::npos) {
            spit(directory_.path() / data_name, data);
        }
        weight.clear_raw_data();
        weight.set_data_location(onnx::TensorProto::EXTERNAL);
        for (const auto& [key, value] : entries) {
            auto* entry = weight.add_external_data();
            entry->set_key(key);
            entry->set_value(value);
        }
        const fs::path path = directory_.path() / "model.onnx";
        spit(path, builder.bytes());
        return path;
    }

    void expect_refused(const fs::path& path, const std::string& mentioning) {
        try {
            read_onnx_file(path);
            ADD_FAILURE() << "no error; expected one mentioning " << mentioning;
        } catch (const Error& error) {
            const std::string message = error.what();
            EXPECT_NE(message.find("'W'"), std::string::npos) << message;
            EXPECT_NE(message.find(mentioning), std::string::npos) << message;
            EXPECT_EQ(message.find('\n'), std::string::npos) << message;
        }
    }
};

TEST_F(OnnxStream, ReadsExternalData) {
    const std::size_t bytes = 16 * 64 * 4;
    const fs::path path = write_external(
        {{"location", "weights.bin"}, {"offset", "100"}, {"length", std::to_string(bytes)}},
        "weights.bin", 100);
    const Model read = read_onnx_file(path);
    const Model expected = parse_onnx(make_gemm_model().bytes(), "inline");
    EXPECT_TRUE(same_model(read, expected));  // the topology forgets where the data was
    EXPECT_TRUE(OnnxWeightReader(path).has_external_data());
    // Length is optional: the dims say how much.
    EXPECT_TRUE(same_model(
        read_onnx_file(write_external({{"location", "./weights.bin"}}, "weights.bin")), expected));
}

TEST_F(OnnxStream, RefusesBadExternalReferences) {
    expect_refused(write_external({{"location", "/etc/passwd"}}), "relative");
    expect_refused(write_external({{"location", "../weights.bin"}}),
                   "leaves the model's directory");
    expect_refused(write_external({{"location", "sub/../../weights.bin"}}), "..");
    expect_refused(write_external({{"location", "missing.bin"}}, ""), "does not exist");
    expect_refused(write_external({{"offset", "0"}}), "names no location");
    expect_refused(write_external({{"location", "weights.bin"}, {"offset", "12x"}}),
                   "not a number");
    expect_refused(write_external({{"location", "weights.bin"}, {"length", "400"}}),
                   "shape needs 4096");
    expect_refused(write_external({{"location", "weights.bin"}, {"offset", "8"}}),
                   "which has only 4096");
    expect_refused(
        write_external({{"location", "weights.bin"}, {"offset", "18446744073709551615"}}),
        "which has only");
    // A symbolic link that leads out of the model's directory.
    const fs::path outside =
        directory_.path().parent_path() / ("bitinc-outside-" + std::to_string(::getpid()) + ".bin");
    spit(outside, std::string(16 * 64 * 4, '\0'));
    fs::create_symlink(outside, directory_.path() / "link.bin");
    expect_refused(write_external({{"location", "link.bin"}}, "link.bin"), "leads out");
    fs::remove(outside);
    // A directory is not a data file.
    fs::create_directory(directory_.path() / "folder");
    expect_refused(write_external({{"location", "folder"}}, ""), "not a regular file");
    // External data only from a file: bytes in memory have no directory.
    EXPECT_THROW(parse_onnx(slurp(write_external({{"location", "weights.bin"}})), "memory"), Error);
}

TEST_F(OnnxStream, SplicedBytesOfTheBundledModelsAreProtobufs) {
    for (const char* name : {"small-cnn", "mobilenetv2"}) {
        const Model model =
            read_onnx_file(testing::source_dir() / "models" / (std::string(name) + ".onnx"));
        EXPECT_EQ(serialize_onnx(model), onnx_io::serialize_with_protobuf(model)) << name;
    }
}

TEST_F(OnnxStream, InlineOutputIsSerializeOnnxByteForByte) {
    for (const Encoding encoding : testing::every_encoding) {
        const Model model = parse_onnx(make_gemm_model(encoding).bytes(), "model");
        const fs::path path = directory_.path() / "inline.onnx";
        write_onnx_file(model, path);
        // Against protobuf holding every weight: the splicing is checked,
        // not compared with itself.
        const std::string reference = onnx_io::serialize_with_protobuf(model);
        EXPECT_EQ(slurp(path), reference);
        EXPECT_EQ(serialize_onnx(model), reference);
        EXPECT_FALSE(fs::exists(external_data_path(path)));
    }
}

TEST_F(OnnxStream, ExternalDataRoundTrips) {
    for (const Encoding encoding :
         {Encoding::float_raw, Encoding::half_raw, Encoding::bfloat16_raw, Encoding::double_raw}) {
        const Model model = parse_onnx(make_gemm_model(encoding).bytes(), "model");
        const fs::path path = directory_.path() / "external.onnx";
        write_onnx_file(model, path, true);
        ASSERT_TRUE(fs::exists(external_data_path(path)));
        const std::size_t element = stored_type_bytes(testing::stored_type_of(encoding));
        EXPECT_EQ(fs::file_size(external_data_path(path)), (16 * 64 + 16) * element);
        EXPECT_LT(fs::file_size(path), 1000u);
        EXPECT_TRUE(same_model(read_onnx_file(path), model));
        // No temporary files are left behind.
        std::size_t entries = 0;
        for ([[maybe_unused]] const auto& entry : fs::directory_iterator(directory_.path())) {
            ++entries;
        }
        EXPECT_EQ(entries, 2u);
    }
}

TEST_F(OnnxStream, AFailedWriteLeavesNothing) {
    const Model model = parse_onnx(make_gemm_model().bytes(), "model");
    const fs::path path = directory_.path() / "out.onnx";
    for (const bool external : {false, true}) {
        EXPECT_THROW(write_onnx_file(
                         model.topology,
                         [](std::size_t tensor, std::uint64_t, std::span<float>) {
                             if (tensor == 1) throw Error("source failed");
                         },
                         path, external),
                     Error);
        EXPECT_TRUE(fs::is_empty(directory_.path()));
    }
}

// A package made from a model with external data is the package of the
// same model kept inline, and unpacks to the same bytes.
TEST_F(OnnxStream, PackageOfExternalDataModelUnpacksBitIdentically) {
    const Model model = parse_onnx(make_gemm_model().bytes(), "model");
    const auto [inline_model, external_model] =
        testing::write_inline_and_external(model, directory_.path());
    PackOptions options;
    options.ladder = LadderPlan::parse("4,8,16");
    options.direct_bits = {8, 16};
    options.chunk_elements = 300;
    pack_model(inline_model, options, directory_.path() / "p1");
    pack_model(external_model, options, directory_.path() / "p2");
    const Manifest first = read_manifest(directory_.path() / "p1");
    for (const RungEntry& rung : first.rungs) {
        EXPECT_EQ(slurp(directory_.path() / "p1" / rung.data.file),
                  slurp(directory_.path() / "p2" / rung.data.file));
    }
    EXPECT_TRUE(verify_package(directory_.path() / "p2").problems.empty());
    for (const bool direct : {false, true}) {
        const fs::path unpacked = directory_.path() / "unpacked.onnx";
        unpack_package_to_file(directory_.path() / "p2", 16, direct, unpacked);
        const Model expected = unpack_package(directory_.path() / "p1", 16, direct);
        EXPECT_EQ(slurp(unpacked), serialize_onnx(expected));
        const fs::path unpacked_external = directory_.path() / "unpacked-external.onnx";
        unpack_package_to_file(directory_.path() / "p2", 16, direct, unpacked_external, true);
        EXPECT_TRUE(same_model(read_onnx_file(unpacked_external), expected));
    }
}

// Constant-node weights: the streaming reader (file and memory) and the
// protobuf reference agree, the topology keeps the Constant with its data
// cleared, and serializing gives the same graph back.
TEST_F(OnnxStream, ConstantNodeWeightsReadAndWriteLikeInitializers) {
    testing::OnnxBuilder builder;
    builder.input("x", {-1, 4}).output("y", {-1, 3});
    builder.constant("w", {3, 4}, {0.5f, -1, 0.25f, 2, 1, 1, -0.5f, 0, -2, 0.75f, 1.5f, -0.25f},
                     testing::Encoding::float_raw);
    builder.int64_constant("unused_shape", {3, 4});
    builder.constant("unused_scalar", {}, {2.0f});  // not a weight: stays whole
    builder.initializer("b", {3}, {0.125f, -0.5f, 1.0f});
    testing::add_int_attribute(builder.node("Gemm", {"x", "w", "b"}, {"y"}), "transB", 1);
    const std::string bytes = builder.bytes();
    const fs::path path = directory_.path() / "constant.onnx";
    testing::spit(path, bytes);
    // The fuzz corpus's seed (tests/fuzz/corpus/onnx/constant-weights.onnx).
    if (const char* corpus = std::getenv("BITINC_WRITE_ONNX_CORPUS")) {
        testing::spit(fs::path(corpus) / "constant-weights.onnx", bytes);
    }

    const Model in_memory = parse_onnx(bytes, "constant.onnx");
    const OnnxWeightReader reader(path);
    ASSERT_EQ(in_memory.weights.size(), 2u);
    EXPECT_EQ(in_memory.weights[0].name, "w");
    EXPECT_EQ(in_memory.weights[1].name, "b");
    EXPECT_EQ(reader.topology().topology, in_memory.topology);
    for (std::size_t i = 0; i < in_memory.weights.size(); ++i) {
        EXPECT_EQ(reader.read_values(i), in_memory.weights[i].values);
        EXPECT_EQ(reader.topology().weights[i].shape, in_memory.weights[i].shape);
    }
    const Model topology_only = parse_topology(in_memory.topology, "topology");
    ASSERT_EQ(topology_only.weights.size(), 2u);
    EXPECT_EQ(topology_only.weights[0].name, "w");

    onnx::ModelProto topology;
    ASSERT_TRUE(topology.ParseFromString(in_memory.topology));
    ASSERT_EQ(topology.graph().node_size(), 4);
    EXPECT_EQ(topology.graph().node(0).op_type(), "Constant");
    EXPECT_TRUE(topology.graph().node(0).attribute(0).t().raw_data().empty());
    EXPECT_EQ(topology.graph().node(1).attribute(0).t().int64_data_size(), 2);
    EXPECT_EQ(topology.graph().node(2).attribute(0).t().float_data_size(), 1);
    EXPECT_EQ(summarize_topology(in_memory).constant_float_tensors, 1u);

    const std::string written = serialize_onnx(in_memory);
    EXPECT_EQ(written, onnx_io::serialize_with_protobuf(in_memory));
    const Model again = parse_onnx(written, "again");
    EXPECT_EQ(again.topology, in_memory.topology);
    EXPECT_EQ(again.weights[0].values, in_memory.weights[0].values);
    onnx::ModelProto original;
    onnx::ModelProto rebuilt;
    ASSERT_TRUE(original.ParseFromString(bytes));
    ASSERT_TRUE(rebuilt.ParseFromString(written));
    EXPECT_EQ(rebuilt.graph().node(0).attribute(0).t().raw_data(),
              original.graph().node(0).attribute(0).t().raw_data());
    for (const int whole : {1, 2}) {
        EXPECT_EQ(rebuilt.graph().node(whole).SerializeAsString(),
                  original.graph().node(whole).SerializeAsString());
    }
}

// A Constant whose tensor keeps its data in an external file (as onnx's
// external-data helpers may write it) is read from there, and a range past
// the file's end is refused naming the Constant's output.
TEST_F(OnnxStream, ConstantWithExternalDataIsRead) {
    const std::vector<float> values{0.5f, -1, 0.25f, 2, 1, 1, -0.5f, 0, -2, 0.75f, 1.5f, -0.25f};
    spit(directory_.path() / "constant.bin",
         std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4));
    auto write_model = [&](const std::string& length) {
        testing::OnnxBuilder builder;
        builder.input("x", {-1, 4}).output("y", {-1, 3});
        onnx::TensorProto& tensor =
            *builder.constant("W", {3, 4}, {}).mutable_attribute(0)->mutable_t();
        tensor.set_data_location(onnx::TensorProto::EXTERNAL);
        for (const auto& [key, value] :
             {std::pair<std::string, std::string>{"location", "constant.bin"},
              {"length", length}}) {
            auto* entry = tensor.add_external_data();
            entry->set_key(key);
            entry->set_value(value);
        }
        builder.initializer("b", {3}, {0.125f, -0.5f, 1.0f});
        testing::add_int_attribute(builder.node("Gemm", {"x", "W", "b"}, {"y"}), "transB", 1);
        const fs::path path = directory_.path() / "model.onnx";
        spit(path, builder.bytes());
        return path;
    };
    const Model model = read_onnx_file(write_model("48"));
    ASSERT_EQ(model.weights.size(), 2u);
    EXPECT_EQ(model.weights[0].values, values);
    const Model again = parse_onnx(serialize_onnx(model), "inline");
    EXPECT_EQ(again.weights[0].values, values);
    EXPECT_EQ(again.topology, model.topology);
    expect_refused(write_model("64"), "bytes of external data");
}

TEST_F(OnnxStream, DuplicateWeightNamesAreRefused) {
    testing::OnnxBuilder builder;
    builder.input("x", {-1, 4}).output("y", {-1, 4});
    builder.constant("w", {4}, {1, 2, 3, 4});
    builder.initializer("w", {4}, {1, 2, 3, 4});
    builder.node("Add", {"x", "w"}, {"y"});
    try {
        parse_onnx(builder.bytes(), "dup.onnx");
        FAIL() << "a duplicate name was accepted";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("two weights are named 'w'"), std::string::npos)
            << error.what();
    }
}

}  // namespace
}  // namespace bitinc
