"""Tiny generated data sets in multipie naming (``SID/SID_01_RR_CAM_LL.jpg``) for the training and
evaluation tests: no research data needed.

``cartoon_face``: a drawn face (skin ellipse, eyes, nose, mouth) whose features slide sideways
with the yaw, coloured per identity and brightened per illumination; the frontal view of the
same identity and illumination is the training target.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

YAW_CAM = {-90: "110", -75: "120", -60: "090", -45: "080", -30: "130", -15: "140", 0: "051",
           15: "050", 30: "041", 45: "190", 60: "200", 75: "010", 90: "240"}


def cartoon_face(ident: int, yaw: int, ill: str, size: int = 128) -> np.ndarray:
    rng = np.random.default_rng(ident)
    bg, skin, eye = (rng.integers(30, 226, 3) for _ in range(3))
    img = np.empty((size, size, 3), np.uint8)
    img[:] = bg
    cx, cy = size // 2 + int(yaw / 90 * size * 0.18), size // 2
    shift = int(yaw / 90 * size * 0.15)  # features move further than the head outline
    cv2.ellipse(img, (cx, cy), (int(size * 0.3 * (1 - abs(yaw) / 300)), int(size * 0.4)), 0, 0, 360,
                tuple(int(v) for v in skin), -1)
    for dx in (-1, 1):
        cv2.circle(img, (cx + shift + dx * size // 8, cy - size // 10), size // 20, tuple(int(v) for v in eye), -1)
    cv2.line(img, (cx + 2 * shift, cy - size // 20), (cx + 2 * shift, cy + size // 12), (60, 40, 40), 2)
    cv2.ellipse(img, (cx + shift, cy + size // 5), (size // 9, size // 30), 0, 0, 180, (120, 30, 40), -1)
    gain = 0.8 + 0.03 * int(ill)
    return np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def write_multipie(root: str, ids: list[str], yaws=(0, 15, 45, -75), ills=("07", "12"), recordings=("01",),
                   image_fn=None) -> None:
    """``image_fn(id_str, yaw, illumination) -> RGB uint8``; default: ``cartoon_face``."""
    image_fn = image_fn or (lambda sid, yaw, ill: cartoon_face(int(sid), yaw, ill))
    for sid in ids:
        os.makedirs(os.path.join(root, sid), exist_ok=True)
        for rec in recordings:
            for ill in ills:
                for yaw in yaws:
                    rgb = image_fn(sid, yaw, ill)
                    name = os.path.join(root, sid, f"{sid}_01_{rec}_{YAW_CAM[yaw]}_{ill}.jpg")
                    cv2.imwrite(name, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])


def multipie_manifest(root: str, split: dict[str, list[str]], path: str) -> dict:
    from training.datasets import build_manifest, write_manifest

    m = build_manifest(root, "multipie", split=split)
    write_manifest(m, path)
    return m


def pooled_manifest(root: str, path: str) -> dict:
    """A tiny training.pooled manifest over cartoon faces: studio pairs (kind mp30), frontal
    pass-throughs (mp30_front) and unpaired "wild" profiles (cfp_profile) of two identities per split."""
    import json

    rows, reals = {"train": [], "val": [], "test": []}, {"train": [], "val": [], "test": []}
    ids = {"train": ["001", "002"], "val": ["003"], "test": ["004"]}
    write_multipie(root, sum(ids.values(), []), yaws=(0, 30, -60, 90))
    for split, group in ids.items():
        for k, sid in enumerate(group):
            front = f"{sid}/{sid}_01_01_051_07.jpg"
            reals[split].append(front)
            rows[split].append({"kind": "mp30_front", "set": "multipie30", "x": front, "y": front, "id": sid,
                                "yaw": 0, "yaw_est": 1.5, "w": 1.0, "idt": -1})
            for yaw in (30, -60, 90):
                side = f"{sid}/{sid}_01_01_{YAW_CAM[yaw]}_07.jpg"
                rows[split].append({"kind": "mp30", "set": "multipie30", "x": side, "y": front, "id": sid,
                                    "yaw": yaw, "yaw_est": yaw + 3.0, "w": 1.0, "idt": -1})
            prof = f"{sid}/{sid}_01_01_240_12.jpg"
            rows[split].append({"kind": "cfp_profile", "set": "cfp400", "x": prof, "y": prof, "id": sid,
                                "yaw": None, "yaw_est": 85.0, "w": 0.0, "idt": k})
    m = {"kind": "pooled", "root": os.path.abspath(root), "pairs": rows, "reals": reals,
         "cfp_identities": ["001", "002"], "splits": {}}
    with open(path, "w") as f:
        json.dump(m, f)
    return m
