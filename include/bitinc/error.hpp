// Errors raised by libbitinc.
#pragma once

#include <stdexcept>
#include <string>

namespace bitinc {

// Every failure the library reports on bad input or a failed operation is an
// Error whose message is one line, naming the file or object concerned.
class Error : public std::runtime_error {
  public:
    explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace bitinc
