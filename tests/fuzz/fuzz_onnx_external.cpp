// Fuzz target: an ONNX file read from disk, with external-data references
// resolved against its directory (OnnxWeightReader), then written back
// through the streaming writer. Each input is the .onnx file; beside it lie
// weights.bin (4 KiB), a subdirectory and a symbolic link leading out, so
// mutated locations, offsets and lengths meet real files. Must never crash,
// hang, read outside the directory or allocate without bound.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "bitinc/error.hpp"
#include "bitinc/model.hpp"

namespace {

namespace fs = std::filesystem;

void write_bytes(const fs::path& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
}

// A directory for the whole run: the model's neighbours are made once.
const fs::path& work_directory() {
    static const fs::path directory = [] {
        const fs::path root =
            fs::temp_directory_path() / ("bitinc-fuzz-external-" + std::to_string(::getpid()));
        fs::create_directories(root / "model" / "sub");
        std::string weights(4096, '\0');
        for (std::size_t i = 0; i < weights.size(); ++i) weights[i] = char(i * 37 + 11);
        write_bytes(root / "model" / "weights.bin", weights);
        write_bytes(root / "outside.bin", weights);
        std::error_code ignored;
        fs::create_symlink(root / "outside.bin", root / "model" / "link.bin", ignored);
        return root / "model";
    }();
    return directory;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const fs::path& directory = work_directory();
    // Registered after the directory's path exists, so it runs before that
    // path is destroyed.
    static const bool cleanup = (std::atexit([] {
                                     std::error_code error;
                                     fs::remove_all(work_directory().parent_path(), error);
                                 }),
                                 true);
    (void)cleanup;
    const fs::path model_path = directory / "model.onnx";
    write_bytes(model_path, std::string(reinterpret_cast<const char*>(data), size));
    try {
        const bitinc::Model model = bitinc::read_onnx_file(model_path);
        bitinc::write_onnx_file(model, directory / "out.onnx", size % 2 == 0);
    } catch (const bitinc::Error&) {
        // Rejecting bad input with an Error is the expected outcome.
    }
    return 0;
}
