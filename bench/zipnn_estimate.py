#!/usr/bin/python3
"""Estimates what an exponent-aware lossless float coder (ZipNN's method)
makes of a model's weights, to compare with bitinc's exact rung.

ZipNN groups the bytes of the weights into streams (the exponent in one
stream, after moving the sign bit out of its byte), and codes each stream in
chunks of 256 KiB of weights with Huffman codes (huff0), keeping a stream raw
where coding does not pay. This script computes the size of exactly that
scheme from the weights: Huffman code lengths per chunk and stream plus a
table of 1 byte per symbol used (a lower estimate of huff0's table), and
reports it with the order-0 entropy of the streams (the bound any such
coder stays above). No ZipNN code is used.

usage: zipnn_estimate.py MODEL.onnx [--min-elements 256] [--all]
  By default only the tensors bitinc quantizes (rank >= 2, >= 256 elements)
  are counted; --all counts every float32/float16/bfloat16 initializer.
"""
import argparse
import heapq
import json

import numpy as np
import onnx
from onnx import numpy_helper


def huffman_bits(counts):
    """Total code length of a histogram under its Huffman code."""
    counts = [c for c in counts if c > 0]
    if len(counts) == 1:
        return counts[0]  # one symbol still takes a bit each in huff0's fallback
    heap = list(counts)
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        a = heapq.heappop(heap)
        b = heapq.heappop(heap)
        total += a + b
        heapq.heappush(heap, a + b)
    return total


def entropy_bits(counts):
    counts = np.asarray([c for c in counts if c > 0], dtype=np.float64)
    n = counts.sum()
    return float(-(counts * np.log2(counts / n)).sum())


def streams(values):
    """Byte streams of the weights, the exponent in a stream of its own."""
    if values.dtype == np.float32:
        u = values.view(np.uint32)
        exponent = ((u >> 23) & 0xFF).astype(np.uint8)
        rest = (((u >> 31) << 23) | (u & 0x7FFFFF)).astype(np.uint32)  # sign + mantissa, 24 bits
        return [exponent, (rest & 0xFF).astype(np.uint8), ((rest >> 8) & 0xFF).astype(np.uint8),
                ((rest >> 16) & 0xFF).astype(np.uint8)]
    u = values.view(np.uint16)
    if values.dtype == np.float16:
        exponent = ((u >> 10) & 0x1F).astype(np.uint8)
        rest = (((u >> 15) << 10) | (u & 0x3FF)).astype(np.uint16)
        return [exponent, (rest & 0xFF).astype(np.uint8), (rest >> 8).astype(np.uint8)]
    exponent = ((u >> 7) & 0xFF).astype(np.uint8)  # bfloat16 stored as uint16
    rest = (((u >> 15) << 7) | (u & 0x7F)).astype(np.uint8)
    return [exponent, rest]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--min-elements", type=int, default=256)
    parser.add_argument("--all", action="store_true")
    parser.add_argument("--chunk-bytes", type=int, default=256 * 1024)
    args = parser.parse_args()
    model = onnx.load(args.model)
    raw = huffman = entropy = 0
    weights = 0
    for tensor in model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.BFLOAT16:
            values = np.frombuffer(tensor.raw_data, dtype=np.uint16)  # raw bits
            width = 2
        else:
            array = numpy_helper.to_array(tensor)
            if array.dtype not in (np.float32, np.float16):
                continue
            values = array.ravel()
            width = array.dtype.itemsize
        shape = list(tensor.dims)
        if not args.all and (len(shape) < 2 or values.size < args.min_elements):
            continue
        chunk = max(1, args.chunk_bytes // width)
        for first in range(0, values.size, chunk):
            part = values[first:first + chunk]
            for stream in streams(part):
                counts = np.bincount(stream, minlength=256)
                coded = huffman_bits(counts) + 8 * int((counts > 0).sum())
                huffman += min(coded, 8 * stream.size)
                entropy += entropy_bits(counts)
        raw += values.size * width
        weights += values.size
    print(json.dumps({"weights": weights, "raw_bytes": raw,
                      "huffman_bytes": round(huffman / 8), "huffman_ratio": round(huffman / 8 / raw, 4),
                      "entropy_bytes": round(entropy / 8), "entropy_ratio": round(entropy / 8 / raw, 4)}))


if __name__ == "__main__":
    main()
