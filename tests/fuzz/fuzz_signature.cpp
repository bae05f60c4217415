// Fuzz target: a signed package's signature file (manifest.json.sig), which
// a device reads from the network before it trusts anything. The first byte
// picks what the rest is: 0, a signature file checked against a fixed
// manifest; 1, a manifest checked against a genuine signature of the fixed
// manifest. Anything may be refused with an Error; a manifest other than
// the signed one must never pass.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "bitinc/error.hpp"
#include "bitinc/trust.hpp"

namespace {

// A key made for this target only (openssl genpkey -algorithm ed25519).
constexpr std::string_view private_key =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIH8Y2eOlYi+lAJyFWm4M2HCNUJFppVbdlULguntU8kIJ\n"
    "-----END PRIVATE KEY-----\n";
constexpr std::string_view public_key =
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEArKon50GgI0HnSQpbhGHS4HTzsNSTpzK+u3GbFBh8HtI=\n"
    "-----END PUBLIC KEY-----\n";
constexpr std::string_view signed_manifest = R"({"format":"bitinc-package"})";

const std::string& genuine_signature() {
    static const std::string signature = bitinc::sign_manifest(private_key, signed_manifest);
    return signature;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
    try {
        if (data[0] % 2 == 0) {
            bitinc::verify_manifest_signature(public_key, signed_manifest, rest, "fuzz");
        } else {
            bitinc::verify_manifest_signature(public_key, rest, genuine_signature(), "fuzz");
            if (rest != signed_manifest) __builtin_trap();  // a forgery passed
        }
    } catch (const bitinc::Error&) {
    }
    return 0;
}
