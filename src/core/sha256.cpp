#include "core/sha256.hpp"

#include <algorithm>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace bitinc::core {

namespace {

// FIPS 180-4, 4.2.2: the first 32 bits of the fractional parts of the cube
// roots of the first 64 primes.
constexpr std::array<std::uint32_t, 64> round_constants = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

// FIPS 180-4, 5.3.3: the first 32 bits of the fractional parts of the
// square roots of the first 8 primes.
constexpr std::array<std::uint32_t, 8> initial_state = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

constexpr std::uint32_t rotate_right(std::uint32_t x, int n) {
    return (x >> n) | (x << (32 - n));
}

std::uint32_t load_big_endian(const std::uint8_t* p) {
    return std::uint32_t(p[0]) << 24 | std::uint32_t(p[1]) << 16 | std::uint32_t(p[2]) << 8 |
           std::uint32_t(p[3]);
}

void compress_portable(std::uint32_t* state, const std::uint8_t* data, std::size_t blocks) {
    std::uint32_t schedule[64];
    for (; blocks > 0; --blocks, data += 64) {
        for (int t = 0; t < 16; ++t) schedule[t] = load_big_endian(data + 4 * t);
        for (int t = 16; t < 64; ++t) {
            const std::uint32_t w15 = schedule[t - 15], w2 = schedule[t - 2];
            const std::uint32_t sigma0 = rotate_right(w15, 7) ^ rotate_right(w15, 18) ^ (w15 >> 3);
            const std::uint32_t sigma1 = rotate_right(w2, 17) ^ rotate_right(w2, 19) ^ (w2 >> 10);
            schedule[t] = schedule[t - 16] + sigma0 + schedule[t - 7] + sigma1;
        }
        std::uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
        std::uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
        for (int t = 0; t < 64; ++t) {
            const std::uint32_t big_sigma1 =
                rotate_right(e, 6) ^ rotate_right(e, 11) ^ rotate_right(e, 25);
            const std::uint32_t choose = (e & f) ^ (~e & g);
            const std::uint32_t t1 = h + big_sigma1 + choose + round_constants[t] + schedule[t];
            const std::uint32_t big_sigma0 =
                rotate_right(a, 2) ^ rotate_right(a, 13) ^ rotate_right(a, 22);
            const std::uint32_t majority = (a & b) ^ (a & c) ^ (b & c);
            const std::uint32_t t2 = big_sigma0 + majority;
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        state[0] += a;
        state[1] += b;
        state[2] += c;
        state[3] += d;
        state[4] += e;
        state[5] += f;
        state[6] += g;
        state[7] += h;
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
// The SHA extensions (sha256rnds2, sha256msg1/2) run two rounds per
// instruction: several times the portable rounds, so hashing keeps pace
// with fast links. sha256rnds2 keeps the working variables as the pairs
// ABEF and CDGH, hence the shuffles on entry and exit.
__attribute__((target("sha,sse4.1"))) void compress_sha_extensions(std::uint32_t* state,
                                                                   const std::uint8_t* data,
                                                                   std::size_t blocks) {
    // Reverses the bytes of each 32-bit word: the message is big-endian.
    const __m128i byte_swap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
    const __m128i dcba = _mm_loadu_si128(reinterpret_cast<const __m128i*>(state));
    const __m128i hgfe = _mm_loadu_si128(reinterpret_cast<const __m128i*>(state + 4));
    const __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
    const __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    __m128i abef = _mm_alignr_epi8(cdab, efgh, 8);
    __m128i cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);

    for (; blocks > 0; --blocks, data += 64) {
        const __m128i abef_before = abef, cdgh_before = cdgh;
        // words[i % 4] holds schedule words 4i .. 4i+3 while they are needed.
        __m128i words[4];
        for (int i = 0; i < 4; ++i) {
            words[i] = _mm_shuffle_epi8(
                _mm_loadu_si128(reinterpret_cast<const __m128i*>(data + 16 * i)), byte_swap);
        }
        for (int i = 0; i < 16; ++i) {
            if (i >= 4) {
                // Schedule words 4i .. 4i+3 from the previous sixteen.
                const __m128i previous = words[(i + 3) % 4];  // 4i-4 .. 4i-1
                const __m128i w7 = _mm_alignr_epi8(previous, words[(i + 2) % 4], 4);  // 4i-7 ..
                __m128i next = _mm_sha256msg1_epu32(words[i % 4], words[(i + 1) % 4]);
                next = _mm_add_epi32(next, w7);
                words[i % 4] = _mm_sha256msg2_epu32(next, previous);
            }
            const __m128i constants =
                _mm_loadu_si128(reinterpret_cast<const __m128i*>(round_constants.data() + 4 * i));
            const __m128i message = _mm_add_epi32(words[i % 4], constants);
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, message);
            abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(message, 0x0E));
        }
        abef = _mm_add_epi32(abef, abef_before);
        cdgh = _mm_add_epi32(cdgh, cdgh_before);
    }

    const __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    const __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(state), _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(state + 4), _mm_alignr_epi8(dchg, feba, 8));
}

const bool has_sha_extensions = [] {
    unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
    const bool sse41 = (ecx & bit_SSE4_1) != 0, ssse3 = (ecx & bit_SSSE3) != 0;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    return sse41 && ssse3 && (ebx & bit_SHA) != 0;
}();
#endif

constexpr char hex_digits[] = "0123456789abcdef";

}  // namespace

void sha256_compress(std::array<std::uint32_t, 8>& state, std::span<const std::uint8_t> blocks,
                     bool portable) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (has_sha_extensions && !portable) {
        compress_sha_extensions(state.data(), blocks.data(), blocks.size() / 64);
        return;
    }
#endif
    (void)portable;
    compress_portable(state.data(), blocks.data(), blocks.size() / 64);
}

std::string sha256_hex(std::string_view bytes) {
    Sha256 hash;
    hash.update(bytes);
    return hash.finish_hex();
}

Sha256::Sha256() {
    restart();
}

void Sha256::restart() {
    state_ = initial_state;
    partial_size_ = 0;
    total_bytes_ = 0;
}

void Sha256::update(std::string_view bytes) {
    const auto* data = reinterpret_cast<const std::uint8_t*>(bytes.data());
    std::size_t size = bytes.size();
    total_bytes_ += size;
    if (partial_size_ > 0) {
        const std::size_t taken = std::min(size, partial_block_.size() - partial_size_);
        std::memcpy(partial_block_.data() + partial_size_, data, taken);
        partial_size_ += taken;
        data += taken;
        size -= taken;
        if (partial_size_ < partial_block_.size()) return;
        sha256_compress(state_, partial_block_);
        partial_size_ = 0;
    }
    const std::size_t whole = size - size % 64;
    if (whole > 0) sha256_compress(state_, {data, whole});
    std::memcpy(partial_block_.data(), data + whole, size - whole);
    partial_size_ = size - whole;
}

std::array<std::uint8_t, 32> Sha256::finish() {
    // FIPS 180-4, 5.1.1: a 1 bit, zeros up to 56 bytes mod 64, then the
    // message length in bits as a big-endian 64-bit number.
    const std::uint64_t total_bits = total_bytes_ * 8;
    partial_block_[partial_size_++] = 0x80;
    if (partial_size_ > 56) {
        std::memset(partial_block_.data() + partial_size_, 0, 64 - partial_size_);
        sha256_compress(state_, partial_block_);
        partial_size_ = 0;
    }
    std::memset(partial_block_.data() + partial_size_, 0, 56 - partial_size_);
    for (int i = 0; i < 8; ++i) partial_block_[56 + i] = std::uint8_t(total_bits >> (56 - 8 * i));
    sha256_compress(state_, partial_block_);

    std::array<std::uint8_t, 32> digest;
    for (int i = 0; i < 8; ++i) {
        for (int j = 0; j < 4; ++j) digest[4 * i + j] = std::uint8_t(state_[i] >> (24 - 8 * j));
    }
    restart();
    return digest;
}

std::string lowercase_hex(std::span<const std::uint8_t> bytes) {
    std::string text;
    text.reserve(2 * bytes.size());
    for (const std::uint8_t byte : bytes) {
        text += hex_digits[byte >> 4];
        text += hex_digits[byte & 15];
    }
    return text;
}

std::string Sha256::finish_hex() {
    const auto digest = finish();
    return lowercase_hex(digest);
}

}  // namespace bitinc::core
