"""The mean 3D face of ``runtime.geometry``: ``python -m training.face_geometry`` -> runtime/assets/face_geometry.npz.

- ``shape68`` (68, 3): where 3DDFA_V2's 68 landmarks sit in the canonical 128 px crop of a frontal
  face (median over near-frontal training photos: multipie30 ids 020-041, camera 051, and cfp400
  training ids 001-300; faces whose pose network yaw is within 8 degrees), made left-right
  symmetric with the 68-point layout's mirror pairs; depth from ``depth``.
- ``depth`` (128, 128): ``training.face_prior.depth_map()``, the mean MediaPipe face mesh's depth,
  falling away outside the mesh, times ``DEPTH_SCALE``.

``DEPTH_SCALE`` makes the mesh's depth agree with real head turns. ``python -m training.face_geometry
--calibrate`` fits the camera of ``runtime.geometry`` to 3DDFA's landmarks on multipie30 training ids
020-043 (illumination 07, |yaw| <= 60) and prints the slope of the yaw it reads against the camera's
true yaw for several depth scales. Measured: 1.0 -> slope 1.32 (MAE 13.3 deg), 1.6 -> 1.08 (4.0),
1.8 -> 1.02 (2.6), 2.0 -> 0.96 (2.9); 3DDFA's own yaw: 0.99 (2.6).
"""
from __future__ import annotations

import argparse
import glob
import io
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "runtime", "assets", "face_geometry.npz")
# 68-point layout: the index of each point's left-right twin
DEPTH_SCALE = 1.8
MIRROR68 = np.array(list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
                    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
                    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])


def training_frontals(data: str) -> list[str]:
    files = []
    for sid in range(20, 42):
        files += sorted(glob.glob(os.path.join(data, "multipie30", f"{sid:03d}", "*_01_051_*.jpg")))[:4]
    for i in range(1, 301, 4):
        files += sorted(glob.glob(os.path.join(data, "cfp400", "Data", "Images", f"{i:03d}", "frontal", "*.jpg")))[:2]
    return files


def calibrate(data: str, tddfa: str, geometry: str = OUT) -> None:
    """Print the slope and MAE of the yaw that runtime.geometry's camera reads, per depth scale."""
    import math
    import re

    from runtime.detect import FaceAnalyzer
    from runtime.image_io import load_image
    from runtime.pose import apply, box_affine
    from runtime.tddfa import Tddfa
    from training.datasets import MULTIPIE_CAM_YAW

    fa, td = FaceAnalyzer(threads=1), Tddfa(tddfa, threads=1)
    with np.load(geometry) as z:
        x0 = z["shape68"].astype(np.float64)
    truth, lms = [], []
    for sid in range(20, 44):
        for p in sorted(glob.glob(os.path.join(data, "multipie30", f"{sid:03d}", "*_01_*_07.jpg"))):
            cam = re.search(r"_01_(\d{3})_07\.jpg$", p).group(1)
            if abs(MULTIPIE_CAM_YAW[cam]) > 60:
                continue
            rgb = load_image(p).rgb
            faces = fa.analyze(rgb)[0]
            if faces:
                truth.append(MULTIPIE_CAM_YAW[cam])
                lms.append(apply(box_affine(*faces[0].square, size=128), td.read(rgb, [faces[0].square])[0].landmarks))
    truth = np.array(truth, np.float64)
    for k in (1.0, 1.3, 1.6, 1.8, 2.0, 2.3):
        x = x0 * [1, 1, k / DEPTH_SCALE]  # the stored shape already has DEPTH_SCALE
        yaws = []
        for lm in lms:
            p = np.linalg.lstsq(np.c_[x, np.ones(68)], lm, rcond=None)[0].T
            u, _, vt = np.linalg.svd(p[:, :3], full_matrices=False)
            r = u @ vt
            v = np.cross(r[0], r[1])
            yaws.append(math.degrees(math.atan2(-v[0], v[2])))
        yaws = np.array(yaws)
        print(f"depth x {k:.1f}: slope {np.polyfit(truth, yaws, 1)[0]:.2f}, MAE {np.abs(yaws - truth).mean():.1f} deg "
              f"({len(yaws)} photos)")


def main(argv=None) -> int:
    from tqdm import tqdm

    from runtime.detect import FaceAnalyzer
    from runtime.image_io import atomic_write_bytes, load_image
    from runtime.pose import box_affine
    from runtime.tddfa import Tddfa
    from training.datasets import DEFAULT_DATA_ROOT
    from training.face_prior import depth_map

    ap = argparse.ArgumentParser(prog="python -m training.face_geometry", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA_ROOT)
    ap.add_argument("--tddfa", default=os.path.join(HERE, "..", "artifacts", "tddfa_mb05.onnx"))
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--calibrate", action="store_true", help="print the yaw slope per depth scale, write nothing")
    a = ap.parse_args(argv)
    if a.calibrate:
        calibrate(a.data, a.tddfa, a.out)
        return 0
    fa, td = FaceAnalyzer(threads=1), Tddfa(a.tddfa, threads=1)
    pts = []
    for p in tqdm(training_frontals(a.data), desc="frontals", mininterval=10):
        rgb = load_image(p).rgb
        faces = fa.analyze(rgb)[0]
        if not faces or abs(faces[0].yaw) > 8:
            continue
        lm = td.read(rgb, [faces[0].square])[0].landmarks
        aff = box_affine(*faces[0].square, size=128)
        pts.append(lm @ aff[:, :2].T + aff[:, 2])
    m = np.median(pts, 0)
    twin = m[MIRROR68].copy()
    twin[:, 0] = 128 - twin[:, 0]
    xy = (m + twin) / 2
    depth = DEPTH_SCALE * depth_map()
    ij = np.clip(np.round(xy - 0.5).astype(int), 0, 127)
    shape68 = np.c_[xy, depth[ij[:, 1], ij[:, 0]]].astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, shape68=shape68, depth=depth.astype(np.float32))
    atomic_write_bytes(a.out, buf.getvalue())
    print(f"{a.out}: 68 points from {len(pts)} frontal faces; nose tip depth {shape68[30, 2]:.1f} px")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
