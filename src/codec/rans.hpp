// Interleaved rANS with static per-unit frequency tables (docs/format.md §4).
//
// Eight 32-bit states take the symbols of a unit in turn (symbol i on state
// i mod 8), so that a decoder's eight dependency chains overlap in the CPU;
// states renormalize 16 bits at a time, and every table totals 2^12, so one
// decoded symbol is a table load, a multiply-add and at most one 16-bit read.
// Tables are fitted to the unit by the encoder and sent with it.
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <span>
#include <vector>

#include "codec/range_coder.hpp"

namespace bitinc::codec::rans {

inline constexpr int precision = 12;  // every table's frequencies total 2^12
inline constexpr std::uint32_t total = 1u << precision;
inline constexpr std::uint32_t slot_mask = total - 1;
inline constexpr int lanes = 8;
inline constexpr std::uint32_t lower_bound = 1u << 16;  // states live in [2^16, 2^32)
inline constexpr std::size_t state_bytes = 4 * lanes;
// No table has more symbols (levels tokens of 32-bit indices need 124).
inline constexpr int max_alphabet = 128;

// Frequencies totalling 2^12, each symbol that occurs at least 1, fitted to
// `counts` (which may all be 0: symbol 0 then takes the whole table).
std::vector<std::uint16_t> normalize(std::span<const std::uint32_t> counts);

// Cost in bits of a histogram under its own normalized table, plus the
// table's own size: what a context costs the unit.
double coded_bits(std::span<const std::uint32_t> counts);

// The same, estimated fast from the ideal code length (no normalization).
double estimated_bits(std::span<const std::uint32_t> counts);

// A table's frequencies in the table bit stream: each as an Elias-gamma
// code of f + 1 (docs/format.md §4.2).
void write_table(BitWriter& out, std::span<const std::uint16_t> frequencies);
// Reads a table of `alphabet` symbols; false if it does not total 2^12 or the
// stream ended.
bool read_table(BitReader& in, int alphabet, std::uint16_t* frequencies);

// The raw bit stream of a unit (docs/format.md §3.3), read with one unaligned
// 8-byte load per read where at least 8 bytes remain. Reading past the end
// yields zeros and is reported by overran().
class RawReader {
  public:
    explicit RawReader(std::span<const std::uint8_t> bytes)
        : data_(bytes.data()),
          size_(bytes.size()),
          fast_end_(bytes.size() >= 8 ? (bytes.size() - 8) * 8 : 0),
          has_fast_(bytes.size() >= 8) {}
    // count <= 32.
    std::uint32_t read(int count) {
        const std::uint64_t window =
            has_fast_ && position_ <= fast_end_ ? fast_window() : slow_window();
        position_ += std::uint64_t(count);
        return static_cast<std::uint32_t>(window & ((std::uint64_t{1} << count) - 1));
    }
    bool overran() const { return position_ > std::uint64_t(size_) * 8; }

    // Whether `bits` more bits can be read without any bounds check: then
    // read_unchecked() may be used for them.
    bool can_read_unchecked(std::uint64_t bits) const {
        return has_fast_ && position_ + bits <= fast_end_;
    }
    std::uint32_t read_unchecked(std::uint32_t count) {
        return static_cast<std::uint32_t>(read_wide_unchecked(count));
    }
    // The same for up to 56 bits at once.
    std::uint64_t read_wide_unchecked(std::uint32_t count) {
        const std::uint64_t window = fast_window();
        position_ += count;
        return window & ((std::uint64_t{1} << count) - 1);
    }

  private:
    // The 57 or more bits from the position, with one unaligned load.
    std::uint64_t fast_window() const {
        std::uint64_t word;
        __builtin_memcpy(&word, data_ + (position_ >> 3), 8);
        if constexpr (std::endian::native == std::endian::big) word = __builtin_bswap64(word);
        return word >> (position_ & 7);
    }
    std::uint64_t slow_window() const {
        std::uint64_t window = 0;
        for (int b = 0; b < 8; ++b) {
            const std::uint64_t at = (position_ >> 3) + std::uint64_t(b);
            if (at < size_) window |= std::uint64_t(data_[at]) << (8 * b);
        }
        return window >> (position_ & 7);
    }

    const std::uint8_t* data_;
    std::size_t size_;
    std::uint64_t fast_end_;  // last bit position a fast read may start at
    bool has_fast_;
    std::uint64_t position_ = 0;
};

// The decoder's view of a table: for each of the 2^12 slots, the symbol, its
// frequency and the slot's distance from the symbol's first slot, packed as
// symbol | frequency << 7 | distance << 20.
using DecodeTable = std::array<std::uint32_t, total>;
void build_decode_table(std::span<const std::uint16_t> frequencies, DecodeTable& table);

// The encoder's view: frequency and cumulative frequency of each symbol.
struct EncodeTable {
    std::array<std::uint16_t, max_alphabet> frequency{};
    std::array<std::uint16_t, max_alphabet> start{};
    // ceil(2^44 / frequency): x / f = (x * reciprocal) >> 44 exactly for
    // x < 2^32 and f <= 2^12 (the error, below 2^-12, never reaches the
    // next multiple of 1/f), a multiply instead of a division.
    std::array<std::uint64_t, max_alphabet> reciprocal{};
};
EncodeTable make_encode_table(std::span<const std::uint16_t> frequencies);

// Encodes symbols last to first (rANS is a stack); finish() returns the
// stream in the order the decoder reads it: the eight final states, then the
// 16-bit words.
class Encoder {
  public:
    // At most `symbols` symbols will be put: each emits at most one word.
    explicit Encoder(std::size_t symbols) : words_(symbols + 1) { states_.fill(lower_bound); }
    // Symbol `index` (its position in the unit) from `table`.
    void put(std::size_t index, const EncodeTable& table, std::uint32_t symbol) {
        std::uint32_t& x = states_[index % lanes];
        const std::uint32_t frequency = table.frequency[symbol];
        // Keep x below frequency * 2^20 so that the result stays below 2^32;
        // branch-free, as whether a word goes out is a coin toss.
        const std::uint32_t emit =
            std::uint64_t{x} >= (std::uint64_t{frequency} << (32 - precision));
        words_[count_] = static_cast<std::uint16_t>(x);
        count_ += emit;
        x >>= emit << 4;
        const auto quotient = static_cast<std::uint32_t>(
            (static_cast<unsigned __int128>(x) * table.reciprocal[symbol]) >> 44);
        x = (quotient << precision) + (x - quotient * frequency) + table.start[symbol];
    }
    std::vector<std::uint8_t> finish() const;

  private:
    std::array<std::uint32_t, lanes> states_{};
    std::vector<std::uint16_t> words_;
    std::size_t count_ = 0;
};

// The decoder's input: the states and the 16-bit words after them. Reads
// past the end repeat the last word and are reported by overran(); a clean
// stream ends with every state back at 2^16 and every word consumed.
class Decoder {
  public:
    // `stream` holds at least state_bytes bytes (checked by the caller).
    explicit Decoder(std::span<const std::uint8_t> stream);

    // One symbol on state x from `table`.
    [[gnu::always_inline]] std::uint32_t get(std::uint32_t& x, const DecodeTable& table) {
        return get(x, table.data());
    }
    // The same with the table given by its first entry.
    [[gnu::always_inline]] std::uint32_t get(std::uint32_t& x, const std::uint32_t* table) {
        // The load is always in bounds; reads past the end show in ended_badly().
        return step(x, table, position_ < last_ ? position_ : last_);
    }
    // The same without the bounds clamp, allowed while at least 16 bytes
    // remain: eight symbols read at most eight words.
    bool can_get_eight_unchecked() const { return position_ + 16 <= stream_.size(); }
    [[gnu::always_inline]] std::uint32_t get_unchecked(std::uint32_t& x, const DecodeTable& table) {
        return step(x, table.data(), position_);
    }
    [[gnu::always_inline]] std::uint32_t get_unchecked(std::uint32_t& x,
                                                       const std::uint32_t* table) {
        return step(x, table, position_);
    }
    std::array<std::uint32_t, lanes>& states() { return states_; }
    // True if the stream was not consumed exactly or a state did not end at
    // 2^16.
    bool ended_badly() const;

  private:
    // These are always inlined: GCC sometimes calls them out of line from a
    // large decoder, which costs it 10-20 %.
    [[gnu::always_inline]] std::uint32_t step(std::uint32_t& x, const std::uint32_t* table,
                                              std::size_t at) {
        const std::uint32_t entry = table[x & slot_mask];
        x = ((entry >> 7) & 0x1FFFu) * (x >> precision) + (entry >> 20);
        // Branch-free renormalization: whether a state refills is a coin
        // toss, a branch would mispredict.
        std::uint16_t word;
        __builtin_memcpy(&word, stream_.data() + at, 2);
        if constexpr (std::endian::native == std::endian::big) word = __builtin_bswap16(word);
        const std::uint32_t refill = x < lower_bound;
        x = (x << (refill << 4)) | (word & (0u - refill));
        position_ += refill << 1;
        return entry & 0x7Fu;
    }

    std::span<const std::uint8_t> stream_;
    std::size_t position_ = state_bytes;
    std::size_t last_ = 0;  // last position a word can start at
    std::array<std::uint32_t, lanes> states_{};
};

}  // namespace bitinc::codec::rans
