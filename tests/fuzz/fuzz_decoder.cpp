// Fuzz target: PackageDecoder fed what a hostile network could deliver —
// ranges of the genuine package in any order and size, with flipped bytes,
// ranges given up, a manifest cut short or mutated — between calls for
// events. Every fault must be an Error or an event; nothing may crash, hang
// or read out of bounds. The package is the bundled small-cnn with small
// chunks and an exact rung, packed once.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "bitinc/decoder.hpp"
#include "bitinc/error.hpp"
#include "bitinc/package.hpp"

#ifndef BITINC_SOURCE_DIR
#error "BITINC_SOURCE_DIR must name the source tree (for models/small-cnn.onnx)"
#endif

namespace {

namespace fs = std::filesystem;

struct Fixture {
    std::string manifest;
    std::vector<std::pair<std::string, std::string>> files;  // name, bytes
};

std::string read_whole(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    return bytes.str();
}

Fixture make_fixture() {
    const fs::path directory =
        fs::temp_directory_path() / ("bitinc-fuzz-decoder-" + std::to_string(::getpid()));
    bitinc::PackOptions options;
    options.ladder = bitinc::LadderPlan::parse("4,8,exact");
    options.ladder.per_channel = true;
    options.chunk_elements = 4096;
    options.threads = 1;
    options.replace = true;
    bitinc::pack_model(fs::path(BITINC_SOURCE_DIR) / "models" / "small-cnn.onnx", options,
                       directory);
    Fixture fixture;
    fixture.manifest = read_whole(directory / bitinc::manifest_file_name);
    const bitinc::Manifest manifest = bitinc::read_manifest(directory);
    for (const bitinc::RungEntry& rung : manifest.rungs)
        fixture.files.emplace_back(rung.data.file, read_whole(directory / rung.data.file));
    std::error_code ignored;
    fs::remove_all(directory, ignored);
    return fixture;
}

const Fixture& fixture() {
    static const Fixture instance = make_fixture();
    return instance;
}

std::span<const std::uint8_t> as_bytes(const std::string& text) {
    return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const Fixture& package = fixture();
    // The first byte picks the target; then 8-byte commands.
    bitinc::DecoderOptions options;
    if (size > 0) {
        options.direct = (data[0] & 1) != 0;
        options.until_bits = (data[0] & 2) ? 8 : 0;
    }
    bitinc::PackageDecoder decoder(options, "fuzz");
    try {
        std::string manifest = package.manifest;
        if (size > 1 && data[1] < 16) {
            // A damaged manifest: cut short, or a byte changed.
            if (data[1] < 8) {
                manifest.resize(manifest.size() * data[1] / 8);
            } else {
                manifest[(std::size_t(data[1]) * 7919) % manifest.size()] ^= 0x11;
            }
        }
        decoder.push_manifest(as_bytes(manifest));
        for (std::size_t at = 2; at + 8 <= size; at += 8) {
            const std::uint8_t* command = data + at;
            const auto& [name, bytes] = package.files[command[1] % package.files.size()];
            const std::uint64_t offset =
                (std::uint64_t(command[2]) | std::uint64_t(command[3]) << 8 |
                 std::uint64_t(command[4]) << 16) %
                (bytes.size() + 1);
            const std::uint64_t length = std::min<std::uint64_t>(
                std::uint64_t(command[5]) | std::uint64_t(command[6]) << 8, bytes.size() - offset);
            switch (command[0] % 5) {
                case 0:
                case 1: {  // a genuine range, or one with a byte flipped
                    std::string piece = bytes.substr(offset, length);
                    if (command[0] % 5 == 1 && !piece.empty())
                        piece[command[7] % piece.size()] ^= 0x40;
                    decoder.push(name, offset, as_bytes(piece));
                    break;
                }
                case 2:  // whatever the decoder asks for next, genuine
                    for (const bitinc::ByteRange& range : decoder.next_event().wanted) {
                        for (const auto& [file, contents] : package.files) {
                            if (file != range.file || range.begin >= contents.size()) continue;
                            const std::uint64_t end =
                                std::min<std::uint64_t>(range.end, contents.size());
                            decoder.push(file, range.begin,
                                         as_bytes(contents.substr(range.begin, end - range.begin)));
                        }
                    }
                    break;
                case 3:
                    try {
                        decoder.give_up({name, offset, offset + length});
                    } catch (const bitinc::Error&) {
                    }
                    break;
                default:
                    decoder.next_event();
                    if (decoder.has_model()) decoder.snapshot();
            }
        }
        for (int i = 0; i < 64 && decoder.next_event().kind != bitinc::DecoderEvent::Kind::done;
             ++i) {
        }
    } catch (const bitinc::Error&) {
    }
    return 0;
}
