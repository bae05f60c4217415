#!/usr/bin/python3
"""Markdown tables for docs/performance.md from `bitinc bench --json` files.

    bench/performance_tables.py out/bench > tables.md
"""

import glob
import json
import os
import sys


def mb(value):
    return f"{value / 1e6:.3f}"


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "out/bench"
    files = sorted(glob.glob(os.path.join(directory, "*.json")))
    print("### Sizes (bitinc coder)\n")
    print("| model | steps | ladder | base MB | base / H0 | refinements MB | ladder MB | direct top MB | "
          "direct / H0 | ladder / direct | zstd-19 direct / H0 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    speed_rows = []
    for path in files:
        data = json.load(open(path))
        name = os.path.basename(data["model"]).removesuffix(".onnx")
        for result in data["results"]:
            coders = {c["coder"]: c for c in result["coders"]}
            ours = coders.get("bitinc")
            if ours is None:
                continue
            zstd = coders.get("zstd")
            refinements = sum(r["bytes"] for r in ours["rungs"][1:])
            print(f"| {name} | {'channel' if result['per_channel'] else 'tensor'} | {result['ladder']} | "
                  f"{mb(ours['rungs'][0]['bytes'])} | {ours['base_over_entropy']:.3f} | {mb(refinements)} | "
                  f"{mb(ours['ladder_bytes'])} | {mb(ours['direct_bytes'])} | {ours['direct_over_entropy']:.3f} | "
                  f"{ours['ladder_over_direct']:.4f} | "
                  f"{zstd['direct_over_entropy']:.3f} |" if zstd else "|")
            if not result["per_channel"]:
                for rung in ours["rungs"] + [ours["direct"]]:
                    label = (f"{rung['parent_bits']}→{rung['bits']}" if rung["parent_bits"] else
                             f"{rung['bits']}" + (" direct" if rung is ours["direct"] else ""))
                    speed_rows.append((name, result["ladder"], label, result["threads"], rung))
            refine_rate = result["refine_weights_per_second"]
    print("\n### Speeds (bitinc coder, per-tensor steps)\n")
    print("| model | ladder | rung | threads | encode M weights/s | decode M weights/s | decode s |")
    print("|---|---|---|---|---|---|---|")
    seen = set()
    for name, ladder, label, threads, rung in speed_rows:
        key = (name, label)
        if key in seen:
            continue
        seen.add(key)
        print(f"| {name} | {ladder} | {label} | {threads} | {rung['encode_weights_per_second'] / 1e6:.1f} | "
              f"{rung['decode_weights_per_second'] / 1e6:.1f} | {rung['decode_seconds']:.3f} |")


if __name__ == "__main__":
    main()
