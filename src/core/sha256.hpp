// SHA-256 (through OpenSSL's libcrypto), for the hashes of package files.
#pragma once

#include <memory>
#include <string>
#include <string_view>

struct evp_md_ctx_st;

namespace bitinc::core {

// Lowercase hex of the SHA-256 of `bytes`.
std::string sha256_hex(std::string_view bytes);

// A SHA-256 computed piece by piece, for files hashed as their bytes arrive.
class Sha256 {
  public:
    Sha256();
    ~Sha256();
    Sha256(Sha256&&) noexcept;
    Sha256& operator=(Sha256&&) noexcept;

    void update(std::string_view bytes);
    // Lowercase hex of everything passed to update(); the hash starts over.
    std::string finish_hex();

  private:
    struct Free {
        void operator()(evp_md_ctx_st* context) const;
    };
    std::unique_ptr<evp_md_ctx_st, Free> context_;
};

}  // namespace bitinc::core
