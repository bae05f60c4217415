// Labelled image datasets read from IDX files (the MNIST family's format).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string_view>
#include <vector>

namespace bitinc {

// Greyscale images, one byte per pixel, stored image after image.
struct ImageSet {
    std::size_t count = 0;
    std::size_t rows = 0;
    std::size_t cols = 0;
    std::vector<std::uint8_t> pixels;  // count * rows * cols
    std::vector<std::uint8_t> labels;  // count

    const std::uint8_t* image(std::size_t index) const {
        return pixels.data() + index * rows * cols;
    }
};

enum class Split { train, test };

// Where Debian's dataset-fashion-mnist package puts the files.
inline constexpr std::string_view default_fashion_mnist_dir = "/usr/share/datasets/fashion-mnist";

// Reads an IDX image file and its IDX label file, gzipped or not. Throws
// Error naming the file on a missing, truncated or malformed file, or when the
// two files disagree on the number of items.
ImageSet read_idx_images(const std::filesystem::path& images_path,
                         const std::filesystem::path& labels_path);

// Reads the Fashion-MNIST training (60,000) or test (10,000) split from `dir`.
ImageSet load_fashion_mnist(const std::filesystem::path& dir, Split split);

}  // namespace bitinc
