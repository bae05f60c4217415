// run_evaluation: pack once, measure every rung as a device rebuilds it, then
// deliver to UE1 (incremental) and UE2 (direct) over each emulated link.
#include "bitinc/evaluation.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "bitinc/accuracy.hpp"
#include "bitinc/calibration.hpp"
#include "bitinc/coder_benchmark.hpp"
#include "bitinc/dataset.hpp"
#include "bitinc/error.hpp"
#include "bitinc/fetch.hpp"
#include "bitinc/server.hpp"
#include "core/file_io.hpp"
#include "eval/signal_to_noise.hpp"

namespace bitinc {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

class FashionMnistScenario : public Scenario {
  public:
    FashionMnistScenario(const fs::path& data_dir, std::size_t limit, int threads)
        : images_(load_fashion_mnist(data_dir, Split::test)), limit_(limit), threads_(threads) {}

    std::string name() const override { return "bit_incremental_delivery"; }
    std::string dataset_name() const override { return "fashion-mnist"; }
    std::string metric_name() const override { return "top1_accuracy_percent"; }
    const ImageSet& stream_images() override { return images_; }

    Performance performance(const Model& model, std::string_view partition) override {
        if (partition != "test") {
            throw Error(ErrorCode::invalid_argument,
                        "fashion-mnist scenario: only the 'test' partition is evaluated, not '" +
                            std::string(partition) + "'");
        }
        const auto start = Clock::now();
        const InputSpec spec = read_input_spec(model, "model");
        check_model_fits_images(spec, images_, "fashion-mnist", 10, "model");
        EngineOptions engine_options;
        engine_options.threads = threads_;
        const auto engine = create_opencv_engine(model, "model", engine_options);
        AccuracyOptions options;
        options.limit = limit_;
        AccuracyResult result = measure_accuracy(*engine, spec, images_, options);
        Performance performance;
        performance.value = result.top1_percent();
        performance.seconds = seconds_since(start);
        performance.sample_correct = std::move(result.image_correct);
        return performance;
    }

  private:
    ImageSet images_;
    std::size_t limit_;
    int threads_;
};

// Serves recorded outputs in the order they were recorded: the float
// model's outputs for the same batches, computed once instead of per model.
class ReplayEngine final : public Engine {
  public:
    std::string_view name() const override { return "replay"; }
    FloatArray run(const FloatArray& batch) override {
        if (next_ >= outputs_.size() || batch.shape.empty() || outputs_[next_].shape.empty() ||
            outputs_[next_].shape[0] != batch.shape[0]) {
            throw Error(ErrorCode::internal, "replay: batches differ from the recorded ones");
        }
        return outputs_[next_++];
    }
    void record(FloatArray output) { outputs_.push_back(std::move(output)); }
    void rewind() { next_ = 0; }

  private:
    std::vector<FloatArray> outputs_;
    std::size_t next_ = 0;
};

// Records what the engine it wraps returns.
class RecordingEngine final : public Engine {
  public:
    RecordingEngine(Engine& engine, ReplayEngine& replay) : engine_(engine), replay_(replay) {}
    std::string_view name() const override { return engine_.name(); }
    FloatArray run(const FloatArray& batch) override {
        FloatArray output = engine_.run(batch);
        replay_.record(output);
        return output;
    }

  private:
    Engine& engine_;
    ReplayEngine& replay_;
};

// Lends an InputSet the scenario owns to a stream.
class BorrowedInputs final : public InputSet {
  public:
    explicit BorrowedInputs(const InputSet& inputs) : inputs_(inputs) {}
    const std::string& name() const override { return inputs_.name(); }
    std::size_t count() const override { return inputs_.count(); }
    bool has_labels() const override { return inputs_.has_labels(); }
    std::int64_t label(std::size_t index) const override { return inputs_.label(index); }
    FloatArray batch(std::size_t first, std::size_t count) const override {
        return inputs_.batch(first, count);
    }

  private:
    const InputSet& inputs_;
};

class DatasetScenario : public Scenario {
  public:
    DatasetScenario(std::unique_ptr<InputSet> inputs, const Model& float_model, std::size_t limit,
                    std::size_t batch_size, EngineOptions engine_options)
        : inputs_(std::move(inputs)), engine_options_(std::move(engine_options)) {
        options_.limit = limit;
        options_.batch_size = batch_size;
        const auto engine = create_opencv_engine(float_model, "the float model", engine_options_);
        RecordingEngine recorder(*engine, reference_);
        measure_inputs(recorder, nullptr, *inputs_, options_);
    }

    std::string name() const override { return "bit_incremental_delivery"; }
    std::string dataset_name() const override { return inputs_->name(); }
    std::string metric_name() const override {
        return inputs_->has_labels() ? "top1_accuracy_percent" : "top1_agreement_percent";
    }
    const ImageSet& stream_images() override {
        throw Error(ErrorCode::internal,
                    "the dataset scenario streams its own inputs (stream_inputs)");
    }
    OpenStreamInputs stream_inputs() override {
        return [this](const Model&, const std::string&) -> std::unique_ptr<InputSet> {
            return std::make_unique<BorrowedInputs>(*inputs_);
        };
    }

    Performance performance(const Model& model, std::string_view partition) override {
        if (partition != "test") {
            throw Error(ErrorCode::invalid_argument,
                        "dataset scenario: only the 'test' partition is evaluated, not '" +
                            std::string(partition) + "'");
        }
        const auto start = Clock::now();
        const auto engine = create_opencv_engine(model, "model", engine_options_);
        reference_.rewind();
        const InputMetrics metrics = measure_inputs(*engine, &reference_, *inputs_, options_);
        Performance performance;
        performance.value =
            inputs_->has_labels() ? metrics.top1_percent() : metrics.agreement_percent();
        performance.output_snr_db = metrics.snr_db();
        performance.seconds = seconds_since(start);
        return performance;
    }

  private:
    std::unique_ptr<InputSet> inputs_;
    EngineOptions engine_options_;
    InputMetricsOptions options_;
    ReplayEngine reference_;
};

// The weight-domain SNR of `model` against `original` (matched by name).
double weight_snr_db(const Model& original, const Model& model) {
    std::map<std::string_view, const Tensor*> rebuilt;
    for (const Tensor& tensor : model.weights) rebuilt[tensor.name] = &tensor;
    double signal = 0, noise = 0;
    for (const Tensor& tensor : original.weights) {
        const auto found = rebuilt.find(tensor.name);
        if (found == rebuilt.end() || found->second->values.size() != tensor.values.size()) {
            throw Error(ErrorCode::internal,
                        "eval: the rebuilt model lacks weight '" + tensor.name + "'");
        }
        const std::vector<float>& values = found->second->values;
        for (std::size_t i = 0; i < values.size(); ++i) {
            const double error = double(values[i]) - double(tensor.values[i]);
            signal += double(tensor.values[i]) * double(tensor.values[i]);
            noise += error * error;
        }
    }
    return eval::signal_to_noise_db(signal, noise);
}

// Applies one rung's units (one thread, timed) and rebuilds the float model
// (timed), as a device does after receiving the rung.
struct RungApplied {
    double decode_seconds = 0;
    double reconstruct_seconds = 0;
    Model model;
};

RungApplied apply_rung(ModelAssembler& assembler, const fs::path& package, std::size_t rung_index) {
    const RungEntry& rung = assembler.manifest().rungs[rung_index];
    const std::string file = read_package_file(package, rung.data);
    RungApplied applied;
    auto start = Clock::now();
    for (std::size_t u = 0; u < rung.units.size(); ++u) {
        assembler.apply_unit(rung_index, u, unit_bytes(file, rung.units[u]),
                             (package / rung.data.file).string());
    }
    applied.decode_seconds = seconds_since(start);
    start = Clock::now();
    applied.model = assembler.model();
    applied.reconstruct_seconds = seconds_since(start);
    return applied;
}

// The refinement rungs of the ladder, as indices into manifest.rungs.
std::vector<std::size_t> refinement_rungs(const Manifest& manifest) {
    std::vector<std::size_t> indices;
    for (const RungEntry* rung : manifest.ladder_rungs()) {
        if (rung->kind == RungKind::refinement) indices.push_back(manifest.rung_index(*rung));
    }
    return indices;
}

// A rung's units in tensor order (tensor, then element): how a package
// packed without calibration lays them out.
std::vector<std::size_t> tensor_order(const RungEntry& rung) {
    std::vector<std::size_t> order(rung.units.size());
    for (std::size_t u = 0; u < order.size(); ++u) order[u] = u;
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        const UnitEntry& x = rung.units[a];
        const UnitEntry& y = rung.units[b];
        return x.tensor != y.tensor ? x.tensor < y.tensor : x.first < y.first;
    });
    return order;
}

// The update from the base rung to the package's accuracy point: the
// refinement rungs before the point's rung whole, then the first units of
// it, each decoded (timed) into a copy of the base model as a device would,
// then rebuilt (timed) and measured.
UpdateEvaluation evaluate_accuracy_update(const fs::path& package, const Manifest& manifest,
                                          const std::string& topology,
                                          const std::vector<double>& rung_encode_seconds,
                                          Scenario& scenario) {
    const AccuracyPoint& point = *manifest.accuracy_point;
    ModelAssembler assembler(manifest, topology, (package / manifest.topology.file).string());
    apply_rung(assembler, package, 0);
    UpdateEvaluation update;
    update.parent_bits = manifest.rungs.front().bits;
    update.bits = manifest.rungs[point.rung].bits;
    for (std::size_t r = 1; r <= point.rung; ++r) {
        const RungEntry& rung = manifest.rungs[r];
        const std::size_t units = r == point.rung ? point.units : rung.units.size();
        const std::string file = read_package_file(package, rung.data);
        std::uint64_t bytes = 0;
        const auto start = Clock::now();
        for (std::size_t u = 0; u < units; ++u) {
            assembler.apply_unit(r, u, unit_bytes(file, rung.units[u]),
                                 (package / rung.data.file).string());
            bytes += rung.units[u].length;
        }
        update.decode_seconds += seconds_since(start);
        update.units += units;
        update.bytes += bytes;
        // Units are coded one by one; the rung's coding time is shared out
        // by bytes, which is what the encoder's time follows.
        update.encode_seconds +=
            rung.data.bytes == 0 ? 0.0
                                 : rung_encode_seconds[r] * double(bytes) / double(rung.data.bytes);
    }
    const auto start = Clock::now();
    const Model model = assembler.model();
    update.reconstruct_seconds = seconds_since(start);
    update.performance = scenario.performance(model, "test");
    return update;
}

// Accuracy against refinement bytes received past the base, with each
// refinement rung's units applied in file order or in tensor order. Both
// orders are measured at the same byte counts (a device holding that many
// bytes has the units that fit), so the curves compare point by point.
// Where a rung is complete in either order, the model is the ladder's at
// that rung, already measured (`rung_values`, one per refinement rung); so
// is the accuracy point's in file order (`point_value`, NaN if none): those are
// reused, not measured again.
std::vector<CurvePoint> measure_curve(const fs::path& package, const Manifest& manifest,
                                      const std::string& topology, bool in_tensor_order,
                                      const std::vector<std::vector<std::uint64_t>>& targets,
                                      const Performance& base,
                                      const std::vector<const Performance*>& rung_values,
                                      const Performance* point, Scenario& scenario) {
    ModelAssembler assembler(manifest, topology, (package / manifest.topology.file).string());
    apply_rung(assembler, package, 0);
    std::vector<CurvePoint> curve{{0, base.value, base.sample_correct}};
    std::uint64_t rung_start = 0;
    const std::vector<std::size_t> rungs = refinement_rungs(manifest);
    for (std::size_t i = 0; i < rungs.size(); ++i) {
        const std::size_t r = rungs[i];
        const RungEntry& rung = manifest.rungs[r];
        const std::string file = read_package_file(package, rung.data);
        std::vector<std::size_t> order(rung.units.size());
        for (std::size_t u = 0; u < order.size(); ++u) order[u] = u;
        if (in_tensor_order) order = tensor_order(rung);
        std::size_t next = 0;
        std::uint64_t received = 0;  // bytes of this rung's units applied
        for (const std::uint64_t target : targets[i]) {
            while (next < order.size() && received + rung.units[order[next]].length <= target) {
                const UnitEntry& unit = rung.units[order[next]];
                assembler.apply_unit(r, order[next], unit_bytes(file, unit),
                                     (package / rung.data.file).string());
                received += unit.length;
                ++next;
            }
            const bool at_point = !in_tensor_order && point != nullptr && manifest.accuracy_point &&
                                  manifest.accuracy_point->rung == r &&
                                  next == manifest.accuracy_point->units;
            const Performance performance = next == order.size() ? *rung_values[i]
                                            : at_point
                                                ? *point
                                                : scenario.performance(assembler.model(), "test");
            curve.push_back({rung_start + target, performance.value, performance.sample_correct});
        }
        rung_start += rung.data.bytes;
    }
    return curve;
}

// Where to measure the curves in each refinement rung: bytes into the rung,
// denser at the start where accuracy moves most, ending at the whole rung;
// the accuracy point's bytes among them.
std::vector<std::vector<std::uint64_t>> curve_targets(const Manifest& manifest,
                                                      std::size_t points_per_rung) {
    std::vector<std::vector<std::uint64_t>> targets;
    for (const std::size_t r : refinement_rungs(manifest)) {
        const RungEntry& rung = manifest.rungs[r];
        std::vector<std::uint64_t> rung_targets;
        for (std::size_t k = 1; k <= points_per_rung; ++k) {
            const double fraction = double(k * k) / double(points_per_rung * points_per_rung);
            rung_targets.push_back(std::uint64_t(fraction * double(rung.data.bytes)));
        }
        if (manifest.accuracy_point && manifest.accuracy_point->rung == r)
            rung_targets.push_back(manifest.accuracy_point_bytes());
        std::sort(rung_targets.begin(), rung_targets.end());
        rung_targets.erase(std::unique(rung_targets.begin(), rung_targets.end()),
                           rung_targets.end());
        targets.push_back(std::move(rung_targets));
    }
    return targets;
}

UeRun run_ue(const std::string& ue, const std::string& url, FetchMode mode, double rate,
             Scenario& scenario, const EvaluationOptions& options) {
    ProgressiveOptions progressive;
    progressive.fetch.mode = mode;
    // Both cores decode: before the first engine nothing else runs, and
    // afterwards inference keeps its own thread.
    progressive.fetch.decode_threads = 2;
    progressive.engine.threads = options.engine_threads;
    progressive.engine.input_shapes = options.input_shapes;
    StreamOptions stream;
    stream.frames_per_second = options.frames_per_second;
    stream.tail_seconds = options.tail_seconds;
    UeRun run;
    run.ue = ue;
    run.rate_bits_per_second = rate;
    run.rtt_seconds = options.rtt_seconds;
    run.stream = run_stream(url, progressive, scenario.stream_inputs(), stream);
    if (run.stream.failure) throw Error(run.stream.failure_code, ue + ": " + *run.stream.failure);
    if (!run.stream.fetch) throw Error(ErrorCode::network, ue + ": the download did not finish");
    const FetchResult& fetch = *run.stream.fetch;
    run.bytes = fetch.bytes_downloaded;
    run.transfer_seconds = fetch.rungs.empty() ? 0 : fetch.rungs.back().downloaded_at;
    run.startup_latency_e2e = run.stream.first_result_at;
    run.startup = startup_breakdown(run.stream);
    run.top_rung_seconds = run.stream.top_rung_at;
    run.accuracy_point_at = fetch.accuracy_point_at;
    for (const ProgressiveEvent& event : run.stream.events) {
        if (event.kind != ProgressiveEvent::Kind::swapped) continue;
        run.swaps.emplace_back(event.seconds, event.bits);
        if (event.at_accuracy_point && run.accuracy_point_served_at < 0)
            run.accuracy_point_served_at = event.seconds;
    }
    return run;
}

// The test metric of the model each engine swap of `run` put in service.
void fill_served(UeRun& run, const EvaluationResult& result) {
    for (const ProgressiveEvent& event : run.stream.events) {
        if (event.kind != ProgressiveEvent::Kind::swapped) continue;
        double value = 0;
        if (run.ue == "UE2") {
            value = result.direct.performance.value;
        } else if (event.at_accuracy_point && result.accuracy_update) {
            value = result.accuracy_update->performance.value;
        } else {
            for (const RungEvaluation& rung : result.ladder) {
                if (rung.bits == event.bits) value = rung.performance.value;
            }
        }
        run.served.emplace_back(event.seconds, value);
    }
}

}  // namespace

Dominance compare_served(const UeRun& ue1, const UeRun& ue2, double tolerance) {
    Dominance result;
    result.rate_bits_per_second = ue1.rate_bits_per_second;
    result.tolerance = tolerance;
    // Both are step functions (0 before the first engine): their difference
    // only changes at a swap, so the swaps are the instants to check.
    const auto at = [](const UeRun& run, double seconds) {
        double value = 0;
        for (const auto& [time, metric] : run.served) {
            if (time <= seconds) value = metric;
        }
        return value;
    };
    // Before UE2 serves anything UE1 cannot be behind it: the check starts
    // at UE2's first model (the margins there say the most).
    const double from = ue2.served.empty() ? 0.0 : ue2.served.front().first;
    std::vector<double> instants{from};
    for (const UeRun* run : {&ue1, &ue2}) {
        for (const auto& step : run->served) {
            if (step.first >= from) instants.push_back(step.first);
        }
    }
    std::sort(instants.begin(), instants.end());
    bool first = true;
    for (const double instant : instants) {
        const double margin = at(ue1, instant) - at(ue2, instant);
        if (first || margin < result.worst_margin) {
            result.worst_margin = margin;
            result.worst_at = instant;
            first = false;
        }
    }
    // A hair of slack for metrics printed and summed in floating point.
    result.holds = result.worst_margin >= -tolerance - 1e-9;
    return result;
}

std::unique_ptr<Scenario> make_fashion_mnist_scenario(const fs::path& data_dir, std::size_t limit,
                                                      int engine_threads) {
    return std::make_unique<FashionMnistScenario>(data_dir, limit, engine_threads);
}

std::unique_ptr<Scenario> make_dataset_scenario(std::unique_ptr<InputSet> inputs,
                                                const Model& float_model, std::size_t limit,
                                                std::size_t batch_size,
                                                const EngineOptions& engine_options) {
    return std::make_unique<DatasetScenario>(std::move(inputs), float_model, limit, batch_size,
                                             engine_options);
}

OpenStreamInputs Scenario::stream_inputs() {
    const ImageSet& images = stream_images();
    return [&images](const Model& topology, const std::string& name) {
        const InputSpec spec = read_input_spec(topology, name);
        check_model_fits_images(spec, images, "fashion-mnist", 10, name);
        return borrow_image_inputs(images, spec, "fashion-mnist");
    };
}

EvaluationResult run_evaluation(const fs::path& model_path, Scenario& scenario,
                                const EvaluationOptions& options) {
    const auto say = [&](const std::string& line) {
        if (options.progress) options.progress(line);
    };
    if (options.ladder.bits.size() < 2)
        throw Error(ErrorCode::invalid_argument,
                    "eval: the ladder needs a base and a top rung, e.g. 8,16");
    // The study sends the high-precision model directly (UE2): a quantized
    // rung. An exact rung has no direct counterpart to compare with.
    if (options.ladder.exact_top) {
        throw Error(ErrorCode::invalid_argument,
                    "eval: the study compares with a directly sent quantized model; drop 'exact' "
                    "from --ladder (pack, unpack and fetch take it)");
    }
    EvaluationResult result;
    result.model_name = model_path.stem().string();
    result.scenario_name = scenario.name();
    result.dataset_name = scenario.dataset_name();
    result.metric_name = scenario.metric_name();
    result.tag = options.tag;

    const Model original = read_onnx_file(model_path);
    result.float32_bytes = original.float32_bytes();
    say("measuring the original float32 model");
    try {
        result.original = scenario.performance(original, "test");
    } catch (const Error& error) {
        // A model the engine cannot run still gets its sizes, times and
        // weight SNR (issue 13); only the metric and the UEs need the engine.
        if (options.calibration || options.budget) {
            throw Error(error.code(),
                        std::string(error.what()) +
                            " (--calibrate and --budget measure the model with the engine)");
        }
        result.engine_problem = error.what();
        result.original.value = std::numeric_limits<double>::quiet_NaN();
        say("the engine cannot run the model (" + result.engine_problem +
            "): measuring sizes, times and weight SNR only");
    }
    const auto measure = [&](const Model& model) {
        if (result.engine_problem.empty()) return scenario.performance(model, "test");
        Performance unmeasured;
        unmeasured.value = std::numeric_limits<double>::quiet_NaN();
        return unmeasured;
    };

    // The server's side: one package holds the ladder and the direct rung.
    const fs::path www = options.work_directory / "www";
    const fs::path package = www / "model";
    say("packing (ladder and direct rung)");
    PackOptions pack;
    pack.ladder = options.ladder;
    pack.threads = 1;     // encode times per core, as the study measures them
    pack.replace = true;  // the work directory is the evaluation's own
    pack.calibration = options.calibration;
    pack.budget = options.budget;
    if (options.budget) say("choosing each tensor's base bits for the budget on training images");
    if (options.calibration)
        say("calibrating on training images (refinement order, accuracy point)");
    const PackResult packed = pack_model(model_path, pack, package);
    result.pack_seconds = packed.seconds;
    const Manifest& manifest = packed.manifest;
    // A mixed-precision rung names its range of bit depths and their mean.
    const auto mixed_bits = [&](RungEvaluation& measured, std::size_t rung) {
        if (!manifest.mixed()) return;
        double elements = 0, bit_elements = 0;
        measured.min_bits = max_ladder_bits;
        for (std::size_t t = 0; t < manifest.tensors.size(); ++t) {
            if (!manifest.tensors[t].quantized) continue;
            const int bits = manifest.tensor_bits(t, rung);
            measured.min_bits = std::min(measured.min_bits, bits);
            measured.max_bits = std::max(measured.max_bits, bits);
            elements += double(manifest.tensors[t].element_count());
            bit_elements += double(bits) * double(manifest.tensors[t].element_count());
        }
        measured.mean_bits = elements > 0 ? bit_elements / elements : 0;
    };

    // Each rung as a device rebuilds it: decode, reconstruct, measure.
    const std::string topology = read_package_file(package, manifest.topology);
    ModelAssembler ladder(manifest, topology, (package / manifest.topology.file).string());
    std::string ladder_top;
    for (std::size_t r = 0; r < manifest.rungs.size(); ++r) {
        const RungEntry& rung = manifest.rungs[r];
        RungEvaluation measured;
        measured.kind = rung.kind;
        measured.bits = rung.bits;
        measured.parent_bits = rung.parent_bits;
        measured.bytes = rung.data.bytes;
        measured.encode_seconds = packed.rung_encode_seconds[r];
        say("measuring the " + std::string(rung_kind_name(rung.kind)) + " rung of " +
            std::to_string(rung.bits) + " bits");
        RungApplied applied;
        if (rung.kind == RungKind::direct) {
            ModelAssembler direct(manifest, topology, (package / manifest.topology.file).string());
            applied = apply_rung(direct, package, r);
        } else {
            applied = apply_rung(ladder, package, r);
        }
        measured.decode_seconds = applied.decode_seconds;
        measured.reconstruct_seconds = applied.reconstruct_seconds;
        measured.performance = measure(applied.model);
        measured.weight_snr_db = weight_snr_db(original, applied.model);
        if (rung.kind == RungKind::direct) {
            result.direct = measured;
            const bool same_bytes = serialize_onnx(applied.model) == ladder_top;
            // Without an engine both are NaN: the bytes decide.
            const bool same_metric =
                measured.performance.value == result.ladder.back().performance.value ||
                !result.engine_problem.empty();
            result.update_equals_direct = same_bytes && same_metric;
            if (!result.update_equals_direct) {
                throw Error(ErrorCode::internal,
                            "eval: base + update does not reproduce the direct rung (" +
                                std::string(same_bytes ? "metric" : "weights") + " differ)");
            }
        } else {
            mixed_bits(measured, r);
            result.ladder.push_back(measured);
            if (rung.bits == options.ladder.top_bits()) ladder_top = serialize_onnx(applied.model);
        }
    }

    // The accuracy-matched update, and how accuracy grows with the bytes in
    // the calibrated order against tensor order.
    result.accuracy_point = manifest.accuracy_point;
    if (manifest.accuracy_point) {
        say("measuring the accuracy point (" + std::to_string(manifest.accuracy_point->units) +
            " units of the " + std::to_string(manifest.rungs[manifest.accuracy_point->rung].bits) +
            "-bit refinement)");
        result.accuracy_update = evaluate_accuracy_update(package, manifest, topology,
                                                          packed.rung_encode_seconds, scenario);
    }
    if (options.calibration && options.curve_points_per_rung > 0) {
        const auto targets = curve_targets(manifest, options.curve_points_per_rung);
        const Performance& base = result.ladder.front().performance;
        std::vector<const Performance*> rung_values;
        for (std::size_t i = 1; i < result.ladder.size(); ++i)
            rung_values.push_back(&result.ladder[i].performance);
        const Performance* point =
            result.accuracy_update ? &result.accuracy_update->performance : nullptr;
        say("accuracy against bytes: calibrated order");
        result.accuracy_first_curve = measure_curve(package, manifest, topology, false, targets,
                                                    base, rung_values, point, scenario);
        say("accuracy against bytes: tensor order");
        result.tensor_order_curve = measure_curve(package, manifest, topology, true, targets, base,
                                                  rung_values, point, scenario);
    }

    // Another coder's sizes and times for the same rungs (the models, and so
    // their metric, are the same: coding is lossless).
    if (options.coder != "bitinc") {
        say("coding the rungs with " + options.coder);
        CoderBenchmarkOptions coder_options;
        coder_options.plan = options.ladder;
        coder_options.coders = {options.coder};
        const CoderBenchmark figures = run_coder_benchmark(original, coder_options);
        const CoderFigures& coder = figures.coders.front();
        const std::uint64_t exact_bytes = figures.exact_weights * sizeof(float);
        for (std::size_t i = 0; i < result.ladder.size() && i < coder.ladder.size(); ++i) {
            result.ladder[i].bytes = coder.ladder[i].bytes + (i == 0 ? exact_bytes : 0);
            result.ladder[i].encode_seconds = coder.ladder[i].encode_seconds;
            result.ladder[i].decode_seconds = coder.ladder[i].decode_seconds;
        }
        result.direct.bytes = coder.direct.bytes + exact_bytes;
        result.direct.encode_seconds = coder.direct.encode_seconds;
        result.direct.decode_seconds = coder.direct.decode_seconds;
        result.coder_name = coder.coder;
    }

    // The exact update: every refinement rung, base to top (in the table's
    // coder's bytes and times).
    result.exact_update.parent_bits = result.ladder.front().bits;
    result.exact_update.bits = result.ladder.back().bits;
    for (std::size_t i = 1; i < result.ladder.size(); ++i) {
        const RungEvaluation& rung = result.ladder[i];
        result.exact_update.bytes += rung.bytes;
        result.exact_update.encode_seconds += rung.encode_seconds;
        result.exact_update.decode_seconds += rung.decode_seconds;
        result.exact_update.units += manifest.rungs[i].units.size();
    }
    result.exact_update.reconstruct_seconds = result.ladder.back().reconstruct_seconds;
    result.exact_update.performance = result.ladder.back().performance;

    // The UEs, each over its own emulated link (they serve inferences: not
    // without an engine that runs the model).
    const std::vector<double> rates =
        result.engine_problem.empty() ? options.rates_bits_per_second : std::vector<double>{};
    for (const double rate : rates) {
        ServerOptions server_options;
        server_options.root = www;
        server_options.rate_bits_per_second = rate;
        server_options.rtt_seconds = options.rtt_seconds;
        PackageServer server(server_options);
        server.start();
        const std::string url = server.url() + "/model/";
        char label[64];
        std::snprintf(label, sizeof label, "%.1f Mbit/s", rate / 1e6);
        say(std::string("UE1 (incremental) at ") + label);
        UeRun ue1 = run_ue("UE1", url, FetchMode::incremental, rate, scenario, options);
        ue1.startup_latency = result.ladder.front().encode_seconds +
                              result.ladder.front().decode_seconds +
                              result.ladder.front().reconstruct_seconds;
        fill_served(ue1, result);
        say(std::string("UE2 (direct) at ") + label);
        UeRun ue2 = run_ue("UE2", url, FetchMode::direct, rate, scenario, options);
        ue2.startup_latency = result.direct.encode_seconds + result.direct.decode_seconds +
                              result.direct.reconstruct_seconds;
        fill_served(ue2, result);
        // The point's tolerance when there is one (UE1's accuracy-matched
        // model may be that much below UE2's), none otherwise.
        result.dominance.push_back(compare_served(
            ue1, ue2, result.accuracy_point ? result.accuracy_point->tolerance : 0.0));
        result.runs.push_back(std::move(ue1));
        result.runs.push_back(std::move(ue2));
    }

    // Sweep: the size and quality of a base rung for other configurations.
    for (const auto& [base_bits, per_channel] : options.sweep) {
        say("sweep: " + std::to_string(base_bits) + "-bit base, " +
            (per_channel ? "per channel" : "per tensor"));
        PackOptions sweep_pack;
        sweep_pack.ladder.bits = {base_bits};
        sweep_pack.ladder.per_channel = per_channel;
        sweep_pack.ladder.min_quantized_elements = options.ladder.min_quantized_elements;
        sweep_pack.replace = true;
        const fs::path sweep_package = options.work_directory / "sweep";
        const PackResult sweep_packed = pack_model(model_path, sweep_pack, sweep_package);
        const Model model = unpack_package(sweep_package, base_bits, false);
        SweepPoint point;
        point.base_bits = base_bits;
        point.per_channel = per_channel;
        point.bytes = sweep_packed.manifest.rungs.front().data.bytes;  // topology included
        point.value = measure(model).value;
        result.sweep.push_back(point);
        std::error_code ignored;
        fs::remove_all(sweep_package, ignored);
    }
    return result;
}

std::vector<std::string> evaluation_csv_columns() {
    return {"anc_size",      "rec_size",      "compress_ratio",  "metric_name",
            "anc_perf",      "rec_perf",      "anc_eval_time",   "rec_eval_time",
            "enc_time",      "dec_time",      "coder_name",      "scenario_name",
            "data_set_name", "model_name",    "unique_tag",      "ue",
            "model_role",    "rung_bits",     "parent_bits",     "rate_mbit",
            "rtt_ms",        "transfer_time", "startup_latency", "startup_latency_e2e",
            "time_to_top",   "update_units",  "total_bytes",     "served_at"};
}

void write_evaluation_results(const EvaluationResult& result, const fs::path& directory) {
    std::error_code error;
    fs::create_directories(directory, error);
    if (error)
        throw Error(ErrorCode::io, directory.string() + ": cannot create it: " + error.message());

    std::string csv;
    for (const std::string& column : evaluation_csv_columns())
        csv += (csv.empty() ? "" : ",") + column;
    csv += "\n";
    // One model a UE receives: a rung, or an update spanning rungs.
    struct Row {
        std::string role;
        int bits = 0;
        int parent_bits = 0;
        std::uint64_t bytes = 0;  // of the rung or update itself
        double value = 0;
        double eval_seconds = 0;
        double encode_seconds = 0;
        double decode_seconds = 0;
        std::size_t units = 0;
        std::uint64_t total_bytes = 0;  // everything the UE has received for this model
        double served_at = -1;          // its engine started serving (-1: never)
    };
    const auto row = [&](const UeRun& run, const Row& figures) {
        char line[1280];
        std::snprintf(
            line, sizeof line,
            "%llu,%llu,%.6f,%s,%.4f,%.4f,%.4f,%.4f,%.6f,%.6f,%s,%s,%s,%s,%s,%s,%s,%d,%d,%"
            ".3f,%.1f,%.4f,"
            "%.6f,%.4f,%.4f,%zu,%llu,%.4f\n",
            static_cast<unsigned long long>(result.float32_bytes),
            static_cast<unsigned long long>(figures.bytes),
            double(figures.bytes) / double(result.float32_bytes), result.metric_name.c_str(),
            result.original.value, figures.value, result.original.seconds, figures.eval_seconds,
            figures.encode_seconds, figures.decode_seconds, result.coder_name.c_str(),
            result.scenario_name.c_str(), result.dataset_name.c_str(), result.model_name.c_str(),
            result.tag.c_str(), run.ue.c_str(), figures.role.c_str(), figures.bits,
            figures.parent_bits, run.rate_bits_per_second / 1e6, run.rtt_seconds * 1e3,
            run.transfer_seconds, run.startup_latency, run.startup_latency_e2e,
            run.top_rung_seconds, figures.units,
            static_cast<unsigned long long>(figures.total_bytes), figures.served_at);
        csv += line;
    };
    // The first swap to an engine of `bits` that is not the accuracy point's.
    const auto served_at = [](const UeRun& run, int bits) {
        for (const ProgressiveEvent& event : run.stream.events) {
            if (event.kind == ProgressiveEvent::Kind::swapped && event.bits == bits &&
                !event.at_accuracy_point)
                return event.seconds;
        }
        return -1.0;
    };
    // A rung or an update: the same figures.
    const auto rung_row = [](const auto& rung, std::string role) {
        Row figures;
        figures.role = std::move(role);
        figures.bits = rung.bits;
        figures.parent_bits = rung.parent_bits;
        figures.bytes = rung.bytes;
        figures.value = rung.performance.value;
        figures.eval_seconds = rung.performance.seconds;
        figures.encode_seconds = rung.encode_seconds;
        figures.decode_seconds = rung.decode_seconds;
        return figures;
    };
    const auto update_row = [&](const UpdateEvaluation& update, std::string role) {
        Row figures = rung_row(update, std::move(role));
        figures.units = update.units;
        return figures;
    };
    for (const UeRun& run : result.runs) {
        if (run.ue == "UE1") {
            std::uint64_t received = 0;
            for (const RungEvaluation& rung : result.ladder) {
                Row figures = rung_row(
                    rung, rung.kind == RungKind::base ? "low-precision model" : "model update");
                received += rung.bytes;
                figures.total_bytes = received;
                figures.served_at = served_at(run, rung.bits);
                row(run, figures);
            }
            const std::uint64_t base = result.ladder.front().bytes;
            if (result.accuracy_update) {
                Row figures = update_row(*result.accuracy_update, "accuracy-matched update");
                figures.total_bytes = base + figures.bytes;
                figures.served_at = run.accuracy_point_served_at;
                row(run, figures);
            }
            Row figures = update_row(result.exact_update, "exact update");
            figures.total_bytes = base + figures.bytes;
            figures.served_at = run.top_rung_seconds;
            row(run, figures);
        } else {
            Row figures = rung_row(result.direct, "high-precision model");
            figures.total_bytes = result.direct.bytes;
            figures.served_at = served_at(run, result.direct.bits);
            row(run, figures);
        }
    }
    core::write_file_atomically(directory / "results.csv", csv);

    using Json = nlohmann::ordered_json;
    // Output SNR against the float model where the scenario measures it;
    // identical outputs (infinite SNR) as null.
    const auto with_snr = [](Json json, const Performance& performance) {
        if (!std::isnan(performance.output_snr_db)) {
            json["output_snr_db"] = std::isinf(performance.output_snr_db)
                                        ? Json(nullptr)
                                        : Json(performance.output_snr_db);
        }
        return json;
    };
    const auto rung_json = [&](const RungEvaluation& rung) {
        Json json = with_snr(
            Json{{"kind", rung_kind_name(rung.kind)},
                 {"bits", rung.bits},
                 {"parent_bits", rung.parent_bits},
                 {"bytes", rung.bytes},
                 {"encode_seconds", rung.encode_seconds},
                 {"decode_seconds", rung.decode_seconds},
                 {"reconstruct_seconds", rung.reconstruct_seconds},
                 {"performance", rung.performance.value},
                 {"eval_seconds", rung.performance.seconds},
                 {"weight_snr_db",
                  std::isinf(rung.weight_snr_db) ? Json(nullptr) : Json(rung.weight_snr_db)}},
            rung.performance);
        if (rung.mean_bits > 0) {
            json["mixed_bits"] = {
                {"min", rung.min_bits}, {"max", rung.max_bits}, {"mean", rung.mean_bits}};
        }
        return json;
    };
    Json json;
    json["model"] = result.model_name;
    json["scenario"] = result.scenario_name;
    json["dataset"] = result.dataset_name;
    json["metric"] = result.metric_name;
    json["coder"] = result.coder_name;
    json["tag"] = result.tag;
    json["float32_bytes"] = result.float32_bytes;
    json["original"] = with_snr(
        {{"performance", result.original.value}, {"eval_seconds", result.original.seconds}},
        result.original);
    json["pack_seconds"] = result.pack_seconds;
    if (!result.engine_problem.empty()) json["engine_problem"] = result.engine_problem;
    // A mixed-precision base (--budget), at the top for scripts.
    if (!result.ladder.empty() && result.ladder.front().mean_bits > 0) {
        const RungEvaluation& base = result.ladder.front();
        json["base_mixed_bits"] = {
            {"min", base.min_bits}, {"max", base.max_bits}, {"mean", base.mean_bits}};
    }
    json["ladder"] = Json::array();
    for (const RungEvaluation& rung : result.ladder) json["ladder"].push_back(rung_json(rung));
    json["direct"] = rung_json(result.direct);
    json["update_equals_direct"] = result.update_equals_direct;
    const auto update_json = [&](const UpdateEvaluation& update) {
        return with_snr(Json{{"bits", update.bits},
                             {"parent_bits", update.parent_bits},
                             {"units", update.units},
                             {"bytes", update.bytes},
                             {"encode_seconds", update.encode_seconds},
                             {"decode_seconds", update.decode_seconds},
                             {"reconstruct_seconds", update.reconstruct_seconds},
                             {"performance", update.performance.value},
                             {"eval_seconds", update.performance.seconds}},
                        update.performance);
    };
    json["exact_update"] = update_json(result.exact_update);
    if (result.accuracy_point && result.accuracy_update) {
        const AccuracyPoint& point = *result.accuracy_point;
        Json entry = update_json(*result.accuracy_update);
        entry["calibration"] = {{"metric", point.metric},
                                {"images", point.calibration_images},
                                {"value", point.value},
                                {"top_value", point.top_value},
                                {"tolerance", point.tolerance}};
        json["accuracy_update"] = entry;
    }
    const auto curve_json = [](const std::vector<CurvePoint>& curve) {
        Json points = Json::array();
        for (const CurvePoint& point : curve)
            points.push_back({{"bytes", point.bytes}, {"performance", point.value}});
        return points;
    };
    json["accuracy_first_curve"] = curve_json(result.accuracy_first_curve);
    json["tensor_order_curve"] = curve_json(result.tensor_order_curve);
    // How far apart the two curves may be by chance of the test images.
    if (result.accuracy_first_curve.size() == result.tensor_order_curve.size()) {
        Json errors = Json::array();
        for (std::size_t i = 0; i < result.accuracy_first_curve.size(); ++i) {
            const double error = paired_difference_error(result.accuracy_first_curve[i],
                                                         result.tensor_order_curve[i]);
            errors.push_back(std::isnan(error) ? Json(nullptr) : Json(error));
        }
        json["curve_difference_standard_error"] = std::move(errors);
        const CurveComparison comparison =
            compare_curves(result.accuracy_first_curve, result.tensor_order_curve);
        json["curve_comparison"] = {{"points", comparison.points},
                                    {"above", comparison.above},
                                    {"equal", comparison.equal},
                                    {"below", comparison.below},
                                    {"worst_shortfall", comparison.worst_shortfall},
                                    {"worst_at_bytes", comparison.worst_at_bytes},
                                    {"worst_in_standard_errors", comparison.worst_in_errors},
                                    {"tested", comparison.tested},
                                    {"smallest_p_below", comparison.smallest_p_below},
                                    {"alpha", comparison.alpha},
                                    {"significantly_below", comparison.significantly_below},
                                    {"per_sample", comparison.per_sample}};
    }
    json["dominance"] = Json::array();
    for (const Dominance& entry : result.dominance) {
        json["dominance"].push_back({{"rate_bits_per_second", entry.rate_bits_per_second},
                                     {"tolerance", entry.tolerance},
                                     {"holds", entry.holds},
                                     {"worst_margin", entry.worst_margin},
                                     {"worst_at", entry.worst_at}});
    }
    json["runs"] = Json::array();
    for (const UeRun& run : result.runs) {
        Json swaps = Json::array();
        for (const ProgressiveEvent& event : run.stream.events) {
            if (event.kind != ProgressiveEvent::Kind::swapped) continue;
            swaps.push_back({{"time", event.seconds},
                             {"bits", event.bits},
                             {"at_accuracy_point", event.at_accuracy_point},
                             {"engine_build_seconds", event.build_seconds}});
        }
        Json rungs = Json::array();
        for (const RungTimeline& rung : run.stream.fetch->rungs) {
            rungs.push_back({{"bits", rung.bits},
                             {"bytes", rung.bytes},
                             {"downloaded_at", rung.downloaded_at},
                             {"ready_at", rung.ready_at},
                             {"decode_seconds", rung.decode_seconds},
                             {"decode_hidden_seconds", rung.decode_hidden_seconds}});
        }
        Json served = Json::array();
        for (const auto& [seconds, value] : run.served)
            served.push_back({{"time", seconds}, {"performance", value}});
        Json windows = Json::array();
        for (const StreamWindow& window : run.stream.windows) {
            windows.push_back(
                {{"end", window.end}, {"results", window.results}, {"correct", window.correct}});
        }
        json["runs"].push_back(
            {{"ue", run.ue},
             {"rate_bits_per_second", run.rate_bits_per_second},
             {"rtt_seconds", run.rtt_seconds},
             {"bytes", run.bytes},
             {"transfer_seconds", run.transfer_seconds},
             {"startup_latency", run.startup_latency},
             {"startup_latency_e2e", run.startup_latency_e2e},
             {"top_rung_seconds", run.top_rung_seconds},
             {"accuracy_point_at", run.accuracy_point_at},
             {"accuracy_point_served_at", run.accuracy_point_served_at},
             {"served", served},
             {"startup",
              {{"requests", run.startup.requests},
               {"bytes", run.startup.bytes},
               {"line_seconds", double(run.startup.bytes) * 8 / run.rate_bits_per_second},
               {"waiting", run.startup.waiting},
               {"transfer", run.startup.transfer},
               {"decode_not_hidden", run.startup.decode_not_hidden},
               {"snapshot", run.startup.snapshot},
               {"engine_build", run.startup.engine_build},
               {"first_inference", run.startup.first_inference},
               {"other", run.startup.other}}},
             {"frames_in", run.stream.frames_in},
             {"results_out", run.stream.results_out},
             {"longest_gap_at_swap_seconds", run.stream.longest_gap_at_swap},
             {"swaps", swaps},
             {"transfer", rungs},
             {"windows", windows}});
    }
    json["sweep"] = Json::array();
    for (const SweepPoint& point : result.sweep) {
        json["sweep"].push_back({{"base_bits", point.base_bits},
                                 {"per_channel", point.per_channel},
                                 {"bytes", point.bytes},
                                 {"performance", point.value}});
    }
    core::write_file_atomically(directory / "results.json", json.dump(1) + "\n");
}

double sign_test_p_value(std::size_t n, std::size_t k) {
    if (k == 0) return 1;
    if (k > n) return 0;
    // Summed in logs: n reaches the test set's size.
    const double log_half_n = double(n) * std::log(0.5);
    double total = 0;
    for (std::size_t i = k; i <= n; ++i) {
        total += std::exp(std::lgamma(double(n) + 1) - std::lgamma(double(i) + 1) -
                          std::lgamma(double(n - i) + 1) + log_half_n);
    }
    return std::min(total, 1.0);
}

CurveComparison compare_curves(const std::vector<CurvePoint>& accuracy_first,
                               const std::vector<CurvePoint>& tensor_order, double alpha) {
    CurveComparison comparison;
    comparison.alpha = alpha;
    if (accuracy_first.empty() || accuracy_first.size() != tensor_order.size()) return comparison;
    comparison.per_sample = true;
    std::vector<double> p_values_below;  // one per byte count where the models differ
    for (std::size_t i = 1; i < accuracy_first.size(); ++i) {  // 0 bytes: the base in both
        const CurvePoint& first = accuracy_first[i];
        const CurvePoint& tensor = tensor_order[i];
        ++comparison.points;
        const double difference = first.value - tensor.value;
        if (difference > 0) {
            ++comparison.above;
        } else if (difference == 0) {
            ++comparison.equal;
        } else {
            ++comparison.below;
            if (-difference > comparison.worst_shortfall) {
                comparison.worst_shortfall = -difference;
                comparison.worst_at_bytes = first.bytes;
            }
            const double error = paired_difference_error(first, tensor);
            if (!std::isnan(error) && error > 0)
                comparison.worst_in_errors =
                    std::max(comparison.worst_in_errors, -difference / error);
        }
        if (first.sample_correct.empty() ||
            first.sample_correct.size() != tensor.sample_correct.size()) {
            comparison.per_sample = false;
            continue;
        }
        std::size_t first_only = 0, tensor_only = 0;
        for (std::size_t s = 0; s < first.sample_correct.size(); ++s) {
            const bool a = first.sample_correct[s] != 0, b = tensor.sample_correct[s] != 0;
            first_only += a && !b;
            tensor_only += b && !a;
        }
        if (first_only + tensor_only == 0) continue;  // the same answers: nothing to test
        ++comparison.tested;
        p_values_below.push_back(sign_test_p_value(first_only + tensor_only, tensor_only));
    }
    if (!comparison.per_sample) return comparison;
    // Holm: the j-th smallest p (from 0) must be at most alpha / (tested - j).
    std::sort(p_values_below.begin(), p_values_below.end());
    if (!p_values_below.empty()) comparison.smallest_p_below = p_values_below.front();
    for (std::size_t j = 0; j < p_values_below.size(); ++j) {
        if (p_values_below[j] > alpha / double(p_values_below.size() - j)) break;
        ++comparison.significantly_below;
    }
    return comparison;
}

double paired_difference_error(const CurvePoint& a, const CurvePoint& b) {
    if (a.sample_correct.empty() || a.sample_correct.size() != b.sample_correct.size())
        return std::numeric_limits<double>::quiet_NaN();
    const auto percent = [](const std::vector<std::uint8_t>& correct) {
        return std::vector<double>(correct.begin(), correct.end());
    };
    return 100.0 * paired_standard_error(percent(a.sample_correct), percent(b.sample_correct));
}

}  // namespace bitinc
