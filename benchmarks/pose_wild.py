"""Yaw in the studio and in the wild, per estimator: ``python -m benchmarks.pose_wild``.

Estimators, on the same faces (``FaceAnalyzer.analyze``, the user's path; largest face, or each
hand-boxed face of samples/):

- ``posenet``: the pose network of the crop pipeline (``runtime/assets/posenet.onnx``);
- ``3ddfa``: 3DDFA_V2's MobileNet-0.5 (``runtime.tddfa``, two passes from the canonical square;
  ``make tddfa`` converts the weights of ../shared/models/3ddfa_v2 to ``artifacts/tddfa_mb05.onnx``).

Sets, none of whose identities trained either network's yaw here:

- held-out Multi-PIE (``benchmarks.pose_eval.held_out``: multipie30 044-049, multipie137 325-346):
  mean absolute error per camera yaw;
- cfp400 fold 08 (ids 351-400, every photo): % of frontals read |yaw| <= 15 and of profiles read
  |yaw| >= 70 (CFP labels poses only as frontal or profile);
- samples/: each face against the yaw read by eye (``benchmarks/samples_faces.json``, ``yaw``).

Writes ``benchmarks/results/pose_wild.{md,json}`` and, with ``--sheet``, ``artifacts/pose_wild_cfp.png``
(cfp08 profiles ordered by 3DDFA's yaw, both readings printed; git-ignored: CFP is research-only).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from collections import defaultdict

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from benchmarks.pose_eval import held_out  # noqa: E402
from runtime.image_io import atomic_write_bytes, load_image  # noqa: E402
from training.datasets import DEFAULT_DATA_ROOT  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ESTIMATORS = ("posenet", "3ddfa")
SAMPLE_FACES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples_faces.json")


def items(data: str) -> list[dict]:
    """[{set, path (absolute), truth, flip, box (samples only)}]."""
    out = [{**it, "path": os.path.join(data, it["set"], it["path"]), "truth": it["yaw"], "box": None}
           for it in held_out(data)]
    for i in range(351, 401):
        for kind, truth in (("frontal", 0), ("profile", 90)):
            for p in sorted(glob.glob(os.path.join(data, "cfp400", "Data", "Images", f"{i:03d}", kind, "*.jpg"))):
                out.append({"set": f"cfp08_{kind}", "path": p, "truth": truth, "flip": False, "box": None})
    with open(SAMPLE_FACES) as f:
        hand = json.load(f)
    for name, v in sorted(hand.items()):
        for box, yaw in zip(v["faces"], v["yaw"]):
            out.append({"set": "samples", "path": os.path.join(ROOT, "samples", name), "truth": yaw, "flip": False,
                        "box": box})
    return out


def pick(faces, box):
    """The largest face, or the face whose crop square holds the centre of the hand-drawn ``box``."""
    if box is None:
        return faces[0] if faces else None
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hits = [f for f in faces if f.box[0] <= cx <= f.box[2] and f.box[1] <= cy <= f.box[3]]
    return min(hits, key=lambda f: np.hypot(f.square[0] - cx, f.square[1] - cy)) if hits else None


def estimate(its: list[dict], tddfa: str) -> list[dict]:
    from tqdm import tqdm

    from runtime.detect import FaceAnalyzer
    from runtime.tddfa import Tddfa

    fa, td = FaceAnalyzer(threads=1), Tddfa(tddfa, threads=1)
    rows, cache = [], {}
    for it in tqdm(its, desc="pose", unit="img", mininterval=10):
        key = (it["path"], it["flip"])
        if key not in cache:
            rgb = load_image(it["path"]).rgb
            rgb = np.ascontiguousarray(rgb[:, ::-1]) if it["flip"] else rgb  # multipie137's mirrored views
            cache.clear()
            cache[key] = (rgb, fa.analyze(rgb)[0])
        rgb, faces = cache[key]
        f = pick(faces, it["box"])
        est = {}
        if f is not None:
            est = {"posenet": float(f.yaw), "3ddfa": float(td.read(rgb, [f.square])[0].yaw)}
        rows.append({**{k: v for k, v in it.items() if k != "box"}, "found": f is not None, **est})
    return rows


def summarise(rows: list[dict]) -> dict:
    res = {"multipie": {}, "cfp08": {}, "samples": []}
    for est in ESTIMATORS:
        by = defaultdict(list)
        for r in rows:
            if r["set"].startswith("multipie") and r["found"]:
                by[r["truth"]].append(abs(r[est] - r["truth"]))
        res["multipie"][est] = {str(t): round(float(np.mean(v)), 2) for t, v in sorted(by.items())}
        fr = [abs(r[est]) for r in rows if r["set"] == "cfp08_frontal" and r["found"]]
        pr = [abs(r[est]) for r in rows if r["set"] == "cfp08_profile" and r["found"]]
        res["cfp08"][est] = {"frontal_le15": round(100 * float(np.mean(np.array(fr) <= 15)), 1),
                             "profile_ge70": round(100 * float(np.mean(np.array(pr) >= 70)), 1),
                             "profile_median": round(float(np.median(pr)), 1)}
    res["cfp08"]["found"] = {k: f"{sum(r['found'] for r in rows if r['set'] == k)}/{sum(r['set'] == k for r in rows)}"
                             for k in ("cfp08_frontal", "cfp08_profile")}
    res["samples"] = [{"file": os.path.basename(r["path"]), "truth": r["truth"],
                       **{e: round(r[e], 1) if r["found"] else None for e in ESTIMATORS}}
                      for r in rows if r["set"] == "samples"]
    return res


def markdown(res: dict, seconds: float) -> str:
    yaws = sorted(int(t) for t in res["multipie"]["posenet"])
    lines = ["# Yaw in the studio and in the wild", "",
             f"`python -m benchmarks.pose_wild`, {time.strftime('%Y-%m-%d')}, {seconds / 60:.1f} min on 2 cores. Same faces "
             "for both estimators (`FaceAnalyzer.analyze`); degrees, + = nose towards the image's right.", "",
             "## Held-out Multi-PIE: mean absolute error per camera yaw", "",
             "| estimator | " + " | ".join(f"{y:+d}" for y in yaws) + " | worst |",
             "|---|" + "---:|" * (len(yaws) + 1)]
    for est in ESTIMATORS:
        v = res["multipie"][est]
        lines.append(f"| {est} | " + " | ".join(f"{v[str(y)]:.1f}" for y in yaws) + f" | {max(v.values()):.1f} |")
    f = res["cfp08"]["found"]
    lines += ["", f"## cfp400 fold 08 (ids 351-400; faces found: frontals {f['cfp08_frontal']}, profiles "
              f"{f['cfp08_profile']})", "", "| estimator | frontals read <= 15 | profiles read >= 70 | profiles' median |",
              "|---|---:|---:|---:|"]
    for est in ESTIMATORS:
        c = res["cfp08"][est]
        lines.append(f"| {est} | {c['frontal_le15']} % | {c['profile_ge70']} % | {c['profile_median']} |")
    lines += ["", "## samples/ against the yaw read by eye", "", "| photo | by eye | " + " | ".join(ESTIMATORS) + " |",
              "|---|---:|" + "---:|" * len(ESTIMATORS)]
    for s in res["samples"]:
        lines.append(f"| {s['file']} | {s['truth']:+d} | " + " | ".join("-" if s[e] is None else f"{s[e]:+.1f}"
                                                                       for e in ESTIMATORS) + " |")
    return "\n".join(lines) + "\n"


def sheet(rows: list[dict], path: str) -> None:
    import cv2

    prof = sorted((r for r in rows if r["set"] == "cfp08_profile" and r["found"]), key=lambda r: abs(r["3ddfa"]))
    tiles = []
    for r in prof[:: max(1, len(prof) // 40)][:40]:
        im = cv2.resize(load_image(r["path"]).rgb, (160, 160))
        cv2.putText(im, f"3d {abs(r['3ddfa']):.0f} pn {abs(r['posenet']):.0f}", (2, 154), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, (255, 255, 0), 1)
        tiles.append(im)
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % 8)
    grid = np.vstack([np.hstack(tiles[i:i + 8]) for i in range(0, len(tiles), 8)])
    ok, buf = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_bytes(path, buf.tobytes())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pose_wild", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA_ROOT)
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--tddfa", default=os.path.join(ROOT, "artifacts", "tddfa_mb05.onnx"),
                    help="3DDFA_V2's network as ONNX (make tddfa)")
    ap.add_argument("--sheet", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.time()
    rows = estimate(items(a.data), a.tddfa)
    res = summarise(rows)
    os.makedirs(a.out, exist_ok=True)
    atomic_write_bytes(os.path.join(a.out, "pose_wild.json"), json.dumps({**res, "rows": rows}, indent=1).encode())
    md = markdown(res, time.time() - t0)
    atomic_write_bytes(os.path.join(a.out, "pose_wild.md"), md.encode())
    if a.sheet:
        sheet(rows, os.path.join(ROOT, "artifacts", "pose_wild_cfp.png"))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
