// SHA-256 (through OpenSSL's libcrypto), for the hashes of package files.
#pragma once

#include <string>
#include <string_view>

namespace bitinc::core {

// Lowercase hex of the SHA-256 of `bytes`.
std::string sha256_hex(std::string_view bytes);

}  // namespace bitinc::core
