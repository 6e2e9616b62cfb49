"""Yaw error of the crop pipeline on held-out Multi-PIE identities: ``python -m benchmarks.pose_eval``.

Held-out: multipie30 044-049 (recording 01, every 4th illumination: 01, 05, 09, 13, 17; 13 cameras)
and multipie137 325-346 (all 12 side cameras; its negative-yaw views are stored mirrored, so they
are flipped back here and the camera's own sign is the truth). Every image goes the user's way:
``FaceAnalyzer.analyze`` on the stored picture, largest face. Per camera: images, faces found, mean
absolute yaw error, sign right (|yaw| >= 15), mean signed error.

``--legacy DIR``: also run a checkout of the previous pipeline (dlib 68 landmarks + solvePnP;
e.g. ``git worktree add ../old 19ac9cd``) in a child process on the same images, for the table of
"today's estimator". Writes ``benchmarks/results/pose_yaw.md`` / ``.json`` and, with ``--sheet``,
``artifacts/pose_crops.png`` (``--sheet``; git-ignored: Multi-PIE faces stay out of the repository):
one held-out person's crops at all 13 yaws, and below them every face of the four navy photos in
``samples/``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections import defaultdict

import cv2
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from runtime.image_io import atomic_write_bytes  # noqa: E402
from training.datasets import DEFAULT_DATA_ROOT, MULTIPIE_CAM_YAW  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
_MP = re.compile(r"(\d{3})_(\d{2})_(\d{2})_(\d{3})_(\d{2})\.jpg$")
CAMS = ["110", "120", "090", "080", "130", "140", "051", "050", "041", "190", "200", "010", "240"]


def held_out(data: str) -> list[dict]:
    """[{set, path, yaw (truth, degrees), flip}] of the held-out images."""
    items = []
    for sid in range(44, 50):
        folder = os.path.join(data, "multipie30", f"{sid:03d}")
        for f in sorted(os.listdir(folder)):
            m = _MP.search(f)
            if m and m.group(3) == "01" and m.group(5) in ("01", "05", "09", "13", "17"):
                items.append({"set": "multipie30", "path": f"{sid:03d}/{f}", "yaw": MULTIPIE_CAM_YAW[m.group(4)],
                              "flip": False})
    for sid in range(325, 347):
        folder = os.path.join(data, "multipie137", f"{sid:03d}")
        if not os.path.isdir(folder):
            continue  # ids absent from the set
        for f in sorted(os.listdir(folder)):
            m = _MP.search(f)
            if m:
                yaw = MULTIPIE_CAM_YAW[m.group(4)]
                items.append({"set": "multipie137", "path": f"{sid:03d}/{f}", "yaw": yaw, "flip": yaw < 0})
    return items


def read(data: str, it: dict) -> np.ndarray:
    img = cv2.cvtColor(cv2.imread(os.path.join(data, it["set"], it["path"])), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(img[:, ::-1]) if it["flip"] else img


def estimate(data: str, items: list[dict]) -> list[dict]:
    from tqdm import tqdm

    from runtime.detect import FaceAnalyzer

    fa = FaceAnalyzer(threads=1)
    out = []
    for it in tqdm(items, desc="pose", unit="img", mininterval=10):
        faces, _ = fa.analyze(read(data, it))
        f = faces[0] if faces else None
        out.append({**it, "est": None if f is None else float(f.yaw), "detector": None if f is None else f.detector})
    return out


LEGACY = r"""
import json, sys, cv2, numpy as np
sys.path.insert(0, sys.argv[1])
from runtime.detect import FaceAnalyzer
fa = FaceAnalyzer("cascade", threads=1)
for line in sys.stdin:
    it = json.loads(line)
    img = cv2.cvtColor(cv2.imread(it["file"]), cv2.COLOR_BGR2RGB)
    if it["flip"]:
        img = np.ascontiguousarray(img[:, ::-1])
    faces, _ = fa.analyze(img)
    y = faces[0].yaw if faces else None
    print(json.dumps(None if y is None or not np.isfinite(y) else float(y)), flush=True)
"""


def estimate_legacy(data: str, items: list[dict], legacy: str) -> list[dict]:
    inp = "".join(json.dumps({"file": os.path.join(data, it["set"], it["path"]), "flip": it["flip"]}) + "\n"
                  for it in items)
    py = os.path.join(legacy, ".venv", "bin", "python")
    res = subprocess.run([py if os.path.exists(py) else sys.executable, "-c", LEGACY, legacy], input=inp,
                         capture_output=True, text=True, check=True)
    vals = [json.loads(v) for v in res.stdout.split("\n") if v.strip()]
    return [{**it, "est": v, "detector": "legacy"} for it, v in zip(items, vals)]


def table(rows: list[dict]) -> list[dict]:
    by = defaultdict(list)
    for r in rows:
        by[(r["set"], r["yaw"])].append(r)
        by[("all", r["yaw"])].append(r)
    out = []
    for (s, yaw), rs in sorted(by.items(), key=lambda kv: (kv[0][0] != "all", kv[0][0], kv[0][1])):
        got = [r for r in rs if r["est"] is not None]
        err = np.array([r["est"] - yaw for r in got]) if got else np.zeros(0)
        sign = [np.sign(r["est"]) == np.sign(yaw) for r in got] if yaw else []
        out.append({"set": s, "yaw": yaw, "images": len(rs), "found": len(got),
                    "mae": round(float(np.abs(err).mean()), 2) if got else None,
                    "bias": round(float(err.mean()), 2) if got else None,
                    "sign_ok": round(100 * float(np.mean(sign)), 1) if sign else None})
    return out


def markdown(results: dict) -> str:
    lines = ["# Yaw error on held-out Multi-PIE identities", "",
             "multipie30 044-049 (recording 01, illuminations 01/05/09/13/17) and multipie137 325-346 (12 "
             "side cameras, negative yaws flipped back to the camera's orientation), through "
             "`FaceAnalyzer.analyze` (largest face). MAE and bias in degrees; sign right counted for |yaw| >= 15 "
             "over the faces found.", ""]
    for name, rows in results.items():
        lines += [f"## {name}", "", "| set | camera yaw | images | found | MAE | bias | sign right % |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['set']} | {r['yaw']:+d} | {r['images']} | {r['found']} | "
                         f"{'-' if r['mae'] is None else r['mae']} | {'-' if r['bias'] is None else r['bias']} | "
                         f"{'-' if r['sign_ok'] is None else r['sign_ok']} |")
        lines.append("")
    return "\n".join(lines)


SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "samples")
NAVY = ("profile_hard_hat.jpg", "profile_woman.jpg", "three_quarter_bridge.jpg", "two_people_three_quarter.jpg")


def crops_sheet(data: str, sid: str = "046") -> np.ndarray:
    """One held-out person's canonical crops at the 13 yaws (recording 01, illumination 09)."""
    from runtime.detect import FaceAnalyzer

    fa = FaceAnalyzer(threads=1)
    tiles = []
    for cam in CAMS:
        img = cv2.cvtColor(cv2.imread(os.path.join(data, "multipie30", sid, f"{sid}_01_01_{cam}_09.jpg")),
                           cv2.COLOR_BGR2RGB)
        faces, _ = fa.analyze(img)
        tile = faces[0].crop.copy() if faces else np.zeros((128, 128, 3), np.uint8)
        label = f"{MULTIPIE_CAM_YAW[cam]:+d}" + (f" est {faces[0].yaw:+.0f}" if faces else " none")
        cv2.putText(tile, label, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
    # second row: every face of the navy photos (samples/), as the generator gets it
    navy = []
    for name in NAVY:
        img = cv2.cvtColor(cv2.imread(os.path.join(SAMPLES, name)), cv2.COLOR_BGR2RGB)
        for f in fa.analyze(img)[0]:
            tile = f.crop.copy()
            cv2.putText(tile, f"{name[:12]} est {f.yaw:+.0f}", (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.32, (255, 255, 0), 1,
                        cv2.LINE_AA)
            navy.append(tile)
    navy += [np.zeros((128, 128, 3), np.uint8)] * (len(tiles) - len(navy))
    return np.concatenate([np.concatenate(tiles, 1), np.concatenate(navy[:len(tiles)], 1)], 0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pose_eval", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA_ROOT)
    ap.add_argument("--legacy", help="checkout of the previous pipeline (dlib 68 landmarks + solvePnP)")
    ap.add_argument("--sheet", action="store_true")
    ap.add_argument("--out", default=OUT)
    a = ap.parse_args(argv)
    items = held_out(a.data)
    results = {"pose network (this pipeline)": table(rows := estimate(a.data, items))}
    if a.legacy:
        results["previous pipeline: dlib 68 landmarks + solvePnP"] = table(estimate_legacy(a.data, items, a.legacy))
    atomic_write_bytes(os.path.join(a.out, "pose_yaw.json"), json.dumps(
        {"results": results, "per_image": rows}, indent=1).encode())
    atomic_write_bytes(os.path.join(a.out, "pose_yaw.md"), markdown(results).encode())
    if a.sheet:
        from runtime.image_io import atomic_write_image

        os.makedirs("artifacts", exist_ok=True)
        atomic_write_image(os.path.join("artifacts", "pose_crops.png"), crops_sheet(a.data))
    print(markdown(results))


if __name__ == "__main__":
    main()
