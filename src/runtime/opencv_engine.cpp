// The OpenCV DNN engine. OpenCV imports ONNX from a memory buffer; it cannot
// change weights in place after the first forward pass, so a new set of
// weights means a new engine.
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/dnn.hpp>

#include <algorithm>
#include <mutex>

#include "bitinc/engine.hpp"
#include "bitinc/error.hpp"

namespace bitinc {

namespace {

// OpenCV's messages carry its source file, line and function, may span
// lines, and wrap the ONNX node in markers:
//   Node [Conv@ai.onnx]:(onnx_node!conv0) parse error: ... REASON in function 'f'
// Keep what a user can act on: the operator, the node, and the reason.
std::string readable_opencv_message(const std::string& raw) {
    std::string text = raw;
    std::replace(text.begin(), text.end(), '\n', ' ');
    std::string op_type;
    std::string node_name;
    if (const auto node_at = text.find("Node ["); node_at != std::string::npos) {
        const auto type_end = text.find_first_of("@]", node_at + 6);
        if (type_end != std::string::npos)
            op_type = text.substr(node_at + 6, type_end - node_at - 6);
        const auto name_at = text.find("]:(", node_at);
        const auto name_end = name_at == std::string::npos ? name_at : text.find(')', name_at + 3);
        if (name_end != std::string::npos) {
            node_name = text.substr(name_at + 3, name_end - name_at - 3);
            // OpenCV prefixes the ONNX node's name.
            constexpr std::string_view prefix = "onnx_node!";
            if (node_name.rfind(prefix, 0) == 0) node_name.erase(0, prefix.size());
        }
    }
    const std::string where = node_name.empty() ? "" : " (node '" + node_name + "')";
    const auto unsupported = text.find("Can't create layer");
    const auto type_at =
        text.find("of type \"", unsupported == std::string::npos ? 0 : unsupported);
    if (unsupported != std::string::npos && type_at != std::string::npos) {
        const auto begin = type_at + 9;
        const auto end = text.find('"', begin);
        return "operator " + text.substr(begin, end - begin) + " is not supported by OpenCV DNN " +
               CV_VERSION + where;
    }
    // "... error: (-215:Assertion failed) REASON in function 'f'"
    if (const auto code = text.rfind("error: ("); code != std::string::npos) {
        const auto close = text.find(") ", code);
        if (close != std::string::npos) text = text.substr(close + 2);
    }
    if (const auto function = text.rfind(" in function '"); function != std::string::npos) {
        text.resize(function);
    }
    while (!text.empty() && (text.back() == ' ' || text.back() == '>')) text.pop_back();
    while (!text.empty() && (text.front() == ' ' || text.front() == '>')) text.erase(0, 1);
    if (!op_type.empty()) {
        return "operator " + op_type + where + ": " + text;
    }
    return text;
}

void silence_opencv_logging() {
    // OpenCV would otherwise print its own multi-line diagnostics on stderr
    // next to the error we report.
    static std::once_flag once;
    std::call_once(once,
                   [] { cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT); });
}

class OpenCvEngine final : public Engine {
  public:
    OpenCvEngine(cv::dnn::Net net, std::string model_name)
        : net_(std::move(net)), model_name_(std::move(model_name)) {}

    std::string_view name() const override { return "opencv-dnn"; }

    FloatArray run(const FloatArray& batch) override {
        std::size_t expected = batch.shape.empty() ? 0 : 1;
        std::vector<int> dims;
        for (const std::int64_t dim : batch.shape) {
            if (dim <= 0 || dim > (1 << 30))
                throw Error(ErrorCode::invalid_argument, model_name_ + ": bad input batch shape");
            dims.push_back(static_cast<int>(dim));
            expected *= static_cast<std::size_t>(dim);
        }
        if (expected != batch.values.size()) {
            throw Error(ErrorCode::invalid_argument,
                        model_name_ + ": input batch holds " + std::to_string(batch.values.size()) +
                            " values, its shape needs " + std::to_string(expected));
        }
        try {
            // The Mat only wraps the caller's data for the duration of this call.
            const cv::Mat blob(static_cast<int>(dims.size()), dims.data(), CV_32F,
                               const_cast<float*>(batch.values.data()));
            net_.setInput(blob);
            const cv::Mat output = net_.forward();
            FloatArray result;
            for (int i = 0; i < output.dims; ++i) result.shape.push_back(output.size[i]);
            const cv::Mat dense = output.isContinuous() ? output : output.clone();
            const auto* begin = dense.ptr<float>();
            result.values.assign(begin, begin + dense.total());
            return result;
        } catch (const cv::Exception& error) {
            throw Error(ErrorCode::unsupported, model_name_ +
                                                    ": the engine failed to run the model: " +
                                                    readable_opencv_message(error.err));
        }
    }

  private:
    cv::dnn::Net net_;
    std::string model_name_;
};

// The shape of one sample of the graph's first input with batch 1 (or as
// `shapes` gives it), or empty when the graph does not fix it.
std::vector<std::int64_t> warm_up_shape(const Model& model, const InputShapes& shapes) {
    const TopologySummary summary = summarize_topology(model);
    if (summary.inputs.empty()) return {};
    if (const auto given = shapes.find(summary.inputs.front().name); given != shapes.end()) {
        return given->second;
    }
    std::vector<std::int64_t> shape = summary.inputs.front().dims;
    if (shape.empty()) return {};
    shape[0] = 1;
    for (const std::int64_t dim : shape) {
        if (dim <= 0 || dim > 4096) return {};
    }
    return shape;
}

}  // namespace

std::unique_ptr<Engine> create_opencv_engine(Model model, std::string_view model_name,
                                             const EngineOptions& options) {
    silence_opencv_logging();
    if (options.threads > 0) cv::setNumThreads(options.threads);
    // OpenCV trusts the graph's attributes (it divides by a Conv's group, for
    // one): nothing reaches it unchecked.
    validate_graph(model, model_name);
    apply_engine_fixups(model);
    const std::string bytes = serialize_onnx(model);
    const std::string name(model_name);
    cv::dnn::Net net;
    try {
        net = cv::dnn::readNetFromONNX(bytes.data(), bytes.size());
    } catch (const cv::Exception& error) {
        throw Error(ErrorCode::unsupported, name + ": the engine cannot load the model: " +
                                                readable_opencv_message(error.err));
    }
    if (net.empty())
        throw Error(ErrorCode::unsupported,
                    name + ": the engine cannot load the model (empty network)");
    net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
    net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
    auto engine = std::make_unique<OpenCvEngine>(std::move(net), name);
    // OpenCV sets a network up lazily on the first forward pass, where most
    // "cannot run" errors surface; do it now, off any inference path.
    if (const auto shape = warm_up_shape(model, options.input_shapes); !shape.empty()) {
        FloatArray zeros;
        zeros.shape = shape;
        std::size_t count = 1;
        for (const std::int64_t dim : shape) count *= static_cast<std::size_t>(dim);
        zeros.values.assign(count, 0.0f);
        engine->run(zeros);
    }
    return engine;
}

}  // namespace bitinc
