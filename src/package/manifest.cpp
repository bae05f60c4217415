// manifest.json: reading with every field checked, and deterministic writing.
#include <algorithm>
#include <bit>
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>

#include "bitinc/codec.hpp"
#include "bitinc/error.hpp"
#include "bitinc/manifest.hpp"
#include "core/checked_index.hpp"
#include "core/sha256.hpp"

namespace bitinc {

namespace {

using Json = nlohmann::ordered_json;

constexpr std::string_view format_name = "bitinc-package";
constexpr std::size_t max_tensors = 1'000'000;
constexpr std::size_t max_rungs = 64;
constexpr std::size_t max_name_bytes = 4096;
// The smallest unit: a header, one exact float and the CRC.

class ManifestReader {
  public:
    explicit ManifestReader(std::string_view source) : source_(source) {}

    [[noreturn]] void fail(const std::string& what,
                           ErrorCode code = ErrorCode::corrupt_data) const {
        throw Error(code, std::string(source_) + ": " + what);
    }

    const Json& field(const Json& object, const char* name, const std::string& where) const {
        if (!object.is_object()) fail(where + " is not an object");
        const auto found = object.find(name);
        if (found == object.end()) fail(where + " has no '" + name + "'");
        return *found;
    }

    std::uint64_t number(const Json& object, const char* name, const std::string& where,
                         std::uint64_t max) const {
        const Json& value = field(object, name, where);
        if (!value.is_number_unsigned()) {
            fail(where + "." + name + " is not a non-negative integer");
        }
        const std::uint64_t result = value.get<std::uint64_t>();
        if (result > max) fail(where + "." + name + " is out of range");
        return result;
    }

    // A finite JSON number (integer or not).
    double real(const Json& object, const char* name, const std::string& where) const {
        const Json& value = field(object, name, where);
        if (!value.is_number() || !std::isfinite(value.get<double>())) {
            fail(where + "." + name + " is not a finite number");
        }
        return value.get<double>();
    }

    std::string text(const Json& object, const char* name, const std::string& where) const {
        const Json& value = field(object, name, where);
        if (!value.is_string()) fail(where + "." + name + " is not a string");
        std::string result = value.get<std::string>();
        if (result.size() > max_name_bytes) fail(where + "." + name + " is too long");
        return result;
    }

    std::string hash(const Json& object, const char* name, const std::string& where) const {
        std::string result = text(object, name, where);
        if (!is_sha256_hex(result)) fail(where + "." + name + " is not a SHA-256 in hex");
        return result;
    }

    static bool is_sha256_hex(const std::string& text) {
        return text.size() == 64 && std::all_of(text.begin(), text.end(), [](char c) {
                   return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
               });
    }

    FileEntry file(const Json& object, const std::string& where) const {
        FileEntry entry;
        entry.file = text(object, "file", where);
        const bool plain = !entry.file.empty() && entry.file.size() <= 255 &&
                           entry.file.front() != '.' &&
                           std::all_of(entry.file.begin(), entry.file.end(), [](char c) {
                               return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                      (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
                           });
        if (!plain) fail(where + ".file '" + entry.file + "' is not a plain file name");
        entry.bytes = number(object, "bytes", where, max_onnx_bytes * 4);
        entry.sha256 = hash(object, "sha256", where);
        return entry;
    }

    const Json& array(const Json& object, const char* name, const std::string& where,
                      std::size_t max) const {
        const Json& value = field(object, name, where);
        if (!value.is_array()) fail(where + "." + name + " is not an array");
        if (value.size() > max) fail(where + "." + name + " has too many entries");
        return value;
    }

  private:
    std::string_view source_;
};

std::uint64_t element_count_of(const std::vector<std::int64_t>& shape) {
    std::uint64_t count = 1;
    for (const std::int64_t dim : shape) {
        if (dim < 0) return max_tensor_elements + 1;
        if (dim != 0 && count > max_tensor_elements / std::uint64_t(dim))
            return max_tensor_elements + 1;
        count *= std::uint64_t(dim);
    }
    return count;
}

// One unit entry: six integers and the unit's SHA-256.
UnitEntry parse_unit(const ManifestReader& reader, const Json& unit, const std::string& where,
                     std::uint64_t file_bytes) {
    if (!unit.is_array() || unit.size() != 7 ||
        !std::all_of(unit.begin(), unit.begin() + 6,
                     [](const Json& v) { return v.is_number_unsigned(); }) ||
        !unit[6].is_string() ||
        !ManifestReader::is_sha256_hex(unit[6].get_ref<const std::string&>())) {
        reader.fail(where + ": a unit is not six non-negative integers and a SHA-256 in hex");
    }
    const auto value = [&](std::size_t i, std::uint64_t max) {
        const std::uint64_t v = unit[i].get<std::uint64_t>();
        if (v > max) reader.fail(where + ": a unit field is out of range");
        return v;
    };
    UnitEntry entry;
    entry.tensor = std::uint32_t(value(0, max_tensors));
    entry.first = value(1, max_tensor_elements);
    entry.count = value(2, max_tensor_elements);
    entry.offset = value(3, file_bytes);
    entry.length = std::uint32_t(value(4, 0xFFFFFFFFu));
    entry.crc32c = std::uint32_t(value(5, 0xFFFFFFFFu));
    entry.sha256 = unit[6].get<std::string>();
    return entry;
}

// Checks that units lie back to back in their file from `offset`, that
// they carry only the tensors `may_carry` allows and all of each tensor
// `must_carry` names (or of a tensor they carry at all), in contiguous
// chunks whose boundaries agree with the base rung's (a refinement unit
// refines exactly one earlier unit).
template <typename MayCarry, typename MustCarry>
void check_unit_layout(const ManifestReader& reader, const Manifest& manifest,
                       const std::vector<UnitEntry>& units, std::uint64_t offset,
                       std::uint64_t file_bytes, MayCarry may_carry, MustCarry must_carry,
                       const RungEntry* base, const std::string& where) {
    if (offset > file_bytes) reader.fail(where + " is shorter than the topology it begins with");
    std::vector<std::uint64_t> covered(manifest.tensors.size(), 0);
    for (std::size_t i = 0; i < units.size(); ++i) {
        const UnitEntry& unit = units[i];
        const std::string unit_where = where + ".units[" + std::to_string(i) + "]";
        if (unit.tensor >= manifest.tensors.size()) reader.fail(unit_where + " names no tensor");
        const TensorEntry& tensor = manifest.tensors[unit.tensor];
        if (!may_carry(unit.tensor)) {
            reader.fail(unit_where + " refines tensor '" + tensor.name + "', which " +
                        (tensor.quantized ? "keeps its bits at this rung" : "travels exactly"));
        }
        if (unit.offset != offset) reader.fail(unit_where + " does not follow the unit before it");
        if (unit.first != covered[unit.tensor] || unit.count == 0 ||
            unit.count > tensor.element_count() - unit.first || unit.count > max_unit_elements) {
            reader.fail(unit_where + " does not continue tensor '" + tensor.name + "'");
        }
        if (unit.length < smallest_unit_bytes)
            reader.fail(unit_where + " is too short to be a unit");
        covered[unit.tensor] += unit.count;
        offset += unit.length;
        if (offset > file_bytes) reader.fail(unit_where + " runs past the end of its file");
    }
    if (offset != file_bytes) reader.fail(where + ": units do not fill the file");
    for (std::size_t t = 0; t < manifest.tensors.size(); ++t) {
        const TensorEntry& tensor = manifest.tensors[t];
        const bool whole = must_carry(t) || covered[t] > 0;
        // An empty tensor still travels as no unit at all.
        if (covered[t] != (whole ? tensor.element_count() : 0))
            reader.fail(where + " does not carry all of tensor '" + tensor.name + "'");
    }
    if (base == nullptr) return;
    // Chunk boundaries must match the base rung's.
    std::vector<std::vector<std::uint64_t>> base_firsts(manifest.tensors.size());
    for (const UnitEntry& unit : base->units) base_firsts[unit.tensor].push_back(unit.first);
    std::vector<std::vector<std::uint64_t>> firsts(manifest.tensors.size());
    for (const UnitEntry& unit : units) firsts[unit.tensor].push_back(unit.first);
    for (std::size_t t = 0; t < manifest.tensors.size(); ++t) {
        if (!firsts[t].empty() && firsts[t] != base_firsts[t]) {
            reader.fail(where + ": chunks of tensor '" + manifest.tensors[t].name +
                        "' differ from the base rung's");
        }
    }
}

void check_units(const ManifestReader& reader, const Manifest& manifest, const RungEntry& rung,
                 const RungEntry* base, const std::string& where) {
    const auto carries = [&](std::size_t t) { return manifest.carries(rung, t); };
    check_unit_layout(reader, manifest, rung.units, manifest.first_unit_offset(rung),
                      rung.data.bytes, carries, carries, base, where);
}

// A delta carries every quantized tensor, and exact ones that changed.
void check_delta_units(const ManifestReader& reader, const Manifest& manifest,
                       const DeltaEntry& delta, const std::string& where) {
    check_unit_layout(
        reader, manifest, delta.units, 0, delta.data.bytes, [](std::size_t) { return true; },
        [&](std::size_t t) { return manifest.tensors[t].quantized; }, &manifest.rungs.front(),
        where);
}

}  // namespace

std::string unit_sha256(std::span<const std::uint8_t> unit) {
    return core::sha256_hex(
        std::string_view(reinterpret_cast<const char*>(unit.data()), unit.size()));
}

std::string model_weights_sha256(const Model& model) {
    core::Sha256 hash;
    std::string little;  // little-endian bytes, a block of values at a time
    const auto put = [&](std::uint64_t value, int bytes) {
        for (int i = 0; i < bytes; ++i) little.push_back(char(std::uint8_t(value >> (8 * i))));
    };
    for (const Tensor& tensor : model.weights) {
        put(tensor.name.size(), 4);
        little += tensor.name;
        put(tensor.values.size(), 8);
        for (const float value : tensor.values) {
            put(std::bit_cast<std::uint32_t>(value), 4);
            if (little.size() >= 1 << 16) {
                hash.update(little);
                little.clear();
            }
        }
    }
    hash.update(little);
    return hash.finish_hex();
}

std::string_view rung_kind_name(RungKind kind) {
    switch (kind) {
        case RungKind::base:
            return "base";
        case RungKind::refinement:
            return "refinement";
        case RungKind::direct:
            return "direct";
        case RungKind::exact:
            return "exact";
    }
    return "unknown";
}

std::uint64_t TensorEntry::element_count() const {
    return element_count_of(shape);
}

const RungEntry* Manifest::find_rung(RungKind kind, int bits) const {
    for (const RungEntry& rung : rungs) {
        if (rung.kind == kind && rung.bits == bits) return &rung;
    }
    return nullptr;
}

int Manifest::tensor_bits(std::size_t tensor, std::size_t ladder_rung) const {
    const std::vector<int>& own = core::checked_at(tensors, tensor, "tensor").bits;
    return core::checked_at(own.empty() ? ladder.bits : own, ladder_rung, "ladder rung");
}

namespace {

// The position in the ladder of a base or refinement rung, or of the ladder
// rung a direct rung repeats.
std::size_t ladder_position(const Manifest& manifest, const RungEntry& rung) {
    const std::vector<int>& bits = manifest.ladder.bits;
    return std::size_t(std::find(bits.begin(), bits.end(), rung.bits) - bits.begin());
}

}  // namespace

int Manifest::unit_bits(const RungEntry& rung, std::size_t tensor) const {
    if (rung.kind == RungKind::exact) return exact_rung_bits;
    return tensor_bits(tensor, ladder_position(*this, rung));
}

int Manifest::unit_parent_bits(const RungEntry& rung, std::size_t tensor) const {
    // Every tensor's bits end at the ladder's top, which the exact rung
    // builds on.
    if (rung.kind == RungKind::exact) return ladder.top_bits();
    if (rung.kind != RungKind::refinement) return 0;
    return tensor_bits(tensor, ladder_position(*this, rung) - 1);
}

bool Manifest::carries(const RungEntry& rung, std::size_t tensor) const {
    switch (rung.kind) {
        case RungKind::refinement:
            return refines(rung, tensor);
        case RungKind::exact:
            return core::checked_at(tensors, tensor, "tensor").quantized;
        default:
            return true;
    }
}

const RungEntry* Manifest::exact_rung() const {
    for (const RungEntry& rung : rungs)
        if (rung.kind == RungKind::exact) return &rung;
    return nullptr;
}

bool Manifest::refines(const RungEntry& rung, std::size_t tensor) const {
    if (rung.kind != RungKind::refinement || !core::checked_at(tensors, tensor, "tensor").quantized)
        return false;
    const std::size_t position = ladder_position(*this, rung);
    return position > 0 && position < ladder.bits.size() &&
           tensor_bits(tensor, position) > tensor_bits(tensor, position - 1);
}

LadderPlan Manifest::tensor_ladder(std::size_t tensor) const {
    const std::vector<int>& own = core::checked_at(tensors, tensor, "tensor").bits;
    return own.empty() ? ladder : ladder.with_rung_bits(own);
}

bool Manifest::mixed() const {
    return std::any_of(tensors.begin(), tensors.end(),
                       [](const TensorEntry& tensor) { return !tensor.bits.empty(); });
}

std::vector<const RungEntry*> Manifest::ladder_rungs(int until_bits) const {
    std::vector<const RungEntry*> result;
    for (const RungEntry& rung : rungs) {
        if (rung.kind != RungKind::direct && rung.bits <= until_bits) result.push_back(&rung);
    }
    return result;
}

Manifest parse_manifest(std::string_view text, std::string_view source) {
    const ManifestReader reader(source);
    if (text.size() > max_manifest_bytes) {
        reader.fail("the manifest is larger than " + std::to_string(max_manifest_bytes >> 20) +
                    " MiB");
    }
    // Nesting is refused as the parser meets it, before a deep document
    // costs time and memory (a manifest is 4 levels deep).
    struct TooDeep {};
    const auto limit_depth = [](int depth, nlohmann::json::parse_event_t, Json&) {
        if (depth > max_manifest_depth) throw TooDeep{};
        return true;
    };
    Json json;
    try {
        json = Json::parse(text.begin(), text.end(), limit_depth, false);
    } catch (const TooDeep&) {
        reader.fail("the manifest nests JSON deeper than " + std::to_string(max_manifest_depth) +
                    " levels");
    }
    if (json.is_discarded()) reader.fail("not a JSON manifest, or it is truncated");
    if (!json.is_object()) reader.fail("the manifest is not a JSON object");
    if (reader.text(json, "format", "manifest") != format_name) {
        reader.fail("not a bitinc package manifest");
    }
    Manifest manifest;
    manifest.format_version = int(reader.number(json, "format_version", "manifest", 1'000'000));
    if (manifest.format_version < oldest_package_format_version) {
        reader.fail("the package was made by an older bitinc (format " +
                        std::to_string(manifest.format_version) + "); re-pack it with this version",
                    ErrorCode::unsupported);
    }
    if (manifest.format_version > package_format_version) {
        reader.fail("package format version " + std::to_string(manifest.format_version) +
                        " is not supported (this bitinc reads versions " +
                        std::to_string(oldest_package_format_version) + " to " +
                        std::to_string(package_format_version) + "); update bitinc",
                    ErrorCode::unsupported);
    }
    manifest.generator = reader.text(json, "generator", "manifest");

    const Json& model = reader.field(json, "model", "manifest");
    manifest.model_name = reader.text(model, "name", "model");
    manifest.source_sha256 = reader.hash(model, "source_sha256", "model");
    manifest.source_bytes = reader.number(model, "source_bytes", "model", max_onnx_bytes);
    manifest.parameters = reader.number(model, "parameters", "model", max_onnx_bytes);
    manifest.float32_bytes = reader.number(model, "float32_bytes", "model", 4 * max_onnx_bytes);
    manifest.topology = reader.file(reader.field(json, "topology", "manifest"), "topology");
    if (manifest.topology.bytes > max_onnx_bytes) reader.fail("topology is too large");
    if (manifest.topology.bytes == 0) reader.fail("topology is empty");

    const Json& ladder = reader.field(json, "ladder", "manifest");
    const Json& bits = reader.array(ladder, "bits", "ladder", max_ladder_bits);
    if (bits.empty()) reader.fail("ladder.bits is empty");
    for (const Json& value : bits) {
        if (!value.is_number_integer() || value.get<long long>() < min_ladder_bits ||
            value.get<long long>() > max_ladder_bits ||
            (!manifest.ladder.bits.empty() &&
             value.get<long long>() <= manifest.ladder.bits.back())) {
            reader.fail("ladder.bits must be increasing bit depths from 2 to 32");
        }
        manifest.ladder.bits.push_back(value.get<int>());
    }
    const Json& per_channel = reader.field(ladder, "per_channel", "ladder");
    if (!per_channel.is_boolean()) reader.fail("ladder.per_channel is not true or false");
    manifest.ladder.per_channel = per_channel.get<bool>();
    manifest.ladder.min_quantized_elements =
        reader.number(ladder, "min_quantized_elements", "ladder", max_tensor_elements);
    manifest.chunk_elements = reader.number(ladder, "chunk_elements", "ladder", max_unit_elements);
    if (manifest.chunk_elements == 0) reader.fail("ladder.chunk_elements is 0");

    std::uint64_t parameters = 0;
    for (const Json& item : reader.array(json, "tensors", "manifest", max_tensors)) {
        const std::string where = "tensors[" + std::to_string(manifest.tensors.size()) + "]";
        TensorEntry tensor;
        tensor.name = reader.text(item, "name", where);
        for (const Json& dim : reader.array(item, "shape", where, 64)) {
            if (!dim.is_number_integer() || dim.get<long long>() < 0) {
                reader.fail(where + ".shape holds something other than a size");
            }
            tensor.shape.push_back(dim.get<std::int64_t>());
        }
        if (tensor.element_count() > max_tensor_elements) reader.fail(where + " is too large");
        const std::string stored = reader.text(item, "stored_as", where);
        if (const std::optional<StoredType> type = stored_type_from_name(stored)) {
            tensor.stored_as = *type;
        } else {
            reader.fail(where + ".stored_as '" + stored +
                        "' is not float32, float16, bfloat16 or float64 (a newer bitinc may "
                        "read it)");
        }
        const Json& quantized = reader.field(item, "quantized", where);
        if (!quantized.is_boolean()) reader.fail(where + ".quantized is not true or false");
        tensor.quantized = quantized.get<bool>();
        if (item.is_object() && item.contains("bits")) {
            // Mixed precision (format 4): the tensor's bits at each rung.
            if (manifest.format_version < mixed_precision_format_version) {
                reader.fail(where + ".bits: per-tensor bit depths need package format 4");
            }
            if (!tensor.quantized) reader.fail(where + ".bits: the tensor travels exactly");
            const std::vector<int>& ladder_bits = manifest.ladder.bits;
            for (const Json& value : reader.array(item, "bits", where, max_ladder_bits)) {
                if (!value.is_number_integer() || value.get<long long>() < min_ladder_bits ||
                    value.get<long long>() > max_ladder_bits ||
                    (!tensor.bits.empty() && value.get<long long>() < tensor.bits.back())) {
                    reader.fail(where + ".bits must be non-decreasing bit depths from 2 to 32");
                }
                tensor.bits.push_back(value.get<int>());
            }
            if (tensor.bits.size() != ladder_bits.size() ||
                tensor.bits.back() != ladder_bits.back()) {
                reader.fail(where + ".bits must give one bit depth per ladder rung, ending at " +
                            std::to_string(ladder_bits.back()));
            }
        }
        parameters += tensor.element_count();
        if (parameters > max_onnx_bytes) reader.fail("the tensors hold too many weights");
        manifest.tensors.push_back(std::move(tensor));
    }
    if (parameters != manifest.parameters)
        reader.fail("model.parameters does not match the tensors");

    for (const Json& item : reader.array(json, "rungs", "manifest", max_rungs)) {
        const std::string where = "rungs[" + std::to_string(manifest.rungs.size()) + "]";
        RungEntry rung;
        const std::string kind = reader.text(item, "kind", where);
        if (kind == "base") {
            rung.kind = RungKind::base;
        } else if (kind == "refinement") {
            rung.kind = RungKind::refinement;
        } else if (kind == "direct") {
            rung.kind = RungKind::direct;
        } else if (kind == "exact" && manifest.format_version >= exact_rung_format_version) {
            rung.kind = RungKind::exact;
        } else {
            reader.fail(where + ".kind '" + kind + "' is not base, refinement" +
                        (manifest.format_version >= exact_rung_format_version ? ", exact" : "") +
                        " or direct");
        }
        rung.bits = int(reader.number(item, "bits", where, max_ladder_bits));
        rung.parent_bits = int(reader.number(item, "parent_bits", where, max_ladder_bits));
        rung.data = reader.file(item, where);
        // Each unit is at least smallest_unit_bytes, which bounds the unit count
        // by the file size before anything is allocated.
        const Json& units =
            reader.array(item, "units", where, std::size_t(rung.data.bytes / smallest_unit_bytes));
        rung.units.reserve(units.size());
        for (const Json& unit : units)
            rung.units.push_back(parse_unit(reader, unit, where, rung.data.bytes));
        manifest.rungs.push_back(std::move(rung));
    }

    // The ladder's rungs come first, in order; direct rungs repeat ladder bits.
    const std::vector<int>& ladder_bits = manifest.ladder.bits;
    if (manifest.rungs.size() < ladder_bits.size()) reader.fail("the manifest lacks ladder rungs");
    std::vector<std::string> files{manifest.topology.file, std::string(manifest_file_name)};
    for (std::size_t i = 0; i < manifest.rungs.size(); ++i) {
        const RungEntry& rung = manifest.rungs[i];
        const std::string where = "rungs[" + std::to_string(i) + "]";
        if (i < ladder_bits.size()) {
            const RungKind expected = i == 0 ? RungKind::base : RungKind::refinement;
            const int parent = i == 0 ? 0 : ladder_bits[i - 1];
            if (rung.kind != expected || rung.bits != ladder_bits[i] ||
                rung.parent_bits != parent) {
                reader.fail(where + " is not the ladder's rung " + std::to_string(ladder_bits[i]));
            }
        } else if (rung.kind == RungKind::exact) {
            // Right after the ladder, once, on a top below 32 bits; it gives
            // back the source weights, which float64 ones (rounded to f32
            // on their way in) cannot be.
            if (i != ladder_bits.size() || rung.bits != exact_rung_bits ||
                rung.parent_bits != ladder_bits.back() || ladder_bits.back() >= exact_rung_bits) {
                reader.fail(where + " is not an exact rung on the ladder's top");
            }
            for (const TensorEntry& tensor : manifest.tensors) {
                if (tensor.stored_as == StoredType::float64) {
                    reader.fail("tensor '" + tensor.name +
                                "' is float64, which an exact rung cannot give back");
                }
            }
            manifest.ladder.exact_top = true;
        } else {
            const bool in_ladder =
                std::find(ladder_bits.begin(), ladder_bits.end(), rung.bits) != ladder_bits.end();
            if (rung.kind != RungKind::direct || !in_ladder || rung.parent_bits != 0 ||
                std::count_if(manifest.rungs.begin(), manifest.rungs.begin() + std::ptrdiff_t(i),
                              [&](const RungEntry& other) {
                                  return other.kind == RungKind::direct && other.bits == rung.bits;
                              }) > 0) {
                reader.fail(where + " is not a direct rung at one of the ladder's bit depths");
            }
        }
        if (std::find(files.begin(), files.end(), rung.data.file) != files.end()) {
            reader.fail(where + " reuses the file name '" + rung.data.file + "'");
        }
        files.push_back(rung.data.file);
        check_units(reader, manifest, rung, i == 0 ? nullptr : &manifest.rungs[0], where);
    }
    if (json.contains("accuracy_point")) {
        const Json& point = json["accuracy_point"];
        const std::string where = "accuracy_point";
        AccuracyPoint parsed;
        parsed.rung = std::size_t(reader.number(point, "rung", where, max_rungs));
        parsed.units = std::size_t(reader.number(point, "units", where, max_tensor_elements));
        parsed.metric = reader.text(point, "metric", where);
        parsed.calibration_images =
            reader.number(point, "calibration_images", where, max_tensor_elements);
        parsed.value = reader.real(point, "value", where);
        parsed.top_value = reader.real(point, "top_value", where);
        parsed.tolerance = reader.real(point, "tolerance", where);
        if (parsed.rung >= manifest.rungs.size() ||
            manifest.rungs[parsed.rung].kind != RungKind::refinement) {
            reader.fail("accuracy_point.rung is not a refinement rung");
        }
        if (parsed.units > manifest.rungs[parsed.rung].units.size()) {
            reader.fail("accuracy_point.units is not a count of that rung's units");
        }
        manifest.accuracy_point = std::move(parsed);
    }
    if (json.contains("deltas")) {
        if (manifest.format_version < delta_format_version)
            reader.fail("deltas need package format " + std::to_string(delta_format_version));
        for (const Json& item : reader.array(json, "deltas", "manifest", max_rungs)) {
            const std::string where = "deltas[" + std::to_string(manifest.deltas.size()) + "]";
            DeltaEntry delta;
            delta.bits = int(reader.number(item, "bits", where, max_difference_bits));
            if (std::find(ladder_bits.begin(), ladder_bits.end(), delta.bits) == ladder_bits.end())
                reader.fail(where + ".bits is not one of the ladder's quantized bit depths");
            const Json& from = reader.field(item, "from", where);
            delta.from.weights_sha256 = reader.hash(from, "weights_sha256", where + ".from");
            delta.from.source_sha256 = reader.hash(from, "source_sha256", where + ".from");
            delta.from.release =
                reader.number(from, "release", where + ".from", max_release_number);
            delta.data = reader.file(item, where);
            if (std::find(files.begin(), files.end(), delta.data.file) != files.end())
                reader.fail(where + " reuses the file name '" + delta.data.file + "'");
            files.push_back(delta.data.file);
            const Json& units = reader.array(item, "units", where,
                                             std::size_t(delta.data.bytes / smallest_unit_bytes));
            delta.units.reserve(units.size());
            for (const Json& unit : units)
                delta.units.push_back(parse_unit(reader, unit, where, delta.data.bytes));
            check_delta_units(reader, manifest, delta, where);
            manifest.deltas.push_back(std::move(delta));
        }
    }
    // Format 6 is a signed package's; from format 7 on a release is there
    // when the package is signed (a device that trusts a key requires it).
    if (json.contains("release") || manifest.format_version == release_format_version) {
        if (manifest.format_version < release_format_version)
            reader.fail("release needs package format " + std::to_string(release_format_version));
        const Json& release = reader.field(json, "release", "manifest");
        Release parsed;
        parsed.model_id = reader.text(release, "model_id", "release");
        if (parsed.model_id.empty()) reader.fail("release.model_id is empty");
        parsed.number = reader.number(release, "number", "release", max_release_number);
        manifest.release = std::move(parsed);
    }
    return manifest;
}

FetchPlan plan_fetch(const Manifest& manifest, bool direct, int until_bits,
                     bool until_accuracy_point, std::string_view where) {
    const AccuracyPoint* point = nullptr;
    if (until_accuracy_point) {
        if (direct)
            throw Error(ErrorCode::invalid_argument,
                        "the accuracy point is a place in the ladder: fetch it incrementally");
        if (!manifest.accuracy_point) {
            throw Error(ErrorCode::invalid_argument,
                        std::string(where) +
                            ": the package names no accuracy point (pack it with calibration)");
        }
        point = &*manifest.accuracy_point;
    }
    // By default the ladder's last rung (the exact one where there is one);
    // direct rungs are quantized, the top one by default.
    FetchPlan plan;
    plan.at_accuracy_point = point != nullptr;
    plan.target_bits = point            ? manifest.rungs[point->rung].bits
                       : until_bits > 0 ? until_bits
                       : direct         ? manifest.ladder.top_bits()
                                        : manifest.last_rung_bits();
    std::vector<const RungEntry*> rungs;
    if (direct) {
        const RungEntry* rung = manifest.find_rung(RungKind::direct, plan.target_bits);
        if (rung == nullptr) {
            throw Error(ErrorCode::invalid_argument,
                        std::string(where) + ": the package has no direct rung of " +
                            std::to_string(plan.target_bits) + " bits");
        }
        rungs.push_back(rung);
    } else {
        rungs = manifest.ladder_rungs(plan.target_bits);
        if (rungs.empty() || rungs.back()->bits != plan.target_bits) {
            throw Error(ErrorCode::invalid_argument,
                        std::string(where) + ": the ladder has no rung of " +
                            std::to_string(plan.target_bits) + " bits");
        }
    }
    for (const RungEntry* rung : rungs) {
        const bool at_point = point && manifest.rung_index(*rung) == point->rung;
        plan.parts.push_back({rung, at_point ? manifest.accuracy_point_bytes() : rung->data.bytes,
                              at_point ? point->units : rung->units.size()});
    }
    return plan;
}

std::uint64_t Manifest::accuracy_point_bytes() const {
    if (!accuracy_point) return 0;
    const RungEntry& rung = core::checked_at(rungs, accuracy_point->rung, "accuracy point rung");
    if (accuracy_point->units == 0) return first_unit_offset(rung);
    const UnitEntry& last = core::checked_at(rung.units, accuracy_point->units - 1, "unit");
    return last.offset + last.length;
}

namespace {

Json unit_array(const std::vector<UnitEntry>& units) {
    Json array = Json::array();
    for (const UnitEntry& unit : units) {
        array.push_back(Json::array({unit.tensor, unit.first, unit.count, unit.offset, unit.length,
                                     unit.crc32c, unit.sha256}));
    }
    return array;
}

}  // namespace

std::string serialize_manifest(const Manifest& manifest) {
    const auto file = [](const FileEntry& entry) {
        return Json{{"file", entry.file}, {"bytes", entry.bytes}, {"sha256", entry.sha256}};
    };
    Json json;
    json["format"] = format_name;
    json["format_version"] = manifest.format_version;
    json["generator"] = manifest.generator;
    json["model"] = Json{{"name", manifest.model_name},
                         {"source_sha256", manifest.source_sha256},
                         {"source_bytes", manifest.source_bytes},
                         {"parameters", manifest.parameters},
                         {"float32_bytes", manifest.float32_bytes}};
    json["topology"] = file(manifest.topology);
    json["ladder"] = Json{{"bits", manifest.ladder.bits},
                          {"per_channel", manifest.ladder.per_channel},
                          {"min_quantized_elements", manifest.ladder.min_quantized_elements},
                          {"chunk_elements", manifest.chunk_elements}};
    Json tensors = Json::array();
    for (const TensorEntry& tensor : manifest.tensors) {
        Json entry{{"name", tensor.name},
                   {"shape", tensor.shape},
                   {"stored_as", stored_type_name(tensor.stored_as)},
                   {"quantized", tensor.quantized}};
        if (!tensor.bits.empty()) entry["bits"] = tensor.bits;
        tensors.push_back(std::move(entry));
    }
    json["tensors"] = std::move(tensors);
    Json rungs = Json::array();
    for (const RungEntry& rung : manifest.rungs) {
        Json entry = file(rung.data);
        Json units = unit_array(rung.units);
        Json item{{"kind", rung_kind_name(rung.kind)},
                  {"bits", rung.bits},
                  {"parent_bits", rung.parent_bits}};
        for (auto& [key, value] : entry.items()) item[key] = value;
        item["units"] = std::move(units);
        rungs.push_back(std::move(item));
    }
    json["rungs"] = std::move(rungs);
    if (const auto& point = manifest.accuracy_point) {
        json["accuracy_point"] =
            Json{{"rung", point->rung},          {"units", point->units},
                 {"metric", point->metric},      {"calibration_images", point->calibration_images},
                 {"value", point->value},        {"top_value", point->top_value},
                 {"tolerance", point->tolerance}};
    }
    if (const auto& release = manifest.release)
        json["release"] = Json{{"model_id", release->model_id}, {"number", release->number}};
    if (!manifest.deltas.empty()) {
        Json deltas = Json::array();
        for (const DeltaEntry& delta : manifest.deltas) {
            Json item = file(delta.data);
            item["bits"] = delta.bits;
            item["from"] = Json{{"weights_sha256", delta.from.weights_sha256},
                                {"source_sha256", delta.from.source_sha256},
                                {"release", delta.from.release}};
            item["units"] = unit_array(delta.units);
            deltas.push_back(std::move(item));
        }
        json["deltas"] = std::move(deltas);
    }
    return json.dump() + "\n";
}

}  // namespace bitinc
