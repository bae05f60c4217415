// The .npy format (numpy's one-array files): the magic "\x93NUMPY", a major
// and a minor version byte, the header's length (uint16 in version 1, uint32
// in versions 2 and 3, little-endian), then the header, a Python dict
// literal such as {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// padded with spaces and a newline, then the data.
#include "eval/npy_reader.hpp"

#include <bit>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>

#include "bitinc/error.hpp"

namespace bitinc::eval {

namespace {

static_assert(std::endian::native == std::endian::little,
              "the .npy reader copies little-endian data as it is");

constexpr std::string_view npy_magic = "\x93NUMPY";
constexpr std::size_t max_header_bytes = 1 << 16;  // numpy writes < 1 kB
constexpr std::size_t max_rank = 8;

// A cursor over the header dict that knows only the literals numpy writes.
class HeaderParser {
  public:
    HeaderParser(std::string_view text, std::string_view source) : text_(text), source_(source) {}

    [[noreturn]] void fail(const std::string& reason) const {
        throw Error(ErrorCode::corrupt_data,
                    std::string(source_) + ": malformed .npy header: " + reason);
    }

    void skip_space() {
        while (at_ < text_.size() && (text_[at_] == ' ' || text_[at_] == '\t' ||
                                      text_[at_] == '\n' || text_[at_] == '\r')) {
            ++at_;
        }
    }

    bool accept(char c) {
        skip_space();
        if (at_ < text_.size() && text_[at_] == c) {
            ++at_;
            return true;
        }
        return false;
    }

    void expect(char c) {
        if (!accept(c)) fail(std::string("expected '") + c + "'");
    }

    bool at_end() {
        skip_space();
        return at_ == text_.size();
    }

    std::string string_literal() {
        skip_space();
        if (at_ >= text_.size() || (text_[at_] != '\'' && text_[at_] != '"')) {
            fail("expected a quoted string");
        }
        const char quote = text_[at_++];
        const auto end = text_.find(quote, at_);
        if (end == std::string_view::npos) fail("unterminated string");
        std::string value(text_.substr(at_, end - at_));
        at_ = end + 1;
        return value;
    }

    bool boolean_literal() {
        skip_space();
        for (const auto& [word, value] : {std::pair{"True", true}, std::pair{"False", false}}) {
            const std::string_view literal = word;
            if (text_.substr(at_, literal.size()) == literal) {
                at_ += literal.size();
                return value;
            }
        }
        fail("expected True or False");
    }

    std::vector<std::uint64_t> shape_tuple() {
        expect('(');
        std::vector<std::uint64_t> shape;
        while (!accept(')')) {
            skip_space();
            std::uint64_t dim = 0;
            std::size_t digits = 0;
            while (at_ < text_.size() && text_[at_] >= '0' && text_[at_] <= '9') {
                dim = dim * 10 + static_cast<std::uint64_t>(text_[at_++] - '0');
                if (++digits > 12) fail("a dimension is too large");
            }
            if (digits == 0) fail("a dimension is not a whole number");
            shape.push_back(dim);
            if (shape.size() > max_rank) {
                fail("more than " + std::to_string(max_rank) + " dimensions");
            }
            if (!accept(',')) {
                expect(')');
                break;
            }
        }
        return shape;
    }

  private:
    std::string_view text_;
    std::string_view source_;
    std::size_t at_ = 0;
};

NpyType type_from_descr(const std::string& descr, std::string_view source) {
    const std::string name(source);
    if (descr.size() >= 2 && descr[0] == '>' && descr != ">u1" && descr != ">i1") {
        throw Error(ErrorCode::unsupported, name + ": .npy data is big-endian ('" + descr +
                                                "'); only little-endian files are read");
    }
    if (descr == "<f4") return NpyType::float32;
    if (descr == "|u1" || descr == "<u1" || descr == ">u1") return NpyType::uint8;
    if (descr == "<i4") return NpyType::int32;
    if (descr == "<i8") return NpyType::int64;
    throw Error(ErrorCode::unsupported,
                name + ": .npy element type '" + descr +
                    "' is not supported (float32 '<f4', uint8 '|u1', int32 '<i4', int64 '<i8')");
}

std::uint32_t little_endian(const std::uint8_t* bytes, std::size_t count) {
    std::uint32_t value = 0;
    for (std::size_t i = count; i-- > 0;) value = (value << 8) | bytes[i];
    return value;
}

}  // namespace

std::string_view npy_type_name(NpyType type) {
    switch (type) {
        case NpyType::float32:
            return "float32";
        case NpyType::uint8:
            return "uint8";
        case NpyType::int32:
            return "int32";
        case NpyType::int64:
            return "int64";
    }
    return "?";
}

std::size_t npy_item_size(NpyType type) {
    switch (type) {
        case NpyType::float32:
            return 4;
        case NpyType::uint8:
            return 1;
        case NpyType::int32:
            return 4;
        case NpyType::int64:
            return 8;
    }
    return 1;
}

std::uint64_t NpyArray::element_count() const {
    return data.size() / npy_item_size(type);
}

std::vector<float> NpyArray::as_floats() const {
    const std::size_t count = element_count();
    std::vector<float> values(count);
    for (std::size_t i = 0; i < count; ++i) {
        const std::uint8_t* item = data.data() + i * npy_item_size(type);
        switch (type) {
            case NpyType::float32:
                std::memcpy(&values[i], item, 4);
                break;
            case NpyType::uint8:
                values[i] = float(*item);
                break;
            case NpyType::int32: {
                std::int32_t value;
                std::memcpy(&value, item, 4);
                values[i] = float(value);
                break;
            }
            case NpyType::int64: {
                std::int64_t value;
                std::memcpy(&value, item, 8);
                values[i] = float(value);
                break;
            }
        }
    }
    return values;
}

std::vector<std::int64_t> NpyArray::as_integers() const {
    const std::size_t count = element_count();
    std::vector<std::int64_t> values(count);
    for (std::size_t i = 0; i < count; ++i) {
        const std::uint8_t* item = data.data() + i * npy_item_size(type);
        switch (type) {
            case NpyType::float32: {
                float value;
                std::memcpy(&value, item, 4);
                // Saturate instead of the undefined conversion of NaN or huge values.
                values[i] = value >= -9.0e18f && value <= 9.0e18f ? std::int64_t(value) : -1;
                break;
            }
            case NpyType::uint8:
                values[i] = *item;
                break;
            case NpyType::int32: {
                std::int32_t value;
                std::memcpy(&value, item, 4);
                values[i] = value;
                break;
            }
            case NpyType::int64:
                std::memcpy(&values[i], item, 8);
                break;
        }
    }
    return values;
}

NpyArray parse_npy(std::span<const std::uint8_t> bytes, std::string_view source) {
    const std::string name(source);
    if (bytes.size() < npy_magic.size() + 2 ||
        std::memcmp(bytes.data(), npy_magic.data(), npy_magic.size()) != 0) {
        throw Error(ErrorCode::corrupt_data, name + ": not a .npy file (bad magic string)");
    }
    const unsigned major = bytes[6];
    if (major < 1 || major > 3) {
        throw Error(
            ErrorCode::unsupported,
            name + ": .npy format version " + std::to_string(major) + " is not supported (1 to 3)");
    }
    const std::size_t length_bytes = major == 1 ? 2 : 4;
    const std::size_t prefix = 8 + length_bytes;
    if (bytes.size() < prefix)
        throw Error(ErrorCode::corrupt_data, name + ": truncated .npy header");
    const std::size_t header_length = little_endian(bytes.data() + 8, length_bytes);
    if (header_length > max_header_bytes)
        throw Error(ErrorCode::corrupt_data, name + ": .npy header is too long");
    if (bytes.size() - prefix < header_length)
        throw Error(ErrorCode::corrupt_data, name + ": truncated .npy header");
    const std::string_view header(reinterpret_cast<const char*>(bytes.data() + prefix),
                                  header_length);

    HeaderParser parser(header, source);
    std::optional<std::string> descr;
    std::optional<bool> fortran_order;
    std::optional<std::vector<std::uint64_t>> shape;
    parser.expect('{');
    while (!parser.accept('}')) {
        const std::string key = parser.string_literal();
        parser.expect(':');
        if (key == "descr" && !descr) {
            descr = parser.string_literal();
        } else if (key == "fortran_order" && !fortran_order) {
            fortran_order = parser.boolean_literal();
        } else if (key == "shape" && !shape) {
            shape = parser.shape_tuple();
        } else {
            parser.fail("unexpected or repeated key '" + key + "'");
        }
        if (!parser.accept(',')) {
            parser.expect('}');
            break;
        }
    }
    if (!parser.at_end()) parser.fail("text after the dict");
    if (!descr || !fortran_order || !shape) {
        parser.fail("it needs the keys 'descr', 'fortran_order' and 'shape'");
    }
    if (*fortran_order) {
        throw Error(ErrorCode::unsupported,
                    name +
                        ": .npy data is in Fortran order; only C order is read "
                        "(save np.ascontiguousarray(x))");
    }

    NpyArray array;
    array.type = type_from_descr(*descr, source);
    array.shape = std::move(*shape);
    const std::size_t item_size = npy_item_size(array.type);
    std::uint64_t data_bytes = item_size;
    for (const std::uint64_t dim : array.shape) {
        // Bounded before multiplying, so the product cannot overflow.
        if (dim > max_npy_bytes)
            throw Error(ErrorCode::corrupt_data, name + ": .npy dimension out of range");
        data_bytes *= dim;
        if (data_bytes > max_npy_bytes) {
            throw Error(ErrorCode::unsupported, name + ": .npy data would exceed " +
                                                    std::to_string(max_npy_bytes) + " bytes");
        }
    }
    const std::size_t available = bytes.size() - prefix - header_length;
    if (available != data_bytes) {
        throw Error(ErrorCode::corrupt_data,
                    name + ": .npy data is " + std::to_string(available) +
                        " bytes, the header promises " + std::to_string(data_bytes) +
                        (available < data_bytes ? " (truncated file)" : ""));
    }
    array.data.assign(bytes.end() - static_cast<std::ptrdiff_t>(available), bytes.end());
    return array;
}

NpyArray read_npy_file(const std::filesystem::path& path) {
    const std::string name = path.string();
    std::error_code error;
    if (!std::filesystem::is_regular_file(path, error))
        throw Error(ErrorCode::io, name + ": no such file");
    const auto size = std::filesystem::file_size(path, error);
    if (error) throw Error(ErrorCode::io, name + ": cannot read: " + error.message());
    if (size > max_npy_bytes + max_header_bytes + 16) {
        throw Error(ErrorCode::unsupported, name + ": larger than the " +
                                                std::to_string(max_npy_bytes) +
                                                " bytes a .npy dataset may hold");
    }
    std::ifstream file(path, std::ios::binary);
    std::vector<std::uint8_t> bytes(size);
    if (!file.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size))) {
        throw Error(ErrorCode::io, name + ": cannot read the file");
    }
    return parse_npy(bytes, name);
}

}  // namespace bitinc::eval
