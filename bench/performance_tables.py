#!/usr/bin/python3
"""Markdown tables for docs/performance.md from `bitinc bench --json` files.

    bench/performance_tables.py DIR [DIR ...] > tables.md

Every *.json file in the directories is read; runs with different thread
counts (e.g. THREADS=1 and THREADS=2 into two directories) appear side by
side in the speed table, one group of columns per thread count. Sizes come
from the runs with the most threads (sizes do not depend on threads).
"""

import glob
import json
import os
import sys


def mb(value):
    return f"{value / 1e6:.3f}"


def load(directories):
    runs = []
    for directory in directories:
        for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
            data = json.load(open(path))
            name = os.path.basename(data["model"]).removesuffix(".onnx")
            for result in data["results"]:
                runs.append((name, result))
    return runs


def rung_label(rung, direct=False):
    if rung["parent_bits"]:
        return f"{rung['parent_bits']}→{rung['bits']}"
    return f"{rung['bits']}" + (" direct" if direct else "")


def main():
    runs = load(sys.argv[1:] or ["out/bench"])
    widest = max((r["threads"] for _, r in runs), default=1)

    print("### Sizes of the bitinc coder\n")
    print("| model | steps | ladder | base MB | base / H0 | refinements MB | ladder MB | direct top MB | "
          "direct / H0 | ladder / direct |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, result in runs:
        coders = {c["coder"]: c for c in result["coders"]}
        ours = coders.get("bitinc")
        if ours is None or result["threads"] != widest:
            continue
        refinements = sum(r["bytes"] for r in ours["rungs"][1:])
        print(f"| {name} | {'channel' if result['per_channel'] else 'tensor'} | {result['ladder']} | "
              f"{mb(ours['rungs'][0]['bytes'])} | {ours['base_over_entropy']:.3f} | {mb(refinements)} | "
              f"{mb(ours['ladder_bytes'])} | {mb(ours['direct_bytes'])} | {ours['direct_over_entropy']:.3f} | "
              f"{ours['ladder_over_direct']:.4f} |")

    print("\n### The coders compared (per-tensor steps; MB, and × H0 for levels)\n")
    print("| model | ladder | rung | H0 MB | bitinc | raw | zstd -19 |")
    print("|---|---|---|---|---|---|---|")
    for name, result in runs:
        if result["per_channel"] or result["threads"] != widest:
            continue
        coders = {c["coder"]: c for c in result["coders"]}
        if "bitinc" not in coders:
            continue
        rows = [(i, rung_label(r)) for i, r in enumerate(coders["bitinc"]["rungs"])]
        if len(rows) > 1:
            rows.append((-1, rung_label(coders["bitinc"]["direct"], direct=True)))
        for index, label in rows:
            entropy = result["base_entropy_bytes"] if index == 0 else (
                result["top_entropy_bytes"] if index == -1 else None)
            cells = []
            for coder in ("bitinc", "raw", "zstd"):
                if coder not in coders:
                    cells.append("–")
                    continue
                rung = coders[coder]["direct"] if index == -1 else coders[coder]["rungs"][index]
                ratio = f" ({rung['bytes'] / entropy:.3f})" if entropy else ""
                cells.append(f"{mb(rung['bytes'])}{ratio}")
            print(f"| {name} | {result['ladder']} | {label} | {mb(entropy) if entropy else ''} | "
                  + " | ".join(cells) + " |")

    # One row per model, ladder and rung; one group of columns per thread
    # count, widest first, so that runs at different thread counts sit side
    # by side.
    thread_counts = sorted({r["threads"] for _, r in runs if not r["per_channel"]}, reverse=True)
    rows = {}
    for name, result in runs:
        if result["per_channel"]:
            continue
        coders = {c["coder"]: c for c in result["coders"]}
        ours = coders.get("bitinc")
        if ours is None:
            continue
        rungs = [(r, rung_label(r)) for r in ours["rungs"]]
        if len(rungs) > 1:
            rungs.append((ours["direct"], rung_label(ours["direct"], direct=True)))
        for rung, label in rungs:
            row = rows.setdefault((name, label), {"ladder": result["ladder"], "threads": {}, "refine": {}})
            if result["threads"] in row["threads"]:
                continue
            row["threads"][result["threads"]] = rung
            if rung["parent_bits"]:
                row["refine"][result["threads"]] = result["refine_weights_per_second"] / 1e6

    print("\n### Speeds of the bitinc coder (per-tensor steps, M weights/s and seconds)\n")
    groups = " | ".join(f"encode {t} t | decode {t} t | decode s {t} t" for t in thread_counts)
    print(f"| model | ladder | rung | {groups} | refine apply (1 thread) |")
    print("|---|---|---|" + "---|---|---|" * len(thread_counts) + "---|")
    for (name, label), row in rows.items():
        cells = []
        for t in thread_counts:
            rung = row["threads"].get(t)
            if rung is None:
                cells += ["", "", ""]
                continue
            cells += [f"{rung['encode_weights_per_second'] / 1e6:.1f}",
                      f"{rung['decode_weights_per_second'] / 1e6:.1f}", f"{rung['decode_seconds']:.3f}"]
        refine = " / ".join(f"{row['refine'][t]:.0f}" for t in thread_counts if t in row["refine"])
        print(f"| {name} | {row['ladder']} | {label} | " + " | ".join(cells) + f" | {refine} |")

if __name__ == "__main__":
    main()
