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
    >>> data = bitinc.pack_bytes("model.onnx", ladder="4,8,16")  # one ZIP archive
    >>> point = bitinc.unpack(data, rung="accuracy")

See docs/python.md for the framework Coder and the evaluation runner.

Errors raise bitinc.Error (a RuntimeError) with the library's one-line message
and .code, what kind of failure it is: "invalid_argument", "corrupt_data",
"io", "network", "unsupported", "cancelled", "out_of_memory", "untrusted",
"not_ready", "unavailable" or "internal" (out of memory is MemoryError).
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import zipfile
from typing import Callable, Dict, Iterable, Optional, Union

import numpy

from . import _native

__all__ = ["Error", "Decoder", "fetch_from", "pack", "pack_weights", "pack_bytes", "to_bytes", "from_bytes",
           "read_onnx", "write_onnx", "inspect", "unpack", "unpack_levels", "unpack_onnx", "verify", "fetch",
           "generate_key", "key_id", "__version__"]

Error = _native.Error


def _error(code: str, message: str) -> Error:
    """A bitinc.Error raised in Python, carrying a code as the library's errors do."""
    error = Error(message)
    error.code = code
    return error

__version__ = _native.version

PathLike = Union[str, "os.PathLike[str]"]
# A package: its directory, or its files in one archive (to_bytes).
PackageLike = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]

# Package files are plain names in one directory (docs/format.md).
_PACKAGE_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


def _rung(rung: Union[int, str, None]) -> Optional[int]:
    if rung is None or rung == "exact":
        return None
    return int(rung)


def _write_archive(package: PathLike, names: Iterable[str], stream,
                   cut: Optional[Dict[str, int]] = None) -> None:
    """The named files of the package directory as a ZIP archive on
    `stream`, stored rather than deflated: rung files are already coded.
    cut: {name: bytes} for files that go only up to that many bytes."""
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in names:
            path = os.path.join(os.fspath(package), name)
            if cut and name in cut:
                with open(path, "rb") as source:
                    archive.writestr(name, source.read(cut[name]))
            else:
                archive.write(path, arcname=name)


def _extract_archive(source, directory: PathLike) -> None:
    """Writes the files of a package archive (a path, a file object or
    bytes) into `directory`. The archive may come from anywhere, so only
    stored entries with plain package file names are accepted: no paths
    that leave the directory, nothing that inflates beyond its bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    try:
        with zipfile.ZipFile(source) as archive:
            for entry in archive.infolist():
                if not _PACKAGE_FILE_NAME.fullmatch(entry.filename):
                    raise _error("corrupt_data",
                                 f"package archive: '{entry.filename}' is not a package file name")
                if entry.compress_type != zipfile.ZIP_STORED:
                    raise _error("corrupt_data",
                                 f"package archive: '{entry.filename}' is compressed; "
                                 "package archives store their files")
            for entry in archive.infolist():
                with archive.open(entry) as inside, \
                        open(os.path.join(os.fspath(directory), entry.filename), "wb") as out:
                    while chunk := inside.read(1 << 20):
                        out.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as problem:
        raise _error("corrupt_data",
                     f"package archive: not a readable ZIP archive ({problem})") from None


def _package_files(package: PathLike) -> list:
    """The files of the package in `package` that a device may fetch."""
    summary = _native.inspect(os.fspath(package))  # parses and checks the manifest
    names = ["manifest.json", summary["topology_file"]]
    names += [rung["file"] for rung in summary["rungs"]]
    if os.path.exists(os.path.join(os.fspath(package), "manifest.json.sig")):
        names.append("manifest.json.sig")
    return list(dict.fromkeys(names))


def to_bytes(package: PathLike) -> bytes:
    """The package directory as one ZIP archive (stored; any unzip tool
    opens it), for storage or transport as a single blob. unpack, verify,
    inspect and from_bytes take it back."""
    stream = io.BytesIO()
    _write_archive(package, _package_files(package), stream)
    return stream.getvalue()


def from_bytes(data: bytes, directory: PathLike) -> None:
    """Writes a package archive (to_bytes) into `directory` as a package
    directory (created if missing) that serve and fetch can use."""
    os.makedirs(os.fspath(directory), exist_ok=True)
    _extract_archive(data, directory)


class _PackageDirectory:
    """A package as a directory: the given one, or a temporary copy of an
    archive given as bytes (removed on exit)."""

    def __init__(self, package: PackageLike):
        self._package = package
        self._scratch = None

    def __enter__(self) -> str:
        if isinstance(self._package, (bytes, bytearray, memoryview)):
            self._scratch = tempfile.TemporaryDirectory(prefix="bitinc-package-")
            try:
                _extract_archive(self._package, self._scratch.name)
            except BaseException:
                self._scratch.cleanup()
                raise
            return self._scratch.name
        return os.fspath(self._package)

    def __exit__(self, *exception) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()


def pack(model: PathLike, output: PathLike, *, ladder: Optional[str] = None,
         per_channel: bool = False, force: bool = False, threads: int = 0,
         sign_key: Optional[str] = None, release: Optional[int] = None,
         model_id: str = "", calibrate: bool = False, calibration_images: int = 1000,
         sensitivity_images: int = 0, point_images: int = 5000, tolerance: float = 0.1,
         budget: Optional[str] = None,
         data_dir: str = "/usr/share/datasets/fashion-mnist",
         previous: Optional[PathLike] = None) -> dict:
    """Packs the ONNX file `model` into the package directory `output`.

    ladder: the rungs' bit depths, e.g. "4,8,16", or "4,8,exact" for a last
    rung that gives back the source weights bit for bit (default "8,16", or
    the `previous` package's ladder). previous: the package directory of an
    earlier version of this model: the new package keeps its steps where
    they fit and adds deltas from its rungs (unpack(..., previous=...)). per_channel: one
    step per output channel. force: replace a package already there.
    sign_key: an Ed25519 private key (PEM text, see generate_key) to sign
    the package with, as release `release` of `model_id` (default: the
    model file's name).

    calibrate: order refinements by accuracy per byte and name the accuracy
    point (the prefix within `tolerance` top-1 points of the top rung),
    measured on the first `calibration_images` Fashion-MNIST training
    images in `data_dir` (never the test split); tensors are ranked on the
    first `sensitivity_images` of them (0: all) and the point searched on
    the last `point_images` of the split, held apart from them (0: on the
    calibration images). budget: the base rung's
    size ("800kB", "0.2x" of the direct top rung), met with a bit depth per
    tensor (mixed precision). Both run the model, so it must be a
    Fashion-MNIST classifier. Returns a summary: rungs with their files and
    bytes, warnings and notes.
    """
    settings = {"images": calibration_images, "sensitivity_images": sensitivity_images,
                "point_images": point_images,
                "tolerance": tolerance, "data_dir": os.fspath(data_dir)}
    return _native.pack(os.fspath(model), os.fspath(output), ladder, per_channel, force,
                        threads, sign_key, release, model_id, settings, calibrate, budget,
                        None if previous is None else os.fspath(previous))


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


def pack_bytes(source, **options) -> bytes:
    """Packs an ONNX file (a path) or weights (a dict of numpy arrays or a
    PyTorch state_dict, as pack_weights) and returns the package as one
    archive (to_bytes) instead of a directory. `options` are pack's or
    pack_weights'."""
    with tempfile.TemporaryDirectory(prefix="bitinc-pack-") as scratch:
        package = os.path.join(scratch, "package")
        if isinstance(source, (str, os.PathLike)):
            pack(source, package, **options)
        else:
            pack_weights(source, package, **options)
        return to_bytes(package)


def read_onnx(path: PathLike) -> dict:
    """An ONNX file's float weights ({"weights": {name: array}, "order":
    [names in file order], "metadata": {key: value}})."""
    return _native.read_onnx(os.fspath(path))


def write_onnx(template: PathLike, weights: Dict[str, numpy.ndarray], output: PathLike) -> None:
    """Writes the ONNX model `template` with the weights named in `weights`
    replaced (same element counts) to `output`."""
    _native.write_onnx(os.fspath(template), weights, os.fspath(output))


def inspect(package: PackageLike) -> dict:
    """The package's summary (model, ladder, rungs and their bytes, release)."""
    with _PackageDirectory(package) as directory:
        return _native.inspect(directory)


def unpack(package: PackageLike, rung: Union[int, str, None] = None, *,
           direct: bool = False,
           previous: Optional[PathLike] = None) -> Dict[str, numpy.ndarray]:
    """The model's weights at `rung` as {name: numpy.float32 array of the
    tensor's shape}. rung: bits; None or "exact": the ladder's last rung;
    "accuracy": the package's accuracy point (pack with calibration).
    direct: from the direct rung of those bits instead of the ladder.
    previous: an ONNX file of an earlier version at one of its rungs (as
    unpack_onnx wrote it): rebuilt from it with the package's delta (None:
    the ladder's top quantized rung).
    package: a directory or an archive's bytes (to_bytes)."""
    with _PackageDirectory(package) as directory:
        if previous is not None:
            if direct or rung in ("accuracy", "exact"):
                raise Error("unpack: previous= rebuilds a quantized rung of the ladder")
            return _native.unpack_from_previous(directory, os.fspath(previous), rung)
        if rung == "accuracy":
            if direct:
                raise Error("unpack: the accuracy point is on the ladder, not a direct rung")
            return _decode_directory(directory, "accuracy")
        return _native.unpack(directory, _rung(rung), direct)


def unpack_levels(package: PackageLike, rung: int) -> Dict[str, dict]:
    """The quantized tensors at the ladder's rung of `rung` bits as integer
    levels, for engines that run integer weights: {name: {"bits", "steps"
    (float32, one per output channel or one), "indices" (int32, the
    tensor's shape)}}; value = step of the channel x index. Tensors that
    travel exactly are left out."""
    with _PackageDirectory(package) as directory:
        return _native.unpack_levels(directory, int(rung))


def unpack_onnx(package: PackageLike, rung: Union[int, str, None] = None, *,
                direct: bool = False) -> bytes:
    """The whole ONNX model at `rung` (bits, None or "exact"), as the bytes
    of an .onnx file."""
    with _PackageDirectory(package) as directory:
        return _native.unpack_onnx(directory, _rung(rung), direct)


def verify(package: PackageLike) -> dict:
    """Checks every file's size and SHA-256 and every unit, decodes every
    rung; returns {"ok", "problems", "files", "units", "bytes"}."""
    with _PackageDirectory(package) as directory:
        return _native.verify(directory)


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


def fetch_from(read: Callable[[str, int, int], bytes], *, until: Union[int, str] = "exact",
               direct: bool = False, trust: Optional[str] = None,
               installed_releases: PathLike = "", attempts: int = 3,
               on_event: Optional[Callable[[dict, "Decoder"], None]] = None,
               source: str = "package") -> dict:
    """Fetches a package through your own transport: the byte source of the
    device SDK for Python.

    read(file, begin, end) returns bytes [begin, end) of a package file
    (end 0: the whole file), e.g. with your HTTP client and a Range header;
    it may return fewer bytes (the rest is asked for again) or raise
    OSError when they cannot be had. A unit that arrives damaged is read
    again up to `attempts` times; a refinement that cannot be had is left
    out (its tensors stay a rung below), a base rung that cannot be had
    raises bitinc.Error. on_event(event, decoder) sees every event but
    need_input, e.g. to serve decoder.snapshot() at each rung_ready.
    Returns {"weights", "events" (the kinds, in order), "degraded" (the
    messages of units given up)}.
    """
    decoder = Decoder(until=until, direct=direct, trust=trust,
                      installed_releases=installed_releases, source=source)
    kinds, degraded, damage = [], [], {}

    def give_up(file: str, begin: int, end: int, why: str) -> None:
        if file in ("manifest.json", "manifest.json.sig"):
            raise _error("unavailable", f"{source}/{file}: {why}")
        decoder.give_up(file, begin, end)

    while (event := decoder.next_event())["kind"] != "done":
        kind = event["kind"]
        if kind != "need_input":
            kinds.append(kind)
            if kind == "unit_damaged":
                file, begin, end = event["wanted"][0]
                damage[(file, begin)] = damage.get((file, begin), 0) + 1
                if damage[(file, begin)] > attempts:
                    give_up(file, begin, end, event["message"])
            elif kind == "degraded":
                degraded.append(event["message"])
            if on_event is not None:
                on_event(event, decoder)
            continue
        # One range at a time, in the decoder's order; the next event says
        # what is still wanted.
        file, begin, end = event["wanted"][0]
        try:
            data = bytes(read(file, begin, end))
        except OSError as error:
            give_up(file, begin, end, str(error))
            continue
        if file == "manifest.json":
            decoder.push_manifest(data)
        elif file == "manifest.json.sig":
            decoder.push_signature(data)
        elif not data:
            give_up(file, begin, end, "no bytes came")
        else:
            decoder.push(file, begin, data[:end - begin] if end else data)
    kinds.append("done")
    return {"weights": decoder.snapshot(), "events": kinds, "degraded": degraded}


def _decode_directory(directory: str, until: Union[int, str]) -> Dict[str, numpy.ndarray]:
    """The model at `until` from the package files in `directory`, through
    the push decoder: a rung file may stop after the last unit wanted (an
    update cut at the accuracy point), and later rungs may be missing."""
    def read(file: str, begin: int, end: int) -> bytes:
        with open(os.path.join(directory, file), "rb") as stream:
            stream.seek(begin)
            return stream.read(end - begin if end else -1)
    return fetch_from(read, until=until, source=directory)["weights"]


def generate_key() -> tuple:
    """A new Ed25519 key pair as PEM text: (private_key, public_key)."""
    return _native.generate_key()


def key_id(pem: str) -> str:
    """The key id (hex SHA-256 of the raw public key) of a PEM key."""
    return _native.key_id(pem)
