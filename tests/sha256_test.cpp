#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/sha256.hpp"

namespace bitinc::core {
namespace {

// The FIPS 180-4 examples (NIST's "SHA256.pdf" and the short/long message
// vectors).
TEST(Sha256, NistVectors) {
    EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(sha256_hex("abc"),
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    // 448 bits: the padding needs a second block.
    EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    EXPECT_EQ(sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmno"
                         "pjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"),
              "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
    EXPECT_EQ(sha256_hex(std::string(1'000'000, 'a')),
              "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, OneMillionAsInPiecesOfEverySize) {
    const std::string expected = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
    for (const std::size_t piece : {1, 3, 63, 64, 65, 1000, 4096, 99'999}) {
        Sha256 hash;
        std::size_t left = 1'000'000;
        while (left > 0) {
            const std::size_t size = std::min(piece, left);
            hash.update(std::string(size, 'a'));
            left -= size;
        }
        EXPECT_EQ(hash.finish_hex(), expected) << "pieces of " << piece;
    }
}

// Lengths around the block and padding boundaries, split at every point:
// the digest depends on the bytes only, never on how they arrive.
TEST(Sha256, EverySplitGivesTheOneShotDigest) {
    std::string message;
    for (int i = 0; i < 200; ++i) message += char(i * 37 + 11);
    for (const std::size_t length : {0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 200}) {
        const std::string_view bytes(message.data(), length);
        const std::string expected = sha256_hex(bytes);
        for (std::size_t split = 0; split <= length; ++split) {
            Sha256 hash;
            hash.update(bytes.substr(0, split));
            hash.update("");
            hash.update(bytes.substr(split));
            ASSERT_EQ(hash.finish_hex(), expected) << "length " << length << ", split " << split;
        }
    }
}

TEST(Sha256, StartsOverAfterFinishing) {
    Sha256 hash;
    hash.update("something else");
    (void)hash.finish_hex();
    hash.update("abc");
    EXPECT_EQ(hash.finish_hex(),
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

// The CPU's SHA extensions, where present, and the portable rounds agree.
TEST(Sha256, AcceleratedAndPortableRoundsAgree) {
    std::vector<std::uint8_t> blocks(64 * 37);
    std::uint32_t x = 12345;
    for (auto& byte : blocks) {
        x = x * 1664525u + 1013904223u;
        byte = std::uint8_t(x >> 24);
    }
    std::array<std::uint32_t, 8> fast = {1, 2, 3, 4, 5, 6, 7, 8}, portable = fast;
    sha256_compress(fast, blocks);
    sha256_compress(portable, blocks, true);
    EXPECT_EQ(fast, portable);
}

}  // namespace
}  // namespace bitinc::core
