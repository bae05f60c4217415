#!/usr/bin/env python3
"""Compares tie rules for the coarse rungs of a ladder on a model's weights.

    /usr/bin/python3 tools/ladder_rules.py MODEL.onnx 4,8,16

For each rule: the zeroth-order entropy (in bytes) of the base rung, the
conditional entropies H(fine | coarse) of the refinements, base plus
refinements over the top rung's entropy, the base's weight SNR and its mean
bias (|reconstruction| - |weight|, in base steps). Per-tensor steps, tensors
the packer quantizes by default (rank >= 2, >= 256 elements). Rules:

  direct  every rung rounded from the weights (unit format 2)
  htz     top rung rounded; each coarser rung = finer / 2^k, ties toward zero
          (unit format 3)
  hte     the same with ties to even
"""
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def entropy_bits(values):
    _, counts = np.unique(values, return_counts=True)
    return float(-(counts * np.log2(counts / counts.sum())).sum())


def conditional_bits(fine, coarse):
    return entropy_bits(fine.astype(np.int64) * (1 << 40) + coarse) - entropy_bits(coarse)


def round_half_away(x):
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def divide_toward_zero_on_ties(q, k):
    return np.sign(q) * ((np.abs(q) + (1 << (k - 1)) - 1) >> k)


def divide_to_even(q, k):
    return np.round(q / float(1 << k)).astype(np.int64)


def top_step(weights, limit):
    """max|w| / limit in float32, rounded up to 8 significant bits."""
    pattern = np.frombuffer(np.float32(np.abs(weights).max() / limit).tobytes(), np.uint32)[0]
    if pattern & 0xFFFF:
        pattern = (pattern + 0x10000) & 0xFFFF0000
    return float(np.frombuffer(np.uint32(pattern).tobytes(), np.float32)[0])


def main(path, ladder):
    bits = [int(b) for b in ladder.split(",")]
    top, base = bits[-1], bits[0]
    largest = lambda b: ((1 << (base - 1)) - 1) << (b - base)
    totals = {}
    for initializer in onnx.load(path).graph.initializer:
        weights = numpy_helper.to_array(initializer).astype(np.float32)
        if weights.ndim < 2 or weights.size < 256:
            continue
        weights = weights.ravel().astype(np.float64)
        step = top_step(weights, largest(top))
        rules = {"direct": [np.clip(round_half_away(weights / (step * 2.0 ** (top - b))),
                                    -largest(b), largest(b)).astype(np.int64) for b in bits]}
        for name, divide in (("htz", divide_toward_zero_on_ties), ("hte", divide_to_even)):
            rungs = [rules["direct"][-1]]
            for i in range(len(bits) - 1, 0, -1):
                rungs.insert(0, divide(rungs[0], bits[i] - bits[i - 1]))
            rules[name] = rungs
        for name, rungs in rules.items():
            total = totals.setdefault(name, {"base": 0, "refinements": [0] * (len(bits) - 1),
                                             "top": 0, "error": 0, "signal": 0, "bias": 0,
                                             "weights": 0})
            total["base"] += entropy_bits(rungs[0])
            total["top"] += entropy_bits(rungs[-1])
            for i in range(1, len(bits)):
                total["refinements"][i - 1] += conditional_bits(rungs[i], rungs[i - 1])
            base_step = step * 2.0 ** (top - base)
            reconstruction = rungs[0] * base_step
            total["error"] += ((weights - reconstruction) ** 2).sum()
            total["signal"] += (weights ** 2).sum()
            total["bias"] += (np.abs(reconstruction) - np.abs(weights)).sum() / base_step
            total["weights"] += weights.size
    direct_top = totals["direct"]["top"]
    for name, total in totals.items():
        ladder_bits = total["base"] + sum(total["refinements"])
        refinements = " ".join(f"{bits / 8:,.0f}" for bits in total["refinements"])
        print(f"{name:6s} base {total['base'] / 8:,.0f} B  refinements {refinements} B  "
              f"ladder/top {ladder_bits / direct_top:.5f}  "
              f"base SNR {10 * np.log10(total['signal'] / total['error']):.3f} dB  "
              f"bias {total['bias'] / total['weights']:+.4f} step")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
