#pragma once

#include <string_view>

namespace bitinc {

std::string_view version();

}  // namespace bitinc
