"""python -m export MODEL.keras --formats onnx,tflite-fp32,... --out DIR [--calib MANIFEST] [--parity]"""
from __future__ import annotations

import argparse
import json
import os
import sys

from runtime.errors import FrontalizeError

from .convert import DEFAULT_FORMATS, FORMATS, INT8_FORMATS


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m export",
                                 description="Export a Keras generator to ONNX/TFLite and check parity with Keras.")
    ap.add_argument("model", help="generator.keras (with its generator.keras.json sidecar)")
    ap.add_argument("--formats", default=",".join(DEFAULT_FORMATS),
                    help=f"comma-separated, from: {', '.join(FORMATS)} (default: all)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--calib", default="artifacts/manifest.json",
                    help="manifest whose validation crops calibrate int8 and feed --parity")
    ap.add_argument("--calib-split", default="val")
    ap.add_argument("--calib-n", type=int, default=200, help="calibration crops (int8)")
    ap.add_argument("--parity", action="store_true", help="compare every export with Keras on validation crops")
    ap.add_argument("--parity-n", type=int, default=64, help="crops for --parity (disjoint from calibration)")
    ap.add_argument("--latency-runs", type=int, default=20, help="timed batch-1 runs per export in --parity")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    formats = [f.strip() for f in a.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        print(f"error: unknown format(s) {', '.join(bad)}; choose from {', '.join(FORMATS)}", file=sys.stderr)
        return 2
    try:
        from .calib import validation_crops
        from .convert import export_model

        calib = yaws = None
        if any(f in INT8_FORMATS for f in formats):
            calib, yaws = validation_crops(a.calib, a.calib_split, a.calib_n)
            print(f"int8 calibration: {len(calib)} '{a.calib_split}' crops from {a.calib}", flush=True)
        paths = export_model(a.model, formats, a.out, calib, yaws, progress=True)
        for fmt, p in paths.items():
            print(f"{fmt:24s} {p} ({os.path.getsize(p) / 1e6:.2f} MB)")
        if a.parity:
            from .parity import parity_report

            images, pyaws, fronts = validation_crops(a.calib, a.calib_split, a.parity_n, phase=0.5, targets=True)
            report = parity_report(a.model, paths, images, pyaws, latency_runs=a.latency_runs, out_dir=a.out,
                                   targets=fronts)
            print(report["markdown"])
            print(json.dumps({"parity_json": report["json_path"], "parity_md": report["md_path"]}))
    except FrontalizeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
