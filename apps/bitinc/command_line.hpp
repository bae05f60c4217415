// A small declarative parser for one subcommand's arguments, which also
// writes that subcommand's --help.
#pragma once

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace bitinc::cli {

// Wrong use of the command line (exit status 2, unlike bad input's 1).
class UsageError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

class CommandLine {
  public:
    CommandLine(std::string command, std::string summary);

    void add_positional(std::string name, std::string help);
    void add_flag(std::string name, std::string help);
    void add_option(std::string name, std::string value_name, std::string help);

    // Returns false when --help was asked for (the help is then printed).
    bool parse(int argc, char** argv);

    bool flag(const std::string& name) const;
    // The last value given for an option, or every value of a repeatable one.
    std::optional<std::string> value(const std::string& name) const;
    std::vector<std::string> values(const std::string& name) const;
    const std::string& positional(std::size_t index) const { return positionals_.at(index); }

    // Typed access with range checks; throws UsageError on a bad value.
    long long integer(const std::string& name, long long fallback, long long min,
                      long long max) const;
    double real(const std::string& name, double fallback, double min, double max) const;

    std::string help() const;

  private:
    struct Option {
        std::string name;
        std::string value_name;  // empty for a flag
        std::string help;
    };
    std::string command_;
    std::string summary_;
    std::vector<std::pair<std::string, std::string>> positional_specs_;
    std::vector<Option> options_;
    std::vector<std::string> positionals_;
    std::map<std::string, std::string> values_;
    std::map<std::string, std::vector<std::string>> all_values_;
};

}  // namespace bitinc::cli
