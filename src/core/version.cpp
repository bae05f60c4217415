#include "bitinc/version.hpp"

namespace bitinc {

std::string_view version() {
    return BITINC_VERSION;
}

}  // namespace bitinc
