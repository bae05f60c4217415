#!/usr/bin/env bash
# Delivery over an emulated link: packs each model, serves the packages with
# `bitinc serve --rate R --rtt T` on loopback, and fetches each one
# incrementally (UE1) and directly (UE2) with `bitinc fetch --json`. Writes
# the timelines to OUT (default out/delivery) and prints a markdown table.
#
#   bench/delivery_benchmark.sh MODEL.onnx [MODEL.onnx ...]
#
# RATE (default 100Mbit), RTT (default 20ms), LADDER (default 8,16).
set -euo pipefail
cd "$(dirname "$0")/.."
bitinc=${BITINC:-build/bitinc}
[[ -x $bitinc ]] || { echo "build first: make build" >&2; exit 1; }
(($# > 0)) || { echo "usage: $0 MODEL.onnx [MODEL.onnx ...]" >&2; exit 2; }
rate=${RATE:-100Mbit} rtt=${RTT:-20ms} ladder=${LADDER:-8,16}
out=${OUT:-out/delivery}
# shellcheck source=serve_packages.sh
source bench/serve_packages.sh
for model in "$@"; do
    name=$(basename "$model" .onnx)
    for mode in incremental direct; do
        $bitinc fetch "$url/$name/" --mode "$mode" --json --no-progress -o "$out/$name-$mode.onnx" >"$out/$name-$mode.json"
        rm -f "$out/$name-$mode.onnx"
    done
done
/usr/bin/python3 - "$out" "$rate" "$rtt" "$@" <<'PY'
import json, os, sys
out, rate, rtt, models = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
print(f"Link {rate}, RTT {rtt}. Times in seconds from the request for the manifest.\n")
print("| model | mode | first rung | bytes to first rung | time to first rung | bytes to top | time to top | decode s | decode hidden |")
print("|---|---|---|---|---|---|---|---|---|")
for model in models:
    name = os.path.basename(model).removesuffix(".onnx")
    for mode in ("incremental", "direct"):
        t = json.load(open(os.path.join(out, f"{name}-{mode}.json")))
        rungs = t["rungs"]
        first, top = rungs[0], rungs[-1]
        decode = sum(r["decode_seconds"] for r in rungs)
        hidden = sum(r["decode_hidden_seconds"] for r in rungs)
        # Bytes include the manifest and the topology, as a device pays them.
        overhead = t["bytes_downloaded"] - sum(r["bytes"] for r in rungs)
        print(f"| {name} | {mode} | {first['bits']} bit | {(overhead + first['bytes'])/1e6:.3f} MB | "
              f"{first['ready_at']:.3f} | {t['bytes_downloaded']/1e6:.3f} MB | {top['ready_at']:.3f} | "
              f"{decode:.3f} | {100*hidden/decode if decode else 100:.0f} % |")
PY
