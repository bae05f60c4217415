#include "codec/rans.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <numeric>

namespace bitinc::codec::rans {

std::vector<std::uint16_t> normalize(std::span<const std::uint32_t> counts) {
    std::vector<std::uint16_t> frequencies(counts.size(), 0);
    const std::uint64_t sum = std::accumulate(counts.begin(), counts.end(), std::uint64_t{0});
    if (sum == 0) {
        frequencies.at(0) = total;
        return frequencies;
    }
    std::int64_t assigned = 0;
    for (std::size_t s = 0; s < counts.size(); ++s) {
        if (counts[s] == 0) continue;
        const auto scaled = static_cast<std::int64_t>(
            std::llround(double(counts[s]) * double(total) / double(sum)));
        frequencies[s] = static_cast<std::uint16_t>(std::max<std::int64_t>(scaled, 1));
        assigned += frequencies[s];
    }
    // Settle the rounding difference on the symbols where one unit of
    // frequency costs least: the most frequent ones.
    std::vector<std::size_t> order(counts.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [&](std::size_t a, std::size_t b) { return counts[a] > counts[b]; });
    std::int64_t excess = assigned - std::int64_t{total};
    while (excess != 0) {
        bool changed = false;
        for (const std::size_t s : order) {
            if (excess == 0 || counts[s] == 0) break;
            if (excess > 0 && frequencies[s] > 1) {
                const auto take = std::min<std::int64_t>(
                    excess, std::max<std::int64_t>(1, (frequencies[s] - 1) / 8));
                frequencies[s] = static_cast<std::uint16_t>(frequencies[s] - take);
                excess -= take;
                changed = true;
            } else if (excess < 0) {
                frequencies[s] = static_cast<std::uint16_t>(frequencies[s] - excess);
                excess = 0;
                changed = true;
            }
        }
        if (!changed) break;  // cannot happen: fewer symbols than 2^12
    }
    return frequencies;
}

namespace {
int gamma_bits(std::uint32_t value_plus_one) {
    return 2 * std::bit_width(value_plus_one) - 1;
}
}  // namespace

double coded_bits(std::span<const std::uint32_t> counts) {
    const auto frequencies = normalize(counts);
    double bits = 0;
    for (std::size_t s = 0; s < counts.size(); ++s) {
        bits += gamma_bits(frequencies[s] + 1u);
        if (counts[s] != 0)
            bits += double(counts[s]) * (precision - std::log2(double(frequencies[s])));
    }
    return bits;
}

double estimated_bits(std::span<const std::uint32_t> counts) {
    double sum = 0, bits = 0;
    for (const std::uint32_t count : counts) {
        sum += count;
        // A zero frequency takes 1 bit in the table, others about 12.
        bits += count ? 12 - double(count) * std::log2(double(count)) : 1;
    }
    return sum > 0 ? bits + sum * std::log2(sum) : bits;
}

void write_table(BitWriter& out, std::span<const std::uint16_t> frequencies) {
    for (const std::uint16_t frequency : frequencies) {
        const std::uint32_t value = frequency + 1u;
        const int length = std::bit_width(value);  // 1..13
        // length - 1 one-bits, a zero bit, then the bits below the leading one.
        out.write((std::uint64_t{1} << (length - 1)) - 1, length);
        if (length > 1) out.write(value, length - 1);
    }
}

bool read_table(BitReader& in, int alphabet, std::uint16_t* frequencies) {
    std::uint32_t sum = 0;
    for (int s = 0; s < alphabet; ++s) {
        int length = 1;
        while (in.read(1) != 0) {
            if (++length > precision + 1 || in.overran()) return false;
        }
        std::uint32_t value = 1;
        if (length > 1) value = (1u << (length - 1)) | in.read(length - 1);
        const std::uint32_t frequency = value - 1;
        sum += frequency;
        if (sum > total) return false;
        frequencies[s] = static_cast<std::uint16_t>(frequency);
    }
    return sum == total && !in.overran();
}

void build_decode_table(std::span<const std::uint16_t> frequencies, DecodeTable& table) {
    std::uint32_t slot = 0;
    for (std::size_t s = 0; s < frequencies.size(); ++s) {
        const std::uint32_t frequency = frequencies[s];
        for (std::uint32_t j = 0; j < frequency; ++j) {
            table[slot + j] = std::uint32_t(s) | (frequency << 7) | (j << 20);
        }
        slot += frequency;
    }
}

EncodeTable make_encode_table(std::span<const std::uint16_t> frequencies) {
    EncodeTable table;
    std::uint32_t start = 0;
    for (std::size_t s = 0; s < frequencies.size(); ++s) {
        table.frequency[s] = frequencies[s];
        table.start[s] = static_cast<std::uint16_t>(start);
        if (frequencies[s] != 0)
            table.reciprocal[s] = ((std::uint64_t{1} << 44) + frequencies[s] - 1) / frequencies[s];
        start += frequencies[s];
    }
    return table;
}

std::vector<std::uint8_t> Encoder::finish() const {
    std::vector<std::uint8_t> bytes(state_bytes + 2 * count_);
    for (int lane = 0; lane < lanes; ++lane) {
        for (int b = 0; b < 4; ++b)
            bytes[std::size_t(4 * lane + b)] =
                static_cast<std::uint8_t>(states_[std::size_t(lane)] >> (8 * b));
    }
    // The decoder consumes words in the reverse of the order they were made.
    std::size_t at = state_bytes;
    for (std::size_t word = count_; word-- > 0;) {
        bytes[at++] = static_cast<std::uint8_t>(words_[word]);
        bytes[at++] = static_cast<std::uint8_t>(words_[word] >> 8);
    }
    return bytes;
}

Decoder::Decoder(std::span<const std::uint8_t> stream) : stream_(stream), last_(stream.size() - 2) {
    for (int lane = 0; lane < lanes; ++lane) {
        std::uint32_t x = 0;
        for (int b = 3; b >= 0; --b) x = (x << 8) | stream[std::size_t(4 * lane + b)];
        states_[std::size_t(lane)] = x;
    }
}

bool Decoder::ended_badly() const {
    if (position_ != stream_.size()) return true;
    return std::any_of(states_.begin(), states_.end(),
                       [](std::uint32_t x) { return x != lower_bound; });
}

}  // namespace bitinc::codec::rans
