// Error codes (issue 14): each kind of failure carries its ErrorCode, the C
// API returns the matching status, and every code has a stable name.
#include <gtest/gtest.h>

#include <bitinc/bitinc.h>

#include <bitinc/bitinc.hpp>
#include <functional>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace bitinc {
namespace {

namespace fs = std::filesystem;
using testing::slurp;
using testing::spit;
using testing::TemporaryDirectory;

// The code of the Error `work` throws; fails the test if it throws none.
ErrorCode code_of(const std::function<void()>& work) {
    try {
        work();
    } catch (const Error& error) {
        return error.code();
    }
    ADD_FAILURE() << "no Error thrown";
    return ErrorCode::internal;
}

// The bundled small model packed with a 4,8 ladder, once for all tests.
class ErrorCodes : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        directory_ = new TemporaryDirectory;
        PackOptions options;
        options.ladder = LadderPlan::parse("4,8");
        pack_model(testing::source_dir() / "models" / "small-cnn.onnx", options, package());
    }
    static void TearDownTestSuite() {
        delete directory_;
        directory_ = nullptr;
    }
    static fs::path package() { return directory_->path() / "package"; }
    static std::string manifest_text() { return slurp(package() / "manifest.json"); }

    static TemporaryDirectory* directory_;
};
TemporaryDirectory* ErrorCodes::directory_ = nullptr;

TEST(ErrorCodeNames, AreStableAndLowercase) {
    EXPECT_EQ(error_code_name(ErrorCode::invalid_argument), "invalid_argument");
    EXPECT_EQ(error_code_name(ErrorCode::corrupt_data), "corrupt_data");
    EXPECT_EQ(error_code_name(ErrorCode::io), "io");
    EXPECT_EQ(error_code_name(ErrorCode::network), "network");
    EXPECT_EQ(error_code_name(ErrorCode::unsupported), "unsupported");
    EXPECT_EQ(error_code_name(ErrorCode::cancelled), "cancelled");
    EXPECT_EQ(error_code_name(ErrorCode::out_of_memory), "out_of_memory");
    EXPECT_EQ(error_code_name(ErrorCode::untrusted), "untrusted");
    EXPECT_EQ(error_code_name(ErrorCode::not_ready), "not_ready");
    EXPECT_EQ(error_code_name(ErrorCode::unavailable), "unavailable");
    EXPECT_EQ(error_code_name(ErrorCode::internal), "internal");
    // The message stays one printable line whatever the code.
    const Error error(ErrorCode::io, "a\nb");
    EXPECT_STREQ(error.what(), "a\\x0ab");
    EXPECT_EQ(error.code(), ErrorCode::io);
}

TEST(ErrorCodesOfUnits, TruncatedIsCorruptAndAnotherVersionUnsupported) {
    const std::vector<float> values(100, 0.5f);
    const std::vector<std::uint8_t> unit =
        encode_exact_unit(UnitTarget{0, values.size(), 0, values.size()}, values);
    const std::vector<std::uint8_t> cut(unit.begin(), unit.end() - 1);
    EXPECT_EQ(code_of([&] { read_unit_header(cut, "cut"); }), ErrorCode::corrupt_data);
    std::vector<std::uint8_t> older = unit;
    older[4] -= 1;  // the unit format version
    EXPECT_EQ(code_of([&] { read_unit_header(older, "older"); }), ErrorCode::unsupported);
    std::vector<std::uint8_t> newer = unit;
    newer[4] += 1;
    EXPECT_EQ(code_of([&] { read_unit_header(newer, "newer"); }), ErrorCode::unsupported);
}

TEST(ErrorCodesOfOptions, BadLadderIsInvalidArgument) {
    EXPECT_EQ(code_of([] { LadderPlan::parse("8,4"); }), ErrorCode::invalid_argument);
    EXPECT_EQ(code_of([] { LadderPlan::parse("four"); }), ErrorCode::invalid_argument);
}

TEST(ErrorCodesOfFiles, MissingIsIoAndTruncatedModelCorrupt) {
    TemporaryDirectory directory;
    EXPECT_EQ(code_of([&] { read_onnx_file(directory.path() / "missing.onnx"); }), ErrorCode::io);
    EXPECT_EQ(code_of([&] { read_manifest(directory.path()); }), ErrorCode::io);
    const std::string model = slurp(testing::source_dir() / "models" / "small-cnn.onnx");
    spit(directory.path() / "cut.onnx", model.substr(0, model.size() / 2));
    EXPECT_EQ(code_of([&] { read_onnx_file(directory.path() / "cut.onnx"); }),
              ErrorCode::corrupt_data);
}

TEST_F(ErrorCodes, ATruncatedPackageIsCorruptData) {
    TemporaryDirectory copy;
    fs::copy(package(), copy.path() / "package");
    const Manifest manifest = read_manifest(package());
    const fs::path rung = copy.path() / "package" / manifest.rungs.front().data.file;
    const std::string bytes = slurp(rung);
    spit(rung, bytes.substr(0, bytes.size() - 10));
    EXPECT_EQ(code_of([&] { unpack_package(copy.path() / "package", 8, false); }),
              ErrorCode::corrupt_data);
    EXPECT_EQ(code_of([&] { parse_manifest(manifest_text().substr(0, 50), "cut"); }),
              ErrorCode::corrupt_data);
}

TEST_F(ErrorCodes, ANewerPackageFormatIsUnsupported) {
    Manifest manifest = parse_manifest(manifest_text(), "test");
    manifest.format_version = 99;
    EXPECT_EQ(code_of([&] { parse_manifest(serialize_manifest(manifest), "newer"); }),
              ErrorCode::unsupported);
}

TEST_F(ErrorCodes, AnIndexPastTheEndIsAnErrorNotOutOfRange) {
    const Manifest manifest = read_manifest(package());
    EXPECT_EQ(code_of([&] { manifest.tensor_ladder(manifest.tensors.size()); }),
              ErrorCode::invalid_argument);
    EXPECT_EQ(code_of([&] { manifest.tensor_bits(0, 99); }), ErrorCode::invalid_argument);
}

TEST(ErrorCodesOfTrust, AnotherKeysSignatureIsUntrusted) {
    const SigningKeyPair key = generate_signing_key();
    const SigningKeyPair other = generate_signing_key();
    const std::string manifest = R"({"format": "bitinc-package"})";
    const std::string signature = sign_manifest(other.private_pem, manifest);
    EXPECT_EQ(code_of([&] { verify_manifest_signature(key.public_pem, manifest, signature, "m"); }),
              ErrorCode::untrusted);
    EXPECT_EQ(code_of([&] { verify_manifest_signature(key.public_pem, manifest, "junk", "m"); }),
              ErrorCode::untrusted);
}

TEST(ErrorCodesOfFetch, AClosedPortIsNetwork) {
    FetchOptions options;
    options.max_attempts = 1;
    options.timeout_seconds = 5;
    // Port 1 (tcpmux) is closed on any test machine: the connection is refused.
    EXPECT_EQ(code_of([&] { fetch_package("http://127.0.0.1:1/package/", options); }),
              ErrorCode::network);
    EXPECT_EQ(code_of([&] { fetch_package("ftp://host/package/", options); }),
              ErrorCode::invalid_argument);
}

TEST_F(ErrorCodes, AMissingLocalPackageIsIo) {
    FetchOptions options;
    options.max_attempts = 1;
    EXPECT_EQ(code_of([&] {
                  fetch_package("file://" + (directory_->path() / "nothing").string(), options);
              }),
              ErrorCode::io);
}

// The C API's status for each: a pointer, a damaged or newer manifest, a
// refusal of the app's check, a snapshot too early.
TEST_F(ErrorCodes, TheCApiReturnsTheMatchingStatus) {
    const auto push_manifest = [](const bitinc_decoder_options* options, const std::string& text) {
        bitinc_decoder* decoder = nullptr;
        EXPECT_EQ(bitinc_decoder_create(options, &decoder), BITINC_OK);
        const int status = bitinc_decoder_push_manifest(
            decoder, reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
        bitinc_decoder_destroy(decoder);
        return status;
    };
    EXPECT_EQ(push_manifest(nullptr, manifest_text()), BITINC_OK);
    EXPECT_EQ(push_manifest(nullptr, manifest_text().substr(0, 50)), BITINC_ERROR_INVALID_DATA);
    Manifest newer = parse_manifest(manifest_text(), "test");
    newer.format_version = 99;
    EXPECT_EQ(push_manifest(nullptr, serialize_manifest(newer)), BITINC_ERROR_UNSUPPORTED);
    // A ladder rung the package does not have: the caller's request.
    bitinc_decoder_options asks_for_6_bits{};
    asks_for_6_bits.until_bits = 6;
    EXPECT_EQ(push_manifest(&asks_for_6_bits, manifest_text()), BITINC_ERROR_INVALID_ARGUMENT);

    bitinc_decoder_options refusing{};
    refusing.verify_manifest = [](void*, const std::uint8_t*, std::size_t, const std::uint8_t*,
                                  std::size_t) { return 1; };
    bitinc_decoder* decoder = nullptr;
    ASSERT_EQ(bitinc_decoder_create(&refusing, &decoder), BITINC_OK);
    const std::string text = manifest_text();
    ASSERT_EQ(bitinc_decoder_push_manifest(
                  decoder, reinterpret_cast<const std::uint8_t*>(text.data()), text.size()),
              BITINC_OK);
    EXPECT_EQ(bitinc_decoder_push_signature(decoder, reinterpret_cast<const std::uint8_t*>("s"), 1),
              BITINC_ERROR_UNTRUSTED);
    std::uint8_t* bytes = nullptr;
    std::size_t size = 0;
    EXPECT_EQ(bitinc_decoder_snapshot_onnx(decoder, &bytes, &size), BITINC_ERROR_NOT_READY);
    EXPECT_EQ(bitinc_decoder_give_up(decoder, "elsewhere.bin", 0, 1), BITINC_ERROR_UNAVAILABLE);
    bitinc_decoder_destroy(decoder);

    EXPECT_STREQ(bitinc_status_string(BITINC_ERROR_IO), "input/output error");
    EXPECT_STREQ(bitinc_status_string(BITINC_ERROR_UNSUPPORTED), "unsupported");
    EXPECT_STREQ(bitinc_status_string(BITINC_ERROR_NETWORK), "network error");
    EXPECT_STREQ(bitinc_status_string(BITINC_ERROR_CANCELLED), "cancelled");
}

}  // namespace
}  // namespace bitinc
