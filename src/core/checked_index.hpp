// Indexing with the library's own error: a caller's index past the end is an
// Error (invalid_argument), never std::out_of_range leaving the public API.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "bitinc/error.hpp"

namespace bitinc::core {

// items[index], or Error naming `what` (e.g. "tensor") when there is none.
template <typename Items>
decltype(auto) checked_at(Items& items, std::size_t index, std::string_view what) {
    if (index >= items.size()) {
        throw Error(ErrorCode::invalid_argument, std::string(what) + " " + std::to_string(index) +
                                                     " is out of range (there are " +
                                                     std::to_string(items.size()) + ")");
    }
    return items[index];
}

}  // namespace bitinc::core
