// SHA-256 (through OpenSSL's libcrypto), for the hashes of package files.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace bitinc::core {

class Sha256 {
  public:
    Sha256();
    ~Sha256();
    Sha256(const Sha256&) = delete;
    Sha256& operator=(const Sha256&) = delete;

    void update(std::span<const std::uint8_t> bytes);
    void update(std::string_view bytes);
    // Lowercase hex of the digest; the object must not be used afterwards.
    std::string finish_hex();

  private:
    struct Context;
    std::unique_ptr<Context> context_;
};

std::string sha256_hex(std::string_view bytes);

}  // namespace bitinc::core
