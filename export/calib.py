"""Real validation crops for int8 calibration and parity checks, read through the manifest.

Only the manifest's 'val' identities (042-043 on multipie30) are used: test identities never
reach calibration, whatever split is asked for.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from runtime.errors import FrontalizeError
from runtime.image_io import load_image

SIZE = 128


class CalibrationError(FrontalizeError):
    """No usable calibration/parity data (manifest missing, wrong split, images absent)."""


def _read(path: str) -> np.ndarray:
    if not os.path.exists(path):
        raise CalibrationError(f"{path}: image of the manifest not found (is the data set mounted?)")
    rgb = load_image(path).rgb
    if rgb.shape[:2] != (SIZE, SIZE):
        rgb = cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return rgb


def spread(rows: list, n: int, phase: float) -> list:
    """At most ``n`` of ``rows``, evenly spaced; ``phase`` in [0, 1) shifts the grid."""
    n = min(n, len(rows))
    step = len(rows) / n
    return [rows[min(len(rows) - 1, int((i + phase) * step))] for i in range(n)]


def validation_crops(manifest_path: str, split: str = "val", n: int = 200, phase: float = 0.0,
                     root: str | None = None, targets: bool = False):
    """(uint8 RGB (n,128,128,3) side views, their yaws in degrees), spread evenly over the split;
    with ``targets=True`` also the frontal views (the ground truth) as a third array.

    A pooled manifest (training.pooled) gives its rows with a real or pseudo target (studio pairs
    and frontal pass-throughs) and their estimated yaw, the one the generator gets at run time.

    ``phase`` in [0, 1) shifts the sampling grid: parity uses 0.5 so that it is measured on
    crops the int8 calibration (phase 0) did not see.
    """
    import json

    if os.path.isfile(os.path.join(manifest_path, "pairs.json")):
        return refiner_pairs(manifest_path, n, phase, targets)
    if not os.path.exists(manifest_path):
        raise CalibrationError(f"{manifest_path}: no such manifest (run `python -m training.datasets`)")
    with open(manifest_path) as f:
        m = json.load(f)
    test_ids = set(m.get("identities", {}).get("test", []))
    if split == "test":
        raise CalibrationError("the test split never serves calibration or tuning: use --calib-split val")
    rows = [r for r in m.get("pairs", {}).get(split, []) if r["id"] not in test_ids]
    pooled = m.get("kind") == "pooled"
    if pooled:
        rows = [r for r in rows if r["kind"] in ("mp30", "mp137", "mp30_front")]
    if not rows:
        raise CalibrationError(f"{manifest_path}: no '{split}' pairs")
    root = root or m["root"]
    picks = spread(rows, n, phase)
    images = np.stack([_read(os.path.join(root, r["x"])) for r in picks])
    yaws = np.asarray([float(r["yaw_est"] if pooled else r["yaw"]) for r in picks], np.float32)
    if targets:
        return images, yaws, np.stack([_read(os.path.join(root, r["y"])) for r in picks])
    return images, yaws


def refiner_pairs(folder: str, n: int = 200, phase: float = 0.0, targets: bool = False):
    """The refiner's calibration and parity inputs: geometric frontals of the validation people of a
    ``training.rotate_render`` folder (training identities kept out of the refiner's training), spread
    over their yaws; yaws are the renders' (the refiner has no yaw input)."""
    import json

    from training.refiner import VAL_PEOPLE

    with open(os.path.join(folder, "pairs.json")) as f:
        rows = sorted((r for r in json.load(f)["pairs"] if "file" in r and r["person"].startswith(VAL_PEOPLE)),
                      key=lambda r: abs(r["turn"]))
    if not rows:
        raise CalibrationError(f"{folder}: no validation pairs")
    picks = spread(rows, n, phase)
    tiles = [load_image(os.path.join(folder, r["file"])).rgb for r in picks]
    images = np.stack([t[:, :SIZE] for t in tiles])
    yaws = np.asarray([r["turn"] for r in picks], np.float32)
    if targets:
        return images, yaws, np.stack([t[:, SIZE:2 * SIZE] for t in tiles])
    return images, yaws
