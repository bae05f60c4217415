// An app on the decode component alone: a ProgressiveModel over a package
// directory, with its own engine (here one that keeps the model's ONNX
// bytes), and no HTTP or OpenCV. Its last engine must hold the exact rung:
// the expected ONNX file byte for byte.
//
// usage: progressive_consumer PACKAGE_DIR EXPECTED.onnx
#include <bitinc/byte_source.hpp>
#include <bitinc/progressive.hpp>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>

namespace {

// The last model an engine was built from, as ONNX bytes.
struct Built {
    std::mutex mutex;
    std::string onnx;
    int engines = 0;
};

class RecordingEngine : public bitinc::Engine {
  public:
    std::string_view name() const override { return "recording"; }
    bitinc::FloatArray run(const bitinc::FloatArray& batch) override { return batch; }
};

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s PACKAGE_DIR EXPECTED.onnx\n", argv[0]);
        return 2;
    }
    auto built = std::make_shared<Built>();
    bitinc::ProgressiveOptions options;
    options.engine_factory = [built](bitinc::Model model) {
        const std::lock_guard lock(built->mutex);
        built->onnx = bitinc::serialize_onnx(model);
        ++built->engines;
        return std::make_unique<RecordingEngine>();
    };
    bitinc::ProgressiveModel model(std::shared_ptr(bitinc::make_directory_source(argv[1])),
                                   options);
    if (!model.wait_finished(std::chrono::seconds(60)) || model.failure()) {
        std::fprintf(stderr, "progressive model: %s\n",
                     model.failure().value_or("did not finish").c_str());
        return 1;
    }
    std::ifstream in(argv[2], std::ios::binary);
    const std::string expected((std::istreambuf_iterator<char>(in)), {});
    const std::lock_guard lock(built->mutex);
    const bool same = !expected.empty() && built->onnx == expected;
    std::printf("%d engines, the last at %d bits, %s the expected file\n", built->engines,
                model.bits(), same ? "equal to" : "DIFFERENT from");
    return same ? 0 : 1;
}
