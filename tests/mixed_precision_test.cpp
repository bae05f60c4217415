// Mixed precision (issue 12): tensors with bit depths of their own at each
// rung, the budget that chooses them, and the exact path kept bit for bit.
#include <gtest/gtest.h>

#include <bitinc/bitinc.hpp>
#include <bitinc/calibration.hpp>
#include <bitinc/fetch.hpp>
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

// Four quantized matrices (one cut in chunks that straddle channels) and a
// bias that travels exactly.
fs::path write_model(const fs::path& directory) {
    OnnxBuilder builder;
    builder.input("x", {-1, 300}).output("y", {-1, 64});
    builder.initializer("weight", {64, 300}, random_values(64 * 300, 0.05f, 1));
    builder.initializer("bias", {64}, random_values(64, 0.1f, 2));
    builder.initializer("a", {32, 40}, random_values(32 * 40, 0.2f, 3));
    builder.initializer("b", {16, 32}, random_values(16 * 32, 1.5f, 4));
    builder.initializer("c", {24, 32}, random_values(24 * 32, 0.01f, 5));
    builder.node("Gemm", {"x", "weight", "bias"}, {"y"});
    const fs::path path = directory / "model.onnx";
    spit(path, builder.bytes());
    return path;
}

// Base bits by tensor: below, at, between and above the ladder's 4 and 8.
const std::vector<int> mixed_bases = {2, 0, 5, 8, 3};

PackOptions mixed_options(bool per_channel) {
    PackOptions options;
    options.ladder = LadderPlan::parse("4,8,16");
    options.ladder.per_channel = per_channel;
    options.chunk_elements = 1000;
    options.direct_bits = options.ladder.bits;
    options.threads = 2;
    options.base_bits = mixed_bases;
    return options;
}

// Every rung of every tensor, unpacked through the ladder, is the tensor
// rounded on its own ladder (its base bits, then max(base, rung)); the top
// equals the direct rung bit for bit.
TEST(MixedPrecision, EveryRungIsTheTensorsOwnLadderAndTheTopIsExact) {
    TemporaryDirectory directory;
    const fs::path model_path = write_model(directory.path());
    const Model source = read_onnx_file(model_path);
    for (const bool per_channel : {false, true}) {
        SCOPED_TRACE(per_channel ? "per channel" : "per tensor");
        const fs::path package = directory.path() / (per_channel ? "pc" : "pt");
        const PackOptions options = mixed_options(per_channel);
        const Manifest manifest = pack_model(model_path, options, package).manifest;
        EXPECT_EQ(manifest.format_version, 4);
        ASSERT_TRUE(manifest.mixed());
        EXPECT_EQ(manifest.tensors[0].bits, (std::vector<int>{2, 8, 16}));
        EXPECT_TRUE(manifest.tensors[1].bits.empty());  // the bias travels exactly
        EXPECT_EQ(manifest.tensors[2].bits, (std::vector<int>{5, 8, 16}));
        EXPECT_EQ(manifest.tensors[3].bits, (std::vector<int>{8, 8, 16}));
        EXPECT_EQ(manifest.tensors[4].bits, (std::vector<int>{3, 8, 16}));
        // The 4->8 rung does not carry the tensor whose base is already 8.
        for (const UnitEntry& unit : manifest.rungs[1].units) EXPECT_NE(unit.tensor, 3u);

        for (std::size_t rung = 0; rung < options.ladder.bits.size(); ++rung) {
            const int bits = options.ladder.bits[rung];
            const Model through_ladder = unpack_package(package, bits, false);
            for (std::size_t t = 0; t < source.weights.size(); ++t) {
                const Tensor& tensor = source.weights[t];
                if (!options.ladder.quantizes(tensor)) {
                    EXPECT_EQ(through_ladder.weights[t].values, tensor.values);
                    continue;
                }
                const LadderPlan own = options.ladder.with_base(mixed_bases[t]);
                const int tensor_bits = options.ladder.rung_bits_with_base(mixed_bases[t])[rung];
                const auto position = std::size_t(
                    std::find(own.bits.begin(), own.bits.end(), tensor_bits) - own.bits.begin());
                EXPECT_EQ(through_ladder.weights[t].values,
                          reconstruct(quantize_ladder(tensor, own)[position]))
                    << tensor.name << " after rung " << bits;
            }
            EXPECT_EQ(serialize_onnx(through_ladder),
                      serialize_onnx(unpack_package(package, bits, true)))
                << bits << " bits";
        }
        const VerifyReport report = verify_package(package);
        EXPECT_TRUE(report.problems.empty()) << report.problems.front();
    }
}

// Bases equal to the ladder's change nothing: a format-3 package, which
// devices of the previous release still read.
TEST(MixedPrecision, UniformBasesWriteTheOlderFormat) {
    TemporaryDirectory directory;
    const fs::path model_path = write_model(directory.path());
    PackOptions options = mixed_options(false);
    options.base_bits = {4, 0, 4, 4, 4};
    const Manifest manifest = pack_model(model_path, options, directory.path() / "p").manifest;
    EXPECT_EQ(manifest.format_version, 3);
    EXPECT_FALSE(manifest.mixed());
    EXPECT_EQ(slurp(directory.path() / "p" / "manifest.json").find("\"bits\":[4,8,16]}"),
              std::string::npos);
    options.base_bits = {17, 0, 4, 4, 4};
    EXPECT_THROW(pack_model(model_path, options, directory.path() / "q"), Error);
    EXPECT_FALSE(fs::exists(directory.path() / "q"));
}

TEST(MixedPrecision, ManifestBitsAreChecked) {
    TemporaryDirectory directory;
    const fs::path package = directory.path() / "p";
    pack_model(write_model(directory.path()), mixed_options(true), package);
    const std::string good = slurp(package / "manifest.json");
    const Manifest parsed = parse_manifest(good, "good");
    EXPECT_EQ(serialize_manifest(parsed), good);
    const auto replaced = [&](const std::string& from, const std::string& to) {
        std::string text = good;
        const auto at = text.find(from);
        EXPECT_NE(at, std::string::npos) << from;
        return at == std::string::npos ? text : text.replace(at, from.size(), to);
    };
    const std::vector<std::string> bad = {
        replaced("\"format_version\":4", "\"format_version\":3"),  // bits need format 4
        replaced("\"format_version\":4", "\"format_version\":8"),
        replaced("\"bits\":[2,8,16]", "\"bits\":[2,8]"),
        replaced("\"bits\":[2,8,16]", "\"bits\":[2,8,12]"),
        replaced("\"bits\":[2,8,16]", "\"bits\":[8,2,16]"),
        replaced("\"bits\":[2,8,16]", "\"bits\":[1,8,16]"),
        replaced("\"bits\":[2,8,16]", "\"bits\":[2,\"8\",16]"),
        replaced("\"bits\":[2,8,16]", "\"bits\":{}"),
        // The tensor at 8 bits from its base would need no 4->8 unit.
        replaced("\"bits\":[8,8,16]", "\"bits\":[4,8,16]"),
        // ...and one that rises there needs one.
        replaced("\"bits\":[5,8,16]", "\"bits\":[8,8,16]"),
        replaced("\"quantized\":false}", "\"quantized\":false,\"bits\":[4,8,16]}"),
    };
    for (std::size_t i = 0; i < bad.size(); ++i)
        EXPECT_THROW(parse_manifest(bad[i], "bad"), Error) << "mutation " << i;
    try {
        parse_manifest(bad[1], "new.json");
        FAIL() << "format 8 was accepted";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("update bitinc"), std::string::npos)
            << error.what();
    }
}

// A unit whose header claims the ladder's bits instead of its tensor's is
// refused by the device.
TEST(MixedPrecision, AssemblerChecksEachTensorsOwnBits) {
    TemporaryDirectory directory;
    const fs::path package = directory.path() / "p";
    pack_model(write_model(directory.path()), mixed_options(false), package);
    Manifest manifest = read_manifest(package);
    // Pretend tensor 0 followed the ladder: its 2-bit base units no longer fit.
    manifest.tensors[0].bits = {4, 8, 16};
    ModelAssembler assembler(manifest, slurp(package / manifest.topology.file), "test");
    const std::string base = slurp(package / manifest.rungs[0].data.file);
    for (std::size_t u = 0; u < manifest.rungs[0].units.size(); ++u) {
        const UnitEntry& unit = manifest.rungs[0].units[u];
        if (unit.tensor != 0) continue;
        EXPECT_THROW(assembler.apply_unit(0, u, unit_bytes(base, unit), "test"), Error);
    }
}

// The allocation survives pack -> serve -> fetch: the device reads each
// tensor's bits from the manifest and reaches every rung exactly.
TEST(MixedPrecision, AllocationSurvivesServeAndFetch) {
    TemporaryDirectory directory;
    const fs::path root = directory.path() / "www";
    const PackOptions options = mixed_options(true);
    const Manifest packed =
        pack_model(write_model(directory.path()), options, root / "model").manifest;
    const auto server = testing::start_package_server(root, 0, {});
    FetchOptions fetch;
    fetch.backoff_initial = 0.01;
    fetch.max_attempts = 3;
    fetch.keep_model = true;
    const FetchResult top = fetch_package(server->url() + "/model/", fetch);
    for (std::size_t t = 0; t < packed.tensors.size(); ++t)
        EXPECT_EQ(top.manifest.tensors[t].bits, packed.tensors[t].bits);
    EXPECT_EQ(serialize_onnx(top.model), serialize_onnx(unpack_package(root / "model", 16, true)));
    EXPECT_EQ(top.reached_bits, 16);
    fetch.until_bits = 4;  // the base: each tensor at its own base bits
    const FetchResult base = fetch_package(server->url() + "/model/", fetch);
    EXPECT_EQ(serialize_onnx(base.model), serialize_onnx(unpack_package(root / "model", 4, false)));
    // The base rung is reached, though one tensor's base is 2 bits: a
    // device that asked for it is not degraded.
    EXPECT_EQ(base.reached_bits, 4);
    EXPECT_TRUE(base.degraded_tensors.empty());
    fetch.until_bits = 8;
    EXPECT_EQ(serialize_onnx(fetch_package(server->url() + "/model/", fetch).model),
              serialize_onnx(unpack_package(root / "model", 8, false)));
}

TEST(MixedPrecision, BudgetTexts) {
    EXPECT_EQ(parse_pack_budget("800000").bytes, 800000u);
    EXPECT_EQ(parse_pack_budget("800kB").bytes, 800000u);
    EXPECT_EQ(parse_pack_budget("1.5MB").bytes, 1500000u);
    EXPECT_EQ(parse_pack_budget("2MiB").bytes, 2097152u);
    EXPECT_EQ(parse_pack_budget("512B").bytes, 512u);
    EXPECT_DOUBLE_EQ(parse_pack_budget("0.2x").ratio, 0.2);
    EXPECT_EQ(parse_pack_budget("0.2x").bytes, 0u);
    EXPECT_TRUE(parse_pack_budget("0.2x").refinements.empty());
    const PackBudget rungs = parse_pack_budget("0.19x,2MB,0.5x");
    EXPECT_DOUBLE_EQ(rungs.ratio, 0.19);
    ASSERT_EQ(rungs.refinements.size(), 2u);
    EXPECT_EQ(rungs.refinements[0].bytes, 2000000u);
    EXPECT_DOUBLE_EQ(rungs.refinements[1].ratio, 0.5);
    for (const char* bad : {"0.2x,", ",0.2x", "0.2x,,0.3x", "0.2x, 0.3x", "0.2x,0"}) {
        EXPECT_THROW(parse_pack_budget(bad), Error) << "'" << bad << "'";
    }
    for (const char* bad : {"", "x", "0x", "0", "-5", "+5", "1e6", "inf", "nanx", "1.2.3", "12 kB",
                            "12parsecs", "0.2X", "0.0001B", ".5x"}) {
        EXPECT_THROW(parse_pack_budget(bad), Error) << "'" << bad << "'";
    }
}

double total_loss(const std::vector<std::vector<BitChoice>>& choices,
                  const std::vector<std::size_t>& picked) {
    double loss = 0;
    for (std::size_t t = 0; t < choices.size(); ++t) loss += choices[t][picked[t]].loss_increase;
    return loss;
}

std::uint64_t total_bytes(const std::vector<std::vector<BitChoice>>& choices,
                          const std::vector<std::size_t>& picked) {
    std::uint64_t bytes = 0;
    for (std::size_t t = 0; t < choices.size(); ++t) bytes += choices[t][picked[t]].bytes;
    return bytes;
}

TEST(MixedPrecision, AllocationSpendsBytesWhereTheyBuyTheMostLoss) {
    // Two tensors of equal size: upgrading the sensitive one is worth ten
    // times more; the budget pays for one upgrade only.
    const std::vector<std::vector<BitChoice>> choices = {
        {{2, 100, 0.05}, {4, 200, 0.01}},
        {{2, 100, 0.50}, {4, 200, 0.10}},
    };
    const std::vector<std::size_t> picked = allocate_bits(choices, 300);
    EXPECT_EQ(picked, (std::vector<std::size_t>{0, 1}));
    EXPECT_EQ(allocate_bits(choices, 400), (std::vector<std::size_t>{1, 1}));
    EXPECT_EQ(allocate_bits(choices, 200), (std::vector<std::size_t>{0, 0}));
    EXPECT_THROW(allocate_bits(choices, 199), Error);

    // Random instances: the budget always holds and no single change that
    // fits lowers the loss.
    std::mt19937 generator(12);
    for (int instance = 0; instance < 200; ++instance) {
        std::vector<std::vector<BitChoice>> random_choices(1 + generator() % 5);
        std::uint64_t smallest = 0, largest = 0;
        for (auto& tensor : random_choices) {
            std::uint64_t bytes = 10 + generator() % 50;
            double loss = 1.0 + double(generator() % 1000) / 100;
            for (int bits = 2; bits <= 8; ++bits) {
                tensor.push_back({bits, bytes, loss});
                bytes += 1 + generator() % 40;
                loss *= double(generator() % 100) / 100;  // sometimes no better
            }
            smallest += tensor.front().bytes;
            largest += tensor.back().bytes;
        }
        const std::uint64_t budget = smallest + generator() % (largest - smallest + 1);
        const std::vector<std::size_t> chosen = allocate_bits(random_choices, budget);
        ASSERT_LE(total_bytes(random_choices, chosen), budget);
        const double loss = total_loss(random_choices, chosen);
        for (std::size_t t = 0; t < random_choices.size(); ++t) {
            for (std::size_t i = 0; i < random_choices[t].size(); ++i) {
                std::vector<std::size_t> changed = chosen;
                changed[t] = i;
                if (total_bytes(random_choices, changed) <= budget) {
                    EXPECT_GE(total_loss(random_choices, changed), loss - 1e-12);
                }
            }
        }
    }
}

// The budget on a real classifier (needs Fashion-MNIST): the base fits it,
// the manifest carries the chosen bits, and a tighter budget gives a
// smaller base; too small a budget is a clear error.
TEST(MixedPrecision, BudgetIsRespectedOnACalibratedPackage) {
    if (!testing::fashion_mnist_available())
        GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    TemporaryDirectory directory;
    const fs::path model = testing::source_dir() / "models" / "small-cnn.onnx";
    PackOptions options;
    options.ladder = LadderPlan::parse("4,8,16");
    options.ladder.per_channel = true;
    options.threads = 1;
    PackBudget budget;
    budget.ratio = 0.18;
    budget.calibration.images = 64;
    budget.calibration.engine_threads = 1;
    options.budget = budget;
    PackCalibration calibration;  // with the accuracy point, on its mixed ladder
    calibration.images = 64;
    calibration.engine_threads = 1;
    options.calibration = calibration;
    const PackResult result = pack_model(model, options, directory.path() / "a");
    ASSERT_TRUE(result.allocation.has_value());
    const BitAllocation& allocation = *result.allocation;
    const Manifest& manifest = result.manifest;
    EXPECT_EQ(allocation.budget_bytes, std::uint64_t(0.18 * double(allocation.reference_bytes)));
    EXPECT_LE(manifest.rungs[0].data.bytes, allocation.budget_bytes);
    EXPECT_EQ(manifest.rungs[0].data.bytes, allocation.base_bytes);
    EXPECT_LT(allocation.base_bytes, allocation.uniform_base_bytes);  // the 4-bit base is 0.2 x
    for (std::size_t t = 0; t < manifest.tensors.size(); ++t) {
        if (manifest.tensors[t].quantized) {
            EXPECT_EQ(manifest.tensor_bits(t, 0), allocation.base_bits[t]);
        } else {
            EXPECT_EQ(allocation.base_bits[t], 0);
        }
    }
    const VerifyReport report = verify_package(directory.path() / "a");
    EXPECT_TRUE(report.problems.empty()) << report.problems.front();

    options.calibration.reset();
    options.budget->ratio = 0;
    options.budget->bytes = allocation.base_bytes - 2000;
    const PackResult tighter = pack_model(model, options, directory.path() / "b");
    EXPECT_LE(tighter.manifest.rungs[0].data.bytes, allocation.base_bytes - 2000);

    options.budget->bytes = 5000;  // below 2 bits everywhere
    EXPECT_THROW(pack_model(model, options, directory.path() / "c"), Error);
    EXPECT_FALSE(fs::exists(directory.path() / "c"));
}

// A budget on the middle rung (needs Fashion-MNIST): each tensor gets bits
// of its own there within the allowance, the rung above lifts every tensor
// to at least the ladder's bits, the top stays exact, and allowances that
// do not grow rung by rung, or more of them than rungs below the top, are
// refused before anything is written.
TEST(MixedPrecision, BudgetedMiddleRungGivesEachTensorItsOwnBits) {
    if (!testing::fashion_mnist_available())
        GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    TemporaryDirectory directory;
    const fs::path model = testing::source_dir() / "models" / "small-cnn.onnx";
    PackOptions options;
    options.ladder = LadderPlan::parse("4,6,8,16");
    options.ladder.per_channel = true;
    options.direct_bits = {16};
    options.threads = 1;
    PackBudget budget = parse_pack_budget("0.18x,0.26x");
    budget.calibration.images = 64;
    budget.calibration.engine_threads = 1;
    options.budget = budget;
    const PackResult result = pack_model(model, options, directory.path() / "a");
    ASSERT_TRUE(result.allocation.has_value());
    const BitAllocation& allocation = *result.allocation;
    const Manifest& manifest = result.manifest;
    ASSERT_EQ(allocation.refinements.size(), 1u);
    const BitAllocation::Refinement& middle = allocation.refinements[0];
    EXPECT_EQ(middle.budget_bytes, std::uint64_t(0.26 * double(allocation.reference_bytes)));
    EXPECT_EQ(manifest.rungs[0].data.bytes + manifest.rungs[1].data.bytes, middle.bytes);
    EXPECT_LE(middle.bytes, middle.budget_bytes);
    EXPECT_LE(manifest.rungs[0].data.bytes, allocation.budget_bytes);
    bool any_quantized = false;
    for (std::size_t t = 0; t < manifest.tensors.size(); ++t) {
        if (!manifest.tensors[t].quantized) {
            EXPECT_TRUE(allocation.rung_bits[t].empty());
            continue;
        }
        any_quantized = true;
        const std::vector<int>& bits = allocation.rung_bits[t];
        ASSERT_EQ(bits.size(), 4u);
        EXPECT_EQ(manifest.tensors[t].bits, bits) << manifest.tensors[t].name;
        EXPECT_EQ(bits[0], allocation.base_bits[t]);
        EXPECT_LE(bits[0], bits[1]);
        EXPECT_EQ(bits[2], std::max(bits[1], 8));
        EXPECT_EQ(bits[3], 16);
    }
    EXPECT_TRUE(any_quantized);
    // The exact path is unchanged: through the ladder equals direct.
    EXPECT_EQ(serialize_onnx(unpack_package(directory.path() / "a", 16, false)),
              serialize_onnx(unpack_package(directory.path() / "a", 16, true)));
    const VerifyReport report = verify_package(directory.path() / "a");
    EXPECT_TRUE(report.problems.empty()) << report.problems.front();

    // A tighter middle allowance buys no more bytes.
    options.budget->refinements[0].ratio = 0.22;
    const PackResult tighter = pack_model(model, options, directory.path() / "b");
    EXPECT_LE(tighter.manifest.rungs[0].data.bytes + tighter.manifest.rungs[1].data.bytes,
              std::uint64_t(0.22 * double(allocation.reference_bytes)));

    options.budget->refinements[0].ratio = 0.17;  // below the base's own allowance
    EXPECT_THROW(pack_model(model, options, directory.path() / "c"), Error);
    options.budget->refinements.push_back({0, 0.3});
    options.budget->refinements.push_back({0, 0.4});  // 4,6,8,16 has 3 rungs below its top
    try {
        pack_model(model, options, directory.path() / "c");
        ADD_FAILURE() << "four allowances for three rungs were accepted";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("below its top"), std::string::npos)
            << error.what();
    }
    EXPECT_FALSE(fs::exists(directory.path() / "c"));
}

}  // namespace
}  // namespace bitinc
