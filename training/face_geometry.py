"""The mean 3D face of ``runtime.geometry``: ``python -m training.face_geometry`` -> runtime/assets/face_geometry.npz.

- ``shape68`` (68, 3): where 3DDFA_V2's 68 landmarks sit in the canonical 128 px crop of a frontal
  face (median over near-frontal training photos: multipie30 ids 020-041, camera 051, and cfp400
  training ids 001-300; faces whose pose network yaw is within 8 degrees), made left-right
  symmetric with the 68-point layout's mirror pairs; depth from ``depth``.
- ``depth`` (128, 128): ``training.face_prior.depth_map()``, the mean MediaPipe face mesh's depth,
  falling away outside the mesh.
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
    a = ap.parse_args(argv)
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
    depth = depth_map()
    ij = np.clip(np.round(xy - 0.5).astype(int), 0, 127)
    shape68 = np.c_[xy, depth[ij[:, 1], ij[:, 0]]].astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, shape68=shape68, depth=depth.astype(np.float32))
    atomic_write_bytes(a.out, buf.getvalue())
    print(f"{a.out}: 68 points from {len(pts)} frontal faces; nose tip depth {shape68[30, 2]:.1f} px")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
