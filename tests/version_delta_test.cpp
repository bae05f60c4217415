// Version deltas (issue 15): a new version packed against an earlier one's
// package, and a device holding the earlier version at any rung brought to
// the new one bit for bit.
#include <gtest/gtest.h>

#include <bitinc/bitinc.hpp>
#include <random>

#include "onnx_builder.hpp"
#include "test_support.hpp"

namespace bitinc {
namespace {

namespace fs = std::filesystem;
using testing::OnnxBuilder;
using testing::random_values;
using testing::slurp;
using testing::spit;
using testing::TemporaryDirectory;

struct Weights {
    std::vector<float> weight, bias, a, b, c;
};

Weights first_version() {
    return {random_values(64 * 300, 0.05f, 1), random_values(64, 0.1f, 2),
            random_values(32 * 40, 0.2f, 3), random_values(16 * 32, 1.5f, 4),
            random_values(24 * 32, 0.01f, 5)};
}

// What fine-tuning does: most weights move a little, some tensors not at
// all, one grows past the earlier grid's largest level, and the exact bias
// changes.
Weights second_version(const Weights& first) {
    Weights second = first;
    std::mt19937 random(7);
    std::normal_distribution<float> drift(0.0f, 1e-3f);
    for (float& value : second.weight) value *= 1.0f + drift(random);
    for (float& value : second.bias) value += 0.01f;
    for (std::size_t i = 0; i < second.b.size(); i += 3) second.b[i] *= 1.5f;  // past the grid
    // a and c unchanged
    return second;
}

fs::path write_model(const fs::path& path, const Weights& weights,
                     const std::string& last_name = "c") {
    OnnxBuilder builder;
    builder.input("x", {-1, 300}).output("y", {-1, 64});
    builder.initializer("weight", {64, 300}, weights.weight);
    builder.initializer("bias", {64}, weights.bias);
    builder.initializer("a", {32, 40}, weights.a);
    builder.initializer("b", {16, 32}, weights.b);
    builder.initializer(last_name, {24, 32}, weights.c);
    builder.node("Gemm", {"x", "weight", "bias"}, {"y"});
    fs::create_directories(path.parent_path());
    spit(path, builder.bytes());
    return path;
}

PackOptions ladder_options(bool per_channel) {
    PackOptions options;
    options.ladder = LadderPlan::parse("4,8,16");
    options.ladder.per_channel = per_channel;
    options.chunk_elements = 1000;  // several chunks, one straddling channels
    options.threads = 2;
    return options;
}

struct Versions {
    TemporaryDirectory directory;
    fs::path first_package, second_package, second_model;
    Manifest second;
};

void pack_versions(Versions& versions, const PackOptions& first_options, const Weights& first,
                   const Weights& second) {
    const fs::path& root = versions.directory.path();
    versions.first_package = root / "v1";
    versions.second_package = root / "v2";
    pack_model(write_model(root / "v1.onnx", first), first_options, versions.first_package);
    PackOptions options = first_options;
    options.previous_package = versions.first_package;
    versions.second_model = write_model(root / "v2.onnx", second);
    versions.second = pack_model(versions.second_model, options, versions.second_package).manifest;
}

// From every rung of the earlier version, the delta and the refinements
// above it give the new version's ladder rung bit for bit, per tensor and
// per channel, uniform and mixed.
TEST(VersionDelta, EveryStartingRungReachesEveryLaterRungExactly) {
    const Weights first = first_version();
    const Weights second = second_version(first);
    for (const bool per_channel : {false, true}) {
        for (const bool mixed : {false, true}) {
            SCOPED_TRACE(std::string(per_channel ? "per channel" : "per tensor") +
                         (mixed ? ", mixed" : ""));
            PackOptions options = ladder_options(per_channel);
            if (mixed) options.base_bits = {2, 0, 5, 8, 3};
            Versions versions;
            pack_versions(versions, options, first, second);
            const Manifest& manifest = versions.second;
            EXPECT_EQ(manifest.format_version, delta_format_version);
            ASSERT_EQ(manifest.deltas.size(), 3u);
            // The earlier bits carry over.
            EXPECT_EQ(manifest.mixed(), mixed);
            for (const DeltaEntry& delta : manifest.deltas) {
                const Model held = unpack_package(versions.first_package, delta.bits, false);
                EXPECT_EQ(model_weights_sha256(held), delta.from.weights_sha256);
                EXPECT_EQ(find_delta(manifest, held), std::size_t(&delta - manifest.deltas.data()));
                for (const int bits : manifest.ladder.bits) {
                    if (bits < delta.bits) {
                        EXPECT_THROW(unpack_from_previous(versions.second_package, held, bits),
                                     Error);
                        continue;
                    }
                    EXPECT_EQ(
                        serialize_onnx(unpack_from_previous(versions.second_package, held, bits)),
                        serialize_onnx(unpack_package(versions.second_package, bits, false)))
                        << "from " << delta.bits << " to " << bits << " bits";
                }
            }
            const VerifyReport report = verify_package(versions.second_package);
            EXPECT_TRUE(report.problems.empty()) << report.problems.front();
        }
    }
}

// Unchanged tensors cost a few bytes, the unchanged exact tensor nothing,
// and a delta is far smaller than the rung it replaces.
TEST(VersionDelta, WhatDidNotChangeCostsNearlyNothing) {
    Weights first = first_version();
    Weights second = first;
    for (float& value : second.c) value *= 1.01f;  // only c changes
    Versions versions;
    pack_versions(versions, ladder_options(true), first, second);
    const Manifest& manifest = versions.second;
    for (const DeltaEntry& delta : manifest.deltas) {
        std::uint64_t unchanged_bytes = 0, changed_bytes = 0, unchanged_units = 0;
        for (const UnitEntry& unit : delta.units) {
            const TensorEntry& tensor = manifest.tensors[unit.tensor];
            EXPECT_NE(tensor.name, "bias") << "the unchanged exact tensor is not sent";
            (tensor.name == "c" ? changed_bytes : unchanged_bytes) += unit.length;
            if (tensor.name != "c") ++unchanged_units;
        }
        // Unchanged quantized tensors: each unit its header, its steps, an
        // all-zero payload and its CRC (the steps let the device go on).
        EXPECT_LT(unchanged_bytes, 100 * unchanged_units) << delta.bits << " bits";
        const RungEntry* direct = manifest.find_rung(RungKind::direct, 16);
        ASSERT_NE(direct, nullptr);
        EXPECT_LT(delta.data.bytes * 10, direct->data.bytes) << delta.bits << " bits";
        EXPECT_GT(changed_bytes, 0u);
    }
    // Identical weights: the new version's steps are the earlier ones, so
    // every rung of the two packages is the same.
    Versions same;
    pack_versions(same, ladder_options(true), first, first);
    for (std::size_t r = 0; r < same.second.rungs.size(); ++r) {
        EXPECT_EQ(slurp(same.second_package / same.second.rungs[r].data.file),
                  slurp(same.first_package / same.second.rungs[r].data.file));
    }
}

// Over HTTP: a device holding the earlier version at a rung downloads the
// topology, the delta and the refinements above it, and gets the new
// version's rung bit for bit; without the earlier version it takes the
// whole ladder.
TEST(VersionDelta, FetchTakesOnlyTheDeltaAndTheRungsAboveIt) {
    const Weights first = first_version();
    Versions versions;
    pack_versions(versions, ladder_options(true), first, second_version(first));
    const Manifest& manifest = versions.second;
    const auto server = testing::start_package_server(versions.directory.path(), 0, {});
    const std::string url = server->url() + "/v2/";
    FetchOptions options;
    options.backoff_initial = 0.01;
    options.max_attempts = 3;
    for (const DeltaEntry& delta : manifest.deltas) {
        SCOPED_TRACE(std::to_string(delta.bits) + " bits held");
        options.previous = std::make_shared<const Model>(
            unpack_package(versions.first_package, delta.bits, false));
        const FetchResult fetched = fetch_package(url, options);
        EXPECT_EQ(serialize_onnx(fetched.model),
                  serialize_onnx(unpack_package(versions.second_package, 16, false)));
        ASSERT_FALSE(fetched.rungs.empty());
        EXPECT_TRUE(fetched.rungs.front().from_previous);
        EXPECT_EQ(fetched.rungs.front().bits, delta.bits);
        std::uint64_t expected =
            fetched.manifest_bytes + manifest.topology.bytes + delta.data.bytes;
        for (const RungEntry* rung : manifest.ladder_rungs(16))
            if (rung->bits > delta.bits) expected += rung->data.bytes;
        EXPECT_EQ(fetched.bytes_downloaded, expected);
    }
    // A model the package has no delta from: the ordinary ladder.
    options.previous = std::make_shared<const Model>(read_onnx_file(versions.second_model));
    const FetchResult whole = fetch_package(url, options);
    EXPECT_FALSE(whole.rungs.front().from_previous);
    EXPECT_EQ(serialize_onnx(whole.model),
              serialize_onnx(unpack_package(versions.second_package, 16, false)));
}

// The push decoder, given the model held, wants the topology and the delta
// (never a rung at or below the delta's bits), asks again for a delta file
// that arrived damaged, and reaches the new version's top bit for bit, with
// and without worker threads.
TEST(VersionDelta, PushDecoderTakesTheDeltaAndTheRungsAboveIt) {
    const Weights first = first_version();
    Versions versions;
    pack_versions(versions, ladder_options(true), first, second_version(first));
    const Manifest& manifest = versions.second;
    const std::string top = serialize_onnx(unpack_package(versions.second_package, 16, false));
    for (const int threads : {0, 2}) {
        for (const DeltaEntry& delta : manifest.deltas) {
            SCOPED_TRACE(std::to_string(delta.bits) + " bits held, " + std::to_string(threads) +
                         " threads");
            const Model held = unpack_package(versions.first_package, delta.bits, false);
            DecoderOptions options;
            options.previous = &held;
            options.decode_threads = threads;
            PackageDecoder decoder(options);
            bool spoiled = false;
            std::size_t damaged = 0;
            std::vector<int> ready_bits;
            for (int step = 0; step < 1000; ++step) {
                const DecoderEvent event = decoder.next_event();
                if (event.kind == DecoderEvent::Kind::done) break;
                if (event.kind == DecoderEvent::Kind::unit_damaged) ++damaged;
                if (event.kind == DecoderEvent::Kind::rung_ready) ready_bits.push_back(event.bits);
                if (event.kind != DecoderEvent::Kind::need_input) continue;
                ASSERT_FALSE(event.wanted.empty());
                for (const ByteRange& range : event.wanted) {
                    std::string bytes = slurp(versions.second_package / range.file);
                    const std::span span(reinterpret_cast<const std::uint8_t*>(bytes.data()),
                                         bytes.size());
                    if (range.file == manifest_file_name) {
                        decoder.push_manifest(span);
                        continue;
                    }
                    for (const RungEntry& rung : manifest.rungs) {
                        EXPECT_FALSE(rung.data.file == range.file && rung.bits <= delta.bits)
                            << range.file << " is below the delta";
                    }
                    if (range.file == delta.data.file && !spoiled) {
                        bytes[bytes.size() / 2] ^= 0x10;
                        spoiled = true;
                    }
                    // In two pieces, the second first.
                    const std::uint64_t middle = range.begin + (range.end - range.begin) / 2;
                    decoder.push(range.file, middle, span.subspan(middle, range.end - middle));
                    decoder.push(range.file, range.begin,
                                 span.subspan(range.begin, middle - range.begin));
                }
            }
            ASSERT_TRUE(decoder.delta().has_value());
            EXPECT_EQ(manifest.deltas[*decoder.delta()].bits, delta.bits);
            EXPECT_TRUE(spoiled);
            EXPECT_EQ(damaged, 1u);
            ASSERT_FALSE(ready_bits.empty());
            EXPECT_EQ(ready_bits.front(), delta.bits);
            EXPECT_EQ(serialize_onnx(decoder.snapshot()), top);
        }
    }
    // A model with no delta from it: the ordinary ladder.
    const Model other = read_onnx_file(versions.second_model);
    DecoderOptions options;
    options.previous = &other;
    PackageDecoder decoder(options);
    const std::string text = slurp(versions.second_package / manifest_file_name);
    decoder.push_manifest(
        std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
    EXPECT_FALSE(decoder.delta().has_value());
}

// A tensor renamed (or new) in the new version travels whole in the delta,
// as levels; the rest is still coded against the model held.
TEST(VersionDelta, ARenamedTensorTravelsWhole) {
    TemporaryDirectory directory;
    const Weights first = first_version();
    const PackOptions options = ladder_options(true);
    const fs::path first_package = directory.path() / "v1";
    pack_model(write_model(directory.path() / "v1.onnx", first), options, first_package);
    PackOptions second_options = options;
    second_options.previous_package = first_package;
    const fs::path second_package = directory.path() / "v2";
    const Manifest manifest =
        pack_model(write_model(directory.path() / "v2.onnx", second_version(first), "renamed"),
                   second_options, second_package)
            .manifest;
    ASSERT_FALSE(manifest.deltas.empty());
    for (const DeltaEntry& delta : manifest.deltas) {
        const Model held = unpack_package(first_package, delta.bits, false);
        std::string delta_bytes = slurp(second_package / delta.data.file);
        for (const UnitEntry& unit : delta.units) {
            const UnitHeader header = read_unit_header(unit_bytes(delta_bytes, unit), "delta");
            const bool renamed = manifest.tensors[unit.tensor].name == "renamed";
            EXPECT_EQ(header.type, renamed                                   ? UnitType::levels
                                   : manifest.tensors[unit.tensor].quantized ? UnitType::difference
                                                                             : UnitType::exact);
        }
        EXPECT_EQ(serialize_onnx(unpack_from_previous(second_package, held, 16)),
                  serialize_onnx(unpack_package(second_package, 16, false)));
    }
}

// A device refuses a delta for a model it does not hold, and a forged unit.
TEST(VersionDelta, RefusesAnotherModelAndForgedUnits) {
    const Weights first = first_version();
    Versions versions;
    pack_versions(versions, ladder_options(true), first, second_version(first));
    const Manifest& manifest = versions.second;
    // The new version itself, or the earlier one from its source: no delta.
    const Model other = read_onnx_file(versions.second_model);
    EXPECT_FALSE(find_delta(manifest, other).has_value());
    try {
        unpack_from_previous(versions.second_package, other, 16);
        ADD_FAILURE() << "no delta starts from the new version";
    } catch (const Error& error) {
        EXPECT_EQ(error.code(), ErrorCode::invalid_argument);
    }
    ModelAssembler assembler(manifest, slurp(versions.second_package / manifest.topology.file),
                             "test");
    try {
        assembler.hold_previous(other, 0, "test");
        ADD_FAILURE() << "held the wrong model";
    } catch (const Error& error) {
        EXPECT_EQ(error.code(), ErrorCode::untrusted);
    }
    // A payload byte changed and the CRC recomputed: the SHA-256 catches it.
    Manifest forged = manifest;
    DeltaEntry& delta = forged.deltas.back();
    std::string bytes = slurp(versions.second_package / delta.data.file);
    const UnitEntry& unit = delta.units.front();
    bytes[unit.offset + unit.length / 2] ^= 0x10;
    const auto* start = reinterpret_cast<const std::uint8_t*>(bytes.data()) + unit.offset;
    const std::uint32_t crc = core::crc32c({start, unit.length - 4});
    for (int i = 0; i < 4; ++i) bytes[unit.offset + unit.length - 4 + i] = char(crc >> (8 * i));
    delta.units.front().crc32c = crc;
    spit(versions.second_package / delta.data.file, bytes);
    spit(versions.second_package / manifest_file_name, serialize_manifest(forged));
    const Model held = unpack_package(versions.first_package, delta.bits, false);
    try {
        unpack_from_previous(versions.second_package, held, 16);
        ADD_FAILURE() << "a forged unit was applied";
    } catch (const Error& error) {
        EXPECT_EQ(error.code(), ErrorCode::corrupt_data);
        EXPECT_NE(std::string(error.what()).find("SHA-256"), std::string::npos) << error.what();
    }
    EXPECT_FALSE(verify_package(versions.second_package).problems.empty());
}

// The manifest's deltas survive writing and reading, and need format 7.
TEST(VersionDelta, ManifestDeltasRoundTripAndNeedFormatSeven) {
    const Weights first = first_version();
    Versions versions;
    pack_versions(versions, ladder_options(false), first, second_version(first));
    const std::string text = serialize_manifest(versions.second);
    const Manifest parsed = parse_manifest(text, "test");
    EXPECT_EQ(serialize_manifest(parsed), text);
    ASSERT_EQ(parsed.deltas.size(), 3u);
    EXPECT_EQ(parsed.deltas[1].bits, 8);
    EXPECT_EQ(parsed.deltas[1].from.weights_sha256, versions.second.deltas[1].from.weights_sha256);
    Manifest older = versions.second;
    older.format_version = 5;
    EXPECT_THROW(parse_manifest(serialize_manifest(older), "test"), Error);
    // A delta at bits the ladder does not have.
    Manifest odd = versions.second;
    odd.deltas[0].bits = 6;
    EXPECT_THROW(parse_manifest(serialize_manifest(odd), "test"), Error);
    // A delta leaving part of a quantized tensor out.
    Manifest partial = versions.second;
    partial.deltas[0].units.pop_back();
    EXPECT_THROW(parse_manifest(serialize_manifest(partial), "test"), Error);
}

// The difference unit on its own: signed differences up to 2^bits - 1
// round trip; a limit past that is refused.
TEST(VersionDelta, DifferenceUnitsRoundTripAndBoundTheirLimit) {
    const std::vector<float> steps{0.5f, 0.25f};
    std::vector<std::int32_t> differences(200);
    for (std::size_t i = 0; i < differences.size(); ++i) differences[i] = std::int32_t(i % 7) - 3;
    differences[17] = 255;  // the widest an 8-bit rung's differences get
    differences[90] = -255;
    const UnitTarget target{3, 200, 0, 200};
    for (const CoderChoice choice : {CoderChoice::fast, CoderChoice::adaptive}) {
        const std::vector<std::uint8_t> unit =
            encode_difference_unit(target, RungChunk{8, steps, 100, differences, 100}, choice);
        const UnitHeader header = read_unit_header(unit, "test");
        EXPECT_EQ(header.type, UnitType::difference);
        EXPECT_EQ(header.limit, 255u);
        std::vector<std::int32_t> decoded(200);
        decode_level_unit(header, unit, decoded);
        EXPECT_EQ(decoded, differences);
    }
    differences[5] = 256;  // past an 8-bit rung's differences
    const std::vector<std::uint8_t> too_wide =
        encode_difference_unit(target, RungChunk{8, steps, 100, differences, 100});
    EXPECT_THROW(read_unit_header(too_wide, "test"), Error);
}

}  // namespace
}  // namespace bitinc
