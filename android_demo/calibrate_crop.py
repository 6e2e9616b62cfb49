"""Calibrate the browser's crop square (from BlazeFace's box and keypoints) to the Python crop.

The Python runtime crops with the 3DDFA rule on dlib's 68 landmarks (runtime/crop.py);
the browser has only BlazeFace: a box and 6 keypoints. We fit, in units of the BlazeFace
box width w, the raw 3DDFA square (scale 1, shift 0) as

    centre = box centre + w * (a_x + b_x * p, a_y + b_y * p),   side = w * (a_s + b_s * |p|)

where p = (nose.x - midpoint of the ears.x) / w is a yaw proxy (0 frontal, ~±0.3 profile).
Both runtimes then apply the model's crop_scale / crop_shift_y the same way.

Data: multipie30 crops of the TRAIN identities (020-041) for the fit, val identities
(042-043) for the reported error, each padded to 256x256 with grey so the face has context,
plus the bundled samples. Test identities (044-049) are never read.
Writes src/crop_calibration.json (read by the browser) with the fit and the measured IoUs.

    .venv/bin/python android_demo/calibrate_crop.py [--per-cam 2]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from runtime.blazeface import INPUT, BlazeFace, _nms  # noqa: E402
from runtime.crop import roi_from_landmarks  # noqa: E402
from runtime.detect import FaceAnalyzer  # noqa: E402
from runtime.image_io import atomic_write_bytes, load_image  # noqa: E402
from training.datasets import MULTIPIE_CAM_YAW  # noqa: E402

DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "multipie30")
TRAIN = [f"{i:03d}" for i in range(20, 42)]
VAL = ["042", "043"]
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src", "crop_calibration.json")


def blaze_with_keypoints(bf: BlazeFace, rgb: np.ndarray):
    """Best BlazeFace detection as (box [x0,y0,x1,y1], keypoints (6,2)) in pixels, or None.

    Same letterbox and decoding as runtime/blazeface.py (and src/blazeface.js), keeping the
    keypoints that the Python runtime drops."""
    h, w = rgb.shape[:2]
    side = max(h, w)
    pad = np.zeros((side, side, 3), np.uint8)
    pad[:h, :w] = rgb
    x = (cv2.resize(pad, (INPUT, INPUT), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1.0)[None]
    bf.interp.set_tensor(bf.inp, x)
    bf.interp.invoke()
    raw = bf.interp.get_tensor(bf.out_boxes)[0]
    scores = 1 / (1 + np.exp(-np.clip(bf.interp.get_tensor(bf.out_scores)[0, :, 0].astype(np.float64), -100, 100)))
    sel = np.where(scores >= bf.score)[0]
    if sel.size == 0:
        return None
    a, r = bf.anchors[sel], raw[sel] / INPUT
    cx, cy = a[:, 0] + r[:, 0], a[:, 1] + r[:, 1]
    boxes = np.stack([cx - r[:, 2] / 2, cy - r[:, 3] / 2, cx + r[:, 2] / 2, cy + r[:, 3] / 2], -1) * side
    k = _nms(boxes, scores[sel], 0.3)[0]
    kp = (a[k][None] + r[k, 4:16].reshape(6, 2)) * side
    return boxes[k], kp


def features(box, kp):
    w = box[2] - box[0]
    p = (kp[2, 0] - (kp[4, 0] + kp[5, 0]) / 2) / w
    return w, (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, p


def predict(calib: dict, box, kp, scale=1.0, shift_y=0.0) -> np.ndarray:
    """The browser's rule (src/crop.js roiFromBlazeFace), kept identical."""
    w, cx, cy, p = features(box, kp)
    cx += w * (calib["a_x"] + calib["b_x"] * p)
    cy += w * (calib["a_y"] + calib["b_y"] * p)
    side = w * (calib["a_s"] + calib["b_s"] * abs(p)) * scale
    cy += shift_y * side
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def collect(paths, fa: FaceAnalyzer, bf: BlazeFace, pad: int):
    rows = []
    for path in paths:
        rgb = load_image(path).rgb
        if pad:
            rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(128, 128, 128))
        faces, _ = fa.analyze(rgb, max_faces=1)
        det = blaze_with_keypoints(bf, rgb)
        if not faces or det is None:
            continue
        ref = roi_from_landmarks(faces[0].landmarks, 1.0, 0.0)
        rows.append((os.path.basename(path), det[0], det[1], ref, pad))
    return rows


def fit(rows) -> dict:
    f = np.array([features(b, k) for _, b, k, _, _ in rows])
    ref = np.array([r for *_, r, _ in rows])
    w, cx, cy, p = f.T
    tx = ((ref[:, 0] + ref[:, 2]) / 2 - cx) / w
    ty = ((ref[:, 1] + ref[:, 3]) / 2 - cy) / w
    ts = (ref[:, 2] - ref[:, 0]) / w
    a = np.stack([np.ones_like(p), p], 1)
    (ax, bx), (ay, by) = np.linalg.lstsq(a, tx, rcond=None)[0], np.linalg.lstsq(a, ty, rcond=None)[0]
    a_s, b_s = np.linalg.lstsq(np.stack([np.ones_like(p), np.abs(p)], 1), ts, rcond=None)[0]
    return {k: round(float(v), 4) for k, v in dict(a_x=ax, b_x=bx, a_y=ay, b_y=by, a_s=a_s, b_s=b_s).items()}


def report(calib, rows, meta_scale, meta_shift, name):
    ious, dcs, dss = [], [], []
    for _, b, k, ref, _ in rows:
        # ref is already the raw 3DDFA square; apply the model's framing to both sides.
        side = (ref[2] - ref[0]) * meta_scale
        c = np.array([(ref[0] + ref[2]) / 2, (ref[1] + ref[3]) / 2 + meta_shift * side])
        ref_m = np.array([c[0] - side / 2, c[1] - side / 2, c[0] + side / 2, c[1] + side / 2])
        got = predict(calib, b, k, meta_scale, meta_shift)
        ious.append(iou(got, ref_m))
        dcs.append(np.hypot(*(got[:2] + got[2:] - ref_m[:2] - ref_m[2:]) / 2) / side)
        dss.append(abs((got[2] - got[0]) - side) / side)
    out = {"n": len(rows), "iou_mean": round(float(np.mean(ious)), 3), "iou_min": round(float(np.min(ious)), 3),
           "centre_err_mean": round(float(np.mean(dcs)), 3), "side_err_mean": round(float(np.mean(dss)), 3)}
    print(f"{name}: {out}")
    return out


def by_yaw(calib, rows, scale, shift) -> dict:
    """IoU with the Python crop per |yaw| (multipie camera), train and val rows together."""
    groups = {}
    for row in rows:
        yaw = MULTIPIE_CAM_YAW.get(row[0].rsplit("_", 2)[1])
        if yaw is not None:
            groups.setdefault(abs(yaw), []).append(row)
    return {f"{y} deg": report(calib, g, scale, shift, f"|yaw| {y}")["iou_mean"] for y, g in sorted(groups.items())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-cam", type=int, default=2, help="images per (identity, camera) (default 2)")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    if not os.path.isdir(DATA):
        sys.exit(f"{DATA} not found: calibration needs multipie30")
    from tqdm import tqdm

    fa = FaceAnalyzer("cascade", crop_scale=1.0, crop_shift_y=0.0)
    bf = BlazeFace(threads=1)

    def pick(ids):
        out = []
        for sid in ids:
            by_cam = {}
            for p in sorted(glob.glob(os.path.join(DATA, sid, "*.jpg"))):
                by_cam.setdefault(p.rsplit("_", 2)[1], []).append(p)
            for ps in by_cam.values():  # spread over lighting: every k-th file of this camera
                out += ps[:: max(1, len(ps) // args.per_cam)][: args.per_cam]
        return out

    train = collect(tqdm(pick(TRAIN), desc="train"), fa, bf, 64)
    val = collect(tqdm(pick(VAL), desc="val"), fa, bf, 64)
    samples = collect(sorted(glob.glob(os.path.join(ROOT, "samples", "*.jpg"))), fa, bf, 0)
    calib = fit(train)
    identity = {"a_x": 0.0, "b_x": 0.0, "a_y": 0.0, "b_y": 0.0, "a_s": 1.0, "b_s": 0.0}
    scale, shift = 0.95, -0.075  # the edge model's framing (runtime/model_meta.default_meta)
    result = {
        "rule": "centre = box centre + w*(a + b*p); side = w*(a_s + b_s*|p|); p = (nose.x - ears mid.x)/w; "
                "then side *= crop_scale, centre.y += crop_shift_y*side (as runtime/crop.py)",
        **calib,
        "fitted_on": f"multipie30 train ids 020-041, {len(train)} images padded to 256 px (grey), "
                     "target: Python FaceAnalyzer('cascade') 68 landmarks -> 3DDFA square",
        "agreement_with_python_crop": {
            "train": report(calib, train, scale, shift, "train"),
            "val_042_043": report(calib, val, scale, shift, "val"),
            "samples": report(calib, samples, scale, shift, "samples"),
            "uncalibrated_box_val": report(identity, val, scale, shift, "uncalibrated (BlazeFace box as is), val"),
            "iou_by_abs_yaw": by_yaw(calib, train + val, scale, shift),
        },
        "measured_with": "crop_scale 0.95, crop_shift_y -0.075",
    }
    atomic_write_bytes(args.out, (json.dumps(result, indent=1) + "\n").encode())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
