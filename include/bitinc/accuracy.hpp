// Top-1 accuracy of a classifier over a labelled image set.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "bitinc/dataset.hpp"
#include "bitinc/engine.hpp"

namespace bitinc {

struct AccuracyOptions {
    std::size_t limit = 0;  // evaluate only the first `limit` images; 0 = all
    std::size_t batch_size = 100;
    // Called after every batch with (images done, images in total).
    std::function<void(std::size_t, std::size_t)> progress;
};

struct AccuracyResult {
    std::size_t images = 0;
    std::size_t correct = 0;
    double seconds = 0.0;  // wall time of the forward passes and batching
    // Per image, in order: 1 when its top-1 is right. Two models measured on
    // the same images compare image by image (a paired difference).
    std::vector<std::uint8_t> image_correct;

    double top1_percent() const { return images ? 100.0 * double(correct) / double(images) : 0.0; }
    double images_per_second() const { return seconds > 0 ? double(images) / seconds : 0.0; }
};

// Throws Error naming `model_name` when the model cannot take these images:
// too small an input, a channel count other than 1 or 3, a dataset or a
// class count in its metadata that differs from `dataset_name`/`classes`.
void check_model_fits_images(const InputSpec& spec, const ImageSet& images,
                             std::string_view dataset_name, std::size_t classes,
                             std::string_view model_name);

// Fills an NCHW batch with images [first, first + count) prepared by `spec`.
FloatArray make_input_batch(const InputSpec& spec, const ImageSet& images, std::size_t first,
                            std::size_t count);

// Runs the images through `engine` in batches and counts top-1 hits.
AccuracyResult measure_accuracy(Engine& engine, const InputSpec& spec, const ImageSet& images,
                                const AccuracyOptions& options = {});

}  // namespace bitinc
