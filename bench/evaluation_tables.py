#!/usr/bin/python3
"""Markdown tables for docs/evaluation.md from `bitinc eval` result directories.

    bench/evaluation_tables.py out/eval/resnet18 out/eval/mobilenetv2 out/eval/vgg16

Prints, per model, the study's results table (high-precision model,
low-precision model, model update) next to the published NNCodec figures of
clause 10.6.14, then the delivery table per link rate.
"""

import json
import os
import sys

# Clause 10.6.14 (NNCodec, not cross-checked): accuracy %, start-up s, MB.
PUBLISHED = {
    "vgg16": ("Chest X-ray", [(73.07, 22.32, 31.70), (71.79, 12.78, 14.66), (73.07, 1.59, 0.48)]),
    "resnet18": ("PASCAL VOC", [(46.03, 15.32, 20.47), (45.77, 8.38, 9.11), (46.16, 1.71, 0.67)]),
    "mobilenetv2": ("PASCAL VOC", [(44.91, 4.19, 4.43), (36.98, 2.78, 2.10), (44.43, 1.09, 0.44)]),
}


def startup(rung):
    return rung["encode_seconds"] + rung["decode_seconds"] + rung["reconstruct_seconds"]


def main():
    for directory in sys.argv[1:]:
        r = json.load(open(os.path.join(directory, "results.json")))
        name = r["model"]
        published_dataset, published = PUBLISHED.get(name, ("", []))
        print(f"### {name}\n")
        print(f"Original float32 model: {r['original']['performance']:.2f} % top-1, "
              f"{r['float32_bytes'] / 1e6:.2f} MB of weights. Base + update reproduces the direct "
              f"16-bit model bit for bit: {'yes' if r['update_equals_direct'] else 'NO'}.\n")
        print("| | precision | bitinc: accuracy % | start-up s | bitstream MB | "
              f"NNCodec ({published_dataset}): accuracy % | start-up s | bitstream MB |")
        print("|---|---|---|---|---|---|---|---|")
        rows = [("High-precision model", r["direct"])] + [
            ("Low-precision model" if rung["kind"] == "base" else "Model update", rung) for rung in r["ladder"]]
        for i, (label, rung) in enumerate(rows):
            ours = f"{rung['performance']:.2f} | {startup(rung):.3f} | {rung['bytes'] / 1e6:.3f}"
            theirs = " | ".join(f"{v}" for v in published[i]) if i < len(published) else "| |"
            print(f"| {label} | {rung['bits']} | {ours} | {theirs} |")
        print()
        print("| link | UE1 first result s | UE2 first result s | UE1 / UE2 | UE1 top rung s | UE2 top rung s |")
        print("|---|---|---|---|---|---|")
        runs = r["runs"]
        for ue1, ue2 in zip(runs[0::2], runs[1::2]):
            print(f"| {ue1['rate_bits_per_second'] / 1e6:g} Mbit/s | {ue1['startup_latency_e2e']:.3f} | "
                  f"{ue2['startup_latency_e2e']:.3f} | {ue1['startup_latency_e2e'] / ue2['startup_latency_e2e']:.2f} | "
                  f"{ue1['top_rung_seconds']:.3f} | {ue2['top_rung_seconds']:.3f} |")
        print()


if __name__ == "__main__":
    main()
