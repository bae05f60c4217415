// Signed packages (issue 15, docs/security.md): keys, signatures, and a
// device that trusts one key refusing each attack — a tampered manifest, a
// tampered unit with its CRC recomputed, rung files swapped in from another
// package, a replayed older release, another key, no signature — over
// loopback HTTP and from a directory.
#include <gtest/gtest.h>

#include <bitinc/bitinc.hpp>
#include <random>
#include <tuple>

#include "onnx_builder.hpp"
#include "test_support.hpp"

namespace bitinc {
namespace {

namespace fs = std::filesystem;
using testing::slurp;
using testing::spit;
using testing::TemporaryDirectory;

TEST(Signature, SignsAndVerifiesOnlyTheSameBytesWithTheSameKey) {
    const SigningKeyPair key = generate_signing_key();
    const SigningKeyPair other = generate_signing_key();
    EXPECT_EQ(key_id_of(key.private_pem), key_id_of(key.public_pem));
    EXPECT_NE(key_id_of(key.public_pem), key_id_of(other.public_pem));
    EXPECT_EQ(key_id_of(key.public_pem).size(), 64u);
    const std::string manifest = R"({"format": "bitinc-package"})";
    const std::string signature = sign_manifest(key.private_pem, manifest);
    // Ed25519 signatures are deterministic: the same bytes sign the same.
    EXPECT_EQ(signature, sign_manifest(key.private_pem, manifest));
    EXPECT_NO_THROW(verify_manifest_signature(key.public_pem, manifest, signature, "m"));
    // One changed byte of the manifest, another key, an empty manifest.
    std::string changed = manifest;
    changed[3] ^= 1;
    EXPECT_THROW(verify_manifest_signature(key.public_pem, changed, signature, "m"), Error);
    EXPECT_THROW(verify_manifest_signature(other.public_pem, manifest, signature, "m"), Error);
    EXPECT_THROW(verify_manifest_signature(key.public_pem, "", signature, "m"), Error);
    // Another key's signature with this key's id written in: still refused.
    std::string forged = sign_manifest(other.private_pem, manifest);
    const std::string other_id = key_id_of(other.public_pem);
    forged.replace(forged.find(other_id), other_id.size(), key_id_of(key.public_pem));
    EXPECT_THROW(verify_manifest_signature(key.public_pem, manifest, forged, "m"), Error);
    // Malformed signature files.
    const auto replaced = [&](const std::string& from, const std::string& to) {
        std::string text = signature;
        const std::size_t at = text.find(from);
        EXPECT_NE(at, std::string::npos) << from;
        return text.replace(at, from.size(), to);
    };
    for (const std::string& bad :
         {std::string(), std::string("not json"), std::string("[]"),
          replaced("bitinc-signature", "other-signature"), replaced("ed25519", "rsa"),
          replaced("\"format_version\": 1", "\"format_version\": 2"),
          replaced("\"signature\": \"", "\"signature\": \"00"),
          replaced("\"signature\": \"", "\"signature\": \"X")}) {
        EXPECT_THROW(verify_manifest_signature(key.public_pem, manifest, bad, "m"), Error) << bad;
    }
    EXPECT_THROW(key_id_of("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), Error);
}

// The signature fuzz target's corpus reaches the accepting path: its
// signature file signs its manifest (made with openssl pkeyutl, so it also
// checks that bitinc reads signatures other tools make).
TEST(Signature, TheFuzzCorpusHoldsAGenuineSignature) {
    const fs::path corpus = testing::source_dir() / "tests" / "fuzz" / "corpus" / "signature";
    const std::string signature = slurp(corpus / "genuine.bin").substr(1);
    const std::string manifest = slurp(corpus / "manifest.bin").substr(1);
    const std::string public_key =
        "-----BEGIN PUBLIC KEY-----\n"
        "MCowBQYDK2VwAyEArKon50GgI0HnSQpbhGHS4HTzsNSTpzK+u3GbFBh8HtI=\n"
        "-----END PUBLIC KEY-----\n";
    EXPECT_NO_THROW(verify_manifest_signature(public_key, manifest, signature, "corpus"));
}

TEST(Signature, KeyFilesArePrivateAndNeverOverwritten) {
    TemporaryDirectory directory;
    const fs::path key = directory.path() / "publisher";
    write_signing_key(generate_signing_key(), key, false);
    EXPECT_EQ(fs::status(key).permissions() & fs::perms::all,
              fs::perms::owner_read | fs::perms::owner_write);
    const std::string before = slurp(key);
    EXPECT_THROW(write_signing_key(generate_signing_key(), key, false), Error);
    EXPECT_EQ(slurp(key), before);
    EXPECT_EQ(key_id_of(read_key_file(key)), key_id_of(read_key_file(key.string() + ".pub")));
    spit(directory.path() / "junk", "-----BEGIN PUBLIC KEY-----\n");
    EXPECT_THROW(read_key_file(directory.path() / "junk"), Error);
}

TEST(InstalledReleasesTest, RefusesOlderReleasesAcrossRestarts) {
    TemporaryDirectory directory;
    const fs::path file = directory.path() / "state" / "installed.json";
    {
        InstalledReleases releases(file);
        EXPECT_FALSE(releases.highest("key", "model"));
        EXPECT_NO_THROW(releases.check("key", "model", 1, "here"));
        releases.record("key", "model", 7);
        releases.record("key", "model", 3);  // lower: the record keeps 7
    }
    const InstalledReleases again(file);  // a restart
    EXPECT_EQ(again.highest("key", "model"), 7u);
    EXPECT_NO_THROW(again.check("key", "model", 7, "here"));
    EXPECT_NO_THROW(again.check("key", "model", 8, "here"));
    EXPECT_THROW(again.check("key", "model", 6, "here"), Error);
    // Other models and other keys have their own releases.
    EXPECT_NO_THROW(again.check("key", "other", 1, "here"));
    EXPECT_NO_THROW(again.check("other key", "model", 1, "here"));
    // A damaged record is an error, not a fresh start.
    spit(file, "{\"format\": \"bitinc-installed\", \"releases\": [{\"model_id\": 1}]}");
    EXPECT_THROW(InstalledReleases{file}, Error);
}

// A signed package of a small two-layer model, served from a directory.
class SignedDelivery : public ::testing::Test {
  protected:
    void SetUp() override {
        write_model(directory_.path() / "model.onnx", 7);
        write_model(directory_.path() / "other.onnx", 8);
        key_ = generate_signing_key();
        pack("model", "model.onnx", 5, PackOptions::Signing{key_.private_pem, "the-model", 5});
        expected_ = serialize_onnx(unpack_package(root_ / "model", 8, false));
    }

    static void write_model(const fs::path& path, unsigned seed) {
        std::mt19937 generator(seed);
        std::normal_distribution<float> normal(0.0f, 0.05f);
        std::vector<float> first(64 * 128), second(32 * 64);
        for (float& value : first) value = normal(generator);
        for (float& value : second) value = normal(generator);
        testing::OnnxBuilder builder;
        builder.input("x", {-1, 128}).output("y", {-1, 32});
        builder.initializer("first", {64, 128}, first);
        builder.initializer("second", {32, 64}, second);
        builder.node("Transpose", {"first"}, {"first_t"});
        builder.node("MatMul", {"x", "first_t"}, {"h"});
        builder.node("Transpose", {"second"}, {"second_t"});
        builder.node("MatMul", {"h", "second_t"}, {"y"});
        spit(path, builder.bytes());
    }

    void pack(const std::string& name, const std::string& model, std::uint64_t release,
              std::optional<PackOptions::Signing> signing) {
        PackOptions options;
        options.ladder = LadderPlan::parse("4,8");
        options.chunk_elements = 2048;
        options.replace = true;
        if (signing) signing->release = release;
        options.signing = std::move(signing);
        pack_model(directory_.path() / model, options, root_ / name);
    }

    FetchOptions trusting(const std::string& public_pem) const {
        FetchOptions options;
        options.backoff_initial = 0.01;
        options.backoff_max = 0.02;
        options.max_attempts = 2;
        options.timeout_seconds = 5;
        options.trust = FetchOptions::Trust{public_pem, directory_.path() / "installed.json"};
        return options;
    }

    std::string local(const std::string& name) const { return (root_ / name).string(); }

    TemporaryDirectory directory_;
    fs::path root_ = directory_.path() / "www";
    SigningKeyPair key_;
    std::string expected_;
};

TEST_F(SignedDelivery, ATrustedPackageArrivesOverHttpAndItsReleaseIsRecorded) {
    const auto server = testing::start_package_server(root_, 0, {});
    const FetchResult result = fetch_package(server->url() + "/model/", trusting(key_.public_pem));
    EXPECT_EQ(serialize_onnx(result.model), expected_);
    EXPECT_EQ(result.signer_key_id, key_id_of(key_.public_pem));
    const InstalledReleases installed(directory_.path() / "installed.json");
    EXPECT_EQ(installed.highest(key_id_of(key_.public_pem), "the-model"), 5u);
    // The same release again is fine (a re-install).
    EXPECT_NO_THROW(fetch_package(server->url() + "/model/", trusting(key_.public_pem)));
    // The package is plain static files: a device that trusts no key reads it too.
    FetchOptions plain = trusting(key_.public_pem);
    plain.trust.reset();
    EXPECT_EQ(serialize_onnx(fetch_package(server->url() + "/model/", plain).model), expected_);
}

// The push decoder (device SDK) with the fetch component's check: it wants
// the signature beside the manifest, reads nothing of the manifest before
// the signature verifies, and refuses other keys, tampering and rollbacks.
TEST_F(SignedDelivery, ThePushDecoderChecksTheSignatureBeforeTheManifest) {
    const fs::path installed = directory_.path() / "decoder-installed.json";
    const auto bytes = [](const std::string& text) {
        return std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
    };
    const std::string manifest = slurp(root_ / "model" / "manifest.json");
    const std::string signature = slurp(root_ / "model" / "manifest.json.sig");
    const auto trusting_decoder = [&](const std::string& public_pem) {
        DecoderOptions options;
        options.verify_manifest = trusted_manifest_check(public_pem, installed);
        return PackageDecoder(options, "signed");
    };
    {
        PackageDecoder decoder = trusting_decoder(key_.public_pem);
        DecoderEvent event = decoder.next_event();
        ASSERT_EQ(event.kind, DecoderEvent::Kind::need_input);
        ASSERT_EQ(event.wanted.size(), 2u);
        EXPECT_EQ(event.wanted[0].file, manifest_file_name);
        EXPECT_EQ(event.wanted[1].file, signature_file_name);
        decoder.push_manifest(bytes(manifest));
        EXPECT_FALSE(decoder.has_manifest()) << "read before its signature came";
        event = decoder.next_event();
        ASSERT_EQ(event.wanted.size(), 1u);
        EXPECT_EQ(event.wanted[0].file, signature_file_name);
        decoder.push_signature(bytes(signature));
        ASSERT_TRUE(decoder.has_manifest());
        for (event = decoder.next_event(); event.kind != DecoderEvent::Kind::done;
             event = decoder.next_event()) {
            for (const ByteRange& range : event.wanted) {
                const std::string file = slurp(root_ / "model" / range.file);
                decoder.push(range.file, range.begin,
                             bytes(file.substr(range.begin, range.end - range.begin)));
            }
        }
        EXPECT_EQ(serialize_onnx(decoder.snapshot()), expected_);
    }
    // Another key, a changed manifest, a signature that is not one: refused,
    // the manifest never read.
    std::string changed = manifest;
    changed[changed.find("the-model")] = 'T';
    for (const auto& [public_pem, manifest_bytes, signature_bytes] :
         {std::tuple{generate_signing_key().public_pem, manifest, signature},
          std::tuple{key_.public_pem, changed, signature},
          std::tuple{key_.public_pem, manifest, std::string("{}")}}) {
        PackageDecoder decoder = trusting_decoder(public_pem);
        decoder.push_signature(bytes(signature_bytes));
        EXPECT_THROW(decoder.push_manifest(bytes(manifest_bytes)), Error);
        EXPECT_FALSE(decoder.has_manifest());
    }
    // A release older than one installed.
    InstalledReleases(installed).record(key_id_of(key_.public_pem), "the-model", 6);
    PackageDecoder decoder = trusting_decoder(key_.public_pem);
    decoder.push_manifest(bytes(manifest));
    EXPECT_THROW(decoder.push_signature(bytes(signature)), Error);
    // Without a check the decoder wants no signature and ignores one.
    PackageDecoder plain;
    EXPECT_EQ(plain.next_event().wanted.size(), 1u);
    plain.push_signature(bytes("anything"));
    plain.push_manifest(bytes(manifest));
    EXPECT_TRUE(plain.has_manifest());
}

TEST_F(SignedDelivery, AnOlderReleaseIsRefusedOnceANewerIsInstalled) {
    pack("old", "model.onnx", 4, PackOptions::Signing{key_.private_pem, "the-model", 0});
    pack("new", "model.onnx", 6, PackOptions::Signing{key_.private_pem, "the-model", 0});
    EXPECT_NO_THROW(fetch_package(local("old"), trusting(key_.public_pem)));
    EXPECT_NO_THROW(fetch_package(local("new"), trusting(key_.public_pem)));
    try {
        fetch_package(local("old"), trusting(key_.public_pem));
        FAIL() << "a replayed older release was accepted";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("rollback"), std::string::npos) << error.what();
    }
    // Another model's releases are its own.
    pack("another", "other.onnx", 1, PackOptions::Signing{key_.private_pem, "another-model", 0});
    EXPECT_NO_THROW(fetch_package(local("another"), trusting(key_.public_pem)));
}

TEST_F(SignedDelivery, AReleaseNeedsFormat6AndFormat6NeedsARelease) {
    const std::string text = slurp(root_ / "model" / "manifest.json");
    const Manifest manifest = parse_manifest(text, "signed");
    EXPECT_EQ(manifest.format_version, release_format_version);
    ASSERT_TRUE(manifest.release);
    EXPECT_EQ(manifest.release->model_id, "the-model");
    EXPECT_EQ(manifest.release->number, 5u);
    const auto replaced = [&](const std::string& from, const std::string& to) {
        std::string copy = text;
        const std::size_t at = copy.find(from);
        EXPECT_NE(at, std::string::npos) << from;
        return copy.replace(at, from.size(), to);
    };
    EXPECT_THROW(parse_manifest(replaced("\"format_version\":6", "\"format_version\":5"), "m"),
                 Error);
    EXPECT_THROW(parse_manifest(replaced(",\"release\":", ",\"released\":"), "m"), Error);
    EXPECT_THROW(parse_manifest(replaced("\"model_id\":\"the-model\"", "\"model_id\":\"\""), "m"),
                 Error);
    EXPECT_THROW(parse_manifest(replaced("\"number\":5", "\"number\":-5"), "m"), Error);
    // An unsigned package keeps the oldest format its contents need.
    pack("unsigned", "model.onnx", 0, std::nullopt);
    EXPECT_LT(read_manifest(root_ / "unsigned").format_version, release_format_version);
    EXPECT_FALSE(read_manifest(root_ / "unsigned").release);
}

TEST_F(SignedDelivery, UnsignedMisSignedAndTamperedManifestsAreRefused) {
    // Another key.
    EXPECT_THROW(fetch_package(local("model"), trusting(generate_signing_key().public_pem)), Error);
    // No signature.
    pack("unsigned", "model.onnx", 0, std::nullopt);
    EXPECT_THROW(fetch_package(local("unsigned"), trusting(key_.public_pem)), Error);
    // The manifest changed after signing (here: one unit's CRC entry, as an
    // attacker who also changed that unit would need).
    std::string manifest = slurp(root_ / "model" / "manifest.json");
    Manifest parsed = parse_manifest(manifest, "test");
    parsed.rungs[0].units[0].crc32c ^= 1;
    spit(root_ / "model" / "manifest.json", serialize_manifest(parsed));
    EXPECT_THROW(fetch_package(local("model"), trusting(key_.public_pem)), Error);
    spit(root_ / "model" / "manifest.json", manifest);
    EXPECT_EQ(serialize_onnx(fetch_package(local("model"), trusting(key_.public_pem)).model),
              expected_);
    // Nothing was recorded by the refused fetches but the one that passed.
    const InstalledReleases installed(directory_.path() / "installed.json");
    EXPECT_EQ(installed.highest(key_id_of(key_.public_pem), "the-model"), 5u);
}

TEST_F(SignedDelivery, TamperedUnitsAndSwappedRungFilesNeverReachTheModel) {
    // A base unit changed and its CRC recomputed, the manifest untouched: the
    // unit's SHA-256 in the signed manifest no longer matches, and a base
    // unit cannot be left out.
    const Manifest manifest = read_manifest(root_ / "model");
    const std::string expected_base = serialize_onnx(unpack_package(root_ / "model", 4, false));
    const fs::path base = root_ / "model" / manifest.rungs[0].data.file;
    const std::string base_bytes = slurp(base);
    {
        std::string bytes = base_bytes;
        const UnitEntry& unit = manifest.rungs[0].units[1];
        bytes[unit.offset + unit.length / 2] ^= 0x20;
        const auto* start = reinterpret_cast<const std::uint8_t*>(bytes.data()) + unit.offset;
        const std::uint32_t crc = core::crc32c({start, unit.length - 4});
        for (int i = 0; i < 4; ++i)
            bytes[unit.offset + unit.length - 4 + std::size_t(i)] = char(crc >> (8 * i));
        spit(base, bytes);
        EXPECT_THROW(fetch_package(local("model"), trusting(key_.public_pem)), Error);
        spit(base, base_bytes);
    }
    // The refinement file of another signed package of the same shape (by
    // the same publisher) swapped in: its units do not hash to this
    // manifest's, so the tensors stay at 4 bits (degraded), never at the
    // other model's 8-bit values; strict fetches fail.
    pack("other", "other.onnx", 5, PackOptions::Signing{key_.private_pem, "the-model", 0});
    const std::string refinement = manifest.rungs[1].data.file;
    fs::copy_file(root_ / "other" / refinement, root_ / "model" / refinement,
                  fs::copy_options::overwrite_existing);
    const FetchResult degraded = fetch_package(local("model"), trusting(key_.public_pem));
    EXPECT_FALSE(degraded.degraded_tensors.empty());
    EXPECT_EQ(serialize_onnx(degraded.model), expected_base);
    EXPECT_NE(serialize_onnx(degraded.model),
              serialize_onnx(unpack_package(root_ / "other", 8, false)));
    FetchOptions strict = trusting(key_.public_pem);
    strict.strict = true;
    EXPECT_THROW(fetch_package(local("model"), strict), Error);
}

}  // namespace
}  // namespace bitinc
