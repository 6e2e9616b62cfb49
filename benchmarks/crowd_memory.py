"""Peak memory and time with many faces (issue 27): ``python -m benchmarks.crowd_memory``.

Crowd pictures are tiled here from one public-domain face (``samples/grace_hopper.jpg``'s face,
each tile slightly rescaled and brightened so no two are identical), 1, 60, 144 and 500 faces, and
a folder of 200 small photos (each a copy of one tile). Each run is a fresh child process, so its
peak RSS (``ru_maxrss`` of the child) counts the models, the detectors and everything else:

- ``frontalize PICTURE --sheet`` (the CLI, the bundled model) per crowd picture;
- ``Frontalizer.batch`` on the 200 photos (paths) in one call.

Writes the table to ``--md`` (default benchmarks/results/crowd_memory.md), appending a section per
``--label`` so a before/after pair sits in one file. ``--chunks`` instead times the generator alone on
one batch of 64 crops at several chunk sizes (faces per engine call), the measurement behind
``runtime.pipeline.CHUNK``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "samples", "grace_hopper.jpg")
COUNTS = (1, 60, 144, 500)
TILE = 170  # px per face tile; 500 faces -> a 23 x 22 grid, 3910 x 3740 px (under the 4096 px load limit)


def face_tile(k: int) -> np.ndarray:
    """The k-th tile (BGR): the sample's face, zoomed and brightened a little differently each time."""
    img = cv2.imread(SAMPLE)
    h, w = img.shape[:2]
    z = 1.0 + 0.08 * ((k * 37) % 5) / 4  # zoom 1.00 .. 1.08
    side = int(min(h, w) * 0.62 / z)
    cx, cy = w // 2, int(h * 0.42)
    t = img[max(0, cy - side // 2):cy + side // 2, max(0, cx - side // 2):cx + side // 2]
    t = cv2.resize(t, (TILE, TILE), interpolation=cv2.INTER_AREA)
    return cv2.convertScaleAbs(t, alpha=1.0, beta=(k * 13) % 21 - 10)


def crowd(n: int) -> np.ndarray:
    cols = int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    out = np.full((rows * TILE, cols * TILE, 3), 128, np.uint8)
    for k in range(n):
        r, c = divmod(k, cols)
        out[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE] = face_tile(k)
    return out


def run_child(code: str, args: list[str]) -> dict:
    """Run ``python -c code args`` to the end: its wall time and what it printed last (JSON, with its
    own peak RSS: ``ru_maxrss`` of the child itself)."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    secs = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"child failed ({p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
    got = json.loads(p.stdout.strip().splitlines()[-1])
    return {"seconds": secs, "rss_mb": got["rss_kb"] / 1024, "faces": got["faces"]}


PEAK = "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss"
CLI = ("import sys, json, resource; from runtime.frontalize import main; rc = main(sys.argv[1:]); "
       "r = json.load(open(sys.argv[sys.argv.index('--out') + 1] + '/results.json')); "
       f"print(json.dumps({{'faces': r['summary']['faces'], 'rc': rc, 'rss_kb': {PEAK}}}))")
BATCH = ("import sys, glob, json, resource; from runtime.pipeline import Frontalizer; fr = Frontalizer().load(); "
         "res = fr.batch(sorted(glob.glob(sys.argv[1] + '/*.jpg'))); "
         f"print(json.dumps({{'faces': sum(len(r) for r in res), 'rss_kb': {PEAK}}}))")


def measure(tmp: str) -> list[dict]:
    rows = []
    for n in COUNTS:
        pic = os.path.join(tmp, f"crowd{n}.jpg")
        cv2.imwrite(pic, crowd(n), [cv2.IMWRITE_JPEG_QUALITY, 92])
        r = run_child(CLI, [pic, "--sheet", "--out", os.path.join(tmp, f"out{n}")])
        rows.append({"case": f"frontalize --sheet, {n} faces in one picture", **r})
        print(rows[-1], file=sys.stderr)
    photos = os.path.join(tmp, "photos")
    os.makedirs(photos)
    for k in range(200):
        t = cv2.copyMakeBorder(face_tile(k), 60, 60, 60, 60, cv2.BORDER_CONSTANT, value=(128, 128, 128))
        cv2.imwrite(os.path.join(photos, f"p{k:03d}.jpg"), t)
    rows.append({"case": "Frontalizer.batch on 200 photos", **run_child(BATCH, [photos])})
    print(rows[-1], file=sys.stderr)
    return rows


def chunk_timing(sizes=(1, 2, 4, 8, 16, 32, 64), n: int = 64, repeats: int = 3) -> list[dict]:
    """ms per face of the bundled generator on n crops, sent in chunks of each size."""
    from runtime.engines import load_engine

    eng = load_engine(os.path.join(ROOT, "runtime", "assets", "frontalizer.onnx"), "auto", 2)
    crops = np.stack([cv2.resize(face_tile(k), (128, 128))[..., ::-1] for k in range(n)])
    eng.run(crops[:8], yaw=[0.0] * 8)  # warm-up
    out = []
    for s in sizes:
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            for i in range(0, n, s):
                eng.run(crops[i:i + s], yaw=[0.0] * len(crops[i:i + s]))
            best = min(best, time.perf_counter() - t)
        out.append({"chunk": s, "ms_per_face": best / n * 1e3})
        print(out[-1], file=sys.stderr)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label", default="now", help="section title (e.g. before / after)")
    ap.add_argument("--md", default=os.path.join(ROOT, "benchmarks", "results", "crowd_memory.md"))
    ap.add_argument("--chunks", action="store_true", help="time chunk sizes instead")
    a = ap.parse_args(argv)
    load = os.getloadavg()[0]
    if a.chunks:
        res = chunk_timing()
        lines = [f"## Generator ms per face by chunk size ({a.label}; load {load:.2f}, 2 threads, best of 3)", "",
                 "| faces per engine call | ms per face |", "|---:|---:|"]
        lines += [f"| {r['chunk']} | {r['ms_per_face']:.2f} |" for r in res]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            res = measure(tmp)
        lines = [f"## {a.label} (load {load:.2f} at start; peak RSS of a fresh process, bundled model)", "",
                 "| case | faces out | peak RSS MB | seconds | s per face |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['case']} | {r['faces']} | {r['rss_mb']:.0f} | {r['seconds']:.1f} | "
                  f"{r['seconds'] / max(r['faces'], 1):.3f} |" for r in res]
    from runtime.image_io import atomic_write_bytes

    old = open(a.md).read() if os.path.exists(a.md) else "# Memory and time with many faces (benchmarks/crowd_memory.py)\n"
    atomic_write_bytes(a.md, (old.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
