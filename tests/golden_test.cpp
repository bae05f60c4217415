// Golden vectors (tests/golden/README.md): units and packages as the encoder
// of this format version writes them, with what they decode to. A change to
// the bytes — in the encoder, the decoder or both in lockstep — fails here
// unless the vectors are regenerated deliberately with a format version bump.
#include <gtest/gtest.h>

#include <bit>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "bitinc/codec.hpp"
#include "bitinc/package.hpp"
#include "core/half_float.hpp"
#include "core/sha256.hpp"
#include "onnx_builder.hpp"
#include "test_support.hpp"

namespace bitinc {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;
using nlohmann::json;
using nlohmann::ordered_json;

fs::path golden_dir() {
    return testing::source_dir() / "tests" / "golden";
}

// BITINC_REGENERATE_GOLDEN=1 rewrites the vectors with today's encoder.
bool regenerating() {
    const char* value = std::getenv("BITINC_REGENERATE_GOLDEN");
    return value != nullptr && std::string_view(value) == "1";
}

Bytes read_bytes(const fs::path& path) {
    const std::string text = testing::slurp(path);
    return Bytes(text.begin(), text.end());
}

std::string as_text(std::span<const std::uint8_t> bytes) {
    return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

// "" when the two are equal, else where they first differ.
std::string difference(std::string_view actual, std::string_view committed) {
    if (actual == committed) return "";
    std::size_t offset = 0;
    while (offset < actual.size() && offset < committed.size() &&
           actual[offset] == committed[offset])
        ++offset;
    return "differs from the committed bytes at offset " + std::to_string(offset) + " (" +
           std::to_string(actual.size()) + " bytes, committed " + std::to_string(committed.size()) +
           ")";
}

// ---- inputs -----------------------------------------------------------------

// `count` weights of spread `scale` from integer arithmetic and one float
// division and multiplication: the same with every compiler and standard
// library (std::normal_distribution is not), so re-encoding them gives the
// committed bytes anywhere.
std::vector<float> golden_weights(std::size_t count, std::uint64_t seed, float scale) {
    std::uint64_t state = seed * 0x9E3779B97F4A7C15u + 1;
    std::vector<float> values(count);
    for (float& value : values) {
        state = state * 6364136223846793005u + 1442695040888963407u;
        // Three 16-bit draws summed: a bell around 0, as trained weights are.
        const std::int64_t sum = std::int64_t((state >> 16) & 0xFFFF) +
                                 std::int64_t((state >> 32) & 0xFFFF) + std::int64_t(state >> 48) -
                                 98302;
        value = float(sum) / 98304.0f * scale;
    }
    return values;
}

// ---- the expected results as text -------------------------------------------

// Integers as "3 -1 0 ...", floats as their bit patterns "3f800000 ...":
// compact in expected.json and exact.
template <typename Integer>
std::string join_integers(std::span<const Integer> values) {
    std::string text;
    for (const Integer value : values) text += (text.empty() ? "" : " ") + std::to_string(value);
    return text;
}

std::vector<std::int32_t> split_integers(const std::string& text) {
    std::istringstream in(text);
    std::vector<std::int32_t> values;
    for (std::int64_t value = 0; in >> value;) values.push_back(std::int32_t(value));
    return values;
}

std::string float_patterns(std::span<const float> values) {
    std::string text;
    char pattern[9];
    for (const float value : values) {
        std::snprintf(pattern, sizeof pattern, "%08x", std::bit_cast<std::uint32_t>(value));
        text += (text.empty() ? "" : " ") + std::string(pattern);
    }
    return text;
}

std::vector<float> split_floats(const std::string& text) {
    std::istringstream in(text);
    std::vector<float> values;
    for (std::string pattern; in >> pattern;)
        values.push_back(std::bit_cast<float>(std::uint32_t(std::stoul(pattern, nullptr, 16))));
    return values;
}

// ---- unit vectors -----------------------------------------------------------

struct UnitVector {
    std::string name;  // tests/golden/units/NAME.bin
    Bytes bytes;       // as today's encoder writes them
    // What the unit must decode to and the header fields of docs/format.md
    // §2, all taken from the encoder's inputs, never from a decoder.
    ordered_json expected;
};

ordered_json header_fields(UnitType type, int bits, int parent_bits, const UnitTarget& target,
                           std::uint64_t channel_size, std::size_t step_count, UnitCoder coder) {
    return {{"type", int(type)},
            {"bits", bits},
            {"parent_bits", parent_bits},
            {"tensor_index", target.tensor_index},
            {"tensor_elements", target.tensor_elements},
            {"first", target.first},
            {"count", target.count},
            {"channel_size", channel_size},
            {"step_count", step_count},
            {"coder", int(coder)}};
}

// The coder a unit coded with `choice` (fast or adaptive) has.
UnitCoder coder_of(CoderChoice choice) {
    return choice == CoderChoice::adaptive ? UnitCoder::adaptive : UnitCoder::rans;
}

// The target's chunk of a whole tensor's values or indices.
template <typename Value>
std::span<const Value> chunk_of(const std::vector<Value>& whole, const UnitTarget& target) {
    return std::span(whole).subspan(target.first, target.count);
}

// The rung's chunk as an encoder or decoder of a lossless unit takes it.
RungChunk rung_chunk(const QuantizedTensor& rung, const UnitTarget& target) {
    return {rung.bits, rung.steps, rung.channel_size, chunk_of(rung.indices, target),
            rung.row_length};
}

UnitVector level_vector(const std::string& name, const UnitTarget& target,
                        const QuantizedTensor& rung, CoderChoice choice) {
    const std::uint64_t first_channel = target.first / rung.channel_size;
    const std::uint64_t last_channel = (target.first + target.count - 1) / rung.channel_size;
    const std::span<const float> steps =
        std::span(rung.steps).subspan(first_channel, last_channel - first_channel + 1);
    return {name,
            encode_level_unit(target, rung, choice),
            {{"header", header_fields(UnitType::levels, rung.bits, 0, target, rung.channel_size,
                                      steps.size(), coder_of(choice))},
             {"steps", float_patterns(steps)},
             {"indices", join_integers(chunk_of(rung.indices, target))}}};
}

UnitVector refinement_vector(const std::string& name, const UnitTarget& target,
                             const QuantizedTensor& coarse, const QuantizedTensor& fine,
                             CoderChoice choice) {
    return {name,
            encode_refinement_unit(target, coarse, fine, choice),
            {{"header", header_fields(UnitType::refinement, fine.bits, coarse.bits, target, 0, 0,
                                      coder_of(choice))},
             {"coarse", join_integers(chunk_of(coarse.indices, target))},
             {"indices", join_integers(chunk_of(fine.indices, target))}}};
}

UnitVector lossless_vector(const std::string& name, const UnitTarget& target, StoredType type,
                           const std::vector<float>& values, const QuantizedTensor& top) {
    return {name,
            encode_lossless_unit(target, type, chunk_of(values, target), rung_chunk(top, target)),
            {{"header", header_fields(UnitType::lossless, exact_rung_bits, top.bits, target, 0, 0,
                                      UnitCoder::rans)},
             {"stored_as", int(type)},
             {"top",
              {{"bits", top.bits},
               {"channel_size", top.channel_size},
               {"steps", float_patterns(top.steps)},
               {"indices", join_integers(chunk_of(top.indices, target))}}},
             {"values", float_patterns(chunk_of(values, target))}}};
}

std::vector<UnitVector> encode_unit_vectors() {
    std::vector<UnitVector> vectors;

    // Exact: signed zeros, a subnormal, the largest finite float among
    // ordinary values, in the last 30 of 50.
    std::vector<float> exact_values = golden_weights(44, 1, 0.5f);
    exact_values.insert(exact_values.end(), {0.0f, -0.0f, 1e-40f, 3.4028235e38f, -1.0f, 65504.0f});
    const UnitTarget exact_target{5, exact_values.size(), 20, 30};
    vectors.push_back({"exact",
                       encode_exact_unit(exact_target, exact_values),
                       {{"header", header_fields(UnitType::exact, exact_rung_bits, 0, exact_target,
                                                 0, 0, UnitCoder::none)},
                        {"values", float_patterns(chunk_of(exact_values, exact_target))}}});

    // One step per tensor, ladder 4,8; a chunk that starts inside the tensor.
    const Tensor plain{"plain", {12, 25}, golden_weights(300, 2, 0.05f)};
    const auto plain_rungs = quantize_ladder(plain, LadderPlan::parse("4,8"));
    const UnitTarget plain_target{3, 300, 64, 200};
    vectors.push_back(
        level_vector("levels_rans_4", plain_target, plain_rungs[0], CoderChoice::fast));
    vectors.push_back(refinement_vector("refinement_rans_4_8", plain_target, plain_rungs[0],
                                        plain_rungs[1], CoderChoice::fast));
    vectors.push_back(refinement_vector("refinement_adaptive_4_8", plain_target, plain_rungs[0],
                                        plain_rungs[1], CoderChoice::adaptive));
    vectors.push_back(lossless_vector("lossless_float32_8", plain_target, StoredType::float32,
                                      plain.values, plain_rungs[1]));

    // One step per channel, channels of different spread so that the steps
    // are Rice-coded around their median (§2.1); float16 values for a
    // lossless unit of that type.
    Tensor channels{"channels", {16, 20}, golden_weights(320, 3, 1.0f)};
    for (std::size_t i = 0; i < channels.values.size(); ++i) {
        const float spread = 0.01f * float(1 + (i / 20 * 7) % 13);
        channels.values[i] = core::half_to_float(core::float_to_half(channels.values[i] * spread));
    }
    channels.stored_as = StoredType::float16;
    LadderPlan per_channel = LadderPlan::parse("4,8");
    per_channel.per_channel = true;
    const auto channel_rungs = quantize_ladder(channels, per_channel);
    const UnitTarget channel_target{0, 320, 30, 260};
    vectors.push_back(level_vector("levels_rans_per_channel_4", channel_target, channel_rungs[0],
                                   CoderChoice::fast));
    vectors.push_back(lossless_vector("lossless_float16_8", channel_target, StoredType::float16,
                                      channels.values, channel_rungs[1]));

    // A 12-bit base with the adaptive coder: indices of more than 5
    // significant bits travel split (§4.2).
    const Tensor wide{"wide", {16, 16}, golden_weights(256, 4, 0.1f)};
    const auto wide_rungs = quantize_ladder(wide, LadderPlan::parse("12,16"));
    vectors.push_back(level_vector("levels_adaptive_split_12", UnitTarget{1, 256, 0, 256},
                                   wide_rungs[0], CoderChoice::adaptive));
    return vectors;
}

// ---- package vectors --------------------------------------------------------

struct PackageVector {
    std::string name;  // tests/golden/packages/NAME, packed from tests/golden/models/NAME.onnx
    PackOptions options;
    // The manifest's, as docs/format.md §7.2 says it is written: a literal,
    // not the library's constant, so that a version bump must touch it.
    int format_version = 0;
    testing::Encoding encoding = testing::Encoding::float_raw;  // of the model's weights
};

std::vector<PackageVector> package_vectors() {
    std::vector<PackageVector> vectors;
    // Per channel, an exact rung and a direct top rung; chunks of 256 cut the
    // first layer in two.
    PackOptions exact;
    exact.ladder = LadderPlan::parse("4,8,exact");
    exact.ladder.per_channel = true;
    exact.ladder.min_quantized_elements = 200;
    exact.chunk_elements = 256;
    vectors.push_back({"mlp-4-8-exact", exact, 5});
    // float16 weights, mixed precision (a base of its own per tensor) and
    // the compact coder choice, which picks the adaptive coder on small chunks.
    PackOptions mixed;
    mixed.ladder = LadderPlan::parse("3,6,12");
    mixed.ladder.min_quantized_elements = 200;
    mixed.base_bits = {2, 0, 5, 0};
    mixed.coder_choice = CoderChoice::compact;
    vectors.push_back({"mlp-float16-mixed", mixed, 4, testing::Encoding::half_raw});
    // Two threads here, one when regenerating: packing promises the same
    // bytes with any number.
    for (PackageVector& vector : vectors) vector.options.threads = 2;
    return vectors;
}

// y = Gemm(Relu(Gemm(x, W1, b1)), W2, b2): 658 weights, W1 [24,16] and
// W2 [10,24] quantized.
std::string golden_model(testing::Encoding encoding) {
    testing::OnnxBuilder builder;
    builder.input("x", {-1, 16}).output("y", {-1, 10});
    builder.initializer("W1", {24, 16}, golden_weights(384, 11, 0.25f), encoding);
    builder.initializer("b1", {24}, golden_weights(24, 12, 0.1f), encoding);
    builder.initializer("W2", {10, 24}, golden_weights(240, 13, 0.2f), encoding);
    builder.initializer("b2", {10}, golden_weights(10, 14, 0.1f), encoding);
    testing::add_int_attribute(builder.node("Gemm", {"x", "W1", "b1"}, {"h"}), "transB", 1);
    builder.node("Relu", {"h"}, {"r"});
    testing::add_int_attribute(builder.node("Gemm", {"r", "W2", "b2"}, {"y"}), "transB", 1);
    return builder.bytes();
}

fs::path model_path(const PackageVector& vector) {
    return golden_dir() / "models" / (vector.name + ".onnx");
}

// SHA-256 of a model's weights as float32 little-endian, in model order.
std::string weights_sha256(const Model& model) {
    std::string bytes;
    for (const Tensor& tensor : model.weights) {
        for (const float value : tensor.values) {
            const std::uint32_t pattern = std::bit_cast<std::uint32_t>(value);
            for (int i = 0; i < 4; ++i) bytes += char(pattern >> (8 * i));
        }
    }
    return core::sha256_hex(bytes);
}

// Every rung a device can stop at, rebuilt from the package in `directory`:
// the weights' and the ONNX file's SHA-256.
ordered_json rebuilt_rungs(const fs::path& directory) {
    ordered_json rungs = ordered_json::array();
    for (const RungEntry& rung : read_manifest(directory).rungs) {
        const Model model = unpack_package(directory, rung.bits, rung.kind == RungKind::direct);
        rungs.push_back({{"kind", rung_kind_name(rung.kind)},
                         {"bits", rung.bits},
                         {"weights_sha256", weights_sha256(model)},
                         {"onnx_sha256", core::sha256_hex(serialize_onnx(model))}});
    }
    return rungs;
}

// The package's files by name with their SHA-256.
ordered_json package_files(const fs::path& directory) {
    std::set<std::string> names;
    for (const auto& entry : fs::directory_iterator(directory))
        names.insert(entry.path().filename().string());
    ordered_json files = ordered_json::object();
    for (const std::string& name : names)
        files[name] = core::sha256_hex(testing::slurp(directory / name));
    return files;
}

// The manifest with its generator ("bitinc VERSION") blanked: the version of
// the library is not the format's.
// (A plain search, not <regex>: GCC 12 warns falsely inside <regex> under
// the sanitizers' -O2.)
std::string without_generator(std::string manifest) {
    const std::string key = "\"generator\":";
    const std::size_t at = manifest.find(key);
    if (at == std::string::npos) return manifest;
    const std::size_t open = manifest.find('"', at + key.size());
    const std::size_t close = open == std::string::npos ? open : manifest.find('"', open + 1);
    if (close == std::string::npos) return manifest;
    return manifest.substr(0, at) + "\"generator\": \"\"" + manifest.substr(close + 1);
}

// ---- reading the bytes as docs/format.md lays them out ----------------------
// Independent of the library's parser, so that a change to the encoder and
// the decoder in lockstep still fails.

std::uint32_t little_endian_u32(std::span<const std::uint8_t> bytes, std::size_t offset) {
    return std::uint32_t(bytes[offset]) | std::uint32_t(bytes[offset + 1]) << 8 |
           std::uint32_t(bytes[offset + 2]) << 16 | std::uint32_t(bytes[offset + 3]) << 24;
}

std::uint16_t little_endian_u16(std::span<const std::uint8_t> bytes, std::size_t offset) {
    return std::uint16_t(bytes[offset] | bytes[offset + 1] << 8);
}

// CRC-32C bit by bit, as §2 defines it (reflected 0x1EDC6F41).
std::uint32_t spec_crc32c(std::span<const std::uint8_t> bytes) {
    std::uint32_t crc = 0xFFFFFFFFu;
    for (const std::uint8_t byte : bytes) {
        crc ^= byte;
        for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return crc ^ 0xFFFFFFFFu;
}

// The header of §2: the fixed bytes and the nine varints.
struct SpecHeader {
    std::uint8_t type = 0;
    std::uint8_t bits = 0;
    std::uint8_t parent_or_split = 0;
    std::uint32_t unit_bytes = 0;
    // tensor_index, tensor_elements, first, count, channel_size, limit,
    // step_count, coded_bytes, raw_bytes
    std::uint64_t fields[9] = {};
    std::size_t header_bytes = 0;  // H
    std::size_t step_bytes = 0;    // S
    std::uint64_t limit() const { return fields[5]; }
    std::uint64_t step_count() const { return fields[6]; }
    std::uint64_t coded_bytes() const { return fields[7]; }
    std::size_t coded_offset() const { return header_bytes + step_bytes; }
};

SpecHeader read_spec_header(std::span<const std::uint8_t> unit) {
    SpecHeader header;
    EXPECT_GE(unit.size(), 25u);
    EXPECT_EQ(as_text(unit.first(4)), "BITU");
    EXPECT_EQ(unit[4], 5) << "unit format version";
    header.type = unit[5];
    header.bits = unit[6];
    header.parent_or_split = unit[7];
    header.unit_bytes = little_endian_u32(unit, 8);
    EXPECT_EQ(header.unit_bytes, unit.size());
    std::size_t position = 12;
    for (std::uint64_t& field : header.fields) {
        for (int shift = 0;; shift += 7) {
            EXPECT_LT(shift, 35) << "a varint of more than 5 bytes";
            const std::uint8_t byte = unit[position++];
            field |= std::uint64_t(byte & 0x7F) << shift;
            if ((byte & 0x80) == 0) break;
        }
    }
    header.header_bytes = position;
    header.step_bytes = unit.size() - position - header.fields[7] - header.fields[8] - 4;
    EXPECT_EQ(little_endian_u32(unit, unit.size() - 4), spec_crc32c(unit.first(unit.size() - 4)));
    return header;
}

// The step section's patterns (§2.1): plain or Rice-coded around a reference.
std::vector<float> read_spec_steps(std::span<const std::uint8_t> section, std::uint64_t count,
                                   int& rice_parameter) {
    std::vector<float> steps;
    const auto step = [&](std::uint32_t pattern) {
        steps.push_back(std::bit_cast<float>(pattern << 16));
    };
    rice_parameter = -1;
    if (count == 1) {
        EXPECT_EQ(section.size(), 2u);
        step(little_endian_u16(section, 0));
    } else if (count >= 2 && section[0] == 255) {
        EXPECT_EQ(section.size(), 1 + 2 * count);
        for (std::size_t i = 0; i < count; ++i) step(little_endian_u16(section, 1 + 2 * i));
    } else if (count >= 2) {
        rice_parameter = section[0];
        EXPECT_LE(rice_parameter, 16);
        const std::int64_t reference = little_endian_u16(section, 1);
        std::size_t bit = 0;
        const auto next_bit = [&] {
            const int value = (section[3 + bit / 8] >> (bit % 8)) & 1;
            ++bit;
            return value;
        };
        for (std::uint64_t i = 0; i < count; ++i) {
            std::uint64_t quotient = 0;
            while (next_bit() == 1) ++quotient;
            std::uint64_t low = 0;
            for (int j = 0; j < rice_parameter; ++j) low |= std::uint64_t(next_bit()) << j;
            const std::uint64_t code = (quotient << rice_parameter) | low;
            const std::int64_t difference =
                code % 2 == 0 ? std::int64_t(code / 2) : -std::int64_t((code + 1) / 2);
            step(std::uint32_t(reference + difference));
        }
        EXPECT_EQ(3 + (bit + 7) / 8, section.size()) << "the Rice bits end in the last byte";
    } else {
        EXPECT_TRUE(section.empty());
    }
    return steps;
}

int bit_length(std::uint64_t value) {
    return std::bit_width(value);
}

// Checks a unit's bytes against docs/format.md §2 and the vector's header.
void check_unit_layout(std::span<const std::uint8_t> unit, const json& expected) {
    const SpecHeader header = read_spec_header(unit);
    const json& fields = expected["header"];
    EXPECT_EQ(header.type, fields["type"]);
    EXPECT_EQ(header.bits, fields["bits"]);
    const char* names[] = {"tensor_index", "tensor_elements", "first", "count", "channel_size"};
    for (int i = 0; i < 5; ++i) EXPECT_EQ(header.fields[i], fields[names[i]]) << names[i];
    EXPECT_EQ(header.step_count(), fields["step_count"]);
    const std::span<const std::uint8_t> payload = unit.subspan(header.coded_offset());
    switch (UnitType(header.type)) {
        case UnitType::exact: {
            EXPECT_EQ(header.parent_or_split, 0);
            EXPECT_EQ(header.coded_bytes(), 4 * header.fields[3]);
            std::vector<float> values;
            for (std::size_t i = 0; i < header.fields[3]; ++i)
                values.push_back(std::bit_cast<float>(little_endian_u32(payload, 4 * i)));
            EXPECT_EQ(float_patterns(values), expected["values"]);
            return;
        }
        case UnitType::levels:
        case UnitType::difference: {  // the same layout
            int rice_parameter = -1;
            const auto steps = read_spec_steps(unit.subspan(header.header_bytes, header.step_bytes),
                                               header.step_count(), rice_parameter);
            EXPECT_EQ(float_patterns(steps), expected["steps"]);
            if (header.step_count() > 8) {
                EXPECT_GE(rice_parameter, 0) << "Rice-coded steps";
            }
            std::int64_t largest = 0;
            for (const std::int32_t index : split_integers(expected["indices"]))
                largest = std::max<std::int64_t>(largest, std::abs(std::int64_t(index)));
            EXPECT_GE(header.limit(), std::uint64_t(largest));
            EXPECT_LE(header.limit(), (std::uint64_t{1} << (header.bits - 1)) - 1);
            const int split = UnitCoder(payload[0]) == UnitCoder::adaptive
                                  ? std::max(0, bit_length(header.limit()) - 5)
                                  : 0;
            EXPECT_EQ(header.parent_or_split, split);
            break;
        }
        case UnitType::refinement:
            EXPECT_EQ(header.parent_or_split, fields["parent_bits"]);
            break;
        case UnitType::lossless:
            EXPECT_EQ(header.parent_or_split, fields["parent_bits"]);
            EXPECT_EQ(payload[1], expected["stored_as"]);
            break;
    }
    EXPECT_EQ(payload[0], fields["coder"]);
}

// Checks a package's files against docs/format.md §7, reading the manifest
// as plain JSON and every unit's place in its rung file.
void check_package_layout(const fs::path& directory, int format_version) {
    const json manifest = json::parse(testing::slurp(directory / "manifest.json"));
    EXPECT_EQ(manifest["format"], "bitinc-package");
    EXPECT_EQ(manifest["format_version"], format_version);
    const std::string topology = testing::slurp(directory / "topology.onnx");
    EXPECT_EQ(manifest["topology"]["bytes"], topology.size());
    EXPECT_EQ(manifest["topology"]["sha256"], core::sha256_hex(topology));
    for (const json& rung : manifest["rungs"]) {
        const std::string kind = rung["kind"];
        SCOPED_TRACE(rung["file"].get<std::string>());
        const Bytes file = read_bytes(directory / rung["file"].get<std::string>());
        EXPECT_EQ(rung["bytes"], file.size());
        EXPECT_EQ(rung["sha256"], core::sha256_hex(as_text(file)));
        std::uint64_t offset = 0;
        if (kind == "base" || kind == "direct") {
            EXPECT_EQ(as_text(std::span(file).first(topology.size())), topology);
            offset = topology.size();
        }
        for (const json& entry : rung["units"]) {
            EXPECT_EQ(entry[3], offset) << "units lie back to back";
            const std::uint32_t length = entry[4];
            const auto unit = std::span(file).subspan(offset, length);
            const SpecHeader header = read_spec_header(unit);
            EXPECT_EQ(header.fields[0], entry[0]);
            EXPECT_EQ(header.fields[2], entry[1]);
            EXPECT_EQ(header.fields[3], entry[2]);
            EXPECT_EQ(little_endian_u32(unit, length - 4), entry[5]);
            EXPECT_EQ(core::sha256_hex(as_text(unit)), entry[6]);
            const bool quantized = manifest["tensors"][entry[0].get<std::size_t>()]["quantized"];
            const std::map<std::string, UnitType> quantized_type = {
                {"base", UnitType::levels},
                {"direct", UnitType::levels},
                {"refinement", UnitType::refinement},
                {"exact", UnitType::lossless}};
            EXPECT_EQ(UnitType(header.type), quantized ? quantized_type.at(kind) : UnitType::exact);
            offset += length;
        }
        EXPECT_EQ(offset, file.size());
    }
}

// ---- the tests ---------------------------------------------------------------

json expected_results() {
    return json::parse(testing::slurp(golden_dir() / "expected.json"));
}

TEST(GoldenVectors, UnitsDecodeToTheirExpectedResults) {
    const json expected = expected_results()["units"];
    ASSERT_EQ(expected.size(), encode_unit_vectors().size());
    for (const auto& [name, vector] : expected.items()) {
        SCOPED_TRACE(name);
        const Bytes unit = read_bytes(golden_dir() / "units" / (name + ".bin"));
        EXPECT_EQ(core::sha256_hex(as_text(unit)), vector["sha256"]);
        check_unit_layout(unit, vector);

        const UnitHeader header = read_unit_header(unit, name);
        const json& fields = vector["header"];
        EXPECT_EQ(int(header.type), fields["type"]);
        EXPECT_EQ(header.target.first, fields["first"]);
        EXPECT_EQ(header.target.count, fields["count"]);
        std::vector<std::int32_t> indices(header.target.count);
        std::vector<float> values(header.target.count);
        switch (header.type) {
            case UnitType::exact:
                decode_exact_unit(header, unit, values);
                EXPECT_EQ(float_patterns(values), vector["values"]);
                break;
            case UnitType::levels:
            case UnitType::difference:
                decode_level_unit(header, unit, indices);
                EXPECT_EQ(float_patterns(header.steps), vector["steps"]);
                EXPECT_EQ(join_integers<std::int32_t>(indices), vector["indices"]);
                break;
            case UnitType::refinement:
                decode_refinement_unit(header, unit, split_integers(vector["coarse"]), indices);
                EXPECT_EQ(join_integers<std::int32_t>(indices), vector["indices"]);
                break;
            case UnitType::lossless: {
                const json& top = vector["top"];
                const std::vector<float> steps = split_floats(top["steps"]);
                const std::vector<std::int32_t> top_indices = split_integers(top["indices"]);
                const RungChunk top_chunk{top["bits"].get<int>(), steps,
                                          top["channel_size"].get<std::uint64_t>(), top_indices};
                decode_lossless_unit(header, unit, top_chunk, values);
                EXPECT_EQ(float_patterns(values), vector["values"]);
                break;
            }
        }
    }
}

TEST(GoldenVectors, UnitsReencodeToTheCommittedBytes) {
    const json expected = expected_results()["units"];
    for (const UnitVector& vector : encode_unit_vectors()) {
        SCOPED_TRACE(vector.name);
        EXPECT_EQ(difference(as_text(vector.bytes),
                             testing::slurp(golden_dir() / "units" / (vector.name + ".bin"))),
                  "");
        // The inputs too: the expected results are the encoder's inputs.
        json inputs = json::parse(vector.expected.dump());
        json committed = expected.at(vector.name);
        committed.erase("sha256");
        EXPECT_EQ(inputs, committed);
    }
}

TEST(GoldenVectors, PackagesRebuildTheExpectedModels) {
    const json expected = expected_results()["packages"];
    ASSERT_EQ(expected.size(), package_vectors().size());
    for (const PackageVector& vector : package_vectors()) {
        SCOPED_TRACE(vector.name);
        const fs::path directory = golden_dir() / "packages" / vector.name;
        const json& results = expected.at(vector.name);
        check_package_layout(directory, vector.format_version);
        EXPECT_EQ(json::parse(package_files(directory).dump()), results["files"]);
        const json rungs = json::parse(rebuilt_rungs(directory).dump());
        EXPECT_EQ(rungs, results["rungs"]);
        // The exact rung gives back the source file itself.
        const std::string source_sha256 = core::sha256_hex(testing::slurp(model_path(vector)));
        for (const json& rung : rungs) {
            if (rung["kind"] == "exact") {
                EXPECT_EQ(rung["onnx_sha256"], source_sha256);
            }
        }
        EXPECT_TRUE(verify_package(directory).problems.empty());
    }
}

TEST(GoldenVectors, PackagesRepackToTheCommittedBytes) {
    testing::TemporaryDirectory scratch;
    for (const PackageVector& vector : package_vectors()) {
        SCOPED_TRACE(vector.name);
        const fs::path committed = golden_dir() / "packages" / vector.name;
        const fs::path packed = scratch.path() / vector.name;
        pack_model(model_path(vector), vector.options, packed);
        const ordered_json files = package_files(packed);
        EXPECT_EQ(files.size(), package_files(committed).size());
        for (const auto& [name, sha256] : files.items()) {
            std::string bytes = testing::slurp(packed / name);
            std::string committed_bytes = testing::slurp(committed / name);
            if (name == "manifest.json") {
                bytes = without_generator(bytes);
                committed_bytes = without_generator(committed_bytes);
            }
            EXPECT_EQ(difference(bytes, committed_bytes), "") << name;
        }
    }
}

// Rewrites every vector and expected.json with today's encoder. Run only
// with a format version bump (tests/golden/README.md).
TEST(GoldenVectors, Regenerate) {
    if (!regenerating()) GTEST_SKIP() << "set BITINC_REGENERATE_GOLDEN=1 to rewrite the vectors";
    ordered_json expected = {{"units", ordered_json::object()},
                             {"packages", ordered_json::object()}};
    fs::create_directories(golden_dir() / "units");
    for (UnitVector& vector : encode_unit_vectors()) {
        testing::spit(golden_dir() / "units" / (vector.name + ".bin"), as_text(vector.bytes));
        vector.expected["sha256"] = core::sha256_hex(as_text(vector.bytes));
        expected["units"][vector.name] = vector.expected;
    }
    fs::create_directories(golden_dir() / "models");
    for (const PackageVector& vector : package_vectors()) {
        testing::spit(model_path(vector), golden_model(vector.encoding));
        PackOptions options = vector.options;
        options.threads = 1;
        options.replace = true;
        const fs::path directory = golden_dir() / "packages" / vector.name;
        pack_model(model_path(vector), options, directory);
        expected["packages"][vector.name] = {{"files", package_files(directory)},
                                             {"rungs", rebuilt_rungs(directory)}};
    }
    testing::spit(golden_dir() / "expected.json", expected.dump(2) + "\n");
}

}  // namespace
}  // namespace bitinc
