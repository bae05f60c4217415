#include "bitinc/accuracy.hpp"

#include <algorithm>
#include <array>
#include <chrono>

#include "bitinc/error.hpp"

namespace bitinc {

void check_model_fits_images(const InputSpec& spec, const ImageSet& images,
                             std::string_view dataset_name, std::size_t classes,
                             std::string_view model_name) {
    const std::string name(model_name);
    if (!spec.dataset.empty() && spec.dataset != dataset_name) {
        throw Error(ErrorCode::invalid_argument, name + ": the model was made for dataset '" +
                                                     spec.dataset + "', not '" +
                                                     std::string(dataset_name) + "'");
    }
    if (spec.classes != 0 && static_cast<std::size_t>(spec.classes) != classes) {
        throw Error(ErrorCode::invalid_argument,
                    name + ": the model has " + std::to_string(spec.classes) + " classes, " +
                        std::string(dataset_name) + " has " + std::to_string(classes));
    }
    if (spec.channels != 1 && spec.channels != 3) {
        throw Error(ErrorCode::invalid_argument, name + ": the model takes " +
                                                     std::to_string(spec.channels) +
                                                     " channels; greyscale images can feed 1 or 3");
    }
    if (spec.height < static_cast<std::int64_t>(images.rows) ||
        spec.width < static_cast<std::int64_t>(images.cols)) {
        throw Error(ErrorCode::invalid_argument,
                    name + ": the model takes " + std::to_string(spec.height) + "x" +
                        std::to_string(spec.width) + " inputs, smaller than the " +
                        std::to_string(images.rows) + "x" + std::to_string(images.cols) +
                        " images");
    }
}

FloatArray make_input_batch(const InputSpec& spec, const ImageSet& images, std::size_t first,
                            std::size_t count) {
    const auto channels = static_cast<std::size_t>(spec.channels);
    const auto height = static_cast<std::size_t>(spec.height);
    const auto width = static_cast<std::size_t>(spec.width);
    const std::size_t top = (height - images.rows) / 2;
    const std::size_t left = (width - images.cols) / 2;
    FloatArray batch;
    batch.shape = {static_cast<std::int64_t>(count), spec.channels, spec.height, spec.width};
    batch.values.resize(count * channels * height * width);
    for (std::size_t c = 0; c < channels; ++c) {
        // The 256 possible pixel values of this channel, normalized once.
        const float mean = spec.mean.size() == 1 ? spec.mean[0] : spec.mean[c];
        const float deviation = spec.std.size() == 1 ? spec.std[0] : spec.std[c];
        std::array<float, 256> normalized;
        for (int p = 0; p < 256; ++p) {
            normalized[static_cast<std::size_t>(p)] = (float(p) * spec.scale - mean) / deviation;
        }
        for (std::size_t n = 0; n < count; ++n) {
            float* plane = batch.values.data() + (n * channels + c) * height * width;
            std::fill(plane, plane + height * width, normalized[0]);
            const std::uint8_t* image = images.image(first + n);
            for (std::size_t y = 0; y < images.rows; ++y) {
                for (std::size_t x = 0; x < images.cols; ++x) {
                    plane[(top + y) * width + left + x] = normalized[image[y * images.cols + x]];
                }
            }
        }
    }
    return batch;
}

AccuracyResult measure_accuracy(Engine& engine, const InputSpec& spec, const ImageSet& images,
                                const AccuracyOptions& options) {
    const std::size_t total = options.limit ? std::min(options.limit, images.count) : images.count;
    const std::size_t batch_size = std::max<std::size_t>(1, options.batch_size);
    AccuracyResult result;
    const auto start = std::chrono::steady_clock::now();
    for (std::size_t first = 0; first < total; first += batch_size) {
        const std::size_t count = std::min(batch_size, total - first);
        const FloatArray logits = engine.run(make_input_batch(spec, images, first, count));
        if (logits.shape.size() != 2 || logits.shape[0] != static_cast<std::int64_t>(count) ||
            logits.shape[1] <= 0) {
            throw Error(ErrorCode::unsupported,
                        "the model's output is not a [batch, classes] array of scores");
        }
        const auto classes = static_cast<std::size_t>(logits.shape[1]);
        for (std::size_t n = 0; n < count; ++n) {
            const float* row = logits.values.data() + n * classes;
            const auto predicted =
                static_cast<std::size_t>(std::max_element(row, row + classes) - row);
            const bool right = predicted == images.labels[first + n];
            result.correct += right;
            result.image_correct.push_back(right);
        }
        result.images += count;
        if (options.progress) options.progress(result.images, total);
    }
    result.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return result;
}

}  // namespace bitinc
