// Errors raised by libbitinc.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace bitinc {

// `text` safe to show on a terminal: control characters (C0, DEL and the C1
// range in UTF-8) become \xNN escapes, so that names read from a model or a
// server cannot move the cursor, change colours or split a one-line message.
// Escaping twice changes nothing more.
std::string printable_text(std::string_view text);

// What kind of failure an Error is, for programs that act on it (the C API's
// status codes, Python's Error.code) rather than show its message.
enum class ErrorCode {
    invalid_argument,  // a bad option, path or value from the caller
    corrupt_data,      // bytes that fail their checks: a damaged or truncated file or unit
    io,                // a file could not be read, written or created
    network,           // a request failed, timed out or was refused, or bad HTTP
    unsupported,       // well-formed input the library cannot handle (an operator, a format)
    cancelled,         // the caller stopped the operation
    out_of_memory,
    untrusted,    // a signature, trust or rollback check refused a package
    not_ready,    // asked for something that has not arrived yet
    unavailable,  // bytes given up that the model cannot do without
    internal,     // a broken invariant: a bug in bitinc
};

// The code's stable lowercase name, e.g. "corrupt_data".
std::string_view error_code_name(ErrorCode code) noexcept;

// Every failure the library reports on bad input or a failed operation is an
// Error whose message is one line, naming the file or object concerned, and
// whose code says what kind of failure it is. The message is made printable
// (printable_text) whatever it quotes. Out of memory stays std::bad_alloc.
class Error : public std::runtime_error {
  public:
    Error(ErrorCode code, const std::string& message)
        : std::runtime_error(printable_text(message)), code_(code) {}
    // For code outside the library; the library's own throws name their code.
    explicit Error(const std::string& message) : Error(ErrorCode::invalid_argument, message) {}

    ErrorCode code() const noexcept { return code_; }

  private:
    ErrorCode code_;
};

}  // namespace bitinc
