// Loopback tests of the package server and the fetcher: exact models, and
// recovery from every fault the server can inject.
#include <gtest/gtest.h>

#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>

#include <bitinc/bitinc.hpp>
#include <bitinc/fetch.hpp>
#include <bitinc/server.hpp>
#include <chrono>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "onnx_builder.hpp"
#include "test_support.hpp"

namespace bitinc {
namespace {

namespace fs = std::filesystem;
using testing::OnnxBuilder;
using testing::slurp;
using testing::spit;
using testing::TemporaryDirectory;

// Two quantized matrices in several chunks each and a bias.
void write_model(const fs::path& path) {
    std::mt19937 generator(7);
    std::normal_distribution<float> normal(0.0f, 0.05f);
    const auto values = [&](std::size_t count) {
        std::vector<float> result(count);
        for (float& value : result) value = normal(generator);
        return result;
    };
    OnnxBuilder builder;
    builder.input("x", {-1, 256}).output("y", {-1, 64});
    builder.initializer("first", {128, 256}, values(128 * 256));
    builder.initializer("second", {64, 128}, values(64 * 128));
    builder.initializer("bias", {64}, values(64));
    builder.node("Transpose", {"first"}, {"first_t"});
    builder.node("MatMul", {"x", "first_t"}, {"h"});
    builder.node("Transpose", {"second"}, {"second_t"});
    builder.node("MatMul", {"h", "second_t"}, {"z"});
    builder.node("Add", {"z", "bias"}, {"y"});
    spit(path, builder.bytes());
}

class Delivery : public ::testing::Test {
  protected:
    void SetUp() override {
        write_model(directory_.path() / "model.onnx");
        PackOptions options;
        options.ladder = LadderPlan::parse("4,8,16");
        options.direct_bits = {8, 16};
        options.chunk_elements = 4096;
        pack_model(directory_.path() / "model.onnx", options, root_ / "model");
        expected_top_ = serialize_onnx(unpack_package(root_ / "model", 16, false));
        manifest_ = read_manifest(root_ / "model");
    }

    std::unique_ptr<PackageServer> serve(std::vector<std::string> faults = {}, double rate = 0) {
        return testing::start_package_server(root_, rate, faults);
    }

    FetchOptions quick_options() const {
        FetchOptions options;
        options.backoff_initial = 0.01;
        options.backoff_max = 0.05;
        options.max_attempts = 3;
        options.timeout_seconds = 5;
        return options;
    }

    std::string url(const PackageServer& server) const { return server.url() + "/model/"; }

    TemporaryDirectory directory_;
    fs::path root_ = directory_.path() / "www";
    std::string expected_top_;
    Manifest manifest_;
};

TEST_F(Delivery, IncrementalAndDirectReproduceUnpack) {
    const auto server = serve();
    const FetchResult incremental = fetch_package(url(*server), quick_options());
    EXPECT_EQ(serialize_onnx(incremental.model), expected_top_);
    EXPECT_EQ(incremental.reached_bits, 16);
    ASSERT_EQ(incremental.rungs.size(), 3u);
    EXPECT_EQ(incremental.rungs[0].bits, 4);
    EXPECT_EQ(incremental.retries, 0u);
    EXPECT_GE(incremental.topology_at, incremental.manifest_at);
    EXPECT_GE(incremental.rungs[0].ready_at, incremental.topology_at);

    FetchOptions direct = quick_options();
    direct.mode = FetchMode::direct;
    EXPECT_EQ(serialize_onnx(fetch_package(url(*server), direct).model), expected_top_);
    direct.until_bits = 8;
    EXPECT_EQ(serialize_onnx(fetch_package(url(*server), direct).model),
              serialize_onnx(unpack_package(root_ / "model", 8, false)));
    FetchOptions until = quick_options();
    until.until_bits = 8;
    const FetchResult partial = fetch_package(url(*server), until);
    EXPECT_EQ(partial.rungs.size(), 2u);
    EXPECT_EQ(partial.reached_bits, 8);
}

TEST_F(Delivery, LocalPackageDirectoriesFetchLikeUrls) {
    EXPECT_EQ(serialize_onnx(fetch_package((root_ / "model").string(), quick_options()).model),
              expected_top_);
    EXPECT_EQ(
        serialize_onnx(
            fetch_package("file://" + (root_ / "model").string() + "/", quick_options()).model),
        expected_top_);
    // A damaged local file is refused like a damaged download.
    const std::string file = manifest_.rungs[0].data.file;
    std::string bytes = slurp(root_ / "model" / file);
    bytes[bytes.size() / 2] ^= 1;
    spit(root_ / "model" / file, bytes);
    EXPECT_THROW(fetch_package((root_ / "model").string(), quick_options()), Error);
}

TEST_F(Delivery, EventsComeInOrderWithTheModelAtEachRung) {
    const auto server = serve();
    FetchOptions options = quick_options();
    std::vector<FetchEvent::Kind> kinds;
    std::vector<std::string> models;
    options.on_event = [&](const FetchEvent& event) {
        if (event.kind == FetchEvent::Kind::progress) return;
        kinds.push_back(event.kind);
        if (event.kind == FetchEvent::Kind::rung_ready)
            models.push_back(serialize_onnx(event.assembler->model()));
    };
    fetch_package(url(*server), options);
    using Kind = FetchEvent::Kind;
    EXPECT_EQ(kinds, (std::vector<Kind>{Kind::manifest_ready, Kind::topology_ready,
                                        Kind::rung_ready, Kind::rung_ready, Kind::rung_ready}));
    ASSERT_EQ(models.size(), 3u);
    EXPECT_EQ(models[0], serialize_onnx(unpack_package(root_ / "model", 4, false)));
    EXPECT_EQ(models[2], expected_top_);
}

// The topology travels at the head of the base and direct rungs' files.
TEST_F(Delivery, CorruptedTopologyIsRefetched) {
    for (const FetchMode mode : {FetchMode::incremental, FetchMode::direct}) {
        const auto server = serve({"flip:base-4.bin:100:1:2", "flip:direct-16.bin:100:1:2"});
        FetchOptions options = quick_options();
        options.mode = mode;
        const FetchResult result = fetch_package(url(*server), options);
        EXPECT_EQ(serialize_onnx(result.model), expected_top_);
        EXPECT_EQ(result.retries, 2u);
    }
}

TEST_F(Delivery, FetchNeverAsksForTheTopologyFile) {
    std::vector<std::string> requests;
    std::mutex requests_mutex;
    ServerOptions options;
    options.root = root_;
    options.access_log = [&](const std::string& line) {
        const std::lock_guard lock(requests_mutex);
        requests.push_back(line);
    };
    PackageServer server(options);
    server.start();
    fetch_package(url(server), quick_options());
    server.stop();
    ASSERT_EQ(requests.size(), 1u + manifest_.ladder.bits.size());  // manifest, then each rung
    for (const std::string& line : requests)
        EXPECT_EQ(line.find("topology.onnx"), std::string::npos) << line;
}

// A device that stops at the accuracy point fetches the rungs before it and
// the first units of its rung, nothing more, and holds exactly the model
// those units make.
TEST_F(Delivery, UntilTheAccuracyPointFetchesOnlyItsPrefix) {
    Manifest manifest = manifest_;
    const AccuracyPoint point = testing::accuracy_point_after(1, 2);
    manifest.accuracy_point = point;
    const std::string text = serialize_manifest(manifest);
    spit(root_ / "model" / "manifest.json", text);
    ASSERT_EQ(parse_manifest(text, "point").accuracy_point->units, 2u);

    const auto server = serve();
    FetchOptions options = quick_options();
    options.until_accuracy_point = true;
    const FetchResult result = fetch_package(url(*server), options);
    EXPECT_TRUE(result.at_accuracy_point);
    ASSERT_EQ(result.rungs.size(), 2u);
    const std::uint64_t prefix = manifest.accuracy_point_bytes();
    EXPECT_LT(prefix, manifest.rungs[1].data.bytes);
    EXPECT_EQ(result.rungs[1].bytes, prefix);
    EXPECT_EQ(result.bytes_downloaded, text.size() + manifest.rungs[0].data.bytes + prefix);
    EXPECT_EQ(result.target_bits, 8);
    EXPECT_EQ(result.reached_bits, 4);
    EXPECT_TRUE(result.degraded_tensors.empty());

    ModelAssembler expected(manifest, slurp(root_ / "model" / "topology.onnx"), "expected");
    const std::string base = slurp(root_ / "model" / manifest.rungs[0].data.file);
    for (std::size_t u = 0; u < manifest.rungs[0].units.size(); ++u)
        expected.apply_unit(0, u, unit_bytes(base, manifest.rungs[0].units[u]), "base");
    const std::string refinement = slurp(root_ / "model" / manifest.rungs[1].data.file);
    for (std::size_t u = 0; u < point.units; ++u)
        expected.apply_unit(1, u, unit_bytes(refinement, manifest.rungs[1].units[u]), "refine");
    EXPECT_EQ(serialize_onnx(result.model), serialize_onnx(expected.model()));

    options.mode = FetchMode::direct;
    EXPECT_THROW(fetch_package(url(*server), options), Error);
}

// A device that goes on past the accuracy point is told when it holds
// exactly the units up to it (the model `--until accuracy` would give), once,
// and still ends at the top rung.
TEST_F(Delivery, PassingTheAccuracyPointAnnouncesExactlyItsPrefix) {
    Manifest manifest = manifest_;
    const AccuracyPoint point = testing::accuracy_point_after(1, 2);
    manifest.accuracy_point = point;
    spit(root_ / "model" / "manifest.json", serialize_manifest(manifest));

    const auto server = serve();
    FetchOptions options = quick_options();
    std::vector<FetchEvent::Kind> kinds;
    std::string at_point;
    options.on_event = [&](const FetchEvent& event) {
        if (event.kind == FetchEvent::Kind::progress) return;
        kinds.push_back(event.kind);
        if (event.kind == FetchEvent::Kind::accuracy_point_ready)
            at_point = serialize_onnx(event.assembler->model());
    };
    const FetchResult full = fetch_package(url(*server), options);
    EXPECT_EQ(serialize_onnx(full.model), expected_top_);
    EXPECT_FALSE(full.at_accuracy_point);
    EXPECT_GE(full.accuracy_point_at, full.rungs[0].ready_at);
    EXPECT_LE(full.accuracy_point_at, full.rungs[1].ready_at);
    using Kind = FetchEvent::Kind;
    EXPECT_EQ(std::count(kinds.begin(), kinds.end(), Kind::accuracy_point_ready), 1);
    // After the base rung is ready, before the point's rung is.
    const auto announced = std::find(kinds.begin(), kinds.end(), Kind::accuracy_point_ready);
    const auto first_ready = std::find(kinds.begin(), kinds.end(), Kind::rung_ready);
    ASSERT_NE(announced, kinds.end());
    EXPECT_LT(first_ready, announced);
    EXPECT_NE(std::find(announced, kinds.end(), Kind::rung_ready), kinds.end());

    FetchOptions until = quick_options();
    until.until_accuracy_point = true;
    const FetchResult stopped = fetch_package(url(*server), until);
    EXPECT_EQ(at_point, serialize_onnx(stopped.model));
    EXPECT_LT(stopped.accuracy_point_at, 0);  // it stopped there: nothing to pass
}

TEST_F(Delivery, UntilAccuracyWithoutAPointIsAnError) {
    const auto server = serve();
    FetchOptions options = quick_options();
    options.until_accuracy_point = true;
    try {
        fetch_package(url(*server), options);
        FAIL() << "a package without an accuracy point was fetched to one";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("no accuracy point"), std::string::npos)
            << error.what();
    }
}

TEST_F(Delivery, TopologyThatNeverArrivesIntactIsAnError) {
    const auto server = serve({"flip:base-4.bin:100:1:always"});
    try {
        fetch_package(url(*server), quick_options());
        FAIL() << "a damaged topology was used";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("SHA-256"), std::string::npos) << error.what();
    }
}

TEST_F(Delivery, FlippedWeightByteIsDetectedAndRefetched) {
    const UnitEntry& unit = manifest_.rungs[1].units[2];
    const auto server =
        serve({"flip:" + manifest_.rungs[1].data.file + ":" + std::to_string(unit.offset + 80)});
    const FetchResult result = fetch_package(url(*server), quick_options());
    EXPECT_EQ(serialize_onnx(result.model), expected_top_);
    EXPECT_EQ(result.rungs[1].units_refetched, 1u);
    EXPECT_TRUE(result.degraded_tensors.empty());
}

TEST_F(Delivery, DroppedConnectionResumes) {
    const auto server = serve({"drop:" + manifest_.rungs[2].data.file + ":5000:2"});
    const FetchResult result = fetch_package(url(*server), quick_options());
    EXPECT_EQ(serialize_onnx(result.model), expected_top_);
    EXPECT_EQ(result.retries, 2u);
    // Resumed, not restarted: about one file's worth of bytes came in.
    std::uint64_t package_bytes = manifest_.topology.bytes;
    for (const RungEntry* rung : manifest_.ladder_rungs()) package_bytes += rung->data.bytes;
    EXPECT_LT(result.bytes_downloaded, package_bytes + 40'000);
}

TEST_F(Delivery, PersistentlyBrokenRefinementDegradesThatTensorOnly) {
    const RungEntry& refinement = manifest_.rungs[1];
    // The last unit of the 4->8 rung belongs to "second".
    const UnitEntry& unit = refinement.units.back();
    ASSERT_EQ(manifest_.tensors[unit.tensor].name, "second");
    const auto server = serve(
        {"flip:" + refinement.data.file + ":" + std::to_string(unit.offset + 70) + ":1:always"});
    FetchOptions options = quick_options();
    std::vector<std::string> degraded;
    options.on_event = [&](const FetchEvent& event) {
        if (event.kind == FetchEvent::Kind::degraded)
            degraded.insert(degraded.end(), event.tensors.begin(), event.tensors.end());
    };
    const FetchResult result = fetch_package(url(*server), options);
    EXPECT_EQ(result.degraded_tensors, (std::vector<std::string>{"second"}));
    EXPECT_EQ(degraded,
              (std::vector<std::string>{"second", "second"}));  // 4->8 lost, 8->16 skipped
    EXPECT_EQ(result.reached_bits, 4);
    // Every other tensor is exactly at the top rung; the degraded chunk at 4 bits.
    const Model top = unpack_package(root_ / "model", 16, false);
    const Model base = unpack_package(root_ / "model", 4, false);
    for (std::size_t t = 0; t < top.weights.size(); ++t) {
        const auto& values = result.model.weights[t].values;
        if (top.weights[t].name != "second") {
            EXPECT_EQ(values, top.weights[t].values) << top.weights[t].name;
            continue;
        }
        for (std::uint64_t i = 0; i < values.size(); ++i) {
            const bool in_lost_chunk = i >= unit.first && i < unit.first + unit.count;
            ASSERT_EQ(values[i], (in_lost_chunk ? base : top).weights[t].values[i]) << i;
        }
    }

    options.strict = true;
    EXPECT_THROW(fetch_package(url(*server), options), Error);
}

TEST_F(Delivery, BrokenBaseUnitIsAnError) {
    const UnitEntry& unit = manifest_.rungs[0].units[1];
    const auto server = serve({"flip:" + manifest_.rungs[0].data.file + ":" +
                               std::to_string(unit.offset + 70) + ":1:always"});
    EXPECT_THROW(fetch_package(url(*server), quick_options()), Error);
}

TEST_F(Delivery, TruncatedOrMalformedManifestIsAClearError) {
    const std::string good = slurp(root_ / "model" / "manifest.json");
    const auto server = serve();
    for (const std::string& bad :
         {good.substr(0, good.size() / 3), std::string("{\"format\":\"zip\"}"), std::string("")}) {
        spit(root_ / "model" / "manifest.json", bad);
        try {
            fetch_package(url(*server), quick_options());
            FAIL() << "a bad manifest was accepted";
        } catch (const Error& error) {
            EXPECT_NE(std::string(error.what()).find("manifest.json"), std::string::npos)
                << error.what();
        }
    }
}

TEST_F(Delivery, MissingPackageAndDeadServerAreClearErrors) {
    const auto server = serve();
    try {
        fetch_package(server->url() + "/nothing-here/", quick_options());
        FAIL();
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("404"), std::string::npos) << error.what();
    }
    const std::string dead = server->url() + "/model/";
    server->stop();
    EXPECT_THROW(fetch_package(dead, quick_options()), Error);
    EXPECT_THROW(fetch_package("ftp://example.org/x/", quick_options()), Error);
}

TEST_F(Delivery, InterruptedFetchResumesFromPartFiles) {
    const fs::path parts = directory_.path() / "parts";
    FetchOptions options = quick_options();
    options.part_directory = parts;
    {
        // The device goes away in the middle of the last rung.
        const auto server = serve({}, 4e6);
        std::atomic<bool> cancel{false};
        options.cancel = &cancel;
        options.on_event = [&](const FetchEvent& event) {
            if (event.kind == FetchEvent::Kind::progress && event.bits == 16 &&
                event.bytes_done >
                    manifest_.rungs[0].data.bytes + manifest_.rungs[1].data.bytes + 9000) {
                cancel = true;
            }
        };
        EXPECT_THROW(fetch_package(url(*server), options), Error);
        options.cancel = nullptr;
        options.on_event = nullptr;
    }
    std::uint64_t kept = 0;
    for (const auto& entry : fs::directory_iterator(parts)) kept += fs::file_size(entry.path());
    EXPECT_GE(kept, 9000u);
    const auto server = serve();
    const FetchResult result = fetch_package(url(*server), options);
    EXPECT_EQ(serialize_onnx(result.model), expected_top_);
    // Only the manifest and the rest of the last rung came again (the
    // topology is in the base rung's part file).
    const std::uint64_t manifest_bytes = slurp(root_ / "model" / "manifest.json").size();
    EXPECT_LE(result.bytes_downloaded, manifest_bytes + manifest_.rungs[2].data.bytes - 9000);
    EXPECT_TRUE(fs::is_empty(parts));
}

TEST_F(Delivery, CancelStopsAFetchInProgress) {
    const auto server = serve({}, 2e6);  // 2 Mbit/s: the download takes a while
    std::atomic<bool> cancel{false};
    FetchOptions options = quick_options();
    options.cancel = &cancel;
    options.on_event = [&](const FetchEvent& event) {
        if (event.kind == FetchEvent::Kind::progress && event.bytes_done > 2000) cancel = true;
    };
    const auto start = std::chrono::steady_clock::now();
    EXPECT_THROW(fetch_package(url(*server), options), Error);
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
}

TEST_F(Delivery, FiftyClientsAtOnceAllGetExactModels) {
    const auto server = serve();
    std::atomic<int> exact{0};
    std::vector<std::jthread> clients;
    for (int c = 0; c < 50; ++c) {
        clients.emplace_back([&, c] {
            FetchOptions options = quick_options();
            options.max_attempts = 6;
            options.decode_threads = 1;
            options.mode = c % 2 ? FetchMode::direct : FetchMode::incremental;
            try {
                if (serialize_onnx(fetch_package(url(*server), options).model) == expected_top_)
                    ++exact;
            } catch (const Error&) {
            }
        });
    }
    clients.clear();
    EXPECT_EQ(exact.load(), 50);
}

// ---- attacks on the fetcher -----------------------------------------------

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// A hostile HTTP server on a loopback socket: it reads a request head, lets
// `respond` write whatever it likes, and closes; one connection per try.
class RawServer {
  public:
    using Responder =
        std::function<void(int fd, const std::string& request, const std::atomic<bool>& stopping)>;
    explicit RawServer(Responder respond) : respond_(std::move(respond)) {
        listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t length = sizeof address;
        if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
            ::listen(listen_fd_, 16) != 0 ||
            ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
            std::abort();
        }
        port_ = ntohs(address.sin_port);
        thread_ = std::jthread([this] { serve(); });
    }
    ~RawServer() {
        stopping_ = true;
        thread_ = {};
        ::close(listen_fd_);
    }
    RawServer(const RawServer&) = delete;
    RawServer& operator=(const RawServer&) = delete;

    std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/model/"; }
    int connections() const { return connections_.load(); }

    // Sends all of `text`; false once the client has gone.
    static bool send_all(int fd, std::string_view text) {
        while (!text.empty()) {
            const ssize_t sent = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
            if (sent <= 0) return false;
            text.remove_prefix(std::size_t(sent));
        }
        return true;
    }

  private:
    void serve() {
        while (!stopping_) {
            pollfd ready{listen_fd_, POLLIN, 0};
            if (::poll(&ready, 1, 50) <= 0) continue;
            const int fd = ::accept(listen_fd_, nullptr, nullptr);
            if (fd < 0) continue;
            ++connections_;
            std::string request;
            char buffer[4096];
            while (request.find("\r\n\r\n") == std::string::npos) {
                pollfd readable{fd, POLLIN, 0};
                if (::poll(&readable, 1, 2000) <= 0) break;
                const ssize_t got = ::recv(fd, buffer, sizeof buffer, 0);
                if (got <= 0) break;
                request.append(buffer, std::size_t(got));
            }
            respond_(fd, request, stopping_);
            ::close(fd);
        }
    }

    Responder respond_;
    int listen_fd_ = -1;
    int port_ = 0;
    std::atomic<bool> stopping_{false};
    std::atomic<int> connections_{0};
    std::jthread thread_;
};

// The landed fetcher retried forever when every try brought the same bytes
// and then failed: now each file has one budget, which only new bytes reset.
TEST_F(Delivery, ManifestCutShortEveryTimeFailsAfterTheRetryBudget) {
    const auto server = serve({"drop:manifest.json:100:always"});
    FetchOptions options = quick_options();
    int retry_events = 0;
    options.on_event = [&](const FetchEvent& event) {
        if (event.kind == FetchEvent::Kind::retry) ++retry_events;
    };
    const auto start = std::chrono::steady_clock::now();
    try {
        fetch_package(url(*server), options);
        FAIL() << "a manifest that never arrives whole was accepted";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("gave up after 3 tries"), std::string::npos)
            << error.what();
    }
    EXPECT_EQ(retry_events, 2);  // three tries in all
    EXPECT_LT(seconds_since(start), 2.0);
}

// A rung cut short on every response still arrives: each try resumes where
// the last stopped, so each brings new bytes and the budget starts over.
TEST_F(Delivery, RungCutShortEveryTimeResumesToTheEnd) {
    const RungEntry& base = manifest_.rungs[0];
    const auto server = serve({"drop:" + base.data.file + ":4000:always"});
    const FetchResult result = fetch_package(url(*server), quick_options());
    EXPECT_EQ(serialize_onnx(result.model), expected_top_);
    EXPECT_EQ(result.retries, (base.data.bytes + 3999) / 4000 - 1);
    EXPECT_TRUE(result.rungs[0].file_sha256_checked);
}

TEST_F(Delivery, ResponsesShorterThanTheirContentLengthAreRetriedAFixedNumberOfTimes) {
    for (const std::string length : {"100000", "-5"}) {
        RawServer server([&](int fd, const std::string&, const std::atomic<bool>&) {
            RawServer::send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: " + length +
                                        "\r\n\r\n{\"format\":\"bitinc-package\"");
        });
        const auto start = std::chrono::steady_clock::now();
        EXPECT_THROW(fetch_package(server.url(), quick_options()), Error) << length;
        EXPECT_EQ(server.connections(), 3) << length;
        EXPECT_LT(seconds_since(start), 2.0) << length;
    }
}

// A server that ignores Range answers a unit's refetch with the whole file
// (200): the fetcher takes the unit's bytes out of it.
TEST_F(Delivery, UnitRefetchFromAServerThatIgnoresRange) {
    const RungEntry& base = manifest_.rungs[0];
    const UnitEntry& damaged = base.units[1];
    std::atomic<int> base_responses{0};
    RawServer server([&](int fd, const std::string& request, const std::atomic<bool>&) {
        const std::size_t path_start = request.find(" /model/");
        const std::size_t path_end = request.find(' ', path_start + 1);
        if (path_start == std::string::npos || path_end == std::string::npos) return;
        const std::string name = request.substr(path_start + 8, path_end - path_start - 8);
        std::string body = slurp(root_ / "model" / name);
        // The first whole base rung arrives with one unit damaged.
        if (name == base.data.file && base_responses++ == 0) body[damaged.offset + 70] ^= 0x10;
        RawServer::send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: " +
                                    std::to_string(body.size()) + "\r\n\r\n" + body);
    });
    const FetchResult result = fetch_package(server.url(), quick_options());
    EXPECT_EQ(serialize_onnx(result.model), expected_top_);
    EXPECT_EQ(result.rungs[0].units_refetched, 1u);
    EXPECT_TRUE(result.degraded_tensors.empty());
}

TEST_F(Delivery, EndlessResponseHeadersFailTheTry) {
    RawServer server([](int fd, const std::string&, const std::atomic<bool>& stopping) {
        if (!RawServer::send_all(fd, "HTTP/1.1 200 OK\r\n")) return;
        const std::string junk = "X-Junk: " + std::string(200, 'a') + "\r\n";
        // Up to 200 MB: far more than any client should keep.
        for (int i = 0; i < 1'000'000 && !stopping; ++i) {
            if (!RawServer::send_all(fd, junk)) return;
        }
    });
    const auto start = std::chrono::steady_clock::now();
    try {
        fetch_package(server.url(), quick_options());
        FAIL() << "endless headers were accepted";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("response header"), std::string::npos)
            << error.what();
    }
    EXPECT_EQ(server.connections(), 3);
    EXPECT_LT(seconds_since(start), 3.0);
}

// One byte every 100 ms: the per-read timeout never fires, the deadline and
// the minimum rate do.
TEST_F(Delivery, DripFeedingServerIsStoppedByDeadlineAndMinimumRate) {
    RawServer server([](int fd, const std::string&, const std::atomic<bool>& stopping) {
        if (!RawServer::send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")) return;
        while (!stopping && RawServer::send_all(fd, " "))
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
    });
    FetchOptions options = quick_options();
    options.deadline_seconds = 1.0;
    auto start = std::chrono::steady_clock::now();
    try {
        fetch_package(server.url(), options);
        FAIL() << "a drip-fed fetch went on past its deadline";
    } catch (const Error& error) {
        const std::string message = error.what();
        EXPECT_NE(message.find("manifest.json: deadline of 1 s passed after "), std::string::npos)
            << message;
        EXPECT_EQ(message.find('\n'), std::string::npos);
    }
    EXPECT_LT(seconds_since(start), 2.5);

    options.deadline_seconds = 0;
    options.min_rate_bytes_per_second = 100;
    options.min_rate_window_seconds = 0.5;
    start = std::chrono::steady_clock::now();
    try {
        fetch_package(server.url(), options);
        FAIL() << "a drip-fed fetch went on below the minimum rate";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("below the minimum rate"), std::string::npos)
            << error.what();
    }
    // Three tries of about half a second, each bringing the same bytes.
    EXPECT_LT(seconds_since(start), 4.0);
}

TEST_F(Delivery, HugeNestedManifestIsRefusedFast) {
    const std::size_t depth = 33'000'000;
    spit(root_ / "model" / "manifest.json", std::string(depth, '[') + std::string(depth, ']'));
    const auto server = serve();
    const auto start = std::chrono::steady_clock::now();
    try {
        fetch_package(url(*server), quick_options());
        FAIL() << "a 66 MB manifest was accepted";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("larger than"), std::string::npos) << error.what();
    }
    // Most of this is the test server opening a 66 MB file; the client
    // refuses on the Content-Length.
    EXPECT_LT(seconds_since(start), 2.0);
}

// A unit changed together with its CRC32C (in the unit and in the manifest)
// passes every CRC check; its SHA-256 in the manifest does not match, so it
// is fetched again and, never arriving intact, left out.
TEST_F(Delivery, UnitForgedWithItsCrcIsNeverUsed) {
    const RungEntry& refinement = manifest_.rungs[1];
    const std::size_t forged = refinement.units.size() - 1;
    testing::forge_unit(root_ / "model", 1, forged);
    const auto server = serve();
    FetchOptions options = quick_options();
    const FetchResult result = fetch_package(url(*server), options);
    EXPECT_EQ(result.rungs[1].units_refetched, 1u);
    EXPECT_FALSE(result.rungs[1].file_sha256_checked);
    EXPECT_EQ(result.degraded_tensors, (std::vector<std::string>{"second"}));
    // The forged chunk stayed at the base rung: no forged byte was decoded.
    const UnitEntry& unit = refinement.units[forged];
    const Model base = unpack_package(root_ / "model", 4, false);
    for (std::size_t t = 0; t < base.weights.size(); ++t) {
        if (base.weights[t].name != "second") continue;
        for (std::uint64_t i = unit.first; i < unit.first + unit.count; ++i)
            ASSERT_EQ(result.model.weights[t].values[i], base.weights[t].values[i]) << i;
    }
    options.strict = true;
    try {
        fetch_package(url(*server), options);
        FAIL() << "a forged unit was accepted";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("SHA-256 differs"), std::string::npos)
            << error.what();
    }
    // A forged base unit fails the fetch.
    testing::forge_unit(root_ / "model", 0, 1);
    EXPECT_THROW(fetch_package(url(*server), quick_options()), Error);
}

// ---- the server on its own ---------------------------------------------------

class Server : public Delivery {
  protected:
    void SetUp() override {
        Delivery::SetUp();
        server_ = serve();
        client_ = std::make_unique<httplib::Client>(server_->url());
        spit(directory_.path() / "secret.txt", "outside the root");
    }
    std::unique_ptr<PackageServer> server_;
    std::unique_ptr<httplib::Client> client_;
};

TEST_F(Server, NeverServesOutsideItsRoot) {
    for (const char* path :
         {"/../secret.txt", "/model/../../secret.txt", "/%2e%2e/secret.txt",
          "/model/%2e%2e/%2e%2e/secret.txt", "/model", "/", "/model/missing.bin"}) {
        const auto result = client_->Get(path);
        ASSERT_TRUE(result) << path;
        EXPECT_EQ(result->status, 404) << path;
        EXPECT_EQ(result->body.find("outside"), std::string::npos) << path;
    }
    // A symbolic link that leads out of the root is not followed out.
    fs::create_symlink(directory_.path() / "secret.txt", root_ / "link.txt");
    EXPECT_EQ(client_->Get("/link.txt")->status, 404);
}

TEST_F(Server, AnswersRangesHeadAndConditionalRequests) {
    const std::string file = slurp(root_ / "model" / "topology.onnx");
    const std::string size = std::to_string(file.size());
    auto result = client_->Get("/model/topology.onnx", {{"Range", "bytes=10-19"}});
    ASSERT_TRUE(result);
    EXPECT_EQ(result->status, 206);
    EXPECT_EQ(result->body, file.substr(10, 10));
    EXPECT_EQ(result->get_header_value("Content-Range"), "bytes 10-19/" + size);

    result = client_->Get("/model/topology.onnx", {{"Range", "bytes=-5"}});
    EXPECT_EQ(result->body, file.substr(file.size() - 5));
    result = client_->Get("/model/topology.onnx", {{"Range", "bytes=100-"}});
    EXPECT_EQ(result->body, file.substr(100));
    // Past the end: clamped, or 416 when it starts there.
    result = client_->Get("/model/topology.onnx", {{"Range", "bytes=10-99999999"}});
    EXPECT_EQ(result->status, 206);
    EXPECT_EQ(result->body, file.substr(10));
    result = client_->Get("/model/topology.onnx", {{"Range", "bytes=" + size + "-"}});
    EXPECT_EQ(result->status, 416);
    EXPECT_EQ(result->get_header_value("Content-Range"), "bytes */" + size);
    result = client_->Get("/model/topology.onnx", {{"Range", "bytes=99999999-99999999"}});
    EXPECT_EQ(result->status, 416);
    // Two ranges: multipart/byteranges holding both.
    result = client_->Get("/model/topology.onnx", {{"Range", "bytes=0-3,20-23"}});
    EXPECT_EQ(result->status, 206);
    EXPECT_NE(result->get_header_value("Content-Type").find("multipart/byteranges"),
              std::string::npos);
    EXPECT_NE(result->body.find(file.substr(20, 4)), std::string::npos);

    result = client_->Head("/model/topology.onnx");
    EXPECT_EQ(result->status, 200);
    EXPECT_EQ(result->get_header_value("Content-Length"), size);
    EXPECT_TRUE(result->body.empty());
    const std::string etag = result->get_header_value("ETag");
    EXPECT_FALSE(etag.empty());
    EXPECT_NE(result->get_header_value("Cache-Control").find("immutable"), std::string::npos);
    result = client_->Get("/model/topology.onnx", {{"If-None-Match", etag}});
    EXPECT_EQ(result->status, 304);
    EXPECT_EQ(client_->Get("/model/manifest.json")->get_header_value("Cache-Control"), "no-cache");
}

TEST_F(Server, EmulatesTheLinkRate) {
    const auto slow = serve({}, 8e6);  // 1 MB/s
    httplib::Client client(slow->url());
    const auto start = std::chrono::steady_clock::now();
    const auto result = client.Get(("/model/" + manifest_.rungs[2].data.file).c_str());
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ASSERT_TRUE(result);
    const double expected = double(result->body.size()) / 1e6;
    EXPECT_GT(seconds, expected * 0.8) << result->body.size() << " bytes";
    EXPECT_LT(seconds, expected * 1.5 + 0.2);
}

TEST(LinkSettings, ParseRatesDurationsAndFaults) {
    EXPECT_DOUBLE_EQ(parse_rate("100Mbit"), 100e6);
    EXPECT_DOUBLE_EQ(parse_rate("33.6Mbit"), 33.6e6);
    EXPECT_DOUBLE_EQ(parse_rate("1.1Gbit"), 1.1e9);
    EXPECT_DOUBLE_EQ(parse_rate("2MB"), 16e6);
    EXPECT_DOUBLE_EQ(parse_duration("20ms"), 0.02);
    EXPECT_DOUBLE_EQ(parse_duration("1.5s"), 1.5);
    for (const char* bad :
         {"", "fast", "-5Mbit", "0Mbit", "100", "100Mbits", "1e300Gbit", "0.1bit", "nanMbit"}) {
        EXPECT_THROW(parse_rate(bad), Error) << bad;
    }
    // Durations too long for the clocks are refused, not wrapped to nothing.
    for (const char* bad : {"20", "1e300s", "8e5s", "infs", "nans", "-1s", "1e400ms"}) {
        EXPECT_THROW(parse_duration(bad), Error) << bad;
    }
    EXPECT_DOUBLE_EQ(parse_duration("3600s"), 3600);
    const FaultRule flip = parse_fault("flip:base-8.bin:100:4:always");
    EXPECT_EQ(flip.kind, FaultRule::Kind::flip);
    EXPECT_EQ(flip.offset, 100u);
    EXPECT_EQ(flip.length, 4u);
    EXPECT_EQ(flip.times, -1);
    EXPECT_EQ(parse_fault("drop:*:5000").times, 1);
    for (const char* bad : {"drop", "drop:x", "drop:x:y", "flip:x:1:0", "explode:x", "fail:x:0"}) {
        EXPECT_THROW(parse_fault(bad), Error) << bad;
    }
}

// ---- a real static server ------------------------------------------------------

int free_port() {
    const int socket_fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    ::bind(socket_fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
    ::getsockname(socket_fd, reinterpret_cast<sockaddr*>(&address), &length);
    ::close(socket_fd);
    return ntohs(address.sin_port);
}

TEST_F(Delivery, FetchFromNginx) {
    const char* nginx = "/usr/sbin/nginx";
    if (!fs::exists(nginx))
        GTEST_SKIP() << "nginx is not installed (scripts/install-deps.sh installs it)";
    const fs::path prefix = directory_.path() / "nginx";
    fs::create_directories(prefix / "logs");
    const int port = free_port();
    std::ostringstream config;
    if (::geteuid() == 0) config << "user root;\n";
    config << "error_log " << (prefix / "logs/error.log").string() << ";\n"
           << "pid " << (prefix / "nginx.pid").string() << ";\n"
           << "events {}\nhttp {\n"
           << "  access_log " << (prefix / "logs/access.log").string() << ";\n"
           << "  client_body_temp_path " << (prefix / "body").string() << ";\n"
           << "  proxy_temp_path " << (prefix / "proxy").string() << ";\n"
           << "  fastcgi_temp_path " << (prefix / "fastcgi").string() << ";\n"
           << "  uwsgi_temp_path " << (prefix / "uwsgi").string() << ";\n"
           << "  scgi_temp_path " << (prefix / "scgi").string() << ";\n"
           << "  server { listen 127.0.0.1:" << port << "; root " << root_.string() << "; }\n}\n";
    spit(prefix / "nginx.conf", config.str());
    const pid_t child = ::fork();
    if (child == 0) {
        ::execl(nginx, nginx, "-p", prefix.c_str(), "-c", (prefix / "nginx.conf").c_str(), "-g",
                "daemon off;", static_cast<char*>(nullptr));
        ::_exit(127);
    }
    struct StopNginx {
        pid_t child;
        ~StopNginx() {
            ::kill(child, SIGQUIT);
            ::waitpid(child, nullptr, 0);
        }
    } stop{child};
    const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/model/";
    FetchOptions options = quick_options();
    options.max_attempts = 8;  // nginx may take a moment to listen
    const FetchResult incremental = fetch_package(url, options);
    EXPECT_EQ(serialize_onnx(incremental.model), expected_top_) << slurp(prefix / "logs/error.log");
    options.mode = FetchMode::direct;
    EXPECT_EQ(serialize_onnx(fetch_package(url, options).model), expected_top_);
    // The refinement rungs were fetched with range requests and nginx answered 206.
    EXPECT_NE(slurp(prefix / "logs/access.log").find("\" 206 "), std::string::npos);
}

}  // namespace
}  // namespace bitinc
