#!/usr/bin/python3
"""What a device holding model V1 receives to reach V2 (issue 15), per rung,
against what it would receive without V1 and against zstd baselines.

Packs V1 (--ladder, --per-channel), then V2 with `previous` = V1's package
(its ladder, bits and steps; deltas from each rung), and for every rung of B
bits reports:
  delta      the delta file a device holding V1 at B fetches (plus the
             topology and the manifest, which it fetches either way),
  ladder     V2's base and refinements up to B (a device without V1),
  direct     V2's direct rung at B where the package has one,
  xor        zstd -19 of V1's and V2's levels at B XORed (int32 LE, the
             quantized tensors, same grid as the delta) plus the exact
             tensors' float32 bits XORed: a generic compressor given the
             same information as the delta,
and, once, zstd -19 of the raw float32 byte difference and bit XOR of the
two ONNX files' weights (bench/version_delta_baselines.py).

usage: version_delta_report.py V1.onnx V2.onnx [--ladder 4,8,16]
       [--per-channel] [--json]
Needs the bitinc Python module (make build) and the zstd tool.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

import bitinc


def zstd_size(data):
    tool = shutil.which("zstd")
    if tool is None:
        sys.exit("version_delta_report: needs the zstd command-line tool")
    result = subprocess.run([tool, "-19", "-q", "-c"], input=data, capture_output=True,
                            check=True)
    return len(result.stdout)


def float_xor(old, new):
    return (old.astype(np.float32).view(np.uint32) ^ new.astype(np.float32).view(np.uint32))


def measure(v1_path, v2_path, ladder, per_channel):
    with tempfile.TemporaryDirectory() as scratch:
        first = os.path.join(scratch, "v1")
        second = os.path.join(scratch, "v2")
        bitinc.pack(v1_path, first, ladder=ladder, per_channel=per_channel)
        summary = bitinc.pack(v2_path, second, previous=first)
        manifest_bytes = os.path.getsize(os.path.join(second, "manifest.json"))
        topology_bytes = os.path.getsize(os.path.join(second, summary["topology_file"]))
        old_weights = bitinc.read_onnx(v1_path)["weights"]
        new_weights = bitinc.read_onnx(v2_path)["weights"]
        ladder_so_far = 0
        rows = []
        for rung in summary["rungs"]:
            if rung["kind"] not in ("base", "refinement"):
                continue
            ladder_so_far += rung["bytes"]
            bits = rung["bits"]
            delta = next((d for d in summary["deltas"] if d["bits"] == bits), None)
            direct = next((r for r in summary["rungs"]
                           if r["kind"] == "direct" and r["bits"] == bits), None)
            old_levels = bitinc.unpack_levels(first, bits)
            new_levels = bitinc.unpack_levels(second, bits)
            stream = bytearray()
            for name, levels in new_levels.items():
                if name in old_levels and old_levels[name]["indices"].shape == levels["indices"].shape:
                    stream += (old_levels[name]["indices"] ^ levels["indices"]).astype("<i4").tobytes()
                else:
                    stream += levels["indices"].astype("<i4").tobytes()
            for name, values in new_weights.items():
                if name in new_levels:
                    continue
                if name in old_weights and old_weights[name].shape == values.shape:
                    stream += float_xor(old_weights[name], values).astype("<u4").tobytes()
                else:
                    stream += values.astype("<f4").tobytes()
            rows.append({
                "bits": bits,
                "delta_bytes": delta["bytes"] if delta else None,
                "device_receives": (delta["bytes"] + topology_bytes + manifest_bytes)
                if delta else None,
                "ladder_bytes": ladder_so_far + manifest_bytes,
                "direct_bytes": direct["bytes"] + manifest_bytes if direct else None,
                "zstd_xor_levels": zstd_size(bytes(stream)),
            })
        raw_diff = bytearray()
        raw_xor = bytearray()
        for name, values in new_weights.items():
            if name in old_weights and old_weights[name].shape == values.shape:
                old = old_weights[name].astype("<f4")
                new = values.astype("<f4")
                raw_diff += ((new.view(np.uint8).astype(np.int16) - old.view(np.uint8))
                             % 256).astype(np.uint8).tobytes()
                raw_xor += float_xor(old, new).astype("<u4").tobytes()
        return {
            "v1": v1_path, "v2": v2_path, "ladder": summary["ladder"],
            "per_channel": summary["per_channel"], "manifest_bytes": manifest_bytes,
            "topology_bytes": topology_bytes, "rungs": rows,
            "zstd_raw_difference": zstd_size(bytes(raw_diff)),
            "zstd_raw_xor": zstd_size(bytes(raw_xor)),
        }


def print_report(report):
    print(f"{report['v1']} -> {report['v2']}: ladder {report['ladder']}"
          f"{' per channel' if report['per_channel'] else ''}; manifest "
          f"{report['manifest_bytes']:,} B, topology {report['topology_bytes']:,} B")
    print(f"  {'bits':>4} {'delta':>11} {'receives':>11} {'ladder':>11} {'direct':>11}"
          f" {'zstd xor':>11} {'receives/ladder':>16} {'delta/xor':>10}")
    for row in report["rungs"]:
        receives = row["device_receives"]
        print(f"  {row['bits']:>4} {row['delta_bytes'] or 0:>11,} {receives or 0:>11,}"
              f" {row['ladder_bytes']:>11,} {row['direct_bytes'] or 0:>11,}"
              f" {row['zstd_xor_levels']:>11,}"
              f" {receives / row['ladder_bytes'] if receives else float('nan'):>16.3f}"
              f" {row['delta_bytes'] / row['zstd_xor_levels'] if receives else float('nan'):>10.3f}")
    print(f"  float32 weights: zstd -19 of the byte difference {report['zstd_raw_difference']:,} B,"
          f" of the bit XOR {report['zstd_raw_xor']:,} B")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("v1", metavar="V1.onnx", help="the model the device holds")
    parser.add_argument("v2", metavar="V2.onnx", help="the model it should get")
    parser.add_argument("--ladder", default="4,8,16", help="V1's ladder (default 4,8,16)")
    parser.add_argument("--per-channel", action="store_true", help="one step per channel")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    report = measure(args.v1, args.v2, args.ladder, args.per_channel)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)


if __name__ == "__main__":
    main()
