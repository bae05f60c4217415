// Ed25519 through OpenSSL's EVP interface (OpenSSL 3), the signature file
// and the installed-release state (docs/format.md §8).
#include "bitinc/trust.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>

#include "bitinc/error.hpp"
#include "bitinc/package.hpp"
#include "core/file_io.hpp"
#include "core/sha256.hpp"

namespace bitinc {

namespace {

using Json = nlohmann::ordered_json;

constexpr std::string_view signature_format = "bitinc-signature";
constexpr int signature_format_version = 1;
constexpr std::size_t ed25519_signature_bytes = 64;
constexpr std::size_t ed25519_key_bytes = 32;
constexpr std::uint64_t max_key_file_bytes = 64 * 1024;
constexpr std::uint64_t max_signature_file_bytes = 64 * 1024;
constexpr std::uint64_t max_state_file_bytes = 16 * 1024 * 1024;

struct FreeKey {
    void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct FreeBio {
    void operator()(BIO* bio) const { BIO_free(bio); }
};
struct FreeDigest {
    void operator()(EVP_MD_CTX* context) const { EVP_MD_CTX_free(context); }
};
using Key = std::unique_ptr<EVP_PKEY, FreeKey>;
using Bio = std::unique_ptr<BIO, FreeBio>;
using DigestContext = std::unique_ptr<EVP_MD_CTX, FreeDigest>;

Bio memory_bio(std::string_view text) {
    Bio bio(BIO_new_mem_buf(text.data(), int(text.size())));
    if (!bio) throw Error(ErrorCode::out_of_memory, "out of memory reading a key");
    return bio;
}

std::string bio_text(BIO* bio) {
    char* data = nullptr;
    const long length = BIO_get_mem_data(bio, &data);
    return std::string(data, std::size_t(length));
}

Key checked_ed25519(Key key, const char* what) {
    if (!key) throw Error(ErrorCode::invalid_argument, std::string("not a PEM ") + what + " key");
    if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_ED25519)
        throw Error(ErrorCode::invalid_argument,
                    std::string("the ") + what + " key is not an Ed25519 key");
    return key;
}

Key read_private_key(std::string_view pem) {
    Bio bio = memory_bio(pem);
    return checked_ed25519(Key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr)),
                           "private");
}

// A public key from a public PEM, or from a private one.
Key read_public_key(std::string_view pem) {
    if (is_private_key(pem)) return read_private_key(pem);
    Bio bio = memory_bio(pem);
    return checked_ed25519(Key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr)),
                           "public");
}

std::string key_id(EVP_PKEY* key) {
    std::array<unsigned char, ed25519_key_bytes> raw{};
    std::size_t length = raw.size();
    if (EVP_PKEY_get_raw_public_key(key, raw.data(), &length) != 1 || length != raw.size())
        throw Error(ErrorCode::invalid_argument, "cannot read the Ed25519 public key");
    return core::sha256_hex(std::string_view(reinterpret_cast<const char*>(raw.data()), length));
}

// Lowercase hex only, so that a signature file has one spelling.
std::optional<std::string> from_hex(std::string_view text) {
    if (text.size() % 2 != 0) return std::nullopt;
    std::string bytes;
    const auto digit = [](char c) {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    };
    for (std::size_t i = 0; i < text.size(); i += 2) {
        const int high = digit(text[i]), low = digit(text[i + 1]);
        if (high < 0 || low < 0) return std::nullopt;
        bytes += char(high * 16 + low);
    }
    return bytes;
}

}  // namespace

bool is_private_key(std::string_view pem) {
    return pem.find("PRIVATE KEY") != std::string_view::npos;
}

SigningKeyPair generate_signing_key() {
    EVP_PKEY* raw = nullptr;
    std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> context(
        EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr), EVP_PKEY_CTX_free);
    if (!context || EVP_PKEY_keygen_init(context.get()) != 1 ||
        EVP_PKEY_keygen(context.get(), &raw) != 1) {
        throw Error(ErrorCode::internal, "cannot generate an Ed25519 key");
    }
    const Key key(raw);
    SigningKeyPair pair;
    Bio private_bio(BIO_new(BIO_s_mem()));
    Bio public_bio(BIO_new(BIO_s_mem()));
    if (!private_bio || !public_bio ||
        PEM_write_bio_PrivateKey(private_bio.get(), key.get(), nullptr, nullptr, 0, nullptr,
                                 nullptr) != 1 ||
        PEM_write_bio_PUBKEY(public_bio.get(), key.get()) != 1) {
        throw Error(ErrorCode::internal, "cannot write the Ed25519 key as PEM");
    }
    pair.private_pem = bio_text(private_bio.get());
    pair.public_pem = bio_text(public_bio.get());
    return pair;
}

void write_signing_key(const SigningKeyPair& key, const std::filesystem::path& private_path,
                       bool overwrite) {
    const std::filesystem::path public_path = private_path.string() + ".pub";
    std::error_code error;
    for (const std::filesystem::path& path : {public_path, private_path}) {
        if (!overwrite && std::filesystem::exists(path, error))
            throw Error(ErrorCode::invalid_argument,
                        path.string() + " exists; pass --force to replace it");
    }
    core::write_file_atomically(private_path, key.private_pem, 0600);
    core::write_file_atomically(public_path, key.public_pem);
}

std::string key_id_of(std::string_view pem) {
    return key_id(read_public_key(pem).get());
}

std::string read_key_file(const std::filesystem::path& path) {
    std::string text = core::read_file(path, max_key_file_bytes);
    try {
        (void)read_public_key(text);
    } catch (const Error& error) {
        throw Error(error.code(), path.string() + ": " + error.what());
    }
    return text;
}

std::string sign_manifest(std::string_view private_pem, std::string_view manifest_bytes) {
    const Key key = read_private_key(private_pem);
    const DigestContext context(EVP_MD_CTX_new());
    std::array<unsigned char, ed25519_signature_bytes> signature{};
    std::size_t length = signature.size();
    if (!context || EVP_DigestSignInit(context.get(), nullptr, nullptr, nullptr, key.get()) != 1 ||
        EVP_DigestSign(context.get(), signature.data(), &length,
                       reinterpret_cast<const unsigned char*>(manifest_bytes.data()),
                       manifest_bytes.size()) != 1 ||
        length != signature.size()) {
        throw Error(ErrorCode::internal, "cannot sign the manifest");
    }
    Json json;
    json["format"] = signature_format;
    json["format_version"] = signature_format_version;
    json["algorithm"] = "ed25519";
    json["key_id"] = key_id(key.get());
    json["signature"] = core::lowercase_hex(signature);
    return json.dump(2) + "\n";
}

void verify_manifest_signature(std::string_view public_pem, std::string_view manifest_bytes,
                               std::string_view signature_text, std::string_view where) {
    const std::string prefix = std::string(where) + ": ";
    if (signature_text.size() > max_signature_file_bytes)
        throw Error(ErrorCode::untrusted, prefix + "the signature file is too large");
    // A signature file is one flat object: deeper nesting is refused as the
    // parser meets it, before it costs time or stack.
    struct TooDeep {};
    const auto flat = [](int depth, nlohmann::json::parse_event_t, Json&) {
        if (depth > 2) throw TooDeep{};
        return true;
    };
    Json json;
    try {
        json = Json::parse(signature_text.begin(), signature_text.end(), flat, false);
    } catch (const TooDeep&) {
        throw Error(ErrorCode::untrusted, prefix + "not a bitinc signature file (nested values)");
    }
    const auto text_field = [&](const char* name) -> std::string {
        if (!json.is_object() || !json.contains(name) || !json[name].is_string())
            throw Error(ErrorCode::untrusted,
                        prefix + "not a bitinc signature file (no '" + name + "')");
        return json[name].get<std::string>();
    };
    if (text_field("format") != signature_format)
        throw Error(ErrorCode::untrusted, prefix + "not a bitinc signature file");
    if (!json.contains("format_version") || !json["format_version"].is_number_integer() ||
        json["format_version"].get<std::int64_t>() != signature_format_version) {
        throw Error(ErrorCode::unsupported, prefix + "signature format version is not " +
                                                std::to_string(signature_format_version) +
                                                "; update bitinc");
    }
    if (text_field("algorithm") != "ed25519")
        throw Error(ErrorCode::untrusted, prefix + "signature algorithm '" +
                                              text_field("algorithm") + "' is not ed25519");
    const Key key = read_public_key(public_pem);
    const std::string trusted = key_id(key.get());
    const std::string signer = text_field("key_id");
    if (signer != trusted) {
        throw Error(ErrorCode::untrusted, prefix + "signed by key " + signer.substr(0, 16) +
                                              "…, not the trusted key " + trusted.substr(0, 16) +
                                              "…");
    }
    const auto signature = from_hex(text_field("signature"));
    if (!signature || signature->size() != ed25519_signature_bytes)
        throw Error(ErrorCode::untrusted,
                    prefix + "the signature is not 64 bytes of lowercase hex");
    const DigestContext context(EVP_MD_CTX_new());
    if (!context ||
        EVP_DigestVerifyInit(context.get(), nullptr, nullptr, nullptr, key.get()) != 1 ||
        EVP_DigestVerify(context.get(), reinterpret_cast<const unsigned char*>(signature->data()),
                         signature->size(),
                         reinterpret_cast<const unsigned char*>(manifest_bytes.data()),
                         manifest_bytes.size()) != 1) {
        throw Error(ErrorCode::untrusted,
                    prefix + "the manifest's signature does not verify (tampered manifest?)");
    }
}

void verify_package_signature(const std::filesystem::path& directory, std::string_view public_pem) {
    const std::filesystem::path manifest = directory / std::string(manifest_file_name);
    const std::filesystem::path signature = directory / std::string(signature_file_name);
    std::error_code error;
    if (!std::filesystem::exists(signature, error))
        throw Error(ErrorCode::untrusted,
                    signature.string() + ": missing (the package is not signed)");
    verify_manifest_signature(public_pem, core::read_file(manifest, max_manifest_bytes),
                              core::read_file(signature, max_signature_file_bytes),
                              manifest.string());
}

// ---- installed releases ----------------------------------------------------

InstalledReleases::InstalledReleases(std::filesystem::path path) : path_(std::move(path)) {
    std::error_code error;
    if (!std::filesystem::exists(path_, error)) return;
    const std::string text = core::read_file(path_, max_state_file_bytes);
    const Json json = Json::parse(text.begin(), text.end(), nullptr, false);
    bool valid = json.is_object() && json.value("format", "") == "bitinc-installed" &&
                 json.contains("releases") && json["releases"].is_array();
    if (valid) {
        for (const Json& entry : json["releases"]) {
            valid = valid && entry.is_object() && entry.contains("key_id") &&
                    entry["key_id"].is_string() && entry.contains("model_id") &&
                    entry["model_id"].is_string() && entry.contains("release") &&
                    entry["release"].is_number_unsigned();
            if (!valid) break;
            entries_.push_back({entry["key_id"].get<std::string>(),
                                entry["model_id"].get<std::string>(),
                                entry["release"].get<std::uint64_t>()});
        }
    }
    if (!valid) {
        throw Error(ErrorCode::corrupt_data,
                    path_.string() +
                        ": the record of installed releases is damaged; repair or remove it "
                        "(removing it forgets which releases this device has seen)");
    }
}

std::size_t InstalledReleases::position(std::string_view key_id, std::string_view model_id) const {
    std::size_t at = 0;
    while (at < entries_.size() &&
           (entries_[at].key_id != key_id || entries_[at].model_id != model_id))
        ++at;
    return at;
}

std::optional<std::uint64_t> InstalledReleases::highest(std::string_view key_id,
                                                        std::string_view model_id) const {
    const std::size_t at = position(key_id, model_id);
    return at < entries_.size() ? std::optional(entries_[at].release) : std::nullopt;
}

void InstalledReleases::check(std::string_view key_id, std::string_view model_id,
                              std::uint64_t release, std::string_view where) const {
    const auto installed = highest(key_id, model_id);
    if (installed && release < *installed) {
        throw Error(
            ErrorCode::untrusted,
            std::string(where) + ": release " + std::to_string(release) + " of '" +
                std::string(model_id) + "' is older than release " + std::to_string(*installed) +
                " already installed on this device (rollback refused; " + path_.string() + ")");
    }
}

void InstalledReleases::record(std::string_view key_id, std::string_view model_id,
                               std::uint64_t release) {
    if (const std::size_t at = position(key_id, model_id); at < entries_.size()) {
        if (entries_[at].release >= release) return;
        entries_[at].release = release;
    } else {
        entries_.push_back({std::string(key_id), std::string(model_id), release});
    }
    Json json{{"format", "bitinc-installed"}, {"releases", Json::array()}};
    for (const Entry& entry : entries_) {
        json["releases"].push_back(Json{
            {"key_id", entry.key_id}, {"model_id", entry.model_id}, {"release", entry.release}});
    }
    std::error_code error;
    std::filesystem::create_directories(path_.parent_path(), error);
    core::write_file_atomically(path_, json.dump(2) + "\n");
}

std::filesystem::path InstalledReleases::default_path() {
    if (const char* state = std::getenv("XDG_STATE_HOME"); state != nullptr && *state != '\0')
        return std::filesystem::path(state) / "bitinc" / "installed.json";
    const char* home = std::getenv("HOME");
    return std::filesystem::path(home != nullptr && *home != '\0' ? home : ".") / ".local" /
           "state" / "bitinc" / "installed.json";
}

// ---- the device's check -----------------------------------------------------

Manifest check_trusted_manifest(std::string_view public_pem, std::string_view manifest_bytes,
                                std::string_view signature_text, const InstalledReleases* installed,
                                std::string_view where) {
    verify_manifest_signature(public_pem, manifest_bytes, signature_text, where);
    Manifest manifest = parse_manifest(manifest_bytes, where);
    if (!manifest.release)
        throw Error(ErrorCode::untrusted,
                    std::string(where) + ": signed, but names no release (format 6)");
    if (installed != nullptr) {
        installed->check(key_id_of(public_pem), manifest.release->model_id,
                         manifest.release->number, where);
    }
    return manifest;
}

std::function<void(std::string_view, std::string_view)> trusted_manifest_check(
    std::string public_pem, std::filesystem::path installed_releases) {
    (void)key_id_of(public_pem);  // a bad key fails here, not at the first package
    return [public_pem = std::move(public_pem), installed_releases = std::move(installed_releases)](
               std::string_view manifest, std::string_view signature) {
        std::optional<InstalledReleases> installed;
        if (!installed_releases.empty()) installed.emplace(installed_releases);
        check_trusted_manifest(public_pem, manifest, signature, installed ? &*installed : nullptr,
                               "manifest.json");
    };
}

}  // namespace bitinc
