// A model that runs while it arrives: inference starts on the base rung and
// the engine is swapped for a better one as rungs (or, in progressive mode,
// groups of refinement units) come in — without pausing inference. Shaped
// like a progressive image decoder: it reports events, the caller never
// polls the download.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bitinc/byte_source.hpp"
#include "bitinc/decoder.hpp"
#include "bitinc/engine.hpp"
#include "bitinc/error.hpp"
#include "bitinc/fetch.hpp"

namespace bitinc {

struct ProgressiveEvent {
    enum class Kind {
        topology_ready,  // the graph is in and verified
        rung_ready,      // every unit of `bits` is decoded (an engine for it follows)
        swapped,         // a new engine serves from now on (`bits`, `build_seconds`)
        degraded,        // `tensors` stay below `bits`: a refinement could not be had
        build_failed,    // an engine could not be built; the previous one keeps serving
        complete,        // the last rung is in and its engine serves
        failed,          // the download stopped (`reason`); the current engine keeps serving
        // The units up to the package's accuracy point are in (an engine
        // for that model follows, marked `at_accuracy_point`).
        accuracy_point,
    };
    Kind kind = Kind::rung_ready;
    double seconds = 0;  // since the model was opened
    int bits = 0;        // the ladder rung the engine's model has reached (its manifest bits)
    double build_seconds = 0;
    std::size_t units_applied = 0;
    std::uint64_t generation = 0;  // of the engine (1 for the first)
    // swapped: the engine holds exactly the units up to the accuracy point.
    bool at_accuracy_point = false;
    std::vector<std::string> tensors;
    std::string reason;
};

// Builds an engine from a model (the URL constructor's default builds an
// OpenCV DNN engine). The model is the factory's to keep or move from.
using EngineFactory = std::function<std::unique_ptr<Engine>(Model)>;

struct ProgressiveOptions {
    // The URL constructor's download settings; the model sets on_event and
    // cancel itself. With fetch.previous (an earlier version held), that
    // model serves at once, as bits 0, until the package's delta from it
    // brings the new version.
    FetchOptions fetch;
    // The byte-source constructor's: what to decode (direct, the rung to
    // stop at, the accuracy point, a signature check).
    DecoderOptions decoder;
    // The byte-source constructor's: a range whose read fails (the source
    // throws Error) or a unit that arrives damaged is read this many times
    // in all; then a refinement's units are given up (degraded) and a base
    // or direct rung's fail the download.
    int source_attempts = 3;
    EngineOptions engine;
    // Progressive mode: also rebuild the engine during a refinement rung,
    // every `swap_every_units` units and/or every `swap_interval_seconds`.
    std::size_t swap_every_units = 0;
    double swap_interval_seconds = 0;
    // Needed by the byte-source constructor; empty in the URL
    // constructor: OpenCV DNN with `engine`.
    EngineFactory engine_factory;
    // Called from background threads; keep it short.
    std::function<void(const ProgressiveEvent&)> on_event;
};

// The result of one inference and which engine produced it.
struct Inference {
    FloatArray output;
    int bits = 0;
    std::uint64_t generation = 0;
};

class ProgressiveModel {
  public:
    // Starts downloading `url` (a package URL or directory) at once, with
    // fetch_package (runtime component: libcurl, and OpenCV when
    // options.engine_factory is empty).
    ProgressiveModel(std::string url, ProgressiveOptions options);
    // Starts reading the package from `source` at once, on a thread of its
    // own that drives a PackageDecoder (decode component: no HTTP, no
    // OpenCV). Throws Error (invalid_argument) without
    // options.engine_factory.
    ProgressiveModel(std::shared_ptr<ByteSource> source, ProgressiveOptions options);
    // Cancels the download, waits for the background threads.
    ~ProgressiveModel();
    ProgressiveModel(const ProgressiveModel&) = delete;
    ProgressiveModel& operator=(const ProgressiveModel&) = delete;

    // Runs a batch on the engine current when the call starts; concurrent
    // calls are served one at a time per engine. Throws Error if no engine
    // is ready yet (see wait_ready) or the engine rejects the batch.
    Inference infer(const FloatArray& batch);

    // Waits until an engine can serve, or the download failed before one
    // could. Returns false on timeout.
    bool wait_ready(std::chrono::duration<double> timeout);
    // Waits until the download ended (complete or failed) and the last
    // engine is built. Returns false on timeout.
    bool wait_finished(std::chrono::duration<double> timeout);

    bool ready() const;
    int bits() const;  // of the serving engine; 0 before the first
    std::uint64_t generation() const;
    std::optional<std::string> failure() const;
    ErrorCode failure_code() const;  // what kind of failure(), when there is one
    // The graph (no weights) once the topology is in; empty before.
    std::optional<Model> topology() const;
    // The download's timeline, once it has finished (the URL constructor's;
    // empty over a byte source).
    std::optional<FetchResult> fetch_result() const;

  private:
    struct State;
    std::shared_ptr<State> state_;
};

}  // namespace bitinc
