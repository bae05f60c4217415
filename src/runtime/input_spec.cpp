#include <charconv>

#include "bitinc/engine.hpp"
#include "bitinc/error.hpp"

namespace bitinc {

namespace {

class MetadataReader {
  public:
    MetadataReader(const Model& model, std::string_view model_name)
        : model_(model), model_name_(model_name) {}

    const std::string* find(const std::string& key) const {
        const auto found = model_.metadata.find(key);
        return found == model_.metadata.end() ? nullptr : &found->second;
    }

    [[noreturn]] void fail(const std::string& key, const std::string& value) const {
        throw Error(ErrorCode::corrupt_data, std::string(model_name_) + ": metadata " + key +
                                                 " = '" + value + "' is malformed");
    }

    template <typename Number>
    std::vector<Number> numbers(const std::string& key) const {
        std::vector<Number> result;
        const std::string* text = find(key);
        if (!text) return result;
        const char* cursor = text->data();
        const char* const end = text->data() + text->size();
        while (cursor < end) {
            while (cursor < end && *cursor == ' ') ++cursor;
            Number value{};
            const auto [next, error] = std::from_chars(cursor, end, value);
            if (error != std::errc()) fail(key, *text);
            result.push_back(value);
            cursor = next;
            while (cursor < end && *cursor == ' ') ++cursor;
            if (cursor < end && *cursor++ != ',') fail(key, *text);
        }
        if (result.empty() || result.size() > 4) fail(key, *text);
        return result;
    }

  private:
    const Model& model_;
    std::string_view model_name_;
};

}  // namespace

InputSpec read_input_spec(const Model& model, std::string_view model_name) {
    const MetadataReader metadata(model, model_name);
    InputSpec spec;
    const TopologySummary summary = summarize_topology(model);
    if (summary.inputs.empty()) {
        throw Error(ErrorCode::unsupported,
                    std::string(model_name) + ": the graph has no input to feed");
    }
    const ValueInfo& input = summary.inputs.front();
    spec.input_name = input.name;

    const auto shape = metadata.numbers<std::int64_t>("bitinc.input.shape");
    if (!shape.empty()) {
        if (shape.size() != 3 || shape[0] <= 0 || shape[1] <= 0 || shape[2] <= 0 || shape[0] > 4 ||
            shape[1] > 8192 || shape[2] > 8192) {
            metadata.fail("bitinc.input.shape", *metadata.find("bitinc.input.shape"));
        }
        spec.channels = shape[0];
        spec.height = shape[1];
        spec.width = shape[2];
        spec.from_metadata = true;
    } else if (input.dims.size() == 4) {
        spec.channels = input.dims[1];
        spec.height = input.dims[2];
        spec.width = input.dims[3];
    } else {
        throw Error(
            ErrorCode::unsupported,
            std::string(model_name) +
                ": the model input is not an NCHW image batch and has no bitinc.input.shape "
                "metadata");
    }
    if (const std::string* layout = metadata.find("bitinc.input.layout");
        layout && *layout != "NCHW") {
        throw Error(ErrorCode::unsupported, std::string(model_name) + ": input layout " + *layout +
                                                " is not supported (only NCHW)");
    }
    if (const auto scale = metadata.numbers<float>("bitinc.input.scale"); !scale.empty()) {
        spec.scale = scale.front();
    }
    if (auto mean = metadata.numbers<float>("bitinc.input.mean"); !mean.empty()) {
        spec.mean = std::move(mean);
    }
    if (auto deviation = metadata.numbers<float>("bitinc.input.std"); !deviation.empty()) {
        for (const float value : deviation) {
            if (!(value > 0.0f)) {
                metadata.fail("bitinc.input.std", *metadata.find("bitinc.input.std"));
            }
        }
        spec.std = std::move(deviation);
    }
    for (const auto* list : {&spec.mean, &spec.std}) {
        if (list->size() != 1 && list->size() != static_cast<std::size_t>(spec.channels)) {
            throw Error(ErrorCode::corrupt_data,
                        std::string(model_name) +
                            ": metadata gives a mean or std per channel for a different number of "
                            "channels than the input has");
        }
    }
    if (const std::string* dataset = metadata.find("bitinc.dataset")) spec.dataset = *dataset;
    if (const auto classes = metadata.numbers<std::int64_t>("bitinc.classes"); !classes.empty()) {
        spec.classes = classes.front();
    }
    return spec;
}

}  // namespace bitinc
