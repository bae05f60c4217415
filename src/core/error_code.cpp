// The stable names of ErrorCode, which Python's Error.code and the CLI show.
#include "bitinc/error.hpp"

namespace bitinc {

std::string_view error_code_name(ErrorCode code) noexcept {
    switch (code) {
        case ErrorCode::invalid_argument:
            return "invalid_argument";
        case ErrorCode::corrupt_data:
            return "corrupt_data";
        case ErrorCode::io:
            return "io";
        case ErrorCode::network:
            return "network";
        case ErrorCode::unsupported:
            return "unsupported";
        case ErrorCode::cancelled:
            return "cancelled";
        case ErrorCode::out_of_memory:
            return "out_of_memory";
        case ErrorCode::untrusted:
            return "untrusted";
        case ErrorCode::not_ready:
            return "not_ready";
        case ErrorCode::unavailable:
            return "unavailable";
        case ErrorCode::internal:
            return "internal";
    }
    return "internal";
}

}  // namespace bitinc
