// What the foundation costs per model: parsing ONNX, rebuilding it, building
// an engine (the price of every hot swap later) and running a batch.
//
//   build/bench/bitinc_model_bench [--model PATH] [benchmark flags]
//
// Without --model it measures models/small-cnn.onnx.
#include <benchmark/benchmark.h>

#include <cstring>
#include <string>

#include "bitinc/accuracy.hpp"
#include "bitinc/model.hpp"

namespace {

std::string model_path = std::string(BITINC_SOURCE_DIR) + "/models/small-cnn.onnx";

const bitinc::Model& model() {
    static const bitinc::Model loaded = bitinc::read_onnx_file(model_path);
    return loaded;
}

void parse_onnx(benchmark::State& state) {
    const std::string bytes = bitinc::serialize_onnx(model());
    for (auto _ : state) benchmark::DoNotOptimize(bitinc::parse_onnx(bytes, model_path));
    state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(bytes.size()));
}

void serialize_onnx(benchmark::State& state) {
    std::size_t bytes = 0;
    for (auto _ : state) bytes = bitinc::serialize_onnx(model()).size();
    state.SetBytesProcessed(std::int64_t(state.iterations() * bytes));
}

void build_engine(benchmark::State& state) {
    for (auto _ : state) {
        benchmark::DoNotOptimize(bitinc::create_opencv_engine(model(), model_path, {.threads = 1}));
    }
}

void run_batch(benchmark::State& state) {
    const auto images =
        bitinc::load_fashion_mnist(bitinc::default_fashion_mnist_dir, bitinc::Split::test);
    const bitinc::InputSpec spec = bitinc::read_input_spec(model(), model_path);
    const auto batch_size = static_cast<std::size_t>(state.range(0));
    const bitinc::FloatArray batch = bitinc::make_input_batch(spec, images, 0, batch_size);
    const auto engine =
        bitinc::create_opencv_engine(model(), model_path, {.threads = int(state.range(1))});
    for (auto _ : state) benchmark::DoNotOptimize(engine->run(batch));
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(batch_size));
}

BENCHMARK(parse_onnx)->Unit(benchmark::kMillisecond);
BENCHMARK(serialize_onnx)->Unit(benchmark::kMillisecond);
BENCHMARK(build_engine)->Unit(benchmark::kMillisecond);
BENCHMARK(run_batch)
    ->ArgsProduct({{1, 100}, {1, 2}})
    ->ArgNames({"batch", "threads"})
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
    // Our own flag first; the rest belong to Google Benchmark.
    for (int i = 1; i + 1 < argc; ++i) {
        if (std::strcmp(argv[i], "--model") == 0) {
            model_path = argv[i + 1];
            for (int j = i; j + 2 < argc; ++j) argv[j] = argv[j + 2];
            argc -= 2;
            break;
        }
    }
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
