// ProgressiveModel's core: a download thread feeds snapshots of the model to
// a build thread, which turns each into an engine and swaps it in;
// inference always runs on whichever engine was current when it started.
// Part of the decode component: it needs no OpenCV and no HTTP (the bytes
// come from a ByteSource, the engines from the caller's factory).
#include <algorithm>

#include "bitinc/error.hpp"
#include "runtime/progressive_state.hpp"

namespace bitinc {

using progressive::BuildRequest;
using progressive::Clock;
using progressive::EngineSlot;

void ProgressiveModel::State::launch() {
    builder = std::thread([this] { run_thread(&State::build); });
    fetcher = std::thread([this] { run_thread(&State::fetch); });
}

void ProgressiveModel::State::shut_down() {
    {
        const std::lock_guard lock(mutex);
        cancel = true;
        hold_decoding = false;
    }
    changed.notify_all();
    if (source) source->cancel();
    if (fetcher.joinable()) fetcher.join();
    {
        const std::lock_guard lock(mutex);
        stopping = true;
    }
    changed.notify_all();
    if (builder.joinable()) builder.join();
}

double ProgressiveModel::State::now() const {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

void ProgressiveModel::State::emit(ProgressiveEvent event) {
    if (!options.on_event) return;
    event.seconds = now();
    // On the model's own threads what the app's callback throws would end
    // the process; it is dropped.
    try {
        options.on_event(event);
    } catch (...) {
    }
}

void ProgressiveModel::State::request_build(const ModelAssembler& assembler,
                                            std::size_t units_applied, bool at_accuracy_point) {
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
    BuildRequest request{std::move(snapshot), assembler.reached_rung_bits(), units_applied,
                         at_accuracy_point};
    {
        const std::lock_guard lock(mutex);
        pending = std::move(request);  // a newer snapshot replaces one not yet built
    }
    changed.notify_all();
    units_at_last_request = units_applied;
    last_request_at = now();
}

void ProgressiveModel::State::note_manifest(const Manifest& manifest) {
    {
        const std::lock_guard lock(mutex);
        if (!first_requested) {
            prepare_sizes.clear();
            for (const TensorEntry& tensor : manifest.tensors)
                prepare_sizes.push_back(tensor.element_count());
        }
    }
    changed.notify_all();
}

void ProgressiveModel::State::note_topology(const ModelAssembler& assembler) {
    {
        const std::lock_guard lock(mutex);
        topology = assembler.topology();
        base_bits = assembler.manifest().ladder.base_bits();
    }
    changed.notify_all();
    ProgressiveEvent out;
    out.kind = ProgressiveEvent::Kind::topology_ready;
    emit(out);
}

void ProgressiveModel::State::on_rung_ready(const ModelAssembler& assembler, int bits,
                                            std::size_t units_applied) {
    ProgressiveEvent out;
    out.kind = ProgressiveEvent::Kind::rung_ready;
    out.bits = bits;
    out.units_applied = units_applied;
    emit(out);
    request_build(assembler, units_applied);
}

void ProgressiveModel::State::on_accuracy_point(const ModelAssembler& assembler,
                                                std::size_t units_applied) {
    // The accuracy-matched model is worth an engine of its own: it serves
    // at the top rung's accuracy while the rest arrives.
    ProgressiveEvent out;
    out.kind = ProgressiveEvent::Kind::accuracy_point;
    out.bits = assembler.reached_rung_bits();
    out.units_applied = units_applied;
    emit(out);
    request_build(assembler, units_applied, true);
}

void ProgressiveModel::State::report_degraded(int bits, std::vector<std::string> tensors,
                                              std::string reason) {
    ProgressiveEvent out;
    out.kind = ProgressiveEvent::Kind::degraded;
    out.bits = bits;
    out.tensors = std::move(tensors);
    out.reason = std::move(reason);
    emit(out);
}

void ProgressiveModel::State::consider_progressive_build(const ModelAssembler& assembler,
                                                         std::size_t units_applied) {
    const bool progressive = options.swap_every_units > 0 || options.swap_interval_seconds > 0;
    if (!progressive) return;
    const bool enough_units = options.swap_every_units > 0 &&
                              units_applied >= units_at_last_request + options.swap_every_units;
    const bool long_enough = options.swap_interval_seconds > 0 &&
                             now() - last_request_at >= options.swap_interval_seconds &&
                             units_applied > units_at_last_request;
    if ((enough_units || long_enough) && assembler.complete())
        request_build(assembler, units_applied);
}

void ProgressiveModel::State::fetch() {
    std::optional<std::string> problem;
    ErrorCode problem_code = ErrorCode::internal;
    std::optional<FetchResult> fetched;
    try {
        fetched = download();
        if (fetched) fetched->model = Model();  // the engines hold the weights; keep memory bounded
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

void ProgressiveModel::State::throw_if_cancelled() const {
    if (cancel) throw Error(ErrorCode::cancelled, name + ": cancelled");
}

void ProgressiveModel::State::hold_for_first_engine() {
    std::unique_lock lock(mutex);
    changed.wait(lock, [this] { return !hold_decoding || cancel; });
}

std::optional<FetchResult> ProgressiveModel::State::decode_from_source() {
    PackageDecoder decoder(options.decoder, name);
    DamageCounts damage;
    for (;;) {
        throw_if_cancelled();
        const DecoderEvent event = decoder.next_event();
        if (event.kind != DecoderEvent::Kind::need_input) {
            if (on_decoder_event(decoder, event, damage)) return std::nullopt;
            continue;
        }
        if (event.wanted.empty())
            throw Error(ErrorCode::internal, name + ": the decoder wants nothing and is not done");
        // Start-up comes first: no more bytes while the first engine builds.
        hold_for_first_engine();
        // One range at a time, in the decoder's order (rungs one after
        // another, units to read again first): then the next event says
        // what is still wanted.
        if (read_into(decoder, event.wanted.front(), damage)) return std::nullopt;
    }
}

bool ProgressiveModel::State::on_decoder_event(PackageDecoder& decoder, const DecoderEvent& event,
                                               DamageCounts& damage) {
    switch (event.kind) {
        case DecoderEvent::Kind::manifest_ready:
            note_manifest(decoder.manifest());
            break;
        case DecoderEvent::Kind::topology_ready:
            note_topology(*decoder.assembler());
            break;
        case DecoderEvent::Kind::rung_ready:
            on_rung_ready(*decoder.assembler(), event.bits, decoder.units_applied());
            break;
        case DecoderEvent::Kind::accuracy_point_ready:
            on_accuracy_point(*decoder.assembler(), decoder.units_applied());
            break;
        case DecoderEvent::Kind::degraded: {
            // The tensors of the units given up, and why, as the fetcher says.
            std::string reason = event.message;
            std::vector<std::string> tensors;
            if (given_up) {
                reason += " (" + given_up->because + ")";
                const Manifest& manifest = decoder.manifest();
                for (const UnitEntry& unit : manifest.rungs[event.rung].units) {
                    const std::string& tensor = manifest.tensors[unit.tensor].name;
                    const bool lost = unit.offset < given_up->range.end &&
                                      unit.offset + unit.length > given_up->range.begin;
                    if (lost && std::find(tensors.begin(), tensors.end(), tensor) == tensors.end())
                        tensors.push_back(tensor);
                }
                given_up.reset();
            }
            report_degraded(event.bits, std::move(tensors), std::move(reason));
            break;
        }
        case DecoderEvent::Kind::unit_damaged: {
            // Read again (the next need_input wants it) a bounded number of
            // times; then a refinement unit is given up, and for a base unit
            // or the topology give_up throws: the download fails.
            const ByteRange& unit = event.wanted.front();
            const int times = ++damage[{unit.file, unit.begin}];
            if (times >= std::max(1, options.source_attempts)) {
                try {
                    give_up(decoder, unit, event.message);
                } catch (const Error& error) {
                    throw Error(ErrorCode::corrupt_data, event.message + " (" +
                                                             std::to_string(times) + " times; " +
                                                             error.what() + ")");
                }
            }
            break;
        }
        case DecoderEvent::Kind::done:
            return true;
        case DecoderEvent::Kind::need_input:
            break;
    }
    return false;
}

void ProgressiveModel::State::give_up(PackageDecoder& decoder, const ByteRange& range,
                                      std::string because) {
    given_up = GivenUp{range, std::move(because)};
    decoder.give_up(range);
}

bool ProgressiveModel::State::drain(PackageDecoder& decoder, DamageCounts& damage) {
    for (;;) {
        const DecoderEvent event = decoder.next_event();
        if (event.kind == DecoderEvent::Kind::need_input) return false;
        if (on_decoder_event(decoder, event, damage)) return true;
    }
}

bool ProgressiveModel::State::read_into(PackageDecoder& decoder, const ByteRange& range,
                                        DamageCounts& damage) {
    // The manifest and its signature come whole (end 0); rung files are
    // pushed as their bytes arrive, so that units apply during the read.
    const bool whole_file = range.end == 0;
    std::string whole;
    std::uint64_t at = range.begin;
    bool done = false;
    // What the sink caught: it must not throw into the source's own code.
    std::exception_ptr caught;
    const ByteSink sink = [&](std::span<const std::uint8_t> bytes) {
        if (cancel) return false;
        try {
            if (whole_file) {
                if (whole.size() + bytes.size() > max_manifest_bytes) {
                    throw Error(ErrorCode::corrupt_data,
                                name + "/" + range.file + ": larger than " +
                                    std::to_string(max_manifest_bytes) + " bytes");
                }
                whole.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
                return true;
            }
            if (range.end > at)
                bytes = bytes.first(std::min<std::uint64_t>(bytes.size(), range.end - at));
            decoder.push(range.file, at, bytes);
            at += bytes.size();
            done = drain(decoder, damage);
            if (const ModelAssembler* assembler = decoder.assembler(); assembler && !done)
                consider_progressive_build(*assembler, decoder.units_applied());
            return !done && at < range.end;
        } catch (...) {
            caught = std::current_exception();
            return false;
        }
    };
    for (int attempt = 1;; ++attempt) {
        try {
            source->read({range.file, at, range.end}, sink);
            if (caught) std::rethrow_exception(caught);
            throw_if_cancelled();
            if (done || whole_file || at >= range.end) break;
            throw Error(ErrorCode::corrupt_data,
                        name + "/" + range.file + ": the source ended at byte " +
                            std::to_string(at) + " of " + std::to_string(range.end));
        } catch (const Error& error) {
            if (caught || cancel || error.code() == ErrorCode::cancelled) throw;
            if (attempt < std::max(1, options.source_attempts)) {
                if (whole_file) whole.clear();
                continue;  // the rest of the range, again
            }
            if (whole_file) throw;
            // A refinement's bytes can be done without (degraded); a base or
            // direct rung's cannot: then the source's own error says why.
            try {
                give_up(decoder, {range.file, at, range.end}, error.what());
            } catch (const Error&) {
                throw Error(error.code(), error.what());
            }
            return drain(decoder, damage);
        }
    }
    if (whole_file) {
        const auto bytes =
            std::span(reinterpret_cast<const std::uint8_t*>(whole.data()), whole.size());
        if (range.file == signature_file_name) {
            decoder.push_signature(bytes);
        } else {
            decoder.push_manifest(bytes);
        }
    }
    return done;
}

void ProgressiveModel::State::mark_finished() {
    {
        const std::lock_guard lock(mutex);
        finished = true;
    }
    changed.notify_all();
}

void ProgressiveModel::State::emit_complete() {
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

void ProgressiveModel::State::build() {
    for (;;) {
        BuildRequest request;
        std::vector<std::uint64_t> sizes;
        {
            std::unique_lock lock(mutex);
            changed.wait(
                lock, [this] { return stopping || pending.has_value() || !prepare_sizes.empty(); });
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

bool ProgressiveModel::State::failure_now() const {
    const std::lock_guard lock(mutex);
    return failure.has_value();
}

// The code and message of a caught exception.
std::pair<ErrorCode, std::string> ProgressiveModel::State::described(
    std::exception_ptr caught) const {
    try {
        std::rethrow_exception(caught);
    } catch (const Error& error) {
        return {error.code(), error.what()};
    } catch (const std::bad_alloc&) {
        return {ErrorCode::out_of_memory, name + ": out of memory"};
    } catch (const std::exception& error) {
        return {ErrorCode::internal, name + ": " + error.what()};
    } catch (...) {
        return {ErrorCode::internal, name + ": unknown exception"};
    }
}

// Runs a thread's body. What escapes it (out of memory on the way, say)
// would end the process: it stops the download and ends the model as a
// failure instead.
void ProgressiveModel::State::run_thread(void (State::*body)()) {
    try {
        (this->*body)();
    } catch (...) {
        const auto [code, message] = described(std::current_exception());
        {
            const std::lock_guard lock(mutex);
            cancel = true;
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

ProgressiveModel::ProgressiveModel(std::shared_ptr<ByteSource> source, ProgressiveOptions options)
    : state_(std::make_shared<State>()) {
    if (!source) throw Error(ErrorCode::invalid_argument, "ProgressiveModel: no byte source");
    state_->name = source->name();
    // The decode component builds no engine of its own.
    if (!options.engine_factory) {
        throw Error(
            ErrorCode::invalid_argument,
            state_->name + ": a ProgressiveModel over a byte source needs an engine factory");
    }
    state_->factory = options.engine_factory;
    state_->options = std::move(options);
    state_->source = std::move(source);
    State* state = state_.get();
    state_->download = [state] { return state->decode_from_source(); };
    state_->launch();
}

ProgressiveModel::~ProgressiveModel() {
    state_->shut_down();
}

Inference ProgressiveModel::infer(const FloatArray& batch) {
    std::shared_ptr<EngineSlot> slot;
    {
        const std::lock_guard lock(state_->mutex);
        slot = state_->current;
    }
    if (!slot)
        throw Error(ErrorCode::not_ready,
                    state_->name + ": no engine yet (the base rung has not arrived)");
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
