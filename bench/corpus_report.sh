#!/bin/sh
# The issue-13 corpus, model by model: what `pack` says, the bytes of each
# rung, and whether the rebuilt model is the source — the same graph (nodes,
# names, order, types) and, at the exact rung, the same weights bit for bit.
#
# usage: bench/corpus_report.sh [DIR]
#   DIR holds models from tools/make_corpus_models.py (made in a temporary
#   directory when not given). Needs python3-onnx and python3-numpy.
#   BITINC=build/bitinc  LADDER=4,8,exact (float64 models: 4,8; the exact
#   rung cannot give float64 weights back)  BIG=1 also packs a model past
#   2^31 bytes (build/bench/bitinc_make_big_model; about 7 GB of disk).
set -eu
BITINC=${BITINC:-build/bitinc}
LADDER=${LADDER:-4,8,exact}
PYTHON=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dir=${1:-}
if [ -z "$dir" ]; then
    dir="$work/models"
    "$PYTHON" "$here/../tools/make_corpus_models.py" "$dir" > /dev/null
fi
models=$(ls "$dir"/*.onnx)
if [ "${BIG:-0}" = 1 ]; then
    big_maker=${BIG_MAKER:-build/bench/bitinc_make_big_model}
    "$big_maker" "$work/big.onnx" 8 8192 --external-data > /dev/null
    models="$models $work/big.onnx"
fi
echo "| model | pack | base | refinement | exact | source weights | rebuilt graph | rebuilt weights |"
echo "|---|---|---|---|---|---|---|---|"
for model in $models; do
    name=$(basename "$model" .onnx)
    ladder=$LADDER
    case $name in float64) ladder=${LADDER%,exact} ;; esac
    rm -rf "$work/p" "$work/out"
    mkdir -p "$work/out"
    if ! "$BITINC" pack "$model" --ladder "$ladder" --json -o "$work/p" > "$work/pack.json" 2> "$work/pack.err"; then
        echo "| $name | refused: $(tail -n 1 "$work/pack.err") | | | | | | |"
        continue
    fi
    "$BITINC" unpack "$work/p" -o "$work/out/m.onnx" > /dev/null
    "$PYTHON" - "$model" "$work/out/m.onnx" "$work/pack.json" "$name" "$ladder" <<'PY'
import json, sys
import numpy as np
import onnx
from onnx import numpy_helper

source_path, rebuilt_path, pack_path, name, ladder = sys.argv[1:6]
pack = json.load(open(pack_path))
source = onnx.load(source_path)
rebuilt = onnx.load(rebuilt_path)

def raw(tensor):
    return numpy_helper.to_array(tensor).tobytes() if tensor.data_type != 16 else tensor.raw_data

def weights(model):
    found = {t.name: (t.data_type, list(t.dims), raw(t)) for t in model.graph.initializer}
    for node in model.graph.node:
        for attribute in node.attribute:
            if node.op_type == "Constant" and attribute.name == "value":
                t = attribute.t
                found["Constant:" + node.output[0]] = (t.data_type, list(t.dims), raw(t))
    return found

def structure(model):
    nodes = [(n.op_type, n.name, list(n.input), list(n.output),
              sorted(a.name for a in n.attribute)) for n in model.graph.node]
    inputs = [i.name for i in model.graph.input]
    return nodes, inputs, [o.name for o in model.graph.output]

a, b = weights(source), weights(rebuilt)
same_graph = structure(source) == structure(rebuilt) and \
    [(k, v[0], v[1]) for k, v in a.items()] == [(k, v[0], v[1]) for k, v in b.items()]
same_values = all(a[k][2] == b[k][2] for k in a) and a.keys() == b.keys()
rungs = {r["kind"]: r["bytes"] for r in pack["rungs"] if r["kind"] != "direct"}
said = "ok"
if pack["warnings"]:
    said = "warns: " + "; ".join(w[:80] for w in pack["warnings"])
if pack["notes"]:
    said += ", note: " + "; ".join(n[:60] for n in pack["notes"])
source_bytes = sum(len(v[2]) for v in a.values())
exact = "exact" in rungs
print(f"| {name} ({ladder}) | {said} | {rungs.get('base', 0):,} | {rungs.get('refinement', 0):,} | "
      f"{rungs.get('exact', 0):,} | {source_bytes:,} | {'same' if same_graph else 'DIFFERS'} | "
      f"{('bit for bit' if same_values else 'DIFFER') if exact else ('same types and shapes, rung values' if same_graph else 'DIFFER')} |")
PY
done
