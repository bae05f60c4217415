#!/usr/bin/env bash
# How fast a device takes in a package when the link is not the limit: packs
# each model, serves it on loopback with no rate limit and no added RTT, and
# fetches it REPEATS times (default 3) incrementally and directly with
# `bitinc fetch --json` (2 decode threads: the machine's two cores are shared
# by the server, the transfer and the decoders). Prints package bytes per
# second of the whole fetch (manifest request to the last unit applied)
# against the study's fastest link, 1.1 Gbit/s.
#
#   bench/loopback_fetch_bench.sh MODEL.onnx [MODEL.onnx ...]
#
# LADDER (default 8,16), OUT (default out/loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
bitinc=${BITINC:-build/bitinc}
[[ -x $bitinc ]] || { echo "build first: make build" >&2; exit 1; }
(($# > 0)) || { echo "usage: $0 MODEL.onnx [MODEL.onnx ...]" >&2; exit 2; }
ladder=${LADDER:-8,16} rate=unlimited rtt=0 out=${OUT:-out/loopback}
repeats=${REPEATS:-3}
mkdir -p "$out"
# shellcheck source=serve_packages.sh
source bench/serve_packages.sh
echo "| model | mode | package MB | best s | best Gbit/s | all Gbit/s | decode s (hidden) |"
echo "|---|---|---|---|---|---|---|"
for model in "$@"; do
    name=$(basename "$model" .onnx)
    for mode in incremental direct; do
        runs=()
        for ((i = 0; i < repeats; i++)); do
            $bitinc fetch "$url/$name/" --mode "$mode" --json --no-progress \
                -o "$out/$name-$mode.onnx" >"$out/$name-$mode-$i.json"
            runs+=("$out/$name-$mode-$i.json")
            rm -f "$out/$name-$mode.onnx"
        done
        /usr/bin/python3 - "$name" "$mode" "${runs[@]}" <<'PY'
import json, sys
name, mode, files = sys.argv[1], sys.argv[2], sys.argv[3:]
runs = [json.load(open(f)) for f in files]
rates = [r["bytes_downloaded"] * 8 / r["seconds"] / 1e9 for r in runs]
best = max(range(len(runs)), key=lambda i: rates[i])
r = runs[best]
decode = sum(x["decode_seconds"] for x in r["rungs"])
hidden = sum(x["decode_hidden_seconds"] for x in r["rungs"])
print(f"| {name} | {mode} | {r['bytes_downloaded'] / 1e6:.1f} | {r['seconds']:.3f} | "
      f"{rates[best]:.2f} | {', '.join(f'{x:.2f}' for x in rates)} | {decode:.3f} ({hidden:.3f}) |")
PY
    done
done
