#!/usr/bin/env bash
# Trains the Fashion-MNIST models of docs/models.md and exports the
# ImageNet-shaped benchmark models. Run by `make models`.
# MODELS="small-cnn resnet18" limits the set; existing outputs are kept
# unless FORCE=1.
set -euo pipefail
cd "$(dirname "$0")/.."
python=/usr/bin/python3   # Debian's Python, which has python3-torch
models=${MODELS:-"small-cnn mobilenetv2 resnet18 vgg16"}

# Epochs and training images per model: enough to be clearly trained on a
# 2-core machine in minutes (times per epoch are in each models/NAME.json).
declare -A arguments=(
    [small-cnn]="--epochs 8"
    [mobilenetv2]="--epochs 3"
    [resnet18]="--epochs 3"
    [vgg16]="--epochs 1 --train-limit 30000"
)

for model in $models; do
    if [[ -f models/$model.onnx && "${FORCE:-0}" != 1 ]]; then
        echo "models/$model.onnx exists (FORCE=1 retrains)"
        continue
    fi
    # shellcheck disable=SC2086
    $python tools/train_fashion_mnist.py --model "$model" ${arguments[$model]} \
        -o "models/$model.onnx" --record "models/$model.json"
done

if [[ "${IMAGENET:-1}" == 1 ]]; then
    mkdir -p out/imagenet
    for model in mobilenetv2 resnet18 vgg16; do
        [[ -f out/imagenet/$model-imagenet.onnx ]] || $python tools/export_torchvision.py --model "$model" -o out/imagenet
    done
fi
