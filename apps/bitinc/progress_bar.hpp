// A one-line progress bar on stderr, drawn only when stderr is a terminal.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

namespace bitinc::cli {

class ProgressBar {
  public:
    ProgressBar(std::string label, std::string unit, bool enabled);
    ~ProgressBar();
    ProgressBar(const ProgressBar&) = delete;
    ProgressBar& operator=(const ProgressBar&) = delete;

    void update(std::size_t done, std::size_t total);
    // Erases the bar so that the next output starts on a clean line.
    void finish();

    static bool stderr_is_terminal();

  private:
    std::string label_;
    std::string unit_;
    bool enabled_;
    bool drawn_ = false;
    std::chrono::steady_clock::time_point start_;
    std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace bitinc::cli
