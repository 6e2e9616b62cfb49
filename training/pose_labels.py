"""Labels for the pose network (``training.posenet``): yaw and two framing keypoints per image.

The keypoints are the two midline points that every view shows and that fix the crop framing at
any yaw: ``E``, the midpoint between the eye centres, and ``M``, the midpoint between the mouth
corners (both as projected into the image). multipie137's crops are aligned on them (E at
(63.7, 41.4), M at y = 89 in every view: measured with dlib's 68 points on 800 of its views up to
60 deg, where M's x drifts by ~4 px towards the nose at 60 deg), so the canonical crop of
``runtime.pose`` is that framing.

Sources, per set (``SPLITS`` holds the identity splits; test identities are labelled only so
that evaluation can read them, and never reach training, selection or calibration):

- multipie30: yaw from the camera (exact). E/M from dlib's HOG + 68 points (2x upscaled, padded)
  for |yaw| <= 45, on illumination 07 and shared by the other 19 illuminations of the same
  person, recording and camera (all flashes of one camera are the same instant). Larger yaws:
  no keypoints (dlib's 68-point model does not fit profiles).
- multipie137: yaw = +|camera yaw| (its negative-yaw views are stored mirrored: nose to the
  right in all). E = (63.7, 41.4), M = (64 + 4.5 sin(yaw), 89.0) from the alignment above.
  TP-GAN frontals: yaw 0, E = (63.8, 41.5), M = (63.6, 88.9).
- cfp400: frontal photos: dlib 68 as above (yaw label "frontal": |yaw| <= 30, a bound rather than
  a value); profile photos: CFP's fiducials (a half-face annotation: 19 = nasion, 13-18 the
  visible eye, 26 the visible mouth corner, 28 the midline between the lips), yaw label
  "profile" (|yaw| >= 55) with the sign from the nose's side; at 90 deg E and M project onto
  the visible eye centre and mouth corner, at 75 deg about a quarter of the way to the midline:
  E = eye + 0.15 (nasion - eye) in x, M = corner + 0.25 (lips - corner).

Yaw sign: positive = nose towards the image's right (multipie30's camera table: camera 240, +90).

``python -m training.pose_labels --out artifacts/pose_labels.json``
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
from collections import defaultdict

import cv2
import numpy as np
from tqdm import tqdm

from .datasets import DEFAULT_DATA_ROOT, MULTIPIE_CAM_YAW

# Identity splits of the pooled sets. multipie30 044-049, multipie137 325-346 and cfp400 351-400
# (CFP fold 08) are the held-out test identities of the issues; val picks models and calibrates.
SPLITS = {
    "multipie30": {"train": range(20, 42), "val": range(42, 44), "test": range(44, 50)},
    "multipie137": {"train": range(201, 315), "val": range(315, 325), "test": range(325, 347)},
    "cfp400": {"train": range(1, 301), "val": range(301, 351), "test": range(351, 401)},
}
MP137_E = (63.7, 41.4)
MP137_M_Y, MP137_M_DRIFT = 89.0, 4.5
TPGAN_E, TPGAN_M = (63.8, 41.5), (63.6, 88.9)


def split_of(dataset: str, identity: str | int) -> str:
    i = int(identity)
    for name, ids in SPLITS[dataset].items():
        if i in ids:
            return name
    raise ValueError(f"{dataset} id {identity} is in no split")


class Dlib68:
    """dlib HOG + 68 landmarks on a 2x upscaled copy with a border (small crops, faces at the edge)."""

    def __init__(self):
        import dlib

        from runtime.detectors import dlib_model_file

        self.hog = dlib.get_frontal_face_detector()
        self.sp = dlib.shape_predictor(dlib_model_file("shape_predictor_68_face_landmarks.dat"))

    def eye_mouth(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        f, pad = 2.0, 64
        big = cv2.copyMakeBorder(cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_LINEAR),
                                 pad, pad, pad, pad, cv2.BORDER_CONSTANT)
        dets, scores, _ = self.hog.run(big, 0, 0.0)
        if not dets:
            return None
        d = dets[int(np.argmax([(r.right() - r.left()) for r in dets]))]
        p = np.array([[q.x, q.y] for q in self.sp(big, d).parts()], float)
        p = (p - pad) / f
        e = (p[36:42].mean(0) + p[42:48].mean(0)) / 2
        m = (p[48] + p[54]) / 2
        return e, m


def _read_rgb(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path}: unreadable")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _row(dataset, rel, identity, yaw, kind, e=None, m=None, **extra) -> dict:
    r = {"set": dataset, "path": rel, "id": identity, "split": split_of(dataset, identity), "yaw": yaw,
         "yaw_kind": kind, "E": None if e is None else [round(float(v), 2) for v in e],
         "M": None if m is None else [round(float(v), 2) for v in m]}
    r.update(extra)
    return r


_MP = re.compile(r"(\d{3})_(\d{2})_(\d{2})_(\d{3})_(\d{2})(_tpgan)?\.jpg$")


def multipie30_rows(root: str, dl: Dlib68) -> list[dict]:
    files = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
                   if _MP.search(f))
    groups = defaultdict(list)  # (id, session, recording, cam) -> files (one per illumination)
    for rel in files:
        sid, ss, rr, cam, ll, _ = _MP.search(rel).groups()
        groups[(sid, ss, rr, cam)].append((ll, rel))
    rows = []
    for (sid, ss, rr, cam), items in tqdm(sorted(groups.items()), desc="multipie30", unit="view"):
        yaw = MULTIPIE_CAM_YAW[cam]
        e = m = None
        if abs(yaw) <= 45:
            # the same instant under 20 flashes: median of three well-lit ones
            lit = [rel for ll, rel in items if ll in ("06", "07", "08")] or [items[0][1]]
            found = [r for r in (dl.eye_mouth(_read_rgb(os.path.join(root, rel))) for rel in lit) if r]
            if found:
                e = np.median([f[0] for f in found], 0)
                m = np.median([f[1] for f in found], 0)
        rows += [_row("multipie30", rel, sid, yaw, "exact", e, m, cam=cam, illumination=ll) for ll, rel in items]
    return rows


def multipie137_rows(root: str) -> list[dict]:
    rows = []
    with open(os.path.join(root, "pairs.csv")) as f:
        for rec in csv.DictReader(f):
            sid, ss, rr, cam, ll, _ = _MP.search(rec["side"]).groups()
            yaw = abs(MULTIPIE_CAM_YAW[cam])
            m = (MP137_E[0] + MP137_M_DRIFT * math.sin(math.radians(yaw)), MP137_M_Y)
            extra = dict(cam=cam, mirrored=MULTIPIE_CAM_YAW[cam] < 0)
            rows.append(_row("multipie137", rec["side"], sid, yaw, "exact", MP137_E, m, **extra))
            rows.append(_row("multipie137", rec["frontal"], sid, 0, "exact", TPGAN_E, TPGAN_M, tpgan=True, **extra))
    return rows


def cfp_rows(root: str, dl: Dlib68) -> list[dict]:
    rows = []
    with open(os.path.join(root, "Data", "fiducials.csv")) as f:
        recs = list(csv.reader(f))[1:]
    for rec in tqdm(recs, desc="cfp400", unit="img"):
        rel, kind = rec[0], rec[0].split("/")[-2]
        sid = rel.split("/")[-3]
        p = np.array(rec[3:], float).reshape(30, 2)
        eye, nasion, corner, lips, nose_tip = p[12:18].mean(0), p[18], p[25], p[27], p[21]
        if kind == "frontal":
            em = dl.eye_mouth(_read_rgb(os.path.join(root, rel)))
            e, m = em if em else ((nasion[0], eye[1]), lips)  # dlib missed: the midline fiducials
            rows.append(_row("cfp400", rel, sid, 0, "frontal", e, m, fiducial_box=_box(p)))
        else:
            sign = 1 if nose_tip[0] > eye[0] else -1
            e = (eye[0] + 0.15 * (nasion[0] - eye[0]), eye[1])
            m = corner + 0.25 * (lips - corner)
            rows.append(_row("cfp400", rel, sid, 90 * sign, "profile", e, m, fiducial_box=_box(p)))
    return rows


def _box(p: np.ndarray) -> list[float]:
    return [round(float(v), 2) for v in (*p.min(0), *p.max(0))]


def add_pseudo_keypoints(rows: list[dict], root: str, pose_model: str) -> int:
    """multipie30's views beyond 45 deg have no dlib keypoints: give them the pose network's own
    (median over three flashes of the same instant, as for dlib), marked ``pseudo``, so the network
    also learns those yaws on multipie30's framing (without them it read 60 deg as ~74 on the
    held-out ids). Test identities are left alone."""
    from runtime.detect import FaceAnalyzer

    fa = FaceAnalyzer(pose_model=pose_model, threads=1)
    groups = defaultdict(list)
    for r in rows:
        if r["set"] == "multipie30" and r["E"] is None and r["split"] != "test":
            groups[r["path"].rsplit("_", 1)[0]].append(r)
    done = 0
    for key, rs in tqdm(sorted(groups.items()), desc="pseudo keypoints", unit="view", mininterval=10):
        lit = [r for r in rs if r["illumination"] in ("06", "07", "08")] or rs[:1]
        found = []
        for r in lit:
            faces, _ = fa.analyze(_read_rgb(os.path.join(root, "multipie30", r["path"])), 1)
            if faces:
                found.append(faces[0].landmarks)
        if found:
            e, m = np.median([f[0] for f in found], 0), np.median([f[1] for f in found], 0)
            for r in rs:
                r["E"], r["M"], r["pseudo"] = [round(float(v), 2) for v in e], [round(float(v), 2) for v in m], True
            done += len(rs)
    return done


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m training.pose_labels", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA_ROOT)
    ap.add_argument("--out", default="artifacts/pose_labels.json")
    ap.add_argument("--pseudo", metavar="POSENET_ONNX",
                    help="only add the pose network's keypoints to the multipie30 views dlib cannot read (in --out)")
    a = ap.parse_args(argv)
    if a.pseudo:
        from runtime.image_io import atomic_write_bytes

        lab = json.load(open(a.out))
        n = add_pseudo_keypoints(lab["rows"], lab["root"], a.pseudo)
        atomic_write_bytes(a.out, json.dumps(lab).encode())
        print(f"{a.out}: pseudo keypoints for {n} images")
        return
    dl = Dlib68()
    rows = (multipie30_rows(os.path.join(a.data, "multipie30"), dl)
            + multipie137_rows(os.path.join(a.data, "multipie137"))
            + cfp_rows(os.path.join(a.data, "cfp400"), dl))
    from runtime.image_io import atomic_write_bytes

    atomic_write_bytes(a.out, json.dumps({"root": os.path.abspath(a.data), "rows": rows}).encode())
    n_kp = sum(r["E"] is not None for r in rows)
    print(f"{a.out}: {len(rows)} images, {n_kp} with keypoints")


if __name__ == "__main__":
    main()
