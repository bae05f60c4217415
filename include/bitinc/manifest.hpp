// The package format as a device reads it: a model laid out as immutable
// static files that any web server can deliver — manifest.json, the
// topology (the ONNX graph without weight data), and one file of units per
// rung. docs/format.md specifies the manifest; the units are those of
// codec.hpp. (Device audience; bitinc/device.hpp gathers its headers.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bitinc/codec.hpp"
#include "bitinc/ladder.hpp"
#include "bitinc/model.hpp"

namespace bitinc {

// 2: every unit entry carries the SHA-256 of the unit (docs/format.md).
// 3: the base and direct rung files begin with the topology, so a device
//    reaches its first model in two requests (manifest, rung file).
// 4: mixed precision: a tensor may carry its own bit depth at each rung.
// 5: an exact rung (lossless units) may end the ladder.
// The packer writes the oldest version that describes the package (3 unless
// some tensor has bits of its own or the ladder ends exact), so older
// devices still read uniform ones.
inline constexpr int package_format_version = 7;
inline constexpr int mixed_precision_format_version = 4;
inline constexpr int exact_rung_format_version = 5;
// Format 6: a signed package's release (Manifest::release).
inline constexpr int release_format_version = 6;
// Format 7: version deltas (Manifest::deltas).
inline constexpr int delta_format_version = 7;
inline constexpr int oldest_package_format_version = 3;
inline constexpr std::string_view manifest_file_name = "manifest.json";
// The detached signature of a signed package's manifest (§8 of docs/format.md).
inline constexpr std::string_view signature_file_name = "manifest.json.sig";
// Readers refuse larger manifests before parsing them: a unit entry takes
// about 110 bytes, so 16 MiB still holds some 150,000 units.
inline constexpr std::uint64_t max_manifest_bytes = std::uint64_t{16} << 20;
// JSON nesting deeper than this is refused while parsing (a manifest needs 4).
inline constexpr int max_manifest_depth = 16;

enum class RungKind {
    base,        // the first rung of the ladder: what a device runs first
    refinement,  // takes the rung below it (parent_bits) to `bits`
    direct,      // a whole model at `bits` in one go, for devices that wait
    // Takes the ladder's top rung (parent_bits) to the source weights bit for
    // bit; `bits` is exact_rung_bits (format 5).
    exact,
};

// The `bits` of an exact rung, above every quantized rung (whose top is
// then below 32).
inline constexpr int exact_rung_bits = 32;

std::string_view rung_kind_name(RungKind kind);

// One unit inside a rung file: which elements of which tensor it carries and
// where its bytes are.
struct UnitEntry {
    std::uint32_t tensor = 0;
    std::uint64_t first = 0;
    std::uint64_t count = 0;
    std::uint64_t offset = 0;
    std::uint32_t length = 0;
    std::uint32_t crc32c = 0;  // the CRC32C the unit itself ends with
    std::string sha256;        // of the unit's bytes, lowercase hex (format 2)
};

// Lowercase hex SHA-256 of a unit's bytes, to compare with UnitEntry::sha256.
std::string unit_sha256(std::span<const std::uint8_t> unit);

struct FileEntry {
    std::string file;  // a plain file name inside the package directory
    std::uint64_t bytes = 0;
    std::string sha256;  // lowercase hex
};

struct RungEntry {
    RungKind kind = RungKind::base;
    int bits = 0;
    int parent_bits = 0;  // refinement rungs only
    FileEntry data;
    std::vector<UnitEntry> units;  // in file order, back to back from offset 0
};

// Whether a rung's file begins with a copy of the topology: the rungs a
// device starts from (base and direct) do, refinements do not.
inline bool starts_with_topology(RungKind kind) {
    return kind == RungKind::base || kind == RungKind::direct;
}

// Whether a rung's units build on a chunk an earlier rung brought
// (refinements and the exact rung): a device that misses one can still run
// the model it has.
inline bool builds_on_earlier_rung(RungKind kind) {
    return kind == RungKind::refinement || kind == RungKind::exact;
}

struct TensorEntry {
    std::string name;
    std::vector<std::int64_t> shape;
    StoredType stored_as = StoredType::float32;
    bool quantized = false;  // false: travels exactly (float32) in base and direct rungs
    // Mixed precision (format 4): the tensor's bit depth at each rung of the
    // ladder, non-decreasing and ending at the ladder's top; empty: the
    // ladder's own bits. A refinement rung carries the tensor only where its
    // bits rise.
    std::vector<int> bits;

    std::uint64_t element_count() const;
};

// Where the model is as good as the top rung, on the packer's calibration
// data, before every refinement has arrived: the first `units` units of the
// refinement rung `rung` (an index into Manifest::rungs), after every rung
// before it. Refinement units come in order of value (accuracy per byte),
// so a device that stops there gets most of the accuracy for part of the
// bytes.
struct AccuracyPoint {
    std::size_t rung = 0;
    std::size_t units = 0;
    std::string metric;                    // e.g. "top1_percent"
    std::uint64_t calibration_images = 0;  // training images the point was measured on
    double value = 0;                      // the metric at the point
    double top_value = 0;                  // the metric at the top rung
    double tolerance = 0;                  // how far below top_value the point may be
};

// What a signed package is (format 6, docs/format.md §8): which model it
// is a release of, and its number, which only grows from one release of
// the model to the next. A device refuses a release below one it has
// installed.
struct Release {
    std::string model_id;
    std::uint64_t number = 0;
};
// Release numbers stay exact as JSON numbers read by any language.
inline constexpr std::uint64_t max_release_number = std::uint64_t{1} << 53;

// What a version delta applies to: an earlier version of the model, held
// by a device at one of its ladder rungs.
struct DeltaBase {
    // model_weights_sha256 of the model the device must hold: the earlier
    // version rebuilt at its rung of `DeltaEntry::bits`.
    std::string weights_sha256;
    std::string source_sha256;  // of the ONNX file the earlier version was packed from
    std::uint64_t release = 0;  // the earlier package's release number (0: unsigned)
};

// A version delta (format 7, docs/format.md §9): takes a device holding an
// earlier version at `bits` to this package's ladder rung of `bits`, from
// which this package's refinements go on. Its file holds one unit per
// chunk of every quantized tensor (difference units against the values
// held, or levels units where the earlier version has no such tensor) and
// exact units only for exact tensors that changed; a tensor it does not
// carry keeps the values held.
struct DeltaEntry {
    int bits = 0;  // a quantized rung of the ladder
    DeltaBase from;
    FileEntry data;
    std::vector<UnitEntry> units;
};

// SHA-256 over a model's weights, in order: for each, its name's length
// (u32 LE), its name, its element count (u64 LE) and its values as float32
// LE. What a delta checks the held model against.
std::string model_weights_sha256(const Model& model);

struct Manifest {
    int format_version = package_format_version;
    std::string generator;  // "bitinc VERSION"
    std::string model_name;
    std::string source_sha256;  // of the ONNX file the package was made from
    std::uint64_t source_bytes = 0;
    std::uint64_t parameters = 0;
    std::uint64_t float32_bytes = 0;
    FileEntry topology;
    LadderPlan ladder;
    std::uint64_t chunk_elements = 0;
    std::vector<TensorEntry> tensors;
    // The ladder's rungs in order (base, then each refinement), then the
    // direct rungs.
    std::vector<RungEntry> rungs;
    std::optional<AccuracyPoint> accuracy_point;
    std::optional<Release> release;  // signed packages (format 6)
    std::vector<DeltaEntry> deltas;  // format 7
    // Bytes of the accuracy point's rung file up to the end of its last unit.
    std::uint64_t accuracy_point_bytes() const;

    // The rung of `kind` at `bits`, or nullptr.
    const RungEntry* find_rung(RungKind kind, int bits) const;
    // The ladder's rungs (base and refinements) in order, up to `until_bits`.
    std::vector<const RungEntry*> ladder_rungs(int until_bits = max_ladder_bits) const;
    // Where a rung's first unit starts in its file: after the topology when
    // the file begins with it.
    std::uint64_t first_unit_offset(const RungEntry& rung) const {
        return starts_with_topology(rung.kind) ? topology.bytes : 0;
    }
    // The position in `rungs` of a rung of this manifest.
    std::size_t rung_index(const RungEntry& rung) const {
        return std::size_t(&rung - rungs.data());
    }

    // Mixed precision. The bit depth of quantized tensor `tensor` after the
    // ladder's rung `ladder_rung` (0: the base).
    int tensor_bits(std::size_t tensor, std::size_t ladder_rung) const;
    // The bit depth `rung` brings `tensor` to (a direct rung: that of the
    // ladder rung of the same bits), and the bit depth a refinement rung
    // takes it from (0 for base and direct rungs).
    int unit_bits(const RungEntry& rung, std::size_t tensor) const;
    int unit_parent_bits(const RungEntry& rung, std::size_t tensor) const;
    // Whether refinement `rung` carries `tensor`: a quantized tensor whose
    // bits rise there.
    bool refines(const RungEntry& rung, std::size_t tensor) const;
    // Whether `rung` has units of `tensor`: base and direct rungs every
    // tensor, a refinement those it refines, the exact rung every quantized
    // tensor.
    bool carries(const RungEntry& rung, std::size_t tensor) const;
    // The exact rung, or nullptr.
    const RungEntry* exact_rung() const;
    // The bits of the ladder's last rung: exact_rung_bits when an exact rung
    // ends it, else the top quantized rung's.
    int last_rung_bits() const { return exact_rung() ? exact_rung_bits : ladder.top_bits(); }
    // The tensor's own ladder: its distinct bit depths, base first (the
    // ladder's when it has no bits of its own). Its base fixes its steps
    // (docs/format.md §1).
    LadderPlan tensor_ladder(std::size_t tensor) const;
    // True when some tensor has bits of its own (format 4).
    bool mixed() const;
};

// What a device downloads to reach a target: the rungs in order, each file
// up to `bytes` and its first `units` units (all of them, or up to the
// accuracy point).
struct FetchPlan {
    struct Part {
        const RungEntry* rung = nullptr;
        std::uint64_t bytes = 0;
        std::size_t units = 0;
    };
    std::vector<Part> parts;
    int target_bits = 0;             // the last part's bits
    bool at_accuracy_point = false;  // stops at the package's accuracy point
};

// The plan to `until_bits` (0: the ladder's last rung; with `direct`, the
// top direct rung) through the ladder, or the direct rung of those bits
// alone, or (until_accuracy_point) to the accuracy point. Throws Error, its
// message starting with `where`, when the package has no such rung or point.
FetchPlan plan_fetch(const Manifest& manifest, bool direct, int until_bits,
                     bool until_accuracy_point, std::string_view where);

// The bytes of `unit` within the contents of its rung file.
std::span<const std::uint8_t> unit_bytes(std::string_view rung_file, const UnitEntry& unit);

// Parses and checks a manifest: every field's type and range, file names
// without directories, units that tile each rung file and each tensor
// exactly. Throws Error naming `source` on any fault.
Manifest parse_manifest(std::string_view json, std::string_view source);
// Deterministic: the same manifest always gives the same bytes.
std::string serialize_manifest(const Manifest& manifest);

}  // namespace bitinc
