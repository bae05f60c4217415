// Reading and writing ONNX files one weight at a time, so that no whole
// copy of a model's weights is ever needed: the reader walks the protobuf
// wire format itself to find where each weight's bytes are (in the file or
// in an external-data file) and hands protobuf only the small rest; the
// writer splices each weight's bytes into the deterministic serialization
// of the topology as they are produced.
#include <google/protobuf/io/coded_stream.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>
#include <variant>

#include "bitinc/error.hpp"
#include "bitinc/model.hpp"
#include "core/checked_index.hpp"
#include "core/decimal.hpp"
#include "core/file_io.hpp"
#include "onnx/proto_io.hpp"

namespace bitinc {

namespace {

namespace fs = std::filesystem;
using onnx::TensorProto;

// ---- the protobuf wire format ---------------------------------------------

enum WireType : std::uint32_t { varint = 0, fixed64 = 1, length_delimited = 2, fixed32 = 5 };

// Field numbers bitinc's reader and writer look at.
constexpr std::uint32_t model_graph_field = 7;
constexpr std::uint32_t graph_node_field = 1;
constexpr std::uint32_t graph_initializer_field = 5;
constexpr std::uint32_t node_attribute_field = 5;
constexpr std::uint32_t attribute_tensor_field = 5;
constexpr std::uint32_t tensor_data_type_field = 2;
constexpr std::uint32_t tensor_float_data_field = 4;
constexpr std::uint32_t tensor_int32_data_field = 5;
constexpr std::uint32_t tensor_raw_data_field = 9;
constexpr std::uint32_t tensor_double_data_field = 10;

// Bytes to read from somewhere: a file (positioned reads) or memory.
class ByteSource {
  public:
    explicit ByteSource(std::string_view memory) : memory_(memory), size_(memory.size()) {}
    explicit ByteSource(core::ReadableFile file) : file_(std::move(file)), size_(file_->size()) {}

    std::uint64_t size() const { return size_; }
    void read(std::uint64_t offset, void* out, std::size_t length) const {
        if (file_) {
            file_->read_at(offset, out, length);
        } else if (length > 0) {
            std::memcpy(out, memory_.data() + offset, length);
        }
    }
    std::string read_string(std::uint64_t offset, std::uint64_t length) const {
        std::string bytes(static_cast<std::size_t>(length), '\0');
        read(offset, bytes.data(), bytes.size());
        return bytes;
    }

  private:
    std::string_view memory_;
    std::optional<core::ReadableFile> file_;
    std::uint64_t size_ = 0;
};

// Thrown inside the scanner; turned into one Error naming the file.
struct Malformed {};

// Reads varints and field headers from a ByteSource through a small window,
// so that walking a large file costs a few reads per field, not per byte.
class WireCursor {
  public:
    WireCursor(const ByteSource& source, std::uint64_t begin, std::uint64_t end)
        : source_(source), position_(begin), end_(end) {}

    bool at_end() const { return position_ >= end_; }
    std::uint64_t position() const { return position_; }

    std::uint64_t read_varint() {
        std::uint64_t value = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (position_ >= end_) throw Malformed{};
            const std::uint8_t byte = byte_at(position_++);
            value |= std::uint64_t(byte & 0x7F) << shift;
            if ((byte & 0x80) == 0) return value;
        }
        throw Malformed{};
    }

    struct Field {
        std::uint32_t number = 0;
        std::uint32_t wire_type = 0;
        std::uint64_t start = 0;          // of the tag
        std::uint64_t end = 0;            // one past the field
        std::uint64_t payload_start = 0;  // length-delimited: the bytes after the length
        std::uint64_t value = 0;          // varint fields
    };

    Field next_field() {
        Field field;
        field.start = position_;
        const std::uint64_t tag = read_varint();
        field.number = static_cast<std::uint32_t>(tag >> 3);
        field.wire_type = static_cast<std::uint32_t>(tag & 7);
        if (field.number == 0 || (tag >> 3) > 0x1FFFFFFF) throw Malformed{};
        switch (field.wire_type) {
            case varint:
                field.value = read_varint();
                break;
            case fixed64:
                skip(8);
                break;
            case fixed32:
                skip(4);
                break;
            case length_delimited: {
                const std::uint64_t length = read_varint();
                field.payload_start = position_;
                skip(length);
                break;
            }
            default:
                throw Malformed{};  // groups: no ONNX message has them
        }
        field.end = position_;
        return field;
    }

  private:
    void skip(std::uint64_t length) {
        if (length > end_ - position_) throw Malformed{};
        position_ += length;
    }
    std::uint8_t byte_at(std::uint64_t offset) {
        if (offset < window_start_ || offset >= window_start_ + window_.size()) {
            const std::uint64_t length = std::min<std::uint64_t>(window_capacity, end_ - offset);
            window_.resize(static_cast<std::size_t>(length));
            source_.read(offset, window_.data(), window_.size());
            window_start_ = offset;
        }
        return window_[static_cast<std::size_t>(offset - window_start_)];
    }

    static constexpr std::uint64_t window_capacity = 4096;
    const ByteSource& source_;
    std::uint64_t position_;
    std::uint64_t end_;
    std::string window_;
    std::uint64_t window_start_ = 0;
};

void append_varint(std::string& out, std::uint64_t value) {
    while (value >= 0x80) {
        out.push_back(static_cast<char>((value & 0x7F) | 0x80));
        value >>= 7;
    }
    out.push_back(static_cast<char>(value));
}

std::size_t varint_size(std::uint64_t value) {
    std::size_t size = 1;
    while (value >= 0x80) {
        value >>= 7;
        ++size;
    }
    return size;
}

void append_length_delimited_header(std::string& out, std::uint32_t number, std::uint64_t length) {
    append_varint(out, (std::uint64_t{number} << 3) | length_delimited);
    append_varint(out, length);
}

// ---- where a weight's bytes are -----------------------------------------------

// One initializer as the scanner found it, in file order.
struct InitializerRecord {
    bool weight = false;
    // Raw little-endian bytes at [raw_offset, raw_offset + raw_length) of the
    // source: the common case, read without protobuf.
    bool raw_only = false;
    bool inline_data = false;  // any raw_data, float_data or int32_data field
    std::uint64_t raw_offset = 0;
    std::uint64_t raw_length = 0;
    // Otherwise the whole TensorProto, parsed on its own when loaded.
    std::uint64_t message_offset = 0;
    std::uint64_t message_length = 0;
};

// Walks ModelProto → GraphProto → TensorProto and builds the model's bytes
// without the weights' data fields (raw_data, float_data, int32_data), which
// protobuf then parses: small, whatever the size of the weights.
class StructureScanner {
  public:
    explicit StructureScanner(const ByteSource& source) : source_(source) {}

    std::string strip_model() {
        return copy_fields(0, source_.size(), model_graph_field, [this](auto begin, auto end) {
            return copy_fields(begin, end, graph_initializer_field,
                               [this](auto from, auto to) { return strip_tensor(from, to); });
        });
    }

    std::vector<InitializerRecord> records;

  private:
    // Copies the fields in [begin, end) of the source, each length-delimited
    // field `number` with its payload replaced by rewrite(payload range).
    template <typename Rewrite>
    std::string copy_fields(std::uint64_t begin, std::uint64_t end, std::uint32_t number,
                            const Rewrite& rewrite) {
        std::string out;
        WireCursor cursor(source_, begin, end);
        while (!cursor.at_end()) {
            const WireCursor::Field field = cursor.next_field();
            if (field.number == number && field.wire_type == length_delimited) {
                const std::string payload = rewrite(field.payload_start, field.end);
                append_length_delimited_header(out, number, payload.size());
                out += payload;
            } else {
                out += source_.read_string(field.start, field.end - field.start);
            }
        }
        return out;
    }

    static bool is_data_field(const WireCursor::Field& field) {
        switch (field.number) {
            case tensor_raw_data_field:
                return field.wire_type == length_delimited;
            case tensor_float_data_field:
                return field.wire_type == fixed32 || field.wire_type == length_delimited;
            case tensor_int32_data_field:
                return field.wire_type == varint || field.wire_type == length_delimited;
            case tensor_double_data_field:
                return field.wire_type == fixed64 || field.wire_type == length_delimited;
            default:
                return false;
        }
    }

    std::string strip_tensor(std::uint64_t begin, std::uint64_t end) {
        InitializerRecord record;
        record.message_offset = begin;
        record.message_length = end - begin;
        // First pass: the element type (the last value wins, as in protobuf)
        // and where the data fields are.
        std::int32_t data_type = 0;
        std::size_t raw_fields = 0;
        std::size_t other_data_fields = 0;
        {
            WireCursor cursor(source_, begin, end);
            while (!cursor.at_end()) {
                const WireCursor::Field field = cursor.next_field();
                if (field.number == tensor_data_type_field && field.wire_type == varint) {
                    data_type = static_cast<std::int32_t>(field.value);
                } else if (is_data_field(field)) {
                    if (field.number == tensor_raw_data_field) {
                        ++raw_fields;
                        record.raw_offset = field.payload_start;
                        record.raw_length = field.end - field.payload_start;
                    } else {
                        ++other_data_fields;
                    }
                }
            }
        }
        record.weight = onnx_io::weight_type(data_type).has_value();
        record.raw_only = raw_fields > 0 && other_data_fields == 0;
        record.inline_data = raw_fields + other_data_fields > 0;
        records.push_back(record);
        if (!record.weight) return source_.read_string(begin, end - begin);
        std::string out;
        WireCursor cursor(source_, begin, end);
        while (!cursor.at_end()) {
            const WireCursor::Field field = cursor.next_field();
            if (!is_data_field(field))
                out += source_.read_string(field.start, field.end - field.start);
        }
        return out;
    }

    const ByteSource& source_;
};

std::size_t element_bytes(StoredType type) {
    return stored_type_bytes(type);
}

// Reads `out.size()` stored elements at `offset` of `source` as float32;
// `what` names the tensor in errors.
void read_stored_values(const ByteSource& source, std::uint64_t offset, StoredType type,
                        std::span<float> out, std::string_view what) {
    if (type == StoredType::float32) {
        source.read(offset, out.data(), out.size_bytes());
        return;
    }
    const std::size_t element = element_bytes(type);
    constexpr std::size_t block = std::size_t{1} << 16;
    std::vector<char> stored(std::min(block, out.size()) * element);
    for (std::size_t done = 0; done < out.size();) {
        const std::size_t count = std::min(block, out.size() - done);
        source.read(offset + element * done, stored.data(), element * count);
        onnx_io::decode_stored(type, stored.data(), out.subspan(done, count), what);
        done += count;
    }
}

}  // namespace

// ---- the reader ------------------------------------------------------------------

struct OnnxWeightReader::Impl {
    std::string source_name;
    fs::path directory;  // empty: bytes in memory, external data refused
    ByteSource source;
    Model topology;
    struct Location {
        const ByteSource* file = nullptr;  // raw bytes at `offset`, or...
        std::uint64_t offset = 0;
        std::uint64_t message_length = 0;  // ...the whole TensorProto there, parsed when loaded
        // ...or, for a Constant node's inline tensor (which the scanner
        // leaves to protobuf), the values themselves.
        std::vector<float> held;
    };
    std::vector<Location> locations;
    std::vector<std::uint64_t> element_counts;
    std::map<std::string, ByteSource> external_files;  // by location
    bool external = false;

    Impl(std::string_view name, fs::path model_directory, ByteSource bytes)
        : source_name(name), directory(std::move(model_directory)), source(std::move(bytes)) {}

    [[noreturn]] void refuse(const TensorProto& tensor, const std::string& why,
                             ErrorCode code = ErrorCode::corrupt_data) const {
        throw Error(code, source_name + ": initializer '" + tensor.name() + "' " + why);
    }

    const ByteSource& external_file(const TensorProto& tensor, const std::string& location) {
        if (directory.empty()) {
            refuse(tensor,
                   "keeps its data in an external file, which only a model read from a "
                   "file can have",
                   ErrorCode::unsupported);
        }
        const fs::path relative(location);
        if (location.empty() || relative.is_absolute() ||
            location.find('\0') != std::string::npos) {
            refuse(tensor, "names external data at '" + location +
                               "'; the location must be a path relative to the model's directory");
        }
        for (const fs::path& part : relative) {
            if (part == "..") {
                refuse(tensor, "names external data at '" + location +
                                   "', which leaves the model's directory (..)");
            }
        }
        const auto found = external_files.find(location);
        if (found != external_files.end()) return found->second;
        std::error_code error;
        const fs::path base = fs::canonical(directory, error);
        const fs::path resolved = error ? fs::path() : fs::canonical(directory / relative, error);
        if (error)
            refuse(tensor, "names external data '" + location + "', which does not exist",
                   ErrorCode::io);
        const fs::path inside = resolved.lexically_relative(base);
        if (inside.empty() || *inside.begin() == "..") {
            refuse(tensor, "names external data '" + location +
                               "', a link that leads out of the model's directory");
        }
        if (!fs::is_regular_file(resolved, error)) {
            refuse(tensor, "names external data '" + location + "', which is not a regular file",
                   ErrorCode::io);
        }
        return external_files.emplace(location, ByteSource(core::ReadableFile(resolved)))
            .first->second;
    }

    Location locate_external(TensorProto& tensor, std::uint64_t expected_bytes) {
        std::optional<std::string> location;
        std::uint64_t offset = 0;
        std::optional<std::uint64_t> length;
        for (const auto& entry : tensor.external_data()) {
            if (entry.key() == "location") {
                location = entry.value();
            } else if (entry.key() == "offset" || entry.key() == "length") {
                const auto value = core::parse_decimal(entry.value(), core::Overflow::refuse);
                if (!value) {
                    refuse(tensor, "has an external-data " + entry.key() + " '" + entry.value() +
                                       "' that is not a number");
                }
                (entry.key() == "offset" ? offset : length.emplace()) = *value;
            }
        }
        if (tensor.data_location() != TensorProto::EXTERNAL) {
            refuse(tensor, "has external_data entries but its data_location is not EXTERNAL");
        }
        if (!location) refuse(tensor, "keeps its data externally but names no location");
        const ByteSource& file = external_file(tensor, *location);
        const std::uint64_t bytes = length.value_or(expected_bytes);
        if (bytes != expected_bytes) {
            refuse(tensor, "has " + std::to_string(bytes) +
                               " bytes of external data where its shape " + "needs " +
                               std::to_string(expected_bytes));
        }
        if (offset > file.size() || bytes > file.size() - offset) {
            refuse(tensor, "reads bytes " + std::to_string(offset) + " to " +
                               std::to_string(offset + bytes) + " of '" + *location +
                               "', which has only " + std::to_string(file.size()));
        }
        external = true;
        tensor.clear_external_data();
        tensor.clear_data_location();
        return {&file, offset, {}, {}};
    }

    void open() {
        if (source.size() > max_onnx_bytes) {
            throw Error(ErrorCode::corrupt_data,
                        source_name + ": larger than 2 GiB, which ONNX protobuf files cannot be");
        }
        StructureScanner scanner(source);
        std::string stripped;
        try {
            stripped = scanner.strip_model();
        } catch (const Malformed&) {
            throw Error(ErrorCode::corrupt_data,
                        source_name + ": not an ONNX model, or the file is truncated");
        }
        onnx::ModelProto proto = onnx_io::parse_model_proto(stripped, source_name);
        stripped = std::string();
        onnx_io::validate_structure(proto, source_name);
        auto& initializers = *proto.mutable_graph()->mutable_initializer();
        if (std::size_t(initializers.size()) != scanner.records.size()) {
            throw Error(ErrorCode::corrupt_data,
                        source_name + ": not an ONNX model, or the file is truncated");
        }
        for (const auto& entry : proto.metadata_props()) {
            topology.metadata[entry.key()] = entry.value();
        }
        std::set<std::string> names;
        // Weights order: Constant nodes first (see weight_slots).
        for (const onnx_io::WeightSlot& slot : onnx_io::weight_slots(proto)) {
            if (!slot.in_constant) continue;
            if (!names.insert(slot.name).second) {
                throw Error(ErrorCode::corrupt_data,
                            source_name + ": two weights are named '" + slot.name + "'");
            }
            open_constant(slot);
        }
        for (int i = 0; i < initializers.size(); ++i) {
            TensorProto& tensor = initializers[i];
            const InitializerRecord& record = scanner.records[std::size_t(i)];
            if (!onnx_io::is_weight_initializer(tensor)) continue;
            if (!record.weight) {
                throw Error(ErrorCode::corrupt_data,
                            source_name + ": not an ONNX model, or the file is truncated");
            }
            if (!names.insert(tensor.name()).second) {
                throw Error(ErrorCode::corrupt_data,
                            source_name + ": two weights are named '" + tensor.name() + "'");
            }
            if (tensor.has_segment())
                refuse(tensor, "is segmented, which bitinc does not support",
                       ErrorCode::unsupported);
            Tensor weight;
            weight.name = tensor.name();
            weight.shape.assign(tensor.dims().begin(), tensor.dims().end());
            weight.stored_as = *onnx_io::weight_type(tensor.data_type());
            const std::size_t count = onnx_io::checked_element_count(tensor, source_name);
            const std::uint64_t bytes = std::uint64_t(count) * element_bytes(weight.stored_as);
            if (tensor.data_location() == TensorProto::EXTERNAL ||
                tensor.external_data_size() > 0) {
                if (record.inline_data) refuse(tensor, "has both external and inline data");
                locations.push_back(locate_external(tensor, bytes));
            } else if (record.raw_only && record.raw_length > 0) {
                if (record.raw_length != bytes) {
                    onnx_io::throw_bad_size(
                        tensor, source_name,
                        std::size_t(record.raw_length / element_bytes(weight.stored_as)), count);
                }
                locations.push_back({&source, record.raw_offset, {}, {}});
            } else {
                // Values as float_data / int32_data (or none): parsed whole,
                // as protobuf reads them, and checked now.
                TensorProto whole;
                if (!whole.ParseFromString(
                        source.read_string(record.message_offset, record.message_length))) {
                    throw Error(ErrorCode::corrupt_data,
                                source_name + ": not an ONNX model, or the file is truncated");
                }
                onnx_io::extract_weight(whole, source_name);
                locations.push_back({nullptr, record.message_offset, record.message_length, {}});
            }
            element_counts.push_back(count);
            topology.weights.push_back(std::move(weight));
        }
        topology.topology = onnx_io::serialize_deterministically(proto);
    }

    // A Constant node's weight: its values taken now (protobuf parsed them
    // with the topology) or located in external data, then cleared.
    void open_constant(const onnx_io::WeightSlot& slot) {
        TensorProto& tensor = *slot.tensor;
        Tensor weight;
        weight.name = slot.name;
        weight.shape.assign(tensor.dims().begin(), tensor.dims().end());
        weight.stored_as = *onnx_io::weight_type(tensor.data_type());
        // Messages name the weight: a Constant's tensor usually has no name.
        TensorProto named;
        named.set_name(slot.name);
        named.mutable_dims()->CopyFrom(tensor.dims());
        const std::size_t count = onnx_io::checked_element_count(named, source_name);
        if (tensor.data_location() == TensorProto::EXTERNAL || tensor.external_data_size() > 0) {
            const bool inline_data = !tensor.raw_data().empty() || tensor.float_data_size() > 0 ||
                                     tensor.int32_data_size() > 0 || tensor.double_data_size() > 0;
            named.mutable_external_data()->CopyFrom(tensor.external_data());
            named.set_data_location(tensor.data_location());
            if (inline_data) refuse(named, "has both external and inline data");
            locations.push_back(
                locate_external(named, std::uint64_t(count) * element_bytes(weight.stored_as)));
            tensor.clear_external_data();
            tensor.clear_data_location();
        } else {
            named = tensor;
            named.set_name(slot.name);
            Location location;
            location.held = onnx_io::extract_weight(named, source_name).values;
            locations.push_back(std::move(location));
        }
        tensor.clear_raw_data();
        tensor.clear_float_data();
        tensor.clear_int32_data();
        tensor.clear_double_data();
        element_counts.push_back(count);
        topology.weights.push_back(std::move(weight));
    }

    std::vector<float> read_values(std::size_t index) const {
        const Location& location = core::checked_at(locations, index, "weight");
        if (location.file == nullptr && location.message_length == 0) return location.held;
        const Tensor& weight = topology.weights[index];
        if (location.file == nullptr) {
            TensorProto whole;
            if (!whole.ParseFromString(
                    source.read_string(location.offset, location.message_length))) {
                throw Error(ErrorCode::corrupt_data,
                            source_name + ": initializer '" + weight.name + "' cannot be read");
            }
            return onnx_io::extract_weight(whole, source_name).values;
        }
        std::vector<float> values(static_cast<std::size_t>(element_counts[index]));
        read_stored_values(*location.file, location.offset, weight.stored_as, values,
                           source_name + ": initializer '" + weight.name + "'");
        return values;
    }
};

OnnxWeightReader::OnnxWeightReader(const fs::path& path) {
    const fs::path directory = path.has_parent_path() ? path.parent_path() : fs::path(".");
    impl_ = std::make_unique<Impl>(path.string(), directory, ByteSource(core::ReadableFile(path)));
    impl_->open();
}

OnnxWeightReader::OnnxWeightReader(std::string_view bytes, std::string_view source_name)
    : impl_(std::make_unique<Impl>(source_name, fs::path(), ByteSource(bytes))) {
    impl_->open();
}

OnnxWeightReader::~OnnxWeightReader() = default;
OnnxWeightReader::OnnxWeightReader(OnnxWeightReader&&) noexcept = default;
OnnxWeightReader& OnnxWeightReader::operator=(OnnxWeightReader&&) noexcept = default;

const Model& OnnxWeightReader::topology() const {
    return impl_->topology;
}

std::uint64_t OnnxWeightReader::element_count(std::size_t index) const {
    return core::checked_at(impl_->element_counts, index, "weight");
}

std::vector<float> OnnxWeightReader::read_values(std::size_t index) const {
    return impl_->read_values(index);
}

bool OnnxWeightReader::has_external_data() const {
    return impl_->external;
}

namespace {

Model read_whole(const OnnxWeightReader& reader) {
    Model model = reader.topology();
    for (std::size_t i = 0; i < model.weights.size(); ++i) {
        model.weights[i].values = reader.read_values(i);
    }
    return model;
}

}  // namespace

Model parse_onnx(std::string_view bytes, std::string_view source_name) {
    return read_whole(OnnxWeightReader(bytes, source_name));
}

Model read_onnx_file(const fs::path& path) {
    return read_whole(OnnxWeightReader(path));
}

// ---- the writer -----------------------------------------------------------------

namespace {

// Values are converted and written this many at a time.
constexpr std::size_t write_block_elements = std::size_t{1} << 20;

// Bytes appended to a string, for serialize_onnx (the file writer has the
// same two calls).
struct StringSink {
    std::string& out;
    void write(std::string_view bytes) { out.append(bytes); }
    void write(std::span<const std::byte> bytes) {
        out.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    }
};

// Writes weight `index`'s values from `values` as stored bytes.
template <typename Sink>
void write_weight(Sink& out, const WeightValueSource& values, std::size_t index,
                  std::uint64_t count, StoredType type) {
    std::vector<float> block(
        static_cast<std::size_t>(std::min<std::uint64_t>(count, write_block_elements)));
    std::vector<char> stored;
    for (std::uint64_t first = 0; first < count;) {
        const std::size_t length =
            static_cast<std::size_t>(std::min<std::uint64_t>(count - first, write_block_elements));
        const std::span<float> part(block.data(), length);
        values(index, first, part);
        if (type == StoredType::float32) {
            out.write(std::as_bytes(part));
        } else {
            stored.resize(length * element_bytes(type));
            onnx_io::encode_stored(type, part, stored.data());
            out.write(std::as_bytes(std::span(stored)));
        }
        first += length;
    }
}

struct WeightShape {
    std::uint64_t count = 0;
    StoredType type = StoredType::float32;
    std::uint64_t bytes() const { return count * element_bytes(type); }
};

std::vector<WeightShape> weight_shapes(onnx::ModelProto& proto) {
    std::vector<WeightShape> shapes;
    for (const onnx_io::WeightSlot& slot : onnx_io::weight_slots(proto)) {
        const TensorProto& tensor = *slot.tensor;
        shapes.push_back({onnx_io::checked_element_count(tensor, "model topology"),
                          *onnx_io::weight_type(tensor.data_type())});
    }
    return shapes;
}

// The pieces of an inline-data ONNX file: bytes of the topology's
// deterministic serialization, with each weight's raw_data payload between
// them.
struct SplicedModel {
    std::vector<std::string> literals;  // literals[i] comes before weight i; the last after all
    std::uint64_t total_bytes = 0;
};

// Which messages of the topology hold weights, in serialization order.
struct WeightPlaces {
    std::vector<bool> initializer_is_weight;
    std::vector<int> node_weight_attribute;  // -1: the node holds none
};

// `marked` is the deterministic serialization of the topology in which
// every weight tensor (initializer or Constant `value`) has an empty
// raw_data field: exactly where serialize_onnx puts the data. Each empty
// field gets the weight's length, and the lengths of the messages that hold
// it grow to match.
SplicedModel splice_weights(const std::string& marked, const WeightPlaces& places,
                            const std::vector<WeightShape>& shapes) {
    // The messages the copy descends into; everything else is copied as is.
    enum class Kind { model, graph, node, attribute, weight_tensor };
    const ByteSource source(marked);
    SplicedModel spliced;
    spliced.literals.emplace_back();
    std::size_t weight = 0;
    std::size_t initializer = 0;  // of the next one met
    std::size_t node = 0;
    // Copies [begin, end) of `marked` with the weights' raw_data grown;
    // returns the bytes that length-delimited fields around it gain.
    std::function<std::uint64_t(std::uint64_t, std::uint64_t, Kind, int)> copy;
    copy = [&](std::uint64_t begin, std::uint64_t end, Kind kind,
               int weight_attribute) -> std::uint64_t {
        std::uint64_t grown = 0;
        int attribute = 0;  // index of the next attribute met in a node
        WireCursor cursor(source, begin, end);
        while (!cursor.at_end()) {
            const WireCursor::Field field = cursor.next_field();
            const bool delimited = field.wire_type == length_delimited;
            std::optional<Kind> inner;
            int inner_weight_attribute = -1;
            if (delimited && kind == Kind::model && field.number == model_graph_field) {
                inner = Kind::graph;
            } else if (delimited && kind == Kind::graph &&
                       field.number == graph_initializer_field) {
                if (initializer >= places.initializer_is_weight.size()) throw Malformed{};
                if (places.initializer_is_weight[initializer++]) inner = Kind::weight_tensor;
            } else if (delimited && kind == Kind::graph && field.number == graph_node_field) {
                if (node >= places.node_weight_attribute.size()) throw Malformed{};
                inner_weight_attribute = places.node_weight_attribute[node++];
                if (inner_weight_attribute >= 0) inner = Kind::node;
            } else if (delimited && kind == Kind::node && field.number == node_attribute_field) {
                if (attribute++ == weight_attribute) inner = Kind::attribute;
            } else if (delimited && kind == Kind::attribute &&
                       field.number == attribute_tensor_field) {
                inner = Kind::weight_tensor;
            }
            const bool raw_marker = delimited && kind == Kind::weight_tensor &&
                                    field.number == tensor_raw_data_field &&
                                    field.end == field.payload_start;
            if (raw_marker) {
                if (weight >= shapes.size()) throw Malformed{};
                const std::uint64_t bytes = shapes[weight].bytes();
                append_length_delimited_header(spliced.literals.back(), tensor_raw_data_field,
                                               bytes);
                spliced.literals.emplace_back();
                ++weight;
                grown += varint_size(bytes) - 1 + bytes;
            } else if (inner) {
                // The length depends on what the inside grows by: copy the
                // inside aside first.
                SplicedModel outer = std::move(spliced);
                spliced = SplicedModel();
                spliced.literals.emplace_back();
                const std::uint64_t inner_grown =
                    copy(field.payload_start, field.end, *inner, inner_weight_attribute);
                const std::uint64_t length = field.end - field.payload_start + inner_grown;
                append_length_delimited_header(outer.literals.back(), field.number, length);
                outer.literals.back() += spliced.literals.front();
                for (std::size_t i = 1; i < spliced.literals.size(); ++i) {
                    outer.literals.push_back(std::move(spliced.literals[i]));
                }
                spliced = std::move(outer);
                grown += inner_grown + varint_size(length) - varint_size(length - inner_grown);
            } else {
                spliced.literals.back() += marked.substr(field.start, field.end - field.start);
            }
        }
        return grown;
    };
    try {
        copy(0, marked.size(), Kind::model, -1);
    } catch (const Malformed&) {
        throw Error(ErrorCode::corrupt_data, "model topology: cannot lay out its weights");
    }
    if (weight != shapes.size())
        throw Error(ErrorCode::corrupt_data, "model topology: cannot lay out its weights");
    for (const std::string& literal : spliced.literals) spliced.total_bytes += literal.size();
    for (const WeightShape& shape : shapes) spliced.total_bytes += shape.bytes();
    return spliced;
}

}  // namespace

fs::path external_data_path(const fs::path& model_path) {
    fs::path path = model_path;
    path += ".data";
    return path;
}

namespace {

// The inline layout of `proto`'s model: its deterministic serialization
// with each weight's raw_data spliced in.
SplicedModel inline_layout(const onnx::ModelProto& proto, const std::vector<WeightShape>& shapes) {
    onnx::ModelProto marked = proto;
    WeightPlaces places;
    for (const onnx::NodeProto& node : marked.graph().node()) {
        places.node_weight_attribute.push_back(onnx_io::constant_weight_attribute(node));
    }
    for (const TensorProto& tensor : marked.graph().initializer()) {
        places.initializer_is_weight.push_back(onnx_io::is_weight_initializer(tensor));
    }
    for (const onnx_io::WeightSlot& slot : onnx_io::weight_slots(marked)) {
        slot.tensor->set_raw_data(std::string());
    }
    return splice_weights(onnx_io::serialize_deterministically(marked), places, shapes);
}

template <typename Sink>
void write_inline(Sink& out, const SplicedModel& spliced, const std::vector<WeightShape>& shapes,
                  const WeightValueSource& values) {
    for (std::size_t i = 0; i < shapes.size(); ++i) {
        out.write(spliced.literals[i]);
        write_weight(out, values, i, shapes[i].count, shapes[i].type);
    }
    out.write(spliced.literals.back());
}

}  // namespace

std::string serialize_onnx(std::string_view topology, const WeightValueSource& values) {
    onnx::ModelProto proto = onnx_io::parse_model_proto(topology, "model topology");
    const std::vector<WeightShape> shapes = weight_shapes(proto);
    const SplicedModel spliced = inline_layout(proto, shapes);
    if (spliced.total_bytes > max_onnx_bytes) {
        throw Error(ErrorCode::unsupported,
                    "the model is larger than an ONNX file without external data can be (2 GiB)");
    }
    std::string bytes;
    bytes.reserve(std::size_t(spliced.total_bytes));
    StringSink sink{bytes};
    write_inline(sink, spliced, shapes, values);
    return bytes;
}

bool write_onnx_file(std::string_view topology, const WeightValueSource& values,
                     const fs::path& path, bool external_data) {
    onnx::ModelProto proto = onnx_io::parse_model_proto(topology, "model topology");
    const std::vector<WeightShape> shapes = weight_shapes(proto);
    if (!external_data) {
        const SplicedModel spliced = inline_layout(proto, shapes);
        if (spliced.total_bytes <= max_onnx_bytes) {
            core::AtomicFileWriter out(path);
            write_inline(out, spliced, shapes, values);
            out.commit();
            return false;
        }
    }
    // External data: the weights back to back in one side file.
    const fs::path data_path = external_data_path(path);
    const std::string location = data_path.filename().string();
    core::AtomicFileWriter data(data_path);
    std::size_t index = 0;
    for (const onnx_io::WeightSlot& slot : onnx_io::weight_slots(proto)) {
        TensorProto& tensor = *slot.tensor;
        if (slot.in_constant) {
            // Constants keep their data inline: engines and onnx's own
            // external-data helpers look for it in initializers. They come
            // first in weight order, so `values` is still called in order.
            std::string raw;
            StringSink sink{raw};
            write_weight(sink, values, index, shapes[index].count, shapes[index].type);
            tensor.set_raw_data(std::move(raw));
            ++index;
            continue;
        }
        const std::uint64_t offset = data.bytes_written();
        write_weight(data, values, index, shapes[index].count, shapes[index].type);
        tensor.clear_raw_data();
        tensor.clear_external_data();
        tensor.set_data_location(TensorProto::EXTERNAL);
        const std::pair<const char*, std::string> entries[] = {
            {"location", location},
            {"offset", std::to_string(offset)},
            {"length", std::to_string(shapes[index].bytes())}};
        for (const auto& [key, value] : entries) {
            auto* entry = tensor.add_external_data();
            entry->set_key(key);
            entry->set_value(value);
        }
        ++index;
    }
    core::AtomicFileWriter model(path);
    model.write(onnx_io::serialize_deterministically(proto));
    data.finish();
    model.finish();
    data.rename();
    model.rename();
    return true;
}

namespace {

// The model's weights in the order of its topology's weights, each checked
// against its tensor's shape and type there.
std::vector<const Tensor*> weights_in_topology_order(const Model& model) {
    std::unordered_map<std::string_view, const Tensor*> by_name;
    for (const Tensor& tensor : model.weights) by_name.emplace(tensor.name, &tensor);
    onnx::ModelProto proto = onnx_io::parse_model_proto(model.topology, "model topology");
    std::vector<const Tensor*> ordered;
    for (const onnx_io::WeightSlot& slot : onnx_io::weight_slots(proto)) {
        const TensorProto& stored = *slot.tensor;
        const auto found = by_name.find(slot.name);
        if (found == by_name.end()) {
            throw Error(ErrorCode::invalid_argument, "model has no weight for '" + slot.name + "'");
        }
        const Tensor& tensor = *found->second;
        std::uint64_t expected = 1;
        for (const std::int64_t dim : tensor.shape) expected *= static_cast<std::uint64_t>(dim);
        if (!std::equal(tensor.shape.begin(), tensor.shape.end(), stored.dims().begin(),
                        stored.dims().end()) ||
            expected != tensor.values.size() ||
            static_cast<int>(tensor.stored_as) != stored.data_type()) {
            throw Error(ErrorCode::invalid_argument,
                        "weight '" + tensor.name + "' does not match its tensor's shape or type");
        }
        ordered.push_back(&tensor);
    }
    if (ordered.size() != model.weights.size()) {
        throw Error(ErrorCode::invalid_argument,
                    "model has weights that no tensor of its topology names");
    }
    return ordered;
}

WeightValueSource values_of(const std::vector<const Tensor*>& ordered) {
    return [&ordered](std::size_t index, std::uint64_t first, std::span<float> out) {
        std::copy_n(ordered[index]->values.begin() + std::ptrdiff_t(first), out.size(),
                    out.begin());
    };
}

}  // namespace

void write_onnx_file(const Model& model, const fs::path& path, bool external_data) {
    const std::vector<const Tensor*> ordered = weights_in_topology_order(model);
    write_onnx_file(model.topology, values_of(ordered), path, external_data);
}

std::string serialize_onnx(const Model& model) {
    const std::vector<const Tensor*> ordered = weights_in_topology_order(model);
    return serialize_onnx(model.topology, values_of(ordered));
}

}  // namespace bitinc
