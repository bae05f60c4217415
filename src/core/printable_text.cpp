// Terminal-safe text for messages that quote untrusted names.
#include <cstdio>

#include "bitinc/error.hpp"

namespace bitinc {

std::string printable_text(std::string_view text) {
    std::string result;
    result.reserve(text.size());
    const auto escape = [&](unsigned char byte) {
        char code[5];
        std::snprintf(code, sizeof code, "\\x%02x", byte);
        result += code;
    };
    for (std::size_t i = 0; i < text.size(); ++i) {
        const auto byte = static_cast<unsigned char>(text[i]);
        if (byte < 0x20 || byte == 0x7f) {
            escape(byte);
        } else if (byte == 0xc2 && i + 1 < text.size() &&
                   static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
                   static_cast<unsigned char>(text[i + 1]) <= 0x9f) {
            // U+0080..U+009F: C1 controls, which some terminals obey (CSI).
            escape(byte);
            escape(static_cast<unsigned char>(text[++i]));
        } else {
            result += char(byte);
        }
    }
    return result;
}

}  // namespace bitinc
