#include "core/sha256.hpp"

#include <openssl/evp.h>

#include "bitinc/error.hpp"

namespace bitinc::core {

struct Sha256::Context {
    EVP_MD_CTX* digest = nullptr;
    ~Context() { EVP_MD_CTX_free(digest); }
};

Sha256::Sha256() : context_(std::make_unique<Context>()) {
    context_->digest = EVP_MD_CTX_new();
    if (context_->digest == nullptr ||
        EVP_DigestInit_ex(context_->digest, EVP_sha256(), nullptr) != 1) {
        throw Error("SHA-256: OpenSSL could not start a digest");
    }
}

Sha256::~Sha256() = default;

void Sha256::update(std::span<const std::uint8_t> bytes) {
    if (!bytes.empty()) EVP_DigestUpdate(context_->digest, bytes.data(), bytes.size());
}

void Sha256::update(std::string_view bytes) {
    if (!bytes.empty()) EVP_DigestUpdate(context_->digest, bytes.data(), bytes.size());
}

std::string Sha256::finish_hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_DigestFinal_ex(context_->digest, digest, &length);
    static constexpr char hex[] = "0123456789abcdef";
    std::string text;
    text.reserve(2 * length);
    for (unsigned int i = 0; i < length; ++i) {
        text += hex[digest[i] >> 4];
        text += hex[digest[i] & 15];
    }
    return text;
}

std::string sha256_hex(std::string_view bytes) {
    Sha256 hash;
    hash.update(bytes);
    return hash.finish_hex();
}

}  // namespace bitinc::core
