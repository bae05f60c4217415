// ProgressiveModel and run_stream: swaps that are correct, lose nothing and
// keep serving when something fails.
#include <gtest/gtest.h>

#include <bitinc/bitinc.hpp>
#include <thread>

#include "test_support.hpp"

namespace bitinc {
namespace {

namespace fs = std::filesystem;
using testing::TemporaryDirectory;

class Progressive : public ::testing::Test {
  protected:
    void SetUp() override {
        PackOptions options;
        options.ladder = LadderPlan::parse("4,8,16");
        options.chunk_elements = 4096;  // many units: many progressive swaps
        pack_model(testing::source_dir() / "models" / "small-cnn.onnx", options,
                   root_ / "small-cnn");
        manifest_ = read_manifest(root_ / "small-cnn");
    }

    std::unique_ptr<PackageServer> serve(double rate = 0, std::vector<std::string> faults = {}) {
        return testing::start_package_server(root_, rate, faults);
    }

    static FloatArray batch() {
        FloatArray input;
        input.shape = {4, 1, 28, 28};
        input.values.resize(4 * 28 * 28);
        for (std::size_t i = 0; i < input.values.size(); ++i)
            input.values[i] = float(i % 97) / 97.0f;
        return input;
    }

    static ProgressiveOptions quick() {
        ProgressiveOptions options;
        options.fetch.backoff_initial = 0.01;
        options.fetch.max_attempts = 3;
        options.engine.threads = 1;
        return options;
    }

    TemporaryDirectory directory_;
    fs::path root_ = directory_.path() / "www";
    Manifest manifest_;
};

// With an accuracy point in the package, the device serves an engine of
// exactly that model while the rest of the ladder arrives.
TEST_F(Progressive, ServesTheAccuracyPointOnTheWayToTheTop) {
    Manifest manifest = manifest_;
    const AccuracyPoint point = testing::accuracy_point_after(1, 2);
    manifest.accuracy_point = point;
    testing::spit(root_ / "small-cnn" / "manifest.json", serialize_manifest(manifest));
    // Slow enough that the rest of the 8-bit rung (~70 kB) takes far longer
    // than building the point's engine: no snapshot replaces it.
    const auto server = serve(1e6);
    ProgressiveOptions options = quick();
    std::mutex mutex;
    std::vector<ProgressiveEvent> events;
    options.on_event = [&](const ProgressiveEvent& event) {
        const std::lock_guard lock(mutex);
        events.push_back(event);
    };
    ProgressiveModel model(server->url() + "/small-cnn/", options);
    ASSERT_TRUE(model.wait_finished(std::chrono::seconds(60)));
    EXPECT_FALSE(model.failure().has_value()) << model.failure().value_or("");
    EXPECT_EQ(model.bits(), 16);
    const std::lock_guard lock(mutex);
    std::vector<std::pair<int, bool>> swaps;
    std::size_t announced = 0;
    for (const ProgressiveEvent& event : events) {
        if (event.kind == ProgressiveEvent::Kind::accuracy_point) ++announced;
        if (event.kind == ProgressiveEvent::Kind::swapped)
            swaps.emplace_back(event.bits, event.at_accuracy_point);
    }
    EXPECT_EQ(announced, 1u);
    // Base, the point (still 4-bit chunks among its tensors), 8, 16.
    EXPECT_EQ(swaps,
              (std::vector<std::pair<int, bool>>{{4, false}, {4, true}, {8, false}, {16, false}}));
}

TEST_F(Progressive, EachSwapServesExactlyThatRung) {
    const auto server = serve();
    ProgressiveOptions options = quick();
    std::mutex mutex;
    std::vector<int> swapped_bits;
    bool complete = false;
    options.on_event = [&](const ProgressiveEvent& event) {
        const std::lock_guard lock(mutex);
        if (event.kind == ProgressiveEvent::Kind::swapped) swapped_bits.push_back(event.bits);
        if (event.kind == ProgressiveEvent::Kind::complete) complete = true;
    };
    ProgressiveModel model(server->url() + "/small-cnn/", options);
    ASSERT_TRUE(model.wait_finished(std::chrono::seconds(60)));
    EXPECT_FALSE(model.failure().has_value());
    {
        const std::lock_guard lock(mutex);
        EXPECT_TRUE(complete);
        ASSERT_FALSE(swapped_bits.empty());
        EXPECT_EQ(swapped_bits.back(), 16);
        EXPECT_TRUE(std::is_sorted(swapped_bits.begin(), swapped_bits.end()));
    }
    const Inference result = model.infer(batch());
    EXPECT_EQ(result.bits, 16);
    const auto fresh =
        create_opencv_engine(unpack_package(root_ / "small-cnn", 16, false), "fresh");
    EXPECT_EQ(result.output.values, fresh->run(batch()).values);
    ASSERT_TRUE(model.topology().has_value());
    EXPECT_EQ(model.topology()->weights.size(), manifest_.tensors.size());
}

TEST_F(Progressive, NoRequestIsLostAcrossManySwaps) {
    const auto server = serve(2e6);  // about two seconds for the whole ladder
    ProgressiveOptions options = quick();
    options.swap_every_units = 2;
    std::atomic<int> swaps{0};
    options.on_event = [&](const ProgressiveEvent& event) {
        if (event.kind == ProgressiveEvent::Kind::swapped) ++swaps;
    };
    ProgressiveModel model(server->url() + "/small-cnn/", options);
    ASSERT_TRUE(model.wait_ready(std::chrono::seconds(30)));
    std::atomic<bool> done{false};
    std::atomic<int> asked{0}, answered{0}, went_back{0};
    std::vector<std::jthread> clients;
    for (int c = 0; c < 3; ++c) {
        clients.emplace_back([&] {
            std::uint64_t last_generation = 0;
            while (!done) {
                ++asked;
                const Inference result = model.infer(batch());
                if (result.output.values.size() == 40) ++answered;
                if (result.generation < last_generation) ++went_back;
                last_generation = result.generation;
                // Leave the builder some CPU on a 2-core machine.
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
        });
    }
    ASSERT_TRUE(model.wait_finished(std::chrono::seconds(60)));
    done = true;
    clients.clear();
    EXPECT_GE(swaps.load(), 4);  // the base rung and several progressive rebuilds
    EXPECT_EQ(asked.load(), answered.load());
    EXPECT_EQ(went_back.load(), 0);
    EXPECT_EQ(model.bits(), 16);
}

TEST_F(Progressive, FailedRebuildKeepsThePreviousEngine) {
    const auto server = serve(2e6);  // slow enough for one build per rung
    ProgressiveOptions options = quick();
    std::atomic<int> builds{0};
    options.engine_factory = [&](const Model& model) -> std::unique_ptr<Engine> {
        if (++builds == 2) throw Error("the device ran out of memory (simulated)");
        return create_opencv_engine(model, "test", {});
    };
    std::mutex mutex;
    std::vector<ProgressiveEvent> events;
    options.on_event = [&](const ProgressiveEvent& event) {
        const std::lock_guard lock(mutex);
        events.push_back(event);
    };
    ProgressiveModel model(server->url() + "/small-cnn/", options);
    ASSERT_TRUE(model.wait_finished(std::chrono::seconds(60)));
    const std::lock_guard lock(mutex);
    const auto failed =
        std::find_if(events.begin(), events.end(), [](const ProgressiveEvent& event) {
            return event.kind == ProgressiveEvent::Kind::build_failed;
        });
    ASSERT_NE(failed, events.end());
    EXPECT_NE(failed->reason.find("simulated"), std::string::npos);
    EXPECT_EQ(model.infer(batch()).bits, 16);  // the next build worked
}

TEST_F(Progressive, DegradedTensorsAreReported) {
    const RungEntry& refinement = manifest_.rungs[1];
    const UnitEntry& unit = refinement.units.front();
    const auto server = serve(
        0, {"flip:" + refinement.data.file + ":" + std::to_string(unit.offset + 70) + ":1:always"});
    ProgressiveOptions options = quick();
    std::mutex mutex;
    std::vector<std::string> degraded;
    options.on_event = [&](const ProgressiveEvent& event) {
        const std::lock_guard lock(mutex);
        if (event.kind == ProgressiveEvent::Kind::degraded)
            degraded.insert(degraded.end(), event.tensors.begin(), event.tensors.end());
    };
    ProgressiveModel model(server->url() + "/small-cnn/", options);
    ASSERT_TRUE(model.wait_finished(std::chrono::seconds(60)));
    const std::lock_guard lock(mutex);
    ASSERT_FALSE(degraded.empty());
    EXPECT_EQ(degraded.front(), manifest_.tensors[unit.tensor].name);
    EXPECT_EQ(model.bits(), 4);  // the lowest chunk
    EXPECT_EQ(model.infer(batch()).output.values.size(), 40u);
}

TEST_F(Progressive, ShutsDownCleanlyWhileARungIsHalfDownloaded) {
    const auto server = serve(1e6);  // 1 Mbit/s: the refinements take seconds
    auto model = std::make_unique<ProgressiveModel>(server->url() + "/small-cnn/", quick());
    ASSERT_TRUE(model->wait_ready(std::chrono::seconds(30)));
    EXPECT_EQ(model->bits(), 4);
    const auto start = std::chrono::steady_clock::now();
    model.reset();
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 2.0);
}

TEST_F(Progressive, MissingPackageFailsBeforeAnyEngine) {
    const auto server = serve();
    ProgressiveModel model(server->url() + "/no-such-model/", quick());
    ASSERT_TRUE(model.wait_ready(std::chrono::seconds(30)));
    EXPECT_FALSE(model.ready());
    ASSERT_TRUE(model.failure().has_value());
    EXPECT_NE(model.failure()->find("404"), std::string::npos) << *model.failure();
    EXPECT_THROW(model.infer(batch()), Error);
}

TEST_F(Progressive, StreamCountsEveryFrameAndEveryRung) {
    if (!testing::fashion_mnist_available())
        GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    const auto server = serve(4e6);
    const ImageSet images = load_fashion_mnist(default_fashion_mnist_dir, Split::test);
    StreamOptions stream;
    stream.frames_per_second = 100;
    stream.tail_seconds = 0.5;
    stream.max_seconds = 60;
    const StreamReport report = run_stream(server->url() + "/small-cnn/", quick(), images, stream);
    EXPECT_GT(report.frames_in, 50u);
    EXPECT_EQ(report.frames_in, report.results_out);
    EXPECT_GT(report.first_result_at, 0);
    EXPECT_GE(report.top_rung_at, report.first_result_at - 0.5);
    ASSERT_TRUE(report.served.count(16));
    EXPECT_GT(report.served.at(16).results, 0u);
    std::size_t total = 0;
    for (const auto& [bits, served] : report.served) total += served.results;
    EXPECT_EQ(total, report.results_out);
    EXPECT_FALSE(report.windows.empty());
    // Nobody waited for a rebuild: the longest latency is about one inference
    // plus scheduling, far below an engine build.
    EXPECT_LT(report.longest_latency, 1.0);
}

// The start-up breakdown adds up: two requests (manifest, then the base rung
// with the topology at its head), each waiting at least one round trip, and
// the base's bytes moving no faster than the link.
TEST_F(Progressive, StartupBreakdownAddsUpToTheFirstResult) {
    if (!testing::fashion_mnist_available())
        GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    ServerOptions options;
    options.root = root_;
    options.rate_bits_per_second = 8e6;
    options.rtt_seconds = 0.05;
    PackageServer server(options);
    server.start();
    const ImageSet images = load_fashion_mnist(default_fashion_mnist_dir, Split::test);
    StreamOptions stream;
    stream.tail_seconds = 0;
    stream.max_seconds = 60;
    const StreamReport report = run_stream(server.url() + "/small-cnn/", quick(), images, stream);
    const StartupBreakdown parts = startup_breakdown(report);
    ASSERT_TRUE(report.fetch.has_value());
    EXPECT_EQ(parts.requests, 2);
    EXPECT_EQ(parts.bytes, report.fetch->manifest_bytes + report.fetch->rungs.front().bytes);
    EXPECT_GE(parts.waiting, 2 * options.rtt_seconds);
    // The server paces each ~10 ms piece to leave when its last byte would,
    // so a request's first byte waits for one piece: compare the sum.
    EXPECT_GE(parts.waiting + parts.transfer + 0.005,
              2 * options.rtt_seconds + double(parts.bytes) * 8 / options.rate_bits_per_second);
    EXPECT_GT(parts.engine_build, 0);
    for (const double part : {parts.waiting, parts.transfer, parts.decode_not_hidden,
                              parts.snapshot, parts.engine_build, parts.first_inference}) {
        EXPECT_GE(part, 0);
    }
    EXPECT_DOUBLE_EQ(parts.total, report.first_result_at);
    // What no part explains stays small: the parts are the start-up.
    EXPECT_LT(std::abs(parts.other), 0.05) << parts.other;
}

}  // namespace
}  // namespace bitinc
