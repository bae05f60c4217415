// Helpers shared by the tests.
#pragma once

#include <bitinc/net.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

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

// A whole file's bytes ("" if it cannot be read).
inline std::string slurp(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

// Replaces a file's contents with `bytes`.
inline void spit(const std::filesystem::path& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes;
}

// A running PackageServer on a free loopback port serving `root`, paced to
// `rate` bits/s (0: unlimited), with the faults in parse_fault's form.
inline std::unique_ptr<PackageServer> start_package_server(const std::filesystem::path& root,
                                                           double rate,
                                                           const std::vector<std::string>& faults) {
    ServerOptions options;
    options.root = root;
    options.rate_bits_per_second = rate;
    for (const std::string& fault : faults) options.faults.push_back(parse_fault(fault));
    auto server = std::make_unique<PackageServer>(options);
    server->start();
    return server;
}

}  // namespace bitinc::testing
