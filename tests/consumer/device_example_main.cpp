// Runs the device integration of docs/architecture.md ("A device
// integration", compiled from the document itself) on a package directory:
// file reads stand in for the app's HTTP client, and the "engine" keeps the
// last model it was given, which must be the exact rung: the expected file.
#include <bitinc/model.hpp>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>

void download_model(const std::string& url);  // the document's example

namespace {

std::string read_file(const std::string& path) {
    std::ifstream stream(path, std::ios::binary);
    if (!stream) throw std::runtime_error(path + ": cannot open");
    return {std::istreambuf_iterator<char>(stream), std::istreambuf_iterator<char>()};
}

std::string last_model;
int rungs_loaded = 0;

}  // namespace

std::string http_get(const std::string& url, std::uint64_t begin, std::uint64_t end) {
    const std::string file = read_file(url);
    if (end == 0) end = file.size();
    if (begin > end || end > file.size()) throw std::runtime_error(url + ": range not satisfiable");
    return file.substr(begin, end - begin);
}

void engine_load(const bitinc::Model& model, int bits) {
    std::printf("engine: a %d-bit model\n", bits);
    last_model = bitinc::serialize_onnx(model);
    ++rungs_loaded;
}

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: device_example PACKAGE_DIR EXPECTED.onnx\n");
        return 2;
    }
    try {
        download_model(std::string(argv[1]) + "/");
        if (rungs_loaded < 2 || last_model != read_file(argv[2])) {
            std::fprintf(stderr, "device_example: the last model is not the exact rung\n");
            return 1;
        }
    } catch (const std::exception& error) {
        std::fprintf(stderr, "device_example: %s\n", error.what());
        return 1;
    }
    std::printf("device example: %d rungs, the last one exact\n", rungs_loaded);
    return 0;
}
