// Packages: a model laid out as immutable static files that any web server
// can deliver — manifest.json, the topology (the ONNX graph without weight
// data), and one file of units per rung. docs/format.md specifies the
// manifest; the units are those of codec.hpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
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
inline constexpr int package_format_version = 6;
inline constexpr int mixed_precision_format_version = 4;
inline constexpr int exact_rung_format_version = 5;
// Format 6: a signed package's release (Manifest::release).
inline constexpr int release_format_version = 6;
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

// ---- building packages --------------------------------------------------

// Calibration of a package (issue 12): refinements in order of value and an
// accuracy point, measured on training images.
struct PackCalibration {
    // Fashion-MNIST IDX files; only the training split is read (the test
    // split judges what calibration decides).
    std::filesystem::path data_dir = "/usr/share/datasets/fashion-mnist";
    std::size_t images = 1000;  // the first N training images
    // Ranking tensors (one model per tensor) on the first M of them only
    // (0: all N): an order needs less precision than the accuracy point,
    // whose search keeps all N, and this is most of calibration's time.
    std::size_t sensitivity_images = 0;
    // The accuracy point is searched on the first K (0: all N; `pack` and
    // `eval` default to 5,000). Its top-1 must be right to a tenth of a
    // point, which 1,000 images cannot give: ResNet18's 4-bit base is within
    // 0.1 point of the 8-bit rung on the first 1,000 training images and
    // 0.68 point short on 5,000.
    std::size_t point_images = 0;
    double tolerance_points = 0.1;  // top-1 the accuracy point may lose to the top rung
    int engine_threads = 0;         // 0: all cores
};

// Mixed precision (issue 12): a byte budget for the base rung, met by
// giving each quantized tensor its own base bit depth, chosen by the loss
// its quantization costs on training images against its coded bytes.
struct PackBudget {
    std::uint64_t bytes = 0;  // the base rung's file at most this; 0: `ratio` decides
    // ... or at most this fraction of the direct top rung of the uniform
    // ladder (every tensor at the ladder's base), e.g. 0.2.
    double ratio = 0;
    // The base bit depths a tensor may get, each below the ladder's top.
    std::vector<int> candidate_bits{2, 3, 4, 5, 6, 7, 8};
    // The training images the sensitivity is measured on (data_dir, images,
    // engine_threads; the tolerance is unused).
    PackCalibration calibration;
    // Called after each candidate's sensitivity: (candidates done, in all).
    std::function<void(std::size_t, std::size_t)> progress;
};

// "800000", "800kB", "1.5MB", "2MiB" (bytes; k, M, G are powers of 1000,
// Ki, Mi, Gi of 1024) or "0.2x" (a ratio of the direct top rung) as a
// budget. Throws Error, one line, on anything else or on zero.
PackBudget parse_pack_budget(std::string_view text);

// What a budget chose: each quantized tensor's base bits and what it costs.
struct BitAllocation {
    std::uint64_t budget_bytes = 0;        // the base rung's allowance
    std::uint64_t reference_bytes = 0;     // the uniform ladder's direct top rung
    std::uint64_t base_bytes = 0;          // the chosen base rung's file
    std::uint64_t uniform_base_bytes = 0;  // the uniform ladder's base rung, for comparison
    double loss_increase = 0;              // summed measured cross-entropy increases
    std::vector<int> base_bits;            // by tensor index; 0: travels exactly
};

struct PackOptions {
    LadderPlan ladder;
    // Mixed precision: each tensor's base bit depth, by tensor index (0, or
    // an index past the end: the ladder's base); a tensor's later rungs are
    // max(its base, the ladder's rung). Set by `budget` when given.
    std::vector<int> base_bits;
    std::optional<PackBudget> budget;
    // Rungs (bit depths of the ladder) also stored whole, for devices that
    // download one model directly. Empty: the top rung.
    std::vector<int> direct_bits;
    std::uint64_t chunk_elements = std::uint64_t{1} << 20;
    // fast (rANS for every unit) or compact (the adaptive coder where it
    // codes smaller, slower to decode).
    CoderChoice coder_choice = CoderChoice::fast;
    int threads = 0;  // 0: all cores
    // Replace a package already at the output directory (never a directory
    // holding anything else); false: refuse any non-empty output.
    bool replace = false;
    // Called as units are coded: (units done, units in all).
    std::function<void(std::size_t, std::size_t)> progress;
    // Order refinements by value and name an accuracy point (needs the
    // model to run on the calibration images).
    std::optional<PackCalibration> calibration;
    // Sign the package (format 6): Release::number `release`, of model
    // `model_id` (empty: the model file's name), signed with the Ed25519
    // key in `private_key_pem` (bitinc/trust.hpp).
    struct Signing {
        std::string private_key_pem;
        std::string model_id;
        std::uint64_t release = 0;
    };
    std::optional<Signing> signing;
};

struct PackResult {
    Manifest manifest;
    double seconds = 0;
    // Coding time of each rung's units (summed over threads), in manifest order.
    std::vector<double> rung_encode_seconds;
    std::optional<BitAllocation> allocation;  // with PackOptions::budget
    // What a user should know about the package, e.g. that most of the
    // model's weights cannot travel incrementally, and why, or which tensors
    // bitinc could not code (they stay in the topology), by name.
    std::vector<std::string> warnings;
    // What is worth knowing but needs no action, e.g. how many
    // already-quantized tensors travel unchanged inside the topology.
    std::vector<std::string> notes;
};

// Packs the ONNX file at `model_path` into the directory `output`. The
// package is built beside `output` and moved into place only when complete;
// an existing non-empty `output` is replaced only with PackOptions::replace,
// and only if it holds nothing but a package's own files.
// The same input and options always give byte-identical files.
PackResult pack_model(const std::filesystem::path& model_path, const PackOptions& options,
                      const std::filesystem::path& output);

// Packs a set of weights with no graph of their own (a checkpoint, a
// PyTorch state_dict): model_of_weights(weights, model_name) written to a
// temporary ONNX file (removed afterwards), then pack_model.
PackResult pack_weights(std::vector<Tensor> weights, const PackOptions& options,
                        const std::filesystem::path& output,
                        const std::string& model_name = "weights");

// ---- assembling models from units ----------------------------------------

// The device's copy of a model while rungs arrive: every tensor chunk at
// the rung its latest unit brought. Units of different chunks may be applied
// from different threads at once; the same chunk's units must come in rung
// order.
class ModelAssembler {
  public:
    // `topology` must be the manifest's topology file (its SHA-256 is checked).
    ModelAssembler(Manifest manifest, std::string topology, std::string_view source);

    const Manifest& manifest() const { return manifest_; }

    // Checks `unit` against its manifest entry (length, SHA-256 — the check a
    // forger cannot pass —, CRC32C, header) and
    // decodes it into the model. A refinement unit needs its chunk at the
    // parent rung. Throws Error naming `source` on any fault, leaving the
    // model unchanged.
    void apply_unit(std::size_t rung_index, std::size_t unit_index,
                    std::span<const std::uint8_t> unit, std::string_view source);

    // The bit depth a unit of `rung_index` would find its chunk at (0: not
    // yet received; 32: an exact tensor).
    int chunk_bits(std::size_t rung_index, std::size_t unit_index) const;
    // True once every chunk of every tensor has arrived at some rung.
    bool complete() const;
    // The lowest bit depth among the quantized chunks.
    int lowest_bits() const;

    // The model as it stands; throws Error if a chunk has not arrived.
    // A whole float copy: write_model_file streams instead.
    Model model() const;
    // The same into `model`, reusing its weights' buffers when it is a copy
    // of topology() whose values are already sized (a device may allocate
    // them while the rung is still in flight); otherwise it starts from
    // topology().
    void fill_model(Model& model) const;
    // Values of tensor `tensor` from element `first` on, as model() would
    // give them; throws Error if a chunk of that range has not arrived.
    void read_values(std::size_t tensor, std::uint64_t first, std::span<float> out) const;
    // Frees a tensor's storage and forgets its units, for readers that
    // assemble one tensor at a time (unpack, verify).
    void release_tensor(std::size_t tensor);
    // The graph and metadata, with weight tensors named and shaped but empty.
    const Model& topology() const { return model_; }

  private:
    struct ChunkState {
        std::uint64_t first = 0;
        std::uint64_t count = 0;
        int bits = 0;
    };
    struct TensorState {
        std::vector<float> values;          // exact tensors
        std::vector<std::int32_t> indices;  // quantized tensors
        std::vector<float> steps;           // quantized: per channel, at steps_bits
        int steps_bits = 0;
        std::uint64_t channel_size = 0;
        std::uint64_t channels = 1;
        std::vector<ChunkState> chunks;
    };
    // Sizes a tensor's storage when its first unit arrives; under mutex_.
    void allocate_storage(std::size_t tensor_index);
    ChunkState& chunk_of(const UnitEntry& entry);
    const ChunkState& chunk_of(const UnitEntry& entry) const;

    Manifest manifest_;
    mutable std::mutex mutex_;  // guards chunk bits and steps
    Model model_;               // topology and tensor names/shapes; values filled by model()
    std::vector<TensorState> tensors_;
};

// Writes the assembler's model to `path` as write_onnx_file does, one block
// of values at a time (no float copy of the model).
bool write_model_file(const ModelAssembler& assembler, const std::filesystem::path& path,
                      bool external_data = false);

// ---- reading packages from a directory ------------------------------------

// Reads `directory`/manifest.json.
Manifest read_manifest(const std::filesystem::path& directory);

// Reads one file of the package in `directory`, checking its size against
// the manifest (its hash is the caller's business). Throws Error naming it.
std::string read_package_file(const std::filesystem::path& directory, const FileEntry& entry);

// Rebuilds the model of a package at `bits`: through the ladder (base plus
// refinements) by default, or from the direct rung at `bits` when `direct`.
Model unpack_package(const std::filesystem::path& directory, int bits, bool direct);

// The same, written to `output` (write_onnx_file's rules) one tensor at a
// time: memory holds one tensor, never the model. Returns true when it wrote
// external data.
bool unpack_package_to_file(const std::filesystem::path& directory, int bits, bool direct,
                            const std::filesystem::path& output, bool external_data = false);

struct VerifyReport {
    std::size_t files = 0;
    std::size_t units = 0;
    std::uint64_t bytes = 0;
    // Problems found, one line each; empty when the package is sound.
    std::vector<std::string> problems;
};

// Checks every file's size and SHA-256, every unit's CRC and header, decodes
// every rung and confirms that the ladder's top equals each direct rung of
// the same bits.
VerifyReport verify_package(const std::filesystem::path& directory,
                            const std::function<void(std::size_t, std::size_t)>& progress = {});

}  // namespace bitinc
