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


def direct_bits(r):
    return r["direct"]["bits"]


def main():
    for directory in sys.argv[1:]:
        r = json.load(open(os.path.join(directory, "results.json")))
        name = r["model"]
        published_dataset, published = PUBLISHED.get(name, ("", []))
        print(f"### {name}\n")
        print(f"Original float32 model: {r['original']['performance']:.2f} % top-1, "
              f"{r['float32_bytes'] / 1e6:.2f} MB of weights. Base + update reproduces the direct "
              f"16-bit model bit for bit: {'yes' if r['update_equals_direct'] else 'NO'}.\n")
        direct = r["direct"]["bytes"]
        base = r["ladder"][0]
        # The study's three rows; the model update twice when the package was
        # calibrated: to the accuracy point, and exact (to the top rung).
        rows = [("High-precision model", f"{direct_bits(r)}", r["direct"], direct, 0),
                ("Low-precision model", f"{base['bits']}", base, base["bytes"], 1)]
        if "accuracy_update" in r:
            u = r["accuracy_update"]
            rows.append((f"Model update, accuracy-matched ({u['units']} units)",
                         f"{u['parent_bits']}→{u['bits']}", u, base["bytes"] + u["bytes"], 2))
        if "exact_update" in r:
            u = r["exact_update"]
            # NNCodec's one update sits beside the accuracy-matched one when there is one.
            rows.append(("Model update, exact", f"{u['parent_bits']}→{u['bits']}", u,
                         base["bytes"] + u["bytes"], 3 if "accuracy_update" in r else 2))
        else:
            for rung in r["ladder"][1:]:
                rows.append(("Model update", f"{rung['bits']}", rung, None, 2))
        print("| | precision | bitinc: accuracy % | start-up s | bitstream MB | base + update / direct | "
              f"NNCodec ({published_dataset}): accuracy % | start-up s | bitstream MB | base + update / direct |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for label, bits, entry, received, published_row in rows:
            ratio = f"{received / direct:.3f}" if received is not None and published_row >= 2 else ""
            ours = f"{entry['performance']:.2f} | {startup(entry):.3f} | {entry['bytes'] / 1e6:.3f} | {ratio}"
            theirs = "| | |"
            if published_row < len(published):
                acc, seconds, mb = published[published_row]
                their_ratio = ""
                if published_row == 2:
                    their_ratio = f"{(published[1][2] + mb) / published[0][2]:.2f}"
                theirs = f"{acc} | {seconds} | {mb} | {their_ratio}"
            print(f"| {label} | {bits} | {ours} | {theirs} |")
        print()
        print("| link | UE1 first result s | UE2 first result s | UE1 / UE2 | UE1 accuracy point s "
              "| UE1 top rung s | UE2 top rung s | UE1 dominates UE2 (margin, pt) |")
        print("|---|---|---|---|---|---|---|---|")
        runs = r["runs"]
        dominance = {d["rate_bits_per_second"]: d for d in r.get("dominance", [])}
        for ue1, ue2 in zip(runs[0::2], runs[1::2]):
            point = ue1.get("accuracy_point_served_at", -1)
            d = dominance.get(ue1["rate_bits_per_second"])
            holds = f"{'yes' if d['holds'] else 'no'} ({d['worst_margin']:+.2f})" if d else ""
            print(f"| {ue1['rate_bits_per_second'] / 1e6:g} Mbit/s | {ue1['startup_latency_e2e']:.3f} | "
                  f"{ue2['startup_latency_e2e']:.3f} | {ue1['startup_latency_e2e'] / ue2['startup_latency_e2e']:.2f} | "
                  f"{point:.3f} | " if point >= 0 else "- | ", end="")
            print(f"{ue1['top_rung_seconds']:.3f} | {ue2['top_rung_seconds']:.3f} | {holds} |")
        first, tensor = r.get("accuracy_first_curve", []), r.get("tensor_order_curve", [])
        if first and len(first) == len(tensor):
            diffs = [a["performance"] - b["performance"] for a, b in zip(first[1:], tensor[1:])]
            print(f"\nAccuracy against bytes, accuracy-first against tensor order at {len(diffs)} byte counts: "
                  f"above at {sum(d > 0 for d in diffs)}, equal at {sum(d == 0 for d in diffs)}, "
                  f"below at {sum(d < 0 for d in diffs)}"
                  + (f" (by up to {-min(diffs):.2f} pt)" if min(diffs) < 0 else "") + ".")
        print()


if __name__ == "__main__":
    main()
