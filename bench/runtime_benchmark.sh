#!/usr/bin/env bash
# The device runtime over an emulated link: packs each model, serves it with
# `bitinc serve --rate R --rtt T`, and runs `bitinc run` (a 30 fps camera of
# Fashion-MNIST test images) while the model arrives, once swapping per rung
# and once in progressive mode. Writes timelines to OUT (default out/runtime)
# and prints a markdown table.
#
#   bench/runtime_benchmark.sh MODEL.onnx [MODEL.onnx ...]
#
# RATE (default 100Mbit), RTT (20ms), LADDER (4,8,16), FPS (30),
# SWAP_EVERY (units per progressive rebuild, default 8).
set -euo pipefail
cd "$(dirname "$0")/.."
bitinc=${BITINC:-build/bitinc}
[[ -x $bitinc ]] || { echo "build first: make build" >&2; exit 1; }
(($# > 0)) || { echo "usage: $0 MODEL.onnx [MODEL.onnx ...]" >&2; exit 2; }
rate=${RATE:-100Mbit} rtt=${RTT:-20ms} ladder=${LADDER:-4,8,16} fps=${FPS:-30} swap_every=${SWAP_EVERY:-8}
out=${OUT:-out/runtime}
# shellcheck source=serve_packages.sh
source bench/serve_packages.sh
for model in "$@"; do
    name=$(basename "$model" .onnx)
    $bitinc run "$url/$name/" --fps "$fps" --quiet --timeline "$out/$name-per-rung" >/dev/null
    $bitinc run "$url/$name/" --fps "$fps" --quiet --swap-every "$swap_every" --timeline "$out/$name-progressive" >/dev/null
done
/usr/bin/python3 - "$out" "$rate" "$rtt" "$ladder" "$fps" "$@" <<'PY'
import json, os, sys
out, rate, rtt, ladder, fps, models = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:]
print(f"Link {rate}, RTT {rtt}, ladder {ladder}, camera {fps} fps; engine 1 thread, decode 1 thread.\n")
print("| model | swaps | first result s | top rung s | longest gap at a swap ms | longest gap ms | longest latency ms | engine builds (mean s) | served per rung: images (accuracy %) | frames in = out |")
print("|---|---|---|---|---|---|---|---|---|---|")
for model in models:
    name = os.path.basename(model).removesuffix(".onnx")
    for kind in ("per-rung", "progressive"):
        r = json.load(open(os.path.join(out, f"{name}-{kind}.json")))
        builds = [e["build_seconds"] for e in r["events"] if e["event"] == "swapped"]
        served = ", ".join(f"{s['bits']} bit: {s['results']} ({s['accuracy_percent']:.1f})" for s in r["served"])
        print(f"| {name} | {kind} | {r['first_result_at']:.3f} | {r['top_rung_at']:.3f} | "
              f"{1e3*r['longest_gap_at_swap_seconds']:.1f} | {1e3*r['longest_gap_seconds']:.1f} | "
              f"{1e3*r['longest_latency_seconds']:.1f} | {len(builds)} ({sum(builds)/max(len(builds),1):.3f}) | {served} | "
              f"{'yes' if r['frames_in'] == r['results_out'] else 'NO'} ({r['results_out']}) |")
PY
