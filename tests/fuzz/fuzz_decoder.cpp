// Fuzz target: PackageDecoder fed what a hostile network could deliver —
// ranges of the genuine package in any order and size, with flipped bytes,
// ranges given up, a manifest cut short or mutated — between calls for
// events. Every fault must be an Error or an event; nothing may crash, hang
// or read out of bounds. The package is the bundled small-cnn with small
// chunks and an exact rung, packed once.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "bitinc/decoder.hpp"
#include "bitinc/error.hpp"
#include "bitinc/package.hpp"
#include "packed_fixture.hpp"

namespace {

using Fixture = bitinc::fuzzing::PackedFixture;

Fixture make_fixture() {
    bitinc::PackOptions options;
    options.ladder = bitinc::LadderPlan::parse("4,8,exact");
    options.ladder.per_channel = true;
    options.chunk_elements = 4096;
    return bitinc::fuzzing::pack_small_cnn(options, "decoder");
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
        std::string manifest = package.manifest_text;
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
            const std::size_t file = command[1] % package.rung_files.size();
            const std::string& name = package.manifest.rungs[file].data.file;
            const std::string& bytes = package.rung_files[file];
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
                        for (std::size_t r = 0; r < package.rung_files.size(); ++r) {
                            const std::string& contents = package.rung_files[r];
                            if (package.manifest.rungs[r].data.file != range.file ||
                                range.begin >= contents.size())
                                continue;
                            const std::uint64_t end =
                                std::min<std::uint64_t>(range.end, contents.size());
                            decoder.push(range.file, range.begin,
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
