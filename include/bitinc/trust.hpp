// Signed packages (docs/format.md §8, docs/security.md): a publisher signs
// the exact bytes of a package's manifest with Ed25519, and the manifest
// names every file of the package with its size and SHA-256, so a device
// that trusts the publisher's public key can check every byte it receives
// before using it. A release number in the signed manifest, and the highest
// one a device has installed per model and key, refuse rollbacks.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bitinc/manifest.hpp"

namespace bitinc {

// An Ed25519 key pair as PEM text: PKCS #8 for the private key,
// SubjectPublicKeyInfo for the public one (what `openssl pkey` reads).
struct SigningKeyPair {
    std::string private_pem;
    std::string public_pem;
};
SigningKeyPair generate_signing_key();

// Writes KEY (private, mode 0600) and KEY.pub. Refuses to overwrite an
// existing file unless `overwrite`.
void write_signing_key(const SigningKeyPair& key, const std::filesystem::path& private_path,
                       bool overwrite);

// The key id: lowercase hex of the SHA-256 of the raw 32-byte public key.
// Throws Error if `pem` is not an Ed25519 key (private keys give their
// public key's id).
std::string key_id_of(std::string_view pem);

// The signature file's text for `message` (the manifest's bytes), signed
// with the private key in `private_pem`.
std::string sign_manifest(std::string_view private_pem, std::string_view manifest_bytes);

// Checks that `signature_text` (a signature file) signs `manifest_bytes`
// with the key in `public_pem`. Throws Error, starting with `where`, saying
// why not: a malformed signature file, another key, or a signature that
// does not verify.
void verify_manifest_signature(std::string_view public_pem, std::string_view manifest_bytes,
                               std::string_view signature_text, std::string_view where);

// The same for a package directory on disk: its manifest.json and
// manifest.json.sig.
void verify_package_signature(const std::filesystem::path& directory, std::string_view public_pem);

// Whether a PEM text holds a private key (else a public one).
bool is_private_key(std::string_view pem);

// Reads a PEM key file (at most 64 KiB) and checks it is an Ed25519 key.
std::string read_key_file(const std::filesystem::path& path);

// The highest release of each (key, model) a device has installed, kept in
// a small JSON file that survives restarts; written atomically.
class InstalledReleases {
  public:
    // Loads `path` (no file: nothing installed yet). A damaged file is an
    // Error, not an empty one: starting over would let an old release in.
    explicit InstalledReleases(std::filesystem::path path);

    std::optional<std::uint64_t> highest(std::string_view key_id, std::string_view model_id) const;
    // Throws Error if `release` is below the highest installed (a rollback).
    void check(std::string_view key_id, std::string_view model_id, std::uint64_t release,
               std::string_view where) const;
    // Records `release` if it is the highest yet, and saves the file.
    void record(std::string_view key_id, std::string_view model_id, std::uint64_t release);

    // The default file: $XDG_STATE_HOME/bitinc/installed.json, else
    // ~/.local/state/bitinc/installed.json.
    static std::filesystem::path default_path();

  private:
    struct Entry {
        std::string key_id;
        std::string model_id;
        std::uint64_t release = 0;
    };
    // Where (key_id, model_id) is in entries_, or entries_.size().
    std::size_t position(std::string_view key_id, std::string_view model_id) const;

    std::filesystem::path path_;
    std::vector<Entry> entries_;  // as loaded, then as recorded
};

// What a device checks of a signed manifest before using it: the signature
// with `public_pem`, then (the manifest parsed) that it names a release and
// that the release is not below the highest installed for its model and
// this key in `installed` (none: no rollback check). Returns the parsed
// manifest. Throws Error, starting with `where`, otherwise. Bound into a
// DecoderOptions::verify_manifest by trusted_manifest_check.
Manifest check_trusted_manifest(std::string_view public_pem, std::string_view manifest_bytes,
                                std::string_view signature_text, const InstalledReleases* installed,
                                std::string_view where);

// A DecoderOptions::verify_manifest for the push decoder: the checks of
// check_trusted_manifest, the installed releases read from
// `installed_releases` (empty: no rollback check) when the check runs.
std::function<void(std::string_view, std::string_view)> trusted_manifest_check(
    std::string public_pem, std::filesystem::path installed_releases = {});

}  // namespace bitinc
