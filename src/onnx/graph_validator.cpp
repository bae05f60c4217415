// Checks a graph before any inference engine sees it. An engine divides by,
// loops over and allocates from attributes such as a convolution's group or a
// pooling window; ONNX forbids the values that would break it (group 0, stride
// 0, negative pads, a Transpose that is no permutation...), but engines trust
// the file. A package's topology comes from a server, so bitinc checks here.
#include <cmath>
#include <cstring>
#include <optional>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "bitinc/error.hpp"
#include "bitinc/model.hpp"
#include "onnx/proto_io.hpp"

namespace bitinc {

namespace {

// Far beyond any real network, small enough that no product of a few of them
// overflows or asks for more memory than a device has.
constexpr std::int64_t max_spatial = std::int64_t{1} << 16;  // kernel, stride, pad, dilation
constexpr std::int64_t max_group = std::int64_t{1} << 20;
constexpr std::int64_t max_rank = 16;
constexpr std::int64_t max_dimension = std::int64_t{1} << 24;
constexpr std::int64_t max_tensor_dimension = std::int64_t{1} << 40;  // a declared shape
constexpr std::int64_t max_input_elements = std::int64_t{1} << 28;
constexpr int max_list = 64;
constexpr int max_nodes = 1'000'000;
constexpr double max_scale = 1024;

class GraphValidator {
  public:
    GraphValidator(const Model& model, std::string_view source) : model_(model), source_(source) {}

    void run() {
        const onnx::ModelProto proto = onnx_io::parse_model_proto(model_.topology, source_);
        const onnx::GraphProto& graph = proto.graph();
        if (graph.node_size() > max_nodes) fail("the graph has more than a million nodes");
        for (const Tensor& weight : model_.weights) shapes_[weight.name] = weight.shape;
        for (const auto& initializer : graph.initializer()) {
            check_tensor_values(initializer, "initializer '" + initializer.name() + "'");
            defined_.insert(initializer.name());
            shapes_.emplace(
                initializer.name(),
                std::vector<std::int64_t>(initializer.dims().begin(), initializer.dims().end()));
            initializers_.emplace(initializer.name(), &initializer);
        }
        for (const auto& input : graph.input()) {
            defined_.insert(input.name());
            check_graph_input(input);
        }
        for (const auto& node : graph.node()) check_node(node);
        for (const auto& output : graph.output()) {
            if (!defined_.count(output.name())) {
                fail("graph output '" + output.name() + "' is produced by no node");
            }
        }
    }

  private:
    [[noreturn]] void fail(const std::string& what) const {
        throw Error(ErrorCode::corrupt_data, std::string(source_) + ": invalid graph: " + what);
    }

    template <typename Dims>
    void check_dims(const Dims& dims, const std::string& what) const {
        if (dims.size() > max_rank) fail(what + " has more than 16 dimensions");
        for (const std::int64_t dim : dims) {
            if (dim < 0 || dim > max_tensor_dimension) fail(what + " has a bad dimension");
        }
    }

    // A tensor that carries values must carry exactly as many as its dims
    // say: OpenCV's importer copies the dims' worth of bytes from whatever is
    // there. (A tensor without values is a weight whose data the topology
    // leaves out, or holds none.)
    void check_tensor_values(const onnx::TensorProto& tensor, const std::string& what) const {
        check_dims(tensor.dims(), what);
        std::uint64_t count = 1;
        for (const std::int64_t dim : tensor.dims()) {
            const auto size = std::uint64_t(dim);
            count = size != 0 && count > UINT64_MAX / size ? UINT64_MAX : count * size;
        }
        const std::string& raw = tensor.raw_data();
        const std::uint64_t typed =
            std::uint64_t(tensor.float_data_size()) + std::uint64_t(tensor.int32_data_size()) +
            std::uint64_t(tensor.int64_data_size()) + std::uint64_t(tensor.double_data_size()) +
            std::uint64_t(tensor.uint64_data_size());
        if (!raw.empty()) {
            const std::uint64_t element_bytes = element_size(tensor.data_type());
            if (element_bytes != 0 && (count == UINT64_MAX || raw.size() != count * element_bytes))
                fail(what + " holds " + std::to_string(raw.size()) +
                     " bytes, not what its shape needs");
        } else if (typed != 0 && typed != count) {
            fail(what + " holds " + std::to_string(typed) + " values, not what its shape needs");
        }
    }

    static std::uint64_t element_size(std::int32_t type) {
        switch (type) {
            case onnx::TensorProto::UINT8:
            case onnx::TensorProto::INT8:
            case onnx::TensorProto::BOOL:
                return 1;
            case onnx::TensorProto::UINT16:
            case onnx::TensorProto::INT16:
            case onnx::TensorProto::FLOAT16:
            case onnx::TensorProto::BFLOAT16:
                return 2;
            case onnx::TensorProto::FLOAT:
            case onnx::TensorProto::INT32:
            case onnx::TensorProto::UINT32:
                return 4;
            case onnx::TensorProto::INT64:
            case onnx::TensorProto::UINT64:
            case onnx::TensorProto::DOUBLE:
            case onnx::TensorProto::COMPLEX64:
                return 8;
            case onnx::TensorProto::COMPLEX128:
                return 16;
            default:
                return 0;  // strings and unknown types: not checked here
        }
    }

    void check_graph_input(const onnx::ValueInfoProto& input) const {
        if (!input.type().has_tensor_type() || !input.type().tensor_type().has_shape()) return;
        const auto& dims = input.type().tensor_type().shape().dim();
        if (dims.size() > max_rank)
            fail("input '" + input.name() + "' has more than 16 dimensions");
        std::int64_t elements = 1;
        for (const auto& dim : dims) {
            if (!dim.has_dim_value()) continue;  // symbolic: the caller's batch decides
            const std::int64_t value = dim.dim_value();
            if (value < 0 || value > max_dimension) {
                fail("input '" + input.name() + "' has dimension " + std::to_string(value));
            }
            elements *= std::max<std::int64_t>(value, 1);
            if (elements > max_input_elements) {
                fail("input '" + input.name() + "' has more than 2^28 elements");
            }
        }
    }

    // ---- attributes ----------------------------------------------------------

    const onnx::AttributeProto* attribute(const onnx::NodeProto& node, const char* name) const {
        for (const auto& candidate : node.attribute()) {
            if (candidate.name() == name) return &candidate;
        }
        return nullptr;
    }

    std::optional<std::int64_t> int_attribute(const onnx::NodeProto& node, const char* name) const {
        const onnx::AttributeProto* found = attribute(node, name);
        if (found == nullptr) return std::nullopt;
        return found->i();
    }

    std::optional<std::vector<std::int64_t>> ints_attribute(const onnx::NodeProto& node,
                                                            const char* name) const {
        const onnx::AttributeProto* found = attribute(node, name);
        if (found == nullptr) return std::nullopt;
        return std::vector<std::int64_t>(found->ints().begin(), found->ints().end());
    }

    std::string where(const onnx::NodeProto& node) const {
        return node.op_type() + " node '" + node.name() + "'";
    }

    void expect_range(const onnx::NodeProto& node, const char* name, std::int64_t value,
                      std::int64_t least, std::int64_t most) const {
        if (value < least || value > most) {
            fail(where(node) + ": " + name + " = " + std::to_string(value) + " (allowed " +
                 std::to_string(least) + " to " + std::to_string(most) + ")");
        }
    }

    void expect_ints(const onnx::NodeProto& node, const char* name, std::int64_t least,
                     std::int64_t most) const {
        if (const auto values = ints_attribute(node, name)) {
            for (const std::int64_t value : *values) expect_range(node, name, value, least, most);
        }
    }

    void expect_int(const onnx::NodeProto& node, const char* name, std::int64_t least,
                    std::int64_t most) const {
        if (const auto value = int_attribute(node, name)) {
            expect_range(node, name, *value, least, most);
        }
    }

    // ---- constant inputs -----------------------------------------------------

    // The tensor behind a constant input (an initializer or a Constant
    // node's value), or nullptr.
    const onnx::TensorProto* constant_tensor(const std::string& name) const {
        if (const auto found = initializers_.find(name); found != initializers_.end()) {
            return found->second;
        }
        const auto constant = constants_.find(name);
        return constant == constants_.end() ? nullptr : constant->second;
    }

    // Raw little-endian values of type T, when there are at most 4096.
    template <typename T>
    static std::optional<std::vector<T>> raw_values(const std::string& raw) {
        if (raw.size() % sizeof(T) != 0 || raw.size() > sizeof(T) * 4096) return std::nullopt;
        std::vector<T> values(raw.size() / sizeof(T));
        std::memcpy(values.data(), raw.data(), raw.size());
        return values;
    }

    // The integer values of a constant input, when it is one and small.
    std::optional<std::vector<std::int64_t>> constant_ints(const std::string& name) const {
        const onnx::TensorProto* tensor = constant_tensor(name);
        if (tensor == nullptr) return std::nullopt;
        const bool raw = !tensor->raw_data().empty();
        if (tensor->data_type() == onnx::TensorProto::INT64) {
            if (raw) return raw_values<std::int64_t>(tensor->raw_data());
            return std::vector<std::int64_t>(tensor->int64_data().begin(),
                                             tensor->int64_data().end());
        }
        if (tensor->data_type() == onnx::TensorProto::INT32) {
            if (!raw) {
                return std::vector<std::int64_t>(tensor->int32_data().begin(),
                                                 tensor->int32_data().end());
            }
            const auto narrow = raw_values<std::int32_t>(tensor->raw_data());
            if (!narrow) return std::nullopt;
            return std::vector<std::int64_t>(narrow->begin(), narrow->end());
        }
        return std::nullopt;
    }

    std::optional<std::vector<float>> constant_floats(const std::string& name) const {
        // A weight's data is in the model, not in the topology.
        for (const Tensor& weight : model_.weights) {
            if (weight.name != name) continue;
            if (weight.values.empty() || weight.values.size() > 4096) return std::nullopt;
            return weight.values;
        }
        const onnx::TensorProto* tensor = constant_tensor(name);
        if (tensor == nullptr || tensor->data_type() != onnx::TensorProto::FLOAT) {
            return std::nullopt;
        }
        if (!tensor->raw_data().empty()) return raw_values<float>(tensor->raw_data());
        return std::vector<float>(tensor->float_data().begin(), tensor->float_data().end());
    }

    const std::vector<std::int64_t>* shape_of(const onnx::NodeProto& node, int input) const {
        if (node.input_size() <= input) return nullptr;
        const auto found = shapes_.find(node.input(input));
        return found == shapes_.end() ? nullptr : &found->second;
    }

    // ---- nodes ---------------------------------------------------------------

    void check_node(const onnx::NodeProto& node) {
        if (node.op_type().empty()) fail("a node has no operator type");
        for (const auto& item : node.attribute()) {
            if (item.ints_size() > max_list || item.floats_size() > max_list) {
                fail(where(node) + ": attribute " + item.name() + " is a list of over 64 values");
            }
            if (item.has_t())
                check_tensor_values(item.t(), where(node) + ": attribute " + item.name());
            for (const auto& tensor : item.tensors())
                check_tensor_values(tensor, where(node) + ": attribute " + item.name());
        }
        for (const std::string& input : node.input()) {
            if (!input.empty() && !defined_.count(input)) {
                fail(where(node) + " reads '" + input + "', which no earlier node produces");
            }
        }
        const bool default_domain = node.domain().empty() || node.domain() == "ai.onnx";
        if (default_domain) check_operator(node);
        for (const std::string& output : node.output()) {
            if (output.empty()) continue;
            if (!defined_.insert(output).second) {
                fail(where(node) + " produces '" + output + "', which is already defined");
            }
        }
        if (default_domain && node.op_type() == "Constant" && node.output_size() == 1) {
            if (const onnx::AttributeProto* value = attribute(node, "value");
                value && value->has_t()) {
                check_dims(value->t().dims(), where(node));
                constants_.emplace(node.output(0), &value->t());
                shapes_.emplace(node.output(0), std::vector<std::int64_t>(value->t().dims().begin(),
                                                                          value->t().dims().end()));
            }
        }
    }

    void check_operator(const onnx::NodeProto& node) {
        const std::string& op = node.op_type();
        if (op == "Conv" || op == "ConvTranspose" || op == "ConvInteger" || op == "QLinearConv") {
            check_window(node, false);
            check_convolution(node);
        } else if (op == "MaxPool" || op == "AveragePool" || op == "LpPool" || op == "MaxUnpool") {
            check_window(node, true);
        } else if (op == "Gemm") {
            expect_int(node, "transA", 0, 1);
            expect_int(node, "transB", 0, 1);
        } else if (op == "Transpose") {
            check_permutation(node);
        } else if (op == "Reshape") {
            check_reshape(node);
        } else if (op == "Slice") {
            check_slice(node);
        } else if (op == "Resize" || op == "Upsample") {
            check_scales(node);
        } else if (op == "LRN") {
            expect_int(node, "size", 1, max_spatial);
        } else if (op == "DepthToSpace" || op == "SpaceToDepth") {
            expect_int(node, "blocksize", 1, 1024);
            if (!int_attribute(node, "blocksize")) fail(where(node) + " has no blocksize");
        } else if (op == "Pad") {
            expect_ints(node, "pads", -max_spatial, max_spatial);
            if (node.input_size() > 1) {
                if (const auto pads = constant_ints(node.input(1))) {
                    for (const std::int64_t pad : *pads)
                        expect_range(node, "pads", pad, -max_spatial, max_spatial);
                }
            }
        } else if (op == "Tile" || op == "Expand") {
            if (node.input_size() > 1) {
                if (const auto values = constant_ints(node.input(1))) {
                    for (const std::int64_t value : *values)
                        expect_range(node, op == "Tile" ? "repeats" : "shape", value, 0,
                                     max_dimension);
                }
            }
        } else if (op == "Split") {
            expect_ints(node, "split", 0, max_dimension);
        } else if (op == "BatchNormalization" || op == "InstanceNormalization" ||
                   op == "LayerNormalization") {
            if (const onnx::AttributeProto* epsilon = attribute(node, "epsilon")) {
                if (!std::isfinite(epsilon->f()) || epsilon->f() < 0) {
                    fail(where(node) + ": epsilon is not a finite non-negative number");
                }
            }
        }
        // Axes: every operator that takes them indexes a tensor of rank at
        // most max_rank.
        expect_int(node, "axis", -max_rank, max_rank);
        expect_ints(node, "axes", -max_rank, max_rank);
    }

    // Kernel, strides, dilations and pads of convolutions and pools.
    void check_window(const onnx::NodeProto& node, bool kernel_required) {
        const auto kernel = ints_attribute(node, "kernel_shape");
        if (kernel_required && (!kernel || kernel->empty())) {
            fail(where(node) + " has no kernel_shape");
        }
        expect_ints(node, "kernel_shape", 1, max_spatial);
        expect_ints(node, "strides", 1, max_spatial);
        expect_ints(node, "dilations", 1, max_spatial);
        expect_ints(node, "pads", 0, max_spatial);
        expect_ints(node, "output_padding", 0, max_spatial);
        expect_ints(node, "output_shape", 1, max_dimension);
        std::size_t spatial = kernel ? kernel->size() : 0;
        if (const auto* weights = shape_of(node, 1);
            weights != nullptr && !kernel_required && node.op_type() != "QLinearConv") {
            if (weights->size() < 3) fail(where(node) + ": weights of rank below 3");
            if (spatial != 0 && spatial != weights->size() - 2) {
                fail(where(node) + ": kernel_shape does not match the weights");
            }
            spatial = weights->size() - 2;
            for (std::size_t i = 0; i < spatial; ++i) {
                if ((*weights)[i + 2] < 1) fail(where(node) + ": weights with an empty kernel");
                if (kernel && (*kernel)[i] != (*weights)[i + 2]) {
                    fail(where(node) + ": kernel_shape does not match the weights");
                }
            }
        }
        if (spatial == 0) return;
        for (const char* name : {"strides", "dilations", "output_padding"}) {
            const auto values = ints_attribute(node, name);
            if (values && !values->empty() && values->size() != spatial) {
                fail(where(node) + ": " + name + " has " + std::to_string(values->size()) +
                     " values for " + std::to_string(spatial) + " spatial axes");
            }
        }
        const auto pads = ints_attribute(node, "pads");
        if (pads && !pads->empty() && pads->size() != 2 * spatial) {
            fail(where(node) + ": pads has " + std::to_string(pads->size()) + " values for " +
                 std::to_string(spatial) + " spatial axes");
        }
        if (const auto padding = ints_attribute(node, "output_padding"); padding) {
            const auto strides = ints_attribute(node, "strides");
            for (std::size_t i = 0; i < padding->size(); ++i) {
                const std::int64_t stride = strides && i < strides->size() ? (*strides)[i] : 1;
                if ((*padding)[i] >= stride) {
                    fail(where(node) + ": output_padding must be smaller than the stride");
                }
            }
        }
    }

    void check_convolution(const onnx::NodeProto& node) {
        const std::int64_t group = int_attribute(node, "group").value_or(1);
        expect_range(node, "group", group, 1, max_group);
        const auto* weights = shape_of(node, node.op_type() == "QLinearConv" ? 3 : 1);
        if (weights == nullptr || weights->empty()) return;
        // Conv: output channels come in `group` groups; ConvTranspose: input channels.
        if ((*weights)[0] < 1 || (*weights)[0] % group != 0) {
            fail(where(node) + ": " + std::to_string((*weights)[0]) +
                 " channels do not divide into " + std::to_string(group) + " groups");
        }
        if (weights->size() >= 2 && (*weights)[1] < 1) {
            fail(where(node) + ": weights with no input channels");
        }
        if ((node.op_type() == "Conv" || node.op_type() == "ConvTranspose") &&
            node.input_size() > 2) {
            if (const auto* bias = shape_of(node, 2); bias != nullptr) {
                const std::int64_t outputs =
                    node.op_type() == "Conv" ? (*weights)[0]
                                             : (weights->size() >= 2 ? (*weights)[1] * group : 0);
                if (bias->size() != 1 || (*bias)[0] != outputs) {
                    fail(where(node) + ": the bias does not have one value per output channel");
                }
            }
        }
    }

    void check_permutation(const onnx::NodeProto& node) const {
        const auto perm = ints_attribute(node, "perm");
        if (!perm) return;
        std::vector<bool> seen(perm->size(), false);
        for (const std::int64_t axis : *perm) {
            if (axis < 0 || std::size_t(axis) >= perm->size() || seen[std::size_t(axis)]) {
                fail(where(node) + ": perm is not a permutation");
            }
            seen[std::size_t(axis)] = true;
        }
    }

    void check_reshape(const onnx::NodeProto& node) const {
        if (node.input_size() < 2) return;
        const auto shape = constant_ints(node.input(1));
        if (!shape) return;
        if (std::int64_t(shape->size()) > max_rank) fail(where(node) + ": more than 16 dimensions");
        int inferred = 0;
        for (const std::int64_t dim : *shape) {
            expect_range(node, "shape", dim, -1, max_dimension);
            inferred += dim == -1;
        }
        if (inferred > 1) fail(where(node) + ": more than one dimension is -1");
    }

    void check_slice(const onnx::NodeProto& node) const {
        if (node.input_size() > 4 && !node.input(4).empty()) {
            if (const auto steps = constant_ints(node.input(4))) {
                for (const std::int64_t step : *steps) {
                    if (step == 0) fail(where(node) + ": a step of 0");
                }
            }
        }
        if (node.input_size() > 3 && !node.input(3).empty()) {
            if (const auto axes = constant_ints(node.input(3))) {
                for (const std::int64_t axis : *axes)
                    expect_range(node, "axes", axis, -max_rank, max_rank);
            }
        }
    }

    void check_scales(const onnx::NodeProto& node) const {
        const auto check = [&](const std::vector<float>& scales) {
            for (const float scale : scales) {
                if (!std::isfinite(scale) || scale <= 0 || scale > max_scale) {
                    fail(where(node) + ": a scale of " + std::to_string(scale));
                }
            }
        };
        if (const onnx::AttributeProto* scales = attribute(node, "scales")) {
            check(std::vector<float>(scales->floats().begin(), scales->floats().end()));
        }
        // Upsample-9 takes scales as input 1, Resize as input 2; sizes as input 3.
        const int scales_input = node.op_type() == "Upsample" ? 1 : 2;
        if (node.input_size() > scales_input && !node.input(scales_input).empty()) {
            if (const auto scales = constant_floats(node.input(scales_input))) check(*scales);
        }
        if (node.op_type() == "Resize" && node.input_size() > 3 && !node.input(3).empty()) {
            if (const auto sizes = constant_ints(node.input(3))) {
                for (const std::int64_t size : *sizes)
                    expect_range(node, "sizes", size, 1, max_dimension);
            }
        }
    }

    const Model& model_;
    std::string_view source_;
    std::unordered_set<std::string> defined_;
    std::unordered_map<std::string, std::vector<std::int64_t>> shapes_;
    std::unordered_map<std::string, const onnx::TensorProto*> initializers_;
    std::unordered_map<std::string, const onnx::TensorProto*> constants_;
};

}  // namespace

void validate_graph(const Model& model, std::string_view source) {
    GraphValidator(model, source).run();
}

}  // namespace bitinc
