#!/usr/bin/env bash
# Runs `bitinc bench` on every model present and writes one JSON file per
# model and step granularity to out/bench/, then the markdown tables of
# docs/performance.md to out/bench/tables.md.
#
#   bench/run_coder_benchmarks.sh [MODEL.onnx ...]
#
# Without arguments: the Fashion-MNIST models in models/ and the
# ImageNet-shaped ones in out/imagenet/ (tools/export_torchvision.py).
# THREADS (default 2) sets the coding threads, OUT (default out/bench) the
# output directory.
set -euo pipefail
cd "$(dirname "$0")/.."
bitinc=${BITINC:-build/bitinc}
[[ -x $bitinc ]] || { echo "build first: make build" >&2; exit 1; }
out=${OUT:-out/bench}
mkdir -p "$out"
models=("$@")
if ((${#models[@]} == 0)); then
    for candidate in models/small-cnn.onnx models/mobilenetv2.onnx models/resnet18.onnx models/vgg16.onnx \
        out/imagenet/mobilenetv2-imagenet.onnx out/imagenet/resnet18-imagenet.onnx out/imagenet/vgg16-imagenet.onnx; do
        [[ -f $candidate ]] && models+=("$candidate")
    done
fi
for model in "${models[@]}"; do
    name=$(basename "$model" .onnx)
    # zstd -19 encodes at ~2.5 M weights/s: on the 138 M-weight VGG16 the
    # comparison would take most of an hour, so large models skip it.
    extra=()
    if (($(stat -c %s "$model") > 200000000)); then
        extra=(--coders bitinc,raw --ladders 8,16/4,8,16/16)
    fi
    for granularity in tensor channel; do
        flag=""
        [[ $granularity == channel ]] && flag="--per-channel"
        echo "bench $name ($granularity steps)" >&2
        # shellcheck disable=SC2086
        $bitinc bench "$model" $flag --threads "${THREADS:-2}" "${extra[@]}" --json > "$out/$name-$granularity.json.tmp"
        mv "$out/$name-$granularity.json.tmp" "$out/$name-$granularity.json"
    done
done
/usr/bin/python3 bench/performance_tables.py "$out" > "$out/tables.md"
echo "tables: $out/tables.md" >&2
