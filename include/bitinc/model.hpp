// A neural-network model as bitinc sees it: the graph (topology) kept as ONNX
// bytes, and the float weight tensors taken out of it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bitinc {

// How a weight was stored in the source ONNX file. Values use ONNX's
// TensorProto.DataType codes so the mapping is obvious.
enum class StoredType : std::int32_t { float32 = 1, float16 = 10, float64 = 11, bfloat16 = 16 };

// "float32", "float16", "float64", "bfloat16" (the manifest's stored_as).
std::string_view stored_type_name(StoredType type);
// The type of that name, or nothing for any other text.
std::optional<StoredType> stored_type_from_name(std::string_view name);
// Bytes one element takes in the ONNX file.
std::size_t stored_type_bytes(StoredType type);

// A named float tensor. Values are always float32 in memory, whatever the
// source file used; `stored_as` remembers the original element type, which
// the values are rounded to when written: float16 and bfloat16 to nearest
// even, float64 exactly (a float64 weight is coded at float32 precision).
struct Tensor {
    std::string name;
    std::vector<std::int64_t> shape;
    std::vector<float> values;
    StoredType stored_as = StoredType::float32;

    std::size_t element_count() const { return values.size(); }
};

// The topology is a serialized ONNX ModelProto in which every weight has
// kept its name, type and dims but lost its data; `weights` holds that data.
// A weight is a float32/float16/bfloat16/float64 initializer or such a
// `value` tensor of a top-level Constant node with more than one element
// (named by the node's output). Order:
// the Constant nodes' tensors in node order, then the initializers in
// order, which is where protobuf serializes their data.
struct Model {
    std::string topology;
    std::vector<Tensor> weights;
    std::map<std::string, std::string> metadata;  // ONNX metadata_props

    std::size_t parameter_count() const;
    // Bytes the weights take as float32.
    std::size_t float32_bytes() const;
};

// A model that holds only `weights` (a checkpoint, a state_dict): each an
// initializer of its name, shape and stored type, passed through an
// Identity node to a graph output "NAME.value", so that it is valid ONNX
// any tool reads. Throws Error on an empty list, a repeated or empty name,
// or values that do not fill their shape.
Model model_of_weights(std::vector<Tensor> weights, const std::string& name = "weights");

// Largest ONNX file accepted: protobuf cannot address more than 2 GiB.
inline constexpr std::uint64_t max_onnx_bytes = (std::uint64_t{1} << 31) - 1;

// Reads and validates an ONNX model, its weights kept inline or as external
// data (OnnxWeightReader). Throws Error naming `path` on a missing,
// unreadable, truncated or malformed file, a bad external reference, a
// float64 weight holding a finite value beyond float32's range, or an .onnx
// file over 2 GiB.
Model read_onnx_file(const std::filesystem::path& path);

// An ONNX file read one weight at a time, so that a model larger than
// memory can be packed. Opening parses the protobuf structure once, without
// copying weight data: `topology()` is the Model with every weight named,
// shaped and typed but empty (as parse_topology gives it), and
// read_values(i) loads weight i with positioned reads, from the .onnx file
// itself or from the external-data file its initializer names.
//
// External data (TensorProto.data_location = EXTERNAL, external_data keys
// `location`, `offset`, `length`; `checksum` is not checked) must lie in a
// regular file inside the model's directory: an absolute location, a `..`
// component, a symbolic link leading out of the directory, a range past the
// file's end or a length that does not match the dims is refused with an
// Error naming the tensor.
class OnnxWeightReader {
  public:
    explicit OnnxWeightReader(const std::filesystem::path& path);
    // The same over bytes in memory (external data is refused: no directory).
    OnnxWeightReader(std::string_view bytes, std::string_view source_name);
    ~OnnxWeightReader();
    OnnxWeightReader(OnnxWeightReader&&) noexcept;
    OnnxWeightReader& operator=(OnnxWeightReader&&) noexcept;

    const Model& topology() const;
    // Elements of weight `index` (its shape's product).
    std::uint64_t element_count(std::size_t index) const;
    std::vector<float> read_values(std::size_t index) const;
    // True if any weight keeps its data in an external file.
    bool has_external_data() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// Same as read_onnx_file for bytes already in memory; `source_name` is used
// in error messages.
Model parse_onnx(std::string_view bytes, std::string_view source_name);

// Reads a topology alone (Model::topology, as a package stores it): the
// weights come back with their names, shapes and types but no values, for
// a reader that fills them from elsewhere. Throws Error naming `source_name`.
Model parse_topology(std::string_view topology, std::string_view source_name);

// Puts the weights back into the topology. Weights keep their original
// element type, so parse_onnx(serialize_onnx(m)) reproduces m exactly.
// Output is deterministic: the same Model always gives the same bytes.
std::string serialize_onnx(const Model& model);

// Fills `out` with the values of weight `tensor` (in Model::weights order) from element `first` on.
// A writer calls it in tensor order and, within a tensor, for consecutive blocks from 0.
using WeightValueSource =
    std::function<void(std::size_t tensor, std::uint64_t first, std::span<float> out)>;

// The model of `topology` with weight values from `values`, as the bytes of
// one ONNX file with inline data (the same bytes serialize_onnx gives a
// Model): one pass, each weight converted and appended block by block.
// Throws Error if that would pass protobuf's 2 GiB.
std::string serialize_onnx(std::string_view topology, const WeightValueSource& values);

// The external-data file write_onnx_file puts beside `model_path`:
// "<model file name>.data", e.g. model.onnx.data.
std::filesystem::path external_data_path(const std::filesystem::path& model_path);

// Writes the model of `topology` (Model::topology) with weight values from
// `values` to `path`, streaming: no more than a block of values is held at a
// time. Without external data the bytes are exactly serialize_onnx's. With
// `external_data`, or when the model would pass protobuf's 2 GiB, every
// weight goes to external_data_path(path) instead (raw little-endian, back
// to back, the location relative to the model's directory). Each file is
// written to a temporary name and renamed into place only once both are
// complete, so a failure never leaves a half-written output. Returns true
// when it wrote external data.
bool write_onnx_file(std::string_view topology, const WeightValueSource& values,
                     const std::filesystem::path& path, bool external_data = false);

// Writes `model` to `path` the same way (serialize_onnx's bytes unless
// external data is asked for or needed).
void write_onnx_file(const Model& model, const std::filesystem::path& path,
                     bool external_data = false);

// Checks what inference engines trust in a graph without checking it
// themselves: every node input defined before use, no name defined twice,
// and the attributes engines divide by, loop over or allocate from (group,
// kernel_shape, strides, dilations, pads, perm, Reshape shapes, Slice steps,
// Resize scales, axes...) within ONNX's rules and sane bounds, checked
// against the weights' shapes. Unknown operators pass (an engine may refuse
// them). Throws Error naming `source` and the node.
void validate_graph(const Model& model, std::string_view source);

// What a reader of a model wants to know about its graph.
struct ValueInfo {
    std::string name;
    // Dimension sizes; a symbolic dimension (e.g. a batch axis) is -1 and
    // named in `symbolic`.
    std::vector<std::int64_t> dims;
    std::vector<std::string> symbolic;
    std::string element_type;
};

// A tensor that holds data of its own but stays whole inside the topology,
// and why. Shapes, indices and other small integer tensors are not listed.
struct KeptTensor {
    enum class Kind {
        // Already-quantized data: an integer tensor read by DequantizeLinear
        // (input 0), QLinearConv, QLinearMatMul, ConvInteger or MatMulInteger,
        // or any 8- or 4-bit integer tensor. Re-quantizing it could only
        // lose what the model's own quantization chose, so it travels as is.
        quantized,
        // An element type bitinc does not code: complex, or one this build's
        // ONNX does not know (float8, int4 of newer ONNX versions).
        unsupported_type,
        // A float tensor inside a subgraph (If, Loop, Scan bodies).
        in_subgraph,
        // A Constant's sparse_value (sparse initializers are refused).
        sparse,
    };
    Kind kind = Kind::quantized;
    std::string name;          // the initializer's name, or the Constant's output
    std::string element_type;  // ONNX's name ("INT8"), or "type N" for an unknown one
    std::uint64_t elements = 0;
    std::uint64_t bytes = 0;  // its data's size in the ONNX file (0 where unknown)
};

struct TopologySummary {
    std::string producer;
    std::int64_t ir_version = 0;
    std::int64_t opset = 0;  // of the default ONNX domain
    std::vector<ValueInfo> inputs;
    std::vector<ValueInfo> outputs;
    std::size_t node_count = 0;
    std::map<std::string, std::size_t> op_counts;
    std::size_t topology_bytes = 0;
    // Top-level Constant nodes whose float32/float16 `value` is a weight
    // (it goes through the ladder like an initializer).
    std::size_t constant_weight_tensors = 0;
    // Other float tensors held in Constant nodes (scalars, or in subgraphs):
    // they travel inside the topology, unquantized.
    std::size_t constant_float_tensors = 0;
    std::uint64_t constant_float_elements = 0;
    // Tensors of more than one element that hold data but are not weights:
    // they stay whole inside the topology (and travel bit for bit).
    std::vector<KeptTensor> kept_tensors;
    // Weights the graph quantizes itself (input 0 of a QuantizeLinear, as
    // QDQ exports that keep float weights write them), in weight order.
    std::vector<std::string> requantized_weights;
};

TopologySummary summarize_topology(const Model& model);

// Graph rewrites an inference engine may need; each applies only where a
// pattern is found and leaves the model's function unchanged.
struct FixupReport {
    // Identity nodes removed, their consumers rewired to the Identity's input.
    std::size_t identity_nodes_folded = 0;
    // Clip nodes whose min/max came as constant inputs (opset 11 and later),
    // rewritten to the attribute form of opset 6.
    std::size_t clip_nodes_rewritten = 0;
    // float16, bfloat16 and float64 weights turned into float32 ones (the
    // values the model holds are unchanged).
    std::size_t weights_widened = 0;
    // Conv/ConvTranspose nodes given the kernel_shape their weights imply
    // (optional in ONNX, required by OpenCV DNN 4.6).
    std::size_t kernel_shapes_added = 0;

    bool changed() const {
        return identity_nodes_folded + clip_nodes_rewritten + weights_widened +
                   kernel_shapes_added >
               0;
    }
};

// Applies the rewrites that OpenCV DNN 4.6 needs (see docs/architecture.md).
// The result is meant for the engine only: the opset-6 form of Clip is not
// valid ONNX at the model's own opset.
FixupReport apply_engine_fixups(Model& model);

}  // namespace bitinc
