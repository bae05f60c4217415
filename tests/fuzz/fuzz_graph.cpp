// Fuzz target: a topology that passes validate_graph must not crash, hang or
// exhaust the inference engine. Each accepted graph is built into an OpenCV
// engine and run once in a forked child, so that a crash inside OpenCV (which
// is not instrumented) shows as the child dying by a signal; the parent then
// aborts, and libFuzzer keeps the input.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>
#include <thread>

#include "bitinc/engine.hpp"
#include "bitinc/error.hpp"
#include "bitinc/model.hpp"

namespace {

constexpr auto child_time_limit = std::chrono::seconds(8);  // under make fuzz's -timeout=10
constexpr long child_memory_limit_kb =
    1536L * 1024;  // an engine asking more is refused, not a crash

// The child's resident memory in kB, from /proc; 0 when it is gone.
long resident_kb(pid_t child) {
    std::ifstream status("/proc/" + std::to_string(child) + "/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
    }
    return 0;
}

[[noreturn]] void run_engine_in_child(const bitinc::Model& model) {
    // Crashes must kill the child by their signal, not through a sanitizer's
    // or libFuzzer's handler that would exit with a status.
    for (const int signal_number : {SIGSEGV, SIGFPE, SIGBUS, SIGILL, SIGABRT}) {
        ::signal(signal_number, SIG_DFL);
    }
    try {
        auto engine = bitinc::create_opencv_engine(model, "fuzz", {.threads = 1});
        (void)engine;
    } catch (const std::exception&) {
        // Refusing the model is the expected outcome for many inputs.
    }
    std::_Exit(0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    bitinc::Model model;
    try {
        model =
            bitinc::parse_onnx(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
        bitinc::validate_graph(model, "fuzz");
    } catch (const bitinc::Error&) {
        return 0;  // refused before any engine saw it
    }
    std::fflush(nullptr);
    const pid_t child = ::fork();
    if (child < 0) return 0;
    if (child == 0) run_engine_in_child(model);

    const auto start = std::chrono::steady_clock::now();
    int status = 0;
    for (;;) {
        const pid_t done = ::waitpid(child, &status, WNOHANG);
        if (done == child) break;
        const bool too_long = std::chrono::steady_clock::now() - start > child_time_limit;
        const bool too_big = resident_kb(child) > child_memory_limit_kb;
        if (too_long || too_big) {
            ::kill(child, SIGKILL);
            ::waitpid(child, &status, 0);
            if (too_long) {
                std::fprintf(stderr, "fuzz_graph: the engine ran longer than %lld s\n",
                             static_cast<long long>(child_time_limit.count()));
                std::abort();
            }
            return 0;  // a graph whose activations need more memory: refused, not a crash
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    if (WIFSIGNALED(status)) {
        std::fprintf(stderr, "fuzz_graph: the engine died of signal %d on a validated graph\n",
                     WTERMSIG(status));
        std::abort();
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
        std::fprintf(stderr, "fuzz_graph: the engine exited with status %d on a validated graph\n",
                     WEXITSTATUS(status));
        std::abort();
    }
    return 0;
}
