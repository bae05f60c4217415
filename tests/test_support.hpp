// Helpers shared by the tests.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace bitinc::testing {

// A fresh directory under the system's temporary directory, removed with
// everything in it when the object goes out of scope.
class TemporaryDirectory {
  public:
    TemporaryDirectory() {
        std::string pattern =
            (std::filesystem::temp_directory_path() / "bitinc-test-XXXXXX").string();
        if (!::mkdtemp(pattern.data())) std::abort();
        path_ = pattern;
    }
    ~TemporaryDirectory() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    TemporaryDirectory(const TemporaryDirectory&) = delete;
    TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;

    const std::filesystem::path& path() const { return path_; }

  private:
    std::filesystem::path path_;
};

// The source tree, for the bundled models; set by CMake.
inline std::filesystem::path source_dir() {
    return BITINC_SOURCE_DIR;
}

// The Fashion-MNIST files of Debian's dataset-fashion-mnist.
inline bool fashion_mnist_available() {
    return std::filesystem::exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz");
}

}  // namespace bitinc::testing
