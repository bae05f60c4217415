#include "bitinc/inputs.hpp"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <limits>
#include <numbers>

#include "bitinc/accuracy.hpp"
#include "bitinc/error.hpp"

#include "core/checked_index.hpp"
#include "eval/idx_reader.hpp"
#include "eval/npy_reader.hpp"
#include "eval/signal_to_noise.hpp"

namespace bitinc {

namespace {

std::string dims_text(std::span<const std::int64_t> dims) {
    std::string text;
    for (const std::int64_t dim : dims) {
        if (!text.empty()) text += "x";
        text += dim < 0 ? "?" : std::to_string(dim);
    }
    return text.empty() ? "a scalar" : text;
}

// (pixel * scale - mean[c]) / std[c] for the 256 pixel values of channel c.
std::array<float, 256> normalized_pixels(const InputSpec& spec, std::size_t channel) {
    const float mean = spec.mean.size() == 1 ? spec.mean[0] : spec.mean[channel];
    const float deviation = spec.std.size() == 1 ? spec.std[0] : spec.std[channel];
    std::array<float, 256> values;
    for (std::size_t p = 0; p < 256; ++p) values[p] = (float(p) * spec.scale - mean) / deviation;
    return values;
}

class ImageInputs final : public InputSet {
  public:
    // `images` may own its set or only point at one (borrow_image_inputs).
    ImageInputs(std::shared_ptr<const ImageSet> images, InputSpec spec, std::string name)
        : images_(std::move(images)), spec_(std::move(spec)), name_(std::move(name)) {}
    const std::string& name() const override { return name_; }
    std::size_t count() const override { return images_->count; }
    bool has_labels() const override { return images_->labels.size() == images_->count; }
    std::int64_t label(std::size_t index) const override {
        return core::checked_at(images_->labels, index, "input");
    }
    FloatArray batch(std::size_t first, std::size_t count) const override {
        return make_input_batch(spec_, *images_, first, count);
    }

  private:
    std::shared_ptr<const ImageSet> images_;
    InputSpec spec_;
    std::string name_;
};

class TensorInputs final : public InputSet {
  public:
    TensorInputs(std::string name, std::vector<std::int64_t> sample_shape,
                 std::vector<float> values, std::vector<std::int64_t> labels)
        : name_(std::move(name)),
          sample_shape_(std::move(sample_shape)),
          values_(std::move(values)),
          labels_(std::move(labels)) {
        sample_size_ = 1;
        for (const std::int64_t dim : sample_shape_) sample_size_ *= std::size_t(dim);
        count_ = sample_size_ ? values_.size() / sample_size_ : 0;
    }
    const std::string& name() const override { return name_; }
    std::size_t count() const override { return count_; }
    bool has_labels() const override { return !labels_.empty(); }
    std::int64_t label(std::size_t index) const override {
        return core::checked_at(labels_, index, "input");
    }
    FloatArray batch(std::size_t first, std::size_t count) const override {
        FloatArray batch;
        batch.shape.push_back(static_cast<std::int64_t>(count));
        batch.shape.insert(batch.shape.end(), sample_shape_.begin(), sample_shape_.end());
        const auto begin = values_.begin() + static_cast<std::ptrdiff_t>(first * sample_size_);
        batch.values.assign(begin, begin + static_cast<std::ptrdiff_t>(count * sample_size_));
        return batch;
    }

  private:
    std::string name_;
    std::vector<std::int64_t> sample_shape_;
    std::vector<float> values_;
    std::vector<std::int64_t> labels_;
    std::size_t sample_size_ = 0;
    std::size_t count_ = 0;
};

class FolderInputs final : public InputSet {
  public:
    struct File {
        std::filesystem::path path;
        std::int64_t label;
    };
    FolderInputs(std::string name, std::vector<File> files, InputSpec spec)
        : name_(std::move(name)), files_(std::move(files)), spec_(std::move(spec)) {}
    const std::string& name() const override { return name_; }
    std::size_t count() const override { return files_.size(); }
    bool has_labels() const override { return true; }
    std::int64_t label(std::size_t index) const override {
        return core::checked_at(files_, index, "input").label;
    }

    FloatArray batch(std::size_t first, std::size_t count) const override {
        const auto channels = static_cast<std::size_t>(spec_.channels);
        const auto height = static_cast<std::size_t>(spec_.height);
        const auto width = static_cast<std::size_t>(spec_.width);
        const std::size_t plane = height * width;
        FloatArray batch;
        batch.shape = {static_cast<std::int64_t>(count), spec_.channels, spec_.height, spec_.width};
        batch.values.resize(count * channels * plane);
        std::vector<std::array<float, 256>> normalized;
        for (std::size_t c = 0; c < channels; ++c)
            normalized.push_back(normalized_pixels(spec_, c));
        for (std::size_t n = 0; n < count; ++n) {
            const cv::Mat image = load(core::checked_at(files_, first + n, "input").path);
            for (std::size_t y = 0; y < height; ++y) {
                const std::uint8_t* row = image.ptr<std::uint8_t>(static_cast<int>(y));
                for (std::size_t x = 0; x < width; ++x) {
                    for (std::size_t c = 0; c < channels; ++c) {
                        batch.values[(n * channels + c) * plane + y * width + x] =
                            normalized[c][row[x * channels + c]];
                    }
                }
            }
        }
        return batch;
    }

  private:
    // The image as 8-bit grey or RGB of the model's height and width.
    cv::Mat load(const std::filesystem::path& path) const {
        cv::Mat image;
        try {
            image = cv::imread(path.string(),
                               spec_.channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR);
        } catch (const cv::Exception&) {
            image = cv::Mat();
        }
        if (image.empty() || image.depth() != CV_8U) {
            throw Error(ErrorCode::corrupt_data, path.string() + ": not an image OpenCV can read");
        }
        // OpenCV decodes colour as BGR; models are trained on RGB.
        if (spec_.channels == 3) cv::cvtColor(image, image, cv::COLOR_BGR2RGB);
        if (image.rows != spec_.height || image.cols != spec_.width) {
            const bool shrinking = image.rows > spec_.height || image.cols > spec_.width;
            cv::Mat resized;
            cv::resize(image, resized,
                       cv::Size(static_cast<int>(spec_.width), static_cast<int>(spec_.height)), 0,
                       0, shrinking ? cv::INTER_AREA : cv::INTER_LINEAR);
            image = resized;
        }
        if (!image.isContinuous()) image = image.clone();
        return image;
    }

    std::string name_;
    std::vector<File> files_;
    InputSpec spec_;
};

// Deterministic standard normal values: splitmix64 for uniform bits, then
// Box-Muller (the standard library's distributions differ between
// implementations).
class NormalGenerator {
  public:
    explicit NormalGenerator(std::uint64_t seed) : state_(seed) {}
    float next() {
        if (has_spare_) {
            has_spare_ = false;
            return spare_;
        }
        const double u1 = (double(next_bits() >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
        const double u2 = double(next_bits() >> 11) * 0x1.0p-53;          // [0, 1)
        const double radius = std::sqrt(-2.0 * std::log(u1));
        const double angle = 2.0 * std::numbers::pi * u2;
        spare_ = float(radius * std::sin(angle));
        has_spare_ = true;
        return float(radius * std::cos(angle));
    }

  private:
    std::uint64_t next_bits() {
        std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    std::uint64_t state_;
    float spare_ = 0.0f;
    bool has_spare_ = false;
};

class GeneratedInputs final : public InputSet {
  public:
    GeneratedInputs(std::vector<std::int64_t> sample_shape, std::size_t count, std::uint64_t seed)
        : sample_shape_(std::move(sample_shape)), count_(count), seed_(seed) {
        sample_size_ = 1;
        for (const std::int64_t dim : sample_shape_) sample_size_ *= std::size_t(dim);
        name_ = "random normal " + dims_text(sample_shape_);
    }
    const std::string& name() const override { return name_; }
    std::size_t count() const override { return count_; }
    bool has_labels() const override { return false; }
    std::int64_t label(std::size_t) const override {
        throw Error(ErrorCode::invalid_argument, name_ + ": no labels");
    }
    FloatArray batch(std::size_t first, std::size_t count) const override {
        FloatArray batch;
        batch.shape.push_back(static_cast<std::int64_t>(count));
        batch.shape.insert(batch.shape.end(), sample_shape_.begin(), sample_shape_.end());
        batch.values.resize(count * sample_size_);
        for (std::size_t n = 0; n < count; ++n) {
            // Each input has its own stream, so batching does not change it.
            NormalGenerator generator(seed_ * 0x100000001b3ull + first + n);
            float* sample = batch.values.data() + n * sample_size_;
            for (std::size_t i = 0; i < sample_size_; ++i) sample[i] = generator.next();
        }
        return batch;
    }

  private:
    std::vector<std::int64_t> sample_shape_;
    std::size_t count_;
    std::uint64_t seed_;
    std::size_t sample_size_ = 0;
    std::string name_;
};

std::vector<std::int64_t> read_npy_labels(const std::filesystem::path& path, std::size_t count) {
    const eval::NpyArray array = eval::read_npy_file(path);
    const std::string name = path.string();
    if (array.type == eval::NpyType::float32) {
        throw Error(ErrorCode::unsupported,
                    name + ": labels must be int64, int32 or uint8, not float32");
    }
    const bool column = array.shape.size() == 2 && array.shape[1] == 1;
    if (array.shape.size() != 1 && !column) {
        throw Error(ErrorCode::invalid_argument,
                    name + ": labels must be shaped (N,), one class per input");
    }
    if (array.shape[0] != count) {
        throw Error(ErrorCode::invalid_argument, name + ": " + std::to_string(array.shape[0]) +
                                                     " labels for " + std::to_string(count) +
                                                     " inputs");
    }
    std::vector<std::int64_t> labels = array.as_integers();
    for (std::size_t i = 0; i < labels.size(); ++i) {
        if (labels[i] < 0) {
            throw Error(ErrorCode::invalid_argument, name + ": label " + std::to_string(i) +
                                                         " is negative (" +
                                                         std::to_string(labels[i]) + ")");
        }
    }
    return labels;
}

bool has_extension(const std::filesystem::path& path, std::string_view extension) {
    std::string text = path.extension().string();
    std::transform(text.begin(), text.end(), text.begin(),
                   [](unsigned char c) { return char(std::tolower(c)); });
    return text == extension;
}

// The spec an image dataset needs, or an Error saying why there is none.
const InputSpec& image_spec(const std::optional<InputSpec>& spec, std::string_view model_name,
                            const std::string& dataset) {
    if (!spec) {
        throw Error(ErrorCode::invalid_argument,
                    std::string(model_name) +
                        ": the model's input is not an NCHW image batch, so " + dataset +
                        " cannot feed it (a .npy file of float32 inputs or --dataset random can)");
    }
    if (spec->channels <= 0 || spec->height <= 0 || spec->width <= 0) {
        throw Error(ErrorCode::invalid_argument,
                    std::string(model_name) + ": the model's input '" + spec->input_name +
                        "' has open dimensions; give its shape with --input-shape " +
                        spec->input_name + ":1x3x224x224 (its own numbers)");
    }
    return *spec;
}

}  // namespace

std::pair<std::string, std::vector<std::int64_t>> parse_input_shape(std::string_view text) {
    const auto colon = text.rfind(':');
    const std::string quoted = "'" + std::string(text) + "'";
    if (colon == std::string_view::npos || colon == 0) {
        throw Error(ErrorCode::invalid_argument,
                    "input shape " + quoted + " is not NAME:D0xD1x... (e.g. input:1x3x224x224)");
    }
    std::vector<std::int64_t> dims;
    std::string_view rest = text.substr(colon + 1);
    while (true) {
        const auto cross = rest.find('x');
        const std::string_view part = rest.substr(0, cross);
        std::int64_t dim = 0;
        const auto [end, error] = std::from_chars(part.data(), part.data() + part.size(), dim);
        if (part.empty() || error != std::errc() || end != part.data() + part.size() || dim < 1 ||
            dim > 1'000'000) {
            throw Error(ErrorCode::invalid_argument,
                        "input shape " + quoted +
                            ": every dimension must be a whole number from 1 to 1000000");
        }
        dims.push_back(dim);
        if (dims.size() > 8)
            throw Error(ErrorCode::invalid_argument,
                        "input shape " + quoted + ": more than 8 dimensions");
        if (cross == std::string_view::npos) break;
        rest = rest.substr(cross + 1);
    }
    return {std::string(text.substr(0, colon)), dims};
}

std::vector<std::int64_t> model_input_shape(const Model& model, std::string_view model_name,
                                            const InputShapes& shapes) {
    const std::string name(model_name);
    const TopologySummary summary = summarize_topology(model);
    if (summary.inputs.empty())
        throw Error(ErrorCode::unsupported, name + ": the graph has no input to feed");
    for (const auto& entry : shapes) {
        const std::string& input = entry.first;  // named: lambdas cannot capture bindings (clang)
        const bool known = std::any_of(summary.inputs.begin(), summary.inputs.end(),
                                       [&](const ValueInfo& info) { return info.name == input; });
        if (!known) {
            std::string names;
            for (const ValueInfo& info : summary.inputs)
                names += (names.empty() ? "" : ", ") + info.name;
            throw Error(ErrorCode::invalid_argument, name + ": --input-shape names '" + input +
                                                         "', but the model's inputs are: " + names);
        }
    }
    const ValueInfo& input = summary.inputs.front();
    if (const auto given = shapes.find(input.name); given != shapes.end()) {
        if (!input.dims.empty() && input.dims.size() != given->second.size()) {
            throw Error(ErrorCode::invalid_argument, name + ": input '" + input.name + "' has " +
                                                         std::to_string(input.dims.size()) +
                                                         " dimensions (" + dims_text(input.dims) +
                                                         "), --input-shape gives " +
                                                         std::to_string(given->second.size()));
        }
        for (std::size_t i = 0; i < input.dims.size(); ++i) {
            if (input.dims[i] > 0 && input.dims[i] != given->second[i] && i != 0) {
                throw Error(ErrorCode::invalid_argument,
                            name + ": input '" + input.name + "' is " + dims_text(input.dims) +
                                ", --input-shape gives " + dims_text(given->second));
            }
        }
        return given->second;
    }
    if (input.dims.empty()) {
        throw Error(ErrorCode::invalid_argument,
                    name + ": the graph does not give the shape of input '" + input.name +
                        "'; give it with --input-shape " + input.name + ":D0xD1x...");
    }
    for (std::size_t i = 1; i < input.dims.size(); ++i) {
        if (input.dims[i] <= 0) {
            throw Error(ErrorCode::invalid_argument,
                        name + ": input '" + input.name + "' has open dimensions (" +
                            dims_text(input.dims) + "); give its shape with --input-shape " +
                            input.name + ":D0xD1x...");
        }
    }
    return input.dims;
}

void apply_input_shapes(InputSpec& spec, const InputShapes& shapes) {
    const auto given = shapes.find(spec.input_name);
    if (given == shapes.end() || given->second.size() != 4) return;
    spec.channels = given->second[1];
    spec.height = given->second[2];
    spec.width = given->second[3];
}

std::unique_ptr<InputSet> make_image_inputs(ImageSet images, InputSpec spec, std::string name) {
    return std::make_unique<ImageInputs>(std::make_shared<const ImageSet>(std::move(images)),
                                         std::move(spec), std::move(name));
}

std::unique_ptr<InputSet> borrow_image_inputs(const ImageSet& images, InputSpec spec,
                                              std::string name) {
    // An aliasing pointer that owns nothing.
    return std::make_unique<ImageInputs>(
        std::shared_ptr<const ImageSet>(std::shared_ptr<void>(), &images), std::move(spec),
        std::move(name));
}

std::unique_ptr<InputSet> read_npy_inputs(const std::filesystem::path& inputs,
                                          const std::optional<std::filesystem::path>& labels,
                                          const std::optional<InputSpec>& spec) {
    const std::string name = inputs.string();
    const eval::NpyArray array = eval::read_npy_file(inputs);
    if (array.type != eval::NpyType::float32 && array.type != eval::NpyType::uint8) {
        throw Error(ErrorCode::unsupported,
                    name +
                        ": inputs must be float32 (fed as they are) or uint8 (image pixels), not " +
                        std::string(eval::npy_type_name(array.type)));
    }
    if (array.shape.size() < 2) {
        throw Error(ErrorCode::invalid_argument,
                    name + ": inputs must be shaped (N, ...), one row per input; this is " +
                        std::to_string(array.shape.size()) + "-D");
    }
    if (array.shape[0] == 0)
        throw Error(ErrorCode::invalid_argument, name + ": holds no inputs (N is 0)");
    std::vector<std::int64_t> sample_shape;
    for (std::size_t i = 1; i < array.shape.size(); ++i) {
        if (array.shape[i] == 0)
            throw Error(ErrorCode::invalid_argument, name + ": a dimension of the inputs is 0");
        sample_shape.push_back(static_cast<std::int64_t>(array.shape[i]));
    }
    const auto count = static_cast<std::size_t>(array.shape[0]);
    std::vector<float> values = array.as_floats();
    if (array.type == eval::NpyType::uint8) {
        // Pixels: the model's own preprocessing, channel by channel.
        if (!spec) {
            throw Error(ErrorCode::invalid_argument,
                        name +
                            ": uint8 inputs are image pixels, and the model has no image "
                            "input to prepare them for; save float32 inputs instead");
        }
        if (array.shape.size() != 4 || sample_shape[0] != spec->channels) {
            throw Error(ErrorCode::invalid_argument,
                        name + ": uint8 inputs must be images shaped (N, " +
                            std::to_string(spec->channels) + ", H, W) for this model");
        }
        const std::size_t plane = static_cast<std::size_t>(sample_shape[1] * sample_shape[2]);
        const auto channels = static_cast<std::size_t>(spec->channels);
        for (std::size_t c = 0; c < channels; ++c) {
            const std::array<float, 256> normalized = normalized_pixels(*spec, c);
            for (std::size_t n = 0; n < count; ++n) {
                float* pixels = values.data() + (n * channels + c) * plane;
                for (std::size_t i = 0; i < plane; ++i) {
                    pixels[i] = normalized[static_cast<std::uint8_t>(pixels[i])];
                }
            }
        }
    }
    std::vector<std::int64_t> label_values;
    if (labels) label_values = read_npy_labels(*labels, count);
    return std::make_unique<TensorInputs>(name, std::move(sample_shape), std::move(values),
                                          std::move(label_values));
}

std::unique_ptr<InputSet> read_image_folder(const std::filesystem::path& folder,
                                            const InputSpec& spec) {
    namespace fs = std::filesystem;
    const std::string name = folder.string();
    if (spec.channels != 1 && spec.channels != 3) {
        throw Error(ErrorCode::invalid_argument,
                    name + ": the model takes " + std::to_string(spec.channels) +
                        " channels; images can feed 1 (grey) or 3 (RGB)");
    }
    std::vector<FolderInputs::File> files;
    // Iterating and testing entries may throw filesystem_error, which
    // leaves here as Error.
    try {
        std::error_code error;
        std::vector<fs::path> classes;
        for (const fs::directory_entry& entry : fs::directory_iterator(folder, error)) {
            if (entry.is_directory() && entry.path().filename().string().front() != '.') {
                classes.push_back(entry.path());
            }
        }
        if (error)
            throw Error(ErrorCode::io, name + ": cannot list the folder: " + error.message());
        if (classes.empty()) {
            throw Error(
                ErrorCode::invalid_argument,
                name + ": no class folders (the dataset is one subfolder of images per class)");
        }
        std::sort(classes.begin(), classes.end());
        for (std::size_t label = 0; label < classes.size(); ++label) {
            std::vector<fs::path> images;
            for (const fs::directory_entry& entry : fs::directory_iterator(classes[label], error)) {
                if (entry.is_regular_file() && entry.path().filename().string().front() != '.') {
                    images.push_back(entry.path());
                }
            }
            if (error)
                throw Error(ErrorCode::io, classes[label].string() +
                                               ": cannot list the folder: " + error.message());
            std::sort(images.begin(), images.end());
            for (fs::path& image : images) {
                files.push_back({std::move(image), static_cast<std::int64_t>(label)});
            }
        }
    } catch (const fs::filesystem_error& failure) {
        throw Error(ErrorCode::io, failure.path1().string() +
                                       ": cannot list the folder: " + failure.code().message());
    }
    if (files.empty())
        throw Error(ErrorCode::invalid_argument, name + ": the class folders hold no files");
    // Interleave nothing: inputs come class by class, each class in name
    // order, so --limit takes the first classes' images.
    return std::make_unique<FolderInputs>(name, std::move(files), spec);
}

std::unique_ptr<InputSet> make_generated_inputs(std::vector<std::int64_t> sample_shape,
                                                std::size_t count, std::uint64_t seed) {
    for (const std::int64_t dim : sample_shape) {
        if (dim <= 0)
            throw Error(ErrorCode::invalid_argument,
                        "generated inputs need a fixed shape, not " + dims_text(sample_shape));
    }
    return std::make_unique<GeneratedInputs>(std::move(sample_shape), count, seed);
}

std::unique_ptr<InputSet> open_dataset(const DatasetRequest& request, const Model& model,
                                       std::string_view model_name,
                                       const std::optional<InputSpec>& spec) {
    const std::string& dataset = request.dataset;
    // Engines feed one input; a second one would fail deep in the engine.
    if (const TopologySummary summary = summarize_topology(model); summary.inputs.size() > 1) {
        std::string names;
        for (const ValueInfo& info : summary.inputs) {
            names += (names.empty() ? "" : ", ") + info.name;
        }
        throw Error(ErrorCode::unsupported, std::string(model_name) + ": the model has " +
                                                std::to_string(summary.inputs.size()) +
                                                " inputs (" + names +
                                                "); bitinc feeds models of one input");
    }
    if (dataset.empty() || dataset == "random") {
        if (request.labels)
            throw Error(ErrorCode::invalid_argument,
                        "--labels needs --dataset naming the inputs they label");
    }
    if (dataset.empty()) {
        const InputSpec& image = image_spec(spec, model_name, "Fashion-MNIST");
        ImageSet images = load_fashion_mnist(request.fashion_mnist_dir, Split::test);
        check_model_fits_images(image, images, "fashion-mnist", 10, model_name);
        return make_image_inputs(std::move(images), image, "fashion-mnist");
    }
    if (dataset == "random") {
        std::vector<std::int64_t> shape =
            model_input_shape(model, model_name, request.input_shapes);
        shape.erase(shape.begin());
        return make_generated_inputs(std::move(shape), request.generated_count);
    }
    const std::filesystem::path path(dataset);
    std::error_code not_a_folder;
    if (std::filesystem::is_directory(path, not_a_folder)) {
        if (request.labels)
            throw Error(ErrorCode::invalid_argument,
                        "--labels does not go with a folder: its subfolders are the classes");
        return read_image_folder(path, image_spec(spec, model_name, dataset));
    }
    if (has_extension(path, ".npy")) {
        if (request.labels && !has_extension(*request.labels, ".npy")) {
            throw Error(ErrorCode::invalid_argument,
                        request.labels->string() + ": labels for .npy inputs must be a .npy file");
        }
        std::unique_ptr<InputSet> inputs = read_npy_inputs(path, request.labels, spec);
        // Check the samples against the graph where it fixes the shape, so a
        // mismatch is named here rather than deep in the engine.
        const FloatArray first = inputs->batch(0, 1);
        const TopologySummary summary = summarize_topology(model);
        if (!summary.inputs.empty()) {
            std::vector<std::int64_t> expected = summary.inputs.front().dims;
            if (const auto given = request.input_shapes.find(summary.inputs.front().name);
                given != request.input_shapes.end()) {
                expected = given->second;
            }
            bool fits = expected.empty() || expected.size() == first.shape.size();
            for (std::size_t i = 1; fits && i < expected.size(); ++i) {
                fits = expected[i] <= 0 || expected[i] == first.shape[i];
            }
            if (!fits) {
                throw Error(ErrorCode::invalid_argument,
                            dataset + ": each input is " +
                                dims_text(std::span(first.shape).subspan(1)) +
                                ", the model's input '" + summary.inputs.front().name + "' takes " +
                                dims_text(std::span(expected).subspan(1)));
            }
        }
        return inputs;
    }
    // An IDX image file, with IDX labels or none.
    const InputSpec& image = image_spec(spec, model_name, dataset);
    const auto image_bytes = eval::read_possibly_gzipped(path, eval::max_idx_bytes + 16);
    if (image_bytes.size() < 4 || image_bytes[0] != 0 || image_bytes[1] != 0) {
        throw Error(ErrorCode::invalid_argument,
                    dataset +
                        ": not a dataset bitinc reads (a .npy file, a folder of class folders, an "
                        "IDX image file, or 'random')");
    }
    eval::IdxArray array = eval::parse_idx(image_bytes, dataset);
    if (array.dims.size() != 3) {
        throw Error(ErrorCode::invalid_argument,
                    dataset +
                        ": not a dataset bitinc reads (a .npy file, a folder of class folders, or "
                        "an IDX image file of rank 3)");
    }
    ImageSet images;
    images.count = array.dims[0];
    images.rows = array.dims[1];
    images.cols = array.dims[2];
    images.pixels = std::move(array.data);
    if (request.labels) {
        const std::string labels_name = request.labels->string();
        if (has_extension(*request.labels, ".npy")) {
            for (const std::int64_t label : read_npy_labels(*request.labels, images.count)) {
                if (label > 255)
                    throw Error(ErrorCode::invalid_argument,
                                labels_name + ": IDX images take labels up to 255");
                images.labels.push_back(static_cast<std::uint8_t>(label));
            }
        } else {
            const auto label_bytes =
                eval::read_possibly_gzipped(*request.labels, eval::max_idx_bytes + 8);
            eval::IdxArray labels = eval::parse_idx(label_bytes, labels_name);
            if (labels.dims.size() != 1) {
                throw Error(ErrorCode::invalid_argument,
                            labels_name + ": not an IDX label file (rank is not 1)");
            }
            if (labels.dims[0] != images.count) {
                throw Error(ErrorCode::invalid_argument,
                            labels_name + ": " + std::to_string(labels.dims[0]) + " labels for " +
                                std::to_string(images.count) + " images");
            }
            images.labels = std::move(labels.data);
        }
    }
    check_model_fits_images(image, images, image.dataset, std::size_t(image.classes), model_name);
    return make_image_inputs(std::move(images), image, dataset);
}

double InputMetrics::snr_db() const {
    return eval::signal_to_noise_db(reference_energy, difference_energy);
}

InputMetrics measure_inputs(Engine& engine, Engine* reference, const InputSet& inputs,
                            const InputMetricsOptions& options) {
    const std::size_t total =
        options.limit ? std::min(options.limit, inputs.count()) : inputs.count();
    const std::size_t batch_size = std::max<std::size_t>(1, options.batch_size);
    InputMetrics metrics;
    metrics.labelled = inputs.has_labels();
    metrics.compared = reference != nullptr;
    const auto argmax = [](const float* values, std::size_t size) {
        return static_cast<std::size_t>(std::max_element(values, values + size) - values);
    };
    const auto check_output = [](const FloatArray& output, std::size_t count, const char* which) {
        if (output.shape.empty() || output.shape[0] != static_cast<std::int64_t>(count) ||
            output.values.empty() || output.values.size() % count != 0) {
            throw Error(ErrorCode::unsupported, std::string(which) + "'s output " +
                                                    dims_text(output.shape) +
                                                    " has no batch axis of the " +
                                                    std::to_string(count) + " inputs of a pass");
        }
        return output.values.size() / count;
    };
    for (std::size_t first = 0; first < total; first += batch_size) {
        const std::size_t count = std::min(batch_size, total - first);
        const FloatArray batch = inputs.batch(first, count);
        const auto start = std::chrono::steady_clock::now();
        const FloatArray outputs = engine.run(batch);
        metrics.seconds +=
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const std::size_t sample_size = check_output(outputs, count, "the model");
        for (std::size_t n = 0; n < count; ++n) {
            const float* row = outputs.values.data() + n * sample_size;
            if (metrics.labelled &&
                static_cast<std::int64_t>(argmax(row, sample_size)) == inputs.label(first + n)) {
                ++metrics.correct;
            }
        }
        if (reference) {
            const FloatArray expected = reference->run(batch);
            check_output(expected, count, "the reference model");
            if (expected.shape != outputs.shape) {
                throw Error(ErrorCode::invalid_argument,
                            "the reference model's output is " + dims_text(expected.shape) +
                                ", the model's " + dims_text(outputs.shape));
            }
            for (std::size_t n = 0; n < count; ++n) {
                const float* row = outputs.values.data() + n * sample_size;
                const float* reference_row = expected.values.data() + n * sample_size;
                if (argmax(row, sample_size) == argmax(reference_row, sample_size)) {
                    ++metrics.agreeing;
                }
                for (std::size_t i = 0; i < sample_size; ++i) {
                    const double difference = double(row[i]) - double(reference_row[i]);
                    metrics.reference_energy += double(reference_row[i]) * double(reference_row[i]);
                    metrics.difference_energy += difference * difference;
                }
            }
        }
        metrics.inputs += count;
        if (options.progress) options.progress(metrics.inputs, total);
    }
    return metrics;
}

}  // namespace bitinc
