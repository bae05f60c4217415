"""The Python module against the bundled model: packing, every rung back as
numpy arrays equal to what the CLI rebuilds, verification, fetching from a
directory with progress, signed packages, and errors as bitinc.Error.
Run by ctest (python_module) with the build's python/ directory on the path."""

import os
import tempfile
import unittest

import numpy

import bitinc

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
        with self.assertRaises(bitinc.Error):
            bitinc.fetch(signed, trust=other_key, installed_releases=installed)

    def test_errors_are_bitinc_errors(self):
        with self.assertRaises(bitinc.Error) as caught:
            bitinc.unpack(os.path.join(self.directory.name, "nothing-here"))
        self.assertIn("nothing-here", str(caught.exception))
        self.assertTrue(issubclass(bitinc.Error, RuntimeError))
        with self.assertRaises(bitinc.Error):
            bitinc.pack(MODEL, self.package)  # a package is there and force is off


if __name__ == "__main__":
    unittest.main()
