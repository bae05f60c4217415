// Speed of the codec's inner loops on a synthetic trained-like tensor
// (heavy-tailed, 1 M weights): weights per second, one thread. The second
// argument picks the unit coder: 2 rANS (what pack uses), 1 the adaptive
// binary coder (what `pack --compact` takes where it is smaller).
//
//   build/bench/bitinc_codec_bench [benchmark flags]
#include <benchmark/benchmark.h>

#include <random>

#include "bitinc/codec.hpp"

namespace {

bitinc::Tensor synthetic_tensor() {
    bitinc::Tensor tensor;
    tensor.name = "synthetic";
    tensor.shape = {256, 4096};
    std::mt19937 generator(1);
    std::student_t_distribution<float> heavy_tailed(4.0f);
    tensor.values.resize(256 * 4096);
    for (std::size_t i = 0; i < tensor.values.size(); ++i) {
        tensor.values[i] = 0.02f * float(1 + (i / 4096) % 5) * heavy_tailed(generator);
    }
    return tensor;
}

const std::vector<bitinc::QuantizedTensor>& rungs() {
    static const auto ladder =
        bitinc::quantize_ladder(synthetic_tensor(), bitinc::LadderPlan::parse("4,8,16"));
    return ladder;
}

bitinc::UnitTarget whole() {
    return bitinc::plan_chunks(0, rungs()[0].indices.size(), 1 << 20).front();
}

void set_rate(benchmark::State& state) {
    state.SetItemsProcessed(std::int64_t(state.iterations()) *
                            std::int64_t(rungs()[0].indices.size()));
}

void quantize(benchmark::State& state) {
    const bitinc::Tensor tensor = synthetic_tensor();
    const auto plan = bitinc::LadderPlan::parse("4,8,16");
    for (auto _ : state) benchmark::DoNotOptimize(bitinc::quantize_ladder(tensor, plan));
    set_rate(state);
}

bitinc::CoderChoice coder(const benchmark::State& state) {
    return state.range(1) == 1 ? bitinc::CoderChoice::adaptive : bitinc::CoderChoice::fast;
}

void encode_levels(benchmark::State& state) {
    const auto& rung = rungs()[std::size_t(state.range(0))];
    for (auto _ : state)
        benchmark::DoNotOptimize(bitinc::encode_level_unit(whole(), rung, coder(state)));
    set_rate(state);
}

void decode_levels(benchmark::State& state) {
    const auto& rung = rungs()[std::size_t(state.range(0))];
    const auto unit = bitinc::encode_level_unit(whole(), rung, coder(state));
    const auto header = bitinc::read_unit_header(unit, "bench");
    std::vector<std::int32_t> out(rung.indices.size());
    for (auto _ : state) bitinc::decode_level_unit(header, unit, out);
    set_rate(state);
    state.counters["bytes"] = double(unit.size());
}

void decode_refinement(benchmark::State& state) {
    const auto fine = std::size_t(state.range(0));
    const auto unit =
        bitinc::encode_refinement_unit(whole(), rungs()[fine - 1], rungs()[fine], coder(state));
    const auto header = bitinc::read_unit_header(unit, "bench");
    std::vector<std::int32_t> out(rungs()[0].indices.size());
    for (auto _ : state)
        bitinc::decode_refinement_unit(header, unit, rungs()[fine - 1].indices, out);
    set_rate(state);
    state.counters["bytes"] = double(unit.size());
}

void apply_refinement(benchmark::State& state) {
    const auto residuals = bitinc::refinement_residuals(rungs()[1], rungs()[2]);
    for (auto _ : state) benchmark::DoNotOptimize(bitinc::refine(rungs()[1], residuals, 16));
    set_rate(state);
}

void reconstruct(benchmark::State& state) {
    for (auto _ : state) benchmark::DoNotOptimize(bitinc::reconstruct(rungs()[2]));
    set_rate(state);
}

// Rung index: 0 = 4 bit, 1 = 8 bit, 2 = 16 bit.
BENCHMARK(quantize)->Unit(benchmark::kMillisecond);
BENCHMARK(encode_levels)->ArgsProduct({{1, 2}, {2, 1}})->Unit(benchmark::kMillisecond);
BENCHMARK(decode_levels)->ArgsProduct({{0, 1, 2}, {2, 1}})->Unit(benchmark::kMillisecond);
BENCHMARK(decode_refinement)->ArgsProduct({{1, 2}, {2, 1}})->Unit(benchmark::kMillisecond);
BENCHMARK(apply_refinement)->Unit(benchmark::kMillisecond);
BENCHMARK(reconstruct)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
