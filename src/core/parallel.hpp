// A minimal parallel loop for the coders' independent jobs.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace bitinc::core {

// The threads to use when the caller asked for `requested` (0: all cores).
inline int resolve_threads(int requested) {
    if (requested > 0) return requested;
    const unsigned cores = std::thread::hardware_concurrency();
    return cores == 0 ? 1 : int(cores);
}

// Runs job(i) for every i in [0, count) on `threads` threads (the calling
// thread is one of them), taking jobs in index order, and returns the wall
// time in seconds. The first exception a job throws is rethrown after all
// threads have stopped; jobs not yet started are skipped.
template <typename Job>
double run_parallel(std::size_t count, int threads, Job&& job) {
    const auto start = std::chrono::steady_clock::now();
    std::atomic<std::size_t> next{0};
    std::exception_ptr failure;
    std::mutex failure_mutex;
    auto worker = [&] {
        for (std::size_t i = next++; i < count; i = next++) {
            try {
                job(i);
            } catch (...) {
                const std::lock_guard lock(failure_mutex);
                if (!failure) failure = std::current_exception();
                next = count;
            }
        }
    };
    std::vector<std::jthread> pool;
    try {
        for (int t = 1; t < threads && std::size_t(t) < count; ++t) pool.emplace_back(worker);
    } catch (const std::system_error&) {
        // No more threads to be had: the ones running (and this one) do the jobs.
    }
    worker();
    pool.clear();  // joins
    if (failure) std::rethrow_exception(failure);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace bitinc::core
