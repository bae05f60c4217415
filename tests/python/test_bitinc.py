"""The Python module against the bundled model: packing, every rung back as
numpy arrays equal to what the CLI rebuilds, verification, fetching from a
directory with progress, signed packages, and errors as bitinc.Error.
Run by ctest (python_module) with the build's python/ directory on the path."""

import os
import tempfile
import unittest

import numpy

import bitinc

try:
    import torch
except ImportError:  # Debian's python3-torch is installed by install-deps.sh --training only
    torch = None

SOURCE = os.environ.get("BITINC_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(SOURCE, "models", "small-cnn.onnx")


class PythonModule(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.directory = tempfile.TemporaryDirectory()
        cls.package = os.path.join(cls.directory.name, "pkg")
        cls.summary = bitinc.pack(MODEL, cls.package, ladder="4,8,exact", per_channel=True)

    @classmethod
    def tearDownClass(cls):
        cls.directory.cleanup()

    def test_pack_summary_names_every_rung(self):
        kinds = [(rung["kind"], rung["bits"]) for rung in self.summary["rungs"]]
        self.assertEqual(kinds[:3], [("base", 4), ("refinement", 8), ("exact", 32)])
        self.assertTrue(self.summary["exact_rung"])
        self.assertEqual(bitinc.inspect(self.package)["ladder"], self.summary["ladder"])

    def test_rungs_come_back_as_arrays_that_refine_towards_the_source(self):
        exact = bitinc.unpack(self.package)
        base = bitinc.unpack(self.package, rung=4)
        eight = bitinc.unpack(self.package, 8)
        self.assertEqual(set(exact), set(base))
        for name, values in exact.items():
            self.assertEqual(values.dtype, numpy.float32)
            self.assertEqual(values.shape, base[name].shape)
        # The exact rung is the source: the 8-bit rung is nearer to it than the base.
        errors = [sum(float(numpy.abs(rung[n] - exact[n]).sum()) for n in exact)
                  for rung in (base, eight)]
        self.assertGreater(errors[0], errors[1])
        self.assertGreater(errors[1], 0.0)
        # The ONNX bytes of the exact rung are the source file's.
        with open(MODEL, "rb") as source:
            self.assertEqual(bitinc.unpack_onnx(self.package), source.read())

    def test_verify_and_fetch_with_progress(self):
        self.assertTrue(bitinc.verify(self.package)["ok"])
        seen = []
        fetched = bitinc.fetch(self.package, until=8, progress=lambda done, total: seen.append(
            (done, total)))
        self.assertEqual(fetched["bits"], 8)
        self.assertTrue(seen)
        self.assertEqual(seen[-1][0], seen[-1][1])
        eight = bitinc.unpack(self.package, 8)
        for name, values in fetched["weights"].items():
            numpy.testing.assert_array_equal(values, eight[name])

    def test_the_push_decoder_takes_bytes_in_pieces(self):
        decoder = bitinc.Decoder(until=8)
        kinds = []
        for _ in range(10000):
            event = decoder.next_event()
            kinds.append(event["kind"])
            if event["kind"] == "done":
                break
            for file, begin, end in event["wanted"]:
                with open(os.path.join(self.package, file), "rb") as stream:
                    data = stream.read()
                if file == "manifest.json":
                    decoder.push_manifest(data)
                    continue
                for at in reversed(range(begin, end, 777)):  # backwards, in pieces
                    decoder.push(file, at, data[at:min(at + 777, end)])
        self.assertEqual(kinds[-1], "done")
        self.assertIn("rung_ready", kinds)
        snapshot = decoder.snapshot()
        eight = bitinc.unpack(self.package, 8)
        for name, values in snapshot.items():
            numpy.testing.assert_array_equal(values, eight[name])
        self.assertEqual(bitinc.Decoder().next_event()["wanted"], [("manifest.json", 0, 0)])

    def test_fetch_from_takes_bytes_from_the_callers_transport(self):
        reads = []
        flipped = []

        def read(file, begin, end):
            reads.append((file, begin, end))
            with open(os.path.join(self.package, file), "rb") as stream:
                stream.seek(begin)
                data = bytearray(stream.read(end - begin if end else -1))
            if file.startswith("refine") and not flipped and len(data) > 100:
                data[len(data) // 4] ^= 0x08  # damaged once on the way
                flipped.append(file)
            return bytes(data[:max(1, len(data) // 2)]) if end else bytes(data)  # halves

        served = []
        fetched = bitinc.fetch_from(
            read, until=8,
            on_event=lambda event, decoder: served.append(event["bits"])
            if event["kind"] == "rung_ready" else None)
        self.assertEqual(fetched["events"][-1], "done")
        self.assertIn("unit_damaged", fetched["events"])
        self.assertEqual(served, [4, 8])
        self.assertEqual(reads[0], ("manifest.json", 0, 0))
        eight = bitinc.unpack(self.package, 8)
        for name, values in fetched["weights"].items():
            numpy.testing.assert_array_equal(values, eight[name])
        # A refinement that cannot be had is left out; a base cannot be.
        def no_refinements(file, begin, end):
            if file.startswith("refine"):
                raise OSError("connection reset")
            return read(file, begin, end)
        degraded = bitinc.fetch_from(no_refinements, until=8)
        self.assertTrue(degraded["degraded"])
        base = bitinc.unpack(self.package, 4)
        for name, values in degraded["weights"].items():
            numpy.testing.assert_array_equal(values, base[name])
        def no_base(file, begin, end):
            if file.startswith("base"):
                raise OSError("connection reset")
            return read(file, begin, end)
        with self.assertRaises(bitinc.Error) as failed:
            bitinc.fetch_from(no_base)
        self.assertEqual(failed.exception.code, "unavailable")

    def test_signed_packages_need_the_trusted_key(self):
        private_key, public_key = bitinc.generate_key()
        signed = os.path.join(self.directory.name, "signed")
        summary = bitinc.pack(MODEL, signed, ladder="4,8", sign_key=private_key, release=3,
                              model_id="small")
        self.assertEqual(summary["release"], {"model_id": "small", "number": 3})
        installed = os.path.join(self.directory.name, "installed.json")
        fetched = bitinc.fetch(signed, trust=public_key, installed_releases=installed)
        self.assertEqual(fetched["signer_key_id"], bitinc.key_id(public_key))
        _, other_key = bitinc.generate_key()
        with self.assertRaises(bitinc.Error) as refused:
            bitinc.fetch(signed, trust=other_key, installed_releases=installed)
        self.assertEqual(refused.exception.code, "untrusted")
        # The push decoder wants the signature too, and checks it.
        files = {}
        for name in ("manifest.json", "manifest.json.sig"):
            with open(os.path.join(signed, name), "rb") as stream:
                files[name] = stream.read()
        for key, accepted in ((public_key, True), (other_key, False)):
            decoder = bitinc.Decoder(trust=key)
            wanted = [file for file, _, _ in decoder.next_event()["wanted"]]
            self.assertEqual(wanted, ["manifest.json", "manifest.json.sig"])
            decoder.push_manifest(files["manifest.json"])
            if accepted:
                decoder.push_signature(files["manifest.json.sig"])
                self.assertEqual(decoder.next_event()["kind"], "manifest_ready")
            else:
                with self.assertRaises(bitinc.Error):
                    decoder.push_signature(files["manifest.json.sig"])

    def test_weights_without_a_graph_round_trip(self):
        generator = numpy.random.default_rng(5)
        weights = {
            "encoder.weight": generator.normal(0, 0.1, (64, 32)).astype(numpy.float32),
            "encoder.bias": generator.normal(0, 0.1, (64,)).astype(numpy.float32),
            "head.weight": generator.normal(0, 0.1, (10, 64)).astype(numpy.float16),
            "steps": numpy.arange(3, dtype=numpy.int64),
        }
        package = os.path.join(self.directory.name, "weights")
        with self.assertRaises(bitinc.Error):
            bitinc.pack_weights(weights, package, ladder="4,8,exact")
        summary = bitinc.pack_weights(weights, package, ladder="4,8,exact", model_name="tiny",
                                      skip_non_float=True)
        self.assertEqual(summary["skipped"], ["steps"])
        self.assertEqual(summary["model"], "tiny")
        exact = bitinc.unpack(package)
        self.assertEqual(set(exact), {"encoder.weight", "encoder.bias", "head.weight"})
        for name in exact:
            numpy.testing.assert_array_equal(exact[name], weights[name].astype(numpy.float32))
        base = bitinc.unpack(package, 4)
        self.assertFalse(numpy.array_equal(base["encoder.weight"], weights["encoder.weight"]))
        self.assertTrue(bitinc.verify(package)["ok"])

    @unittest.skipIf(torch is None, "PyTorch is not installed (install-deps.sh --training)")
    def test_a_pytorch_state_dict_round_trips(self):
        torch.manual_seed(3)
        network = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16),
                                      torch.nn.Flatten(), torch.nn.Linear(16 * 6 * 6, 10))
        state = network.state_dict()
        state["3.weight"] = state["3.weight"].to(torch.bfloat16)
        package = os.path.join(self.directory.name, "state")
        summary = bitinc.pack_weights(state, package, ladder="8,exact", skip_non_float=True)
        self.assertEqual(summary["skipped"], ["1.num_batches_tracked"])
        exact = bitinc.unpack(package)
        restored = {name: torch.from_numpy(values) for name, values in exact.items()}
        for name, values in restored.items():
            self.assertTrue(torch.equal(values, state[name].float()), name)
        network.load_state_dict({**restored, "3.weight": restored["3.weight"]}, strict=False)

    @unittest.skipIf(torch is None, "PyTorch is not installed (install-deps.sh --training)")
    def test_the_framework_coder_sends_low_update_and_high(self):
        from types import SimpleNamespace
        from bitinc.framework import Coder

        torch.manual_seed(4)
        make = lambda: torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                           torch.nn.Linear(32, 10))
        model = make()
        reference = os.path.join(self.directory.name, "reference")
        bitinc.pack_weights(model.state_dict(), reference, ladder="4,8,16")
        bits = {}
        for transmission, rung in (("low", 4), ("update", 16), ("high", 16)):
            bit = os.path.join(self.directory.name, transmission + ".bit")
            opts = SimpleNamespace(file_names={"bit": bit, "dec": None}, scenario=None)
            config = {"ladder": "4,8,16", "transmission": transmission,
                      "low_bitstream": bits.get("low")}
            Coder(opts, config).encode(model)
            bits[transmission] = bit
            rebuilt = make()
            Coder(opts, config).decode(rebuilt)
            expected = bitinc.unpack(reference, rung, direct=transmission == "high")
            for name, values in rebuilt.state_dict().items():
                numpy.testing.assert_array_equal(values.numpy(), expected[name], name)
        sizes = {name: os.path.getsize(path) for name, path in bits.items()}
        self.assertLess(sizes["low"], sizes["high"])
        with self.assertRaises(bitinc.Error):
            Coder(SimpleNamespace(file_names={"bit": bits["update"]}),
                  {"transmission": "update"}).decode(make())

    @unittest.skipIf(torch is None, "PyTorch is not installed (install-deps.sh --training)")
    def test_the_framework_shaped_runner_writes_the_study_csv(self):
        import csv
        from bitinc import evaluate

        out = os.path.join(self.directory.name, "evaluate")
        config = os.path.join(self.directory.name, "low.json")
        with open(config, "w") as stream:
            stream.write('{"ladder": "4,8", "transmission": "low"}')
        row = evaluate.run(["--model_name", "small-cnn", "--model_path", MODEL, "--out_dir", out,
                            "--unique_tag", "t", "--enc_cfg_file_name", config, "--eval_anchor",
                            "--eval_compression", "--limit", "300", "--disable_progress_bar"])
        with open(os.path.join(out, "results_t.csv")) as stream:
            written = list(csv.DictReader(stream))
        self.assertEqual(len(written), 1)
        self.assertEqual(list(written[0]), evaluate.COLUMNS)
        # The PyTorch network carries the ONNX model's weights: far above chance.
        self.assertGreater(row["anc_perf"], 80.0)
        self.assertGreater(row["rec_perf"], 70.0)
        # The fused network has exactly the ONNX model's weights.
        onnx_weights = bitinc.read_onnx(MODEL)["weights"]
        self.assertEqual(row["anc_size"], 4 * sum(v.size for v in onnx_weights.values()))
        self.assertLess(row["rec_size"], row["anc_size"] / 5)  # a 4-bit base
        self.assertEqual(row["rec_size"], os.path.getsize(os.path.join(out, "bitstream_t.bit")))
        # The rung files are those `bitinc pack` makes of the ONNX model (what
        # bitinc eval counts): the Coder packs the scenario's own graph.
        reference = os.path.join(self.directory.name, "runner-reference")
        summary = bitinc.pack(MODEL, reference, ladder="4,8")
        self.assertEqual(row["rec_payload_size"], summary["rungs"][0]["bytes"])

    def test_a_new_version_packs_against_the_old_and_unpacks_from_it(self):
        source = bitinc.read_onnx(MODEL)
        weights = {name: values * numpy.float32(1.001) if name == source["order"][0] else values
                   for name, values in source["weights"].items()}
        second_model = os.path.join(self.directory.name, "v2.onnx")
        bitinc.write_onnx(MODEL, weights, second_model)
        second = os.path.join(self.directory.name, "v2")
        summary = bitinc.pack(second_model, second, previous=self.package, per_channel=True)
        self.assertEqual(summary["ladder"], self.summary["ladder"])  # the earlier one's
        self.assertEqual([delta["bits"] for delta in summary["deltas"]], [4, 8])
        held = os.path.join(self.directory.name, "v1-4.onnx")
        with open(held, "wb") as out:
            out.write(bitinc.unpack_onnx(self.package, 4))
        rebuilt = bitinc.unpack(second, 8, previous=held)
        for name, values in bitinc.unpack(second, 8).items():
            numpy.testing.assert_array_equal(rebuilt[name], values)
        # Integer levels: value = the channel's step x level.
        levels = bitinc.unpack_levels(second, 8)
        self.assertTrue(levels)
        for name, entry in levels.items():
            self.assertEqual(entry["bits"], 8)
            steps = entry["steps"].reshape((-1,) + (1,) * (entry["indices"].ndim - 1))
            numpy.testing.assert_array_equal(
                (steps * entry["indices"]).astype(numpy.float32), rebuilt[name])
        with self.assertRaises(bitinc.Error) as refused:
            bitinc.unpack(second, 8, previous=second_model)  # no delta starts there
        self.assertEqual(refused.exception.code, "invalid_argument")

    def test_errors_are_bitinc_errors(self):
        with self.assertRaises(bitinc.Error) as caught:
            bitinc.unpack(os.path.join(self.directory.name, "nothing-here"))
        self.assertIn("nothing-here", str(caught.exception))
        self.assertEqual(caught.exception.code, "io")
        self.assertTrue(issubclass(bitinc.Error, RuntimeError))
        with self.assertRaises(bitinc.Error) as caught:
            bitinc.pack(MODEL, self.package)  # a package is there and force is off
        self.assertEqual(caught.exception.code, "invalid_argument")
        self.assertEqual(bitinc.Error("raised in Python").code, "invalid_argument")

    def test_a_corrupt_package_says_corrupt_data(self):
        corrupt = os.path.join(self.directory.name, "corrupt")
        bitinc.pack(MODEL, corrupt, ladder="4,8")
        base = os.path.join(corrupt, bitinc.inspect(corrupt)["rungs"][0]["file"])
        with open(base, "r+b") as stream:
            stream.truncate(os.path.getsize(base) - 10)
        with self.assertRaises(bitinc.Error) as caught:
            bitinc.unpack(corrupt, rung=4)
        self.assertEqual(caught.exception.code, "corrupt_data")


class PackageBytes(unittest.TestCase):
    """A package as one archive, and the accuracy point from Python."""

    @classmethod
    def setUpClass(cls):
        cls.directory = tempfile.TemporaryDirectory()
        cls.package = os.path.join(cls.directory.name, "calibrated")
        cls.summary = bitinc.pack(MODEL, cls.package, ladder="4,8,16", calibrate=True,
                                  calibration_images=300, sensitivity_images=100,
                                  point_images=300)

    @classmethod
    def tearDownClass(cls):
        cls.directory.cleanup()

    def test_an_archive_decodes_as_its_directory(self):
        blob = bitinc.to_bytes(self.package)
        self.assertTrue(bitinc.verify(blob)["ok"])
        for rung in (4, 8, None, "accuracy"):
            from_blob = bitinc.unpack(blob, rung)
            from_directory = bitinc.unpack(self.package, rung)
            for name, values in from_directory.items():
                numpy.testing.assert_array_equal(from_blob[name], values, f"{rung} {name}")
        copy = os.path.join(self.directory.name, "copy")
        bitinc.from_bytes(blob, copy)
        self.assertEqual(sorted(os.listdir(copy)), sorted(os.listdir(self.package)))
        self.assertEqual(bitinc.unpack_onnx(copy), bitinc.unpack_onnx(self.package))

    def test_pack_bytes_is_pack_into_an_archive(self):
        blob = bitinc.pack_bytes(MODEL, ladder="4,8,16")
        plain = os.path.join(self.directory.name, "plain")
        bitinc.pack(MODEL, plain, ladder="4,8,16")
        self.assertEqual(bitinc.unpack_onnx(blob, 8), bitinc.unpack_onnx(plain, 8))

    def test_the_accuracy_point_is_between_the_base_and_the_top(self):
        point = self.summary.get("accuracy_point")
        self.assertIsNotNone(point, "the bundled model reaches its top on 300 images")
        self.assertEqual(bitinc.inspect(self.package)["accuracy_point"], point)
        at_point = bitinc.unpack(self.package, "accuracy")
        # What a device fetching to the point holds.
        fetched = bitinc.fetch(self.package, until="accuracy")["weights"]
        for name, values in at_point.items():
            numpy.testing.assert_array_equal(fetched[name], values, name)
        with self.assertRaises(bitinc.Error):
            bitinc.unpack(self.package, "accuracy", direct=True)

    def test_hostile_archives_are_refused(self):
        import io
        import zipfile

        def archive(name, compression=zipfile.ZIP_STORED):
            stream = io.BytesIO()
            with zipfile.ZipFile(stream, "w", compression=compression) as out:
                out.writestr(name, b"x" * 100)
            return stream.getvalue()

        for blob in (archive("../manifest.json"), archive("sub/manifest.json"),
                     archive("manifest.json", zipfile.ZIP_DEFLATED), b"not an archive",
                     bitinc.to_bytes(self.package)[:5000]):
            with self.assertRaises(bitinc.Error) as caught:
                bitinc.unpack(blob)
            self.assertIn(caught.exception.code, ("corrupt_data", "io"))
        self.assertFalse(os.path.exists(os.path.join(self.directory.name, "manifest.json")))

    @unittest.skipIf(torch is None, "PyTorch is not installed (install-deps.sh --training)")
    def test_the_coder_update_can_stop_at_the_accuracy_point(self):
        from types import SimpleNamespace
        from bitinc.fashion_mnist import Scenario
        from bitinc.framework import Coder

        opts = SimpleNamespace(model_name="small-cnn", model_path=MODEL)
        opts.scenario = Scenario(opts)
        model = opts.scenario.get_model(True)
        sizes = {}
        low = os.path.join(self.directory.name, "coder-low.bit")
        for name, settings in (("low", {"transmission": "low"}),
                               ("point", {"transmission": "update", "rung": "accuracy"}),
                               ("update", {"transmission": "update"})):
            opts.file_names = {"bit": os.path.join(self.directory.name, f"coder-{name}.bit")}
            config = {"ladder": "4,8,16", "calibrate": name != "low", "calibration_images": 300,
                      "point_images": 300,
                      "low_bitstream": low, **settings}
            Coder(opts, config).encode(model)
            sizes[name] = os.path.getsize(opts.file_names["bit"])
            if name == "point":
                rebuilt = opts.scenario.get_model(False)
                Coder(opts, config).decode(rebuilt)
        self.assertLess(sizes["point"], sizes["update"])


class DocumentedExamples(unittest.TestCase):
    """docs/python.md's examples, run as a reader would paste them (from a
    directory holding the repository's models/)."""

    def blocks(self):
        import re
        with open(os.path.join(SOURCE, "docs", "python.md"), encoding="utf-8") as stream:
            text = stream.read()
        return re.findall(r"```(python|sh)\n(.*?)```", text, re.S)

    def test_every_example_runs(self):
        import subprocess
        import sys

        blocks = self.blocks()
        self.assertEqual(len(blocks), 4)
        with tempfile.TemporaryDirectory() as scratch:
            os.symlink(os.path.join(os.path.abspath(SOURCE), "models"),
                       os.path.join(scratch, "models"))
            for language, code in blocks:
                needs_torch = "Scenario" in code or "bitinc.evaluate" in code
                if needs_torch and torch is None:
                    print("skipped a docs/python.md example: PyTorch is not installed",
                          file=sys.stderr)
                    continue
                if language == "python":
                    result = subprocess.run([sys.executable, "-c", code], cwd=scratch,
                                            capture_output=True, text=True)
                else:
                    result = subprocess.run(["bash", "-euo", "pipefail", "-c",
                                             code.replace("/usr/bin/python3", sys.executable)],
                                            cwd=scratch, capture_output=True, text=True)
                self.assertEqual(result.returncode, 0, f"{code}\n{result.stdout}\n{result.stderr}")


if __name__ == "__main__":
    unittest.main()
