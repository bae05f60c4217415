"""bitinc: bit-incremental delivery of neural-network models, from Python.

A package is a directory of static files: a low-precision base rung a
device can run at once, refinements up to the exact model, and the
manifest that names them (docs/format.md). This module packs ONNX models,
rebuilds any rung as numpy arrays, verifies packages and fetches them as a
device does.

    >>> import bitinc
    >>> bitinc.pack("model.onnx", "pkg", ladder="4,8,16", per_channel=True)
    >>> base = bitinc.unpack("pkg", rung=4)        # {name: numpy.float32 array}
    >>> top = bitinc.fetch("http://host:8080/pkg/", progress=print)["weights"]

Errors raise bitinc.Error (a RuntimeError) with the library's one-line message
and .code, what kind of failure it is: "invalid_argument", "corrupt_data",
"io", "network", "unsupported", "cancelled", "out_of_memory", "untrusted",
"not_ready", "unavailable" or "internal" (out of memory is MemoryError).
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Union

import numpy

from . import _native

__all__ = ["Error", "Decoder", "pack", "pack_weights", "read_onnx", "write_onnx", "inspect", "unpack", "unpack_onnx", "verify", "fetch",
           "generate_key", "key_id", "__version__"]

Error = _native.Error


def _error(code: str, message: str) -> Error:
    """A bitinc.Error raised in Python, carrying a code as the library's errors do."""
    error = Error(message)
    error.code = code
    return error

__version__ = _native.version

PathLike = Union[str, "os.PathLike[str]"]


def _rung(rung: Union[int, str, None]) -> Optional[int]:
    if rung is None or rung == "exact":
        return None
    return int(rung)


def pack(model: PathLike, output: PathLike, *, ladder: str = "8,16",
         per_channel: bool = False, force: bool = False, threads: int = 0,
         sign_key: Optional[str] = None, release: Optional[int] = None,
         model_id: str = "") -> dict:
    """Packs the ONNX file `model` into the package directory `output`.

    ladder: the rungs' bit depths, e.g. "4,8,16", or "4,8,exact" for a last
    rung that gives back the source weights bit for bit. per_channel: one
    step per output channel. force: replace a package already there.
    sign_key: an Ed25519 private key (PEM text, see generate_key) to sign
    the package with, as release `release` of `model_id` (default: the
    model file's name). Returns a summary: rungs with their files and bytes,
    warnings and notes.
    """
    return _native.pack(os.fspath(model), os.fspath(output), ladder, per_channel, force,
                        threads, sign_key, release, model_id)


def _float_tensors(weights, skip_non_float: bool):
    """(name, float32 array, stored type) for each float tensor of a dict of
    numpy arrays or a PyTorch state_dict; the names of those skipped."""
    items = weights.items() if hasattr(weights, "items") else weights
    tensors, skipped = [], []
    for name, value in items:
        if hasattr(value, "detach"):  # a torch.Tensor: its own dtype names the stored type
            dtype = str(value.dtype).replace("torch.", "")
            floating = value.is_floating_point()
            if floating:
                value = value.detach().cpu().float().numpy()
        else:
            value = numpy.asarray(value)
            dtype = str(value.dtype)
            floating = value.dtype.kind == "f"
        stored = {"float32": "float32", "float": "float32", "float16": "float16",
                  "half": "float16", "bfloat16": "bfloat16", "float64": "float64",
                  "double": "float64"}.get(dtype)
        if not floating or stored is None:
            if skip_non_float:
                skipped.append(str(name))
                continue
            raise _error("invalid_argument", f"weights: '{name}' is {dtype}, not a float tensor "
                         "(pass skip_non_float=True to leave such tensors out)")
        tensors.append((str(name), numpy.ascontiguousarray(value, dtype=numpy.float32), stored))
    return tensors, skipped


def pack_weights(weights, output: PathLike, *, model_name: str = "weights",
                 ladder: str = "8,16", per_channel: bool = False, force: bool = False,
                 threads: int = 0, sign_key: Optional[str] = None,
                 release: Optional[int] = None, model_id: str = "",
                 skip_non_float: bool = False) -> dict:
    """Packs weights without a graph: a dict of numpy arrays or a PyTorch
    state_dict ({name: tensor}). float32, float16, float64 and (from torch)
    bfloat16 tensors travel in their own type; unpack gives them back by name.
    Other tensors (e.g. BatchNorm's num_batches_tracked) are an Error, or
    left out with skip_non_float=True (listed in the summary's "skipped").
    The other arguments are pack's."""
    tensors, skipped = _float_tensors(weights, skip_non_float)
    summary = _native.pack_weights(tensors, os.fspath(output), model_name, ladder, per_channel,
                                   force, threads, sign_key, release, model_id)
    summary["skipped"] = skipped
    return summary


def read_onnx(path: PathLike) -> dict:
    """An ONNX file's float weights ({"weights": {name: array}, "order":
    [names in file order], "metadata": {key: value}})."""
    return _native.read_onnx(os.fspath(path))


def write_onnx(template: PathLike, weights: Dict[str, numpy.ndarray], output: PathLike) -> None:
    """Writes the ONNX model `template` with the weights named in `weights`
    replaced (same element counts) to `output`."""
    _native.write_onnx(os.fspath(template), weights, os.fspath(output))


def inspect(package: PathLike) -> dict:
    """The package's summary (model, ladder, rungs and their bytes, release)."""
    return _native.inspect(os.fspath(package))


def unpack(package: PathLike, rung: Union[int, str, None] = None, *,
           direct: bool = False) -> Dict[str, numpy.ndarray]:
    """The model's weights at `rung` (bits; default and "exact": the ladder's
    last rung) as {name: numpy.float32 array of the tensor's shape}.
    direct: from the direct rung of those bits instead of the ladder."""
    return _native.unpack(os.fspath(package), _rung(rung), direct)


def unpack_onnx(package: PathLike, rung: Union[int, str, None] = None, *,
                direct: bool = False) -> bytes:
    """The whole ONNX model at `rung`, as the bytes of an .onnx file."""
    return _native.unpack_onnx(os.fspath(package), _rung(rung), direct)


def verify(package: PathLike) -> dict:
    """Checks every file's size and SHA-256 and every unit, decodes every
    rung; returns {"ok", "problems", "files", "units", "bytes"}."""
    return _native.verify(os.fspath(package))


def fetch(url: str, *, until: Union[int, str] = "exact", direct: bool = False,
          progress: Optional[Callable[[int, int], None]] = None,
          trust: Optional[str] = None, installed_releases: PathLike = "") -> dict:
    """Downloads a package (an http(s) URL or a directory) as a device does.

    until: "exact" (the ladder's last rung), "accuracy" (the package's
    accuracy point) or a rung's bits. direct: the direct rung alone.
    progress(bytes_done, bytes_total) is called as bytes arrive. trust: a
    public key (PEM text): the package must be signed with it, and a
    release older than one recorded in `installed_releases` is refused.
    Returns {"weights": {name: array}, "bits", "degraded_tensors",
    "bytes_downloaded", "seconds", "signer_key_id"}.
    """
    return _native.fetch(url, str(until), direct, progress, trust,
                         os.fspath(installed_releases))


class Decoder:
    """The push decoder of the device SDK: bring the bytes, take events.

        decoder = bitinc.Decoder()
        while (event := decoder.next_event())["kind"] != "done":
            for file, begin, end in event["wanted"]:   # end 0: the whole file
                data = my_http_get(file, begin, end)
                if file == "manifest.json": decoder.push_manifest(data)
                elif file == "manifest.json.sig": decoder.push_signature(data)
                else: decoder.push(file, begin, data)
            if event["kind"] == "rung_ready": serve(decoder.snapshot())

    Events (dicts with "kind", "wanted" as (file, begin, end) tuples,
    "rung", "bits", "message"): need_input, manifest_ready, topology_ready,
    unit_damaged, rung_ready, accuracy_point_ready, degraded, done. With
    trust (a public key, PEM text) the decoder also wants the signature and
    refuses a package not signed with it, or older than one installed.
    """

    def __init__(self, *, until: Union[int, str] = "exact", direct: bool = False,
                 trust: Optional[str] = None, installed_releases: PathLike = "",
                 source: str = "package"):
        until_bits = 0 if until in ("exact", "accuracy") else int(until)
        self._native = _native.Decoder(direct, until_bits, until == "accuracy", trust,
                                       os.fspath(installed_releases), source)

    def push_manifest(self, data: bytes) -> None:
        self._native.push_manifest(bytes(data))

    def push_signature(self, data: bytes) -> None:
        self._native.push_signature(bytes(data))

    def push(self, file: str, offset: int, data: bytes) -> None:
        """Bytes of a rung file from `offset`, in any chunking and order."""
        self._native.push(file, offset, bytes(data))

    def give_up(self, file: str, begin: int, end: int) -> None:
        """The bytes cannot be had: refinement units in them are left out."""
        self._native.give_up(file, begin, end)

    def next_event(self) -> dict:
        return self._native.next_event()

    def has_model(self) -> bool:
        return self._native.has_model()

    def snapshot(self) -> Dict[str, numpy.ndarray]:
        """The model as it stands, {name: numpy.float32 array}."""
        return self._native.snapshot()


def generate_key() -> tuple:
    """A new Ed25519 key pair as PEM text: (private_key, public_key)."""
    return _native.generate_key()


def key_id(pem: str) -> str:
    """The key id (hex SHA-256 of the raw public key) of a PEM key."""
    return _native.key_id(pem)
