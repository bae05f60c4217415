#include <gtest/gtest.h>
#include <zlib.h>

#include <fstream>

#include "bitinc/dataset.hpp"
#include "bitinc/error.hpp"
#include "eval/idx_reader.hpp"
#include "test_support.hpp"

namespace bitinc {
namespace {

std::vector<std::uint8_t> idx_bytes(std::vector<std::uint32_t> dims, std::size_t data_bytes) {
    std::vector<std::uint8_t> bytes = {0, 0, 0x08, static_cast<std::uint8_t>(dims.size())};
    for (const std::uint32_t dim : dims) {
        for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(std::uint8_t(dim >> shift));
    }
    for (std::size_t i = 0; i < data_bytes; ++i) bytes.push_back(std::uint8_t(i * 7));
    return bytes;
}

TEST(IdxReader, ParsesAnImageArray) {
    const auto array = eval::parse_idx(idx_bytes({2, 3, 4}, 24), "x.idx");
    EXPECT_EQ(array.dims, (std::vector<std::uint32_t>{2, 3, 4}));
    ASSERT_EQ(array.data.size(), 24u);
    EXPECT_EQ(array.data[5], 35);
}

TEST(IdxReader, RefusesMalformedArrays) {
    EXPECT_THROW(eval::parse_idx(idx_bytes({2, 3, 4}, 23), "short.idx"), Error);
    EXPECT_THROW(eval::parse_idx(idx_bytes({2, 3, 4}, 25), "long.idx"), Error);
    EXPECT_THROW(eval::parse_idx(idx_bytes({0xFFFFFFFF, 0xFFFFFFFF, 2}, 0), "huge.idx"), Error);
    EXPECT_THROW(eval::parse_idx(idx_bytes({}, 0), "rank0.idx"), Error);
    auto wrong_type = idx_bytes({4}, 4);
    wrong_type[2] = 0x0D;  // float elements
    EXPECT_THROW(eval::parse_idx(wrong_type, "float.idx"), Error);
    EXPECT_THROW(eval::parse_idx(std::vector<std::uint8_t>{1, 2}, "tiny.idx"), Error);
}

TEST(IdxReader, ReadsFashionMnistTestSet) {
    const ImageSet test = load_fashion_mnist(default_fashion_mnist_dir, Split::test);
    EXPECT_EQ(test.count, 10000u);
    EXPECT_EQ(test.rows, 28u);
    EXPECT_EQ(test.cols, 28u);
    EXPECT_EQ(test.pixels.size(), 10000u * 28 * 28);
    std::size_t per_class[10] = {};
    for (const std::uint8_t label : test.labels) {
        ASSERT_LT(label, 10);
        ++per_class[label];
    }
    for (const std::size_t count : per_class) EXPECT_EQ(count, 1000u);  // a balanced test set
}

void write_gzip(const std::filesystem::path& path, const std::vector<std::uint8_t>& bytes) {
    gzFile file = gzopen(path.c_str(), "wb");
    ASSERT_NE(file, nullptr);
    ASSERT_EQ(gzwrite(file, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
    gzclose(file);
}

TEST(IdxReader, TruncatedOrMismatchedFilesAreErrors) {
    const testing::TemporaryDirectory directory;
    const auto images = directory.path() / "images.gz";
    const auto labels = directory.path() / "labels.gz";
    write_gzip(images, idx_bytes({3, 2, 2}, 12));
    write_gzip(labels, idx_bytes({3}, 3));
    const ImageSet set = read_idx_images(images, labels);
    EXPECT_EQ(set.count, 3u);

    write_gzip(labels, idx_bytes({4}, 4));
    EXPECT_THROW(read_idx_images(images, labels), Error);  // 4 labels for 3 images

    // Cut the compressed file in half: a clear error, not a short image set.
    write_gzip(labels, idx_bytes({3}, 3));
    write_gzip(images, idx_bytes({300, 28, 28}, 300 * 28 * 28));
    const auto size = std::filesystem::file_size(images);
    std::filesystem::resize_file(images, size / 2);
    EXPECT_THROW(read_idx_images(images, labels), Error);
    EXPECT_THROW(read_idx_images(directory.path() / "missing.gz", labels), Error);
}

}  // namespace
}  // namespace bitinc
