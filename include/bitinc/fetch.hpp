// The device's side of HTTP delivery: the fetcher, which downloads a
// package topology first, verifies everything and decodes units while they
// arrive, and the package's files over HTTP as a ByteSource. The serving
// side (the lab's package server) is in bitinc/server.hpp.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bitinc/assembler.hpp"
#include "bitinc/byte_source.hpp"
#include "bitinc/manifest.hpp"
#include "bitinc/model.hpp"

namespace bitinc {

enum class FetchMode {
    incremental,  // base rung, then refinements (UE1 of the 3GPP scenario)
    direct,       // the direct rung only (UE2)
};

// What the fetcher reports as it goes.
struct FetchEvent {
    enum class Kind {
        manifest_ready,
        topology_ready,
        rung_ready,  // every unit of `bits` applied (or degraded): assembler holds it
        degraded,    // `tensors` stay below `bits`: a refinement could not be had
        progress,    // bytes arrived
        retry,       // a request failed and will be repeated: `message` says why
        // A fetch going past the package's accuracy point has applied every
        // unit up to it (and none after): the assembler holds the
        // accuracy-matched model.
        accuracy_point_ready,
    };
    Kind kind = Kind::progress;
    double seconds = 0;  // since the fetch started
    int bits = 0;
    std::uint64_t bytes_done = 0;
    std::uint64_t bytes_total = 0;
    std::size_t units_applied = 0;  // progress: units decoded into the model so far
    std::vector<std::string> tensors;
    std::string message;
    // Valid during topology_ready, progress, rung_ready and degraded: the
    // model as it stands.
    const ModelAssembler* assembler = nullptr;
    // manifest_ready: the manifest (valid during the callback).
    const Manifest* manifest = nullptr;
};

struct FetchOptions {
    FetchMode mode = FetchMode::incremental;
    int until_bits = 0;  // 0: the ladder's last rung (the exact one where there is one)
    // Stop at the package's accuracy point (incremental only): the rungs
    // before it, then the first units of its rung. An Error if the package
    // names none.
    bool until_accuracy_point = false;
    // Where partial downloads are kept for resuming (empty: not kept).
    std::filesystem::path part_directory;
    // Retries of a failing request: backoff from `backoff_initial` doubling
    // to `backoff_max`. Each file gets `max_attempts` failed tries; the
    // count starts over only when a try brings the file past the longest
    // it ever had (bytes delivered again are no progress).
    int max_attempts = 8;
    double backoff_initial = 0.3;
    double backoff_max = 10.0;
    double timeout_seconds = 30;  // connect timeout, and longest wait for a byte
    // The whole fetch fails once this many seconds have passed (0: never).
    double deadline_seconds = 0;
    // A try fails when fewer than `min_rate_bytes_per_second` x
    // `min_rate_window_seconds` bytes came in its last window (0: no rule).
    double min_rate_bytes_per_second = 0;
    double min_rate_window_seconds = 5;
    int decode_threads = 2;
    // A refinement that cannot be had fails the fetch instead of degrading.
    bool strict = false;
    const std::atomic<bool>* cancel = nullptr;  // set to stop the fetch (Error "cancelled")
    // While set, units that arrive wait undecoded and the next rung is not
    // requested yet: a ProgressiveModel holds them while it builds its
    // first engine, which would otherwise share the cores with the next
    // rung's transfer and decoding.
    const std::atomic<bool>* hold_decoding = nullptr;
    // Fill FetchResult::model (a float copy of the whole model). A caller
    // that only writes the model to a file leaves it off and streams from
    // FetchResult::assembler (write_model_file) instead.
    bool keep_model = true;
    // Signed packages (docs/security.md). With a trusted Ed25519 public key
    // (PEM), the manifest's detached signature must verify before any of
    // its bytes are used (each file and unit is then checked against the
    // SHA-256 the manifest gives it), and the package's release must not be
    // below the highest release of that model and key the device installed
    // (kept in `installed_releases`; empty: InstalledReleases::default_path).
    // A completed fetch records its release there.
    struct Trust {
        std::string public_key_pem;
        std::filesystem::path installed_releases;
    };
    std::optional<Trust> trust;
    // An earlier version of the model the device holds, at one of its
    // ladder rungs (as fetch or unpack wrote it). When the package has a
    // delta from it (package format 7), an incremental fetch takes the
    // topology and that delta instead of the rungs up to the delta's bits.
    std::shared_ptr<const Model> previous;
    std::function<void(const FetchEvent&)> on_event;
};

// One file's download, in seconds since the fetch started. With retries,
// first_byte_at is of the first try that brought any byte.
struct DownloadTimes {
    double requested_at = 0;
    double first_byte_at = -1;  // -1: nothing came (resumed from disk, or empty)
    double downloaded_at = 0;   // last byte in
};

struct RungTimeline : DownloadTimes {
    RungKind kind = RungKind::base;
    int bits = 0;
    int parent_bits = 0;
    std::uint64_t bytes = 0;
    double ready_at = 0;        // last unit applied
    double decode_seconds = 0;  // time spent applying units (on all threads)
    // Decoding done before the last byte arrived: hidden behind the transfer.
    double decode_hidden_seconds = 0;
    std::size_t units_refetched = 0;
    std::size_t units_degraded = 0;
    // The rung file's SHA-256 was checked as it arrived (not possible when
    // units had to be fetched again or were lost; each unit's own SHA-256 is
    // checked regardless).
    bool file_sha256_checked = false;
    // The rung came as a version delta from FetchOptions::previous.
    bool from_previous = false;
};

struct FetchResult {
    Manifest manifest;
    Model model;  // empty unless FetchOptions::keep_model
    // The assembled model (indices and steps, no float copy).
    std::shared_ptr<const ModelAssembler> assembler;
    int reached_bits = 0;  // the ladder rung every quantized chunk reached (its manifest bits)
    int target_bits = 0;   // the rung asked for; above reached_bits when degraded
    // Stopped, as asked, at the accuracy point: the chunks its units
    // refined are at target_bits, the others below by design (not degraded).
    bool at_accuracy_point = false;
    // When a fetch that went past the accuracy point had applied the units
    // up to it (accuracy_point_ready); -1 when it did not pass one.
    double accuracy_point_at = -1;
    double manifest_at = 0;  // parsed and checked
    // The topology, at the head of the first rung's file, verified and the
    // assembler made from it.
    double topology_at = 0;
    std::uint64_t manifest_bytes = 0;
    DownloadTimes manifest_download;
    double seconds = 0;
    std::uint64_t bytes_downloaded = 0;
    std::size_t retries = 0;
    std::vector<RungTimeline> rungs;
    std::vector<std::string> degraded_tensors;
    // With FetchOptions::trust: the signer's key id (the package verified).
    std::string signer_key_id;
};

// Fetches the package at `url` (the directory holding manifest.json, e.g.
// "http://host:8080/models/resnet18/"). Throws Error on a fault it cannot
// recover from: unreachable server, missing or malformed manifest, a
// topology or base unit that never arrives intact.
FetchResult fetch_package(const std::string& url, const FetchOptions& options);

// The files of the package at `url` (an http://, https:// or file:// URL, or
// a package directory) as a ByteSource, for a ProgressiveModel or an app's
// own PackageDecoder loop: one kept-alive connection, range requests, and
// the fetcher's retries with backoff (a read resumes where its bytes
// stopped), timeouts, deadline (from the source's making) and minimum rate
// from `options` (their retry events go to options.on_event);
// options.cancel is not used: ByteSource::cancel stops a read. Throws Error
// on a malformed URL.
std::unique_ptr<ByteSource> make_package_source(const std::string& url,
                                                const FetchOptions& options = {});

}  // namespace bitinc
