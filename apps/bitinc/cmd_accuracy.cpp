#include <bitinc/bitinc.hpp>
#include <bitinc/calibration.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "command_line.hpp"
#include "commands.hpp"
#include "format.hpp"
#include "progress_bar.hpp"

namespace bitinc::cli {

namespace {

constexpr std::size_t fashion_mnist_classes = 10;

}  // namespace

int run_accuracy(int argc, char** argv) {
    CommandLine command_line(
        "accuracy",
        "Runs the model on the 10,000 Fashion-MNIST test images with the device engine\n"
        "(OpenCV DNN) and reports top-1 accuracy and throughput. Preprocessing comes\n"
        "from the model's bitinc.input.* metadata (see docs/models.md).");
    command_line.add_positional("MODEL.onnx", "the classifier to evaluate");
    command_line.add_option("limit", "N", "evaluate only the first N test images");
    command_line.add_option("threads", "T", "engine threads (default: all cores)");
    command_line.add_option("batch", "B", "images per forward pass (default 100)");
    add_data_dir_option(command_line);
    command_line.add_flag("json", "print one JSON object instead of text");
    command_line.add_flag("no-progress", "never draw a progress bar");
    if (!command_line.parse(argc, argv)) return 0;

    const std::string path = command_line.positional(0);
    AccuracyOptions options;
    options.limit = static_cast<std::size_t>(command_line.integer("limit", 0, 1, 1'000'000'000));
    options.batch_size = static_cast<std::size_t>(command_line.integer("batch", 100, 1, 10'000));
    EngineOptions engine_options;
    engine_options.threads = static_cast<int>(command_line.integer("threads", 0, 1, 256));

    const Model model = read_onnx_file(path);
    const InputSpec spec = read_input_spec(model, path);
    const ImageSet images = load_fashion_mnist(data_dir(command_line), Split::test);
    check_model_fits_images(spec, images, "fashion-mnist", fashion_mnist_classes, path);
    const auto engine = create_opencv_engine(model, path, engine_options);
    if (!spec.from_metadata) {
        std::fprintf(stderr,
                     "bitinc accuracy: warning: %s has no bitinc.input metadata; assuming pixels "
                     "scaled by 1/255 with no mean/std normalization\n",
                     path.c_str());
    }

    ProgressBar progress("accuracy", "img",
                         !command_line.flag("no-progress") && ProgressBar::stderr_is_terminal());
    options.progress = [&](std::size_t done, std::size_t total) { progress.update(done, total); };
    const AccuracyResult result = measure_accuracy(*engine, spec, images, options);
    progress.finish();

    const auto pytorch = model.metadata.find("bitinc.pytorch_accuracy");
    if (command_line.flag("json")) {
        nlohmann::json json = {{"model", path},
                               {"dataset", "fashion-mnist"},
                               {"engine", engine->name()},
                               {"images", result.images},
                               {"correct", result.correct},
                               {"top1_percent", result.top1_percent()},
                               {"seconds", result.seconds},
                               {"images_per_second", result.images_per_second()},
                               {"threads", engine_options.threads},
                               {"batch", options.batch_size}};
        if (pytorch != model.metadata.end()) {
            json["pytorch_top1_percent"] = std::strtod(pytorch->second.c_str(), nullptr);
        }
        std::printf("%s\n", json_text(json).c_str());
    } else {
        std::printf("%s: top-1 %.2f %% (%zu/%zu) in %.2f s, %.0f images/s (%s)\n", path.c_str(),
                    result.top1_percent(), result.correct, result.images, result.seconds,
                    result.images_per_second(), std::string(engine->name()).c_str());
        if (pytorch != model.metadata.end()) {
            std::printf("  PyTorch measured %s %% at export (all 10,000 test images)\n",
                        pytorch->second.c_str());
        }
    }
    return 0;
}

int run_sensitivity(int argc, char** argv) {
    CommandLine command_line(
        "sensitivity",
        "Measures how much each quantized tensor matters: the loss (mean cross-entropy)\n"
        "on Fashion-MNIST *training* images when that tensor alone is at a rung of the\n"
        "ladder and every other weight stays float32. The test split is never read:\n"
        "it judges what calibration decides.");
    command_line.add_positional("MODEL.onnx", "the classifier to measure");
    command_line.add_option("ladder", "BITS", "the ladder (default 8,16)");
    command_line.add_option("bits", "B", "the rung each tensor is put at (default: the base)");
    command_line.add_flag("per-channel", "one step per output channel");
    command_line.add_option("images", "N", "calibration images, the first N (default 512)");
    command_line.add_option("threads", "T", "engine threads (default: all cores)");
    add_data_dir_option(command_line);
    command_line.add_flag("json", "print one JSON object instead of text");
    command_line.add_flag("no-progress", "never draw a progress bar");
    if (!command_line.parse(argc, argv)) return 0;

    const std::string path = command_line.positional(0);
    LadderPlan plan = LadderPlan::parse(command_line.value("ladder").value_or("8,16"));
    plan.per_channel = command_line.flag("per-channel");
    const int bits = static_cast<int>(
        command_line.integer("bits", plan.base_bits(), min_ladder_bits, max_ladder_bits));
    CalibrationOptions options;
    options.images = static_cast<std::size_t>(command_line.integer("images", 512, 1, 60'000));
    options.engine.threads = static_cast<int>(command_line.integer("threads", 0, 1, 256));
    const Model model = read_onnx_file(path);
    const ImageSet images = load_fashion_mnist(data_dir(command_line), Split::train);
    ProgressBar progress("sensitivity", "models",
                         !command_line.flag("no-progress") && ProgressBar::stderr_is_terminal());
    options.progress = [&](std::size_t done, std::size_t total) { progress.update(done, total); };
    std::vector<TensorSensitivity> result = measure_sensitivity(model, plan, bits, images, options);
    progress.finish();
    std::sort(result.begin(), result.end(),
              [](const auto& a, const auto& b) { return a.loss_increase > b.loss_increase; });
    if (command_line.flag("json")) {
        nlohmann::json tensors = nlohmann::json::array();
        for (const TensorSensitivity& entry : result) {
            tensors.push_back({{"tensor", entry.name},
                               {"elements", entry.elements},
                               {"loss_increase", entry.loss_increase}});
        }
        std::printf("%s\n", json_text({{"model", path},
                                       {"bits", bits},
                                       {"images", options.images},
                                       {"split", "train"},
                                       {"tensors", tensors}})
                                .c_str());
        return 0;
    }
    std::printf("%s: loss increase with one tensor at %d bits (%zu training images)\n",
                path.c_str(), bits, options.images);
    for (const TensorSensitivity& entry : result) {
        std::printf("  %+10.5f  %10zu  %s\n", entry.loss_increase, entry.elements,
                    printable_text(entry.name).c_str());
    }
    return 0;
}

}  // namespace bitinc::cli
