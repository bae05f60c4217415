#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string_view>

#include "codec/level_coder.hpp"
#include "codec/range_coder.hpp"
#include "core/crc32c.hpp"

namespace bitinc::codec {
namespace {

TEST(Crc32c, KnownValues) {
    const std::string_view check = "123456789";
    EXPECT_EQ(core::crc32c({reinterpret_cast<const std::uint8_t*>(check.data()), check.size()}),
              0xE3069283u);
    EXPECT_EQ(core::crc32c({}), 0u);
    std::vector<std::uint8_t> zeros(32, 0);
    EXPECT_EQ(core::crc32c(zeros), 0x8A9136AAu);  // RFC 3720's 32 zero bytes
    // Chaining equals one pass.
    std::vector<std::uint8_t> bytes(1000);
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = std::uint8_t(i * 31 + 7);
    const std::span<const std::uint8_t> all(bytes);
    EXPECT_EQ(core::crc32c(all.subspan(300), core::crc32c(all.first(300))), core::crc32c(all));
    // The instruction and the tables agree, on every length and alignment.
    for (std::size_t start = 0; start < 9; ++start) {
        for (std::size_t length = 0; length + start <= 40; ++length) {
            ASSERT_EQ(core::crc32c(all.subspan(start, length), 0x1234u),
                      core::crc32c_tables(all.subspan(start, length), 0x1234u));
        }
    }
    EXPECT_EQ(core::crc32c_tables(zeros), 0x8A9136AAu);
}

TEST(RangeCoder, RoundTripsAndApproachesTheEntropy) {
    for (const double p_one : {0.5, 0.1, 0.01, 0.9}) {
        std::mt19937 generator(42);
        std::bernoulli_distribution source(p_one);
        std::vector<bool> bits(200000);
        for (auto&& bit : bits) bit = source(generator);
        RangeEncoder encoder;
        AdaptiveBit context;
        for (const bool bit : bits) encoder.encode(bit, context);
        const auto bytes = encoder.finish();
        RangeDecoder decoder(bytes);
        AdaptiveBit decoding_context;
        for (std::size_t i = 0; i < bits.size(); ++i) {
            ASSERT_EQ(decoder.decode(decoding_context), bits[i]) << "bin " << i;
        }
        EXPECT_FALSE(decoder.overran());
        const double entropy = -(p_one * std::log2(p_one) + (1 - p_one) * std::log2(1 - p_one));
        const double bits_per_bin = 8.0 * double(bytes.size()) / double(bits.size());
        EXPECT_LT(bits_per_bin, entropy * 1.04 + 0.002) << "p=" << p_one;
    }
}

TEST(BitStream, RoundTrips) {
    BitWriter writer;
    std::mt19937 generator(1);
    std::vector<std::pair<std::uint32_t, int>> written;
    for (int i = 0; i < 10000; ++i) {
        const int count = 1 + int(generator() % 32);
        const std::uint32_t value = generator() & (count == 32 ? 0xFFFFFFFFu : (1u << count) - 1);
        writer.write(value, count);
        written.emplace_back(value, count);
    }
    const auto bytes = writer.finish();
    BitReader reader(bytes);
    for (const auto& [value, count] : written) ASSERT_EQ(reader.read(count), value);
    EXPECT_FALSE(reader.overran());
    reader.read(16);
    EXPECT_TRUE(reader.overran());
}

std::vector<std::int32_t> laplacian_levels(std::size_t count, double scale, std::int32_t limit,
                                           unsigned seed) {
    std::mt19937 generator(seed);
    std::exponential_distribution<double> magnitude(1.0 / scale);
    std::bernoulli_distribution negative(0.5);
    std::vector<std::int32_t> levels(count);
    for (auto& level : levels) {
        const auto m = std::min<double>(std::round(magnitude(generator)), limit);
        level = static_cast<std::int32_t>(negative(generator) ? -m : m);
    }
    return levels;
}

TEST(LevelModel, RoundTripsEveryClass) {
    for (const int max_class : {0, 1, 3, 8, 16, 31}) {
        const std::int32_t limit = max_class == 31 ? 0x7FFFFFFF : (1 << max_class) - 1;
        auto levels =
            laplacian_levels(20000, std::max(1.0, limit / 20.0), limit, unsigned(max_class));
        levels.push_back(limit);
        levels.push_back(-limit);
        levels.push_back(0);
        RangeEncoder encoder;
        BitWriter raw;
        LevelModel model(max_class);
        for (const std::int32_t level : levels) model.encode(level, encoder, raw);
        const auto coded = encoder.finish();
        const auto raw_bytes = raw.finish();
        RangeDecoder decoder(coded);
        BitReader raw_reader(raw_bytes);
        LevelModel decoding(max_class);
        for (std::size_t i = 0; i < levels.size(); ++i) {
            ASSERT_EQ(decoding.decode(decoder, raw_reader), levels[i])
                << "max_class " << max_class << " at " << i;
        }
        EXPECT_FALSE(decoder.overran());
        EXPECT_FALSE(raw_reader.overran());
    }
}

// Residuals anywhere in their range, for both kinds of range (ladder
// refinements and the split parts of levels units).
TEST(ResidualModel, RoundTripsEveryParent) {
    for (const ResidualRanges ranges : {ResidualRanges::ladder, ResidualRanges::split}) {
        for (const int k : {1, 2, 4, 8, 16}) {
            std::mt19937 generator{static_cast<unsigned>(k)};
            const std::int32_t half = 1 << (k - 1);
            const bool ladder = ranges == ResidualRanges::ladder;
            std::vector<std::pair<std::int32_t, std::int32_t>> pairs;
            for (int i = 0; i < 20000; ++i) {
                const std::int32_t parent = std::int32_t(generator() % 7) - 3;
                std::int32_t low = parent > 0 ? -half : -(half - 1);
                std::int32_t high = parent < 0 ? half : half - 1;
                if (ladder) {  // the mirror image, and the zero cell has both ends
                    low = parent > 0 ? -(half - 1) : -half;
                    high = parent < 0 ? half - 1 : half;
                }
                const std::int32_t residual =
                    low + std::int32_t(generator() % std::uint32_t(high - low + 1));
                pairs.emplace_back(parent, residual);
            }
            RangeEncoder encoder;
            BitWriter raw;
            ResidualModel model(k, ranges);
            for (const auto& [parent, residual] : pairs)
                model.encode(parent, residual, encoder, raw);
            const auto coded = encoder.finish();
            const auto raw_bytes = raw.finish();
            RangeDecoder decoder(coded);
            BitReader raw_reader(raw_bytes);
            ResidualModel decoding(k, ranges);
            for (std::size_t i = 0; i < pairs.size(); ++i) {
                ASSERT_EQ(decoding.decode(pairs[i].first, decoder, raw_reader), pairs[i].second)
                    << "k " << k << (ladder ? " ladder" : " split") << " at " << i;
            }
        }
    }
}

}  // namespace
}  // namespace bitinc::codec
