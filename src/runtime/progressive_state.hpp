// The shared state of a ProgressiveModel. The core (builder, swaps,
// inference, the download over a ByteSource through a PackageDecoder) is in
// progressive_model.cpp, part of the decode component; the URL constructor
// (fetch_package, the OpenCV engine) is in progressive_fetch.cpp, part of
// the runtime component.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bitinc/byte_source.hpp"
#include "bitinc/decoder.hpp"
#include "bitinc/progressive.hpp"

namespace bitinc {

namespace progressive {

using Clock = std::chrono::steady_clock;

// An engine with the lock that serializes its forward passes.
struct EngineSlot {
    std::unique_ptr<Engine> engine;
    std::mutex run_mutex;
    int bits = 0;
    std::uint64_t generation = 0;
};

struct BuildRequest {
    Model model;
    int bits = 0;
    std::size_t units_applied = 0;
    bool at_accuracy_point = false;
};

}  // namespace progressive

struct ProgressiveModel::State {
    std::string name;  // the URL or the source's name, for messages
    ProgressiveOptions options;
    EngineFactory factory;
    std::shared_ptr<ByteSource> source;  // the byte-source constructor's
    // The download: fetch_package (URL constructor) or decode_from_source.
    // Returns the download's timeline where there is one.
    std::function<std::optional<FetchResult>()> download;
    progressive::Clock::time_point start = progressive::Clock::now();
    std::atomic<bool> cancel{false};
    // Set while the first engine is being built: the next rung's units wait
    // undecoded, so the build has the cores to itself (start-up comes first).
    std::atomic<bool> hold_decoding{false};

    mutable std::mutex mutex;
    std::condition_variable changed;
    std::shared_ptr<progressive::EngineSlot> current;
    std::optional<progressive::BuildRequest> pending;
    bool building = false;
    bool fetch_done = false;
    bool finished = false;
    bool stopping = false;
    std::uint64_t generation = 0;
    std::optional<std::string> failure;
    ErrorCode failure_code = ErrorCode::internal;  // of `failure`
    std::optional<Model> topology;
    std::optional<FetchResult> result;
    // The first snapshot's float buffers, one per tensor, allocated and
    // touched by the builder while the device waits for the base rung's
    // first byte (a round trip after the manifest): a fresh device otherwise
    // pays their page faults between the rung's last byte and the engine
    // build (15-20 ms for resnet18's 45 MB).
    std::vector<std::uint64_t> prepare_sizes;  // wanted: elements per tensor
    bool first_requested = false;
    std::vector<std::vector<float>> prepared;

    // Download-thread bookkeeping for progressive rebuilds.
    int base_bits = 0;
    std::size_t units_at_last_request = 0;
    double last_request_at = 0;

    std::thread fetcher;
    std::thread builder;

    // Starts the builder and the download threads.
    void launch();
    // Cancels the download and joins both threads.
    void shut_down();

    double now() const;
    void emit(ProgressiveEvent event);
    void request_build(const ModelAssembler& assembler, std::size_t units_applied,
                       bool at_accuracy_point = false);
    // The manifest is in: the builder may prepare the first snapshot's buffers.
    void note_manifest(const Manifest& manifest);
    void note_topology(const ModelAssembler& assembler);
    // A rung, or the units up to the accuracy point, are in: an engine follows.
    void on_rung_ready(const ModelAssembler& assembler, int bits, std::size_t units_applied);
    void on_accuracy_point(const ModelAssembler& assembler, std::size_t units_applied);
    void report_degraded(int bits, std::vector<std::string> tensors, std::string reason);
    // Progressive mode: a rebuild every so many units or seconds, once
    // every chunk has arrived at some rung.
    void consider_progressive_build(const ModelAssembler& assembler, std::size_t units_applied);

    // Runs `download`, then reports how it ended.
    void fetch();
    // The byte-source constructor's download: reads what the decoder wants
    // from `source`, pushes it, and acts on the decoder's events.
    std::optional<FetchResult> decode_from_source();
    // The URL constructor's (progressive_fetch.cpp).
    void on_fetch_event(const FetchEvent& event);

    void mark_finished();
    void emit_complete();
    void build();
    bool failure_now() const;
    std::pair<ErrorCode, std::string> described(std::exception_ptr caught) const;
    void run_thread(void (State::*body)());

  private:
    // Times each unit (file, offset) arrived damaged, for decode_from_source.
    using DamageCounts = std::map<std::pair<std::string, std::uint64_t>, int>;
    void throw_if_cancelled() const;
    void hold_for_first_engine();
    // Acts on one decoder event; true once the decoder is done.
    bool on_decoder_event(PackageDecoder& decoder, const DecoderEvent& event, DamageCounts& damage);
    // Takes the events pending after a push, up to the next need_input.
    bool drain(PackageDecoder& decoder, DamageCounts& damage);
    // Reads one wanted range into the decoder; true once the decoder is done.
    bool read_into(PackageDecoder& decoder, const ByteRange& range, DamageCounts& damage);
    // Gives `range` up, remembered for the degraded event that follows.
    void give_up(PackageDecoder& decoder, const ByteRange& range, std::string because);
    struct GivenUp {
        ByteRange range;
        std::string because;  // the read failure or the damage
    };
    std::optional<GivenUp> given_up;
};

}  // namespace bitinc
