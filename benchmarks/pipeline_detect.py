"""Faces found by the whole crop pipeline (candidates -> pose network verification -> merge), as
the CLI sees them: ``python -m benchmarks.pipeline_detect``.

cfp400: every frontal and profile photo (4,000 + 1,600; each shows one main face). A photo's face
is found when one reported face's crop square contains the centre of the true face box
(``benchmarks.detection_rate.cfp400_truth``, from CFP's fiducials) with its side 0.5-2x the true
box's side / 0.73 (a face spans ~0.73 of the canonical square, brow to chin). Every other face
reported on the photo is an extra box; ``--sheet`` draws them so a person can count the non-faces.
Splits are reported apart: ids 001-300 were the pose network's training photos, 301-350 its
validation, 351-400 held out. Navy photos (``samples/``, faces boxed by hand in
``benchmarks/samples_faces.json``): the same rule per face.

Writes ``benchmarks/results/pipeline_detect.md`` / ``.json`` (+ ``artifacts/pipeline_detect/*.png``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import cv2
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from benchmarks.detection_rate import cfp400_truth, sample_items  # noqa: E402
from runtime.image_io import atomic_write_bytes, atomic_write_image, load_image  # noqa: E402
from training.datasets import DEFAULT_DATA_ROOT  # noqa: E402
from training.pose_labels import split_of  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
FACE_OF_SQUARE = 0.73


def hit(face, gt) -> bool:
    cx, cy = (gt[0] + gt[2]) / 2, (gt[1] + gt[3]) / 2
    gs = np.sqrt((gt[2] - gt[0]) * (gt[3] - gt[1]))
    x0, y0, x1, y1 = face.box
    from runtime.pose import square_corners

    poly = square_corners(face.square).astype(np.float32)
    inside = cv2.pointPolygonTest(poly.reshape(-1, 1, 2), (float(cx), float(cy)), False) >= 0
    ratio = face.size * FACE_OF_SQUARE / max(gs, 1e-6)
    return bool(inside and 0.5 <= ratio <= 2.0)


def run(items, analyzer, progress=True):
    from tqdm import tqdm

    rows = []
    for it in tqdm(items, desc="pipeline", unit="img", disable=not progress, mininterval=10):
        rgb = load_image(it["path"]).rgb
        t = time.process_time()
        faces, _ = analyzer.analyze(rgb)
        cpu = 1000 * (time.process_time() - t)
        gts = it["gt"]
        matched = [any(hit(f, g) for f in faces) for g in gts]
        extra = [f for f in faces if not any(hit(f, g) for g in gts)]
        rows.append({"key": it["key"], "kind": it["kind"], "id": it["id"], "found": matched,
                     "faces": len(faces), "extra": [[round(float(v), 1) for v in f.square] + [round(f.score, 3)]
                                                    for f in extra],
                     "yaw": [round(f.yaw, 1) for f in faces], "cpu_ms": round(cpu, 1)})
    return rows


def summary(rows, by) -> list[dict]:
    groups = {}
    for r in rows:
        groups.setdefault(by(r), []).append(r)
    out = []
    for k, rs in sorted(groups.items()):
        faces = sum(len(r["found"]) for r in rs)
        found = sum(sum(r["found"]) for r in rs)
        out.append({"group": k, "photos": len(rs), "faces": faces, "found": found,
                    "recall": round(100 * found / max(faces, 1), 2),
                    "photos_with_extra": sum(bool(r["extra"]) for r in rs),
                    "extra_pct": round(100 * sum(bool(r["extra"]) for r in rs) / len(rs), 2)})
    return out


def extra_sheet(rows, items, path, limit=120):
    """Every extra box (up to ``limit``) as a 96 px tile of its crop square, for counting non-faces."""
    from runtime.pose import crop

    by_key = {it["key"]: it for it in items}
    tiles = []
    for r in rows:
        for e in r["extra"]:
            rgb = load_image(by_key[r["key"]]["path"]).rgb
            tiles.append(crop(rgb, tuple(e[:4]), 96))
            if len(tiles) >= limit:
                break
    if not tiles:
        return 0
    cols = 12
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % cols)
    sheet = np.concatenate([np.concatenate(tiles[i:i + cols], 1) for i in range(0, len(tiles), cols)], 0)
    atomic_write_image(path, sheet)
    return len(tiles)


def markdown(res) -> str:
    lines = ["# Faces found by the whole crop pipeline", "",
             "Candidates (`CandidateDetector`, preset as named) -> pose network (two passes, face score >= "
             f"{res['min_score']}) -> merged; a face is found when a reported crop square holds the true box's "
             "centre at 0.5-2x its size. Extra: photos where a face is reported besides the true one(s).", ""]
    for name, table in res["tables"].items():
        lines += [f"## {name}", "", "| group | photos | faces | found | recall % | photos with an extra face | % |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {t['group']} | {t['photos']} | {t['faces']} | {t['found']} | {t['recall']} | "
                  f"{t['photos_with_extra']} | {t['extra_pct']} |" for t in table]
        lines.append("")
    lines += [f"CPU ms per photo (one pose thread): median {res['cpu_ms_median']}", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pipeline_detect", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA_ROOT)
    ap.add_argument("--detector", default="default")
    ap.add_argument("--every", type=int, default=1, help="every n-th cfp400 photo")
    ap.add_argument("--sheet", action="store_true")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--hard-negatives", metavar="JSON",
                    help="also write the extra faces of the pose network's training photos (ids 001-300) as "
                         "non-face boxes for training.posenet --hard-negatives")
    a = ap.parse_args(argv)
    from runtime.detect import FaceAnalyzer

    fa = FaceAnalyzer(a.detector, threads=1)
    cfp = cfp400_truth(os.path.join(a.data, "cfp400"))[:: a.every]
    navy = [it for it in sample_items()]
    rows = run(cfp, fa)
    nrows = run(navy, fa, progress=False)
    res = {"detector": a.detector, "min_score": fa.min_score,
           "tables": {
               f"cfp400, by kind ({len(cfp)} photos)": summary(rows, lambda r: r["kind"]),
               "cfp400, by split and kind": summary(rows, lambda r: f"{split_of('cfp400', r['id'])} {r['kind']}"),
               "bundled photos (samples/)": summary(nrows, lambda r: r["key"])},
           "cpu_ms_median": round(float(np.median([r["cpu_ms"] for r in rows])), 1),
           "rows": rows, "samples": nrows}
    atomic_write_bytes(os.path.join(a.out, "pipeline_detect.json"), json.dumps(res, indent=1).encode())
    atomic_write_bytes(os.path.join(a.out, "pipeline_detect.md"), markdown(res).encode())
    if a.hard_negatives:
        from runtime.pose import square_bbox

        neg = [{"set": "cfp400", "path": r["key"], "split": split_of("cfp400", r["id"]),
                "box": [round(float(v), 1) for v in square_bbox(e[:4])]} for r in rows for e in r["extra"]]
        neg = [n for n in neg if n["split"] == "train"]
        atomic_write_bytes(a.hard_negatives, json.dumps(neg).encode())
        print(f"{a.hard_negatives}: {len(neg)} non-face boxes from training photos")
    if a.sheet:
        n = extra_sheet(rows, cfp, os.path.join(ROOT, "artifacts", "pipeline_detect", "extra_cfp400.png"))
        print(f"extra boxes sheet: {n} tiles in artifacts/pipeline_detect/extra_cfp400.png")
    print(markdown(res))


if __name__ == "__main__":
    main()
