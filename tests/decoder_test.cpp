// The push decoder (include/bitinc/decoder.hpp) driven as an app would
// drive it: bytes in any chunking and order, damaged units pushed again,
// ranges given up.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <random>
#include <thread>

#include "bitinc/bitinc.hpp"
#include "bitinc/decoder.hpp"
#include "test_support.hpp"

namespace bitinc {
namespace {

namespace fs = std::filesystem;
using Kind = DecoderEvent::Kind;
using testing::slurp;
using testing::TemporaryDirectory;

struct Drive {
    std::vector<Kind> events;
    std::vector<DecoderEvent> damaged;
};

// Answers every need_input from the package directory, each range in pieces
// of random size pushed in random order. `spoil` may change a piece's bytes
// before it is pushed; `skip` may give a range up instead of pushing it.
Drive drive(PackageDecoder& decoder, const fs::path& package, unsigned seed,
            std::size_t largest_piece,
            const std::function<void(const ByteRange&, std::uint64_t, std::string&)>& spoil = {},
            const std::function<bool(const ByteRange&)>& skip = {}) {
    std::mt19937 random(seed);
    Drive drive;
    for (int step = 0; step < 100000; ++step) {
        DecoderEvent event = decoder.next_event();
        drive.events.push_back(event.kind);
        if (event.kind == Kind::done) return drive;
        if (event.kind == Kind::unit_damaged) drive.damaged.push_back(event);
        if (event.kind != Kind::need_input) continue;
        EXPECT_FALSE(event.wanted.empty());
        for (const ByteRange& range : event.wanted) {
            const std::string file = slurp(package / range.file);
            if (range.file == manifest_file_name) {
                decoder.push_manifest(
                    std::span(reinterpret_cast<const std::uint8_t*>(file.data()), file.size()));
                continue;
            }
            if (skip && skip(range)) {
                decoder.give_up(range);
                continue;
            }
            std::vector<std::pair<std::uint64_t, std::string>> pieces;
            std::uniform_int_distribution<std::size_t> size(1, largest_piece);
            for (std::uint64_t at = range.begin; at < range.end;) {
                const std::uint64_t length = std::min<std::uint64_t>(size(random), range.end - at);
                pieces.emplace_back(at, file.substr(at, length));
                at += length;
            }
            std::shuffle(pieces.begin(), pieces.end(), random);
            for (auto& [offset, bytes] : pieces) {
                if (spoil) spoil(range, offset, bytes);
                decoder.push(
                    range.file, offset,
                    std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()));
            }
        }
    }
    ADD_FAILURE() << "the decoder never finished";
    return drive;
}

DecoderOptions target(bool direct, int until_bits, bool until_accuracy_point) {
    DecoderOptions options;
    options.direct = direct;
    options.until_bits = until_bits;
    options.until_accuracy_point = until_accuracy_point;
    return options;
}

class Decoder : public ::testing::Test {
  protected:
    void SetUp() override {
        PackOptions options;
        options.ladder = LadderPlan::parse("4,8,exact");
        options.ladder.per_channel = true;
        options.chunk_elements = 5000;  // many units a rung
        options.direct_bits = {8};
        options.threads = 2;
        pack_model(testing::source_dir() / "models" / "small-cnn.onnx", options, package_);
        manifest_ = read_manifest(package_);
    }
    std::string rebuilt(int bits, bool direct = false) const {
        return serialize_onnx(unpack_package(package_, bits, direct));
    }
    TemporaryDirectory directory_;
    fs::path package_ = directory_.path() / "p";
    Manifest manifest_;
};

TEST_F(Decoder, WholeFilesReachTheExactRungWithEveryEventInOrder) {
    PackageDecoder decoder;
    const Drive result = drive(decoder, package_, 1, std::size_t(1) << 30);
    EXPECT_EQ(result.events.front(), Kind::need_input);
    std::vector<Kind> milestones;
    for (const Kind kind : result.events)
        if (kind != Kind::need_input) milestones.push_back(kind);
    EXPECT_EQ(milestones,
              (std::vector<Kind>{Kind::manifest_ready, Kind::topology_ready, Kind::rung_ready,
                                 Kind::rung_ready, Kind::rung_ready, Kind::done}));
    EXPECT_TRUE(decoder.has_model());
    EXPECT_EQ(serialize_onnx(decoder.snapshot()), rebuilt(exact_rung_bits));
    EXPECT_EQ(serialize_onnx(decoder.snapshot()),
              serialize_onnx(read_onnx_file(testing::source_dir() / "models" / "small-cnn.onnx")));
    EXPECT_EQ(decoder.next_event().kind, Kind::done);  // and stays done
}

TEST_F(Decoder, AnyChunkingAndOrderGivesTheSameModel) {
    for (const unsigned seed : {2u, 3u, 4u}) {
        for (const std::size_t largest : {std::size_t(1), std::size_t(97), std::size_t(20000)}) {
            if (largest == 1 && seed != 2) continue;  // byte by byte once is enough
            PackageDecoder decoder;
            drive(decoder, package_, seed, largest);
            EXPECT_EQ(serialize_onnx(decoder.snapshot()), rebuilt(exact_rung_bits))
                << "seed " << seed << ", pieces up to " << largest;
        }
    }
}

TEST_F(Decoder, StopsWhereAskedOrDecodesTheDirectRung) {
    PackageDecoder until_8(target(false, 8, false));
    drive(until_8, package_, 5, 3000);
    EXPECT_EQ(serialize_onnx(until_8.snapshot()), rebuilt(8));
    PackageDecoder direct(target(true, 0, false));
    drive(direct, package_, 6, 3000);
    EXPECT_EQ(serialize_onnx(direct.snapshot()), rebuilt(8, true));
    // The package has no 16-bit rung, nor an accuracy point.
    PackageDecoder missing(target(false, 16, false));
    const std::string manifest = slurp(package_ / manifest_file_name);
    const std::span bytes(reinterpret_cast<const std::uint8_t*>(manifest.data()), manifest.size());
    EXPECT_THROW(missing.push_manifest(bytes), Error);
    PackageDecoder point(target(false, 0, true));
    EXPECT_THROW(point.push_manifest(bytes), Error);
}

TEST_F(Decoder, ADamagedUnitIsAskedForAgain) {
    const RungEntry& refinement = manifest_.rungs[1];
    const UnitEntry& unit = refinement.units[2];
    bool spoiled = false;
    PackageDecoder decoder;
    const Drive result =
        drive(decoder, package_, 7, 700,
              [&](const ByteRange& range, std::uint64_t offset, std::string& bytes) {
                  const std::uint64_t target = unit.offset + unit.length / 2;
                  if (!spoiled && range.file == refinement.data.file && offset <= target &&
                      target < offset + bytes.size()) {
                      bytes[target - offset] ^= 0x20;
                      spoiled = true;
                  }
              });
    ASSERT_TRUE(spoiled);
    ASSERT_EQ(result.damaged.size(), 1u);
    ASSERT_EQ(result.damaged[0].wanted.size(), 1u);
    EXPECT_EQ(result.damaged[0].wanted[0].file, refinement.data.file);
    EXPECT_EQ(result.damaged[0].wanted[0].begin, unit.offset);
    EXPECT_EQ(result.damaged[0].wanted[0].end, unit.offset + unit.length);
    EXPECT_NE(result.damaged[0].message.find("SHA-256"), std::string::npos)
        << result.damaged[0].message;
    EXPECT_EQ(serialize_onnx(decoder.snapshot()), rebuilt(exact_rung_bits));
}

TEST_F(Decoder, ADamagedTopologyIsFetchedAgain) {
    bool spoiled = false;
    PackageDecoder decoder;
    const Drive result = drive(decoder, package_, 8, 500,
                               [&](const ByteRange&, std::uint64_t offset, std::string& bytes) {
                                   if (!spoiled && offset == 0) {
                                       bytes[0] ^= 1;
                                       spoiled = true;
                                   }
                               });
    ASSERT_TRUE(spoiled);
    ASSERT_EQ(result.damaged.size(), 1u);
    EXPECT_EQ(result.damaged[0].wanted[0].begin, 0u);
    EXPECT_EQ(result.damaged[0].wanted[0].end, manifest_.topology.bytes);
    EXPECT_EQ(serialize_onnx(decoder.snapshot()), rebuilt(exact_rung_bits));
}

TEST_F(Decoder, GivingUpARefinementDegradesItsChunksOnly) {
    const RungEntry& refinement = manifest_.rungs[1];
    PackageDecoder decoder;
    const Drive result = drive(decoder, package_, 9, 4000, {}, [&](const ByteRange& range) {
        return range.file == refinement.data.file;
    });
    EXPECT_NE(std::find(result.events.begin(), result.events.end(), Kind::degraded),
              result.events.end());
    // Every refinement unit was lost, so every exact unit was skipped: the
    // model is the base rung's.
    EXPECT_EQ(decoder.assembler()->reached_rung_bits(), 4);
    EXPECT_EQ(serialize_onnx(decoder.snapshot()), rebuilt(4));
}

// A package whose manifest names an accuracy point three units into the
// refinement: a decoder told to stop there holds exactly those units.
TEST_F(Decoder, StopsAtTheAccuracyPointOrReportsItOnTheWay) {
    Manifest manifest = manifest_;
    AccuracyPoint point;
    point.rung = 1;
    point.units = 3;
    point.metric = "top1_percent";
    manifest.accuracy_point = point;
    testing::spit(package_ / manifest_file_name, serialize_manifest(manifest));

    PackageDecoder decoder(target(false, 0, true));
    const Drive result = drive(decoder, package_, 11, 3000);
    std::vector<Kind> milestones;
    for (const Kind kind : result.events)
        if (kind != Kind::need_input) milestones.push_back(kind);
    EXPECT_EQ(milestones,
              (std::vector<Kind>{Kind::manifest_ready, Kind::topology_ready, Kind::rung_ready,
                                 Kind::accuracy_point_ready, Kind::done}));
    ModelAssembler expected(manifest, slurp(package_ / manifest.topology.file), "expected");
    for (std::size_t r = 0; r < 2; ++r) {
        const RungEntry& rung = manifest.rungs[r];
        const std::string file = slurp(package_ / rung.data.file);
        for (std::size_t u = 0; u < (r == 0 ? rung.units.size() : 3); ++u) {
            const auto bytes = unit_bytes(file, rung.units[u]);
            expected.apply_unit(r, u,
                                {reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()},
                                "expected");
        }
    }
    EXPECT_EQ(serialize_onnx(decoder.snapshot()), serialize_onnx(expected.model()));

    // Going on to the top, the point is reported on the way.
    PackageDecoder through;
    const Drive all = drive(through, package_, 12, 3000);
    EXPECT_NE(std::find(all.events.begin(), all.events.end(), Kind::accuracy_point_ready),
              all.events.end());
    EXPECT_EQ(serialize_onnx(through.snapshot()), rebuilt(exact_rung_bits));
}

// Worker threads apply the units while bytes go on arriving: the same
// models and milestones in every chunking, a damaged unit asked for again,
// and a given-up refinement degrading as without workers.
TEST_F(Decoder, WorkerThreadsGiveTheSameModelsAndMilestones) {
    DecoderOptions threaded;
    threaded.decode_threads = 2;
    for (const unsigned seed : {21u, 22u}) {
        for (const std::size_t largest : {std::size_t(97), std::size_t(1) << 30}) {
            PackageDecoder decoder(threaded);
            const Drive result = drive(decoder, package_, seed, largest);
            std::vector<Kind> milestones;
            for (const Kind kind : result.events)
                if (kind != Kind::need_input) milestones.push_back(kind);
            EXPECT_EQ(milestones, (std::vector<Kind>{Kind::manifest_ready, Kind::topology_ready,
                                                     Kind::rung_ready, Kind::rung_ready,
                                                     Kind::rung_ready, Kind::done}));
            EXPECT_EQ(serialize_onnx(decoder.snapshot()), rebuilt(exact_rung_bits));
            EXPECT_EQ(decoder.units_applied(), manifest_.rungs[0].units.size() +
                                                   manifest_.rungs[1].units.size() +
                                                   manifest_.rungs[2].units.size());
            // One span per unit applied, on the workers.
            EXPECT_EQ(decoder.take_apply_spans().size(), decoder.units_applied());
            EXPECT_TRUE(decoder.take_apply_spans().empty());
        }
    }
    const RungEntry& refinement = manifest_.rungs[1];
    const UnitEntry& unit = refinement.units[3];
    bool spoiled = false;
    PackageDecoder damaged(threaded);
    const Drive result =
        drive(damaged, package_, 23, 500,
              [&](const ByteRange& range, std::uint64_t offset, std::string& bytes) {
                  if (!spoiled && range.file == refinement.data.file && offset <= unit.offset &&
                      unit.offset < offset + bytes.size()) {
                      bytes[unit.offset - offset] ^= 0x40;
                      spoiled = true;
                  }
              });
    ASSERT_TRUE(spoiled);
    ASSERT_EQ(result.damaged.size(), 1u);
    EXPECT_EQ(result.damaged[0].wanted[0].begin, unit.offset);
    EXPECT_EQ(serialize_onnx(damaged.snapshot()), rebuilt(exact_rung_bits));

    PackageDecoder degraded(threaded);
    drive(degraded, package_, 24, 4000, {},
          [&](const ByteRange& range) { return range.file == refinement.data.file; });
    EXPECT_EQ(degraded.assembler()->reached_rung_bits(), 4);
    EXPECT_EQ(serialize_onnx(degraded.snapshot()), rebuilt(4));
}

// While the caller holds decoding (its first engine is being built), the
// workers start no unit; once released they finish the package.
TEST_F(Decoder, HeldWorkersWaitForRelease) {
    std::atomic<bool> hold{true};
    DecoderOptions options;
    options.decode_threads = 2;
    options.hold_decoding = &hold;
    PackageDecoder decoder(options);
    const auto push_file = [&](const std::string& name) {
        const std::string bytes = slurp(package_ / name);
        const std::span span(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
        if (name == manifest_file_name) {
            decoder.push_manifest(span);
        } else {
            decoder.push(name, 0, span);
        }
    };
    push_file(std::string(manifest_file_name));
    push_file(manifest_.rungs[0].data.file);
    EXPECT_EQ(decoder.next_event().kind, Kind::manifest_ready);
    EXPECT_EQ(decoder.next_event().kind, Kind::topology_ready);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const DecoderEvent waiting = decoder.next_event();  // the next rungs are wanted
    EXPECT_EQ(waiting.kind, Kind::need_input);
    EXPECT_EQ(decoder.units_applied(), 0u);
    hold = false;
    for (const RungEntry* rung : {&manifest_.rungs[1], &manifest_.rungs[2]})
        push_file(rung->data.file);
    Kind kind = Kind::need_input;
    for (int i = 0; i < 10 && kind != Kind::done; ++i) kind = decoder.next_event().kind;
    EXPECT_EQ(kind, Kind::done);
    EXPECT_EQ(serialize_onnx(decoder.snapshot()), rebuilt(exact_rung_bits));
}

TEST_F(Decoder, TheBaseCannotBeGivenUp) {
    PackageDecoder decoder;
    EXPECT_THROW(drive(decoder, package_, 10, 4000, {},
                       [&](const ByteRange& range) { return range.file == "base-4.bin"; }),
                 Error);
}

}  // namespace
}  // namespace bitinc
