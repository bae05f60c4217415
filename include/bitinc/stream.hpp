// A device application in miniature: a "camera" feeds labelled images at a
// fixed rate to a ProgressiveModel while it arrives and upgrades itself; every
// result is timed and scored, so that accuracy over time, the gaps around
// engine swaps and the images served by each rung can be reported.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bitinc/dataset.hpp"
#include "bitinc/inputs.hpp"
#include "bitinc/progressive.hpp"

namespace bitinc {

struct StreamOptions {
    double frames_per_second = 30;
    // Stop this long after the model has finished arriving (0: at once).
    double tail_seconds = 2;
    // Stop at the latest after this long, finished or not.
    double max_seconds = 600;
    double window_seconds = 1;  // accuracy is reported per window
    // Called about twice a second from the calling thread.
    std::function<void(double seconds, int bits, double window_accuracy, double images_per_second)>
        on_status;
};

struct StreamFrame {
    std::size_t image = 0;
    double captured_at = 0;  // seconds since the model was opened
    double done_at = 0;
    int bits = 0;
    std::uint64_t generation = 0;
    bool correct = false;
};

struct StreamWindow {
    double start = 0;
    double end = 0;
    std::size_t results = 0;
    std::size_t correct = 0;
    int bits = 0;  // of the last result in the window
};

struct RungServed {
    std::size_t results = 0;
    std::size_t correct = 0;
    double accuracy_percent() const {
        return results ? 100.0 * double(correct) / double(results) : 0.0;
    }
};

struct StreamReport {
    double first_result_at = -1;  // -1: no result at all
    double top_rung_at = -1;      // the swap to the last engine
    double finished_at = -1;      // the download and the last build ended
    std::size_t frames_in = 0;
    std::size_t results_out = 0;
    double longest_gap = 0;          // between consecutive results
    double longest_gap_at_swap = 0;  // between the results either side of a swap
    double longest_latency = 0;      // capture to result
    double longest_inference = 0;    // one forward pass
    std::vector<StreamFrame> frames;
    std::vector<StreamWindow> windows;
    std::map<int, RungServed> served;  // by the bits of the engine that served
    std::vector<ProgressiveEvent> events;
    std::optional<FetchResult> fetch;
    std::optional<std::string> failure;
    ErrorCode failure_code = ErrorCode::internal;  // of `failure`
    bool labelled = true;  // false: the inputs had no labels, accuracies mean nothing
};

// Where the time to the first result went, in seconds: the requests on the
// way to the first engine (the manifest, then the first rung's file, which
// begins with the topology) split into
// waiting for their first byte (round trips and server) and moving their
// bytes, then what the device adds. The parts sum to `total` with `other`
// (set-up and parsing between requests, and clock skew).
struct StartupBreakdown {
    double total = 0;              // open to the first result (StreamReport::first_result_at)
    int requests = 0;              // on the way to the first engine
    double waiting = 0;            // request to first byte, summed over those requests
    double transfer = 0;           // first to last byte, summed
    std::uint64_t bytes = 0;       // the bytes those requests carried
    double decode_not_hidden = 0;  // the first rung's decoding after its last byte
    double snapshot = 0;           // rung ready to engine build starting (weights copied out)
    double engine_build = 0;       // the first engine's build
    double first_inference = 0;    // first engine serving to the first result
    double other = 0;
};
// Needs report.fetch and the first `swapped` event; all zero without them.
StartupBreakdown startup_breakdown(const StreamReport& report);

// Opens `url` as a ProgressiveModel with `options`, waits for its first
// engine, then streams `images` (cycling) at options.frames_per_second
// until the model has finished arriving plus the tail. Preprocessing comes
// from the model's metadata. Throws Error if no engine ever becomes ready.
StreamReport run_stream(const std::string& url, ProgressiveOptions options, const ImageSet& images,
                        const StreamOptions& stream_options);

// Opens the inputs a stream shows once the model's topology is known (image
// datasets need its preprocessing); `model_name` names it in errors.
using OpenStreamInputs =
    std::function<std::unique_ptr<InputSet>(const Model& topology, const std::string& model_name)>;

// The same with any inputs (inputs are shown in turn, from the first again
// after the last). Without labels, no result counts as correct and
// StreamReport::labelled is false.
StreamReport run_stream(const std::string& url, ProgressiveOptions options,
                        const OpenStreamInputs& open_inputs, const StreamOptions& stream_options);

}  // namespace bitinc
