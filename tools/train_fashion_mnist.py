#!/usr/bin/python3
"""Train a classifier on Fashion-MNIST and export it to ONNX for bitinc.

Run with Debian's Python (/usr/bin/python3), which has python3-torch,
python3-torchvision and python3-onnx. Examples:

    tools/train_fashion_mnist.py --model small-cnn --epochs 6 -o models/small-cnn.onnx \
        --record models/small-cnn.json
    tools/train_fashion_mnist.py --model vgg16 --epochs 1 --train-limit 20000 -o models/vgg16.onnx

A new version of a trained model (issue 15, version deltas) starts from the
old export and keeps its initializer names, shapes and graph:

    tools/train_fashion_mnist.py --model small-cnn --init-from models/small-cnn.onnx \
        --freeze-backbone --epochs 1 --lr 1e-3 -o small-cnn-v2.onnx

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
import onnx.numpy_helper
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


def weighted_layers_in_call_order(model, input_size):
    """The Conv2d, BatchNorm2d and Linear modules in the order a forward pass calls them,
    which is the order torch.onnx.export writes their Conv and Gemm nodes."""
    called = []
    hooks = [module.register_forward_hook(lambda module, inputs, output: called.append(module))
             for module in model.modules()
             if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, input_size, input_size))
    for hook in hooks:
        hook.remove()
    return called


def load_onnx_export(model, input_size, path, name):
    """Set `model`'s weights from an ONNX export of the same architecture.

    The export folds each BatchNorm into the conv before it (export() runs in
    eval mode with constant folding), so the ONNX holds one weight and one bias
    per conv, under generated names (onnx::Conv_54). The k-th Conv or Gemm node
    is the k-th conv or linear layer the forward pass calls. Each conv takes the
    folded weight; its BatchNorm becomes the identity (mean 0, variance 1,
    scale sqrt(1 + eps), so scale / sqrt(var + eps) is exactly 1) that adds the
    folded bias. Exporting the model again folds back to the very same bits, so
    a layer that training leaves alone is byte-identical in the new export.
    """
    proto = onnx.load(path)
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    if metadata.get("bitinc.model", name) != name:
        raise ValueError(f"{path} is a {metadata['bitinc.model']}, not a {name}")
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    nodes = [node for node in proto.graph.node if node.op_type in ("Conv", "Gemm")]
    called = weighted_layers_in_call_order(model, input_size)
    layers = [module for module in called if not isinstance(module, nn.BatchNorm2d)]
    if len(nodes) != len(layers):
        raise ValueError(f"{path}: {len(nodes)} Conv/Gemm nodes, the {name} has {len(layers)} layers")
    following_norm = {id(module): called[i + 1] for i, module in enumerate(called[:-1])
                      if isinstance(module, nn.Conv2d) and isinstance(called[i + 1], nn.BatchNorm2d)}
    used = set()

    def take(tensor_name, shape):
        value = initializers[tensor_name]
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"{path}: {tensor_name} is {list(value.shape)}, the layer wants {list(shape)}")
        used.add(tensor_name)
        return torch.from_numpy(value.astype(np.float32).copy())

    with torch.no_grad():
        for node, layer in zip(nodes, layers):
            if (node.op_type == "Conv") != isinstance(layer, nn.Conv2d):
                raise ValueError(f"{path}: node {node.name} ({node.op_type}) meets {type(layer).__name__}")
            layer.weight.copy_(take(node.input[1], layer.weight.shape))
            bias = take(node.input[2], layer.weight.shape[:1]) if len(node.input) > 2 else None
            norm = following_norm.get(id(layer))
            if norm is None:
                if (bias is None) != (layer.bias is None):
                    raise ValueError(f"{path}: node {node.name} and its layer disagree on a bias")
                if bias is not None:
                    layer.bias.copy_(bias)
                continue
            if layer.bias is not None:
                layer.bias.zero_()
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0)
            norm.weight.copy_(torch.sqrt(norm.running_var + norm.eps))
            norm.bias.copy_(bias if bias is not None else torch.zeros_like(norm.bias))
    unused = sorted(set(initializers) - used)
    if unused:
        raise ValueError(f"{path}: initializers no layer took: {', '.join(unused[:5])}")


def calibrate_batch_norms(model, images, batch_size=500):
    """Give every BatchNorm the statistics of its input on `images` without
    changing what the model computes in eval mode.

    After load_onnx_export a BatchNorm holds mean 0 and variance 1, so in train
    mode (batch statistics) it would normalise activations the v1 network never
    normalised, and training would start far from v1. With the measured mean m
    and variance v, scale sqrt(v + eps) and shift bias + m, eval mode computes
    the same function and train mode starts where v1 is.
    """
    norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    sums = {id(norm): 0.0 for norm in norms}
    squares = {id(norm): 0.0 for norm in norms}
    count = {id(norm): 0 for norm in norms}

    def measure(norm, inputs, output):
        x = inputs[0].double()
        sums[id(norm)] = sums[id(norm)] + x.sum((0, 2, 3))
        squares[id(norm)] = squares[id(norm)] + (x * x).sum((0, 2, 3))
        count[id(norm)] += x.numel() // x.shape[1]

    hooks = [norm.register_forward_hook(measure) for norm in norms]
    model.eval()
    with torch.no_grad():
        for first in range(0, len(images), batch_size):
            model(images[first : first + batch_size])
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        for norm in norms:
            mean = sums[id(norm)] / count[id(norm)]
            variance = (squares[id(norm)] / count[id(norm)] - mean * mean).clamp(min=0)
            norm.running_mean.copy_(mean.float())
            norm.running_var.copy_(variance.float())
            norm.weight.copy_(torch.sqrt(norm.running_var + norm.eps))
            norm.bias.add_(norm.running_mean)


def classifier_head(model):
    """The final classifier layer(s): what --freeze-backbone leaves trainable."""
    for attribute in ("classifier", "fc"):
        if hasattr(model, attribute):
            return getattr(model, attribute)
    raise ValueError(f"{type(model).__name__} has no classifier or fc")


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
    parser.add_argument("--init-from", metavar="V1.onnx",
                        help="start from the weights of an ONNX export of the same model")
    parser.add_argument("--freeze-backbone", action="store_true",
                        help="train only the final classifier layer(s); the rest, batch-norm "
                             "statistics included, stays as --init-from has it")
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--record", help="write a JSON record of the run here")
    args = parser.parse_args()
    if args.freeze_backbone and not args.init_from:
        parser.error("--freeze-backbone needs --init-from (a random backbone is not worth keeping)")

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

    initial_accuracy = None
    if args.init_from:
        load_onnx_export(model, input_size, args.init_from, args.model)
        initial_accuracy = evaluate(model, x_test, y_test)
        print(f"{args.model}: {args.init_from} loaded, test top-1 {initial_accuracy:.2f} %", flush=True)
        if not args.freeze_backbone:
            calibrate_batch_norms(model, x_train[:5000])
    head = classifier_head(model)
    if args.freeze_backbone:
        for parameter in model.parameters():
            parameter.requires_grad = False
        for parameter in head.parameters():
            parameter.requires_grad = True
    trainable = [p for p in model.parameters() if p.requires_grad]

    parameters = sum(p.numel() for p in trainable)
    print(f"{args.model}: {parameters:,} trainable parameters, {len(x_train):,} training images, "
          f"{args.epochs} epochs, lr {args.lr:g}, seed {args.seed}, {args.threads} threads", flush=True)
    optimizer = torch.optim.Adam(trainable, lr=args.lr)
    steps_per_epoch = (len(x_train) + args.batch_size - 1) // args.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr,
                                                   total_steps=args.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(args.seed)
    epoch_seconds = []
    for epoch in range(args.epochs):
        model.train()
        if args.freeze_backbone:
            model.eval()  # batch norm keeps v1's running statistics
            head.train()
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
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": args.seed,
            "init_from": args.init_from,
            "freeze_backbone": args.freeze_backbone,
            "trainable_parameters": parameters,
            "initial_accuracy": None if initial_accuracy is None else round(initial_accuracy, 2),
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
