#!/usr/bin/python3
"""Writes small ONNX models shaped the ways real exporters write them, one of
each kind the issue-13 corpus names, for bench/corpus_report.sh:

  constants.onnx    weights as Constant nodes (value attributes), float32
  float16.onnx      float16 initializers read through Cast
  bfloat16.onnx     bfloat16 initializers (raw bytes, as PyTorch writes them)
  float64.onnx      float64 initializers read through Cast
  external.onnx     float32 weights in a side file (external data)
  inputs.onnx       initializers also listed as graph inputs (IR 3 exports)
  qdq-int8.onnx     QuantizeLinear/DequantizeLinear int8 weights beside a float one
  dynamic.onnx      a Conv over an N x 3 x H x W input with open dimensions

Weights are random (normal, seeded): these models test the formats, not
accuracy. Needs python3-onnx and python3-numpy (scripts/install-deps.sh
--training).

usage: make_corpus_models.py OUT_DIR
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(13)


def weights(*shape, scale=0.05):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def bfloat16_tensor(name, values):
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    tensor = TensorProto()
    tensor.name = name
    tensor.data_type = TensorProto.BFLOAT16
    tensor.dims.extend(values.shape)
    tensor.raw_data = rounded.tobytes()
    return tensor


def mlp(name, initializers, casts, opset=13, ir=8, inputs_as_initializers=False, nodes_before=()):
    """x [N, 64] -> MatMul(w1^T) -> Relu -> MatMul(w2^T) -> y [N, 10]."""
    nodes = list(nodes_before)
    first, second = "w1", "w2"
    for weight, cast_to_float in casts.items():
        if cast_to_float:
            nodes.append(helper.make_node("Cast", [weight], [weight + "_f"], to=TensorProto.FLOAT))
    w1 = "w1_f" if casts.get("w1") else first
    w2 = "w2_f" if casts.get("w2") else second
    nodes += [
        helper.make_node("Transpose", [w1], ["w1_t"]),
        helper.make_node("MatMul", ["x", "w1_t"], ["h"]),
        helper.make_node("Relu", ["h"], ["h_relu"]),
        helper.make_node("Transpose", [w2], ["w2_t"]),
        helper.make_node("MatMul", ["h_relu", "w2_t"], ["z"]),
        helper.make_node("Add", ["z", "b2"], ["y"]),
    ]
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])]
    if inputs_as_initializers:
        graph_inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                         for t in initializers]
    graph = helper.make_graph(nodes, name, graph_inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="make_corpus_models")
    model.ir_version = ir
    return model


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    b2 = numpy_helper.from_array(weights(10, scale=0.1), "b2")

    # Weights as Constant nodes (exporters that fold initializers into the graph).
    constants = [helper.make_node("Constant", [], ["w1"], value=numpy_helper.from_array(weights(256, 64))),
                 helper.make_node("Constant", [], ["w2"], value=numpy_helper.from_array(weights(10, 256)))]
    onnx.save(mlp("constants", [b2], {}, nodes_before=constants), os.path.join(out, "constants.onnx"))

    for kind, make in (("float16", lambda n, v: numpy_helper.from_array(v.astype(np.float16), n)),
                       ("bfloat16", bfloat16_tensor),
                       ("float64", lambda n, v: numpy_helper.from_array(v.astype(np.float64), n))):
        inits = [make("w1", weights(256, 64)), make("w2", weights(10, 256)), b2]
        onnx.save(mlp(kind, inits, {"w1": True, "w2": True}), os.path.join(out, kind + ".onnx"))

    external = mlp("external", [numpy_helper.from_array(weights(256, 64), "w1"),
                                numpy_helper.from_array(weights(10, 256), "w2"), b2], {})
    onnx.save(external, os.path.join(out, "external.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="external.onnx.data", size_threshold=0)

    inputs = mlp("inputs", [numpy_helper.from_array(weights(256, 64), "w1"),
                            numpy_helper.from_array(weights(10, 256), "w2"), b2], {},
                 opset=9, ir=3, inputs_as_initializers=True)
    onnx.save(inputs, os.path.join(out, "inputs.onnx"))

    # QDQ: w1 already quantized (int8 + scale + zero point), w2 float.
    w1 = weights(256, 64)
    scale = np.float32(np.abs(w1).max() / 127)
    w1_q = np.clip(np.round(w1 / scale), -127, 127).astype(np.int8)
    qdq_inits = [numpy_helper.from_array(w1_q, "w1_q"),
                 numpy_helper.from_array(np.array(scale, np.float32), "w1_scale"),
                 numpy_helper.from_array(np.array(0, np.int8), "w1_zero"),
                 numpy_helper.from_array(weights(10, 256), "w2"), b2]
    dequantize = [helper.make_node("DequantizeLinear", ["w1_q", "w1_scale", "w1_zero"], ["w1"])]
    onnx.save(mlp("qdq", qdq_inits, {}, nodes_before=dequantize), os.path.join(out, "qdq-int8.onnx"))

    # A convolution over open batch and spatial dimensions.
    conv = helper.make_graph(
        [helper.make_node("Conv", ["x", "k", "kb"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("GlobalAveragePool", ["r"], ["g"]),
         helper.make_node("Flatten", ["g"], ["f"]),
         helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1)],
        "dynamic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        initializer=[numpy_helper.from_array(weights(32, 3, 3, 3, scale=0.2), "k"),
                     numpy_helper.from_array(weights(32, scale=0.1), "kb"),
                     numpy_helper.from_array(weights(10, 32, scale=0.2), "fc"),
                     numpy_helper.from_array(weights(10, scale=0.1), "fcb")])
    model = helper.make_model(conv, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, os.path.join(out, "dynamic.onnx"))
    for name in sorted(os.listdir(out)):
        print(os.path.join(out, name))


if __name__ == "__main__":
    main()
