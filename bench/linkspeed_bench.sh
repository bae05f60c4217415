#!/usr/bin/env bash
# One core against one core: sizes and speeds of the weight coder per model,
# for this build and, if OLD names another bitinc binary (e.g. a copy of the
# main branch's build/bitinc), for that one in the same run.
#
#   OLD=/tmp/bitinc-main bench/linkspeed_bench.sh [MODEL.onnx ...]
#
# Runs `bitinc bench --threads 1 --repeats REPEATS` (default 3, the best
# pass counts) pinned to CPU CORE (default 0) on ladders 4/8/16 (direct
# rungs), 8,16, 4,16 and 4,8,16, writes the JSON to OUT (default out/linkspeed) and
# prints one table row per model and binary (bench/linkspeed_table.py).
set -euo pipefail
cd "$(dirname "$0")/.."
new=${BITINC:-build/bitinc}
[[ -x $new ]] || { echo "build first: make build" >&2; exit 1; }
out=${OUT:-out/linkspeed}
mkdir -p "$out"
models=("$@")
((${#models[@]})) || models=(models/small-cnn.onnx models/mobilenetv2.onnx)
binaries=("new:$new")
[[ -n ${OLD:-} ]] && binaries+=("old:$OLD")
for model in "${models[@]}"; do
    name=$(basename "$model" .onnx)
    for entry in "${binaries[@]}"; do
        label=${entry%%:*}
        binary=${entry#*:}
        repeats=()
        # Older builds time one pass only.
        "$binary" bench --help 2>&1 | grep -q -- --repeats && repeats=(--repeats "${REPEATS:-3}")
        echo "bench $name ($label)" >&2
        taskset -c "${CORE:-0}" "$binary" bench "$model" --coders bitinc --threads 1 "${repeats[@]}" \
            --ladders 4/8/16/8,16/4,16/4,8,16 --json > "$out/$name-$label.json"
    done
done
/usr/bin/python3 bench/linkspeed_table.py "$out"
