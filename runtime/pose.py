"""Pose network at run time: yaw, two framing keypoints and a face score per candidate box, and
the canonical crop that every generator is trained and run on.

The network (``training.posenet``, shipped as ``posenet.onnx``) looks at a square box around a
face candidate, resampled to 96x96, and returns (one vector: score logit, E, M, yaw bin logits)

- ``score``: how sure it is that the box holds a face (verifies detector boxes);
- ``E`` and ``M``: the projected midpoints between the eye centres and between the mouth corners;
- ``yaw`` in degrees, -90 .. +90, positive = nose towards the image's right (softmax expectation
  over 15-degree classes).

Both keypoints lie on the face's midline, so they exist at every yaw, and the canonical crop is
framed on them: E at (64, 41.4) of a 128 px square and M 47.5 px straight below it, the square
turned so that E->M points down. That is the framing of multipie137's aligned crops (and of
TP-GAN's), measured in ``training.pose_labels``. A face is read in two passes: the first from
the detector's box, the second from the canonical square of the first (x1.25), which is the box
the network knows best; the second pass's keypoints and yaw are kept.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import ModelError

INPUT = 96
CANON_SIZE = 128
CROP_RULE = "canonical-eye-mouth"  # crop(): the framing every generator is trained on (model metadata crop_rule)
CANON_E_Y, CANON_EM = 41.4, 47.5  # in a 128 px canonical crop
REFINE_SCALE = 1.25  # second-pass box = canonical square x this
DET_SCALE = 1.7  # first-pass box = detector box side x this (a detector box spans ~brow..chin)
CHUNK = 16  # boxes per pose-network call (bounded memory on a crowd)
YAW_BINS = tuple(range(-90, 91, 15))  # the network's yaw classes; the estimate is their softmax expectation


def decode_yaw(logits: np.ndarray) -> np.ndarray:
    """Yaw bin logits (..., 13) -> degrees (...)."""
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ np.asarray(YAW_BINS, np.float64)


def box_affine(cx: float, cy: float, side: float, angle: float = 0.0, size: int = INPUT) -> np.ndarray:
    """2x3 matrix mapping the image onto a size x size view of the square with centre (cx, cy),
    ``side`` px and rotation ``angle`` (radians; the square's 'down' is (-sin, cos))."""
    c, s = math.cos(angle), math.sin(angle)
    k = size / side
    a = np.array([[c * k, s * k], [-s * k, c * k]])
    t = np.array([size / 2, size / 2]) - a @ np.array([cx, cy])
    return np.hstack([a, t[:, None]])


def apply(aff: np.ndarray, pts) -> np.ndarray:
    """A 2x3 affine map applied to points (..., 2), keeping their shape; a flat list is read as pairs."""
    p = np.asarray(pts, float)
    if p.ndim < 2:
        p = p.reshape(-1, 2)
    return p @ aff[:, :2].T + aff[:, 2]


def invert(aff: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(aff)


def canonical_square(e, m) -> tuple[float, float, float, float]:
    """(cx, cy, side, angle) of the canonical crop whose E and M fall on the canonical spots."""
    e, m = np.asarray(e, float), np.asarray(m, float)
    d = m - e
    dist = max(float(np.hypot(*d)), 1e-3)
    angle = math.atan2(-d[0], d[1])  # 0 when M is straight below E
    c = e + d * ((CANON_SIZE / 2 - CANON_E_Y) / CANON_EM)
    return float(c[0]), float(c[1]), dist * CANON_SIZE / CANON_EM, angle


def square_corners(sq) -> np.ndarray:
    """(4, 2) corners of a (cx, cy, side, angle) square, clockwise from top-left."""
    cx, cy, side, angle = sq
    c, s, h = math.cos(angle), math.sin(angle), side / 2
    right, down = np.array([c, s]), np.array([-s, c])
    ctr = np.array([cx, cy])
    return np.array([ctr + h * (-right - down), ctr + h * (right - down), ctr + h * (right + down),
                     ctr + h * (-right + down)])


def square_bbox(sq) -> np.ndarray:
    p = square_corners(sq)
    return np.array([*p.min(0), *p.max(0)])


@dataclass
class Pose:
    E: np.ndarray  # (2,) image px
    M: np.ndarray
    yaw: float  # degrees
    score: float  # 0..1
    square: tuple  # canonical (cx, cy, side, angle)


def crop(rgb: np.ndarray, square, size: int = CANON_SIZE) -> np.ndarray:
    """The square resampled to size x size (zeros outside the image); area-averaged when shrinking."""
    cx, cy, side, angle = square
    src = rgb
    k = int(side / (size * 1.5))
    if k >= 2:  # shrink first so a large face is averaged, not aliased
        src = cv2.resize(rgb, (max(1, rgb.shape[1] // k), max(1, rgb.shape[0] // k)), interpolation=cv2.INTER_AREA)
        sx, sy = src.shape[1] / rgb.shape[1], src.shape[0] / rgb.shape[0]
        cx, cy, side = cx * sx, cy * sy, side * (sx + sy) / 2
    return cv2.warpAffine(src, box_affine(cx, cy, side, angle, size), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


class PoseNet:
    """The pose network in onnxruntime (one session; batches of boxes)."""

    def __init__(self, path: str, threads: int = 2):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ModelError(f"{path}: cannot load the pose model ({str(e).strip().splitlines()[0][:200]})") from None
        self.inp = self.sess.get_inputs()[0].name

    def predict(self, rgb: np.ndarray, squares: list) -> list[Pose]:
        """One Pose per (cx, cy, side, angle) input box."""
        if not squares:
            return []
        affs = [box_affine(*sq) for sq in squares]
        y = np.concatenate([self.sess.run(None, {self.inp: np.stack([crop(rgb, sq, INPUT) for sq in squares[i:i + CHUNK]])})[0]
                            for i in range(0, len(squares), CHUNK)])  # bounded memory on a crowd
        out = []
        yaws = decode_yaw(y[:, 5:])
        for aff, v, yaw in zip(affs, y, yaws):
            kp = apply(invert(aff), (v[1:5].reshape(2, 2) + 1) * INPUT / 2)
            yaw = float(yaw)
            score = float(1.0 / (1.0 + math.exp(-float(np.clip(v[0], -50, 50)))))
            out.append(Pose(kp[0], kp[1], yaw, score, canonical_square(kp[0], kp[1])))
        return out

    def refine(self, rgb: np.ndarray, boxes: list) -> list[Pose]:
        """Two passes from detector boxes [x0, y0, x1, y1]; the score is the lower of the two."""
        first = self.predict(rgb, [det_square(b) for b in boxes])
        second = self.predict(rgb, [(p.square[0], p.square[1], p.square[2] * REFINE_SCALE, p.square[3]) for p in first])
        for a, b in zip(first, second):
            b.score = min(a.score, b.score)
        return second


def det_square(box) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    return (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * DET_SCALE, 0.0
