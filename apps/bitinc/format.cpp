#include "format.hpp"

namespace bitinc::cli {

std::string with_commas(std::uint64_t number) {
    std::string digits = std::to_string(number);
    for (int i = static_cast<int>(digits.size()) - 3; i > 0; i -= 3) {
        digits.insert(static_cast<std::size_t>(i), ",");
    }
    return digits;
}

std::string dims_text(const std::vector<std::int64_t>& dims,
                      const std::vector<std::string>& symbolic) {
    if (dims.empty()) return "scalar";
    std::string text;
    for (std::size_t i = 0; i < dims.size(); ++i) {
        if (i) text += "x";
        if (dims[i] >= 0) {
            text += std::to_string(dims[i]);
        } else {
            text += i < symbolic.size() && !symbolic[i].empty() ? symbolic[i] : "?";
        }
    }
    return text;
}

}  // namespace bitinc::cli
