#include <bitinc/bitinc.hpp>
#include <bitinc/calibration.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "command_line.hpp"
#include "commands.hpp"
#include "format.hpp"
#include "progress_bar.hpp"

namespace bitinc::cli {

namespace {

std::string decibels(double snr_db) {
    if (std::isinf(snr_db)) return snr_db > 0 ? "inf dB (identical outputs)" : "-inf dB";
    char text[32];
    std::snprintf(text, sizeof text, "%.2f dB", snr_db);
    return text;
}

}  // namespace

int run_accuracy(int argc, char** argv) {
    CommandLine command_line(
        "accuracy",
        "Runs the model on a dataset with the device engine (OpenCV DNN) and reports\n"
        "top-1 accuracy when the inputs have labels, and with --reference, how closely it\n"
        "follows another model (normally the float model it was quantized from): top-1\n"
        "agreement (inputs whose argmax is the reference's) and output SNR in dB\n"
        "(10 log10 of the reference outputs' energy over the differences' energy).\n"
        "Default dataset: the 10,000 Fashion-MNIST test images. Image preprocessing comes\n"
        "from the model's bitinc.input.* metadata (see docs/models.md); float32 .npy\n"
        "inputs are fed as they are.\n"
        "\n"
        "  bitinc accuracy model.onnx --dataset x.npy --labels y.npy\n"
        "  bitinc accuracy base.onnx --dataset images/ --reference model.onnx\n"
        "  bitinc accuracy base.onnx --dataset random --limit 50 --reference model.onnx");
    command_line.add_positional("MODEL.onnx", "the model to evaluate");
    add_dataset_options(command_line);
    command_line.add_option("reference", "FLOAT.onnx",
                            "also measure agreement with this model on the same inputs "
                            "(needed when the inputs have no labels)");
    command_line.add_option("limit", "N", "evaluate only the first N inputs");
    command_line.add_option("threads", "T", "engine threads (default: all cores)");
    command_line.add_option("batch", "B",
                            "inputs per forward pass (default 100, at most what the graph's "
                            "batch axis allows)");
    command_line.add_flag("json", "print one JSON object instead of text");
    command_line.add_flag("no-progress", "never draw a progress bar");
    if (!command_line.parse(argc, argv)) return 0;

    const std::string path = command_line.positional(0);
    InputMetricsOptions options;
    options.limit = static_cast<std::size_t>(command_line.integer("limit", 0, 1, 1'000'000'000));
    options.batch_size = static_cast<std::size_t>(command_line.integer("batch", 100, 1, 10'000));
    EngineOptions engine_options;
    engine_options.threads = static_cast<int>(command_line.integer("threads", 0, 1, 256));
    const DatasetRequest request = dataset_request(command_line);
    engine_options.input_shapes = request.input_shapes;
    const std::optional<std::string> reference_path = command_line.value("reference");

    const Model model = read_onnx_file(path);
    const std::optional<InputSpec> spec = optional_input_spec(model, path, request.input_shapes);
    const std::unique_ptr<InputSet> inputs = open_dataset(request, model, path, spec);
    if (!inputs->has_labels() && !reference_path) {
        throw Error(bitinc::ErrorCode::invalid_argument,
                    inputs->name() +
                        ": the inputs have no labels; give --labels, or --reference FLOAT.onnx to "
                        "measure agreement with the float model");
    }
    if (const std::size_t cap = batch_cap(model, request.input_shapes); cap > 0) {
        options.batch_size = std::min(options.batch_size, cap);
    }
    // Pixels get the model's preprocessing; say when it is only a guess.
    const bool reads_pixels = request.dataset.empty() ||
                              (request.dataset != "random" && !request.dataset.ends_with(".npy"));
    std::unique_ptr<Engine> reference;
    if (reference_path) {
        reference =
            create_opencv_engine(read_onnx_file(*reference_path), *reference_path, engine_options);
    }
    const auto engine = create_opencv_engine(model, path, engine_options);
    if (spec && !spec->from_metadata && reads_pixels) {
        std::fprintf(stderr,
                     "bitinc accuracy: warning: %s has no bitinc.input metadata; assuming pixels "
                     "scaled by 1/255 with no mean/std normalization\n",
                     path.c_str());
    }

    ProgressBar progress("accuracy", "in",
                         !command_line.flag("no-progress") && ProgressBar::stderr_is_terminal());
    options.progress = [&](std::size_t done, std::size_t total) { progress.update(done, total); };
    const InputMetrics result = measure_inputs(*engine, reference.get(), *inputs, options);
    progress.finish();

    const auto pytorch = model.metadata.find("bitinc.pytorch_accuracy");
    const bool fashion_mnist = request.dataset.empty();
    if (command_line.flag("json")) {
        nlohmann::json json = {{"model", path},
                               {"dataset", inputs->name()},
                               {"engine", engine->name()},
                               {"images", result.inputs},
                               {"labelled", result.labelled},
                               {"seconds", result.seconds},
                               {"images_per_second", result.inputs_per_second()},
                               {"threads", engine_options.threads},
                               {"batch", options.batch_size}};
        if (result.labelled) {
            json["correct"] = result.correct;
            json["top1_percent"] = result.top1_percent();
        }
        if (result.compared) {
            json["reference"] = *reference_path;
            json["agreeing"] = result.agreeing;
            json["top1_agreement_percent"] = result.agreement_percent();
            // JSON has no infinity: identical outputs give null and "identical".
            json["output_snr_db"] = std::isinf(result.snr_db()) ? nlohmann::json(nullptr)
                                                                : nlohmann::json(result.snr_db());
            json["identical_outputs"] = result.difference_energy == 0.0;
        }
        if (fashion_mnist && pytorch != model.metadata.end()) {
            json["pytorch_top1_percent"] = std::strtod(pytorch->second.c_str(), nullptr);
        }
        std::printf("%s\n", json_text(json).c_str());
        return 0;
    }
    if (result.labelled) {
        std::printf("%s: top-1 %.2f %% (%zu/%zu) in %.2f s, %.0f images/s (%s)\n", path.c_str(),
                    result.top1_percent(), result.correct, result.inputs, result.seconds,
                    result.inputs_per_second(), std::string(engine->name()).c_str());
    } else {
        std::printf("%s: %zu inputs in %.2f s, %.0f inputs/s (%s)\n", path.c_str(), result.inputs,
                    result.seconds, result.inputs_per_second(),
                    std::string(engine->name()).c_str());
    }
    if (!fashion_mnist) std::printf("  dataset: %s\n", printable_text(inputs->name()).c_str());
    if (result.compared) {
        std::printf("  against %s: top-1 agreement %.2f %% (%zu/%zu), output SNR %s\n",
                    reference_path->c_str(), result.agreement_percent(), result.agreeing,
                    result.inputs, decibels(result.snr_db()).c_str());
    }
    if (fashion_mnist && pytorch != model.metadata.end()) {
        std::printf("  PyTorch measured %s %% at export (all 10,000 test images)\n",
                    pytorch->second.c_str());
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
