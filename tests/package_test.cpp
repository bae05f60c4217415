// Packages: pack, unpack through the ladder and directly, verify, and the
// checks on manifests and units that protect a device from bad bytes.
#include <gtest/gtest.h>

#include <unistd.h>
#include <bitinc/bitinc.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "core/sha256.hpp"
#include "onnx_builder.hpp"
#include "test_support.hpp"

namespace bitinc {
namespace {

namespace fs = std::filesystem;
using testing::Encoding;
using testing::OnnxBuilder;
using testing::random_values;
using testing::slurp;
using testing::spit;
using testing::TemporaryDirectory;

// A model with the tensors a packer meets: a large float32 matrix cut into
// chunks that straddle channels, a float16 matrix, an all-zero and a
// constant tensor, and a bias that travels exactly.
fs::path write_test_model(const fs::path& directory) {
    OnnxBuilder builder;
    builder.input("x", {-1, 300}).output("y", {-1, 64});
    builder.initializer("weight", {64, 300}, random_values(64 * 300, 0.05f, 1));
    builder.initializer("bias", {64}, random_values(64, 0.1f, 2));
    builder.initializer("half", {32, 40}, random_values(32 * 40, 0.2f, 3), Encoding::half_raw);
    builder.initializer("zeros", {16, 32}, std::vector<float>(16 * 32, 0.0f));
    builder.initializer("constant", {16, 32}, std::vector<float>(16 * 32, -0.75f));
    builder.node("Gemm", {"x", "weight", "bias"}, {"y"});
    const fs::path path = directory / "model.onnx";
    spit(path, builder.bytes());
    return path;
}

PackOptions options_for(const std::string& ladder, bool per_channel) {
    PackOptions options;
    options.ladder = LadderPlan::parse(ladder);
    options.ladder.per_channel = per_channel;
    options.chunk_elements = 1000;  // many chunks, not aligned to channels
    options.direct_bits = options.ladder.bits;
    options.threads = 2;
    return options;
}

class Package : public ::testing::Test {
  protected:
    TemporaryDirectory directory_;
    fs::path model_ = write_test_model(directory_.path());
};

TEST_F(Package, LadderReachesEveryDirectRungBitForBit) {
    for (const std::string ladder : {"8,16", "4,16", "4,8,16", "2,3,12,32"}) {
        for (const bool per_channel : {false, true}) {
            SCOPED_TRACE(ladder + (per_channel ? " per channel" : " per tensor"));
            const fs::path package = directory_.path() / "package";
            PackOptions options = options_for(ladder, per_channel);
            options.replace = true;
            pack_model(model_, options, package);
            for (const int bits : options.ladder.bits) {
                const std::string through_ladder =
                    serialize_onnx(unpack_package(package, bits, false));
                const std::string direct = serialize_onnx(unpack_package(package, bits, true));
                EXPECT_EQ(through_ladder, direct) << bits << " bits";
            }
            const VerifyReport report = verify_package(package);
            EXPECT_TRUE(report.problems.empty()) << report.problems.front();
            EXPECT_EQ(report.files, 1 + 2 * options.ladder.bits.size());  // topology and rungs
        }
    }
}

// --compact may code units with the adaptive coder: the package is no
// larger, and the ladder still reaches the direct rungs bit for bit.
TEST_F(Package, CompactPackageIsNoLargerAndExact) {
    const fs::path fast = directory_.path() / "fast";
    const fs::path compact = directory_.path() / "compact";
    PackOptions options = options_for("3,8", false);
    options.chunk_elements = 300;  // small chunks, where the adaptive coder wins
    const PackResult fast_result = pack_model(model_, options, fast);
    options.coder_choice = CoderChoice::compact;
    const PackResult compact_result = pack_model(model_, options, compact);
    std::uint64_t fast_bytes = 0, compact_bytes = 0;
    for (const RungEntry& rung : fast_result.manifest.rungs) fast_bytes += rung.data.bytes;
    for (const RungEntry& rung : compact_result.manifest.rungs) compact_bytes += rung.data.bytes;
    EXPECT_LT(compact_bytes, fast_bytes);
    for (const int bits : options.ladder.bits) {
        EXPECT_EQ(serialize_onnx(unpack_package(compact, bits, false)),
                  serialize_onnx(unpack_package(fast, bits, true)))
            << bits << " bits";
    }
    const VerifyReport report = verify_package(compact);
    EXPECT_TRUE(report.problems.empty()) << report.problems.front();
}

// A model whose weights are Constant nodes (as some exporters write them)
// packs, but pack says that nothing of it travels incrementally, and why;
// a model of initializers gets no warning.
// Weights the way some exporters write them: a float32 matrix in a Constant
// node, an int64 shape in another (not a weight), a float16 Constant, and
// initializers (one of them also listed as a graph input, as before IR 4).
fs::path write_constant_weight_model(const fs::path& directory) {
    OnnxBuilder builder;
    builder.input("x", {-1, 300}).input("bias", {64}).output("y", {-1, 64});
    builder.constant("weight", {64, 300}, random_values(64 * 300, 0.05f, 1));
    builder.int64_constant("shape", {-1, 64});
    builder.constant("half", {32, 40}, random_values(32 * 40, 0.2f, 3), Encoding::half_int32);
    builder.initializer("bias", {64}, random_values(64, 0.1f, 2));
    builder.initializer("proj", {64, 64}, random_values(64 * 64, 0.1f, 4));
    testing::add_int_attribute(builder.node("Gemm", {"x", "weight", "bias"}, {"hidden"}), "transB",
                               1);
    builder.node("Gemm", {"hidden", "proj"}, {"projected"});
    builder.node("Reshape", {"projected", "shape"}, {"y"});
    const fs::path path = directory / "constants.onnx";
    spit(path, builder.bytes());
    return path;
}

// The node list of an ONNX file: Constant nodes must come back as they were.
std::vector<std::string> node_signatures(const onnx::ModelProto& proto) {
    std::vector<std::string> nodes;
    for (const auto& node : proto.graph().node()) {
        std::string text = node.op_type() + " " + node.name() + " (";
        for (const auto& input : node.input()) text += input + ",";
        text += ") -> ";
        for (const auto& output : node.output()) text += output + ",";
        for (const auto& attribute : node.attribute()) text += " @" + attribute.name();
        nodes.push_back(text);
    }
    return nodes;
}

onnx::ModelProto parse_proto(const std::string& bytes) {
    onnx::ModelProto proto;
    EXPECT_TRUE(proto.ParseFromString(bytes));
    return proto;
}

TEST_F(Package, ConstantNodeWeightsGoThroughTheLadder) {
    const fs::path model = write_constant_weight_model(directory_.path());
    const Model source = read_onnx_file(model);
    // Constants first, in node order, then initializers.
    std::vector<std::string> names;
    for (const Tensor& tensor : source.weights) names.push_back(tensor.name);
    EXPECT_EQ(names, (std::vector<std::string>{"weight", "half", "bias", "proj"}));
    EXPECT_EQ(source.weights[1].stored_as, StoredType::float16);
    const TopologySummary summary = summarize_topology(source);
    EXPECT_EQ(summary.constant_weight_tensors, 2u);
    EXPECT_EQ(summary.constant_float_tensors, 0u);
    // "bias" is an initializer listed as an input: not an input of the model.
    ASSERT_EQ(summary.inputs.size(), 1u);
    EXPECT_EQ(summary.inputs[0].name, "x");

    const fs::path package = directory_.path() / "package";
    const PackOptions options = options_for("4,8", false);
    const PackResult result = pack_model(model, options, package);
    EXPECT_TRUE(result.warnings.empty()) << result.warnings.front();
    for (const TensorEntry& tensor : result.manifest.tensors) {
        if (tensor.name != "bias") {
            EXPECT_TRUE(tensor.quantized) << tensor.name;
        }
    }
    const onnx::ModelProto original = parse_proto(slurp(model));
    const LadderPlan plan = LadderPlan::parse("4,8");
    for (std::size_t rung = 0; rung < options.ladder.bits.size(); ++rung) {
        const int bits = options.ladder.bits[rung];
        SCOPED_TRACE(std::to_string(bits) + " bits");
        const Model unpacked = unpack_package(package, bits, false);
        const std::string bytes = serialize_onnx(unpacked);
        EXPECT_EQ(bytes, serialize_onnx(unpack_package(package, bits, true)));
        const onnx::ModelProto rebuilt = parse_proto(bytes);
        EXPECT_EQ(node_signatures(rebuilt), node_signatures(original));
        EXPECT_EQ(rebuilt.graph().initializer_size(), 2);
        // The int64 shape is untouched; the float Constant holds the rung's values.
        EXPECT_EQ(rebuilt.graph().node(1).SerializeAsString(),
                  original.graph().node(1).SerializeAsString());
        const onnx::TensorProto& weight = rebuilt.graph().node(0).attribute(0).t();
        const std::vector<float> expected =
            reconstruct(quantize_ladder(source.weights[0], plan)[rung]);
        ASSERT_EQ(weight.raw_data().size(), expected.size() * sizeof(float));
        EXPECT_EQ(std::memcmp(weight.raw_data().data(), expected.data(), weight.raw_data().size()),
                  0);
        EXPECT_NE(unpacked.weights[0].values, source.weights[0].values);
        EXPECT_EQ(rebuilt.graph().node(2).attribute(0).t().data_type(), onnx::TensorProto::FLOAT16);
        EXPECT_EQ(parse_onnx(bytes, "rebuilt").weights[0].values, unpacked.weights[0].values);
    }
    const VerifyReport report = verify_package(package);
    EXPECT_TRUE(report.problems.empty()) << report.problems.front();

    // Through a file, inline and with external data (Constants stay inline).
    for (const bool external : {false, true}) {
        const fs::path out = directory_.path() / (external ? "external.onnx" : "inline.onnx");
        EXPECT_EQ(unpack_package_to_file(package, 8, false, out, external), external);
        const Model read_back = read_onnx_file(out);
        // Stored the way the file stores them (float16 rounded).
        const Model expected =
            parse_onnx(serialize_onnx(unpack_package(package, 8, false)), "expected");
        ASSERT_EQ(read_back.weights.size(), expected.weights.size());
        for (std::size_t t = 0; t < expected.weights.size(); ++t) {
            EXPECT_EQ(read_back.weights[t].values, expected.weights[t].values);
        }
        EXPECT_EQ(node_signatures(parse_proto(slurp(out))), node_signatures(original));
    }
}

// A Constant float tensor bitinc leaves in the topology (inside an If
// branch here) still gets the warning, naming Constant nodes, and a second
// one naming the tensor.
TEST_F(Package, WarnsWhenMostWeightsAreInConstantNodes) {
    OnnxBuilder builder;
    builder.input("x", {-1, 300}).input("flag", {}, onnx::TensorProto::BOOL).output("y", {-1, 300});
    onnx::NodeProto& branch = builder.node("If", {"flag"}, {"offsets"});
    for (const char* name : {"then_branch", "else_branch"}) {
        onnx::AttributeProto& attribute = *branch.add_attribute();
        attribute.set_name(name);
        attribute.set_type(onnx::AttributeProto::GRAPH);
        onnx::GraphProto& graph = *attribute.mutable_g();
        graph.set_name(name);
        onnx::NodeProto& constant = *graph.add_node();
        constant.set_op_type("Constant");
        constant.add_output(std::string(name) + "_offsets");
        onnx::AttributeProto& value = *constant.add_attribute();
        value.set_name("value");
        value.set_type(onnx::AttributeProto::TENSOR);
        onnx::TensorProto& tensor = *value.mutable_t();
        tensor.set_data_type(onnx::TensorProto::DOUBLE);
        tensor.add_dims(1);
        tensor.add_dims(300);
        for (const float weight : random_values(300, 0.05f, 1)) tensor.add_double_data(weight);
        onnx::ValueInfoProto& output = *graph.add_output();
        output.set_name(constant.output(0));
        output.mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::DOUBLE);
    }
    builder.node("Cast", {"offsets"}, {"offsets_float"});
    builder.node("Add", {"x", "offsets_float"}, {"y"});
    const fs::path constant_model = directory_.path() / "constants.onnx";
    spit(constant_model, builder.bytes());

    const TopologySummary summary = summarize_topology(read_onnx_file(constant_model));
    EXPECT_EQ(summary.constant_weight_tensors, 0u);
    EXPECT_EQ(summary.constant_float_tensors, 2u);
    EXPECT_EQ(summary.constant_float_elements, 600u);
    ASSERT_EQ(summary.kept_tensors.size(), 2u);
    EXPECT_EQ(summary.kept_tensors[0].kind, KeptTensor::Kind::in_subgraph);
    EXPECT_EQ(summary.kept_tensors[0].name, "then_branch_offsets");
    EXPECT_EQ(summary.kept_tensors[0].bytes, 2400u);
    const PackResult result =
        pack_model(constant_model, options_for("4,8", false), directory_.path() / "p1");
    ASSERT_EQ(result.warnings.size(), 2u);
    EXPECT_NE(result.warnings[0].find("Constant"), std::string::npos) << result.warnings[0];
    EXPECT_NE(result.warnings[0].find("0.0 %"), std::string::npos) << result.warnings[0];
    EXPECT_NE(result.warnings[1].find("'then_branch_offsets' (DOUBLE, 300 elements)"),
              std::string::npos)
        << result.warnings[1];
    EXPECT_TRUE(result.notes.empty());
    EXPECT_TRUE(
        pack_model(model_, options_for("4,8", false), directory_.path() / "p2").warnings.empty());
}

TEST_F(Package, RungsMatchTheLadderQuantization) {
    const fs::path package = directory_.path() / "package";
    pack_model(model_, options_for("4,8", false), package);
    const Model source = read_onnx_file(model_);
    const Model base = unpack_package(package, 4, false);
    LadderPlan plan = LadderPlan::parse("4,8");
    for (std::size_t t = 0; t < source.weights.size(); ++t) {
        const Tensor& tensor = source.weights[t];
        if (!plan.quantizes(tensor)) {
            EXPECT_EQ(base.weights[t].values, tensor.values) << tensor.name << " travels exactly";
            continue;
        }
        const std::vector<float> expected = reconstruct(quantize_ladder(tensor, plan).front());
        // float16 tensors are stored back as float16 in the ONNX file.
        if (tensor.stored_as == StoredType::float32) {
            EXPECT_EQ(base.weights[t].values, expected) << tensor.name;
        }
    }
}

TEST_F(Package, SameInputGivesByteIdenticalPackages) {
    const PackOptions options = options_for("4,8,16", true);
    pack_model(model_, options, directory_.path() / "one");
    PackOptions single_thread = options;
    single_thread.threads = 1;
    pack_model(model_, single_thread, directory_.path() / "two");
    std::size_t files = 0;
    for (const auto& entry : fs::directory_iterator(directory_.path() / "one")) {
        EXPECT_EQ(slurp(entry.path()), slurp(directory_.path() / "two" / entry.path().filename()))
            << entry.path().filename();
        ++files;
    }
    EXPECT_EQ(files, 8u);  // manifest, topology, 3 ladder rungs, 3 direct
}

TEST_F(Package, FlippedByteIsFoundByVerifyAndRefusedByUnpack) {
    const fs::path package = directory_.path() / "package";
    pack_model(model_, options_for("4,8", false), package);
    const Manifest manifest = read_manifest(package);
    const RungEntry& refinement = manifest.rungs[1];
    std::string bytes = slurp(package / refinement.data.file);
    bytes[refinement.units[3].offset + 70] ^= 0x10;
    spit(package / refinement.data.file, bytes);

    const VerifyReport report = verify_package(package);
    ASSERT_GE(report.problems.size(), 2u);  // the file's SHA-256 and the unit's CRC
    EXPECT_NE(report.problems[0].find("SHA-256"), std::string::npos) << report.problems[0];
    EXPECT_NE(report.problems[1].find("unit 3"), std::string::npos) << report.problems[1];
    EXPECT_THROW(unpack_package(package, 8, false), Error);
    // The base rung is untouched and still unpacks.
    EXPECT_NO_THROW(unpack_package(package, 4, false));
}

TEST_F(Package, TruncatedRungFileIsAnError) {
    const fs::path package = directory_.path() / "package";
    pack_model(model_, options_for("8,16", false), package);
    const std::string bytes = slurp(package / "base-8.bin");
    spit(package / "base-8.bin", bytes.substr(0, bytes.size() / 2));
    try {
        unpack_package(package, 8, false);
        FAIL() << "a truncated rung unpacked";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("base-8.bin"), std::string::npos) << error.what();
    }
}

TEST_F(Package, ChangedTopologyIsRefused) {
    const fs::path package = directory_.path() / "package";
    pack_model(model_, options_for("8,16", false), package);
    std::string topology = slurp(package / "topology.onnx");
    topology[topology.size() / 2] ^= 1;
    spit(package / "topology.onnx", topology);
    EXPECT_THROW(unpack_package(package, 16, false), Error);
}

TEST_F(Package, ReplacesAPackageButNothingElse) {
    const fs::path package = directory_.path() / "package";
    pack_model(model_, options_for("8,16", false), package);
    // A non-empty output is refused unless replacing is asked for.
    EXPECT_THROW(pack_model(model_, options_for("4,8", false), package), Error);
    EXPECT_EQ(read_manifest(package).ladder.bits, (std::vector<int>{8, 16}));
    PackOptions replacing = options_for("4,8", false);
    replacing.replace = true;
    pack_model(model_, replacing, package);  // replaces the package
    EXPECT_EQ(read_manifest(package).ladder.bits, (std::vector<int>{4, 8}));

    const fs::path other = directory_.path() / "other";
    fs::create_directories(other);
    spit(other / "notes.txt", "keep me");
    EXPECT_THROW(pack_model(model_, options_for("8,16", false), other), Error);
    EXPECT_EQ(slurp(other / "notes.txt"), "keep me");

    // A package directory with a stranger in it is not replaced, even when
    // asked: pack never deletes what it did not write.
    spit(package / "notes.txt", "mine");
    EXPECT_THROW(pack_model(model_, replacing, package), Error);
    EXPECT_EQ(slurp(package / "notes.txt"), "mine");
    EXPECT_EQ(read_manifest(package).ladder.bits, (std::vector<int>{4, 8}));
    fs::remove(package / "notes.txt");

    // A failed pack (the model is missing) leaves the old package alone.
    EXPECT_THROW(pack_model(directory_.path() / "missing.onnx", replacing, package), Error);
    EXPECT_EQ(read_manifest(package).ladder.bits, (std::vector<int>{4, 8}));
    std::size_t leftovers = 0;
    for (const auto& entry : fs::directory_iterator(directory_.path())) {
        leftovers += entry.path().filename().string().find(".partial") != std::string::npos;
    }
    EXPECT_EQ(leftovers, 0u);
}

// An exact (unquantized) tensor larger than a chunk travels in several
// units, each with its own slice of the values.
TEST_F(Package, ExactTensorSpansSeveralChunks) {
    PackOptions options = options_for("4,8", false);
    options.chunk_elements = 27;  // the 64-element bias takes three units
    const fs::path package = directory_.path() / "package";
    pack_model(model_, options, package);
    const Manifest manifest = read_manifest(package);
    std::size_t bias_units = 0;
    for (const UnitEntry& unit : manifest.rungs.front().units) {
        bias_units += manifest.tensors[unit.tensor].name == "bias";
    }
    EXPECT_EQ(bias_units, 3u);
    const Model original = read_onnx_file(model_);
    for (const bool direct : {false, true}) {
        const Model unpacked = unpack_package(package, 8, direct);
        for (std::size_t t = 0; t < original.weights.size(); ++t) {
            if (original.weights[t].name != "bias") continue;
            EXPECT_EQ(unpacked.weights[t].values, original.weights[t].values);
        }
    }
    EXPECT_TRUE(verify_package(package).problems.empty());
}

TEST_F(Package, DirectRungMustBeOnTheLadder) {
    PackOptions options = options_for("8,16", false);
    options.direct_bits = {12};
    EXPECT_THROW(pack_model(model_, options, directory_.path() / "package"), Error);
}

TEST_F(Package, NanWeightIsAClearError) {
    OnnxBuilder builder;
    builder.input("x", {-1, 300}).output("y", {-1, 64});
    std::vector<float> values = random_values(64 * 300, 0.05f, 1);
    values[1234] = std::nanf("");
    builder.initializer("weight", {64, 300}, values);
    builder.node("MatMul", {"x", "weight"}, {"y"});
    spit(directory_.path() / "nan.onnx", builder.bytes());
    try {
        pack_model(directory_.path() / "nan.onnx", options_for("8,16", false),
                   directory_.path() / "p");
        FAIL() << "NaN packed";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("NaN"), std::string::npos) << error.what();
    }
    EXPECT_FALSE(fs::exists(directory_.path() / "p"));
}

long resident_kilobytes() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    }
    return 0;
}

// A manifest and topology that claim a 2·10^9-element tensor: the device
// must not allocate 8 GB on the claim alone, only as units really arrive.
TEST_F(Package, AClaimedHugeTensorCostsNoMemoryUntilItsUnitsArrive) {
    const fs::path package = directory_.path() / "package";
    pack_model(model_, options_for("4,8", false), package);
    Manifest manifest = read_manifest(package);
    const std::vector<std::int64_t> huge_shape{50'000, 40'000};
    const std::uint64_t huge_elements = 2'000'000'000;

    onnx::ModelProto topology;
    ASSERT_TRUE(topology.ParseFromString(slurp(package / "topology.onnx")));
    for (auto& initializer : *topology.mutable_graph()->mutable_initializer()) {
        if (initializer.name() != "weight") continue;
        initializer.clear_dims();
        for (const std::int64_t dim : huge_shape) initializer.add_dims(dim);
    }
    std::string topology_bytes;
    ASSERT_TRUE(topology.SerializeToString(&topology_bytes));
    manifest.topology.bytes = topology_bytes.size();
    manifest.topology.sha256 = core::sha256_hex(topology_bytes);
    std::uint32_t weight_index = 0;
    while (manifest.tensors[weight_index].name != "weight") ++weight_index;
    manifest.parameters += huge_elements - manifest.tensors[weight_index].element_count();
    manifest.float32_bytes = 4 * manifest.parameters;
    manifest.tensors[weight_index].shape = huge_shape;
    for (RungEntry& rung : manifest.rungs) {
        std::vector<UnitEntry> units;
        std::uint64_t offset = manifest.first_unit_offset(rung);
        for (const UnitEntry& unit : rung.units) {
            if (unit.tensor == weight_index && unit.first > 0) continue;
            if (unit.tensor != weight_index) {
                units.push_back(unit);
                units.back().offset = offset;
                offset += unit.length;
                continue;
            }
            for (std::uint64_t first = 0; first < huge_elements; first += max_unit_elements) {
                const std::uint64_t count = std::min(max_unit_elements, huge_elements - first);
                units.push_back({weight_index, first, count, offset, 100, 0, std::string(64, '0')});
                offset += 100;
            }
        }
        rung.units = std::move(units);
        rung.data.bytes = offset;
    }
    // The parser accepts the claim: it is consistent.
    manifest = parse_manifest(serialize_manifest(manifest), "claim");

    const long before = resident_kilobytes();
    ModelAssembler assembler(manifest, topology_bytes, "claim");
    std::size_t weight_unit = 0;
    while (manifest.rungs[0].units[weight_unit].tensor != weight_index) ++weight_unit;
    const std::vector<std::uint8_t> junk(100, 0x55);
    EXPECT_THROW(assembler.apply_unit(0, weight_unit, junk, "claim"), Error);
    const long grown_megabytes = (resident_kilobytes() - before) / 1024;
    EXPECT_LT(grown_megabytes, 64) << "the claim alone cost " << grown_megabytes << " MB";
}

TEST_F(Package, AssemblerNeedsTheParentRungFirst) {
    const fs::path package = directory_.path() / "package";
    pack_model(model_, options_for("4,8", false), package);
    const Manifest manifest = read_manifest(package);
    ModelAssembler assembler(manifest, slurp(package / "topology.onnx"), "test");
    EXPECT_FALSE(assembler.complete());
    EXPECT_THROW(assembler.model(), Error);
    const std::string refinement = slurp(package / manifest.rungs[1].data.file);
    const UnitEntry& unit = manifest.rungs[1].units[0];
    const auto bytes = std::span(
        reinterpret_cast<const std::uint8_t*>(refinement.data()) + unit.offset, unit.length);
    EXPECT_THROW(assembler.apply_unit(1, 0, bytes, "test"), Error);
    // A unit given for the wrong entry is refused too.
    const std::string base = slurp(package / manifest.rungs[0].data.file);
    const UnitEntry& first = manifest.rungs[0].units[0];
    const auto first_bytes =
        std::span(reinterpret_cast<const std::uint8_t*>(base.data()) + first.offset, first.length);
    EXPECT_THROW(assembler.apply_unit(0, 1, first_bytes, "test"), Error);
    assembler.apply_unit(0, 0, first_bytes, "test");
    EXPECT_EQ(assembler.chunk_bits(1, 0), 4);
}

// fill_model (a device's snapshot into buffers it allocated early) gives
// model()'s values, in the very buffers it was handed when they fit, and
// starts over from the topology when they do not.
TEST_F(Package, FillModelReusesBuffersThatFit) {
    const fs::path package = directory_.path() / "package";
    pack_model(model_, options_for("4,8", false), package);
    const Manifest manifest = read_manifest(package);
    ModelAssembler assembler(manifest, slurp(package / "topology.onnx"), "test");
    const std::string base = slurp(package / manifest.rungs[0].data.file);
    for (std::size_t u = 0; u < manifest.rungs[0].units.size(); ++u) {
        const UnitEntry& unit = manifest.rungs[0].units[u];
        assembler.apply_unit(
            0, u,
            std::span(reinterpret_cast<const std::uint8_t*>(base.data()) + unit.offset,
                      unit.length),
            "test");
    }
    Model buffers = assembler.topology();
    std::vector<const float*> data;
    for (std::size_t t = 0; t < buffers.weights.size(); ++t) {
        buffers.weights[t].values.assign(manifest.tensors[t].element_count(), -1.0f);
        data.push_back(buffers.weights[t].values.data());
    }
    assembler.fill_model(buffers);
    const Model expected = assembler.model();
    EXPECT_EQ(serialize_onnx(buffers), serialize_onnx(expected));
    for (std::size_t t = 0; t < buffers.weights.size(); ++t) {
        if (!buffers.weights[t].values.empty()) {
            EXPECT_EQ(buffers.weights[t].values.data(), data[t]) << "tensor " << t;
        }
    }
    Model unrelated;  // no topology: rebuilt from the assembler's
    assembler.fill_model(unrelated);
    EXPECT_EQ(serialize_onnx(unrelated), serialize_onnx(expected));
}

// Manifest checks: each mutation must be refused with an Error.
TEST_F(Package, MalformedManifestsAreRefused) {
    const fs::path package = directory_.path() / "package";
    pack_model(model_, options_for("4,8", false), package);
    const std::string good = slurp(package / "manifest.json");
    EXPECT_NO_THROW(parse_manifest(good, "good"));
    const auto replaced = [&](const std::string& from, const std::string& to) {
        std::string text = good;
        const auto at = text.find(from);
        EXPECT_NE(at, std::string::npos) << from;
        return text.replace(at, from.size(), to);
    };
    const std::vector<std::string> bad = {
        good.substr(0, good.size() / 2),
        "",
        "[]",
        replaced("\"format_version\":3", "\"format_version\":8"),
        replaced("\"format_version\":3", "\"format_version\":1"),
        replaced("\"format_version\":3", "\"format_version\":20000000"),
        replaced("\"file\":\"base-4.bin\"", "\"file\":\"../base-4.bin\""),
        replaced("\"file\":\"base-4.bin\"", "\"file\":\"topology.onnx\""),
        replaced("\"bits\":[4,8]", "\"bits\":[8,4]"),
        replaced("\"bits\":[4,8]", "\"bits\":[4,8,16]"),
        replaced("\"parameters\":", "\"parameters\":1"),
        replaced("\"shape\":[64,300]", "\"shape\":[64,-300]"),
        replaced("\"shape\":[64,300]", "\"shape\":[6400000000,300]"),
        replaced("\"stored_as\":\"float32\"", "\"stored_as\":\"int8\""),
        replaced("[0,0,1000,0,", "[0,1,1000,0,"),
        replaced("[0,0,1000,0,", "[0,0,1000,1,"),
        replaced("[0,0,1000,0,", "[7,0,1000,0,"),
        replaced("\"kind\":\"base\"", "\"kind\":\"refinement\""),
        // Format 2: each unit ends with its SHA-256 in lowercase hex.
        replaced("[0,0,1000,0,", "[0,0,1000,0,0,"),
        replaced("\"]]", "\",1]]"),
        replaced("\"]]", "0\"]]"),
        "[" + std::string(100, '[') + std::string(101, ']'),
    };
    for (std::size_t i = 0; i < bad.size(); ++i) {
        EXPECT_THROW(parse_manifest(bad[i], "bad"), Error) << "mutation " << i;
    }
}

// A package of format 1 (no unit hashes) is refused with what to do about it.
TEST_F(Package, AccuracyPointMustNameUnitsOfARefinement) {
    const fs::path package = directory_.path() / "package";
    pack_model(model_, options_for("4,8", false), package);
    Manifest manifest = read_manifest(package);
    EXPECT_FALSE(manifest.accuracy_point.has_value());
    AccuracyPoint point;
    point.rung = 1;
    point.units = manifest.rungs[1].units.size();
    point.metric = "top1_percent";
    point.value = 90.25;
    point.top_value = 90.5;
    point.tolerance = 0.5;
    manifest.accuracy_point = point;
    const Manifest again = parse_manifest(serialize_manifest(manifest), "round trip");
    ASSERT_TRUE(again.accuracy_point.has_value());
    EXPECT_EQ(again.accuracy_point->units, point.units);
    EXPECT_EQ(again.accuracy_point->value, 90.25);
    EXPECT_EQ(again.accuracy_point_bytes(), manifest.rungs[1].data.bytes);
    for (const auto& [rung, units] : std::vector<std::pair<std::size_t, std::size_t>>{
             {0, 1}, {1, manifest.rungs[1].units.size() + 1}, {9, 1}}) {
        manifest.accuracy_point->rung = rung;
        manifest.accuracy_point->units = units;
        EXPECT_THROW(parse_manifest(serialize_manifest(manifest), "bad point"), Error)
            << rung << " " << units;
    }
}

TEST_F(Package, OlderFormatIsRefusedWithAHint) {
    const fs::path package = directory_.path() / "package";
    pack_model(model_, options_for("4,8", false), package);
    std::string text = slurp(package / "manifest.json");
    text.replace(text.find("\"format_version\":3"), 18, "\"format_version\":2");
    try {
        parse_manifest(text, "old.json");
        FAIL() << "a format 2 manifest was accepted";
    } catch (const Error& error) {
        EXPECT_EQ(std::string(error.what()),
                  "old.json: the package was made by an older bitinc (format 2); re-pack it with "
                  "this version");
    }
}

// Deep nesting is refused as it is met: a 66 MB document of brackets costs
// neither seconds nor gigabytes (the whole-text limit alone would refuse it
// too, so here it sits just under that limit).
TEST_F(Package, DeeplyNestedManifestIsRefusedFast) {
    const std::size_t depth = std::size_t(max_manifest_bytes / 2) - 8;
    const std::string nested = std::string(depth, '[') + std::string(depth, ']');
    const auto start = std::chrono::steady_clock::now();
    try {
        parse_manifest(nested, "nested.json");
        FAIL() << "a deeply nested manifest was accepted";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("deeper than 16 levels"), std::string::npos)
            << error.what();
    }
    EXPECT_THROW(parse_manifest(std::string(33'000'000, '[') + std::string(33'000'000, ']'), "big"),
                 Error);
    // Generous for loaded CI machines; a parser that descended into the
    // nesting would take far longer (or exhaust its stack).
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
}

// `verify` checks each unit's own SHA-256: a unit changed together with its
// CRC32C (in the unit and the manifest) is found.
TEST_F(Package, VerifyFindsAUnitForgedWithItsCrc) {
    const fs::path package = directory_.path() / "package";
    pack_model(model_, options_for("4,8", false), package);
    ASSERT_TRUE(verify_package(package).problems.empty());
    testing::forge_unit(package, 1, 0);
    const VerifyReport report = verify_package(package);
    bool unit_hash = false;
    for (const std::string& problem : report.problems)
        unit_hash |= problem.find("unit 0: SHA-256 differs") != std::string::npos;
    EXPECT_TRUE(unit_hash) << ::testing::PrintToString(report.problems);
    EXPECT_THROW(unpack_package(package, 8, false), Error);
}

}  // namespace
}  // namespace bitinc

namespace bitinc {
namespace {

// Weights with no graph (a checkpoint): a valid ONNX model of initializers
// and Identity outputs, packed and given back by name, bit for bit at the
// exact rung; bad inputs are errors.
TEST(PackWeights, ACheckpointWithoutAGraphPacksAndComesBackByName) {
    testing::TemporaryDirectory directory;
    std::vector<Tensor> weights(2);
    weights[0].name = "layer.weight";
    weights[0].shape = {32, 48};
    weights[0].values = testing::random_values(32 * 48, 0.1f, 4);
    weights[1].name = "layer.bias";
    weights[1].shape = {32};
    weights[1].values = testing::random_values(32, 0.1f, 5);
    const Model model = model_of_weights(weights, "checkpoint");
    EXPECT_EQ(parse_topology(model.topology, "checkpoint").weights.size(), 2u);
    PackOptions options;
    options.ladder = LadderPlan::parse("4,8,exact");
    // pack_weights' scratch directories (bitinc-weights-XXXXXX) in the
    // temporary directory: the same after packing as before.
    const auto scratch_directories = [] {
        std::set<std::string> names;
        for (const auto& entry : fs::directory_iterator(fs::temp_directory_path())) {
            const std::string name = entry.path().filename().string();
            if (name.rfind("bitinc-weights-", 0) == 0) names.insert(name);
        }
        return names;
    };
    const std::set<std::string> scratch_before = scratch_directories();
    const PackResult result =
        pack_weights(weights, options, directory.path() / "pkg", "checkpoint");
    EXPECT_EQ(result.manifest.model_name, "checkpoint");
    const Model exact = unpack_package(directory.path() / "pkg", exact_rung_bits, false);
    ASSERT_EQ(exact.weights.size(), 2u);
    for (std::size_t i = 0; i < 2; ++i) {
        EXPECT_EQ(exact.weights[i].name, weights[i].name);
        EXPECT_EQ(exact.weights[i].shape, weights[i].shape);
        EXPECT_EQ(exact.weights[i].values, weights[i].values);
    }
    // No scratch directory stays behind, and bad inputs are errors.
    EXPECT_EQ(scratch_directories(), scratch_before);
    std::vector<Tensor> repeated = {weights[0], weights[0]};
    EXPECT_THROW(model_of_weights(repeated), Error);
    std::vector<Tensor> short_values = {weights[0]};
    short_values[0].values.pop_back();
    EXPECT_THROW(model_of_weights(short_values), Error);
    EXPECT_THROW(model_of_weights({}), Error);
    EXPECT_THROW(pack_weights(weights, options, directory.path() / "other", "a/b"), Error);
}

}  // namespace
}  // namespace bitinc
