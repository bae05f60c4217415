#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>

#include "bitinc/codec.hpp"
#include "bitinc/coder.hpp"
#include "bitinc/error.hpp"
#include "core/crc32c.hpp"
#include "core/half_float.hpp"
#include "test_support.hpp"

namespace bitinc {
namespace {

Tensor trained_tensor() {
    const Model model = read_onnx_file(testing::source_dir() / "models" / "small-cnn.onnx");
    const Tensor* largest = &model.weights.front();
    for (const Tensor& tensor : model.weights) {
        if (tensor.element_count() > largest->element_count()) largest = &tensor;
    }
    return *largest;
}

// Decodes a rung from its units the way a device would: base levels first,
// then each refinement applied in place.
std::vector<std::int32_t> decode_ladder(
    const std::vector<std::vector<std::vector<std::uint8_t>>>& rung_units, std::size_t elements) {
    std::vector<std::int32_t> indices(elements);
    for (std::size_t rung = 0; rung < rung_units.size(); ++rung) {
        for (const auto& unit : rung_units[rung]) {
            const UnitHeader header = read_unit_header(unit, "test");
            const std::span<std::int32_t> chunk(indices.data() + header.target.first,
                                                header.target.count);
            if (rung == 0) {
                decode_level_unit(header, unit, chunk);
            } else {
                decode_refinement_unit(header, unit, chunk, chunk);
            }
        }
    }
    return indices;
}

TEST(Unit, LadderUnitsReproduceTheDirectTopRung) {
    const Tensor tensor = trained_tensor();
    for (const bool per_channel : {false, true}) {
        for (const char* text : {"4,8,16", "8,16", "2,32", "16"}) {
            LadderPlan plan = LadderPlan::parse(text);
            plan.per_channel = per_channel;
            const auto rungs = quantize_ladder(tensor, plan);
            // Odd-sized chunks so that chunks start and end inside channels.
            const auto chunks = plan_chunks(7, tensor.element_count(), 1000);
            ASSERT_GT(chunks.size(), 10u);
            std::vector<std::vector<std::vector<std::uint8_t>>> units(rungs.size());
            for (const UnitTarget& chunk : chunks) {
                units[0].push_back(encode_level_unit(chunk, rungs[0]));
                for (std::size_t r = 1; r < rungs.size(); ++r) {
                    units[r].push_back(encode_refinement_unit(chunk, rungs[r - 1], rungs[r]));
                }
            }
            SCOPED_TRACE(std::string(text) + (per_channel ? " per-channel" : ""));
            EXPECT_EQ(decode_ladder(units, tensor.element_count()), rungs.back().indices);
            // The steps in the base units are the base rung's.
            const UnitHeader first = read_unit_header(units[0][0], "test");
            EXPECT_EQ(first.steps.front(), rungs[0].steps.front());
            EXPECT_EQ(first.target.tensor_index, 7u);
            // A direct top-rung transmission decodes to the same indices too.
            std::vector<std::int32_t> direct(tensor.element_count());
            for (const UnitTarget& chunk : chunks) {
                const auto unit = encode_level_unit(chunk, rungs.back());
                const UnitHeader header = read_unit_header(unit, "direct");
                decode_level_unit(header, unit,
                                  std::span(direct).subspan(chunk.first, chunk.count));
            }
            EXPECT_EQ(direct, rungs.back().indices);
        }
    }
}

TEST(Unit, ExactUnitsKeepEveryBit) {
    const std::vector<float> values = {1.5f, -0.0f, std::numeric_limits<float>::denorm_min(), 3e38f,
                                       -7.25f};
    const auto unit = encode_exact_unit({2, values.size(), 1, 3}, values);
    const UnitHeader header = read_unit_header(unit, "exact");
    EXPECT_EQ(header.type, UnitType::exact);
    std::vector<float> out(3);
    decode_exact_unit(header, unit, out);
    EXPECT_EQ(std::memcmp(out.data(), values.data() + 1, 12), 0);
}

TEST(Unit, EmptyTensorsHaveAUnit) {
    const auto chunks = plan_chunks(0, 0);
    ASSERT_EQ(chunks.size(), 1u);
    const auto unit = encode_exact_unit(chunks[0], {});
    EXPECT_EQ(read_unit_header(unit, "empty").target.count, 0u);
}

std::vector<std::uint8_t> sample_level_unit() {
    const Tensor tensor = trained_tensor();
    LadderPlan plan = LadderPlan::parse("8");
    plan.per_channel = true;
    const auto rung = quantize_top(tensor, plan);
    return encode_level_unit(plan_chunks(0, tensor.element_count()).front(), rung);
}

void reseal(std::vector<std::uint8_t>& unit) {
    const std::uint32_t crc = core::crc32c({unit.data(), unit.size() - 4});
    for (int i = 0; i < 4; ++i)
        unit[unit.size() - 4 + std::size_t(i)] = std::uint8_t(crc >> (8 * i));
}

TEST(Unit, EveryFlippedBitIsCaught) {
    const auto good = sample_level_unit();
    std::mt19937 generator(3);
    for (int trial = 0; trial < 300; ++trial) {
        auto bad = good;
        const std::size_t at = generator() % bad.size();
        bad[at] ^= std::uint8_t(1u << (generator() % 8));
        EXPECT_THROW(read_unit_header(bad, "flipped"), Error) << "byte " << at;
    }
}

TEST(Unit, TruncationIsCaught) {
    const auto good = sample_level_unit();
    for (std::size_t length = 0; length < good.size(); length += 1 + length / 3) {
        EXPECT_THROW(read_unit_header(std::span(good).first(length), "cut"), Error) << length;
    }
    EXPECT_EQ(unit_length(good), good.size());
    EXPECT_EQ(unit_length(std::span(good).first(8)), 0u);
}

// The unit with its header's varint fields (§2) replaced by `fields`, its
// length and CRC made to match, so that only the header check can object.
std::vector<std::uint8_t> with_header_fields(const std::vector<std::uint8_t>& unit,
                                             const std::vector<std::uint64_t>& fields) {
    const UnitHeader header = read_unit_header(unit, "good");
    std::vector<std::uint8_t> out(unit.begin(), unit.begin() + unit_fixed_header_bytes);
    for (std::uint64_t value : fields) {
        for (; value >= 0x80; value >>= 7) out.push_back(std::uint8_t(value | 0x80));
        out.push_back(std::uint8_t(value));
    }
    out.insert(out.end(), unit.begin() + header.header_bytes, unit.end());
    const auto length = std::uint32_t(out.size());
    for (int i = 0; i < 4; ++i) out[8 + std::size_t(i)] = std::uint8_t(length >> (8 * i));
    reseal(out);
    return out;
}

TEST(Unit, InconsistentHeadersAreRefusedEvenWithAValidChecksum) {
    const auto good = sample_level_unit();
    const UnitHeader header = read_unit_header(good, "good");
    const std::vector<std::uint64_t> fields = {header.target.tensor_index,
                                               header.target.tensor_elements,
                                               header.target.first,
                                               header.target.count,
                                               header.channel_size,
                                               header.limit,
                                               header.steps.size(),
                                               header.coded_bytes,
                                               header.raw_bytes};
    // Writing the same fields back gives the same unit: the test's encoding
    // is the format's.
    ASSERT_EQ(with_header_fields(good, fields), good);
    struct ByteTamper {
        std::size_t offset;
        std::uint8_t value;
        const char* what;
    };
    for (const ByteTamper& tamper :
         {ByteTamper{4, 9, "version"}, ByteTamper{5, 7, "type"}, ByteTamper{6, 40, "bits"},
          ByteTamper{6, 1, "bits"}, ByteTamper{7, 3, "parent bits"}}) {
        auto bad = good;
        bad[tamper.offset] = tamper.value;
        reseal(bad);
        EXPECT_THROW(read_unit_header(bad, "tampered"), Error) << tamper.what;
    }
    struct FieldTamper {
        std::size_t field;
        std::uint64_t value;
        const char* what;
    };
    for (const FieldTamper& tamper :
         {FieldTamper{1, (std::uint64_t{1} << 31) + 1, "tensor size"},
          FieldTamper{2, header.target.tensor_elements, "first"},
          FieldTamper{3, header.target.count + 1, "count"},
          FieldTamper{4, header.target.tensor_elements + 1, "channel size"},
          FieldTamper{5, 0xFFFF, "limit"}, FieldTamper{6, 0xFF, "step count"},
          FieldTamper{6, 0, "no steps"}, FieldTamper{7, header.coded_bytes + 1, "coded length"},
          FieldTamper{8, 0xFFFFFFFFu, "raw length"},
          FieldTamper{0, std::uint64_t{1} << 32, "a field beyond 32 bits"}}) {
        auto changed = fields;
        changed[tamper.field] = tamper.value;
        EXPECT_THROW(read_unit_header(with_header_fields(good, changed), "tampered"), Error)
            << tamper.what;
    }
    // A varint in a longer form than needed, and a header cut short.
    auto overlong = good;
    overlong.insert(overlong.begin() + unit_fixed_header_bytes, 0x80);  // tensor index 0 as 80 00
    overlong[unit_fixed_header_bytes + 1] = 0x00;
    ASSERT_EQ(header.target.tensor_index, 0u);
    const auto overlong_length = std::uint32_t(overlong.size());
    for (int i = 0; i < 4; ++i)
        overlong[8 + std::size_t(i)] = std::uint8_t(overlong_length >> (8 * i));
    reseal(overlong);
    EXPECT_THROW(read_unit_header(overlong, "overlong"), Error);
    std::vector<std::uint8_t> cut(good.begin(), good.begin() + unit_fixed_header_bytes + 4);
    for (int i = 0; i < 4; ++i) cut.push_back(0x80);
    const auto cut_length = std::uint32_t(cut.size());
    for (int i = 0; i < 4; ++i) cut[8 + std::size_t(i)] = std::uint8_t(cut_length >> (8 * i));
    reseal(cut);
    EXPECT_THROW(read_unit_header(cut, "cut"), Error);
}

// Steps (§2.1): one step is its two bytes; many are Rice-coded around their
// median, smaller than two bytes each, and come back exactly; a damaged
// step section is an error, not other steps.
TEST(Unit, StepsAreCodedCompactlyAndComeBackExactly) {
    std::mt19937 generator(21);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (const std::size_t channels : {1, 2, 3, 64, 1000}) {
        SCOPED_TRACE(channels);
        Tensor tensor;
        tensor.name = "channels";
        tensor.shape = {std::int64_t(channels), 20};
        tensor.values.resize(channels * 20);
        // Channel spreads over about two octaves, and one channel of zeros.
        for (std::size_t i = 0; i < tensor.values.size(); ++i)
            tensor.values[i] =
                i / 20 == 1 ? 0.0f : normal(generator) * std::exp2(float((i / 20) % 7) / 3.0f);
        LadderPlan plan = LadderPlan::parse("4");
        plan.per_channel = true;
        const auto rung = quantize_top(tensor, plan);
        const auto unit = encode_level_unit(plan_chunks(0, tensor.element_count()).front(), rung);
        const UnitHeader header = read_unit_header(unit, "steps");
        ASSERT_EQ(header.steps.size(), channels);
        EXPECT_TRUE(std::equal(header.steps.begin(), header.steps.end(), rung.steps.begin()));
        if (channels == 1) {
            EXPECT_EQ(header.step_bytes, 2u);
        }
        if (channels >= 64) {
            EXPECT_LT(header.step_bytes, 2 * channels * 3 / 4);
        }
        if (channels < 64) continue;
        const std::size_t section = header.header_bytes;
        ASSERT_LE(unit[section], 16) << "Rice-coded steps expected";
        for (const std::uint8_t parameter : {std::uint8_t(17), std::uint8_t(0xFE)}) {
            auto bad = unit;
            bad[section] = parameter;
            reseal(bad);
            EXPECT_THROW(read_unit_header(bad, "bad coding"), Error);
        }
        // Every bit of the section flipped in turn: an error, or steps that
        // differ (a flip can turn one valid code into another), never a crash.
        for (std::size_t at = section + 3; at < header.coded_offset(); ++at) {
            auto bad = unit;
            bad[at] ^= 0x01;
            reseal(bad);
            try {
                const UnitHeader damaged = read_unit_header(bad, "flipped");
                EXPECT_FALSE(
                    std::equal(damaged.steps.begin(), damaged.steps.end(), header.steps.begin()));
            } catch (const Error&) {
            }
        }
    }
}

TEST(Unit, GarbledPayloadDecodesToAnErrorOrInRangeValues) {
    // With a valid checksum over garbage, decoding must still stay in bounds.
    auto unit = sample_level_unit();
    const UnitHeader header = read_unit_header(unit, "unit");
    std::mt19937 generator(9);
    const std::size_t payload = header.coded_offset() + 2;
    for (std::size_t i = payload; i + 4 < unit.size(); ++i) unit[i] = std::uint8_t(generator());
    reseal(unit);
    const UnitHeader garbled = read_unit_header(unit, "garbled");
    std::vector<std::int32_t> out(garbled.target.count);
    try {
        decode_level_unit(garbled, unit, out);
        for (const std::int32_t value : out)
            EXPECT_LE(std::abs(value), std::int32_t(garbled.limit));
    } catch (const Error&) {
    }
}

// Rows of different scale, large enough for the rANS coder; with
// `sign_runs`, signs flip rarely (as in some trained layers), so that the
// rANS coder codes them.
Tensor large_tensor(std::size_t rows, std::size_t columns, unsigned seed, bool sign_runs = false) {
    std::mt19937 generator(seed);
    std::student_t_distribution<float> heavy_tailed(4.0f);
    Tensor tensor;
    tensor.name = "large";
    tensor.shape = {std::int64_t(rows), std::int64_t(columns)};
    tensor.values.resize(rows * columns);
    float sign = 1.0f;
    for (std::size_t i = 0; i < tensor.values.size(); ++i) {
        const float value = 0.01f * float(1 + (i / columns) % 9) * heavy_tailed(generator);
        if (generator() % 16 == 0) sign = -sign;
        tensor.values[i] = sign_runs ? sign * std::fabs(value) : value;
    }
    return tensor;
}

TEST(Unit, LargeChunksUseTheRansCoderAndReproduceEveryRung) {
    for (const bool sign_runs : {false, true}) {
        const Tensor tensor = large_tensor(96, 4000, 1, sign_runs);  // 384,000 weights
        for (const bool per_channel : {false, true}) {
            for (const char* text : {"4,8,16", "8,16", "2,32", "3,4", "16"}) {
                SCOPED_TRACE(std::string(text) + (per_channel ? " per-channel" : ""));
                LadderPlan plan = LadderPlan::parse(text);
                plan.per_channel = per_channel;
                const auto rungs = quantize_ladder(tensor, plan);
                // One chunk that does not start on a lane or channel boundary.
                const auto chunks = plan_chunks(0, tensor.element_count(), 300'001);
                std::vector<std::vector<std::vector<std::uint8_t>>> units(rungs.size());
                for (const UnitTarget& chunk : chunks) {
                    units[0].push_back(encode_level_unit(chunk, rungs[0]));
                    for (std::size_t r = 1; r < rungs.size(); ++r)
                        units[r].push_back(encode_refinement_unit(chunk, rungs[r - 1], rungs[r]));
                }
                for (const auto& rung : units)
                    EXPECT_EQ(read_unit_header(rung.front(), "large").coder, UnitCoder::rans);
                EXPECT_EQ(decode_ladder(units, tensor.element_count()), rungs.back().indices);
                // With sign runs the signs are coded: the unit is smaller than
                // one raw bit per non-zero sign would make it.
                if (sign_runs && std::string(text) == "8,16") {
                    const auto unsigned_tensor = large_tensor(96, 4000, 1, false);
                    const auto plain =
                        encode_level_unit(chunks[0], quantize_ladder(unsigned_tensor, plan)[0]);
                    EXPECT_LT(units[0][0].size(), plain.size() - chunks[0].count / 32) << "signs";
                }
            }
        }
    }
}

// Format 1 used another ladder and coder, format 2 rounded every rung
// directly (another ladder): both are refused, with advice.
TEST(Unit, OlderUnitFormatsAreRefusedWithAHint) {
    for (const std::uint8_t version : {1, 2, 3}) {
        auto unit = sample_level_unit();
        unit[4] = version;
        reseal(unit);
        try {
            read_unit_header(unit, "old");
            FAIL() << "no error";
        } catch (const Error& error) {
            EXPECT_NE(std::string(error.what())
                          .find("unit format " + std::to_string(version) +
                                " is from an older bitinc; re-pack the model"),
                      std::string::npos)
                << error.what();
        }
    }
}

TEST(Unit, GarbledRansPayloadsAreErrorsOrInRange) {
    const Tensor tensor = large_tensor(40, 4000, 2, /*sign_runs=*/true);
    const auto rungs = quantize_ladder(tensor, LadderPlan::parse("8,16"));
    const UnitTarget whole = plan_chunks(0, tensor.element_count(), 1 << 20).front();
    const auto levels = encode_level_unit(whole, rungs[0]);
    const auto refinement = encode_refinement_unit(whole, rungs[0], rungs[1]);
    std::mt19937 generator(4);
    int caught = 0;
    for (int trial = 0; trial < 200; ++trial) {
        const bool is_levels = trial % 2 == 0;
        auto unit = is_levels ? levels : refinement;
        const UnitHeader header = read_unit_header(unit, "good");
        ASSERT_EQ(header.coder, UnitCoder::rans);
        // Garble a few bytes of the payload (coder byte excluded), keep the CRC valid.
        const std::size_t payload = header.coded_offset() + 1;
        for (int flips = 0; flips < 1 + trial % 4; ++flips)
            unit[payload + generator() % (unit.size() - 4 - payload)] ^=
                std::uint8_t(1 + generator() % 255);
        reseal(unit);
        const UnitHeader garbled = read_unit_header(unit, "garbled");
        std::vector<std::int32_t> out(garbled.target.count);
        try {
            if (is_levels) {
                decode_level_unit(garbled, unit, out);
                for (const std::int32_t value : out)
                    ASSERT_LE(std::abs(value), std::int32_t(garbled.limit));
            } else {
                decode_refinement_unit(garbled, unit, rungs[0].indices, out);
                for (const std::int32_t value : out) ASSERT_LE(std::abs(value), 32767);
            }
        } catch (const Error&) {
            ++caught;
        }
    }
    EXPECT_GT(caught, 150);  // the end-of-stream state check catches nearly all
}

TEST(Unit, MalformedRansPreamblesAreErrors) {
    const Tensor tensor = large_tensor(4, 3000, 6, /*sign_runs=*/true);
    const auto rungs = quantize_ladder(tensor, LadderPlan::parse("8,16"));
    const UnitTarget whole = plan_chunks(0, tensor.element_count()).front();
    const auto levels = encode_level_unit(whole, rungs[0]);
    const auto refinement = encode_refinement_unit(whole, rungs[0], rungs[1]);
    const std::size_t levels_coded = testing::coded_offset(levels);
    ASSERT_EQ(levels[levels_coded], std::uint8_t(UnitCoder::rans));
    ASSERT_NE(levels[levels_coded + 1] & 0x80, 0) << "signs should be coded";
    struct Tamper {
        bool is_levels;
        std::size_t offset;  // from the coder byte
        std::uint8_t value;
        const char* what;
    };
    for (const Tamper& tamper :
         {Tamper{true, 1, 0x80, "no contexts"}, Tamper{true, 1, 0x85, "five contexts"},
          Tamper{true, 1, 0x7F, "127 contexts"}, Tamper{false, 1, 4, "four refinement contexts"},
          Tamper{false, 1, 0x81, "refinement with coded signs"},
          Tamper{true, 2, 0xFF, "sign stream length"}, Tamper{true, 5, 0xFF, "sign stream length"},
          Tamper{false, 2, 0x01, "raw context 0"},
          Tamper{false, 2, 0x08, "raw context beyond the count"},
          Tamper{false, 3, 0x00, "table bits"}}) {
        auto bad = tamper.is_levels ? levels : refinement;
        const std::size_t coded =
            tamper.is_levels ? levels_coded : testing::coded_offset(refinement);
        // Value 0 flips every bit of the byte instead.
        bad[coded + tamper.offset] =
            tamper.value ? tamper.value : std::uint8_t(~bad[coded + tamper.offset]);
        reseal(bad);
        const UnitHeader header = read_unit_header(bad, "tampered");
        std::vector<std::int32_t> out(header.target.count);
        if (tamper.is_levels) {
            EXPECT_THROW(decode_level_unit(header, bad, out), Error) << tamper.what;
        } else {
            EXPECT_THROW(decode_refinement_unit(header, bad, rungs[0].indices, out), Error)
                << tamper.what;
        }
    }
}

// Rows of very different spread (every fourth row ten times wider): a
// levels unit sorts them into classes with a table each (§4.1), codes
// smaller than without the row hint, and decodes exactly, also from a chunk
// that starts and ends inside a row.
TEST(Unit, RowClassesCodeRowsOfDifferentSpreadSmaller) {
    std::mt19937 generator(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    Tensor tensor;
    tensor.name = "rows";
    tensor.shape = {64, 8, 3, 3};
    tensor.values.resize(64 * 72);
    for (std::size_t i = 0; i < tensor.values.size(); ++i)
        tensor.values[i] = normal(generator) * ((i / 72) % 4 == 0 ? 1.0f : 0.1f);
    auto rungs = quantize_ladder(tensor, LadderPlan::parse("4,8"));
    ASSERT_EQ(rungs[0].row_length, 72u);
    for (const UnitTarget target : {UnitTarget{0, tensor.element_count(), 0, 64 * 72},
                                    UnitTarget{0, tensor.element_count(), 100, 3000}}) {
        SCOPED_TRACE(target.first);
        const auto unit = encode_level_unit(target, rungs[0]);
        const UnitHeader header = read_unit_header(unit, "rows");
        ASSERT_EQ(header.coder, UnitCoder::rans);
        const std::size_t coded = header.coded_offset();
        EXPECT_NE(unit[coded + 1] & 0x40, 0) << "row classes expected";
        EXPECT_EQ(unit[coded + 1] & 0x3F, 1);
        std::vector<std::int32_t> out(target.count);
        decode_level_unit(header, unit, out);
        EXPECT_TRUE(std::equal(out.begin(), out.end(), rungs[0].indices.begin() + target.first));

        QuantizedTensor without_hint = rungs[0];
        without_hint.row_length = 0;
        const auto plain = encode_level_unit(target, without_hint);
        EXPECT_EQ(plain[coded + 1] & 0x40, 0);
        EXPECT_LT(unit.size() * 100, plain.size() * 97) << unit.size() << " vs " << plain.size();

        // Tampered row fields: length 0, one class, nine classes, a class
        // count whose class fields run past the payload.
        struct Tamper {
            std::size_t offset;  // from the coder byte
            std::uint8_t value;
        };
        for (const Tamper tamper : {Tamper{2, 0}, Tamper{6, 1}, Tamper{6, 9}}) {
            auto bad = unit;
            if (tamper.offset == 2) {
                for (std::size_t b = 0; b < 4; ++b) bad[coded + 2 + b] = 0;
            } else {
                bad[coded + tamper.offset] = tamper.value;
            }
            reseal(bad);
            const UnitHeader bad_header = read_unit_header(bad, "tampered");
            EXPECT_THROW(decode_level_unit(bad_header, bad, out), Error) << int(tamper.offset);
        }
        auto short_rows = unit;  // rows of 1 element: more class bits than payload
        short_rows[coded + 2] = 1;
        short_rows[coded + 3] = short_rows[coded + 4] = short_rows[coded + 5] = 0;
        reseal(short_rows);
        EXPECT_THROW(decode_level_unit(read_unit_header(short_rows, "short"), short_rows, out),
                     Error);
    }
}

// An 8→16 refinement of near-uniform cells sends its non-zero cells raw
// (no rANS symbol: §5.1), a 4→8 one codes them; both reproduce the top rung,
// also when a unit's coded elements do not fill whole blocks of 8.
TEST(Unit, RefinementsWithRawContextsRoundTrip) {
    for (const std::size_t per_row : {std::size_t{3000}, std::size_t{2999}}) {
        // Uniform weights: flat in every cell.
        std::mt19937 generator(per_row);
        std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
        Tensor tensor;
        tensor.name = "uniform";
        tensor.shape = {4, std::int64_t(per_row)};
        tensor.values.resize(4 * per_row);
        for (float& value : tensor.values) value = uniform(generator);
        const auto rungs = quantize_ladder(tensor, LadderPlan::parse("4,8,16"));
        const UnitTarget whole = plan_chunks(0, tensor.element_count()).front();
        for (std::size_t r = 1; r < rungs.size(); ++r) {
            const auto unit = encode_refinement_unit(whole, rungs[r - 1], rungs[r]);
            const UnitHeader header = read_unit_header(unit, "refinement");
            const std::uint8_t raw_mask = unit[header.coded_offset() + 2];
            if (rungs[r].bits == 16) {
                EXPECT_NE(raw_mask, 0) << "8→16 should send non-zero cells raw";
            }
            std::vector<std::int32_t> out(header.target.count);
            decode_refinement_unit(header, unit, rungs[r - 1].indices, out);
            EXPECT_EQ(out, rungs[r].indices) << rungs[r].bits << " bits, rows of " << per_row;
        }
    }
}

// Uniform weights plus a cluster inside the cells of |coarse index| 1: the
// zero cell and those cells coded, the cells beyond raw (three contexts,
// the coded elements' tables alternating).
TEST(Unit, RefinementsWithCodedAndRawContextsMixedRoundTrip) {
    std::mt19937 generator(3);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    Tensor tensor;
    tensor.name = "mixed";
    tensor.shape = {2, 9001};
    tensor.values.resize(2 * 9001);
    for (std::size_t i = 0; i < tensor.values.size(); ++i) {
        // Cell 1 of the 4-bit rung covers about 0.07-0.21 of the largest |w|.
        tensor.values[i] = i % 3 == 0 ? 0.1f + 0.01f * uniform(generator) : uniform(generator);
    }
    tensor.values[0] = 1.0f;
    const auto rungs = quantize_ladder(tensor, LadderPlan::parse("4,8"));
    const UnitTarget whole = plan_chunks(0, tensor.element_count()).front();
    const auto unit = encode_refinement_unit(whole, rungs[0], rungs[1]);
    ASSERT_EQ(unit[testing::coded_offset(unit) + 1], 3) << "three contexts";
    ASSERT_EQ(unit[testing::coded_offset(unit) + 2], 4) << "only context 2 raw";
    const UnitHeader header = read_unit_header(unit, "refinement");
    std::vector<std::int32_t> out(header.target.count);
    decode_refinement_unit(header, unit, rungs[0].indices, out);
    EXPECT_EQ(out, rungs[1].indices);
}

TEST(Unit, BothCodersRoundTripEveryChunkSize) {
    const Tensor tensor = large_tensor(4, 300, 3);
    const auto rungs = quantize_ladder(tensor, LadderPlan::parse("3,8,16"));
    for (const auto& [choice, coder] : {std::pair{CoderChoice::fast, UnitCoder::rans},
                                        std::pair{CoderChoice::adaptive, UnitCoder::adaptive}}) {
        for (const std::uint64_t size : {1, 2, 7, 8, 9, 17, 255, 1200}) {
            SCOPED_TRACE(std::to_string(int(coder)) + " chunk " + std::to_string(size));
            std::vector<std::vector<std::vector<std::uint8_t>>> units(rungs.size());
            for (const UnitTarget& chunk : plan_chunks(0, tensor.element_count(), size)) {
                units[0].push_back(encode_level_unit(chunk, rungs[0], choice));
                for (std::size_t r = 1; r < rungs.size(); ++r)
                    units[r].push_back(
                        encode_refinement_unit(chunk, rungs[r - 1], rungs[r], choice));
            }
            EXPECT_EQ(read_unit_header(units[1][0], "forced").coder, coder);
            EXPECT_EQ(decode_ladder(units, tensor.element_count()), rungs.back().indices);
        }
    }
}

// The default codes every unit with rANS; compact takes the adaptive coder
// where it is smaller, and is then never larger than the default.
TEST(Unit, CompactChoiceTakesTheAdaptiveCoderOnlyWhereSmaller) {
    const Tensor tensor = large_tensor(4, 300, 3);
    const auto rungs = quantize_ladder(tensor, LadderPlan::parse("3,8"));
    std::size_t adaptive_units = 0;
    for (const UnitTarget& chunk : plan_chunks(0, tensor.element_count(), 200)) {
        const auto fast = encode_level_unit(chunk, rungs[0]);
        const auto compact = encode_level_unit(chunk, rungs[0], CoderChoice::compact);
        EXPECT_EQ(read_unit_header(fast, "fast").coder, UnitCoder::rans);
        EXPECT_LE(compact.size(), fast.size());
        adaptive_units += read_unit_header(compact, "compact").coder == UnitCoder::adaptive;
        const auto fast_refinement = encode_refinement_unit(chunk, rungs[0], rungs[1]);
        EXPECT_EQ(read_unit_header(fast_refinement, "fast").coder, UnitCoder::rans);
        EXPECT_LE(encode_refinement_unit(chunk, rungs[0], rungs[1], CoderChoice::compact).size(),
                  fast_refinement.size());
    }
    // 200-element chunks: the tables of rANS cost more than the adaptive
    // coder's learning.
    EXPECT_GT(adaptive_units, 0u);
}

// Writes the unit fuzz corpus (tests/fuzz/corpus/unit) when
// BITINC_WRITE_UNIT_CORPUS names a directory; otherwise does nothing.
TEST(Unit, WritesTheFuzzCorpusWhenAsked) {
    const char* directory = std::getenv("BITINC_WRITE_UNIT_CORPUS");
    if (directory == nullptr) GTEST_SKIP() << "set BITINC_WRITE_UNIT_CORPUS=DIR to write it";
    const Tensor tensor = large_tensor(3, 16, 5);
    const auto rungs = quantize_ladder(tensor, LadderPlan::parse("4,8,16"));
    const UnitTarget chunk{0, tensor.element_count(), 5, 37};
    auto write = [&](const std::string& name, const std::vector<std::uint8_t>& unit) {
        testing::spit(std::filesystem::path(directory) / name,
                      std::string(unit.begin(), unit.end()));
    };
    write("exact.bin", encode_exact_unit(chunk, tensor.values));
    const Tensor runs = large_tensor(3, 200, 5, /*sign_runs=*/true);
    write("levels8-rans-signs.bin",
          encode_level_unit({0, runs.element_count(), 0, 600},
                            quantize_ladder(runs, LadderPlan::parse("8"))[0]));
    // A step per channel, Rice-coded (§2.1).
    LadderPlan per_channel = LadderPlan::parse("4");
    per_channel.per_channel = true;
    const Tensor channels = large_tensor(40, 12, 6);
    const auto channels_unit = encode_level_unit({0, channels.element_count(), 0, 480},
                                                 quantize_ladder(channels, per_channel)[0]);
    ASSERT_LE(channels_unit[read_unit_header(channels_unit, "channels").header_bytes], 16)
        << "Rice-coded steps expected";
    write("levels4-rans-channels.bin", channels_unit);
    // Rows of nine spreads: row classes (§4.1).
    const Tensor rows = large_tensor(16, 100, 5);
    const auto rows_unit = encode_level_unit({0, rows.element_count(), 0, 1600},
                                             quantize_ladder(rows, LadderPlan::parse("4"))[0]);
    EXPECT_NE(rows_unit[testing::coded_offset(rows_unit) + 1] & 0x40, 0) << "row classes expected";
    write("levels4-rans-rows.bin", rows_unit);
    for (const auto& [coder, tag] :
         {std::pair{CoderChoice::fast, "rans"}, std::pair{CoderChoice::adaptive, "adaptive"}}) {
        write(std::string("levels4-") + tag + ".bin", encode_level_unit(chunk, rungs[0], coder));
        write(std::string("levels16-") + tag + ".bin", encode_level_unit(chunk, rungs[2], coder));
        write(std::string("refine8-") + tag + ".bin",
              encode_refinement_unit(chunk, rungs[0], rungs[1], coder));
        write(std::string("refine16-") + tag + ".bin",
              encode_refinement_unit(chunk, rungs[1], rungs[2], coder));
        // A version delta's differences: mostly small, a few wide (§9).
        std::vector<std::int32_t> differences(chunk.count);
        for (std::size_t i = 0; i < differences.size(); ++i)
            differences[i] = std::int32_t(i % 5) - 2 + (i % 13 == 0 ? 40000 : 0);
        write(std::string("difference16-") + tag + ".bin",
              encode_difference_unit(
                  chunk, RungChunk{16, rungs[2].steps, rungs[2].channel_size, differences, 0},
                  coder));
    }
    // A refinement whose non-zero cells travel raw (§5.1), its coded
    // elements not a multiple of 8.
    Tensor uniform = large_tensor(3, 200, 7);
    std::mt19937 generator(7);
    std::uniform_real_distribution<float> spread(-1.0f, 1.0f);
    for (float& value : uniform.values) value = spread(generator);
    const auto uniform_rungs = quantize_ladder(uniform, LadderPlan::parse("8,16"));
    const auto raw_contexts = encode_refinement_unit({0, uniform.element_count(), 0, 597},
                                                     uniform_rungs[0], uniform_rungs[1]);
    ASSERT_NE(raw_contexts[testing::coded_offset(raw_contexts) + 2], 0) << "expected raw contexts";
    write("refine16-rans-raw-contexts.bin", raw_contexts);
    // Lossless units on the top rung the fuzz target gives them
    // (fuzz_unit.cpp): weights inside their cells, a few outside, zeros.
    const std::size_t lossless_count = 700;
    std::vector<std::int32_t> parent(lossless_count);
    std::vector<float> steps(lossless_count / 64 + 1);
    for (std::size_t c = 0; c < steps.size(); ++c)
        steps[c] = c % 100 == 7 ? 0.0f : 0.0123f * float(1 + c % 5);
    std::vector<float> weights(lossless_count);
    std::uniform_real_distribution<float> within(-0.45f, 0.45f);
    for (std::size_t i = 0; i < lossless_count; ++i) {
        parent[i] = static_cast<std::int32_t>(i % 9) - 4;
        if (i % 11 == 0) parent[i] = i % 2 ? 127 : -127;
        if (steps[i / 64] == 0.0f) parent[i] = 0;
        weights[i] = steps[i / 64] * (float(parent[i]) + within(generator));
        if (i % 97 == 5) weights[i] *= 3.0f;  // outside its cell
    }
    const RungChunk top{8, steps, 64, parent, 0};
    const UnitTarget whole{0, lossless_count, 0, lossless_count};
    write("lossless-float32.bin", encode_lossless_unit(whole, StoredType::float32, weights, top));
    for (float& weight : weights) weight = core::bfloat16_to_float(core::float_to_bfloat16(weight));
    write("lossless-bfloat16.bin", encode_lossless_unit(whole, StoredType::bfloat16, weights, top));
}

}  // namespace
}  // namespace bitinc

namespace bitinc {
namespace {

TEST(Coders, EveryCoderRoundTripsEveryRung) {
    const Tensor tensor = trained_tensor();
    for (const std::string_view name : coder_names()) {
        const auto coder = make_coder(name);
        EXPECT_EQ(coder->name(), name);
        for (const char* text : {"4,8,16", "2,32", "16"}) {
            SCOPED_TRACE(std::string(name) + " " + text);
            const auto rungs = quantize_ladder(tensor, LadderPlan::parse(text));
            const auto base = coder->encode_levels(rungs[0]);
            EXPECT_EQ(coder->decode_levels(base, rungs[0]), rungs[0].indices);
            for (std::size_t r = 1; r < rungs.size(); ++r) {
                const auto bytes = coder->encode_refinement(rungs[r - 1], rungs[r]);
                EXPECT_EQ(coder->decode_refinement(bytes, rungs[r - 1], rungs[r].bits),
                          rungs[r].indices);
            }
        }
    }
    EXPECT_THROW(make_coder("gzip"), Error);
}

TEST(Coders, RawSizeIsTheBitWidth) {
    const Tensor tensor = trained_tensor();
    const auto rungs = quantize_ladder(tensor, LadderPlan::parse("4,8"));
    const auto raw = make_coder("raw");
    EXPECT_EQ(raw->encode_levels(rungs[0]).size(), (tensor.element_count() * 4 + 7) / 8);
    EXPECT_EQ(raw->encode_refinement(rungs[0], rungs[1]).size(),
              (tensor.element_count() * 5 + 7) / 8);
}

}  // namespace
}  // namespace bitinc
