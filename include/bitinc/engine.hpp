// Inference engines that run a Model on the device.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bitinc/model.hpp"

namespace bitinc {

// A dense float array in row-major order, e.g. an NCHW input batch or the
// [N, classes] output of a classifier.
struct FloatArray {
    std::vector<std::int64_t> shape;
    std::vector<float> values;
};

// Shapes given on the command line (--input-shape NAME:1x3x224x224) for
// inputs whose graph leaves dimensions open, by input name.
using InputShapes = std::map<std::string, std::vector<std::int64_t>>;

struct EngineOptions {
    // Threads the engine may use for one forward pass; 0 keeps the engine's
    // default (all cores). OpenCV DNN holds this setting process-wide.
    int threads = 0;
    // The shape of the warm-up pass for a first input named here; without
    // one, the graph's shape with batch 1 (no warm-up if it has open
    // dimensions).
    InputShapes input_shapes{};
};

// Runs forward passes of one fixed set of weights. An Engine is not
// thread-safe: one forward pass at a time (callers serialize).
class Engine {
  public:
    virtual ~Engine() = default;
    virtual std::string_view name() const = 0;
    // Runs one batch through the model's first input and returns its first
    // output. Throws Error if the engine rejects the batch.
    virtual FloatArray run(const FloatArray& batch) = 0;
};

// Builds an OpenCV DNN engine from `model`, applying apply_engine_fixups to
// it first (pass a model you no longer need with std::move: no copy of its
// weights is made). `model_name` names the model in error messages. Throws
// Error if OpenCV cannot import the graph (e.g. an unsupported operator).
std::unique_ptr<Engine> create_opencv_engine(Model model, std::string_view model_name,
                                             const EngineOptions& options = {});

// How raw image pixels become the model's input, read from the model's own
// metadata so that no preprocessing constant lives in two places.
//
//   x = (pixel * scale - mean[c]) / std[c]
//
// An image smaller than height x width is centred on a canvas of pixel value
// 0 (before normalization); a grey image fed to a 3-channel model is copied
// into every channel.
struct InputSpec {
    std::string input_name;
    std::int64_t channels = 1;
    std::int64_t height = 0;
    std::int64_t width = 0;
    float scale = 1.0f / 255.0f;
    std::vector<float> mean{0.0f};
    std::vector<float> std{1.0f};
    std::string dataset;         // "" when the model does not say
    std::int64_t classes = 0;    // 0 when the model does not say
    bool from_metadata = false;  // false: guessed from the graph's input
};

// Reads the bitinc.input.* metadata keys (see docs/models.md); without them,
// takes the shape from the graph's first input and uses scale 1/255, mean 0,
// std 1. Throws Error naming `model_name` on malformed values.
InputSpec read_input_spec(const Model& model, std::string_view model_name);

}  // namespace bitinc
