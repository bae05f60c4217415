// ProgressiveModel over a ByteSource (the decode component's core: no HTTP,
// no OpenCV): swaps reach the exact rung bit for bit, and a source that
// fails or hands over damaged bytes ends in degraded or failed events with
// the current engine still serving — never a crash.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "bitinc/bitinc.hpp"
#include "bitinc/byte_source.hpp"
#include "test_support.hpp"

namespace bitinc {
namespace {

namespace fs = std::filesystem;
using Kind = ProgressiveEvent::Kind;
using testing::TemporaryDirectory;

// Every weight of the model, in order: an engine output that is exactly the
// model it was built from.
FloatArray all_weights(const Model& model) {
    FloatArray weights;
    for (const Tensor& tensor : model.weights)
        weights.values.insert(weights.values.end(), tensor.values.begin(), tensor.values.end());
    weights.shape = {std::int64_t(weights.values.size())};
    return weights;
}

// A stand-in for an inference engine: it answers any batch with its weights.
class WeightsEngine : public Engine {
  public:
    explicit WeightsEngine(Model model) : weights_(all_weights(model)) {}
    std::string_view name() const override { return "weights"; }
    FloatArray run(const FloatArray&) override { return weights_; }

  private:
    FloatArray weights_;
};

EngineFactory weights_engine_factory() {
    return [](Model model) { return std::make_unique<WeightsEngine>(std::move(model)); };
}

// A directory source with faults: reads of `failing_file` throw; bytes at
// `flip_offset` of `flip_file` arrive inverted (`flips` times, -1: always);
// bytes come in pieces of `piece_bytes`, each after `delay` (a slow link).
class FaultySource : public ByteSource {
  public:
    explicit FaultySource(const fs::path& directory) : inner_(make_directory_source(directory)) {}
    std::string name() const override { return inner_->name(); }
    void read(const ByteRange& range, const ByteSink& sink) override {
        ++reads;
        if (range.file == failing_file)
            throw Error(ErrorCode::network, range.file + ": connection reset (simulated)");
        std::uint64_t at = range.begin;
        inner_->read(range, [&](std::span<const std::uint8_t> bytes) {
            while (!bytes.empty()) {
                const std::size_t length = std::min(bytes.size(), piece_bytes);
                std::vector<std::uint8_t> piece(bytes.begin(), bytes.begin() + length);
                bytes = bytes.subspan(length);
                if (range.file == flip_file && flips != 0 && flip_offset >= at &&
                    flip_offset < at + piece.size()) {
                    piece[flip_offset - at] ^= 0xff;
                    if (flips > 0) --flips;
                }
                at += piece.size();
                std::this_thread::sleep_for(delay);
                if (!sink(piece)) return false;
            }
            return true;
        });
    }

    std::string failing_file;
    std::string flip_file;
    std::uint64_t flip_offset = 0;
    int flips = 0;
    std::size_t piece_bytes = std::size_t{1} << 20;
    std::chrono::milliseconds delay{0};
    std::atomic<int> reads{0};

  private:
    std::unique_ptr<ByteSource> inner_;
};

class ProgressiveSource : public ::testing::Test {
  protected:
    void SetUp() override {
        PackOptions options;
        options.ladder = LadderPlan::parse("4,8,exact");
        options.chunk_elements = 4096;  // many units: many progressive swaps
        options.threads = 2;
        pack_model(testing::source_dir() / "models" / "small-cnn.onnx", options, package_);
        manifest_ = read_manifest(package_);
    }

    ProgressiveOptions options() {
        ProgressiveOptions options;
        options.engine_factory = weights_engine_factory();
        options.on_event = [this](const ProgressiveEvent& event) {
            const std::lock_guard lock(mutex_);
            events_.push_back(event);
        };
        return options;
    }

    std::vector<ProgressiveEvent> events(Kind kind) {
        const std::lock_guard lock(mutex_);
        std::vector<ProgressiveEvent> chosen;
        for (const ProgressiveEvent& event : events_)
            if (event.kind == kind) chosen.push_back(event);
        return chosen;
    }

    // A source whose copy of unit `unit` of rung `rung` is damaged
    // `flips` times (-1: always).
    std::shared_ptr<FaultySource> damaging(std::size_t rung, std::size_t unit, int flips) const {
        auto source = std::make_shared<FaultySource>(package_);
        const UnitEntry& entry = manifest_.rungs[rung].units[unit];
        source->flip_file = manifest_.rungs[rung].data.file;
        source->flip_offset = entry.offset + entry.length / 2;
        source->flips = flips;
        return source;
    }

    std::vector<float> unpacked(int bits) const {
        return all_weights(unpack_package(package_, bits, false)).values;
    }

    TemporaryDirectory directory_;
    fs::path package_ = directory_.path() / "p";
    Manifest manifest_;
    std::mutex mutex_;
    std::vector<ProgressiveEvent> events_;
};

TEST_F(ProgressiveSource, SwapsReachTheExactRungBitForBit) {
    ProgressiveModel model(std::shared_ptr<ByteSource>(make_directory_source(package_)), options());
    ASSERT_TRUE(model.wait_finished(std::chrono::seconds(60)));
    EXPECT_FALSE(model.failure().has_value()) << *model.failure();
    std::vector<int> swapped;
    for (const ProgressiveEvent& event : events(Kind::swapped)) swapped.push_back(event.bits);
    EXPECT_EQ(swapped.back(), exact_rung_bits);
    EXPECT_TRUE(std::is_sorted(swapped.begin(), swapped.end()));
    EXPECT_EQ(events(Kind::complete).size(), 1u);
    EXPECT_EQ(events(Kind::topology_ready).size(), 1u);
    EXPECT_EQ(events(Kind::rung_ready).size(), 3u);
    const Inference result = model.infer({});
    EXPECT_EQ(result.bits, exact_rung_bits);
    EXPECT_EQ(result.output.values, unpacked(exact_rung_bits));
    ASSERT_TRUE(model.topology().has_value());
    EXPECT_EQ(model.topology()->weights.size(), manifest_.tensors.size());
    EXPECT_FALSE(model.fetch_result().has_value());  // no timeline over a byte source
}

TEST_F(ProgressiveSource, ProgressiveModeRebuildsWithinRungsAndEndsExact) {
    ProgressiveOptions progressive = options();
    progressive.swap_every_units = 2;
    progressive.decoder.until_bits = 8;
    auto source = std::make_shared<FaultySource>(package_);
    source->piece_bytes = 2000;
    source->delay = std::chrono::milliseconds(2);
    ProgressiveModel model(source, progressive);
    ASSERT_TRUE(model.wait_finished(std::chrono::seconds(60)));
    EXPECT_FALSE(model.failure().has_value());
    const auto swaps = events(Kind::swapped);
    EXPECT_GT(swaps.size(), 3u);  // the base rung, rebuilds within the 8-bit rung, its end
    for (std::size_t s = 1; s < swaps.size(); ++s)
        EXPECT_GT(swaps[s].units_applied, swaps[s - 1].units_applied);
    EXPECT_EQ(model.bits(), 8);
    EXPECT_EQ(model.infer({}).output.values, unpacked(8));
}

TEST_F(ProgressiveSource, OverHttpWithTheFetchersRetries) {
    const auto server = testing::start_package_server(directory_.path(), 0, {"drop:*:3000:2"});
    FetchOptions fetch;
    fetch.backoff_initial = 0.01;
    std::atomic<int> retries{0};
    fetch.on_event = [&](const FetchEvent& event) {
        if (event.kind == FetchEvent::Kind::retry) ++retries;
    };
    ProgressiveModel model(make_package_source(server->url() + "/p/", fetch), options());
    ASSERT_TRUE(model.wait_finished(std::chrono::seconds(60)));
    EXPECT_FALSE(model.failure().has_value()) << *model.failure();
    EXPECT_GE(retries.load(), 2);  // each drop resumed where its bytes stopped
    EXPECT_EQ(model.infer({}).output.values, unpacked(exact_rung_bits));
}

TEST_F(ProgressiveSource, ASignedPackageIsCheckedBeforeAnyByteIsUsed) {
    const SigningKeyPair key = generate_signing_key();
    PackOptions pack;
    pack.ladder = LadderPlan::parse("4,8,exact");
    pack.signing = PackOptions::Signing{key.private_pem, "small-cnn", 1};
    const fs::path signed_package = directory_.path() / "signed";
    pack_model(testing::source_dir() / "models" / "small-cnn.onnx", pack, signed_package);
    {
        ProgressiveOptions trusting = options();
        trusting.decoder.verify_manifest = trusted_manifest_check(key.public_pem);
        ProgressiveModel model(std::shared_ptr(make_directory_source(signed_package)), trusting);
        ASSERT_TRUE(model.wait_finished(std::chrono::seconds(60)));
        EXPECT_FALSE(model.failure().has_value()) << *model.failure();
        EXPECT_EQ(model.bits(), exact_rung_bits);
    }
    {
        ProgressiveOptions other_key = options();
        other_key.decoder.verify_manifest =
            trusted_manifest_check(generate_signing_key().public_pem);
        ProgressiveModel model(std::shared_ptr(make_directory_source(signed_package)), other_key);
        ASSERT_TRUE(model.wait_finished(std::chrono::seconds(60)));
        ASSERT_TRUE(model.failure().has_value());
        EXPECT_EQ(model.failure_code(), ErrorCode::untrusted) << *model.failure();
        EXPECT_FALSE(model.ready());
    }
}

TEST_F(ProgressiveSource, ARefinementThatCannotBeReadDegrades) {
    auto source = std::make_shared<FaultySource>(package_);
    source->failing_file = manifest_.rungs[1].data.file;
    ProgressiveModel model(source, options());
    ASSERT_TRUE(model.wait_finished(std::chrono::seconds(60)));
    EXPECT_FALSE(model.failure().has_value()) << *model.failure();
    const auto degraded = events(Kind::degraded);
    ASSERT_FALSE(degraded.empty());
    EXPECT_NE(degraded.front().reason.find("simulated"), std::string::npos)
        << degraded.front().reason;
    EXPECT_FALSE(degraded.front().tensors.empty());
    EXPECT_EQ(model.bits(), 4);  // every chunk stayed at the base rung
    EXPECT_EQ(model.infer({}).output.values, unpacked(4));
}

TEST_F(ProgressiveSource, ABaseThatCannotBeReadFailsWithoutAnEngine) {
    auto source = std::make_shared<FaultySource>(package_);
    source->failing_file = manifest_.rungs[0].data.file;
    ProgressiveModel model(source, options());
    ASSERT_TRUE(model.wait_finished(std::chrono::seconds(60)));
    ASSERT_TRUE(model.failure().has_value());
    EXPECT_EQ(model.failure_code(), ErrorCode::network);
    EXPECT_NE(model.failure()->find("simulated"), std::string::npos) << *model.failure();
    EXPECT_EQ(events(Kind::failed).size(), 1u);
    EXPECT_FALSE(model.ready());
    EXPECT_THROW(model.infer({}), Error);
    EXPECT_EQ(source->reads.load(), 1 + 3);  // the manifest, then three tries
}

TEST_F(ProgressiveSource, ADamagedUnitIsReadAgainOrGivenUp) {
    {  // damaged once: read again, and the exact rung is reached
        ProgressiveModel model(damaging(1, 0, 1), options());
        ASSERT_TRUE(model.wait_finished(std::chrono::seconds(60)));
        EXPECT_FALSE(model.failure().has_value());
        EXPECT_TRUE(events(Kind::degraded).empty());
        EXPECT_EQ(model.infer({}).output.values, unpacked(exact_rung_bits));
    }
    events_.clear();
    {  // damaged every time: given up, its chunk stays at the base rung
        ProgressiveModel model(damaging(1, 0, -1), options());
        ASSERT_TRUE(model.wait_finished(std::chrono::seconds(60)));
        EXPECT_FALSE(model.failure().has_value());
        const auto degraded = events(Kind::degraded);
        ASSERT_EQ(degraded.size(), 1u);
        const UnitEntry& unit = manifest_.rungs[1].units.front();
        EXPECT_EQ(degraded.front().tensors,
                  std::vector<std::string>{manifest_.tensors[unit.tensor].name});
        EXPECT_EQ(model.bits(), 4);
        EXPECT_EQ(events(Kind::complete).size(), 1u);
    }
}

TEST_F(ProgressiveSource, ABaseUnitDamagedEveryTimeFails) {
    ProgressiveModel model(damaging(0, manifest_.rungs[0].units.size() - 1, -1), options());
    ASSERT_TRUE(model.wait_finished(std::chrono::seconds(60)));
    ASSERT_TRUE(model.failure().has_value());
    EXPECT_EQ(model.failure_code(), ErrorCode::corrupt_data) << *model.failure();
    EXPECT_FALSE(model.ready());
}

TEST_F(ProgressiveSource, AFailingEngineFactoryKeepsThePreviousEngine) {
    ProgressiveOptions failing = options();
    std::atomic<int> builds{0};
    // What the last engine built serves. Snapshots that arrive while an
    // engine is being built are coalesced into the newest, so on a busy
    // machine the failing second build may be the last one (the top rung):
    // the engine before it must go on serving either way.
    std::mutex built_mutex;
    FloatArray last_built;
    failing.engine_factory = [&](Model model) -> std::unique_ptr<Engine> {
        if (++builds == 2) throw Error(ErrorCode::out_of_memory, "no memory (simulated)");
        auto engine = std::make_unique<WeightsEngine>(std::move(model));
        const std::lock_guard lock(built_mutex);
        last_built = engine->run({});
        return engine;
    };
    ProgressiveModel model(std::shared_ptr<ByteSource>(make_directory_source(package_)), failing);
    ASSERT_TRUE(model.wait_finished(std::chrono::seconds(60)));
    EXPECT_FALSE(model.failure().has_value());
    EXPECT_GE(events(Kind::build_failed).size(), 1u);
    const std::lock_guard lock(built_mutex);
    EXPECT_EQ(model.infer({}).output.values, last_built.values);
    // Built after the failure, when a later rung came: the top rung.
    if (builds > 2) {
        EXPECT_EQ(model.infer({}).output.values, unpacked(exact_rung_bits));
    }
}

TEST_F(ProgressiveSource, NeedsAnEngineFactoryAndASource) {
    ProgressiveOptions no_factory;
    try {
        ProgressiveModel model(std::shared_ptr<ByteSource>(make_directory_source(package_)),
                               no_factory);
        ADD_FAILURE() << "no error";
    } catch (const Error& error) {
        EXPECT_EQ(error.code(), ErrorCode::invalid_argument);
    }
    EXPECT_THROW(ProgressiveModel(std::shared_ptr<ByteSource>(), options()), Error);
}

TEST_F(ProgressiveSource, AMissingPackageFails) {
    ProgressiveModel model(std::shared_ptr<ByteSource>(make_directory_source(package_ / "none")),
                           options());
    ASSERT_TRUE(model.wait_finished(std::chrono::seconds(60)));
    ASSERT_TRUE(model.failure().has_value());
    EXPECT_EQ(events(Kind::failed).size(), 1u);
}

TEST_F(ProgressiveSource, ShutsDownCleanlyWhileReading) {
    auto source = std::make_shared<FaultySource>(package_);
    source->delay = std::chrono::milliseconds(300);
    auto model = std::make_unique<ProgressiveModel>(source, options());
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const auto start = std::chrono::steady_clock::now();
    model.reset();
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 2.0);
}

}  // namespace
}  // namespace bitinc
