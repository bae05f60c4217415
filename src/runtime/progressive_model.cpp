// ProgressiveModel: a download thread feeds snapshots of the model to a
// build thread, which turns each into an engine and swaps it in; inference
// always runs on whichever engine was current when it started.
#include "bitinc/progressive.hpp"

#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <tuple>
#include <utility>

#include "bitinc/error.hpp"

namespace bitinc {

namespace {

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

}  // namespace

struct ProgressiveModel::State {
    std::string url;
    ProgressiveOptions options;
    Clock::time_point start = Clock::now();
    std::atomic<bool> cancel{false};
    // Set while the first engine is being built: the next rung's units wait
    // undecoded, so the build has the cores to itself (start-up comes first).
    std::atomic<bool> hold_decoding{false};

    mutable std::mutex mutex;
    std::condition_variable changed;
    std::shared_ptr<EngineSlot> current;
    std::optional<BuildRequest> pending;
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

    double now() const { return std::chrono::duration<double>(Clock::now() - start).count(); }

    void emit(ProgressiveEvent event) {
        if (!options.on_event) return;
        event.seconds = now();
        // On the model's own threads what the app's callback throws would end
        // the process; it is dropped.
        try {
            options.on_event(event);
        } catch (...) {
        }
    }

    void request_build(const ModelAssembler& assembler, std::size_t units_applied,
                       bool at_accuracy_point = false) {
        {
            // The first engine, snapshot included, comes before decoding.
            const std::lock_guard lock(mutex);
            if (!current && !building) hold_decoding = true;
        }
        std::vector<std::vector<float>> buffers;
        {
            const std::lock_guard lock(mutex);
            buffers.swap(prepared);
            first_requested = true;
            prepare_sizes.clear();
        }
        Model snapshot = assembler.topology();
        if (buffers.size() == snapshot.weights.size()) {
            for (std::size_t t = 0; t < buffers.size(); ++t)
                snapshot.weights[t].values = std::move(buffers[t]);
        }
        assembler.fill_model(snapshot);
        BuildRequest request{std::move(snapshot), assembler.lowest_bits(), units_applied,
                             at_accuracy_point};
        {
            const std::lock_guard lock(mutex);
            pending = std::move(request);  // a newer snapshot replaces one not yet built
        }
        changed.notify_all();
        units_at_last_request = units_applied;
        last_request_at = now();
    }

    void on_fetch_event(const FetchEvent& event) {
        switch (event.kind) {
            case FetchEvent::Kind::manifest_ready: {
                if (event.manifest == nullptr) break;
                {
                    const std::lock_guard lock(mutex);
                    if (!first_requested) {
                        prepare_sizes.clear();
                        for (const TensorEntry& tensor : event.manifest->tensors)
                            prepare_sizes.push_back(tensor.element_count());
                    }
                }
                changed.notify_all();
                break;
            }
            case FetchEvent::Kind::topology_ready: {
                {
                    const std::lock_guard lock(mutex);
                    topology = event.assembler->topology();
                    base_bits = event.assembler->manifest().ladder.base_bits();
                }
                changed.notify_all();
                ProgressiveEvent out;
                out.kind = ProgressiveEvent::Kind::topology_ready;
                emit(out);
                break;
            }
            case FetchEvent::Kind::rung_ready: {
                ProgressiveEvent out;
                out.kind = ProgressiveEvent::Kind::rung_ready;
                out.bits = event.bits;
                out.units_applied = event.units_applied;
                emit(out);
                request_build(*event.assembler, event.units_applied);
                break;
            }
            case FetchEvent::Kind::accuracy_point_ready: {
                // The accuracy-matched model is worth an engine of its own:
                // it serves at the top rung's accuracy while the rest arrives.
                ProgressiveEvent out;
                out.kind = ProgressiveEvent::Kind::accuracy_point;
                out.bits = event.assembler->lowest_bits();
                out.units_applied = event.units_applied;
                emit(out);
                request_build(*event.assembler, event.units_applied, true);
                break;
            }
            case FetchEvent::Kind::degraded: {
                ProgressiveEvent out;
                out.kind = ProgressiveEvent::Kind::degraded;
                out.bits = event.bits;
                out.tensors = event.tensors;
                out.reason = event.message;
                emit(out);
                break;
            }
            case FetchEvent::Kind::progress: {
                // Progressive mode: during refinements, rebuild every so many
                // units or seconds; the base rung itself is needed whole.
                const bool progressive =
                    options.swap_every_units > 0 || options.swap_interval_seconds > 0;
                if (!progressive || event.bits == base_bits || event.assembler == nullptr) break;
                const bool enough_units =
                    options.swap_every_units > 0 &&
                    event.units_applied >= units_at_last_request + options.swap_every_units;
                const bool long_enough = options.swap_interval_seconds > 0 &&
                                         now() - last_request_at >= options.swap_interval_seconds &&
                                         event.units_applied > units_at_last_request;
                if ((enough_units || long_enough) && event.assembler->complete()) {
                    request_build(*event.assembler, event.units_applied);
                }
                break;
            }
            default:
                break;
        }
    }

    void fetch() {
        FetchOptions fetch_options = options.fetch;
        fetch_options.cancel = &cancel;
        fetch_options.hold_decoding = &hold_decoding;
        fetch_options.on_event = [this](const FetchEvent& event) { on_fetch_event(event); };
        std::optional<std::string> problem;
        ErrorCode problem_code = ErrorCode::internal;
        std::optional<FetchResult> fetched;
        try {
            fetched = fetch_package(url, fetch_options);
            fetched->model = Model();  // the engines hold the weights; keep memory bounded
        } catch (...) {
            std::tie(problem_code, problem) = described(std::current_exception());
        }
        bool complete_now = false;
        {
            const std::lock_guard lock(mutex);
            fetch_done = true;
            if (!cancel) {
                failure = problem;
                failure_code = problem_code;
            }
            result = std::move(fetched);
            complete_now = !pending && !building;
        }
        changed.notify_all();
        if (problem && !cancel) {
            ProgressiveEvent out;
            out.kind = ProgressiveEvent::Kind::failed;
            out.reason = *problem;
            emit(out);
        } else if (complete_now && !problem) {
            emit_complete();
        }
        // Waiters see `finished` only after the last events went out.
        if (complete_now) mark_finished();
    }

    void mark_finished() {
        {
            const std::lock_guard lock(mutex);
            finished = true;
        }
        changed.notify_all();
    }

    void emit_complete() {
        ProgressiveEvent out;
        out.kind = ProgressiveEvent::Kind::complete;
        {
            const std::lock_guard lock(mutex);
            if (current) {
                out.bits = current->bits;
                out.generation = current->generation;
            }
        }
        emit(out);
    }

    void build() {
        const EngineFactory factory =
            options.engine_factory ? options.engine_factory : EngineFactory([this](Model model) {
                return create_opencv_engine(std::move(model), url, options.engine);
            });
        for (;;) {
            BuildRequest request;
            std::vector<std::uint64_t> sizes;
            {
                std::unique_lock lock(mutex);
                changed.wait(lock, [this] {
                    return stopping || pending.has_value() || !prepare_sizes.empty();
                });
                if (stopping) return;
                if (!pending) {
                    sizes.swap(prepare_sizes);
                } else {
                    request = std::move(*pending);
                    pending.reset();
                    building = true;
                }
            }
            if (!sizes.empty()) {
                // Written once, so that the pages are the process's. Out of
                // memory here is no failure: the snapshot allocates later.
                std::vector<std::vector<float>> buffers;
                try {
                    for (const std::uint64_t elements : sizes) buffers.emplace_back(elements, 0.0f);
                } catch (const std::exception&) {
                    continue;
                }
                const std::lock_guard lock(mutex);
                if (!first_requested) prepared = std::move(buffers);
                continue;
            }
            const double started = now();
            std::unique_ptr<Engine> engine;
            std::string problem;
            try {
                engine = factory(std::move(request.model));  // no copy of the weights
                if (!engine) problem = "the engine factory returned nothing";
            } catch (const std::exception& error) {
                problem = error.what();
            }
            const double build_seconds = now() - started;
            ProgressiveEvent out;
            out.bits = request.bits;
            out.build_seconds = build_seconds;
            out.units_applied = request.units_applied;
            out.at_accuracy_point = request.at_accuracy_point;
            {
                const std::lock_guard lock(mutex);
                hold_decoding = false;  // built or failed: decoding goes on
                if (engine) {
                    auto slot = std::make_shared<EngineSlot>();
                    slot->engine = std::move(engine);
                    slot->bits = request.bits;
                    slot->generation = ++generation;
                    out.generation = slot->generation;
                    // In-flight inferences keep the old slot alive until they end.
                    current = std::move(slot);
                }
            }
            changed.notify_all();
            if (!problem.empty()) {
                out.kind = ProgressiveEvent::Kind::build_failed;
                out.reason = problem;
            } else {
                out.kind = ProgressiveEvent::Kind::swapped;
            }
            emit(out);
            // Only now is the build over: a fetch ending meanwhile must not
            // mark the model finished before this swap's event went out.
            bool finishing = false;
            {
                const std::lock_guard lock(mutex);
                building = false;
                finishing = fetch_done && !pending && !finished;
            }
            changed.notify_all();
            if (finishing) {
                if (!failure_now()) emit_complete();
                mark_finished();
            }
        }
    }

    bool failure_now() const {
        const std::lock_guard lock(mutex);
        return failure.has_value();
    }

    // The code and message of a caught exception.
    std::pair<ErrorCode, std::string> described(std::exception_ptr caught) const {
        try {
            std::rethrow_exception(caught);
        } catch (const Error& error) {
            return {error.code(), error.what()};
        } catch (const std::bad_alloc&) {
            return {ErrorCode::out_of_memory, url + ": out of memory"};
        } catch (const std::exception& error) {
            return {ErrorCode::internal, url + ": " + error.what()};
        } catch (...) {
            return {ErrorCode::internal, url + ": unknown exception"};
        }
    }

    // Runs a thread's body. What escapes it (out of memory on the way, say)
    // would end the process: it stops the download and ends the model as a
    // failure instead.
    void run_thread(void (State::*body)()) {
        try {
            (this->*body)();
        } catch (...) {
            const auto [code, message] = described(std::current_exception());
            cancel = true;
            {
                const std::lock_guard lock(mutex);
                if (!failure) {
                    failure = message;
                    failure_code = code;
                }
                fetch_done = true;
                building = false;
                finished = true;
            }
            changed.notify_all();
        }
    }
};

ProgressiveModel::ProgressiveModel(std::string url, ProgressiveOptions options)
    : state_(std::make_shared<State>()) {
    state_->url = std::move(url);
    state_->options = std::move(options);
    State* state = state_.get();
    state_->builder = std::thread([state] { state->run_thread(&State::build); });
    state_->fetcher = std::thread([state] { state->run_thread(&State::fetch); });
}

ProgressiveModel::~ProgressiveModel() {
    state_->cancel = true;
    state_->hold_decoding = false;
    if (state_->fetcher.joinable()) state_->fetcher.join();
    {
        const std::lock_guard lock(state_->mutex);
        state_->stopping = true;
    }
    state_->changed.notify_all();
    if (state_->builder.joinable()) state_->builder.join();
}

Inference ProgressiveModel::infer(const FloatArray& batch) {
    std::shared_ptr<EngineSlot> slot;
    {
        const std::lock_guard lock(state_->mutex);
        slot = state_->current;
    }
    if (!slot)
        throw Error(ErrorCode::not_ready,
                    state_->url + ": no engine yet (the base rung has not arrived)");
    const std::lock_guard run_lock(slot->run_mutex);
    Inference result;
    result.output = slot->engine->run(batch);
    result.bits = slot->bits;
    result.generation = slot->generation;
    return result;
}

bool ProgressiveModel::wait_ready(std::chrono::duration<double> timeout) {
    std::unique_lock lock(state_->mutex);
    return state_->changed.wait_for(lock, timeout, [this] {
        return state_->current != nullptr || state_->finished ||
               (state_->fetch_done && state_->failure);
    });
}

bool ProgressiveModel::wait_finished(std::chrono::duration<double> timeout) {
    std::unique_lock lock(state_->mutex);
    return state_->changed.wait_for(lock, timeout, [this] { return state_->finished; });
}

bool ProgressiveModel::ready() const {
    const std::lock_guard lock(state_->mutex);
    return state_->current != nullptr;
}

int ProgressiveModel::bits() const {
    const std::lock_guard lock(state_->mutex);
    return state_->current ? state_->current->bits : 0;
}

std::uint64_t ProgressiveModel::generation() const {
    const std::lock_guard lock(state_->mutex);
    return state_->current ? state_->current->generation : 0;
}

ErrorCode ProgressiveModel::failure_code() const {
    const std::lock_guard lock(state_->mutex);
    return state_->failure_code;
}

std::optional<std::string> ProgressiveModel::failure() const {
    const std::lock_guard lock(state_->mutex);
    return state_->failure;
}

std::optional<Model> ProgressiveModel::topology() const {
    const std::lock_guard lock(state_->mutex);
    return state_->topology;
}

std::optional<FetchResult> ProgressiveModel::fetch_result() const {
    const std::lock_guard lock(state_->mutex);
    return state_->result;
}

}  // namespace bitinc
