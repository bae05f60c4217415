"""A Coder for the study's evaluation framework (3GPP TR 26.927, §2.1.2.5).

The framework calls Coder(opts), coder.encode(model) and
coder.decode(rec_model), with the bitstream at opts.file_names["bit"]. A
bitinc package is a directory, so the bitstream is a ZIP archive (stored,
not compressed: the rung files are already coded) of the package files one
transmission needs; any unzip tool opens it.

The configuration (opts.enc_cfg_file_name, a JSON file, or the keyword
`config` of Coder) chooses:

    {"ladder": "8,16",          rungs, as `bitinc pack --ladder`
     "per_channel": false,
     "transmission": "high",    which files go into the bitstream:
                                  "low"    the manifest and the base rung
                                           (the low-precision model),
                                  "update" the refinement rungs (the update;
                                           decode needs the low bitstream:
                                           "low_bitstream"); with rung
                                           "accuracy", only up to the
                                           accuracy point,
                                  "high"   the manifest and the direct top rung
                                           (the high-precision model),
                                  "all"    every file
     "rung": "top",             what decode gives: "base", "top" (the
                                ladder's last rung), "accuracy" (the
                                package's accuracy point, with "calibrate")
                                or bits
     "calibrate": false,        order refinements by value and name the
                                accuracy point (the scenario's model must
                                be an ONNX Fashion-MNIST classifier)
     "calibration_images": 1000, training images calibration measures on,
     "sensitivity_images": 100,  the first of them that rank tensors,
     "point_images": 5000,       and the last ones the point is searched on
     "low_bitstream": null}     with "update": the low bitstream's file
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Optional

from . import inspect, pack, pack_weights, unpack, Error, _extract_archive, _write_archive

__all__ = ["Coder"]

_DEFAULTS = {"ladder": "8,16", "per_channel": False, "transmission": "high", "rung": "top",
             "calibrate": False, "calibration_images": 1000, "sensitivity_images": 100,
             "point_images": 5000,
             "low_bitstream": None}


def _config(opts, config: Optional[dict]) -> dict:
    settings = dict(_DEFAULTS)
    path = getattr(opts, "enc_cfg_file_name", None)
    if path:
        with open(path, encoding="utf-8") as stream:
            settings.update(json.load(stream))
    if config:
        settings.update(config)
    unknown = set(settings) - set(_DEFAULTS)
    if unknown:
        raise Error(f"bitinc coder: unknown settings {sorted(unknown)}")
    if settings["transmission"] not in ("low", "update", "high", "all"):
        raise Error(f"bitinc coder: transmission '{settings['transmission']}' is not "
                    "low, update, high or all")
    return settings


def _files_of(package: str, transmission: str, rung) -> tuple:
    """The files the transmission sends, and {name: bytes} for those it
    sends only in part: the update to the accuracy point stops in the
    point's rung file after the point's last unit."""
    summary = inspect(package)
    rungs = summary["rungs"]
    cut = {}
    if transmission == "low":
        chosen = [rungs[0]["file"]]
    elif transmission == "update" and rung == "accuracy":
        point = summary.get("accuracy_point")
        if point is None:
            raise Error("bitinc coder: the package has no accuracy point (set calibrate)")
        chosen = [entry["file"] for entry in rungs[1:point["rung"] + 1]]
        cut[chosen[-1]] = point["bytes"]  # the point rung's file up to its last unit
    elif transmission == "update":
        chosen = [entry["file"] for entry in rungs if entry["kind"] in ("refinement", "exact")]
    elif transmission == "high":
        chosen = [rungs[-1]["file"]]  # the direct top rung comes last
    else:
        chosen = [entry["file"] for entry in rungs]
    names = ["manifest.json"] + chosen
    if transmission != "update" and os.path.exists(os.path.join(package, "manifest.json.sig")):
        names.append("manifest.json.sig")
    return names, cut


def _restore_topology(directory: str, manifest: dict) -> None:
    """Base and direct rung files begin with a copy of the topology (the
    package's topology.onnx, which the bitstream leaves out): write it back
    from the first such file present (unpack checks its SHA-256)."""
    topology = manifest["topology"]
    for rung in manifest["rungs"]:
        path = os.path.join(directory, rung["file"])
        if rung["kind"] in ("base", "direct") and os.path.exists(path):
            with open(path, "rb") as stream:
                head = stream.read(topology["bytes"])
            with open(os.path.join(directory, topology["file"]), "wb") as stream:
                stream.write(head)
            return
    raise Error("bitinc coder: the bitstream holds no base or direct rung")


class Coder:
    """The framework's Coder interface over bitinc packages."""

    def __init__(self, opts, config: Optional[dict] = None):
        self._opts = opts
        self._settings = _config(opts, config)

    def encode(self, model) -> None:
        """Packs model.state_dict() and writes the configured transmission's
        files to opts.file_names["bit"]."""
        with tempfile.TemporaryDirectory(prefix="bitinc-coder-") as scratch:
            package = os.path.join(scratch, "package")
            ladder = self._settings["ladder"]
            per_channel = bool(self._settings["per_channel"])
            scenario = getattr(self._opts, "scenario", None)
            if hasattr(scenario, "export_onnx"):
                # The scenario's own ONNX graph: the package is the one
                # `bitinc pack` makes of that model.
                onnx_path = os.path.join(scratch, "model.onnx")
                scenario.export_onnx(model, onnx_path)
                pack(onnx_path, package, ladder=ladder, per_channel=per_channel,
                     calibrate=bool(self._settings["calibrate"]),
                     calibration_images=int(self._settings["calibration_images"]),
                     sensitivity_images=int(self._settings["sensitivity_images"]),
                     point_images=int(self._settings["point_images"]))
            elif self._settings["calibrate"]:
                raise Error("bitinc coder: calibrate needs a scenario that exports its model "
                            "to ONNX (export_onnx)")
            else:
                pack_weights(model.state_dict(), package, ladder=ladder,
                             per_channel=per_channel, skip_non_float=True)
            bitstream = self._opts.file_names["bit"]
            partial = bitstream + ".part"
            names, cut = _files_of(package, self._settings["transmission"],
                                   self._settings["rung"])
            with open(partial, "wb") as stream:
                _write_archive(package, names, stream, cut)
            os.replace(partial, bitstream)  # never a half-written bitstream

    def decode(self, rec_model) -> None:
        """Rebuilds the configured rung from opts.file_names["bit"] (and the
        low bitstream for an update) into rec_model's state_dict."""
        import torch  # the framework's models are PyTorch models

        with tempfile.TemporaryDirectory(prefix="bitinc-coder-") as scratch:
            archives = [self._opts.file_names["bit"]]
            if self._settings["transmission"] == "update":
                if not self._settings["low_bitstream"]:
                    raise Error("bitinc coder: an update decodes on top of the low bitstream: "
                                "set low_bitstream")
                archives.insert(0, self._settings["low_bitstream"])
            for path in archives:
                _extract_archive(path, scratch)
            with open(os.path.join(scratch, "manifest.json"), encoding="utf-8") as stream:
                manifest = json.load(stream)
            ladder_bits = manifest["ladder"]["bits"]
            _restore_topology(scratch, manifest)
            rung = self._settings["rung"]
            direct = self._settings["transmission"] == "high"
            if self._settings["transmission"] == "low" or rung == "base":
                rung = ladder_bits[0]
            elif direct:
                rung = ladder_bits[-1]  # the direct rung is the ladder's top
            if rung == "accuracy":
                weights = unpack(scratch, "accuracy")
            else:
                weights = unpack(scratch, None if rung == "top" else int(rung), direct=direct)
        scenario = getattr(self._opts, "scenario", None)
        if hasattr(scenario, "load_onnx_weights"):
            scenario.load_onnx_weights(rec_model, weights)
            self._save_decoded(rec_model, torch)
            return
        state = rec_model.state_dict()
        restored = {}
        for name, values in weights.items():
            if name in state:
                restored[name] = torch.from_numpy(values).to(state[name].dtype)
        rec_model.load_state_dict(restored, strict=False)
        self._save_decoded(rec_model, torch)

    def _save_decoded(self, rec_model, torch) -> None:
        decoded = self._opts.file_names.get("dec")
        if decoded:
            torch.save(rec_model.state_dict(), decoded)
