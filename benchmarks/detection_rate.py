"""Face detection rate per yaw on multipie30's test identities: ``python -m benchmarks.detection_rate``.

Each 128 px crop of ids 044-049 (all 13 cameras; recordings and illuminations as given)
is upscaled to 256 px, as the side-face issue measured, and passed to
``FaceAnalyzer.detect`` with each strategy: ``cascade`` (HOG -> BlazeFace -> dlib CNN),
``hog`` alone, ``blazeface`` alone. Detection counts as found when at least one box
comes back (landmarks and cropping are not timed). Reported: found / images per yaw,
median and p90 wall ms per image, median and mean CPU ms of the process (robust to
other load on the machine), and for the cascade which stage answered.

Writes ``benchmarks/results/detection_rate.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
import warnings
from collections import Counter, defaultdict

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from runtime.detect import FaceAnalyzer  # noqa: E402
from runtime.image_io import atomic_write_bytes, load_image  # noqa: E402
from training.datasets import DEFAULT_DATA_ROOT, MULTIPIE30_SPLIT, YAWS, parse_multipie  # noqa: E402

STRATEGIES = ("cascade", "hog", "blazeface")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def select(root: str, ids, recordings, illums) -> list:
    recs = []
    for sid in ids:
        folder = os.path.join(root, sid)
        for f in sorted(os.listdir(folder)):
            r = parse_multipie(f"{sid}/{f}")
            if r is None:
                continue
            _, _, rr, _, ll = os.path.splitext(f)[0].split("_")
            if rr in recordings and (illums is None or ll in illums):
                recs.append(r)
    return recs


def run(root, recs, side=256, strategies=STRATEGIES, progress=True):
    from tqdm import tqdm

    imgs = []
    for r in recs:
        rgb = load_image(os.path.join(root, r.path)).rgb
        imgs.append(cv2.resize(rgb, (side, side), interpolation=cv2.INTER_LINEAR))
    results = {}
    for name in strategies:
        fa = FaceAnalyzer(detector=name, threads=1)
        fa.detect(imgs[0])  # warm-up: lazy model loads are not timed
        wall, cpu, found, stage = [], [], defaultdict(lambda: [0, 0]), Counter()
        for r, img in tqdm(list(zip(recs, imgs)), desc=name, disable=not progress, unit="img"):
            t0, c0 = time.perf_counter(), time.process_time()
            boxes = fa.detect(img)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            found[r.yaw][0] += bool(boxes)
            found[r.yaw][1] += 1
            stage[boxes[0][2] if boxes else "none"] += 1
        results[name] = {
            "found": sum(v[0] for v in found.values()), "images": len(recs),
            "per_yaw": {str(y): found[y] for y in YAWS if y in found},
            "median_ms": round(1000 * float(np.median(wall)), 2),
            "p90_ms": round(1000 * float(np.percentile(wall, 90)), 2),
            "median_cpu_ms": round(1000 * float(np.median(cpu)), 2),
            "mean_cpu_ms": round(1000 * float(np.mean(cpu)), 2),
            "stage": dict(stage),
        }
    return results


def markdown(res: dict, cfg: dict) -> str:
    names = list(res)
    lines = ["# Face detection rate per yaw (multipie30 test identities)", "",
             f"Images: ids {', '.join(cfg['ids'])}, recordings {', '.join(cfg['recordings'])}, illuminations "
             f"{'all 20' if cfg['illums'] is None else ', '.join(cfg['illums'])}, all 13 cameras: "
             f"{cfg['images']} images; each 128 px crop upscaled to {cfg['side']} px (bilinear). "
             f"Timed: `FaceAnalyzer.detect` only (no landmarks), one thread, after a warm-up call.", "",
             f"Command: `{cfg['command']}`  ", f"Machine: {cfg['machine']}; {cfg['date']}. {cfg['note']}", "",
             "| yaw (deg) | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for y in YAWS:
        cells = []
        for n in names:
            f, t = res[n]["per_yaw"].get(str(y), [0, 0])
            cells.append(f"{f}/{t}")
        lines.append(f"| {y:+d} | " + " | ".join(cells) + " |" if y else "| 0 | " + " | ".join(cells) + " |")
    lines.append("| **all** | " + " | ".join(
        f"**{res[n]['found']}/{res[n]['images']}** ({100 * res[n]['found'] / res[n]['images']:.1f} %)" for n in names) + " |")
    lines += ["", "| strategy | median ms / image | p90 ms | median CPU ms | mean CPU ms | stage that answered |",
              "|---|---:|---:|---:|---:|---|"]
    for n in names:
        r = res[n]
        st = ", ".join(f"{k} {v}" for k, v in sorted(r["stage"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {n} | {r['median_ms']} | {r['p90_ms']} | {r['median_cpu_ms']} | {r['mean_cpu_ms']} | {st} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.detection_rate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.path.join(DEFAULT_DATA_ROOT, "multipie30"))
    ap.add_argument("--ids", nargs="+", default=MULTIPIE30_SPLIT["test"])
    ap.add_argument("--recordings", nargs="+", default=["01", "02"])
    ap.add_argument("--illums", nargs="+", help="illumination numbers (default: all 20)")
    ap.add_argument("--side", type=int, default=256, help="upscale each 128 px crop to this side")
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(FaceAnalyzer.DETECTORS))
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--note", default="", help="free text for the report (e.g. other load on the machine)")
    a = ap.parse_args(argv)
    if not os.path.isdir(a.data):
        print(f"error: {a.data}: multipie30 not found (set FRONTALIZE_DATA)", file=sys.stderr)
        return 2
    bad = set(a.ids) - set(MULTIPIE30_SPLIT["test"])
    if bad:
        print(f"note: ids {sorted(bad)} are not test identities", file=sys.stderr)
    warnings.simplefilter("ignore", RuntimeWarning)  # BlazeFace's exp overflow on far-off logits
    recs = select(a.data, a.ids, a.recordings, a.illums)
    t0 = time.time()
    res = run(a.data, recs, a.side, a.strategies)
    cfg = {"ids": a.ids, "recordings": a.recordings, "illums": a.illums, "side": a.side, "images": len(recs),
           "command": shlex.join(["python", "-m", "benchmarks.detection_rate"] + list(argv if argv is not None else sys.argv[1:])),
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                      f"Python {platform.python_version()}, OpenCV {cv2.__version__}",
           "date": time.strftime("%Y-%m-%d"), "seconds": round(time.time() - t0, 1), "note": a.note}
    os.makedirs(a.out, exist_ok=True)
    atomic_write_bytes(os.path.join(a.out, "detection_rate.json"),
                       json.dumps({"config": cfg, "results": res}, indent=1).encode())
    md = markdown(res, cfg)
    atomic_write_bytes(os.path.join(a.out, "detection_rate.md"), md.encode())
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
