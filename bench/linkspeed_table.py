#!/usr/bin/env python3
"""Table of bench/linkspeed_bench.sh results: one row per model and binary.

bytes of the direct 4-, 8- and 16-bit rungs (and x H0), base + refinements
over direct for 8,16, 4,16 and 4,8,16, and one-core speeds in M weights/s: decoding
the 8-bit base and the 16-bit direct rung, decoding and applying the 8->16
refinement, encoding the 8- and 16-bit rungs."""
import json
import pathlib
import sys


def main(directory):
    rows = []
    for path in sorted(pathlib.Path(directory).glob("*.json")):
        model, label = path.stem.rsplit("-", 1)
        data = json.loads(path.read_text())
        by_ladder = {r["ladder"]: r for r in data["results"]}
        coder = lambda ladder: by_ladder[ladder]["coders"][0]
        weights = by_ladder["8"]["quantized_weights"]
        rate = lambda seconds: weights / seconds / 1e6 if seconds else 0.0

        def direct(bits):
            result = by_ladder[str(bits)]
            size = coder(str(bits))["direct"]["bytes"]
            return f"{size:,} ({size / result['top_entropy_bytes']:.3f})"

        refinement = coder("8,16")["rungs"][1]
        rows.append([
            model, label, direct(4), direct(8), direct(16),
            f"{coder('8,16')['ladder_over_direct']:.4f}",
            f"{coder('4,16')['ladder_over_direct']:.4f}",
            f"{coder('4,8,16')['ladder_over_direct']:.4f}",
            f"{rate(coder('8')['direct']['decode_seconds']):.0f}",
            f"{rate(coder('16')['direct']['decode_seconds']):.0f}",
            f"{rate(refinement['decode_seconds']):.0f}",
            f"{rate(coder('8')['direct']['encode_seconds']):.0f}",
            f"{rate(coder('16')['direct']['encode_seconds']):.0f}",
        ])
    header = ["model", "coder", "4 bit B (xH0)", "8 bit B (xH0)", "16 bit B (xH0)",
              "8,16 / direct", "4,16 / direct", "4,8,16 / direct", "dec 8", "dec 16", "dec+apply 8->16",
              "enc 8", "enc 16"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out/linkspeed")
