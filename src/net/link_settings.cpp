// Text forms of link rates, durations and fault rules, as the CLI takes them.
#include <charconv>
#include <cmath>
#include <string>
#include <vector>

#include "bitinc/error.hpp"
#include "bitinc/server.hpp"

namespace bitinc {

namespace {

// Splits "123.5unit" into the number and the unit; nullopt-like failure is
// signalled by a negative number.
std::pair<double, std::string_view> number_and_unit(std::string_view text) {
    double number = -1;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
    if (error != std::errc() || !std::isfinite(number) || number < 0) return {-1, {}};
    return {number, text.substr(std::size_t(end - text.data()))};
}

std::vector<std::string_view> fields(std::string_view text) {
    std::vector<std::string_view> parts;
    for (;;) {
        const auto colon = text.find(':');
        parts.push_back(text.substr(0, colon));
        if (colon == std::string_view::npos) return parts;
        text.remove_prefix(colon + 1);
    }
}

std::uint64_t whole_number(std::string_view text, std::string_view rule) {
    std::uint64_t value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc() || end != text.data() + text.size()) {
        throw Error(ErrorCode::invalid_argument, "fault '" + std::string(rule) + "': '" +
                                                     std::string(text) + "' is not a whole number");
    }
    return value;
}

int times_of(std::string_view text, std::string_view rule) {
    if (text == "always") return -1;
    const std::uint64_t times = whole_number(text, rule);
    if (times == 0 || times > 1'000'000) {
        throw Error(ErrorCode::invalid_argument,
                    "fault '" + std::string(rule) + "': TIMES is a count from 1 or 'always'");
    }
    return int(times);
}

}  // namespace

double parse_rate(std::string_view text) {
    const auto [number, unit] = number_and_unit(text);
    struct Unit {
        std::string_view name;
        double bits;
    };
    static constexpr Unit units[] = {{"bit", 1},    {"kbit", 1e3}, {"Kbit", 1e3}, {"Mbit", 1e6},
                                     {"Gbit", 1e9}, {"B", 8},      {"kB", 8e3},   {"KB", 8e3},
                                     {"MB", 8e6},   {"GB", 8e9},   {"bps", 1},    {"kbps", 1e3},
                                     {"Mbps", 1e6}, {"Gbps", 1e9}};
    if (number > 0) {
        for (const Unit& candidate : units) {
            if (unit != candidate.name) continue;
            const double bits = number * candidate.bits;
            if (bits >= 1 && bits <= max_rate_bits_per_second) return bits;
            throw Error(ErrorCode::invalid_argument,
                        "rate '" + std::string(text) + "' is out of range (1bit to 1000Gbit)");
        }
    }
    throw Error(
        ErrorCode::invalid_argument,
        "rate '" + std::string(text) +
            "': give a positive number with a unit, e.g. 100Mbit, 33.6Mbit, 1.1Gbit or 12MB");
}

double parse_duration(std::string_view text) {
    const auto [number, unit] = number_and_unit(text);
    if (number >= 0) {
        double seconds = -1;
        if (unit == "ms") seconds = number / 1e3;
        if (unit == "s") seconds = number;
        if (unit == "us") seconds = number / 1e6;
        if (unit.empty() && number == 0) seconds = 0;
        // Beyond a week a duration is a typo, and clocks would overflow.
        if (seconds > max_duration_seconds) {
            throw Error(ErrorCode::invalid_argument,
                        "duration '" + std::string(text) + "' is longer than a week");
        }
        if (seconds >= 0) return seconds;
    }
    throw Error(ErrorCode::invalid_argument, "duration '" + std::string(text) +
                                                 "': give a number with a unit, e.g. 20ms or 1.5s");
}

FaultRule parse_fault(std::string_view text) {
    const std::vector<std::string_view> parts = fields(text);
    const std::string rule(text);
    FaultRule fault;
    const auto need = [&](std::size_t least, std::size_t most, const char* form) {
        if (parts.size() < least || parts.size() > most || parts[1].empty()) {
            throw Error(ErrorCode::invalid_argument, "fault '" + rule + "': expected " + form);
        }
        fault.file = std::string(parts[1]);
    };
    if (parts[0] == "drop") {
        need(3, 4, "drop:FILE:BYTES[:TIMES]");
        fault.kind = FaultRule::Kind::drop;
        fault.bytes = whole_number(parts[2], rule);
        if (parts.size() == 4) fault.times = times_of(parts[3], rule);
    } else if (parts[0] == "flip") {
        need(3, 5, "flip:FILE:OFFSET[:LENGTH[:TIMES]]");
        fault.kind = FaultRule::Kind::flip;
        fault.offset = whole_number(parts[2], rule);
        if (parts.size() >= 4) fault.length = whole_number(parts[3], rule);
        if (fault.length == 0)
            throw Error(ErrorCode::invalid_argument,
                        "fault '" + rule + "': LENGTH must be at least 1");
        if (parts.size() == 5) fault.times = times_of(parts[4], rule);
    } else if (parts[0] == "delay") {
        need(3, 4, "delay:FILE:DURATION[:TIMES]");
        fault.kind = FaultRule::Kind::delay;
        fault.seconds = parse_duration(parts[2]);
        if (parts.size() == 4) fault.times = times_of(parts[3], rule);
    } else if (parts[0] == "fail") {
        need(2, 3, "fail:FILE[:TIMES]");
        fault.kind = FaultRule::Kind::fail;
        if (parts.size() == 3) fault.times = times_of(parts[2], rule);
    } else {
        throw Error(ErrorCode::invalid_argument,
                    "fault '" + rule + "': the kind is drop, flip, delay or fail");
    }
    return fault;
}

}  // namespace bitinc
