#!/bin/sh
# The exact rung against an exponent-aware lossless float coder (ZipNN's
# method, estimated by bench/zipnn_estimate.py from the same weights), for
# the tensors bitinc quantizes: bytes of base + refinements + exact rung,
# each ladder per tensor and per channel, and whether unpacking the exact
# rung gives back the source file byte for byte.
#
# usage: bench/exact_rung_bench.sh MODEL.onnx [MODEL.onnx ...]
#   BITINC=build/bitinc  LADDERS="8,exact 4,8,exact 4,8,16,exact"
set -eu
BITINC=${BITINC:-build/bitinc}
LADDERS=${LADDERS:-"8,exact 4,8,exact 4,8,16,exact"}
PYTHON=${PYTHON:-/usr/bin/python3}
here=$(dirname "$0")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for model in "$@"; do
    estimate=$("$PYTHON" "$here/zipnn_estimate.py" "$model")
    echo "$model: zipnn-like $estimate"
    for ladder in $LADDERS; do
        for channel in "" --per-channel; do
            rm -rf "$work/p"
            "$BITINC" pack "$model" --ladder "$ladder" $channel -o "$work/p" > /dev/null
            "$BITINC" unpack "$work/p" -o "$work/m.onnx" > /dev/null
            if cmp -s "$work/m.onnx" "$model"; then same=identical; else same=DIFFERENT; fi
            "$PYTHON" - "$work/p/manifest.json" "$ladder${channel:+ per-channel}" "$same" "$estimate" <<'PY'
import json, math, sys
manifest = json.load(open(sys.argv[1]))
estimate = json.loads(sys.argv[4])
quantized = {i for i, t in enumerate(manifest["tensors"]) if t["quantized"]}
coded = sum(u[4] for r in manifest["rungs"] if r["kind"] != "direct"
            for u in r["units"] if u[0] in quantized)
raw = estimate["raw_bytes"]
print(f"  {sys.argv[2]:<28} {coded:>12,} bytes  {coded / raw:.4f} of raw  "
      f"{coded / estimate['huffman_bytes']:.4f} x zipnn-like  unpack: {sys.argv[3]}")
PY
        done
    done
done
