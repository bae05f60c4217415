"""The study framework's Scenario (3GPP TR 26.927, §2.1.2.4) for bitinc's
Fashion-MNIST classifiers, in PyTorch.

A bundled model is an ONNX file exported with batch norm folded into the
convolutions; the scenario builds the same network in PyTorch with each
convolution and its batch norm fused into one convolution with a bias, and
loads the ONNX weights into it: tensors the export kept by name ("fc.weight")
by name, the folded ones ("onnx::Conv_54") in graph order onto the fused
convolutions in module order (shapes are checked). small-cnn needs PyTorch
only; mobilenetv2, resnet18 and vgg16 also torchvision (Debian's
python3-torch and python3-torchvision: scripts/install-deps.sh --training).
The preprocessing comes from the model's metadata (bitinc.input.*).
"""

from __future__ import annotations

import gzip
import os
import re
import time
from typing import Optional, Tuple

import numpy

from . import _error, read_onnx

DATA_DIR = "/usr/share/datasets/fashion-mnist"
CLASSES = 10
IMAGE_SIZE = 28
# The training split's last images serve as the validation partition.
VALID_IMAGES = 10000


def _read_idx(path: str) -> numpy.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as stream:
        data = stream.read()
    if data[:2] != b"\0\0" or data[2] != 0x08:
        raise _error("corrupt_data", f"{path}: not an unsigned-byte IDX file")
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    return numpy.frombuffer(data, dtype=numpy.uint8, offset=4 + 4 * rank).reshape(dims)


def _idx_file(data_dir: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    raise _error("io", f"{data_dir}: no {stem}(.gz) (install dataset-fashion-mnist)")


def _small_cnn():
    import torch.nn as nn

    class SmallCnn(nn.Module):
        def __init__(self):
            super().__init__()

            def block(cin, cout):
                return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                        nn.ReLU()]

            self.features = nn.Sequential(
                *block(1, 32), *block(32, 32), nn.MaxPool2d(2),
                *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
                *block(64, 128), nn.AdaptiveAvgPool2d(1))
            self.classifier = nn.Linear(128, CLASSES)

        def forward(self, x):
            import torch
            return self.classifier(torch.flatten(self.features(x), 1))

    return SmallCnn()


def _architecture(name: str):
    """The network of tools/train_fashion_mnist.py, before fusion."""
    if name == "small-cnn":
        return _small_cnn()
    import torch.nn as nn
    import torchvision

    def grey(conv):
        return nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         bias=conv.bias is not None)

    if name == "resnet18":
        model = torchvision.models.resnet18(num_classes=CLASSES)
        model.conv1 = grey(model.conv1)
        return model
    if name == "mobilenetv2":
        model = torchvision.models.mobilenet_v2(num_classes=CLASSES)
        model.features[0][0] = grey(model.features[0][0])
        return model
    if name == "vgg16":
        class Vgg16(nn.Module):
            def __init__(self):
                super().__init__()
                self.features = torchvision.models.vgg16_bn().features
                self.features[0] = grey(self.features[0])
                self.classifier = nn.Sequential(nn.Linear(512, 256), nn.ReLU(),
                                                nn.Linear(256, CLASSES))

            def forward(self, x):
                import torch
                return self.classifier(torch.flatten(self.features(x), 1))

        return Vgg16()
    raise _error("invalid_argument",
                 f"fashion_mnist: unknown model '{name}' (small-cnn, mobilenetv2, resnet18, vgg16)")


def _fuse_batch_norms(model) -> list:
    """Replaces each BatchNorm2d that follows a Conv2d (in module order) by
    Identity and gives the convolution a bias, as the ONNX export folded
    them; returns the fused convolutions in order."""
    import torch
    import torch.nn as nn

    named = list(model.named_modules())
    fused = []
    for (name, module), (next_name, following) in zip(named, named[1:]):
        if isinstance(module, nn.Conv2d) and isinstance(following, nn.BatchNorm2d):
            if module.bias is None:
                module.bias = nn.Parameter(torch.zeros(module.out_channels))
            parent_name, _, attribute = next_name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attribute, nn.Identity())
            fused.append(module)
    return fused


class Scenario:
    """Fashion-MNIST classification with a bitinc model (opts: model_name,
    data_dir, model_path (default: the bundled models/NAME.onnx), batch_size,
    disable_progress_bar)."""

    def __init__(self, opts):
        self.metric_name = "top1_accuracy_percent"
        self._name = opts.model_name
        self._data_dir = getattr(opts, "data_dir", None) or DATA_DIR
        source = os.path.join(os.path.dirname(__file__), "..", "..", "..", "models")
        default = os.path.join(source, self._name + ".onnx")
        self._model_path = getattr(opts, "model_path", None) or default
        self._batch_size = int(getattr(opts, "batch_size", None) or 500)
        self._onnx = None

    def _anchor(self) -> dict:
        if self._onnx is None:
            if not os.path.exists(self._model_path):
                raise _error("io", f"{self._model_path}: no such model (give --model_path)")
            self._onnx = read_onnx(self._model_path)
        return self._onnx

    def download_data_and_models(self) -> None:
        """Nothing to download: the dataset is Debian's, the models bundled."""
        _idx_file(self._data_dir, "t10k-images-idx3-ubyte")

    def _onnx_names(self, model, fused) -> dict:
        """{ONNX weight name: the network's tensor} for a network built by
        get_model: tensors the export kept by name, and the folded ones in
        graph order onto the fused convolutions' weights and biases."""
        onnx = self._anchor()
        state = model.state_dict()
        folded = sorted((name for name in onnx["order"] if name not in state),
                        key=lambda name: int(re.sub(r"\D", "", name) or 0))
        targets = []
        for conv in fused:
            targets += [conv.weight, conv.bias]
        if len(folded) != len(targets):
            raise _error("unsupported", f"{self._model_path}: {len(folded)} folded tensors for "
                         f"{len(targets)} fused convolution tensors of {self._name}")
        names = {name: state[name] for name in onnx["order"] if name in state}
        names.update(zip(folded, targets))
        for name, tensor in names.items():
            shape = onnx["weights"][name].shape
            if tuple(tensor.shape) != shape:
                raise _error("unsupported", f"{self._model_path}: '{name}' has shape {shape}, "
                             f"the network {tuple(tensor.shape)}")
        return names

    def get_model(self, pre_trained: bool):
        """The network (batch norms fused), with the ONNX model's weights when
        pre_trained, else as initialized."""
        model = _architecture(self._name)
        model._bitinc_fused = _fuse_batch_norms(model)
        model.eval()
        if pre_trained:
            self.load_onnx_weights(model, self._anchor()["weights"])
        return model

    def load_onnx_weights(self, model, weights: dict) -> None:
        """Puts weights named as in the ONNX model ({name: array}) into a
        network from get_model."""
        import torch

        with torch.no_grad():
            for name, tensor in self._onnx_names(model, model._bitinc_fused).items():
                if name in weights:
                    tensor.copy_(torch.from_numpy(weights[name]))

    def export_onnx(self, model, path: str) -> None:
        """Writes the ONNX model with the network's current weights: the same
        graph as the bundled file, so bitinc packs it as it packs that file."""
        from . import write_onnx

        weights = {name: tensor.detach().cpu().float().numpy()
                   for name, tensor in self._onnx_names(model, model._bitinc_fused).items()}
        write_onnx(self._model_path, weights, path)

    def _images(self, partition: str) -> Tuple[numpy.ndarray, numpy.ndarray]:
        if partition == "test":
            images = _read_idx(_idx_file(self._data_dir, "t10k-images-idx3-ubyte"))
            labels = _read_idx(_idx_file(self._data_dir, "t10k-labels-idx1-ubyte"))
        elif partition == "valid":
            images = _read_idx(_idx_file(self._data_dir, "train-images-idx3-ubyte"))
            labels = _read_idx(_idx_file(self._data_dir, "train-labels-idx1-ubyte"))
            images, labels = images[-VALID_IMAGES:], labels[-VALID_IMAGES:]
        else:
            raise _error("invalid_argument",
                         f"fashion_mnist: partition '{partition}' is not test or valid")
        return images, labels

    def get_perf(self, model, partition: str, enforce_higher_is_better: bool = False,
                 limit: Optional[int] = None):
        """(top-1 accuracy in percent, seconds) on the partition's images
        (the first `limit` of them)."""
        import torch

        metadata = self._anchor()["metadata"]
        size = int(metadata.get("bitinc.input.shape", "1,28,28").split(",")[-1])
        scale = float(metadata.get("bitinc.input.scale", 1 / 255))
        mean = float(metadata.get("bitinc.input.mean", 0.0))
        std = float(metadata.get("bitinc.input.std", 1.0))
        start = time.perf_counter()
        images, labels = self._images(partition)
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        pad = (size - IMAGE_SIZE) // 2
        correct = 0
        model.eval()
        with torch.no_grad():
            for first in range(0, len(images), self._batch_size):
                batch = images[first:first + self._batch_size]
                canvas = numpy.zeros((len(batch), 1, size, size), dtype=numpy.float32)
                canvas[:, 0, pad:pad + IMAGE_SIZE, pad:pad + IMAGE_SIZE] = batch
                inputs = torch.from_numpy((canvas * numpy.float32(scale) - numpy.float32(mean))
                                          / numpy.float32(std))
                predicted = model(inputs).argmax(1).numpy()
                correct += int((predicted == labels[first:first + len(batch)]).sum())
        return 100.0 * correct / len(images), time.perf_counter() - start
