#!/usr/bin/python3
"""Simple baselines for version deltas (issue 15): how many bytes a device
holding model V1 needs to reach V2 when the change is coded with plain zstd.

For every float32 initializer present in both models with the same shape,
and for all of them together, the script reports zstd -19 of
  diff  the bytewise difference of the little-endian float32 arrays
        (v2 byte - v1 byte mod 256),
  xor   the XOR of the float32 bit patterns,
  v2    v2's raw float32 bytes alone (what a full download costs, for scale),
and the fraction of elements whose bit pattern changed at all. The totals
code the tensors as one stream, in V2's initializer order; the sum of the
per-tensor sizes is given too (each zstd frame carries its own header).

Compression uses the zstandard module when it is installed, otherwise the zstd
command-line tool (stdin to stdout). Initializers that are not float32, or are
missing or shaped differently in one model, are listed and left out. The
report also says whether the two files have the same initializer names,
order, shapes and types and the same graph nodes, which a delta coder that
matches tensors by name relies on.

usage: version_delta_baselines.py V1.onnx V2.onnx [--json] [--level 19]
"""
import argparse
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def compressor(level):
    """(name, bytes -> compressed size) with zstd at `level`."""
    try:
        import zstandard
    except ImportError:
        zstandard = None
    if zstandard is not None:
        context = zstandard.ZstdCompressor(level=level)
        return f"zstandard {zstandard.__version__} -{level}", lambda data: len(context.compress(data))
    tool = shutil.which("zstd")
    if tool is None:
        sys.exit("version_delta_baselines: needs the zstandard module or the zstd tool; neither is here")
    banner = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
    version = re.search(r"v\d+(\.\d+)*", banner)

    def size(data):
        # -19 wants no --ultra; levels above 19 do. -q keeps the progress line off stderr.
        options = ["--ultra"] if level > 19 else []
        result = subprocess.run([tool, f"-{level}", *options, "-q", "-c"], input=data,
                                capture_output=True, check=True)
        return len(result.stdout)

    return f"zstd {version.group(0) if version else '(version unknown)'} -{level}", size


def initializers(graph):
    """{name: array} of every initializer, in the model's order."""
    return {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}


def same_layout(old_graph, new_graph):
    """(same initializer names, order, shapes and types; same nodes): what a
    delta coder that matches tensors by name relies on."""
    def tensors(graph):
        return [(t.name, list(t.dims), t.data_type) for t in graph.initializer]

    def nodes(graph):
        return [node.SerializeToString(deterministic=True) for node in graph.node]

    return tensors(old_graph) == tensors(new_graph), nodes(old_graph) == nodes(new_graph)


def delta_streams(old, new):
    """(diff bytes, xor bytes, v2 bytes, changed elements) of two float32 arrays."""
    old = np.ascontiguousarray(old, dtype="<f4")
    new = np.ascontiguousarray(new, dtype="<f4")
    diff = (new.view(np.uint8) - old.view(np.uint8)).tobytes()  # uint8 arithmetic wraps mod 256
    xor = (new.view(np.uint32) ^ old.view(np.uint32))
    changed = int(np.count_nonzero(xor))
    return diff, xor.tobytes(), new.tobytes(), changed


def measure(v1_path, v2_path, level):
    name, size = compressor(level)
    old_graph, new_graph = onnx.load(v1_path).graph, onnx.load(v2_path).graph
    old_tensors, new_tensors = initializers(old_graph), initializers(new_graph)
    same_initializers, same_nodes = same_layout(old_graph, new_graph)
    rows, skipped = [], []
    streams = {"diff": [], "xor": [], "v2": []}
    for tensor_name, new in new_tensors.items():
        old = old_tensors.get(tensor_name)
        if old is None:
            skipped.append({"tensor": tensor_name, "why": "only in v2"})
            continue
        if new.dtype != np.float32 or old.dtype != np.float32:
            skipped.append({"tensor": tensor_name, "why": f"{old.dtype}/{new.dtype}, not float32"})
            continue
        if old.shape != new.shape:
            skipped.append({"tensor": tensor_name, "why": f"shape {list(old.shape)} -> {list(new.shape)}"})
            continue
        diff, xor, raw, changed = delta_streams(old, new)
        streams["diff"].append(diff)
        streams["xor"].append(xor)
        streams["v2"].append(raw)
        rows.append({"tensor": tensor_name, "shape": list(new.shape), "elements": int(new.size),
                     "changed_elements": changed, "changed_fraction": changed / max(new.size, 1),
                     "raw_bytes": len(raw), "diff_zstd": size(diff), "xor_zstd": size(xor),
                     "v2_zstd": size(raw)})
    skipped += [{"tensor": n, "why": "only in v1"} for n in old_tensors if n not in new_tensors]
    elements = sum(row["elements"] for row in rows)
    changed = sum(row["changed_elements"] for row in rows)
    total = {"tensors": len(rows), "elements": elements, "changed_elements": changed,
             "changed_fraction": changed / max(elements, 1), "raw_bytes": 4 * elements}
    for stream, parts in streams.items():
        total[f"{stream}_zstd"] = size(b"".join(parts))  # one stream: the honest total
        total[f"{stream}_zstd_sum"] = sum(row[f"{stream}_zstd"] for row in rows)
    return {"v1": v1_path, "v2": v2_path, "compressor": name,
            "same_initializers": same_initializers, "same_nodes": same_nodes,
            "tensors": rows, "total": total, "skipped": skipped}


def print_table(report, out=sys.stdout):
    total = report["total"]
    print(f"v1 {report['v1']}\nv2 {report['v2']}", file=out)
    print(f"initializer names, shapes and types: {'same' if report['same_initializers'] else 'DIFFERENT'}; "
          f"graph nodes: {'same' if report['same_nodes'] else 'DIFFERENT'}", file=out)
    print(f"{report['compressor']}; sizes in bytes", file=out)
    width = max([len(row["tensor"]) for row in report["tensors"]] + [len("all, one stream")])
    header = (f"{'tensor':<{width}} {'elements':>9} {'changed':>8} {'raw f32':>9} "
              f"{'diff':>9} {'xor':>9} {'v2 alone':>9}")
    print(header, file=out)
    if report["tensors"]:
        print("-" * len(header), file=out)
    for row in report["tensors"]:
        print(f"{row['tensor']:<{width}} {row['elements']:>9} {100 * row['changed_fraction']:>7.2f}% "
              f"{row['raw_bytes']:>9} {row['diff_zstd']:>9} {row['xor_zstd']:>9} {row['v2_zstd']:>9}",
              file=out)
    print("-" * len(header), file=out)
    for label, suffix in (("all, one stream", ""), ("sum of tensors", "_sum")):
        print(f"{label:<{width}} {total['elements']:>9} {100 * total['changed_fraction']:>7.2f}% "
              f"{total['raw_bytes']:>9} {total['diff_zstd' + suffix]:>9} {total['xor_zstd' + suffix]:>9} "
              f"{total['v2_zstd' + suffix]:>9}", file=out)
    for entry in report["skipped"]:
        print(f"skipped {entry['tensor']}: {entry['why']}", file=out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1].rsplit("\n\nusage:", 1)[0])
    parser.add_argument("v1", metavar="V1.onnx", help="the model the device holds")
    parser.add_argument("v2", metavar="V2.onnx", help="the model it should get")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--level", type=int, default=19, help="zstd level (default 19)")
    parser.add_argument("--summary", action="store_true", help="only the totals in the table")
    args = parser.parse_args()
    report = measure(args.v1, args.v2, args.level)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return
    if args.summary:
        report = dict(report, tensors=[])
    print_table(report)


if __name__ == "__main__":
    main()
