// run_stream: the camera, the inference loop, and the figures of a run.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

#include "bitinc/accuracy.hpp"
#include "bitinc/error.hpp"
#include "bitinc/stream.hpp"

namespace bitinc {

namespace {

using Clock = std::chrono::steady_clock;

void summarize(StreamReport& report, double window_seconds) {
    const std::vector<StreamFrame>& frames = report.frames;
    for (std::size_t i = 0; i < frames.size(); ++i) {
        const StreamFrame& frame = frames[i];
        RungServed& served = report.served[frame.bits];
        ++served.results;
        served.correct += frame.correct;
        report.longest_latency =
            std::max(report.longest_latency, frame.done_at - frame.captured_at);
        if (i > 0)
            report.longest_gap =
                std::max(report.longest_gap, frame.done_at - frames[i - 1].done_at);
    }
    for (const ProgressiveEvent& event : report.events) {
        if (event.kind != ProgressiveEvent::Kind::swapped || frames.empty()) continue;
        // The results either side of the swap.
        const auto after = std::find_if(frames.begin(), frames.end(), [&](const StreamFrame& f) {
            return f.done_at >= event.seconds;
        });
        if (after == frames.begin() || after == frames.end()) continue;
        report.longest_gap_at_swap =
            std::max(report.longest_gap_at_swap, after->done_at - std::prev(after)->done_at);
    }
    if (!frames.empty() && window_seconds > 0) {
        const double origin = frames.front().done_at;
        for (const StreamFrame& frame : frames) {
            const auto index = std::size_t((frame.done_at - origin) / window_seconds);
            while (report.windows.size() <= index) {
                const double start = origin + double(report.windows.size()) * window_seconds;
                report.windows.push_back({start, start + window_seconds, 0, 0, 0});
            }
            StreamWindow& window = report.windows[index];
            ++window.results;
            window.correct += frame.correct;
            window.bits = frame.bits;
        }
    }
}

}  // namespace

StartupBreakdown startup_breakdown(const StreamReport& report) {
    StartupBreakdown parts;
    const auto swap = std::find_if(report.events.begin(), report.events.end(), [](const auto& e) {
        return e.kind == ProgressiveEvent::Kind::swapped;
    });
    if (!report.fetch || report.fetch->rungs.empty() || swap == report.events.end() ||
        report.first_result_at < 0) {
        return parts;
    }
    const FetchResult& fetch = *report.fetch;
    const RungTimeline& first = fetch.rungs.front();
    const auto add = [&](const DownloadTimes& times, std::uint64_t bytes) {
        ++parts.requests;
        parts.bytes += bytes;
        if (times.first_byte_at < 0) return;  // from disk
        parts.waiting += times.first_byte_at - times.requested_at;
        parts.transfer += times.downloaded_at - times.first_byte_at;
    };
    add(fetch.manifest_download, fetch.manifest_bytes);
    add(first, first.bytes);
    parts.decode_not_hidden = std::max(0.0, first.ready_at - first.downloaded_at);
    parts.engine_build = swap->build_seconds;
    parts.snapshot = std::max(0.0, swap->seconds - swap->build_seconds - first.ready_at);
    parts.first_inference = std::max(0.0, report.first_result_at - swap->seconds);
    parts.total = report.first_result_at;
    parts.other = parts.total - parts.waiting - parts.transfer - parts.decode_not_hidden -
                  parts.snapshot - parts.engine_build - parts.first_inference;
    return parts;
}

StreamReport run_stream(const std::string& url, ProgressiveOptions options, const ImageSet& images,
                        const StreamOptions& stream_options) {
    if (images.count == 0) throw Error(ErrorCode::invalid_argument, "run: no images to stream");
    const auto open_images = [&images](const Model& topology, const std::string& name) {
        const InputSpec spec = read_input_spec(topology, name);
        check_model_fits_images(spec, images, "fashion-mnist", 10, name);
        return borrow_image_inputs(images, spec, "fashion-mnist");
    };
    return run_stream(url, std::move(options), open_images, stream_options);
}

StreamReport run_stream(const std::string& url, ProgressiveOptions options,
                        const OpenStreamInputs& open_inputs, const StreamOptions& stream_options) {
    StreamReport report;
    std::mutex events_mutex;
    const auto user_callback = options.on_event;
    options.on_event = [&](const ProgressiveEvent& event) {
        {
            const std::lock_guard lock(events_mutex);
            report.events.push_back(event);
        }
        if (user_callback) user_callback(event);
    };
    const auto opened = Clock::now();
    const auto now = [&] { return std::chrono::duration<double>(Clock::now() - opened).count(); };
    std::optional<ProgressiveModel> holder;
    holder.emplace(url, options);
    ProgressiveModel& model = *holder;
    model.wait_ready(std::chrono::duration<double>(stream_options.max_seconds));
    if (!model.ready()) {
        if (const std::optional<std::string> failure = model.failure())
            throw Error(model.failure_code(), *failure);
        throw Error(ErrorCode::network, url + ": no engine became ready in time");
    }
    // An earlier version held (FetchOptions::previous) can serve before the
    // new topology is in: the inputs follow the new graph, so wait for it.
    std::optional<Model> topology = model.topology();
    while (!topology && now() < stream_options.max_seconds) {
        if (const std::optional<std::string> failure = model.failure())
            throw Error(model.failure_code(), *failure);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        topology = model.topology();
    }
    if (!topology) throw Error(ErrorCode::network, url + ": the topology did not arrive in time");
    const std::unique_ptr<InputSet> inputs = open_inputs(*topology, url);
    if (inputs->count() == 0) throw Error(ErrorCode::invalid_argument, "run: no inputs to stream");
    report.labelled = inputs->has_labels();

    // The camera: one frame every 1/fps seconds, queued, never dropped.
    std::mutex queue_mutex;
    std::condition_variable queue_changed;
    std::deque<StreamFrame> queue;
    bool camera_stopped = false;
    std::atomic<bool> stop_camera{false};
    std::jthread camera([&] {
        const auto period = std::chrono::duration<double>(1.0 / stream_options.frames_per_second);
        auto next = Clock::now();
        for (std::size_t index = 0; !stop_camera; ++index) {
            std::this_thread::sleep_until(next);
            next += std::chrono::duration_cast<Clock::duration>(period);
            StreamFrame frame;
            frame.image = index % inputs->count();
            frame.captured_at = now();
            {
                const std::lock_guard lock(queue_mutex);
                queue.push_back(frame);
                ++report.frames_in;
            }
            queue_changed.notify_one();
        }
        {
            const std::lock_guard lock(queue_mutex);
            camera_stopped = true;
        }
        queue_changed.notify_one();
    });

    // Inference: every frame, in order, on the engine current at the time.
    std::exception_ptr inference_failure;  // rethrown here, code and type intact
    std::mutex frames_mutex;
    std::jthread inference([&] {
        for (;;) {
            StreamFrame frame;
            {
                std::unique_lock lock(queue_mutex);
                queue_changed.wait(lock, [&] { return camera_stopped || !queue.empty(); });
                if (queue.empty()) return;
                frame = queue.front();
                queue.pop_front();
            }
            try {
                const FloatArray input = inputs->batch(frame.image, 1);
                const double started = now();
                const Inference result = model.infer(input);
                frame.done_at = now();
                const auto& row = result.output.values;
                const auto predicted =
                    std::size_t(std::max_element(row.begin(), row.end()) - row.begin());
                frame.correct = report.labelled &&
                                static_cast<std::int64_t>(predicted) == inputs->label(frame.image);
                frame.bits = result.bits;
                frame.generation = result.generation;
                const std::lock_guard lock(frames_mutex);
                report.longest_inference =
                    std::max(report.longest_inference, frame.done_at - started);
                report.frames.push_back(frame);
            } catch (...) {
                const std::lock_guard lock(frames_mutex);
                inference_failure = std::current_exception();
                stop_camera = true;
                return;
            }
        }
    });

    // Status until the model has arrived (plus the tail) or time runs out.
    double finished_at = -1;
    std::size_t status_frames = 0;
    double status_at = now();
    while (now() < stream_options.max_seconds) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        if (finished_at < 0 && model.wait_finished(std::chrono::duration<double>(0)))
            finished_at = now();
        if (finished_at >= 0 && now() >= finished_at + stream_options.tail_seconds) break;
        {
            const std::lock_guard lock(frames_mutex);
            if (inference_failure) break;
        }
        if (stream_options.on_status && now() - status_at >= 0.5) {
            const std::lock_guard lock(frames_mutex);
            std::size_t correct = 0, counted = 0;
            for (auto it = report.frames.rbegin();
                 it != report.frames.rend() && it->done_at >= now() - stream_options.window_seconds;
                 ++it) {
                ++counted;
                correct += it->correct;
            }
            const double rate = double(report.frames.size() - status_frames) / (now() - status_at);
            stream_options.on_status(now(), model.bits(),
                                     counted ? 100.0 * double(correct) / double(counted) : 0.0,
                                     rate);
            status_frames = report.frames.size();
            status_at = now();
        }
    }
    stop_camera = true;
    camera.join();
    inference.join();
    report.results_out = report.frames.size();
    report.finished_at = finished_at;
    report.fetch = model.fetch_result();
    report.failure = model.failure();
    report.failure_code = model.failure_code();
    holder.reset();  // no more events after this
    if (inference_failure) std::rethrow_exception(inference_failure);
    {
        const std::lock_guard lock(events_mutex);
        for (const ProgressiveEvent& event : report.events) {
            if (event.kind == ProgressiveEvent::Kind::swapped) report.top_rung_at = event.seconds;
        }
    }
    if (!report.frames.empty()) report.first_result_at = report.frames.front().done_at;
    summarize(report, stream_options.window_seconds);
    return report;
}

}  // namespace bitinc
