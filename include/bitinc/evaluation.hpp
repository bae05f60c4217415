// The 3GPP evaluation of bit-incremental delivery (TR 26.927 style): a
// server, UE1 that receives a low-precision model and then updates, and UE2
// that receives the high-precision model directly, each over its own
// emulated link, with the metrics of the study's evaluation framework.
//
// Two plug-in points mirror that framework: a Scenario (model task, dataset
// and metric) and a coder (WeightCoder in coder.hpp). docs/evaluation.md
// explains how to add either.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bitinc/engine.hpp"
#include "bitinc/inputs.hpp"
#include "bitinc/model.hpp"
#include "bitinc/package.hpp"
#include "bitinc/stream.hpp"

namespace bitinc {

struct Performance {
    double value = 0;    // in the scenario's metric
    double seconds = 0;  // time the evaluation took
    // Output SNR in dB against the float model, where the scenario measures
    // it (make_dataset_scenario); NaN otherwise, +infinity for identical
    // outputs.
    double output_snr_db = std::numeric_limits<double>::quiet_NaN();
    // Per test image, where the scenario scores images one by one (top-1 on
    // Fashion-MNIST): 1 when the model is right. Empty otherwise.
    std::vector<std::uint8_t> sample_correct{};
};

// A task on which a model's quality is measured.
class Scenario {
  public:
    virtual ~Scenario() = default;
    virtual std::string name() const = 0;
    virtual std::string dataset_name() const = 0;
    virtual std::string metric_name() const = 0;
    // The metric of `model` on a partition of the dataset ("test").
    virtual Performance performance(const Model& model, std::string_view partition) = 0;
    // The images a streaming UE feeds to the model (for run_stream).
    virtual const ImageSet& stream_images() = 0;
    // What a streaming UE feeds to the model; by default stream_images()
    // as Fashion-MNIST images. The scenario must outlive what it returns.
    virtual OpenStreamInputs stream_inputs();
};

// Top-1 accuracy (percent) of a classifier on the Fashion-MNIST test images,
// on the device engine. `limit` > 0 uses only the first `limit` images.
std::unique_ptr<Scenario> make_fashion_mnist_scenario(const std::filesystem::path& data_dir,
                                                      std::size_t limit, int engine_threads);

// A scenario on any inputs (bitinc eval --dataset): top-1 accuracy
// ("top1_accuracy_percent") when they have labels, otherwise top-1 agreement
// with `float_model` ("top1_agreement_percent": inputs whose argmax is the
// float model's), and either way the output SNR against the float model.
// The float model's outputs are computed once. `limit` > 0 uses only the
// first `limit` inputs, `batch_size` inputs per forward pass.
std::unique_ptr<Scenario> make_dataset_scenario(std::unique_ptr<InputSet> inputs,
                                                const Model& float_model, std::size_t limit,
                                                std::size_t batch_size,
                                                const EngineOptions& engine_options);

struct EvaluationOptions {
    LadderPlan ladder;  // e.g. 8,16; the top rung is also sent directly to UE2
    std::vector<double> rates_bits_per_second{33.6e6, 100e6, 1100e6};
    double rtt_seconds = 0.02;
    double frames_per_second = 30;
    double tail_seconds = 1;  // UEs keep streaming this long after the top rung
    int engine_threads = 1;
    InputShapes input_shapes;  // for the UEs' engines (--input-shape)
    std::string tag;           // unique_tag of the CSV
    // The coder whose sizes and times fill the study's table and CSV
    // ("bitinc", "raw", "zstd" or any registered WeightCoder). Delivery to
    // the UEs always uses bitinc packages.
    std::string coder = "bitinc";
    // Sweep: extra (base bits, per-channel) configurations measured for the
    // size-accuracy curve; empty: none.
    std::vector<std::pair<int, bool>> sweep;
    // Pack with calibration (refinements in order of value, an accuracy
    // point); it reads the training split of calibration->data_dir only.
    std::optional<PackCalibration> calibration;
    // Mixed precision: the base rung within a byte budget (pack --budget).
    std::optional<PackBudget> budget;
    // Accuracy-versus-bytes curves of a calibrated package, against the same
    // units in tensor order: points measured per refinement rung (0: none).
    std::size_t curve_points_per_rung = 8;
    std::filesystem::path work_directory;              // packages go here
    std::function<void(const std::string&)> progress;  // one line per stage
};

// One rung as measured at the server and reconstructed at a device.
struct RungEvaluation {
    RungKind kind = RungKind::base;
    int bits = 0;
    int parent_bits = 0;
    std::uint64_t bytes = 0;
    double encode_seconds = 0;
    double decode_seconds = 0;       // decoding its units into the integer model
    double reconstruct_seconds = 0;  // integers to float32 weights and the ONNX model
    Performance performance;         // of the model after this rung
    // 10 log10(sum of squared float weights / sum of squared errors) over
    // every weight of the model after this rung, against the float model;
    // +infinity when it holds the float weights exactly. Needs no engine.
    double weight_snr_db = 0;
    // A mixed-precision ladder rung: the least, most and mean (by weights)
    // of the quantized tensors' bits after it; 0 when every tensor is at
    // `bits`.
    int min_bits = 0;
    int max_bits = 0;
    double mean_bits = 0;
};

// An update as a device receives it: from the base rung to a model higher
// up the ladder (the accuracy point, or the top rung).
struct UpdateEvaluation {
    int bits = 0;               // the rung it ends in
    int parent_bits = 0;        // the base rung's
    std::size_t units = 0;      // refinement units it carries
    std::uint64_t bytes = 0;    // what it adds to the base
    double encode_seconds = 0;  // of its units; a rung sent in part counts in proportion to bytes
    double decode_seconds = 0;
    double reconstruct_seconds = 0;
    Performance performance;  // of the model after it
};

// Accuracy after a number of refinement bytes received past the base.
struct CurvePoint {
    std::uint64_t bytes = 0;
    double value = 0;
    std::vector<std::uint8_t> sample_correct{};  // Performance::sample_correct
};

// The standard error, in percentage points, of the difference between two
// curve points' metric measured on the same samples (paired); NaN when
// either has no per-sample results.
double paired_difference_error(const CurvePoint& a, const CurvePoint& b);

// P(X >= k) for X ~ Binomial(n, 1/2): the one-sided sign test (exact
// McNemar) on n samples two models disagree on, k of them won by one side.
double sign_test_p_value(std::size_t n, std::size_t k);

// The accuracy-first curve against the tensor-order one, point by point
// past the base (both measured at the same byte counts on the same
// samples). A finite test set decides most near-ties by chance, so beside
// the plain counts it says where the accuracy-first order is below by more
// than chance allows: a one-sided sign test on the samples the two models
// disagree on, at `alpha` with Holm's step-down correction over the byte
// counts where the two models differ at all.
struct CurveComparison {
    std::size_t points = 0;  // byte counts compared (past the base)
    std::size_t above = 0, equal = 0, below = 0;
    double worst_shortfall = 0;           // largest (tensor order - accuracy-first), points
    std::uint64_t worst_at_bytes = 0;     // where it is
    double worst_in_errors = 0;           // the largest shortfall in paired standard errors
    std::size_t tested = 0;               // byte counts where the two models differ
    double smallest_p_below = 1;          // the sign test's smallest p where below
    std::size_t significantly_below = 0;  // below beyond chance (Holm, alpha)
    double alpha = 0.05;
    bool per_sample = false;  // false: no per-sample results, no test made
};
CurveComparison compare_curves(const std::vector<CurvePoint>& accuracy_first,
                               const std::vector<CurvePoint>& tensor_order, double alpha = 0.05);

// One UE over one link.
struct UeRun {
    std::string ue;  // "UE1" (incremental) or "UE2" (direct)
    double rate_bits_per_second = 0;
    double rtt_seconds = 0;
    double transfer_seconds = 0;  // request of the manifest to the last byte
    double startup_latency =
        0;  // study's definition: encode + decode + reconstruct of the first model
    double startup_latency_e2e = 0;  // request to the first inference result
    double top_rung_seconds = 0;     // request to the engine of the top rung serving
    std::uint64_t bytes = 0;
    StartupBreakdown startup;  // where startup_latency_e2e went
    StreamReport stream;
    // (seconds, bits) of each engine swap, for accuracy over time.
    std::vector<std::pair<double, int>> swaps;
    // (seconds, metric) from each swap on: the test metric of the model the
    // new engine holds (measured offline), so a step function of time.
    std::vector<std::pair<double, double>> served;
    double accuracy_point_at = -1;         // the units up to the point were in (-1: never)
    double accuracy_point_served_at = -1;  // an engine holding them started serving
};

// Whether UE1 serves at every instant a model at least as good as UE2's
// (UE2 serving nothing counts as 0), allowing `tolerance` below it.
struct Dominance {
    double rate_bits_per_second = 0;
    double tolerance = 0;
    bool holds = false;
    double worst_margin = 0;  // min of UE1's metric - UE2's, from UE2's first model on
    double worst_at = 0;      // seconds
};

struct SweepPoint {
    int base_bits = 0;
    bool per_channel = false;
    std::uint64_t bytes = 0;
    double value = 0;
};

struct EvaluationResult {
    std::string model_name;
    std::string scenario_name;
    std::string dataset_name;
    std::string metric_name;
    std::string coder_name = "bitinc";
    std::string tag;
    // Why the engine could not run the model, if it could not: then every
    // metric is NaN and no UE ran; sizes, times and weight SNR stand.
    std::string engine_problem;
    std::uint64_t float32_bytes = 0;
    Performance original;  // the float32 model (the anchor of the CSV)
    double pack_seconds = 0;
    std::vector<RungEvaluation> ladder;  // base, refinements
    RungEvaluation direct;               // the top rung sent whole
    // The ladder's top equals the direct rung: same bytes, same metric.
    bool update_equals_direct = false;
    // Calibrated packages: the manifest's accuracy point, the update that
    // reaches it, and the accuracy-versus-bytes curves (bytes past the base).
    std::optional<AccuracyPoint> accuracy_point;
    std::optional<UpdateEvaluation> accuracy_update;
    UpdateEvaluation exact_update;  // base to the top rung: every refinement
    std::vector<CurvePoint> accuracy_first_curve;
    std::vector<CurvePoint> tensor_order_curve;
    std::vector<UeRun> runs;           // UE1 and UE2 per rate
    std::vector<Dominance> dominance;  // per rate
    std::vector<SweepPoint> sweep;
};

// UE1's served metric against UE2's over time (UeRun::served).
Dominance compare_served(const UeRun& ue1, const UeRun& ue2, double tolerance);

// Runs the whole evaluation for the ONNX model at `model_path`. Throws Error
// on bad input, and if base + update does not reproduce the direct rung.
EvaluationResult run_evaluation(const std::filesystem::path& model_path, Scenario& scenario,
                                const EvaluationOptions& options);

// The result files: results.csv (the study's columns and ours), results.json.
void write_evaluation_results(const EvaluationResult& result,
                              const std::filesystem::path& directory);

// The CSV header, for tests and for tools that read the file.
std::vector<std::string> evaluation_csv_columns();

}  // namespace bitinc
