#!/usr/bin/python3
"""Export full-size, ImageNet-shaped torchvision models with seeded random
weights, for size and speed benchmarks only (they classify nothing).

    tools/export_torchvision.py --model all -o out/imagenet

writes OUT/<name>-imagenet.onnx for vgg16 (138 M parameters), resnet18
(11.7 M) and mobilenetv2 (3.5 M). No weights are downloaded.
"""

import argparse
import os

import onnx
import torch
import torchvision

MODELS = {
    "vgg16": torchvision.models.vgg16,
    "resnet18": torchvision.models.resnet18,
    "mobilenetv2": torchvision.models.mobilenet_v2,
}


def export(name, seed, directory):
    torch.manual_seed(seed)
    model = MODELS[name](weights=None).eval()
    path = os.path.join(directory, f"{name}-imagenet.onnx")
    temporary = path + ".tmp"
    torch.onnx.export(model, torch.zeros(1, 3, 224, 224), temporary, opset_version=13,
                      input_names=["input"], output_names=["logits"], do_constant_folding=True,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load(temporary)
    metadata = {
        "bitinc.model": f"{name}-imagenet",
        "bitinc.dataset": "none (random init)",
        "bitinc.classes": "1000",
        "bitinc.input.name": "input",
        "bitinc.input.layout": "NCHW",
        "bitinc.input.shape": "3,224,224",
        "bitinc.input.scale": repr(1.0 / 255.0),
        "bitinc.input.mean": "0.485,0.456,0.406",
        "bitinc.input.std": "0.229,0.224,0.225",
        "bitinc.seed": str(seed),
    }
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, temporary)
    os.replace(temporary, path)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"wrote {path}: {os.path.getsize(path):,} bytes, {parameters:,} parameters", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="all", choices=[*MODELS, "all"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output-dir", required=True)
    args = parser.parse_args()
    os.makedirs(args.output_dir, exist_ok=True)
    for name in MODELS if args.model == "all" else [args.model]:
        export(name, args.seed, args.output_dir)


if __name__ == "__main__":
    main()
