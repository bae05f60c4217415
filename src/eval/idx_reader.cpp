// The IDX format of the MNIST family: a 4-byte magic (0, 0, element type,
// number of dimensions), one big-endian uint32 per dimension, then the data.
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "bitinc/dataset.hpp"
#include "bitinc/error.hpp"
#include "eval/idx_reader.hpp"

namespace bitinc {

namespace eval {

std::vector<std::uint8_t> read_possibly_gzipped(const std::filesystem::path& path,
                                                std::size_t max_bytes) {
    const std::string name = path.string();
    std::error_code error;
    if (!std::filesystem::is_regular_file(path, error))
        throw Error(ErrorCode::io, name + ": no such file");
    // gzread passes a file that is not gzipped through unchanged.
    const std::unique_ptr<gzFile_s, int (*)(gzFile)> file(gzopen(name.c_str(), "rb"), gzclose);
    if (!file) throw Error(ErrorCode::io, name + ": cannot open: " + std::strerror(errno));
    std::vector<std::uint8_t> bytes;
    constexpr std::size_t chunk = 1 << 20;
    for (;;) {
        const std::size_t old_size = bytes.size();
        bytes.resize(old_size + chunk);
        const int n = gzread(file.get(), bytes.data() + old_size, static_cast<unsigned>(chunk));
        if (n < 0) {
            int code = 0;
            throw Error(ErrorCode::corrupt_data,
                        name + ": corrupt compressed data: " + gzerror(file.get(), &code));
        }
        bytes.resize(old_size + static_cast<std::size_t>(n));
        if (n == 0) break;
        if (bytes.size() > max_bytes) {
            throw Error(ErrorCode::corrupt_data,
                        name + ": more than " + std::to_string(max_bytes) + " bytes uncompressed");
        }
    }
    int code = 0;
    const char* message = gzerror(file.get(), &code);
    if (code != Z_OK)
        throw Error(ErrorCode::corrupt_data,
                    name + ": corrupt or truncated compressed data: " + message);
    return bytes;
}

IdxArray parse_idx(std::span<const std::uint8_t> bytes, std::string_view source) {
    const std::string name(source);
    if (bytes.size() < 4 || bytes[0] != 0 || bytes[1] != 0) {
        throw Error(ErrorCode::corrupt_data, name + ": not an IDX file (bad magic number)");
    }
    if (bytes[2] != 0x08)
        throw Error(ErrorCode::unsupported, name + ": IDX element type is not unsigned byte");
    const std::size_t rank = bytes[3];
    if (rank == 0 || rank > 3) {
        throw Error(ErrorCode::corrupt_data,
                    name + ": IDX file has " + std::to_string(rank) + " dimensions");
    }
    if (bytes.size() < 4 + 4 * rank)
        throw Error(ErrorCode::corrupt_data, name + ": truncated IDX header");
    IdxArray array;
    std::uint64_t count = 1;
    for (std::size_t i = 0; i < rank; ++i) {
        const std::uint8_t* p = bytes.data() + 4 + 4 * i;
        const std::uint32_t dim = (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) |
                                  (std::uint32_t(p[2]) << 8) | std::uint32_t(p[3]);
        if (dim == 0 || dim > max_idx_bytes)
            throw Error(ErrorCode::corrupt_data, name + ": IDX dimension out of range");
        count *= dim;
        if (count > max_idx_bytes)
            throw Error(ErrorCode::corrupt_data, name + ": IDX data would exceed the size limit");
        array.dims.push_back(dim);
    }
    const std::size_t header = 4 + 4 * rank;
    if (bytes.size() - header != count) {
        throw Error(ErrorCode::corrupt_data,
                    name + ": IDX data is " + std::to_string(bytes.size() - header) +
                        " bytes, the header promises " + std::to_string(count) +
                        (bytes.size() - header < count ? " (truncated file)" : ""));
    }
    array.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(header), bytes.end());
    return array;
}

}  // namespace eval

ImageSet read_idx_images(const std::filesystem::path& images_path,
                         const std::filesystem::path& labels_path) {
    const auto image_bytes = eval::read_possibly_gzipped(images_path, eval::max_idx_bytes + 16);
    eval::IdxArray images = eval::parse_idx(image_bytes, images_path.string());
    const auto label_bytes = eval::read_possibly_gzipped(labels_path, eval::max_idx_bytes + 8);
    eval::IdxArray labels = eval::parse_idx(label_bytes, labels_path.string());
    if (images.dims.size() != 3) {
        throw Error(ErrorCode::invalid_argument,
                    images_path.string() + ": not an IDX image file (rank is not 3)");
    }
    if (labels.dims.size() != 1) {
        throw Error(ErrorCode::invalid_argument,
                    labels_path.string() + ": not an IDX label file (rank is not 1)");
    }
    if (images.dims[0] != labels.dims[0]) {
        throw Error(ErrorCode::invalid_argument,
                    labels_path.string() + ": " + std::to_string(labels.dims[0]) + " labels for " +
                        std::to_string(images.dims[0]) + " images");
    }
    ImageSet set;
    set.count = images.dims[0];
    set.rows = images.dims[1];
    set.cols = images.dims[2];
    set.pixels = std::move(images.data);
    set.labels = std::move(labels.data);
    return set;
}

ImageSet load_fashion_mnist(const std::filesystem::path& dir, Split split) {
    const std::string prefix = split == Split::train ? "train" : "t10k";
    return read_idx_images(dir / (prefix + "-images-idx3-ubyte.gz"),
                           dir / (prefix + "-labels-idx1-ubyte.gz"));
}

}  // namespace bitinc
