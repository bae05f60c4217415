// A push decoder for packages: the device's state machine without a
// transport. The caller moves the bytes (with its own HTTP stack, cache or
// file system) and asks what to do next, as libjxl's and dav1d's decoders
// are driven: push what arrived, then take events until the decoder needs
// more input.
//
//     PackageDecoder decoder;
//     for (;;) {
//         const DecoderEvent event = decoder.next_event();
//         if (event.kind == DecoderEvent::Kind::need_input) {
//             for (const ByteRange& range : event.wanted) {
//                 // fetch the range, then decoder.push(range.file, offset, bytes)
//                 // (or decoder.give_up(range) if it cannot be had)
//             }
//         } else if (event.kind == DecoderEvent::Kind::rung_ready) {
//             run(decoder.snapshot());  // a model to infer with
//         } else if (event.kind == DecoderEvent::Kind::done) {
//             break;
//         }
//     }
//
// Every byte is checked before it is used: the manifest parses (and, with
// DecoderOptions::verify_manifest, is signed by a trusted key), the topology
// matches its SHA-256, every unit its SHA-256 and CRC32C (docs/format.md).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bitinc/assembler.hpp"
#include "bitinc/manifest.hpp"

namespace bitinc {

// Bytes [begin, end) of one file of a package. For the manifest, end is 0:
// the whole file, whose size only the server knows.
struct ByteRange {
    std::string file;
    std::uint64_t begin = 0;
    std::uint64_t end = 0;
};

struct DecoderOptions {
    bool direct = false;  // the direct rung alone (UE2), not the ladder
    int until_bits = 0;   // 0: the ladder's last rung (direct: its top rung)
    bool until_accuracy_point = false;
    // Signed packages (docs/format.md §8): when set, the decoder also wants
    // manifest.json.sig (push_signature) and, before it reads a byte of the
    // manifest, calls this with the manifest's bytes and the signature
    // file's; it throws Error (ErrorCode::untrusted) to refuse the package,
    // and the decoder passes it on as it is. The fetch component's
    // trusted_manifest_check (bitinc/trust.hpp) makes one (Ed25519 through
    // OpenSSL, and no release older than one installed); an app built on
    // the decode component alone brings its own.
    std::function<void(std::string_view manifest, std::string_view signature)> verify_manifest;
    // Units are applied on this many worker threads while the caller goes on
    // pushing (0: inside push(), on the caller's thread). With workers,
    // push() waits while they have more than 32 MB of units queued, and
    // next_event() waits for them when no input could help.
    int decode_threads = 0;
    // While *hold_decoding is true (if given), workers start no unit: the
    // device has something more urgent for its cores (its first engine
    // build). Read by the workers; the caller owns it.
    const std::atomic<bool>* hold_decoding = nullptr;
    // Version deltas (docs/format.md §9): the model the device holds, an
    // earlier version of this package's model. When the manifest has a
    // delta from it to a rung no higher than the target, the decoder wants
    // the topology file and the delta file instead of the rungs up to the
    // delta's, each whole and checked against the manifest's SHA-256. The
    // caller keeps the model alive while the decoder lives.
    // `previous_sha256` is its model_weights_sha256 if the caller has it
    // already (else the decoder hashes the model when the manifest comes).
    const Model* previous = nullptr;
    std::string previous_sha256;
};

// When units were being applied: one span per unit, on the steady clock.
struct ApplySpan {
    std::chrono::steady_clock::time_point begin;
    std::chrono::steady_clock::time_point end;
};

struct DecoderEvent {
    enum class Kind {
        need_input,            // push the bytes of `wanted` (in any chunking and order)
        manifest_ready,        // manifest() may be read
        topology_ready,        // the graph is known; weights come with the first rung
        unit_damaged,          // `wanted` (one unit) arrived damaged: push it again, or give_up
        rung_ready,            // every unit of rungs[rung] applied (or given up), or a
                               // version delta to it: snapshot()
        accuracy_point_ready,  // the units up to the package's accuracy point are in
        degraded,              // a unit was given up: its chunk stays at the rung below
        done,                  // the target is reached; nothing more is wanted
    };
    Kind kind = Kind::need_input;
    std::vector<ByteRange> wanted;
    std::size_t rung = 0;  // rung_ready, degraded: the index of the rung in the manifest
    int bits = 0;          // rung_ready: its bits
    std::string message;   // unit_damaged, degraded: what went wrong
};

class PackageDecoder {
  public:
    // `source` names the package in error messages (a URL or a directory).
    explicit PackageDecoder(DecoderOptions options = {}, std::string source = "package");
    ~PackageDecoder();
    PackageDecoder(PackageDecoder&&) noexcept;
    PackageDecoder& operator=(PackageDecoder&&) noexcept;

    // The whole manifest. Throws Error if it does not parse or the package
    // lacks the target (DecoderOptions).
    void push_manifest(std::span<const std::uint8_t> bytes);
    // The whole manifest.json.sig, wanted when DecoderOptions::verify_manifest
    // is set (ignored otherwise). Throws Error if the check refuses the package.
    void push_signature(std::span<const std::uint8_t> bytes);
    // Bytes of a rung file from `offset`: a range wanted, in any chunking
    // and order; bytes nobody asked for are ignored. A damaged unit becomes
    // a unit_damaged event, a damaged topology a request for it again.
    void push(std::string_view file, std::uint64_t offset, std::span<const std::uint8_t> bytes);
    // The caller cannot get `range`: the units of refinement and exact rungs
    // in it are given up (their chunks stay a rung behind, reported as
    // degraded); the manifest or any part of a base or direct rung cannot be
    // done without, which throws Error.
    void give_up(const ByteRange& range);

    // What happened since the last call, in order; need_input when nothing
    // did and more bytes are wanted; done at the end.
    DecoderEvent next_event();

    bool has_manifest() const;
    const Manifest& manifest() const;  // throws Error before manifest_ready
    // True once every chunk has arrived at some rung (after the first rung).
    bool has_model() const;
    // The model as it stands (throws Error before has_model()).
    Model snapshot() const;
    // Units applied so far, over every rung.
    std::size_t units_applied() const;
    // The version delta the decoder takes (an index into manifest().deltas),
    // once the manifest is in; none without DecoderOptions::previous or a
    // delta from it.
    std::optional<std::size_t> delta() const;
    // When units were applied since the last call (for a fetcher's figure of
    // how much decoding the download hid).
    std::vector<ApplySpan> take_apply_spans();
    // The assembler, for writing the model out (write_model_file); nullptr
    // before topology_ready.
    const ModelAssembler* assembler() const;
    // The same, shared: it may outlive the decoder (a fetcher hands it on).
    // Read it only while no unit is being applied: after done, or with no
    // decode threads.
    std::shared_ptr<const ModelAssembler> shared_assembler() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace bitinc
