#!/usr/bin/python3
"""Train a classifier on Fashion-MNIST and export it to ONNX for bitinc.

Run with Debian's Python (/usr/bin/python3), which has python3-torch,
python3-torchvision and python3-onnx. Examples:

    tools/train_fashion_mnist.py --model small-cnn --epochs 6 -o models/small-cnn.onnx \
        --record models/small-cnn.json
    tools/train_fashion_mnist.py --model vgg16 --epochs 1 --train-limit 20000 -o models/vgg16.onnx

The preprocessing is defined once here and written into the ONNX metadata
(bitinc.input.*), where the C++ evaluator reads it (docs/models.md).
"""

import argparse
import gzip
import json
import os
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

# The one definition of the input preprocessing: x = (pixel * SCALE - MEAN) / STD,
# a 28x28 image centred on a canvas of pixel value 0 when the input is larger.
SCALE = 1.0 / 255.0
MEAN = 0.2860
STD = 0.3530
CLASSES = 10
IMAGE_SIZE = 28


def read_idx(path):
    """An unsigned-byte IDX array from a gzipped file."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    return array.reshape(dims)


def load_split(data_dir, split):
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    return images, labels


def preprocess(images, input_size):
    """uint8 [N,28,28] -> float32 [N,1,S,S] normalized and centred."""
    pad = (input_size - IMAGE_SIZE) // 2
    canvas = np.zeros((len(images), 1, input_size, input_size), dtype=np.float32)
    canvas[:, 0, pad : pad + IMAGE_SIZE, pad : pad + IMAGE_SIZE] = images
    return torch.from_numpy((canvas * SCALE - MEAN) / STD)


class SmallCnn(nn.Module):
    """Five 3x3 conv layers with batch norm, global pooling, one linear layer."""

    def __init__(self):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(
            *block(1, 32), *block(32, 32), nn.MaxPool2d(2),
            *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
            *block(64, 128), nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(128, CLASSES)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def grey_input_conv(conv):
    """A copy of `conv` that takes one input channel instead of three."""
    return nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     bias=conv.bias is not None)


class Vgg16(nn.Module):
    """VGG16's convolutional features and the seed document's classifier:
    features -> Linear(512, 256) -> ReLU -> Linear(256, 10). Batch norm after
    each conv makes it trainable from scratch in one epoch; the export folds it
    into the conv weights, so the deployed graph is VGG16's conv stack."""

    def __init__(self):
        super().__init__()
        self.features = torchvision.models.vgg16_bn().features
        self.features[0] = grey_input_conv(self.features[0])
        self.classifier = nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, CLASSES))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def build_model(name):
    """(module, input size) for a model name."""
    if name == "small-cnn":
        return SmallCnn(), 28
    if name == "resnet18":
        model = torchvision.models.resnet18(num_classes=CLASSES)
        model.conv1 = grey_input_conv(model.conv1)  # the ImageNet stem keeps it cheap at 28x28
        return model, 28
    if name == "mobilenetv2":
        model = torchvision.models.mobilenet_v2(num_classes=CLASSES)
        model.features[0][0] = grey_input_conv(model.features[0][0])
        return model, 32
    if name == "vgg16":
        return Vgg16(), 32
    raise ValueError(name)


def evaluate(model, images, labels, batch_size=500):
    model.eval()
    correct = 0
    with torch.no_grad():
        for first in range(0, len(images), batch_size):
            logits = model(images[first : first + batch_size])
            correct += int((logits.argmax(1) == labels[first : first + batch_size]).sum())
    return 100.0 * correct / len(images)


def export(model, input_size, path, name, accuracy):
    model.eval()
    example = torch.zeros(1, 1, input_size, input_size)
    temporary = path + ".tmp"
    torch.onnx.export(model, example, temporary, opset_version=13, input_names=["input"],
                      output_names=["logits"], do_constant_folding=True,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load(temporary)
    metadata = {
        "bitinc.model": name,
        "bitinc.dataset": "fashion-mnist",
        "bitinc.classes": str(CLASSES),
        "bitinc.input.name": "input",
        "bitinc.input.layout": "NCHW",
        "bitinc.input.shape": f"1,{input_size},{input_size}",
        "bitinc.input.scale": repr(SCALE),
        "bitinc.input.mean": f"{MEAN:.4f}",
        "bitinc.input.std": f"{STD:.4f}",
        "bitinc.pytorch_accuracy": f"{accuracy:.2f}",
    }
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, temporary)
    os.replace(temporary, path)  # never leave a half-written model behind


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, choices=["small-cnn", "resnet18", "mobilenetv2", "vgg16"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-limit", type=int, default=0, help="use only the first N training images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (Adam, one-cycle)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--record", help="write a JSON record of the run here")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)

    model, input_size = build_model(args.model)
    train_images, train_labels = load_split(args.data_dir, "train")
    if args.train_limit:
        train_images, train_labels = train_images[: args.train_limit], train_labels[: args.train_limit]
    test_images, test_labels = load_split(args.data_dir, "test")
    x_train = preprocess(train_images, input_size)
    y_train = torch.from_numpy(train_labels.astype(np.int64))
    x_test = preprocess(test_images, input_size)
    y_test = torch.from_numpy(test_labels.astype(np.int64))

    parameters = sum(p.numel() for p in model.parameters())
    print(f"{args.model}: {parameters:,} trainable parameters, {len(x_train):,} training images, "
          f"{args.epochs} epochs, {args.threads} threads", flush=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = (len(x_train) + args.batch_size - 1) // args.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr,
                                                   total_steps=args.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(args.seed)
    epoch_seconds = []
    for epoch in range(args.epochs):
        model.train()
        start = time.time()
        order = torch.randperm(len(x_train), generator=generator)
        total_loss = 0.0
        for step in range(steps_per_epoch):
            index = order[step * args.batch_size : (step + 1) * args.batch_size]
            batch = x_train[index]
            # Horizontal flips: clothes look the same mirrored.
            flip = torch.rand(len(index), generator=generator) < 0.5
            batch[flip] = batch[flip].flip(3)
            loss = F.cross_entropy(model(batch), y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += float(loss)
            if sys.stdout.isatty() and step % 20 == 0:
                print(f"\r  epoch {epoch + 1}: step {step}/{steps_per_epoch} loss {float(loss):.3f}",
                      end="", flush=True)
        epoch_seconds.append(time.time() - start)
        print(f"\r  epoch {epoch + 1}/{args.epochs}: mean loss {total_loss / steps_per_epoch:.4f}, "
              f"{epoch_seconds[-1]:.1f} s", flush=True)

    accuracy = evaluate(model, x_test, y_test)
    print(f"{args.model}: test top-1 {accuracy:.2f} % (PyTorch {torch.__version__})", flush=True)
    export(model, input_size, args.output, args.model, accuracy)
    exported = onnx.load(args.output)
    weights = sum(int(np.prod(t.dims)) for t in exported.graph.initializer if t.data_type == 1)
    print(f"wrote {args.output}: {os.path.getsize(args.output):,} bytes, {weights:,} float weights",
          flush=True)
    if args.record:
        record = {
            "model": args.model,
            "parameters": weights,
            "float32_bytes": 4 * weights,
            "onnx_bytes": os.path.getsize(args.output),
            "input_size": input_size,
            "epochs": args.epochs,
            "train_images": len(x_train),
            "seconds_per_epoch": [round(s, 1) for s in epoch_seconds],
            "total_train_seconds": round(sum(epoch_seconds), 1),
            "pytorch_accuracy": round(accuracy, 2),
            "threads": args.threads,
            "torch_version": torch.__version__,
        }
        with open(args.record + ".tmp", "w") as f:
            json.dump(record, f, indent=2)
            f.write("\n")
        os.replace(args.record + ".tmp", args.record)


if __name__ == "__main__":
    main()
