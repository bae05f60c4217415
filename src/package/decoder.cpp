// The push decoder (include/bitinc/decoder.hpp): the device's state machine
// for one package, fed bytes by whatever transport the caller has.
#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <new>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

#include "bitinc/decoder.hpp"
#include "bitinc/error.hpp"
#include "bitinc/package_reader.hpp"
#include "core/parallel.hpp"
#include "core/sha256.hpp"

namespace bitinc {

namespace {

enum class Fate { pending, in_flight, applied, damaged, skipped, lost };

using Clock = std::chrono::steady_clock;

// Byte ranges received of one buffer, merged.
class Coverage {
  public:
    void add(std::uint64_t begin, std::uint64_t end) {
        if (begin >= end) return;
        ranges_.emplace_back(begin, end);
        std::sort(ranges_.begin(), ranges_.end());
        std::vector<std::pair<std::uint64_t, std::uint64_t>> merged;
        for (const auto& range : ranges_) {
            if (!merged.empty() && range.first <= merged.back().second) {
                merged.back().second = std::max(merged.back().second, range.second);
            } else {
                merged.push_back(range);
            }
        }
        ranges_ = std::move(merged);
    }
    // The first range of [0, length) not yet received ([length, length) if none).
    std::pair<std::uint64_t, std::uint64_t> first_gap(std::uint64_t length) const {
        std::uint64_t at = 0;
        for (const auto& range : ranges_) {
            if (range.first > at) return {at, std::min(range.first, length)};
            at = std::max(at, range.second);
        }
        return {std::min(at, length), length};
    }
    bool covers(std::uint64_t begin, std::uint64_t end) const {
        return begin >= end ||
               (ranges_.size() == 1 && ranges_[0].first <= begin && ranges_[0].second >= end);
    }

  private:
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges_;
};

// A damaged unit being pushed again.
struct Refetch {
    std::vector<std::uint8_t> bytes;
    Coverage coverage;
};

// Worker threads applying units while the caller pushes more bytes. Units
// of one rung touch different chunks, so they apply in any order; a rung's
// units are handed over only once the rung below is complete.
class ApplyPool {
  public:
    struct Job {
        std::size_t part = 0;
        std::size_t rung = 0;
        std::size_t unit = 0;
        std::vector<std::uint8_t> bytes;  // the unit's own copy
        std::string source;
    };
    struct Outcome {
        std::size_t part = 0;
        std::size_t unit = 0;
        std::string error;  // empty: applied
    };

    ApplyPool(ModelAssembler& assembler, int threads, const std::atomic<bool>* hold)
        : assembler_(assembler), hold_(hold) {
        try {
            for (int t = 0; t < threads; ++t) workers_.emplace_back([this] { work(); });
        } catch (const std::system_error& error) {
            // Fewer workers do; none at all cannot decode.
            if (workers_.empty())
                throw Error(ErrorCode::out_of_memory,
                            std::string("cannot start a decoding thread: ") + error.what());
        }
    }
    ~ApplyPool() {
        {
            const std::lock_guard lock(mutex_);
            closing_ = true;
            jobs_.clear();
        }
        wake_.notify_all();
        workers_.clear();  // joins
    }

    // Waits while the queue holds more than max_queued_bytes: a link faster
    // than decoding must not fill memory with a rung's units.
    void submit(Job job) {
        {
            std::unique_lock lock(mutex_);
            changed_.wait(lock, [this] { return queued_bytes_ < max_queued_bytes; });
            queued_bytes_ += job.bytes.size();
            jobs_.push_back(std::move(job));
            ++in_flight_;
        }
        wake_.notify_one();
    }
    // Units in flight, or outcomes not yet taken.
    bool busy() const {
        const std::lock_guard lock(mutex_);
        return in_flight_ > 0 || !outcomes_.empty();
    }
    // What finished since the last call; with `wait`, waits for at least
    // one outcome while units are in flight.
    std::vector<Outcome> take_outcomes(bool wait) {
        std::unique_lock lock(mutex_);
        if (wait) changed_.wait(lock, [this] { return !outcomes_.empty() || in_flight_ == 0; });
        return std::exchange(outcomes_, {});
    }
    std::vector<ApplySpan> take_spans() {
        const std::lock_guard lock(mutex_);
        return std::exchange(spans_, {});
    }

  private:
    void work() {
        for (;;) {
            Job job;
            {
                std::unique_lock lock(mutex_);
                wake_.wait(lock, [this] { return closing_ || !jobs_.empty(); });
                // Held: look again every millisecond (the holder does not
                // know this pool to wake it).
                while (hold_ != nullptr && hold_->load() && !closing_)
                    wake_.wait_for(lock, std::chrono::milliseconds(1));
                if (closing_ || jobs_.empty()) return;
                job = std::move(jobs_.front());
                jobs_.pop_front();
                queued_bytes_ -= job.bytes.size();
            }
            changed_.notify_all();
            const Clock::time_point begin = Clock::now();
            Outcome outcome{job.part, job.unit, {}};
            try {
                assembler_.apply_unit(job.rung, job.unit, job.bytes, job.source);
            } catch (const std::bad_alloc&) {
                // Nothing may escape a worker (it would end the process): the
                // unit counts as damaged, to be pushed again.
                outcome.error = job.source + ": out of memory";
            } catch (const std::exception& error) {
                outcome.error = error.what();
                if (outcome.error.empty()) outcome.error = job.source + ": a unit failed";
            } catch (...) {
                outcome.error = job.source + ": a unit failed";
            }
            {
                const std::lock_guard lock(mutex_);
                spans_.push_back({begin, Clock::now()});
                outcomes_.push_back(std::move(outcome));
                --in_flight_;
            }
            changed_.notify_all();
        }
    }

    static constexpr std::size_t max_queued_bytes = std::size_t{32} << 20;
    ModelAssembler& assembler_;
    const std::atomic<bool>* hold_;
    mutable std::mutex mutex_;
    std::condition_variable wake_;     // a job, or closing
    std::condition_variable changed_;  // room in the queue, or an outcome
    std::deque<Job> jobs_;
    std::size_t queued_bytes_ = 0;
    std::size_t in_flight_ = 0;  // queued or being applied
    bool closing_ = false;
    std::vector<Outcome> outcomes_;
    std::vector<ApplySpan> spans_;
    std::vector<std::jthread> workers_;
};

}  // namespace

struct PackageDecoder::Impl {
    // One rung of the plan: its file as a stream cut into units in order.
    struct Part {
        const RungEntry* rung = nullptr;
        std::size_t rung_index = 0;
        std::uint64_t wanted_bytes = 0;
        std::size_t wanted_units = 0;
        bool has_topology = false;  // the file begins with the topology
        bool topology_done = false;
        std::uint64_t received = 0;  // the stream holds [0, received)
        std::uint64_t window_begin = 0;
        std::vector<std::uint8_t> window;                          // [window_begin, received)
        std::map<std::uint64_t, std::vector<std::uint8_t>> later;  // pushed beyond `received`
        std::size_t next_unit = 0;                                 // the next to cut
        std::vector<Fate> fates;
        std::map<std::size_t, Refetch> refetches;
        std::size_t resolved = 0;     // units applied, skipped or lost
        bool has_point = false;       // the package's accuracy point is in this rung
        std::size_t point_units = 0;  // ... after this many of its units
        bool point_reported = false;
        bool ready_reported = false;
        bool ready_delivered = false;  // next_event() handed out its rung_ready
        bool complete() const { return resolved == wanted_units && topology_done; }
    };

    // A file that comes whole and is used only once its SHA-256 matches the
    // manifest's: with a version delta, the topology and the delta.
    struct WholeFile {
        const FileEntry* entry = nullptr;
        std::vector<std::uint8_t> bytes;
        Coverage coverage;
        bool done = false;
    };

    DecoderOptions options;
    std::string source;
    std::optional<std::size_t> delta_index;
    WholeFile topology_file;
    WholeFile delta_file;
    std::optional<Manifest> manifest;
    FetchPlan plan;
    std::vector<Part> parts;
    std::size_t current = 0;       // the first part not yet complete
    bool point_delivered = false;  // next_event() handed out accuracy_point_ready
    bool delta_delivered = false;  // ... and the version delta's rung_ready
    std::size_t units_applied = 0;
    std::shared_ptr<ModelAssembler> assembler;
    // With DecoderOptions::decode_threads; declared after the assembler so
    // that its workers stop before the assembler goes.
    std::unique_ptr<ApplyPool> pool;
    std::vector<ApplySpan> inline_spans;  // units applied in push(), without workers
    std::deque<DecoderEvent> events;
    bool done_reported = false;
    // Pushed but not yet accepted (waiting for each other when signed).
    std::optional<std::string> manifest_text;
    std::optional<std::string> signature_text;

    // Parses the manifest once it (and with verify_manifest its signature,
    // checked first) is in, and plans the rungs.
    void accept_manifest();

    std::string where(const std::string& file) const { return source + "/" + file; }

    Part* part_of(std::string_view file) {
        for (Part& part : parts)
            if (part.rung->data.file == file) return &part;
        return nullptr;
    }

    void queue(DecoderEvent::Kind kind, const Part& part, std::string message = {},
               std::vector<ByteRange> wanted = {}) {
        DecoderEvent event;
        event.kind = kind;
        event.rung = part.rung_index;
        event.bits = part.rung->bits;
        event.message = std::move(message);
        event.wanted = std::move(wanted);
        events.push_back(std::move(event));
    }

    // Takes bytes into a part's stream, then cuts and applies what is whole.
    void take(Part& part, std::uint64_t offset, std::span<const std::uint8_t> bytes) {
        const std::uint64_t end = std::min(offset + bytes.size(), part.wanted_bytes);
        if (offset >= end || end <= part.received) return;
        if (offset > part.received) {
            auto& held = part.later[offset];
            if (held.size() < end - offset)
                held.assign(bytes.begin(), bytes.begin() + std::ptrdiff_t(end - offset));
            return;
        }
        const std::uint64_t from = part.received - offset;
        part.window.insert(part.window.end(), bytes.begin() + std::ptrdiff_t(from),
                           bytes.begin() + std::ptrdiff_t(end - offset));
        part.received = end;
        join_held(part);
    }

    // Held segments that now reach the stream join it.
    void join_held(Part& part) {
        while (!part.later.empty() && part.later.begin()->first <= part.received) {
            const auto node = part.later.extract(part.later.begin());
            const std::uint64_t node_end = node.key() + node.mapped().size();
            if (node_end > part.received) {
                part.window.insert(
                    part.window.end(),
                    node.mapped().begin() + std::ptrdiff_t(part.received - node.key()),
                    node.mapped().end());
                part.received = node_end;
            }
        }
    }

    // Bytes before `up_to` are used. They leave the window in bulk, once
    // they are half of it: a file pushed whole is not moved once per unit.
    void drop_front(Part& part, std::uint64_t up_to) {
        const std::uint64_t used =
            std::min<std::uint64_t>(up_to - part.window_begin, part.window.size());
        if (used == part.window.size()) {
            part.window.clear();
        } else if (2 * used >= part.window.size()) {
            part.window.erase(part.window.begin(), part.window.begin() + std::ptrdiff_t(used));
        } else {
            return;  // the window keeps them for now; window_begin stays
        }
        part.window_begin = up_to;
    }

    // Applies one unit's bytes, or records why not.
    void apply(Part& part, std::size_t unit_index, std::span<const std::uint8_t> bytes) {
        const UnitEntry& unit = part.rung->units[unit_index];
        Fate& fate = part.fates[unit_index];
        if (builds_on_earlier_rung(part.rung->kind) &&
            assembler->chunk_bits(part.rung_index, unit_index) !=
                manifest->unit_parent_bits(*part.rung, unit.tensor)) {
            fate = Fate::skipped;  // its chunk stayed behind: a unit below it was lost
            ++part.resolved;
            return;
        }
        if (pool) {
            fate = Fate::in_flight;
            pool->submit({std::size_t(&part - parts.data()), part.rung_index, unit_index,
                          std::vector<std::uint8_t>(bytes.begin(), bytes.end()),
                          where(part.rung->data.file)});
            return;
        }
        const Clock::time_point begin = Clock::now();
        try {
            assembler->apply_unit(part.rung_index, unit_index, bytes, where(part.rung->data.file));
            settle(part, unit_index, {});
        } catch (const Error& error) {
            settle(part, unit_index, error.what());
        }
        inline_spans.push_back({begin, Clock::now()});
    }

    // A unit's outcome: applied (no error), or damaged and wanted again.
    void settle(Part& part, std::size_t unit_index, const std::string& error) {
        Fate& fate = part.fates[unit_index];
        if (error.empty()) {
            fate = Fate::applied;
            ++part.resolved;
            ++units_applied;
            return;
        }
        const UnitEntry& unit = part.rung->units[unit_index];
        fate = Fate::damaged;
        part.refetches[unit_index] = {};
        queue(DecoderEvent::Kind::unit_damaged, part, error,
              {{part.rung->data.file, unit.offset, unit.offset + unit.length}});
    }

    // The rung_ready of manifest rung `rung_index` was handed out: the first
    // such event with a version delta is the delta's, then each part's.
    void delivered(std::size_t rung_index) {
        if (delta_index && !delta_delivered) {
            delta_delivered = true;
            return;
        }
        for (Part& part : parts)
            if (part.rung_index == rung_index && part.ready_reported) part.ready_delivered = true;
    }

    // The model's assembler, from its checked topology, and the workers
    // that apply units to it (DecoderOptions::decode_threads).
    void start_assembler(std::string topology, const std::string& at) {
        assembler = std::make_shared<ModelAssembler>(*manifest, std::move(topology), at);
        if (options.decode_threads > 0) {
            pool = std::make_unique<ApplyPool>(*assembler, options.decode_threads,
                                               options.hold_decoding);
        }
    }

    // Takes in what the workers finished (waiting for some with `wait`),
    // then moves on as far as that allows.
    void collect(bool wait) {
        if (!pool) return;
        const std::vector<ApplyPool::Outcome> outcomes = pool->take_outcomes(wait);
        if (outcomes.empty()) return;
        for (const ApplyPool::Outcome& outcome : outcomes) {
            Part& part = parts[outcome.part];
            settle(part, outcome.unit, outcome.error);
            report(part);
        }
        advance();
    }

    // Cuts whole units from the current part's stream (parts apply in
    // order: a refinement needs its parent chunk in place).
    void advance() {
        // The rungs above build on the delta, and wait until the caller has
        // taken its event.
        if (delta_index && (!delta_file.done || !delta_delivered)) return;
        while (current < parts.size()) {
            Part& part = parts[current];
            if (part.has_topology && !part.topology_done) {
                const std::uint64_t size = manifest->topology.bytes;
                if (part.received < size) return;
                std::string topology(part.window.begin(),
                                     part.window.begin() + std::ptrdiff_t(size));
                try {
                    start_assembler(std::move(topology), where(part.rung->data.file));
                } catch (const Error& error) {
                    // Damaged on the way: the file is wanted again from its start.
                    part.received = 0;
                    part.window_begin = 0;
                    part.window.clear();
                    part.later.clear();
                    DecoderEvent event;
                    event.kind = DecoderEvent::Kind::unit_damaged;
                    event.rung = part.rung_index;
                    event.wanted.push_back({part.rung->data.file, 0, size});
                    event.message = error.what();
                    events.push_back(std::move(event));
                    return;
                }
                part.topology_done = true;
                drop_front(part, size);
                events.push_back({DecoderEvent::Kind::topology_ready, {}, part.rung_index, 0, {}});
            }
            if (!part.has_topology) part.topology_done = true;
            if (assembler == nullptr) return;  // the first part brings the topology
            while (part.next_unit < part.wanted_units) {
                // The units after the accuracy point wait until the caller
                // has taken its event: the model it snapshots then is
                // exactly the prefix, with no later unit applied.
                if (part.has_point && !point_delivered && part.next_unit >= part.point_units) {
                    report(part);
                    break;
                }
                const UnitEntry& unit = part.rung->units[part.next_unit];
                const std::uint64_t end = unit.offset + unit.length;
                if (part.fates[part.next_unit] != Fate::pending) {  // given up
                    if (part.received < end) {
                        part.received = end;
                        part.window.clear();
                        part.window_begin = end;
                        join_held(part);
                    } else {
                        drop_front(part, end);
                    }
                    ++part.next_unit;
                    continue;
                }
                if (part.received < end) break;
                apply(part, part.next_unit,
                      std::span(part.window).subspan(unit.offset - part.window_begin, unit.length));
                drop_front(part, end);
                ++part.next_unit;
            }
            report(part);
            if (!part.complete()) return;
            // The next rung's units wait until the caller has taken this
            // rung's event: the model it snapshots then is exactly this rung.
            if (part.ready_reported && !part.ready_delivered &&
                !(plan.at_accuracy_point && &part == &parts.back()))
                return;
            ++current;
        }
    }

    // Events a part's progress calls for.
    void report(Part& part) {
        if (part.has_point && !part.point_reported && part.topology_done) {
            const bool reached =
                std::all_of(part.fates.begin(),
                            part.fates.begin() + std::ptrdiff_t(part.point_units), [](Fate fate) {
                                return fate != Fate::pending && fate != Fate::in_flight &&
                                       fate != Fate::damaged;
                            });
            if (reached) {
                part.point_reported = true;
                queue(DecoderEvent::Kind::accuracy_point_ready, part);
            }
        }
        if (part.complete() && part.next_unit >= part.wanted_units && !part.ready_reported) {
            part.ready_reported = true;
            // A plan that stops at the accuracy point ends with that event.
            if (!(plan.at_accuracy_point && &part == &parts.back()))
                queue(DecoderEvent::Kind::rung_ready, part);
            if (&part == &parts.back()) events.push_back({DecoderEvent::Kind::done, {}, 0, 0, {}});
        }
    }

    // Bytes of the topology or delta file; once the file is whole and its
    // SHA-256 matches, the topology builds the assembler on the held model
    // and the delta's units bring it to the delta's rung.
    void take_whole(WholeFile& whole, std::uint64_t offset, std::span<const std::uint8_t> bytes) {
        const std::uint64_t size = whole.entry->bytes;
        if (offset >= size || bytes.empty()) return;
        const std::uint64_t end = std::min<std::uint64_t>(offset + bytes.size(), size);
        if (whole.bytes.size() < end) whole.bytes.resize(end);
        std::copy(bytes.begin(), bytes.begin() + std::ptrdiff_t(end - offset),
                  whole.bytes.begin() + std::ptrdiff_t(offset));
        whole.coverage.add(offset, end);
        if (!whole.coverage.covers(0, size)) return;
        const std::string_view text(reinterpret_cast<const char*>(whole.bytes.data()),
                                    whole.bytes.size());
        const std::string at = where(whole.entry->file);
        if (core::sha256_hex(text) != whole.entry->sha256) {
            whole.bytes.clear();
            whole.coverage = {};
            DecoderEvent event;
            event.kind = DecoderEvent::Kind::unit_damaged;
            event.wanted.push_back({whole.entry->file, 0, size});
            event.message = at + ": SHA-256 differs from the manifest's";
            events.push_back(std::move(event));
            return;
        }
        if (&whole == &topology_file) {
            start_assembler(std::string(text), at);
            assembler->hold_previous(*options.previous, *delta_index, at, options.previous_sha256);
            events.push_back({DecoderEvent::Kind::topology_ready, {}, 0, 0, {}});
        } else {
            if (!topology_file.done) return;  // applied once the topology is in
            apply_delta(text, at);
        }
        whole.done = true;
        whole.bytes = {};
        // A delta that arrived before the topology applies now.
        if (&whole == &topology_file && delta_file.coverage.covers(0, delta_file.entry->bytes) &&
            !delta_file.done) {
            const std::string_view delta_text(
                reinterpret_cast<const char*>(delta_file.bytes.data()), delta_file.bytes.size());
            apply_delta(delta_text, where(delta_file.entry->file));
            delta_file.done = true;
            delta_file.bytes = {};
        }
    }

    // The delta's units, on the decode threads. Its file's SHA-256 matched:
    // a unit that fails is a bad package, not a damaged transfer.
    void apply_delta(std::string_view file, const std::string& at) {
        const DeltaEntry& delta = manifest->deltas[*delta_index];
        std::vector<std::pair<ErrorCode, std::string>> errors(delta.units.size());
        const Clock::time_point begin = Clock::now();
        core::run_parallel(delta.units.size(), std::max(options.decode_threads, 1),
                           [&](std::size_t u) {
                               // Nothing but a message leaves a worker.
                               try {
                                   assembler->apply_delta_unit(
                                       *delta_index, u, unit_bytes(file, delta.units[u]), at);
                               } catch (const std::bad_alloc&) {
                                   errors[u] = {ErrorCode::out_of_memory, at + ": out of memory"};
                               } catch (const Error& error) {
                                   errors[u] = {ErrorCode::corrupt_data, error.what()};
                               }
                           });
        inline_spans.push_back({begin, Clock::now()});
        for (const auto& [code, message] : errors)
            if (!message.empty()) throw Error(code, message);
        units_applied += delta.units.size();
        DecoderEvent event;
        event.kind = DecoderEvent::Kind::rung_ready;
        event.bits = delta.bits;
        for (std::size_t r = 0; r < manifest->rungs.size(); ++r) {
            if (manifest->rungs[r].bits == delta.bits &&
                manifest->rungs[r].kind != RungKind::direct)
                event.rung = r;
        }
        events.push_back(std::move(event));
        // Nothing above the delta wanted: done.
        if (parts.empty()) events.push_back({DecoderEvent::Kind::done, {}, 0, 0, {}});
    }

    std::vector<ByteRange> wanted() const {
        std::vector<ByteRange> ranges;
        if (!manifest) {
            if (!manifest_text) ranges.push_back({std::string(manifest_file_name), 0, 0});
            if (options.verify_manifest && !signature_text)
                ranges.push_back({std::string(signature_file_name), 0, 0});
            return ranges;
        }
        for (const WholeFile* whole : {&topology_file, &delta_file}) {
            if (delta_index && !whole->done) {
                const auto [gap_begin, gap_end] = whole->coverage.first_gap(whole->entry->bytes);
                ranges.push_back({whole->entry->file, gap_begin, gap_end});
            }
        }
        for (const Part& part : parts) {
            if (part.complete()) continue;
            // A damaged unit: what is still missing of it.
            for (const auto& [unit_index, refetch] : part.refetches) {
                const UnitEntry& unit = part.rung->units[unit_index];
                const auto [gap_begin, gap_end] = refetch.coverage.first_gap(unit.length);
                ranges.push_back(
                    {part.rung->data.file, unit.offset + gap_begin, unit.offset + gap_end});
            }
            if (part.received < part.wanted_bytes)
                ranges.push_back({part.rung->data.file, part.received, part.wanted_bytes});
        }
        return ranges;
    }
};

PackageDecoder::PackageDecoder(DecoderOptions options, std::string source)
    : impl_(std::make_unique<Impl>()) {
    impl_->options = options;
    impl_->source = std::move(source);
}
PackageDecoder::~PackageDecoder() = default;
PackageDecoder::PackageDecoder(PackageDecoder&&) noexcept = default;
PackageDecoder& PackageDecoder::operator=(PackageDecoder&&) noexcept = default;

void PackageDecoder::push_manifest(std::span<const std::uint8_t> bytes) {
    Impl& d = *impl_;
    if (d.manifest) return;  // a second copy changes nothing
    d.manifest_text.emplace(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    d.accept_manifest();
}

void PackageDecoder::push_signature(std::span<const std::uint8_t> bytes) {
    Impl& d = *impl_;
    if (d.manifest || !d.options.verify_manifest) return;
    d.signature_text.emplace(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    d.accept_manifest();
}

void PackageDecoder::Impl::accept_manifest() {
    Impl& d = *this;
    if (!d.manifest_text || (d.options.verify_manifest && !d.signature_text)) return;
    // Taken out first: whatever the check or the parser throws, the decoder
    // asks for both files again (a refused package's bytes are dropped).
    const std::string text = std::move(*d.manifest_text);
    const std::string signature = d.signature_text.value_or("");
    d.manifest_text.reset();
    d.signature_text.reset();
    // Nothing of the manifest is read before the check passes.
    if (d.options.verify_manifest) d.options.verify_manifest(text, signature);
    const std::string where = d.where(std::string(manifest_file_name));
    Manifest manifest = parse_manifest(text, where);
    d.manifest = std::move(manifest);
    d.plan = plan_fetch(*d.manifest, d.options.direct, d.options.until_bits,
                        d.options.until_accuracy_point, where);
    if (d.options.previous != nullptr && !d.options.direct) {
        if (d.options.previous_sha256.empty())
            d.options.previous_sha256 = model_weights_sha256(*d.options.previous);
        d.delta_index = find_delta(*d.manifest, d.options.previous_sha256);
        if (d.delta_index && d.manifest->deltas[*d.delta_index].bits > d.plan.target_bits)
            d.delta_index.reset();
    }
    if (d.delta_index) {
        // The delta replaces the rungs up to its bits.
        const int delta_bits = d.manifest->deltas[*d.delta_index].bits;
        std::erase_if(d.plan.parts,
                      [&](const FetchPlan::Part& part) { return part.rung->bits <= delta_bits; });
        d.topology_file.entry = &d.manifest->topology;
        d.delta_file.entry = &d.manifest->deltas[*d.delta_index].data;
    }
    for (const FetchPlan::Part& planned : d.plan.parts) {
        Impl::Part part;
        part.rung = planned.rung;
        part.rung_index = d.manifest->rung_index(*planned.rung);
        part.wanted_bytes = planned.bytes;
        part.wanted_units = planned.units;
        part.has_topology = starts_with_topology(planned.rung->kind);
        part.fates.assign(planned.units, Fate::pending);
        const auto& point = d.manifest->accuracy_point;
        if (point && point->rung == part.rung_index) {
            part.has_point = true;
            part.point_units = std::min(point->units, planned.units);
        }
        d.parts.push_back(std::move(part));
    }
    d.events.push_back({DecoderEvent::Kind::manifest_ready, {}, 0, 0, {}});
}

void PackageDecoder::push(std::string_view file, std::uint64_t offset,
                          std::span<const std::uint8_t> bytes) {
    Impl& d = *impl_;
    d.collect(false);
    if (d.delta_index) {
        for (Impl::WholeFile* whole : {&d.topology_file, &d.delta_file}) {
            if (whole->entry->file != file || whole->done) continue;
            d.take_whole(*whole, offset, bytes);
            d.advance();
            return;
        }
    }
    Impl::Part* part = d.manifest ? d.part_of(file) : nullptr;
    if (part == nullptr || part->complete()) return;
    // Damaged units pushed again: gathered until whole, then applied.
    for (auto it = part->refetches.begin(); it != part->refetches.end();) {
        const UnitEntry& unit = part->rung->units[it->first];
        const std::uint64_t begin = std::max(offset, unit.offset);
        const std::uint64_t end = std::min(offset + bytes.size(), unit.offset + unit.length);
        Refetch& refetch = it->second;
        if (begin < end) {
            refetch.bytes.resize(unit.length);
            std::copy(bytes.begin() + std::ptrdiff_t(begin - offset),
                      bytes.begin() + std::ptrdiff_t(end - offset),
                      refetch.bytes.begin() + std::ptrdiff_t(begin - unit.offset));
            refetch.coverage.add(begin - unit.offset, end - unit.offset);
        }
        if (refetch.coverage.covers(0, unit.length) && !refetch.bytes.empty()) {
            const std::size_t unit_index = it->first;
            std::vector<std::uint8_t> whole = std::move(refetch.bytes);
            it = part->refetches.erase(it);
            part->fates[unit_index] = Fate::pending;
            d.apply(*part, unit_index, whole);
            d.report(*part);
        } else {
            ++it;
        }
    }
    d.take(*part, offset, bytes);
    d.advance();
}

void PackageDecoder::give_up(const ByteRange& range) {
    Impl& d = *impl_;
    d.collect(false);
    Impl::Part* part = d.manifest ? d.part_of(range.file) : nullptr;
    if (part == nullptr) {
        throw Error(
            ErrorCode::unavailable,
            d.where(range.file) + ": cannot be done without (" +
                (d.manifest ? "not a file of the plan" : "the manifest says what to fetch") + ")");
    }
    if (!builds_on_earlier_rung(part->rung->kind)) {
        throw Error(ErrorCode::unavailable,
                    d.where(range.file) + ": bytes " + std::to_string(range.begin) + " to " +
                        std::to_string(range.end) + " cannot be had, and the " +
                        std::string(rung_kind_name(part->rung->kind)) + " rung needs every one");
    }
    std::size_t given_up = 0;
    for (std::size_t u = 0; u < part->wanted_units; ++u) {
        const UnitEntry& unit = part->rung->units[u];
        const bool overlaps = unit.offset < range.end && unit.offset + unit.length > range.begin;
        Fate& fate = part->fates[u];
        if (!overlaps || (fate != Fate::pending && fate != Fate::damaged)) continue;
        fate = Fate::lost;
        part->refetches.erase(u);
        ++part->resolved;
        ++given_up;
    }
    if (given_up > 0) {
        d.queue(DecoderEvent::Kind::degraded, *part,
                std::to_string(given_up) + " unit" + (given_up == 1 ? "" : "s") + " of " +
                    part->rung->data.file + " given up: their chunks stay a rung below");
    }
    d.report(*part);
    d.advance();
}

DecoderEvent PackageDecoder::next_event() {
    Impl& d = *impl_;
    d.collect(false);
    d.advance();  // units held back for an event the caller has now taken
    for (;;) {
        if (!d.events.empty()) {
            DecoderEvent event = std::move(d.events.front());
            d.events.pop_front();
            if (event.kind == DecoderEvent::Kind::done) d.done_reported = true;
            if (event.kind == DecoderEvent::Kind::accuracy_point_ready) d.point_delivered = true;
            if (event.kind == DecoderEvent::Kind::rung_ready) d.delivered(event.rung);
            return event;
        }
        if (d.done_reported) return {DecoderEvent::Kind::done, {}, 0, 0, {}};
        std::vector<ByteRange> wanted = d.wanted();
        // Nothing to push would help while the workers finish what they
        // have: wait for them.
        if (!wanted.empty() || !d.pool || !d.pool->busy())
            return {DecoderEvent::Kind::need_input, std::move(wanted), 0, 0, {}};
        d.collect(true);
    }
}

bool PackageDecoder::has_manifest() const {
    return impl_->manifest.has_value();
}

const Manifest& PackageDecoder::manifest() const {
    if (!impl_->manifest)
        throw Error(ErrorCode::not_ready, impl_->source + ": the manifest has not arrived");
    return *impl_->manifest;
}

std::optional<std::size_t> PackageDecoder::delta() const {
    return impl_->delta_index;
}

bool PackageDecoder::has_model() const {
    return impl_->assembler && impl_->assembler->complete();
}

Model PackageDecoder::snapshot() const {
    if (!impl_->assembler)
        throw Error(ErrorCode::not_ready, impl_->source + ": the topology has not arrived");
    return impl_->assembler->model();
}

std::size_t PackageDecoder::units_applied() const {
    return impl_->units_applied;
}

std::vector<ApplySpan> PackageDecoder::take_apply_spans() {
    Impl& d = *impl_;
    std::vector<ApplySpan> spans = std::exchange(d.inline_spans, {});
    if (d.pool) {
        const std::vector<ApplySpan> pooled = d.pool->take_spans();
        spans.insert(spans.end(), pooled.begin(), pooled.end());
    }
    return spans;
}

const ModelAssembler* PackageDecoder::assembler() const {
    return impl_->assembler.get();
}

std::shared_ptr<const ModelAssembler> PackageDecoder::shared_assembler() const {
    return impl_->assembler;
}

}  // namespace bitinc
