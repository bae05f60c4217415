#include "command_line.hpp"

#include <charconv>
#include <cstdio>
#include <cstdlib>

namespace bitinc::cli {

CommandLine::CommandLine(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {
    add_flag("help", "show this help and exit");
}

void CommandLine::add_positional(std::string name, std::string help) {
    positional_specs_.emplace_back(std::move(name), std::move(help));
}

void CommandLine::add_flag(std::string name, std::string help) {
    options_.push_back({std::move(name), "", std::move(help)});
}

void CommandLine::add_option(std::string name, std::string value_name, std::string help) {
    options_.push_back({std::move(name), std::move(value_name), std::move(help)});
}

bool CommandLine::parse(int argc, char** argv) {
    const std::string see_help = " (see 'bitinc " + command_ + " --help')";
    for (int i = 0; i < argc; ++i) {
        std::string argument = argv[i];
        // "--name[=value]", or "-x" for a one-letter option such as -o.
        const bool long_option = argument.size() >= 3 && argument.rfind("--", 0) == 0;
        const bool short_option = argument.size() == 2 && argument[0] == '-' && argument[1] != '-';
        if (!long_option && !short_option) {
            positionals_.push_back(std::move(argument));
            continue;
        }
        std::string name = argument.substr(short_option ? 1 : 2);
        std::optional<std::string> inline_value;
        if (const auto equals = name.find('='); equals != std::string::npos) {
            inline_value = name.substr(equals + 1);
            name.resize(equals);
        }
        const Option* option = nullptr;
        for (const Option& candidate : options_) {
            if (candidate.name == name) option = &candidate;
        }
        if (!option) throw UsageError("unknown option " + argument + see_help);
        if (option->value_name.empty()) {
            if (inline_value) throw UsageError("--" + name + " takes no value" + see_help);
            values_[name] = "";
        } else if (inline_value) {
            values_[name] = *inline_value;
            all_values_[name].push_back(*inline_value);
        } else if (i + 1 < argc) {
            values_[name] = argv[++i];
            all_values_[name].push_back(values_[name]);
        } else {
            throw UsageError("--" + name + " needs a value " + option->value_name + see_help);
        }
    }
    if (flag("help")) {
        std::fputs(help().c_str(), stdout);
        return false;
    }
    if (positionals_.size() != positional_specs_.size()) {
        throw UsageError("expected " + std::to_string(positional_specs_.size()) +
                         " argument(s), got " + std::to_string(positionals_.size()) + see_help);
    }
    return true;
}

bool CommandLine::flag(const std::string& name) const {
    return values_.count(name) > 0;
}

std::optional<std::string> CommandLine::value(const std::string& name) const {
    const auto found = values_.find(name);
    if (found == values_.end()) return std::nullopt;
    return found->second;
}

std::vector<std::string> CommandLine::values(const std::string& name) const {
    const auto found = all_values_.find(name);
    return found == all_values_.end() ? std::vector<std::string>{} : found->second;
}

long long CommandLine::integer(const std::string& name, long long fallback, long long min,
                               long long max) const {
    const auto text = value(name);
    if (!text) return fallback;
    long long number = 0;
    const auto [end, error] = std::from_chars(text->data(), text->data() + text->size(), number);
    if (error != std::errc() || end != text->data() + text->size() || number < min ||
        number > max) {
        throw UsageError("--" + name + " must be a whole number from " + std::to_string(min) +
                         " to " + std::to_string(max) + ", not '" + *text + "'");
    }
    return number;
}

double CommandLine::real(const std::string& name, double fallback, double min, double max) const {
    const auto text = value(name);
    if (!text) return fallback;
    char* end = nullptr;
    const double number = std::strtod(text->c_str(), &end);
    if (end == text->c_str() || *end != '\0' || !(number >= min && number <= max)) {
        char range[64];
        std::snprintf(range, sizeof range, "from %g to %g", min, max);
        throw UsageError("--" + name + " must be a number " + range + ", not '" + *text + "'");
    }
    return number;
}

std::string CommandLine::help() const {
    std::string text = "usage: bitinc " + command_;
    for (const auto& [name, _] : positional_specs_) text += " " + name;
    text += " [options]\n\n" + summary_ + "\n\n";
    if (!positional_specs_.empty()) {
        text += "arguments:\n";
        for (const auto& [name, help] : positional_specs_) {
            text += "  " + name + std::string(name.size() < 22 ? 22 - name.size() : 1, ' ') + help +
                    "\n";
        }
        text += "\n";
    }
    text += "options:\n";
    for (const Option& option : options_) {
        std::string left = (option.name.size() == 1 ? "-" : "--") + option.name;
        if (!option.value_name.empty()) left += " " + option.value_name;
        text += "  " + left + std::string(left.size() < 22 ? 22 - left.size() : 1, ' ') +
                option.help + "\n";
    }
    return text;
}

}  // namespace bitinc::cli
