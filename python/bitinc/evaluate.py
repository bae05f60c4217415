"""A runner shaped like the study's evaluation framework (3GPP TR 26.927,
§2.1.2), for trying bitinc's Coder without the framework:

    python3 -m bitinc.evaluate --coder_name bitinc --scenario_name fashion_mnist \\
        --model_name small-cnn --out_dir DIR --unique_tag T [--enc_cfg_file_name CFG] \\
        [--eval_anchor] [--eval_compression] [--disable_progress_bar]

It writes DIR/results_T.csv with the columns of Table 2.1.2.3-1 (sizes in
bytes, times in seconds) and the configuration parameters marked R in Table
2.1.2.2-1, and the bitstream DIR/bitstream_T.bit. anc_size is the anchor's
float weights as float32 (4 bytes a weight); rec_size the bitstream file
(a stored ZIP: bitinc.framework); rec_payload_size, an extra column, the
rung files inside it without the manifest (what bitinc eval reports as
rec_size: the Coder packs the scenario's own ONNX graph, so the rung files
are the ones `bitinc pack` makes of the model).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
import zipfile
from types import SimpleNamespace

from . import Error
from .fashion_mnist import Scenario
from .framework import Coder

COLUMNS = ["anc_size", "rec_size", "compress_ratio", "metric_name", "anc_perf", "rec_perf",
           "anc_eval_time", "rec_eval_time", "enc_time", "dec_time",
           # the R-marked configuration parameters
           "scenario_name", "data_set_name", "model_name", "unique_tag", "eval_compression",
           "eval_anchor",
           # ours
           "coder_name", "rec_payload_size"]


def _arguments(argv):
    parser = argparse.ArgumentParser(
        prog="python3 -m bitinc.evaluate",
        description="The study framework's evaluation with bitinc's Coder on a Fashion-MNIST "
                    "model (PyTorch).")
    parser.add_argument("--coder_name", default="bitinc", choices=["bitinc"])
    parser.add_argument("--scenario_name", default="fashion_mnist", choices=["fashion_mnist"])
    parser.add_argument("--data_set_name", default="fashion_mnist")
    parser.add_argument("--model_name", required=True,
                        help="small-cnn, mobilenetv2 (bundled), resnet18 or vgg16 (--model_path)")
    parser.add_argument("--model_path", help="the ONNX model (default: models/NAME.onnx)")
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--unique_tag", default="run")
    parser.add_argument("--enc_cfg_file_name", help="the Coder's JSON configuration")
    parser.add_argument("--data_dir", default=None, help="Fashion-MNIST IDX files")
    parser.add_argument("--batch_size", type=int, default=500)
    parser.add_argument("--limit", type=int, default=None,
                        help="evaluate on the first N test images only (default: all)")
    parser.add_argument("--eval_anchor", action="store_true")
    parser.add_argument("--eval_compression", action="store_true")
    parser.add_argument("--disable_progress_bar", action="store_true")
    return parser.parse_args(argv)


def run(argv=None) -> dict:
    """Runs the evaluation; returns the CSV row (also written to out_dir)."""
    opts = _arguments(argv)
    os.makedirs(opts.out_dir, exist_ok=True)
    bitstream = os.path.join(opts.out_dir, f"bitstream_{opts.unique_tag}.bit")
    opts.file_names = {"bit": bitstream,
                       "dec": os.path.join(opts.out_dir, f"decoded_{opts.unique_tag}.pt")}
    scenario = Scenario(opts)
    opts.scenario = scenario
    anchor = scenario.get_model(True)
    row = dict.fromkeys(COLUMNS, "")
    row.update(metric_name=scenario.metric_name, scenario_name=opts.scenario_name,
               data_set_name=opts.data_set_name, model_name=opts.model_name,
               unique_tag=opts.unique_tag, eval_compression=opts.eval_compression,
               eval_anchor=opts.eval_anchor, coder_name=opts.coder_name)
    row["anc_size"] = 4 * sum(value.numel() for value in anchor.state_dict().values()
                              if value.is_floating_point())
    if opts.eval_anchor:
        row["anc_perf"], row["anc_eval_time"] = scenario.get_perf(anchor, "test",
                                                                  limit=opts.limit)
    if opts.eval_compression:
        coder = Coder(opts)
        start = time.perf_counter()
        coder.encode(anchor)
        row["enc_time"] = time.perf_counter() - start
        row["rec_size"] = os.path.getsize(bitstream)
        with zipfile.ZipFile(bitstream) as archive:
            row["rec_payload_size"] = sum(
                entry.file_size for entry in archive.infolist()
                if entry.filename not in ("manifest.json", "manifest.json.sig"))
        row["compress_ratio"] = row["rec_size"] / row["anc_size"]
        reconstructed = scenario.get_model(False)
        start = time.perf_counter()
        coder.decode(reconstructed)
        row["dec_time"] = time.perf_counter() - start
        row["rec_perf"], row["rec_eval_time"] = scenario.get_perf(reconstructed, "test",
                                                                  limit=opts.limit)
    path = os.path.join(opts.out_dir, f"results_{opts.unique_tag}.csv")
    with open(path + ".part", "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerow(row)
    os.replace(path + ".part", path)
    if not opts.disable_progress_bar:
        print(f"wrote {path}", file=sys.stderr)
    return row


def main() -> int:
    try:
        row = run()
    except (Error, OSError) as error:
        print(f"bitinc.evaluate: error: {error}", file=sys.stderr)
        return 1
    for column in COLUMNS:
        print(f"{column}: {row[column]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
