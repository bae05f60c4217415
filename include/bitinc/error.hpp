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

// Every failure the library reports on bad input or a failed operation is an
// Error whose message is one line, naming the file or object concerned. The
// message is made printable (printable_text) whatever it quotes.
class Error : public std::runtime_error {
  public:
    explicit Error(const std::string& message) : std::runtime_error(printable_text(message)) {}
};

}  // namespace bitinc
