// Inputs for any model, whatever form the dataset takes (IDX images, .npy
// tensors, a folder of images, generated tensors), and the metrics that need
// no particular task: top-1 against labels, and agreement with a reference
// (float) model.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bitinc/dataset.hpp"
#include "bitinc/engine.hpp"

namespace bitinc {

// A numbered list of model inputs, optionally labelled.
class InputSet {
  public:
    virtual ~InputSet() = default;
    // What the reports call the dataset, e.g. "fashion-mnist" or a path.
    virtual const std::string& name() const = 0;
    virtual std::size_t count() const = 0;
    virtual bool has_labels() const = 0;
    // The class of input `index`; only when has_labels().
    virtual std::int64_t label(std::size_t index) const = 0;
    // Inputs [first, first + count) as one batch, shaped [count, ...] and
    // ready for the engine. Throws Error naming the input that cannot be read.
    virtual FloatArray batch(std::size_t first, std::size_t count) const = 0;
};

// Parses "NAME:D0xD1x...": every dimension 1 to 1,000,000. Throws Error.
std::pair<std::string, std::vector<std::int64_t>> parse_input_shape(std::string_view text);

// The shape one forward pass of the model's first input takes, the batch
// axis first: the graph's dims with `shapes` filling in (or overriding) a
// named input. A dynamic batch axis is left as -1; any other open dimension
// is an Error that names the input and suggests --input-shape.
std::vector<std::int64_t> model_input_shape(const Model& model, std::string_view model_name,
                                            const InputShapes& shapes);

// Applies `shapes` to an image InputSpec (channels, height, width of a
// 4-D shape given for its input).
void apply_input_shapes(InputSpec& spec, const InputShapes& shapes);

// IDX greyscale images prepared by `spec` (centred, normalized), as
// make_input_batch does.
std::unique_ptr<InputSet> make_image_inputs(ImageSet images, InputSpec spec, std::string name);
// The same without a copy: `images` must outlive the result.
std::unique_ptr<InputSet> borrow_image_inputs(const ImageSet& images, InputSpec spec,
                                              std::string name);

// A .npy file of inputs shaped [N, ...]: float32 values are fed as they are;
// uint8 values are pixels of [N, C, H, W] images and get the model's
// preprocessing from `spec` (scale, mean, std; an Error without one). Labels, if given, are a
// .npy file of N int64 or int32 (or uint8) classes. Throws Error naming the
// file and the reason.
std::unique_ptr<InputSet> read_npy_inputs(const std::filesystem::path& inputs,
                                          const std::optional<std::filesystem::path>& labels,
                                          const std::optional<InputSpec>& spec);

// A folder with one subfolder per class, in sorted name order (class 0 is
// the first); every file in a subfolder is an image OpenCV can read. Images
// are read when a batch needs them, converted to the model's channels (grey,
// or RGB), resized to spec's height x width and normalized by `spec`.
std::unique_ptr<InputSet> read_image_folder(const std::filesystem::path& folder,
                                            const InputSpec& spec);

// `count` inputs of `sample_shape` (no batch axis) drawn from a standard
// normal distribution by a fixed pseudo-random generator: the same inputs on
// every machine for the same seed.
std::unique_ptr<InputSet> make_generated_inputs(std::vector<std::int64_t> sample_shape,
                                                std::size_t count, std::uint64_t seed = 1);

// What --dataset names: "" (Fashion-MNIST's test split from `fashion_mnist_dir`),
// "random" (generated inputs of the model's input shape), a .npy file, a
// directory of class folders, or an IDX image file (gzipped or not).
struct DatasetRequest {
    std::string dataset;
    std::optional<std::filesystem::path> labels;  // .npy or IDX labels
    std::filesystem::path fashion_mnist_dir = std::string(default_fashion_mnist_dir);
    std::size_t generated_count = 100;
    InputShapes input_shapes;
};

// Opens the dataset `request` names for `model` (whose image preprocessing
// is `spec`, when the model has one). Throws Error with a one-line reason.
std::unique_ptr<InputSet> open_dataset(const DatasetRequest& request, const Model& model,
                                       std::string_view model_name,
                                       const std::optional<InputSpec>& spec);

struct InputMetricsOptions {
    std::size_t limit = 0;  // only the first `limit` inputs; 0 = all
    std::size_t batch_size = 100;
    // Called after every batch with (inputs done, inputs in total).
    std::function<void(std::size_t, std::size_t)> progress;
};

// Top-1 against labels and agreement with a reference model's outputs. A
// sample's prediction is the argmax of its output (all of a sample's output
// values, e.g. the scores of [N, classes]).
struct InputMetrics {
    std::size_t inputs = 0;
    bool labelled = false;
    std::size_t correct = 0;
    bool compared = false;  // a reference model ran on the same inputs
    std::size_t agreeing = 0;
    double reference_energy = 0.0;   // sum of squared reference outputs
    double difference_energy = 0.0;  // sum of squared differences
    double seconds = 0.0;            // the model's forward passes (not reading inputs)

    double top1_percent() const { return inputs ? 100.0 * double(correct) / double(inputs) : 0.0; }
    double agreement_percent() const {
        return inputs ? 100.0 * double(agreeing) / double(inputs) : 0.0;
    }
    // 10 log10(reference energy / difference energy); +infinity when the
    // outputs are identical.
    double snr_db() const;
    double inputs_per_second() const { return seconds > 0 ? double(inputs) / seconds : 0.0; }
};

// Runs `inputs` through `engine` (and `reference`, when given) in batches.
// Throws Error when the model's output has no per-input axis of the batch's
// size, or when the two models' outputs differ in shape.
InputMetrics measure_inputs(Engine& engine, Engine* reference, const InputSet& inputs,
                            const InputMetricsOptions& options = {});

}  // namespace bitinc
