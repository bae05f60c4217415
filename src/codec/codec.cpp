// Unit layout (docs/format.md §2): a header of 12 fixed bytes and nine varints, the steps,
// the coded payload, the raw payload, and a CRC32C of everything before it.
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <string>

#include "bitinc/codec.hpp"
#include "bitinc/error.hpp"
#include "codec/level_coder.hpp"
#include "codec/little_endian.hpp"
#include "codec/lossless.hpp"
#include "codec/range_coder.hpp"
#include "codec/rans.hpp"
#include "core/crc32c.hpp"

namespace bitinc {

namespace {

namespace rans = codec::rans;

constexpr std::uint8_t magic[4] = {'B', 'I', 'T', 'U'};

using codec::append_u16;
using codec::append_u32;
using codec::load_u16;
using codec::load_u32;
using codec::store_u32;

// The channels (steps) a chunk touches.
struct ChannelSpan {
    std::uint64_t first = 0;
    std::uint64_t count = 0;
};
ChannelSpan channels_of(const UnitTarget& target, std::uint64_t channel_size) {
    if (target.count == 0) return {};
    const std::uint64_t first = target.first / channel_size;
    const std::uint64_t last = (target.first + target.count - 1) / channel_size;
    return {first, last - first + 1};
}

void check_target(const UnitTarget& target, std::size_t tensor_size) {
    if (target.tensor_elements != tensor_size || target.first > tensor_size ||
        target.count > tensor_size - target.first || target.count > max_unit_elements) {
        throw Error(ErrorCode::invalid_argument, "unit target does not fit the tensor");
    }
}

// Steps (unit format 5, docs/format.md §2.1). A levels unit's steps follow
// the largest weight of each channel, and the channels of a tensor spread
// over an octave or two, so a unit of several steps sends each step's 16-bit
// pattern as a Rice code of its distance from a reference pattern (the
// median): about 8 bits a step instead of 16 (mobilenetv2 per channel: 16 kB
// of its 34 kB of steps), or plainly where that is no smaller. One step
// travels as its two bytes.
constexpr std::uint8_t plain_steps = 0xFF;
constexpr int max_step_rice_parameter = 16;
// |pattern - reference| < 2^16, so a zigzagged distance is below 2^17.
constexpr std::uint32_t max_step_distance_code = (std::uint32_t{1} << 17) - 1;

std::uint16_t pattern_of_step(float step) {
    const std::uint32_t bits = std::bit_cast<std::uint32_t>(step);
    if (bits & 0xFFFFu)
        throw Error(ErrorCode::invalid_argument, "unit: a step has more than 16 significant bits");
    return static_cast<std::uint16_t>(bits >> 16);
}

std::uint32_t zigzag(std::int32_t value) {
    return value >= 0 ? 2 * std::uint32_t(value) : 2 * std::uint32_t(-std::int64_t{value}) - 1;
}
std::int32_t unzigzag(std::uint32_t code) {
    return (code & 1u) ? -std::int32_t((code + 1) / 2) : std::int32_t(code / 2);
}

std::uint64_t rice_bits(std::span<const std::uint32_t> codes, int parameter) {
    std::uint64_t bits = 0;
    for (const std::uint32_t code : codes)
        bits += (code >> parameter) + 1 + std::uint64_t(parameter);
    return bits;
}

std::vector<std::uint8_t> encode_steps(std::span<const float> steps) {
    std::vector<std::uint16_t> patterns(steps.size());
    std::transform(steps.begin(), steps.end(), patterns.begin(), pattern_of_step);
    std::vector<std::uint8_t> section;
    if (patterns.size() == 1) {
        append_u16(section, patterns[0]);
        return section;
    }
    if (patterns.empty()) return section;
    std::vector<std::uint16_t> sorted = patterns;
    const auto middle = sorted.begin() + std::ptrdiff_t(sorted.size() / 2);
    std::nth_element(sorted.begin(), middle, sorted.end());
    const std::uint16_t reference = *middle;
    std::vector<std::uint32_t> codes(patterns.size());
    for (std::size_t i = 0; i < patterns.size(); ++i)
        codes[i] = zigzag(std::int32_t(patterns[i]) - std::int32_t(reference));
    // The smallest k of the shortest code.
    int parameter = 0;
    std::uint64_t shortest = rice_bits(codes, 0);
    for (int k = 1; k <= max_step_rice_parameter; ++k) {
        if (const std::uint64_t bits = rice_bits(codes, k); bits < shortest) {
            shortest = bits;
            parameter = k;
        }
    }
    const std::uint64_t rice_bytes = 3 + (shortest + 7) / 8;
    if (rice_bytes >= 1 + 2 * std::uint64_t(patterns.size())) {
        section.push_back(plain_steps);
        for (const std::uint16_t pattern : patterns) append_u16(section, pattern);
        return section;
    }
    section.push_back(static_cast<std::uint8_t>(parameter));
    append_u16(section, reference);
    codec::BitWriter bits;
    for (const std::uint32_t code : codes) {
        // The quotient in unary (ones, then a zero), then the low bits.
        for (std::uint32_t ones = code >> parameter; ones > 0;) {
            const int run = int(std::min<std::uint32_t>(ones, 32));
            bits.write((std::uint64_t{1} << run) - 1, run);
            ones -= std::uint32_t(run);
        }
        bits.write(0, 1);
        if (parameter > 0) bits.write(code, parameter);
    }
    const auto coded = bits.finish();
    section.insert(section.end(), coded.begin(), coded.end());
    return section;
}

// The steps of a unit from its step section, which they must fill exactly.
std::vector<float> decode_steps(std::span<const std::uint8_t> section, std::uint32_t count,
                                const std::string& where) {
    std::vector<std::uint16_t> patterns;
    const auto bad = [&](const char* what) -> std::vector<float> {
        throw Error(ErrorCode::corrupt_data, where + ": levels unit's steps " + what);
    };
    const auto get_u16 = [&section](std::size_t at) { return load_u16(section.data() + at); };
    if (count == 0) {
        if (!section.empty()) return bad("section is not empty");
    } else if (count == 1) {
        if (section.size() != 2) return bad("section is not two bytes");
        patterns.push_back(get_u16(0));
    } else if (section.empty()) {
        return bad("section is empty");
    } else if (section[0] == plain_steps) {
        if (section.size() != 1 + 2 * std::uint64_t{count})
            return bad("section has the wrong length");
        patterns.resize(count);
        for (std::uint32_t i = 0; i < count; ++i) patterns[i] = get_u16(1 + 2 * std::size_t(i));
    } else {
        const int parameter = section[0];
        if (parameter > max_step_rice_parameter) return bad("name an unknown coding");
        // Each code takes a bit at least: bound the count before allocating.
        if (section.size() < 3 || (section.size() - 3) * 8 < count)
            return bad("section is too short");
        const std::int32_t reference = get_u16(1);
        codec::BitReader bits(section.subspan(3));
        patterns.resize(count);
        for (auto& pattern : patterns) {
            std::uint32_t quotient = 0;
            while (bits.read(1) == 1) {
                if (++quotient > (max_step_distance_code >> parameter) || bits.overran())
                    return bad("hold an over-long code");
            }
            const std::uint32_t code =
                (quotient << parameter) | (parameter > 0 ? bits.read(parameter) : 0);
            const std::int32_t value = reference + unzigzag(code);
            if (code > max_step_distance_code || value < 0 || value > 0xFFFF)
                return bad("hold a pattern out of range");
            pattern = static_cast<std::uint16_t>(value);
        }
        if (bits.overran() || 3 + bits.bytes_used() != section.size())
            return bad("do not fill their section");
    }
    std::vector<float> steps(patterns.size());
    for (std::size_t i = 0; i < patterns.size(); ++i) {
        steps[i] = std::bit_cast<float>(std::uint32_t(patterns[i]) << 16);
        // A step is 0 or a positive normal float (docs/format.md, section 1).
        if (!(steps[i] == 0.0f || (std::isnormal(steps[i]) && steps[i] > 0)))
            throw Error(ErrorCode::corrupt_data, where + ": levels unit has an invalid step");
    }
    return steps;
}

struct Payload {
    std::vector<std::uint8_t> coded;
    std::vector<std::uint8_t> raw;
};

// The header's fields after its fixed twelve bytes (unit format 5, docs/
// format.md §2), as unsigned LEB128 varints: a header of 64 fixed bytes
// was most of the overhead of a small tensor's unit (30 bytes now, typically).
void put_varint(std::vector<std::uint8_t>& out, std::uint64_t value) {
    while (value >= 0x80) {
        out.push_back(static_cast<std::uint8_t>(value | 0x80));
        value >>= 7;
    }
    out.push_back(static_cast<std::uint8_t>(value));
}

// Reads a varint of at most five bytes and 32 bits in its shortest form (so
// that a header has one encoding); false past `end` or on a malformed one.
bool get_varint(const std::uint8_t*& at, const std::uint8_t* end, std::uint32_t& value) {
    std::uint64_t result = 0;
    for (int i = 0; i < 5 && at < end; ++i) {
        const std::uint8_t byte = *at++;
        result |= std::uint64_t(byte & 0x7F) << (7 * i);
        if ((byte & 0x80) == 0) {
            if (i > 0 && byte == 0) return false;  // longer than needed
            if (result > 0xFFFFFFFFu) return false;
            value = static_cast<std::uint32_t>(result);
            return true;
        }
    }
    return false;
}

std::vector<std::uint8_t> assemble(UnitType type, int bits, int parent_bits,
                                   const UnitTarget& target, std::uint64_t channel_size,
                                   std::uint32_t limit, std::span<const float> steps,
                                   const Payload& payload) {
    std::vector<std::uint8_t> unit(unit_fixed_header_bytes);
    for (const std::uint64_t field :
         {std::uint64_t{target.tensor_index}, target.tensor_elements, target.first, target.count,
          channel_size, std::uint64_t{limit}, std::uint64_t{steps.size()},
          std::uint64_t{payload.coded.size()}, std::uint64_t{payload.raw.size()}}) {
        put_varint(unit, field);
    }
    const std::vector<std::uint8_t> step_section = encode_steps(steps);
    unit.insert(unit.end(), step_section.begin(), step_section.end());
    unit.insert(unit.end(), payload.coded.begin(), payload.coded.end());
    unit.insert(unit.end(), payload.raw.begin(), payload.raw.end());
    const std::uint64_t total = std::uint64_t{unit.size()} + 4;
    if (total > 0xFFFFFFFFu)
        throw Error(ErrorCode::invalid_argument, "unit would exceed 4 GiB; use smaller chunks");
    std::uint8_t* at = unit.data();
    std::memcpy(at, magic, 4);
    at[4] = unit_format_version;
    at[5] = static_cast<std::uint8_t>(type);
    at[6] = static_cast<std::uint8_t>(bits);
    at[7] = static_cast<std::uint8_t>(parent_bits);
    store_u32(at + 8, static_cast<std::uint32_t>(total));
    const std::uint32_t crc = core::crc32c(unit);
    unit.resize(total);
    store_u32(unit.data() + total - 4, crc);
    return unit;
}

// Indices with more significant bits than this are split: the top bits go
// through the level model, the rest through the refinement model, whose
// near-uniform low bits are nearly free to decode.
constexpr int unsplit_classes = 5;

int split_bits_for(std::uint32_t limit) {
    return std::max(0, codec::magnitude_class(limit) - unsplit_classes);
}

std::int64_t divide_rounding(std::int64_t value, int k) {
    const std::int64_t half = std::int64_t{1} << (k - 1);
    return value >= 0 ? (value + half) >> k : -((-value + half) >> k);
}

std::uint32_t coarse_limit(std::uint32_t limit, int split) {
    return split == 0 ? limit : static_cast<std::uint32_t>(divide_rounding(limit, split));
}

[[noreturn]] void corrupt(const UnitHeader& header, const char* what) {
    throw Error(ErrorCode::corrupt_data,
                "unit of tensor " + std::to_string(header.target.tensor_index) + " at element " +
                    std::to_string(header.target.first) + ": " + what);
}

std::span<const std::uint8_t> coded_part(const UnitHeader& header,
                                         std::span<const std::uint8_t> unit) {
    return unit.subspan(header.coded_offset(), header.coded_bytes);
}
std::span<const std::uint8_t> raw_part(const UnitHeader& header,
                                       std::span<const std::uint8_t> unit) {
    return unit.subspan(header.coded_offset() + header.coded_bytes, header.raw_bytes);
}

// ---------------------------------------------------------------------------
// Payload coders. The coded payload of a levels or refinement unit starts
// with a byte naming its coder (docs/format.md §3).

// With CoderChoice::compact, chunks up to 2^11 elements, and up to 2^17
// elements whose signs come in runs, are also tried with the adaptive binary
// coder, which needs no tables and follows local statistics (runs of signs,
// rows of different scale), and it is taken where it is smaller (on chunks
// up to 2^11 elements, 2 % smaller). Larger chunks, and those without sign
// runs, where it seldom wins, do not pay for encoding twice.
constexpr std::uint64_t adaptive_trial_elements = std::uint64_t{1} << 17;
constexpr std::uint64_t adaptive_always_tried_elements = std::uint64_t{1} << 11;

// On chunks up to adaptive_always_tried_elements the adaptive coder must save
// this share of the bytes: mobilenetv2's many small depthwise tensors
// otherwise cost 10 % of the model's decoding time for 0.005 % of its bytes.
constexpr double small_chunk_adaptive_gain_needed = 0.02;

bool adaptive_pays(std::size_t adaptive_bytes, std::size_t rans_bytes, std::size_t elements) {
    const double needed =
        elements <= adaptive_always_tried_elements ? small_chunk_adaptive_gain_needed : 0.0;
    return double(adaptive_bytes) < double(rans_bytes) * (1 - needed);
}

// The signs of a chunk's non-zero indices, counted once for both coders.
// Signs are worth coding where they come in runs. The rANS sign stream codes
// flips, whether each non-zero index's sign differs from the previous one's
// (unit format 4), with one table: no symbol's table depends on another
// symbol, so the eight states decode independent chains (a table chosen by
// the previous sign made one serial chain of them all), and the signs are a
// running XOR of the flips. The adaptive coder's context is the previous
// sign.
struct SignPlan {
    bool coded = false;
    std::uint32_t flips[2] = {};  // non-zero indices whose sign stays / flips
    double bits_per_sign = 1.0;   // given the previous sign; below 1 in runs
};
SignPlan plan_signs(std::span<const std::int32_t> indices) {
    SignPlan plan;
    std::uint32_t by_previous[2][2] = {};
    std::uint32_t previous = 0;
    std::uint64_t nonzero = 0;
    for (const std::int32_t index : indices) {
        if (index == 0) continue;
        const std::uint32_t negative = index < 0;
        ++by_previous[previous][negative];
        ++plan.flips[negative ^ previous];
        previous = negative;
        ++nonzero;
    }
    double ideal = 0;
    for (const auto& row : by_previous) {
        const double n = double(row[0]) + double(row[1]);
        for (const std::uint32_t c : row)
            if (c > 0) ideal -= double(c) * std::log2(double(c) / n);
    }
    if (nonzero > 0) plan.bits_per_sign = ideal / double(nonzero);
    const double bits = 8.0 * (rans::state_bytes + 4) + rans::estimated_bits(plan.flips);
    plan.coded = nonzero > 0 && bits < 0.99 * double(nonzero);
    return plan;
}

// Whether to try the adaptive coder at all (it encodes 5x slower): on small
// chunks, and where signs come in runs, which it follows better than rANS.
bool adaptive_worth_trying(std::size_t elements, const SignPlan& signs) {
    if (elements <= adaptive_always_tried_elements) return true;
    return elements <= adaptive_trial_elements && signs.bits_per_sign < 0.99;
}

std::size_t payload_size(const Payload& payload) {
    return payload.coded.size() + payload.raw.size();
}

// Levels tokens (§4.1): magnitudes below 16 are their own token; larger ones
// keep their bit length and the two bits under the leading one, the rest
// travel raw.
constexpr int exact_tokens = 16;
constexpr int token_top_bits = 2;

struct TokenInfo {
    std::uint32_t base = 0;  // smallest magnitude of the token
    int raw_bits = 0;        // magnitude bits below the token's
};

int level_token(std::uint32_t magnitude) {
    if (magnitude < exact_tokens) return int(magnitude);
    const int n = std::bit_width(magnitude) - 1;  // >= 4
    return exact_tokens + 4 * (n - 4) + int((magnitude >> (n - token_top_bits)) & 3u);
}

TokenInfo token_info(int token) {
    if (token < exact_tokens) return {std::uint32_t(token), 0};
    const int n = (token - exact_tokens) / 4 + 4;
    const std::uint32_t top = std::uint32_t(token - exact_tokens) & 3u;
    return {(4u | top) << (n - token_top_bits), n - token_top_bits};
}

constexpr int max_contexts = 4;
// Levels use more than one context only if that codes at least 0.2 % smaller.
constexpr double context_gain_needed = 0.002;

// The level context of an element: its predecessor tokens' rounded mean,
// cut by the unit's thresholds.
// From the tokens three and four places back, not the previous ones: the
// decoder then runs three independent chains of table lookups instead of
// one, as fast as without contexts, for 0.02 % more bytes.
inline int level_prediction(int third_last, int fourth_last) {
    return (third_last + fourth_last + 1) >> 1;
}

// The context of each prediction: how many of the unit's thresholds it
// reaches. Encoder and decoder both use this one rule.
std::array<std::uint8_t, rans::max_alphabet> context_by_prediction(
    std::span<const std::uint8_t> thresholds, int alphabet) {
    std::array<std::uint8_t, rans::max_alphabet> context{};
    for (int p = 0; p < alphabet; ++p)
        for (const std::uint8_t threshold : thresholds) context[std::size_t(p)] += p >= threshold;
    return context;
}

// Chooses up to max_contexts contexts, as contiguous ranges of the
// prediction, minimizing the estimated coded size including tables: a small
// dynamic programme over the joint histogram, cutting only at (up to 16)
// quantiles of the prediction so that it stays cheap.
std::vector<std::uint8_t> choose_thresholds(const std::vector<std::uint32_t>& joint, int alphabet) {
    const auto a = std::size_t(alphabet);
    std::vector<std::uint64_t> row_mass(a, 0);
    std::uint64_t total = 0;
    for (std::size_t p = 0; p < a; ++p) {
        for (std::size_t t = 0; t < a; ++t) row_mass[p] += joint[p * a + t];
        total += row_mass[p];
    }
    // Candidate cuts: 0, the predictions where the cumulative mass crosses
    // q/16, and a.
    constexpr std::uint64_t quantiles = 16;
    std::vector<std::size_t> cuts = {0};
    std::uint64_t below = 0;
    for (std::size_t p = 0; p + 1 < a; ++p) {
        below += row_mass[p];
        if (below * quantiles / std::max<std::uint64_t>(total, 1) >
                (below - row_mass[p]) * quantiles / std::max<std::uint64_t>(total, 1) &&
            below < total) {
            cuts.push_back(p + 1);
        }
    }
    cuts.push_back(a);
    const std::size_t m = cuts.size();
    // cost[i][j]: one context covering predictions [cuts[i], cuts[j]).
    std::vector<double> cost(m * m, 0.0);
    std::vector<std::uint32_t> counts(a);
    for (std::size_t i = 0; i + 1 < m; ++i) {
        std::fill(counts.begin(), counts.end(), 0u);
        for (std::size_t j = i + 1; j < m; ++j) {
            for (std::size_t p = cuts[j - 1]; p < cuts[j]; ++p)
                for (std::size_t t = 0; t < a; ++t) counts[t] += joint[p * a + t];
            cost[i * m + j] = rans::estimated_bits(counts);
        }
    }
    // best[c][j]: predictions [0, cuts[j]) in c + 1 contexts.
    constexpr double infinity = 1e300;
    std::vector<std::vector<double>> best(max_contexts, std::vector<double>(m, infinity));
    std::vector<std::vector<std::size_t>> from(max_contexts, std::vector<std::size_t>(m, 0));
    for (std::size_t j = 1; j < m; ++j) best[0][j] = cost[j];
    for (std::size_t c = 1; c < std::size_t(max_contexts); ++c) {
        for (std::size_t j = c + 1; j < m; ++j) {
            for (std::size_t i = c; i < j; ++i) {
                const double bits = best[c - 1][i] + cost[i * m + j] + 8;
                if (bits < best[c][j]) {
                    best[c][j] = bits;
                    from[c][j] = i;
                }
            }
        }
    }
    // Contexts chain each symbol's table to earlier symbols (three chains
    // deep, nearly free), and cost 8 bits of thresholds plus a table each.
    std::size_t contexts = 1;
    for (std::size_t c = 1; c < std::size_t(max_contexts); ++c) {
        if (best[c][m - 1] < best[contexts - 1][m - 1] &&
            best[c][m - 1] < best[0][m - 1] * (1 - context_gain_needed)) {
            contexts = c + 1;
        }
    }
    std::vector<std::uint8_t> thresholds(contexts - 1);
    std::size_t j = m - 1;
    for (std::size_t c = contexts - 1; c > 0; --c) {
        j = from[c][j];
        thresholds[c - 1] = static_cast<std::uint8_t>(cuts[j]);
    }
    return thresholds;
}

// The token histogram of each prediction context `thresholds` cut from the
// joint histogram of (prediction, token).
std::vector<std::vector<std::uint32_t>> context_histograms(
    const std::vector<std::uint32_t>& joint, int alphabet,
    std::span<const std::uint8_t> thresholds) {
    const auto a = std::size_t(alphabet);
    const auto context_of = context_by_prediction(thresholds, alphabet);
    std::vector<std::vector<std::uint32_t>> histograms(thresholds.size() + 1,
                                                       std::vector<std::uint32_t>(a, 0));
    for (std::size_t p = 0; p < a; ++p)
        for (std::size_t t = 0; t < a; ++t) histograms[context_of[p]][t] += joint[p * a + t];
    return histograms;
}

// Estimated bits of prediction contexts: each context's symbols and table,
// and a byte per threshold.
double context_bits(const std::vector<std::vector<std::uint32_t>>& histograms) {
    double bits = 8.0 * double(histograms.size() - 1);
    for (const auto& histogram : histograms) bits += rans::estimated_bits(histogram);
    return bits;
}

// Row classes (unit format 4, §4.1). The rows of a tensor (its slices along
// the first axis: a convolution's output channels) often differ in spread
// even where they share a step. Sorting the rows a unit touches into a few
// classes, each with its own table, codes them below one table; a row's
// class costs ceil(log2 K) bits. DeepCABAC's adaptive contexts follow the
// same variation as they go; static tables need it spelled out.
constexpr int max_row_classes = 8;
constexpr int row_class_iterations = 4;
// Row classes replace the prediction contexts only where they save this:
// like contexts, more tables cost the decoder cache (mobilenetv2's 4-bit
// rung decodes 5-10 % slower with them).
constexpr double row_classes_gain_needed = 0.002;
// Nor are they tried on alphabets larger than this (16-bit rungs, 60
// tokens): there they saved 0.06 % and took a third of the encoding time.
constexpr int row_classes_largest_alphabet = 32;

struct RowClasses {
    std::uint64_t row_length = 0;  // 0: the unit has no row classes
    int classes = 1;
    std::vector<std::uint8_t> class_of_row;          // each row the unit touches
    std::vector<std::vector<std::uint32_t>> counts;  // token histogram per class
    double bits = 0;                                 // estimated, class bits included
};

int row_class_bits(int classes) {
    return std::bit_width(unsigned(classes - 1));
}

// The rows a unit of `count` elements from tensor element `first` touches.
std::uint64_t rows_touched(std::uint64_t first, std::uint64_t count, std::uint64_t row_length) {
    return count == 0 ? 0 : (first % row_length + count + row_length - 1) / row_length;
}

// Calls visit(row, begin, end) for each row the unit touches, with its
// elements [begin, end) counted from the unit's first.
template <typename Visit>
void for_each_row(std::uint64_t first, std::uint64_t count, std::uint64_t row_length, Visit visit) {
    std::uint64_t begin = 0;
    std::uint64_t end = std::min(count, row_length - first % row_length);
    for (std::size_t row = 0; begin < count; ++row) {
        visit(row, begin, end);
        begin = end;
        end = std::min(count, end + row_length);
    }
}

// Sorts the rows into 2 or 4 classes by their mean token, then improves the
// classes a few rounds (each row to the class whose table codes it
// shortest, Lloyd's way), and keeps the better count.
RowClasses choose_row_classes(std::span<const std::uint8_t> tokens, int alphabet,
                              std::uint64_t first, std::uint64_t row_length) {
    if (row_length == 0 || tokens.empty() || alphabet > row_classes_largest_alphabet) return {};
    const auto a = std::size_t(alphabet);
    const std::uint64_t rows = rows_touched(first, tokens.size(), row_length);
    // Too few rows to sort, or rows too short for their histograms to say
    // much; on large chunks, rows shorter than twice the alphabet would cost
    // the encoder more than they save (sorting costs rows x alphabet x
    // classes a round).
    const std::uint64_t most_histogram_entries =
        tokens.size() > (std::uint64_t{1} << 16) ? tokens.size() / 2 : 2 * tokens.size();
    if (rows < 4 || rows * a > most_histogram_entries) return {};
    std::vector<std::uint32_t> row_counts(rows * a, 0);
    std::vector<double> mean(rows, 0.0);
    for_each_row(first, tokens.size(), row_length,
                 [&](std::size_t row, std::uint64_t begin, std::uint64_t end) {
                     std::uint64_t sum = 0;
                     for (std::uint64_t i = begin; i < end; ++i) {
                         ++row_counts[row * a + tokens[i]];
                         sum += tokens[i];
                     }
                     mean[row] = double(sum) / double(end - begin);
                 });
    std::vector<std::uint32_t> by_mean(rows);
    for (std::uint32_t r = 0; r < rows; ++r) by_mean[r] = r;
    std::stable_sort(by_mean.begin(), by_mean.end(),
                     [&](std::uint32_t x, std::uint32_t y) { return mean[x] < mean[y]; });

    RowClasses best;
    for (const int classes : {2, 4}) {
        const auto k = std::size_t(classes);
        if (rows < 2 * k) continue;
        std::vector<std::uint8_t> class_of_row(rows);
        for (std::size_t rank = 0; rank < rows; ++rank)
            class_of_row[by_mean[rank]] = static_cast<std::uint8_t>(rank * k / rows);
        std::vector<std::vector<std::uint32_t>> counts;
        const auto count_classes = [&] {
            counts.assign(k, std::vector<std::uint32_t>(a, 0));
            for (std::size_t r = 0; r < rows; ++r)
                for (std::size_t t = 0; t < a; ++t)
                    counts[class_of_row[r]][t] += row_counts[r * a + t];
        };
        count_classes();
        std::vector<double> cost(k * a);
        for (int round = 0; round < row_class_iterations; ++round) {
            for (std::size_t c = 0; c < k; ++c) {
                double total = 0;
                for (const std::uint32_t n : counts[c]) total += n;
                for (std::size_t t = 0; t < a; ++t)  // smoothed, so no symbol is impossible
                    cost[c * a + t] = -std::log2((counts[c][t] + 0.5) / (total + 0.5 * double(a)));
            }
            bool changed = false;
            for (std::size_t r = 0; r < rows; ++r) {
                std::size_t chosen = class_of_row[r];
                double chosen_bits = 1e300;
                for (std::size_t c = 0; c < k; ++c) {
                    double bits = 0;
                    for (std::size_t t = 0; t < a; ++t)
                        bits += double(row_counts[r * a + t]) * cost[c * a + t];
                    if (bits < chosen_bits) {
                        chosen_bits = bits;
                        chosen = c;
                    }
                }
                changed |= chosen != class_of_row[r];
                class_of_row[r] = static_cast<std::uint8_t>(chosen);
            }
            count_classes();
            if (!changed) break;
        }
        double bits = double(rows) * row_class_bits(classes) + 8.0 * 5;
        for (const auto& histogram : counts) bits += rans::estimated_bits(histogram);
        if (best.classes == 1 || bits < best.bits)
            best = {row_length, classes, std::move(class_of_row), std::move(counts), bits};
    }
    return best;
}

std::vector<std::uint8_t> concatenate(const std::vector<std::uint8_t>& a,
                                      const std::vector<std::uint8_t>& b) {
    std::vector<std::uint8_t> joined(a.size() + b.size());
    std::copy(a.begin(), a.end(), joined.begin());
    std::copy(b.begin(), b.end(), joined.begin() + std::ptrdiff_t(a.size()));
    return joined;
}

Payload with_coder_byte(UnitCoder coder, const std::vector<std::uint8_t>& coded,
                        std::vector<std::uint8_t> raw) {
    return {concatenate({std::uint8_t(coder)}, coded), std::move(raw)};
}

// The part of a rANS payload before the stream: coder byte, context count,
// thresholds, tables.
std::vector<std::uint8_t> rans_preamble(std::span<const std::uint8_t> thresholds,
                                        const std::vector<std::vector<std::uint16_t>>& tables,
                                        std::size_t contexts, std::uint32_t sign_stream_bytes,
                                        const RowClasses& rows = {}) {
    codec::BitWriter table_bits;
    for (const std::uint8_t row_class : rows.class_of_row)
        table_bits.write(row_class, row_class_bits(rows.classes));
    for (const auto& table : tables) rans::write_table(table_bits, table);
    const auto packed = table_bits.finish();
    // Bit 7 of the context count: levels whose signs are coded (only levels
    // have a sign stream); bit 6: levels with row classes.
    const bool signs = sign_stream_bytes > 0;
    const bool row_classes = rows.row_length != 0;
    std::vector<std::uint8_t> bytes = {
        std::uint8_t(UnitCoder::rans),
        static_cast<std::uint8_t>(contexts | (signs ? 0x80u : 0u) | (row_classes ? 0x40u : 0u))};
    bytes.reserve(16 + thresholds.size() + packed.size());
    for (const std::uint8_t threshold : thresholds) bytes.push_back(threshold);
    if (row_classes) {
        append_u32(bytes, static_cast<std::uint32_t>(rows.row_length));
        bytes.push_back(static_cast<std::uint8_t>(rows.classes));
    }
    if (signs)  // the sign stream's length
        append_u32(bytes, sign_stream_bytes);
    for (const std::uint8_t byte : packed) bytes.push_back(byte);
    return bytes;
}

Payload encode_levels_rans(std::span<const std::int32_t> indices, std::uint32_t limit,
                           const SignPlan& signs, std::uint64_t first, std::uint64_t row_length) {
    const int alphabet = level_token(limit) + 1;
    const auto a = std::size_t(alphabet);
    std::vector<std::uint8_t> tokens(indices.size());
    // The joint histogram of (prediction, token), in four interleaved copies
    // on large chunks: a run of equal tokens would otherwise wait on its own
    // increments.
    const std::size_t copies = indices.size() >= 65536 && a <= 64 ? 4 : 1;
    std::vector<std::uint32_t> joint_copies(copies * a * a, 0);
    const std::uint32_t sign_bit = signs.coded ? 0 : 1;  // in the raw stream
    codec::BitWriter raw;
    raw.reserve(indices.size() / 2 + 8);
    for (std::size_t i = 0; i < indices.size(); ++i) {
        const std::int32_t index = indices[i];
        const auto magnitude = static_cast<std::uint32_t>(index < 0 ? -std::int64_t{index} : index);
        const int token = level_token(magnitude);
        tokens[i] = static_cast<std::uint8_t>(token);
        const int p = level_prediction(i >= 3 ? tokens[i - 3] : 0, i >= 4 ? tokens[i - 4] : 0);
        ++joint_copies[(i % copies) * a * a + std::size_t(p) * a + std::size_t(token)];
        const TokenInfo info = token_info(token);
        // The sign of a non-zero index (unless signs are coded), then the
        // bits under its token.
        if (magnitude != 0) {
            raw.write((std::uint64_t{index < 0} & sign_bit) |
                          (std::uint64_t{magnitude - info.base} << sign_bit),
                      info.raw_bits + int(sign_bit));
        }
    }
    std::vector<std::uint32_t> joint(joint_copies.begin(),
                                     joint_copies.begin() + std::ptrdiff_t(a * a));
    for (std::size_t copy = 1; copy < copies; ++copy)
        for (std::size_t j = 0; j < a * a; ++j) joint[j] += joint_copies[copy * a * a + j];
    auto thresholds = choose_thresholds(joint, alphabet);
    RowClasses rows = choose_row_classes(tokens, alphabet, first, row_length);
    auto histograms = context_histograms(joint, alphabet, thresholds);
    if (rows.classes > 1 && rows.bits >= context_bits(histograms) * (1 - row_classes_gain_needed)) {
        rows = {};
    }
    if (rows.classes > 1) {
        // One table per class of rows, no prediction contexts.
        thresholds.clear();
        histograms = std::move(rows.counts);
    }
    std::vector<std::vector<std::uint16_t>> tables;
    for (const auto& histogram : histograms) tables.push_back(rans::normalize(histogram));
    std::vector<rans::EncodeTable> encode_tables;
    for (const auto& table : tables) encode_tables.push_back(rans::make_encode_table(table));
    rans::Encoder encoder(indices.size());
    if (rows.classes > 1) {
        std::vector<std::uint64_t> row_begins;
        for_each_row(
            first, indices.size(), row_length,
            [&](std::size_t, std::uint64_t begin, std::uint64_t) { row_begins.push_back(begin); });
        for (std::size_t row = row_begins.size(), i = indices.size(); row-- > 0;) {
            const rans::EncodeTable& table = encode_tables[rows.class_of_row[row]];
            for (; i-- > row_begins[row];) encoder.put(i, table, tokens[i]);
            ++i;
        }
    } else {
        const auto context_of = context_by_prediction(thresholds, alphabet);
        for (std::size_t i = indices.size(); i-- > 0;) {
            const int p = level_prediction(i >= 3 ? tokens[i - 3] : 0, i >= 4 ? tokens[i - 4] : 0);
            const rans::EncodeTable& table = encode_tables[context_of[std::size_t(p)]];
            encoder.put(i, table, tokens[i]);
        }
    }
    // With row classes there is one prediction context and a table per class.
    const std::size_t contexts = thresholds.size() + 1;
    const std::size_t symbol_tables = tables.size();
    std::vector<std::uint8_t> sign_stream;
    if (signs.coded) {
        tables.push_back(rans::normalize(signs.flips));
        const rans::EncodeTable flip_table = rans::make_encode_table(tables[symbol_tables]);
        // Non-zero indices only, each on state (its rank among them) mod 8.
        std::vector<std::uint8_t> flips;
        std::uint8_t previous = 0;
        for (const std::int32_t index : indices) {
            if (index == 0) continue;
            const std::uint8_t negative = index < 0;
            flips.push_back(negative ^ previous);
            previous = negative;
        }
        rans::Encoder sign_encoder(flips.size());
        for (std::size_t j = flips.size(); j-- > 0;) sign_encoder.put(j, flip_table, flips[j]);
        sign_stream = sign_encoder.finish();
    }
    auto coded = concatenate(
        rans_preamble(thresholds, tables, contexts, std::uint32_t(sign_stream.size()), rows),
        sign_stream);
    return {concatenate(coded, encoder.finish()), raw.finish()};
}

Payload encode_levels_adaptive(std::span<const std::int32_t> indices, std::uint32_t limit,
                               int split) {
    codec::RangeEncoder coder;
    codec::BitWriter raw;
    codec::LevelModel model(codec::magnitude_class(coarse_limit(limit, split)));
    if (split == 0) {
        for (const std::int32_t index : indices) model.encode(index, coder, raw);
    } else {
        codec::ResidualModel residual_model(split, codec::ResidualRanges::split);
        for (const std::int32_t index : indices) {
            const std::int64_t coarse = divide_rounding(index, split);
            model.encode(static_cast<std::int32_t>(coarse), coder, raw);
            residual_model.encode(static_cast<std::int32_t>(coarse),
                                  static_cast<std::int32_t>(index - (coarse << split)), coder, raw);
        }
    }
    return with_coder_byte(UnitCoder::adaptive, coder.finish(), raw.finish());
}

// Refinement symbols (§5.1): the residual's offset o (r + h - 1 above zero,
// h - 1 - r below, r + h at zero; small offsets lie towards zero), as its
// top bits; the rest raw.
constexpr int refinement_symbol_bits = 4;

struct RefinementShape {
    int k = 0;
    int top_bits = 0;  // bits of o in the symbol
    int raw_bits = 0;  // bits of o below them
    int alphabet = 0;  // 2^top_bits + 1: the last symbol is o = 2^k, zero cell only
};
RefinementShape refinement_shape(int k) {
    const int top = std::min(k, refinement_symbol_bits);
    return {k, top, k - top, (1 << top) + 1};
}

// The offset of residual r under coarse index p (the decoder inverts it in
// decode_refinement_rans).
inline std::uint32_t refinement_offset(std::int32_t parent, std::int64_t residual, int k) {
    const std::int64_t half = std::int64_t{1} << (k - 1);
    if (parent > 0) return static_cast<std::uint32_t>(residual + half - 1);
    if (parent < 0) return static_cast<std::uint32_t>(half - 1 - residual);
    return static_cast<std::uint32_t>(residual + half);
}

// Refinements have up to three contexts, by min(|parent index|, 2).
constexpr int max_refinement_contexts = 3;

inline std::uint32_t refinement_context(std::int32_t parent, int contexts) {
    const std::uint32_t magnitude =
        static_cast<std::uint32_t>(parent < 0 ? -std::int64_t{parent} : parent);
    return std::min<std::uint32_t>(magnitude, std::uint32_t(contexts - 1));
}

// A context whose symbols are near-uniform sends them raw (the whole offset,
// k bits) if that costs at most this share of the context's bits more than
// coding them: its elements then skip the rANS decoder, the slow part of a
// refinement (8→16 refinements of trained weights are near-uniform in every
// cell but the zero cell).
constexpr double raw_context_tolerance = 0.002;

// The residuals lie in their ranges (checked by the caller).
Payload encode_refinement_rans(std::span<const std::int32_t> coarse,
                               std::span<const std::int32_t> residuals, int k) {
    const RefinementShape shape = refinement_shape(k);
    const auto a = std::size_t(shape.alphabet);
    std::vector<std::uint32_t> offsets(residuals.size());
    std::vector<std::uint32_t> counts(max_refinement_contexts * a, 0);
    for (std::size_t i = 0; i < residuals.size(); ++i) {
        offsets[i] = refinement_offset(coarse[i], residuals[i], k);
        const std::uint32_t symbol = offsets[i] >> shape.raw_bits;
        ++counts[refinement_context(coarse[i], max_refinement_contexts) * a + symbol];
    }
    // One, two or three contexts, each coded or raw (not context 0, which
    // holds the zero cell's 2^k + 1 offsets), whichever codes smallest.
    struct Choice {
        double bits = 1e300;
        std::vector<std::vector<std::uint16_t>> tables;  // of the coded contexts
        std::uint8_t raw_mask = 0;
    };
    Choice best;
    int contexts = 1;
    for (int candidate = 1; candidate <= max_refinement_contexts; ++candidate) {
        Choice choice;
        choice.bits = 0;
        for (int c = 0; c < candidate; ++c) {
            std::vector<std::uint32_t> merged(a, 0);
            std::uint64_t elements = 0;
            for (int from = 0; from < max_refinement_contexts; ++from) {
                if (std::min(from, candidate - 1) != c) continue;
                for (std::size_t s = 0; s < a; ++s) {
                    merged[s] += counts[std::size_t(from) * a + s];
                    elements += counts[std::size_t(from) * a + s];
                }
            }
            const double coded = rans::coded_bits(merged);
            const double raw = double(elements) * shape.top_bits;
            if (c > 0 && raw <= coded + raw_context_tolerance * double(elements) * k) {
                choice.bits += raw;
                choice.raw_mask |= std::uint8_t(1u << c);
            } else {
                choice.bits += coded;
                choice.tables.push_back(rans::normalize(merged));
            }
        }
        if (choice.bits < best.bits) {
            best = std::move(choice);
            contexts = candidate;
        }
    }
    std::vector<rans::EncodeTable> encode_tables;  // by context; raw ones stay empty
    std::size_t next_table = 0;
    for (int c = 0; c < contexts; ++c) {
        encode_tables.push_back((best.raw_mask >> c) & 1u
                                    ? rans::EncodeTable{}
                                    : rans::make_encode_table(best.tables[next_table++]));
    }
    // The raw payload: s bits under a coded symbol, all k bits in a raw context.
    codec::BitWriter raw;
    raw.reserve(residuals.size() * std::size_t(k) / 8 + 8);
    std::size_t coded_elements = 0;
    for (std::size_t i = 0; i < residuals.size(); ++i) {
        const bool raw_context = (best.raw_mask >> refinement_context(coarse[i], contexts)) & 1u;
        coded_elements += !raw_context;
        if (raw_context) {
            raw.write(offsets[i], k);
        } else if (shape.raw_bits > 0) {
            raw.write(offsets[i], shape.raw_bits);
        }
    }
    // Coded elements only, the j-th of them on state j mod 8.
    rans::Encoder encoder(coded_elements);
    std::size_t j = coded_elements;
    for (std::size_t i = residuals.size(); i-- > 0;) {
        const std::uint32_t context = refinement_context(coarse[i], contexts);
        if ((best.raw_mask >> context) & 1u) continue;
        encoder.put(--j, encode_tables[context], offsets[i] >> shape.raw_bits);
    }
    auto preamble = rans_preamble({}, best.tables, std::size_t(contexts), 0);
    preamble.insert(preamble.begin() + 2, best.raw_mask);
    return {concatenate(preamble, encoder.finish()), raw.finish()};
}

Payload encode_refinement_adaptive(std::span<const std::int32_t> coarse,
                                   std::span<const std::int32_t> residuals, int k) {
    codec::RangeEncoder coder;
    codec::BitWriter raw;
    codec::ResidualModel model(k, codec::ResidualRanges::ladder);
    for (std::size_t i = 0; i < residuals.size(); ++i)
        model.encode(coarse[i], residuals[i], coder, raw);
    return with_coder_byte(UnitCoder::adaptive, coder.finish(), raw.finish());
}

// A parsed rANS preamble: decode tables by context and where the stream starts.
struct RansSetup {
    int contexts = 0;
    bool signs = false;  // levels: signs coded in their own stream
    // Levels with coded signs: the flips' table (on the heap: most units
    // have none, and the setup stays small).
    std::vector<rans::DecodeTable> sign_table;
    std::span<const std::uint8_t> sign_stream;
    std::array<std::uint8_t, max_contexts - 1> thresholds{};
    std::uint8_t raw_mask = 0;  // refinements: bit c set if context c travels raw
    // Levels with row classes: rows of row_length tensor elements, the class
    // of each row the unit touches, and a table per class in `tables`.
    std::uint64_t row_length = 0;
    std::vector<std::uint8_t> class_of_row;
    std::vector<rans::DecodeTable> tables;  // by context or class (a raw context's unused)
    std::span<const std::uint8_t> stream;
};

RansSetup read_rans_setup(const UnitHeader& header, std::span<const std::uint8_t> coded,
                          int alphabet, bool levels) {
    const int max_allowed_contexts = levels ? max_contexts : max_refinement_contexts;
    RansSetup setup;
    if (coded.size() < 2) corrupt(header, "rANS payload too short");
    setup.contexts = coded[1] & 0x3F;
    setup.signs = (coded[1] & 0x80) != 0;
    const bool row_classes = (coded[1] & 0x40) != 0;
    if (setup.contexts < 1 || setup.contexts > max_allowed_contexts)
        corrupt(header, "bad rANS context count");
    if (setup.signs && !levels) corrupt(header, "refinement unit with coded signs");
    if (row_classes && (!levels || setup.contexts != 1))
        corrupt(header, "row classes outside a one-context levels unit");
    std::size_t at = 2;
    if (levels) {  // thresholds follow
        if (coded.size() < at + std::size_t(setup.contexts - 1))
            corrupt(header, "rANS payload too short");
        int previous = 0;
        for (int c = 0; c < setup.contexts - 1; ++c) {
            const int threshold = coded[at++];
            if (threshold <= previous || threshold >= alphabet)
                corrupt(header, "bad rANS context thresholds");
            setup.thresholds[std::size_t(c)] = static_cast<std::uint8_t>(threshold);
            previous = threshold;
        }
    } else {  // the raw contexts follow
        if (coded.size() < at + 1) corrupt(header, "rANS payload too short");
        setup.raw_mask = coded[at++];
        // Context 0 holds the zero cell (2^k + 1 offsets): never raw.
        if ((setup.raw_mask & 1u) != 0 || (setup.raw_mask >> setup.contexts) != 0)
            corrupt(header, "bad raw contexts");
    }
    int classes = 0;
    if (row_classes) {
        if (coded.size() < at + 5) corrupt(header, "rANS payload too short");
        setup.row_length = load_u32(coded.data() + at);
        classes = coded[at + 4];
        at += 5;
        if (setup.row_length == 0 || classes < 2 || classes > max_row_classes)
            corrupt(header, "bad row classes");
    }
    std::uint32_t sign_stream_bytes = 0;
    if (setup.signs) {
        if (coded.size() < at + 4) corrupt(header, "rANS payload too short");
        sign_stream_bytes = load_u32(coded.data() + at);
        at += 4;
        if (sign_stream_bytes < rans::state_bytes) corrupt(header, "bad rANS sign stream");
    }
    codec::BitReader table_bits(coded.subspan(at));
    if (row_classes) {
        // Each class takes bits of the payload: bound the rows by its size
        // before allocating for them.
        const std::uint64_t rows =
            rows_touched(header.target.first, header.target.count, setup.row_length);
        const int bits = row_class_bits(classes);
        if (rows > 8 * std::uint64_t(coded.size() - at) / std::uint64_t(bits))
            corrupt(header, "rANS payload too short for its row classes");
        setup.class_of_row.resize(rows);
        for (auto& row_class : setup.class_of_row) {
            row_class = static_cast<std::uint8_t>(table_bits.read(bits));
            if (row_class >= classes) corrupt(header, "bad row class");
        }
        if (table_bits.overran()) corrupt(header, "rANS payload too short for its row classes");
    }
    const int symbol_tables = row_classes ? classes : setup.contexts;
    setup.tables.resize(std::size_t(symbol_tables));
    std::array<std::uint16_t, rans::max_alphabet> frequencies{};
    for (int c = 0; c < symbol_tables; ++c) {
        if ((setup.raw_mask >> c) & 1u) continue;
        auto& table = setup.tables[std::size_t(c)];
        if (!rans::read_table(table_bits, alphabet, frequencies.data()))
            corrupt(header, "bad rANS frequency table");
        rans::build_decode_table(std::span(frequencies).first(std::size_t(alphabet)), table);
    }
    if (setup.signs) {
        if (!rans::read_table(table_bits, 2, frequencies.data()))
            corrupt(header, "bad rANS sign table");
        setup.sign_table.resize(1);
        rans::build_decode_table(std::span(frequencies).first(2), setup.sign_table[0]);
    }
    at += table_bits.bytes_used();
    if (setup.signs) {
        if (coded.size() < at || coded.size() - at < sign_stream_bytes)
            corrupt(header, "rANS sign stream too short");
        setup.sign_stream = coded.subspan(at, sign_stream_bytes);
        at += sign_stream_bytes;
    }
    if (coded.size() < at + rans::state_bytes) corrupt(header, "rANS stream too short");
    setup.stream = coded.subspan(at);
    return setup;
}

// Decodes one symbol per element of `out`, lane i mod 8, with the table
// table_for(i) names; seen(symbol) hears each symbol as it is decoded. The
// states live in locals, eight at a time. block_table(i), asked before each
// block of eight from element i, may name one table for the whole block
// (row classes: no per-symbol check), or nullptr.
// Always inlined, and its per-symbol step too: with several instantiations
// in one function GCC otherwise calls the step out of line, 10 % slower.
template <typename TableFor, typename Seen, typename BlockTable>
[[gnu::always_inline]] inline void decode_symbols(rans::Decoder& decoder,
                                                  std::span<std::int32_t> out, TableFor table_for,
                                                  Seen seen, BlockTable block_table) {
    auto& lanes = decoder.states();
    std::uint32_t x0 = lanes[0], x1 = lanes[1], x2 = lanes[2], x3 = lanes[3], x4 = lanes[4],
                  x5 = lanes[5], x6 = lanes[6], x7 = lanes[7];
    auto one = [&](std::uint32_t & x, std::size_t i) __attribute__((always_inline)) {
        const std::uint32_t symbol = decoder.get_unchecked(x, table_for(i));
        seen(symbol);
        return static_cast<std::int32_t>(symbol);
    };
    auto checked = [&](std::uint32_t& x, std::size_t i) {
        const std::uint32_t symbol = decoder.get(x, table_for(i));
        seen(symbol);
        return static_cast<std::int32_t>(symbol);
    };
    std::int32_t* at = out.data();
    std::size_t i = 0;
    const std::size_t blocks = out.size() / rans::lanes * rans::lanes;
    for (; i < blocks && decoder.can_get_eight_unchecked(); i += rans::lanes, at += rans::lanes) {
        if (const rans::DecodeTable* table = block_table(i)) {
            at[0] = static_cast<std::int32_t>(decoder.get_unchecked(x0, *table));
            at[1] = static_cast<std::int32_t>(decoder.get_unchecked(x1, *table));
            at[2] = static_cast<std::int32_t>(decoder.get_unchecked(x2, *table));
            at[3] = static_cast<std::int32_t>(decoder.get_unchecked(x3, *table));
            at[4] = static_cast<std::int32_t>(decoder.get_unchecked(x4, *table));
            at[5] = static_cast<std::int32_t>(decoder.get_unchecked(x5, *table));
            at[6] = static_cast<std::int32_t>(decoder.get_unchecked(x6, *table));
            at[7] = static_cast<std::int32_t>(decoder.get_unchecked(x7, *table));
            continue;
        }
        at[0] = one(x0, i);
        at[1] = one(x1, i + 1);
        at[2] = one(x2, i + 2);
        at[3] = one(x3, i + 3);
        at[4] = one(x4, i + 4);
        at[5] = one(x5, i + 5);
        at[6] = one(x6, i + 6);
        at[7] = one(x7, i + 7);
    }
    lanes = {x0, x1, x2, x3, x4, x5, x6, x7};
    for (; i < out.size(); ++i) out[i] = checked(lanes[i % rans::lanes], i);
}

template <typename TableFor, typename Seen>
[[gnu::always_inline]] inline void decode_symbols(rans::Decoder& decoder,
                                                  std::span<std::int32_t> out, TableFor table_for,
                                                  Seen seen) {
    decode_symbols(decoder, out, table_for, seen,
                   [](std::size_t) -> const rans::DecodeTable* { return nullptr; });
}

void decode_levels_rans(const UnitHeader& header, std::span<const std::uint8_t> unit,
                        std::span<std::int32_t> out) {
    const int alphabet = level_token(header.limit) + 1;
    const RansSetup setup = read_rans_setup(header, coded_part(header, unit), alphabet, true);
    // Per prediction: its context's table; per token: base and raw bit count.
    const auto context_of = context_by_prediction(
        std::span(setup.thresholds).first(std::size_t(setup.contexts - 1)), alphabet);
    std::array<const rans::DecodeTable*, rans::max_alphabet> table_of{};
    for (int p = 0; p < alphabet; ++p)
        table_of[std::size_t(p)] = &setup.tables[context_of[std::size_t(p)]];
    std::array<std::uint32_t, rans::max_alphabet> base{};
    std::array<std::uint8_t, rans::max_alphabet> raw_bits{};  // sign bit included
    for (int t = 0; t < alphabet; ++t) {
        const TokenInfo info = token_info(t);
        base[std::size_t(t)] = info.base;
        raw_bits[std::size_t(t)] = static_cast<std::uint8_t>(t == 0 ? 0 : info.raw_bits + 1);
    }
    rans::Decoder decoder(setup.stream);
    // Pass 1: the tokens, into `out`. Pass 2: magnitudes and signs from the
    // raw bits. Two light loops keep the states in registers.
    if (!setup.class_of_row.empty()) {
        // Each row's table; the next row starts at element row_end.
        const std::uint64_t row_length = setup.row_length;
        std::uint64_t row_end = row_length - header.target.first % row_length;
        std::size_t row = 0;
        const rans::DecodeTable* table = &setup.tables[setup.class_of_row[0]];
        const auto reach = [&](std::size_t i) {
            while (i >= row_end) {
                table = &setup.tables[setup.class_of_row[++row]];
                row_end += row_length;
            }
        };
        decode_symbols(
            decoder, out,
            [&](std::size_t i) -> const rans::DecodeTable& {
                reach(i);
                return *table;
            },
            [](std::uint32_t) {},
            [&](std::size_t i) -> const rans::DecodeTable* {
                reach(i);
                return i + rans::lanes <= row_end ? table : nullptr;
            });
    } else if (setup.contexts == 1) {
        decode_symbols(
            decoder, out, [&](std::size_t) -> const rans::DecodeTable& { return setup.tables[0]; },
            [](std::uint32_t) {});
    } else {
        std::uint32_t last = 0, second_last = 0, third_last = 0, fourth_last = 0;
        decode_symbols(
            decoder, out,
            [&](std::size_t) -> const rans::DecodeTable& {
                return *table_of[std::size_t(level_prediction(int(third_last), int(fourth_last)))];
            },
            [&](std::uint32_t token) {
                fourth_last = third_last;
                third_last = second_last;
                second_last = last;
                last = token;
            });
    }
    rans::RawReader raw(raw_part(header, unit));
    std::uint32_t largest = 0;
    auto one = [&](std::int32_t& value, std::uint32_t token, std::uint32_t bits) {
        // The sign first (none for token 0, whose count is 0), then the bits
        // under the token.
        const std::uint32_t negative = bits & 1u;
        const std::uint32_t magnitude = base[token] + (bits >> 1);
        largest = std::max(largest, magnitude);
        value = static_cast<std::int32_t>((magnitude ^ (0u - negative)) + negative);
    };
    std::size_t i = 0;
    if (!setup.signs) {
        // Eight reads take at most 8 * 32 bits: check the bounds once for them.
        for (; i + 8 <= out.size() && raw.can_read_unchecked(8 * 32); i += 8) {
            for (std::size_t j = i; j < i + 8; ++j) {
                const auto token = std::uint32_t(out[j]);
                one(out[j], token, raw.read_unchecked(raw_bits[token]));
            }
        }
        for (; i < out.size(); ++i) {
            const auto token = std::uint32_t(out[i]);
            one(out[i], token, raw.read(raw_bits[token]));
        }
    } else {
        // Pass 1b: the signs of the non-zero tokens, into bit 8.
        // The flips of the non-zero indices' signs (§4.1), eight independent
        // chains; then each sign, a running XOR, goes to its index.
        std::size_t nonzero = 0;
        for (const std::int32_t value : out) nonzero += value != 0;
        std::vector<std::int32_t> flips(nonzero + 1);  // + 1: read past the last, unused
        rans::Decoder signs(setup.sign_stream);
        decode_symbols(
            signs, std::span(flips).first(nonzero),
            [&](std::size_t) -> const rans::DecodeTable& { return setup.sign_table[0]; },
            [](std::uint32_t) {});
        if (signs.ended_badly()) corrupt(header, "rANS sign stream does not end cleanly");
        // Branch-free: zeros are as likely as not at low bit depths.
        std::int32_t negative = 0;
        std::size_t rank = 0;
        for (auto& value : out) {
            const std::int32_t is_nonzero = value != 0;
            negative ^= flips[rank] & -is_nonzero;
            value |= (negative & is_nonzero) << 8;
            rank += std::size_t(is_nonzero);
        }
        // The raw bits now hold magnitudes only: one bit less per non-zero.
        auto read_one = [&](std::int32_t& value, auto read) {
            const auto token = std::uint32_t(value) & 0xFFu;
            const std::uint32_t count = raw_bits[token] - (token != 0);
            one(value, token, (read(count) << 1) | (std::uint32_t(value) >> 8));
        };
        for (; i + 8 <= out.size() && raw.can_read_unchecked(8 * 32); i += 8) {
            for (std::size_t j = i; j < i + 8; ++j)
                read_one(out[j], [&](std::uint32_t n) { return raw.read_unchecked(n); });
        }
        for (; i < out.size(); ++i)
            read_one(out[i], [&](std::uint32_t n) { return raw.read(int(n)); });
    }
    if (largest > header.limit) corrupt(header, "decoded index exceeds the unit's limit");
    if (decoder.ended_badly()) corrupt(header, "rANS stream does not end cleanly");
    if (raw.overran()) corrupt(header, "payload ended early");
}

void decode_levels_adaptive(const UnitHeader& header, std::span<const std::uint8_t> unit,
                            std::span<std::int32_t> out) {
    codec::RangeDecoder coder(coded_part(header, unit).subspan(1));
    codec::BitReader raw(raw_part(header, unit));
    const int split = header.split_bits;
    codec::LevelModel model(codec::magnitude_class(coarse_limit(header.limit, split)));
    const auto limit = static_cast<std::int64_t>(header.limit);
    if (split == 0) {
        for (auto& value : out) {
            value = model.decode(coder, raw);
            if (std::abs(std::int64_t{value}) > limit)
                corrupt(header, "decoded index exceeds the unit's limit");
        }
    } else {
        codec::ResidualModel residual_model(split, codec::ResidualRanges::split);
        for (auto& value : out) {
            const std::int32_t coarse = model.decode(coder, raw);
            const std::int64_t index =
                (std::int64_t{coarse} << split) + residual_model.decode(coarse, coder, raw);
            if (std::abs(index) > limit) corrupt(header, "decoded index exceeds the unit's limit");
            value = static_cast<std::int32_t>(index);
        }
    }
    if (coder.overran() || raw.overran()) corrupt(header, "payload ended early");
}

void decode_refinement_rans(const UnitHeader& header, std::span<const std::uint8_t> unit,
                            std::span<const std::int32_t> coarse, std::span<std::int32_t> out) {
    const int k = header.bits - header.parent_bits;
    const RefinementShape shape = refinement_shape(k);
    const RansSetup setup =
        read_rans_setup(header, coded_part(header, unit), shape.alphabet, false);
    // Coarse indices within the parent's bit depth keep every refined index
    // within 2^(bits-1) - 1 once its offset is in range: 32-bit arithmetic
    // suffices and needs no check of its own.
    const std::int32_t coarse_limit =
        std::int32_t((std::uint32_t{1} << (header.parent_bits - 1)) - 1);
    const std::uint32_t half = std::uint32_t{1} << (k - 1);
    // The zero cell's offsets reach 2^k, the others' 2^k - 1.
    const std::uint32_t zero_cell_end = std::uint32_t{1} << k;
    const int contexts = setup.contexts;
    const std::uint32_t raw_mask = setup.raw_mask;
    // Every context raw but context 0, which then holds the zero cell alone
    // (the usual 8→16 refinement).
    const bool only_zero_cell_coded = contexts > 1 && raw_mask == ((1u << contexts) - 2);
    const auto s = std::uint32_t(shape.raw_bits);
    rans::Decoder decoder(setup.stream);
    rans::RawReader raw(raw_part(header, unit));
    std::uint32_t bad_offset = 0;
    std::int32_t lowest_parent = 0, highest_parent = 0;
    auto table_of_context = [&](std::uint32_t context) -> const rans::DecodeTable& {
        return setup.tables[context];
    };
    // Blocks, each in light passes: the coarse indices into a local copy (out
    // may alias coarse), the symbols, the offsets (symbol and raw bits), then
    // the refined indices, a branch-free loop the compiler vectorizes. A
    // block is a multiple of 8 long; when raw contexts thin out the symbols,
    // the states are rotated so that coded element j stays on state j mod 8.
    constexpr std::size_t block = 2048;
    // Four fields of this many bits fit one wide read (56 bits at least).
    constexpr std::uint32_t max_grouped_width = 14;
    std::array<std::int32_t, block> parents;
    std::array<std::int32_t, block + 1> symbols{};  // + 1: read past the last, unused
    std::array<std::uint32_t, block> offsets;
    std::array<std::uint8_t, block> coded_contexts{};
    std::array<std::uint32_t, block> table_offsets;
    std::size_t coded_so_far = 0;
    for (std::size_t first = 0; first < out.size(); first += block) {
        const std::size_t length = std::min(block, out.size() - first);
        for (std::size_t u = 0; u < length; ++u) {
            parents[u] = coarse[first + u];
            lowest_parent = std::min(lowest_parent, parents[u]);
            highest_parent = std::max(highest_parent, parents[u]);
        }
        std::size_t j = 0;
        if (raw_mask == 0) {  // every element has a symbol, then s raw bits
            const auto block_symbols = std::span(symbols).first(length);
            if (contexts == 1) {  // no need to look at the coarse indices
                const rans::DecodeTable& only = setup.tables[0];
                decode_symbols(
                    decoder, block_symbols,
                    [&](std::size_t) -> const rans::DecodeTable& { return only; },
                    [](std::uint32_t) {});
            } else {
                // Each element's table, as an offset into the tables (which
                // lie back to back), in a pass of its own that vectorizes:
                // the symbol loop then only adds it.
                for (std::size_t u = 0; u < length; ++u) {
                    table_offsets[u] =
                        refinement_context(parents[u], contexts) * std::uint32_t(rans::total);
                }
                const std::uint32_t* const tables = setup.tables.front().data();
                decode_symbols(
                    decoder, block_symbols,
                    [&](std::size_t u) { return tables + table_offsets[u]; }, [](std::uint32_t) {});
            }
            if (s == 0) {  // every bit of the offset is in the symbol
                for (; j < length; ++j) offsets[j] = std::uint32_t(symbols[j]);
            }
            for (; j + 8 <= length && raw.can_read_unchecked(8 * 32); j += 8) {
                for (std::size_t u = j; u < j + 8; ++u)
                    offsets[u] = (std::uint32_t(symbols[u]) << s) | raw.read_unchecked(s);
            }
            for (; j < length; ++j)
                offsets[j] = (std::uint32_t(symbols[j]) << s) | raw.read(int(s));
        } else {
            // Some contexts raw: the symbols of the coded elements only.
            std::size_t coded = 0;
            auto& lanes = decoder.states();
            const auto turn = std::ptrdiff_t(coded_so_far % rans::lanes);
            std::rotate(lanes.begin(), lanes.begin() + turn, lanes.end());
            if (only_zero_cell_coded) {  // one table: count them (vectorized)
                for (std::size_t u = 0; u < length; ++u) coded += parents[u] == 0;
                const rans::DecodeTable& zero_cell = setup.tables[0];
                decode_symbols(
                    decoder, std::span(symbols).first(coded),
                    [&](std::size_t) -> const rans::DecodeTable& { return zero_cell; },
                    [](std::uint32_t) {});
            } else {
                for (std::size_t u = 0; u < length; ++u) {
                    const std::uint32_t context = refinement_context(parents[u], contexts);
                    coded_contexts[coded] = static_cast<std::uint8_t>(context);
                    coded += ((raw_mask >> context) & 1u) ^ 1u;
                }
                decode_symbols(
                    decoder, std::span(symbols).first(coded),
                    [&](std::size_t u) -> const rans::DecodeTable& {
                        return table_of_context(coded_contexts[u]);
                    },
                    [](std::uint32_t) {});
            }
            std::rotate(lanes.begin(), lanes.end() - turn, lanes.end());
            coded_so_far += coded;
            symbols[coded] = 0;
            // A coded element takes its symbol and s raw bits, a raw one k raw bits.
            std::size_t next = 0;
            auto offsets_of = [&](auto coded_at) {
                auto one = [&](std::size_t u, auto read) {
                    const std::uint32_t is_coded = coded_at(u);
                    const std::uint32_t top = (std::uint32_t(symbols[next]) << s) & (0u - is_coded);
                    next += is_coded;
                    offsets[u] = top | read(is_coded ? s : std::uint32_t(k));
                };
                // Eight elements at a time; where none of them is coded (most
                // groups: in 8->16 refinements only the zero cell is), their
                // offsets are eight k-bit fields back to back, taken from two
                // wide reads instead of eight reads each waiting for the last.
                const auto width = std::uint32_t(k);
                const std::uint64_t field_mask = (std::uint64_t{1} << width) - 1;
                for (; j + 8 <= length && raw.can_read_unchecked(8 * 32); j += 8) {
                    std::uint32_t any_coded = 0;
                    for (std::size_t u = j; u < j + 8; ++u) any_coded |= coded_at(u);
                    if (any_coded == 0 && width <= max_grouped_width) {
                        for (std::size_t half = j; half < j + 8; half += 4) {
                            const std::uint64_t fields = raw.read_wide_unchecked(4 * width);
                            for (std::uint32_t f = 0; f < 4; ++f)
                                offsets[half + f] = static_cast<std::uint32_t>(
                                    (fields >> (f * width)) & field_mask);
                        }
                        continue;
                    }
                    for (std::size_t u = j; u < j + 8; ++u)
                        one(u, [&](std::uint32_t n) { return raw.read_unchecked(n); });
                }
                for (; j < length; ++j) one(j, [&](std::uint32_t n) { return raw.read(int(n)); });
            };
            if (only_zero_cell_coded) {
                offsets_of([&](std::size_t u) { return std::uint32_t(parents[u] == 0); });
            } else {
                offsets_of([&](std::size_t u) {
                    return ((raw_mask >> refinement_context(parents[u], contexts)) & 1u) ^ 1u;
                });
            }
        }
        // r = o - h (+1 under a non-zero parent), mirrored below zero.
        std::int32_t* refined = out.data() + first;
        for (std::size_t u = 0; u < length; ++u) {
            const std::int32_t parent = parents[u];
            const std::uint32_t nonzero = parent != 0;
            bad_offset |= offsets[u] > zero_cell_end - nonzero;
            const std::uint32_t toward = offsets[u] - half + nonzero;
            const auto flip = static_cast<std::uint32_t>(parent >> 31);
            refined[u] = static_cast<std::int32_t>((static_cast<std::uint32_t>(parent) << k) +
                                                   ((toward ^ flip) - flip));
        }
    }
    if (lowest_parent < -coarse_limit || highest_parent > coarse_limit)
        corrupt(header, "a coarse index exceeds the parent rung's bit depth");
    if (bad_offset) corrupt(header, "refinement residual out of its range");
    if (decoder.ended_badly()) corrupt(header, "rANS stream does not end cleanly");
    if (raw.overran()) corrupt(header, "payload ended early");
}

void decode_refinement_adaptive(const UnitHeader& header, std::span<const std::uint8_t> unit,
                                std::span<const std::int32_t> coarse, std::span<std::int32_t> out) {
    const int k = header.bits - header.parent_bits;
    const std::int64_t limit = (std::int64_t{1} << (header.bits - 1)) - 1;
    codec::RangeDecoder coder(coded_part(header, unit).subspan(1));
    codec::BitReader raw(raw_part(header, unit));
    codec::ResidualModel model(k, codec::ResidualRanges::ladder);
    const std::int32_t coarse_limit =
        std::int32_t((std::uint32_t{1} << (header.parent_bits - 1)) - 1);
    for (std::size_t i = 0; i < out.size(); ++i) {
        const std::int32_t parent = coarse[i];
        if (parent < -coarse_limit || parent > coarse_limit)
            corrupt(header, "a coarse index exceeds the parent rung's bit depth");
        const std::int32_t residual = model.decode(parent, coder, raw);
        const ResidualRange range = residual_range(parent, k);
        if (residual < range.low || residual > range.high)
            corrupt(header, "refinement residual out of its range");
        const std::int64_t fine = (std::int64_t{parent} << k) + residual;
        if (fine < -limit || fine > limit) corrupt(header, "refined index exceeds its bit depth");
        out[i] = static_cast<std::int32_t>(fine);
    }
    if (coder.overran() || raw.overran()) corrupt(header, "payload ended early");
}

// The payload a unit is coded with, and whether it is the adaptive coder's:
// rANS unless the adaptive coder is forced, or the choice is compact, the
// adaptive coder is worth trying for this chunk and it codes smaller.
template <typename WorthTrying, typename Rans, typename Adaptive>
std::pair<Payload, bool> choose_payload(CoderChoice choice, std::size_t elements,
                                        WorthTrying worth_trying, Rans rans, Adaptive adaptive) {
    if (choice == CoderChoice::adaptive) return {adaptive(), true};
    Payload payload = rans();
    if (choice == CoderChoice::compact && worth_trying()) {
        Payload candidate = adaptive();
        if (adaptive_pays(payload_size(candidate), payload_size(payload), elements)) {
            return {std::move(candidate), true};
        }
    }
    return {std::move(payload), false};
}

}  // namespace

std::vector<UnitTarget> plan_chunks(std::uint32_t tensor_index, std::uint64_t elements,
                                    std::uint64_t chunk_elements) {
    chunk_elements = std::clamp<std::uint64_t>(chunk_elements, 1, max_unit_elements);
    std::vector<UnitTarget> chunks;
    std::uint64_t first = 0;
    do {
        const std::uint64_t count = std::min(chunk_elements, elements - first);
        chunks.push_back({tensor_index, elements, first, count});
        first += count;
    } while (first < elements);
    return chunks;
}

std::vector<std::uint8_t> encode_exact_unit(const UnitTarget& target,
                                            std::span<const float> values) {
    check_target(target, values.size());
    Payload payload;
    payload.coded.resize(target.count * 4);
    for (std::uint64_t i = 0; i < target.count; ++i) {
        std::uint32_t bits;
        std::memcpy(&bits, &values[target.first + i], 4);
        store_u32(payload.coded.data() + 4 * i, bits);
    }
    return assemble(UnitType::exact, 32, 0, target, 0, 0, {}, payload);
}

namespace {

// The top rung's chunk as the lossless coder takes it; throws Error if the
// spans do not cover the chunk.
codec::TopRungChunk top_rung_chunk(const UnitTarget& target, const RungChunk& top) {
    if (top.indices.size() != target.count || top.channel_size == 0 ||
        (target.count > 0 &&
         top.steps.size() <= (target.first + target.count - 1) / top.channel_size)) {
        throw Error(ErrorCode::invalid_argument,
                    "lossless unit: the top rung does not cover the chunk");
    }
    return {top.indices, top.steps, target.first, top.channel_size};
}

}  // namespace

std::vector<std::uint8_t> encode_lossless_unit(const UnitTarget& target, StoredType type,
                                               std::span<const float> values,
                                               const RungChunk& top) {
    if (values.size() != target.count)
        throw Error(ErrorCode::invalid_argument, "lossless unit: values do not fill the chunk");
    if (!codec::lossless_type_is_valid(std::uint8_t(type)))
        throw Error(ErrorCode::unsupported,
                    "lossless unit: only float32, float16 and bfloat16 weights are exact");
    if (top.bits < min_ladder_bits || top.bits >= 32)
        throw Error(ErrorCode::invalid_argument,
                    "lossless unit: the top rung must have 2 to 31 bits");
    codec::LosslessPayload coded =
        codec::encode_lossless(type, values, top_rung_chunk(target, top));
    const Payload payload{std::move(coded.coded), std::move(coded.raw)};
    return assemble(UnitType::lossless, 32, top.bits, target, 0, 0, {}, payload);
}

namespace {

// The whole-tensor rung's chunk at `target`, which must fit it.
RungChunk chunk_of_rung(const UnitTarget& target, const QuantizedTensor& rung) {
    check_target(target, rung.indices.size());
    return {rung.bits, rung.steps, rung.channel_size,
            std::span(rung.indices).subspan(target.first, target.count), rung.row_length};
}

void check_chunk(const UnitTarget& target, const RungChunk& rung) {
    check_target(target, target.tensor_elements);
    if (rung.indices.size() != target.count)
        throw Error(ErrorCode::invalid_argument, "unit chunk does not fit its target");
}

}  // namespace

std::vector<std::uint8_t> encode_level_unit(const UnitTarget& target, const QuantizedTensor& rung,
                                            CoderChoice choice) {
    return encode_level_unit(target, chunk_of_rung(target, rung), choice);
}

std::vector<std::uint8_t> encode_refinement_unit(const UnitTarget& target,
                                                 const QuantizedTensor& coarse,
                                                 const QuantizedTensor& fine, CoderChoice choice) {
    if (coarse.indices.size() != fine.indices.size())
        throw Error(ErrorCode::invalid_argument, "refinement: rungs do not match");
    return encode_refinement_unit(target, chunk_of_rung(target, coarse),
                                  chunk_of_rung(target, fine), choice);
}

namespace {

// Levels and differences share a layout and a coder: signed integers with
// their channels' steps.
std::vector<std::uint8_t> encode_integers_unit(UnitType type, const UnitTarget& target,
                                               const RungChunk& rung, CoderChoice choice) {
    check_chunk(target, rung);
    const std::uint64_t channel_size = std::max<std::uint64_t>(rung.channel_size, 1);
    const ChannelSpan channels = channels_of(target, channel_size);
    if (channels.first + channels.count > rung.steps.size())
        throw Error(ErrorCode::invalid_argument, "unit chunk does not fit its steps");
    const std::span<const std::int32_t> indices = rung.indices;
    std::uint32_t limit = 0;
    for (const std::int32_t index : indices) {
        limit = std::max(limit, static_cast<std::uint32_t>(std::abs(std::int64_t{index})));
    }
    const int split = split_bits_for(limit);
    const SignPlan signs = plan_signs(indices);
    const auto [payload, adaptive] = choose_payload(
        choice, indices.size(), [&] { return adaptive_worth_trying(indices.size(), signs); },
        [&] { return encode_levels_rans(indices, limit, signs, target.first, rung.row_length); },
        [&] { return encode_levels_adaptive(indices, limit, split); });
    return assemble(type, rung.bits, adaptive ? split : 0, target, channel_size, limit,
                    rung.steps.subspan(channels.first, channels.count), payload);
}

}  // namespace

std::vector<std::uint8_t> encode_level_unit(const UnitTarget& target, const RungChunk& rung,
                                            CoderChoice choice) {
    return encode_integers_unit(UnitType::levels, target, rung, choice);
}

std::vector<std::uint8_t> encode_difference_unit(const UnitTarget& target,
                                                 const RungChunk& differences, CoderChoice choice) {
    if (differences.bits > max_difference_bits)
        throw Error(ErrorCode::invalid_argument,
                    "difference units go up to " + std::to_string(max_difference_bits) + " bits");
    return encode_integers_unit(UnitType::difference, target, differences, choice);
}

std::vector<std::uint8_t> encode_refinement_unit(const UnitTarget& target, const RungChunk& coarse,
                                                 const RungChunk& fine, CoderChoice choice) {
    check_chunk(target, fine);
    check_chunk(target, coarse);
    const int k = fine.bits - coarse.bits;
    if (k <= 0) throw Error(ErrorCode::invalid_argument, "refinement: rungs do not match");
    // Only this chunk's residuals: r = q_fine - 2^k q_coarse.
    const std::span<const std::int32_t> coarse_chunk = coarse.indices;
    const std::span<const std::int32_t> fine_chunk = fine.indices;
    // Computed and checked once for whichever coders are tried.
    std::vector<std::int32_t> residuals(fine_chunk.size());
    for (std::size_t i = 0; i < fine_chunk.size(); ++i) {
        const std::int64_t residual =
            std::int64_t{fine_chunk[i]} - (std::int64_t{coarse_chunk[i]} << k);
        const ResidualRange range = residual_range(coarse_chunk[i], k);
        if (residual < range.low || residual > range.high)
            throw Error(ErrorCode::invalid_argument,
                        "refinement: the rungs are not one ladder (residual out of range)");
        residuals[i] = static_cast<std::int32_t>(residual);
    }
    const Payload payload =
        choose_payload(
            choice, residuals.size(),
            [&] { return target.count <= adaptive_always_tried_elements; },
            [&] { return encode_refinement_rans(coarse_chunk, residuals, k); },
            [&] { return encode_refinement_adaptive(coarse_chunk, residuals, k); })
            .first;
    return assemble(UnitType::refinement, fine.bits, coarse.bits, target, 0, 0, {}, payload);
}

std::uint32_t unit_length(std::span<const std::uint8_t> bytes) {
    if (bytes.size() < 12 || std::memcmp(bytes.data(), magic, 4) != 0) return 0;
    return load_u32(bytes.data() + 8);
}

std::uint32_t unit_crc32c(std::span<const std::uint8_t> unit) {
    return load_u32(unit.data() + unit.size() - 4);
}

UnitHeader read_unit_header(std::span<const std::uint8_t> unit, std::string_view source) {
    const std::string where(source);
    auto fail = [&](const std::string& what, ErrorCode code = ErrorCode::corrupt_data) -> void {
        throw Error(code, where + ": " + what);
    };
    if (unit.size() < smallest_unit_bytes)
        fail("truncated unit (" + std::to_string(unit.size()) + " bytes)");
    const std::uint8_t* at = unit.data();
    if (std::memcmp(at, magic, 4) != 0) fail("not a bitinc unit (bad magic)");
    if (at[4] < unit_format_version) {
        fail("unit format " + std::to_string(at[4]) +
                 " is from an older bitinc; re-pack the model (this build reads unit format " +
                 std::to_string(unit_format_version) + ")",
             ErrorCode::unsupported);
    }
    if (at[4] != unit_format_version) {
        fail("unit format " + std::to_string(at[4]) +
                 " is from a newer bitinc; update bitinc (this build reads unit format " +
                 std::to_string(unit_format_version) + ")",
             ErrorCode::unsupported);
    }
    UnitHeader header;
    header.unit_bytes = load_u32(at + 8);
    if (header.unit_bytes != unit.size()) {
        fail("unit says it is " + std::to_string(header.unit_bytes) + " bytes, " +
             std::to_string(unit.size()) + " are here" +
             (header.unit_bytes > unit.size() ? " (truncated)" : ""));
    }
    const std::uint32_t stored_crc = load_u32(at + unit.size() - 4);
    if (core::crc32c(unit.first(unit.size() - 4)) != stored_crc)
        fail("checksum mismatch (corrupt unit)");

    header.type = static_cast<UnitType>(at[5]);
    header.bits = at[6];
    header.parent_bits = at[7];
    std::array<std::uint32_t, 9> fields{};
    const std::uint8_t* field_at = at + unit_fixed_header_bytes;
    const std::uint8_t* const crc_at = at + unit.size() - 4;
    for (auto& field : fields)
        if (!get_varint(field_at, crc_at, field)) fail("malformed unit header");
    header.header_bytes = static_cast<std::uint32_t>(field_at - at);
    header.target = {fields[0], fields[1], fields[2], fields[3]};
    header.channel_size = fields[4];
    header.limit = fields[5];
    const std::uint32_t step_count = fields[6];
    header.coded_bytes = fields[7];
    header.raw_bytes = fields[8];

    const UnitTarget& target = header.target;
    if (target.tensor_elements > max_tensor_elements || target.first > target.tensor_elements ||
        target.count > target.tensor_elements - target.first || target.count > max_unit_elements) {
        fail("unit's element range lies outside its tensor");
    }
    // What the other sections leave is the step section (its length is not
    // stored: decode_steps checks that the steps fill it exactly).
    const std::uint64_t other_sections =
        std::uint64_t{header.header_bytes} + header.coded_bytes + header.raw_bytes + 4;
    if (other_sections > header.unit_bytes) fail("unit's section lengths do not add up");
    header.step_bytes = static_cast<std::uint32_t>(header.unit_bytes - other_sections);
    if (step_count == 0 && header.step_bytes != 0) fail("unit's section lengths do not add up");
    switch (header.type) {
        case UnitType::exact:
            if (header.bits != 32 || header.parent_bits != 0 || step_count != 0 ||
                header.raw_bytes != 0 || header.coded_bytes != 4 * target.count ||
                header.channel_size != 0 || header.limit != 0) {
                fail("malformed exact unit");
            }
            break;
        case UnitType::levels:
        case UnitType::difference: {
            const bool levels = header.type == UnitType::levels;
            const std::string name = levels ? "levels unit" : "difference unit";
            if (header.bits < min_ladder_bits ||
                header.bits > (levels ? max_ladder_bits : max_difference_bits)) {
                fail(name + " has a bad bit depth");
            }
            // Byte 7 is the split, which follows from the limit.
            header.split_bits = header.parent_bits;
            header.parent_bits = 0;
            // A level is below 2^(bits-1) in size, the difference of two
            // levels below 2^bits.
            const int limit_bits = levels ? header.bits - 1 : header.bits;
            if (header.limit > (std::uint64_t{1} << limit_bits) - 1) {
                fail(name + "'s limit exceeds its bit depth");
            }
            if (header.coded_bytes < 1) fail(name + " has no coder byte");
            header.coder = static_cast<UnitCoder>(at[header.coded_offset()]);
            if (header.coder == UnitCoder::adaptive) {
                if (header.split_bits != split_bits_for(header.limit))
                    fail(name + " has a bad split");
            } else if (header.coder == UnitCoder::rans) {
                if (header.split_bits != 0) fail(name + " has a bad split");
            } else {
                fail(name + " names an unknown coder");
            }
            if (header.channel_size == 0 ||
                (target.tensor_elements > 0 && header.channel_size > target.tensor_elements)) {
                fail(name + " has a bad channel size");
            }
            if (step_count != channels_of(target, header.channel_size).count)
                fail(name + " has the wrong number of steps");
            break;
        }
        case UnitType::refinement:
            if (header.bits > max_ladder_bits || header.parent_bits < min_ladder_bits ||
                header.parent_bits >= header.bits || step_count != 0 || header.channel_size != 0 ||
                header.limit != 0 || header.coded_bytes < 1) {
                fail("malformed refinement unit");
            }
            header.coder = static_cast<UnitCoder>(at[header.coded_offset()]);
            if (header.coder != UnitCoder::adaptive && header.coder != UnitCoder::rans)
                fail("refinement unit names an unknown coder");
            break;
        case UnitType::lossless:
            if (header.bits != 32 || header.parent_bits < min_ladder_bits ||
                header.parent_bits >= 32 || step_count != 0 || header.channel_size != 0 ||
                header.limit != 0 || header.coded_bytes < 2) {
                fail("malformed lossless unit");
            }
            header.coder = static_cast<UnitCoder>(at[header.coded_offset()]);
            if (header.coder != UnitCoder::rans) fail("lossless unit names an unknown coder");
            if (!codec::lossless_type_is_valid(at[header.coded_offset() + 1]))
                fail("lossless unit names an unknown element type");
            header.stored_as = static_cast<StoredType>(at[header.coded_offset() + 1]);
            break;
        default:
            fail("unknown unit type " + std::to_string(at[5]));
    }
    header.steps =
        decode_steps(unit.subspan(header.header_bytes, header.step_bytes), step_count, where);
    return header;
}

void decode_exact_unit(const UnitHeader& header, std::span<const std::uint8_t> unit,
                       std::span<float> out) {
    if (header.type != UnitType::exact || out.size() != header.target.count)
        corrupt(header, "not an exact unit of this size");
    const auto payload = coded_part(header, unit);
    for (std::size_t i = 0; i < out.size(); ++i) {
        const std::uint32_t bits = load_u32(payload.data() + 4 * i);
        std::memcpy(&out[i], &bits, 4);
    }
}

void decode_level_unit(const UnitHeader& header, std::span<const std::uint8_t> unit,
                       std::span<std::int32_t> out) {
    if ((header.type != UnitType::levels && header.type != UnitType::difference) ||
        out.size() != header.target.count)
        corrupt(header, "not a levels or difference unit of this size");
    if (header.coder == UnitCoder::rans) {
        decode_levels_rans(header, unit, out);
    } else {
        decode_levels_adaptive(header, unit, out);
    }
}

void decode_refinement_unit(const UnitHeader& header, std::span<const std::uint8_t> unit,
                            std::span<const std::int32_t> coarse, std::span<std::int32_t> out) {
    if (header.type != UnitType::refinement || out.size() != header.target.count ||
        coarse.size() != out.size()) {
        corrupt(header, "not a refinement unit of this size");
    }
    if (header.coder == UnitCoder::rans) {
        decode_refinement_rans(header, unit, coarse, out);
    } else {
        decode_refinement_adaptive(header, unit, coarse, out);
    }
}

void decode_lossless_unit(const UnitHeader& header, std::span<const std::uint8_t> unit,
                          const RungChunk& top, std::span<float> out) {
    if (header.type != UnitType::lossless || out.size() != header.target.count ||
        top.bits != header.parent_bits) {
        corrupt(header, "not a lossless unit of this size on this rung");
    }
    codec::TopRungChunk chunk;
    try {
        chunk = top_rung_chunk(header.target, top);
    } catch (const Error&) {
        corrupt(header, "the top rung given does not cover the unit");
    }
    if (const char* problem =
            codec::decode_lossless(coded_part(header, unit), raw_part(header, unit), chunk, out))
        corrupt(header, problem);
}

}  // namespace bitinc
