"""Head pose and 68 landmarks from 3DDFA_V2's MobileNet-0.5 (``tddfa_mb05.onnx``, made by
``python -m training.tddfa_export`` / ``make tddfa`` from ../shared/models/3ddfa_v2; the weights are
research-only, see training/tddfa_export.py).

The network sees a 120 px square around the face and returns a 3x4 projection [sR | t] of its 3D face
model into that crop, plus 68 landmarks (the hidden side included). It was trained on 300W-LP,
synthetic large-pose views of in-the-wild faces, so it reads three-quarter views of real photos
where a network trained on studio poses and on CFP's frontal/profile extremes does not.

Two passes, as 3DDFA_V2 runs it: the first from a square around the face (here the canonical
eye-mouth square, enlarged and moved down to frame brow to chin), the second from the first pass's
landmarks (a square of sqrt(2) x their larger extent, centred on their bounds). In a video the
second pass can start from the previous frame's landmarks instead (``read(..., previous=...)``), as
3DDFA_V2's own video demo does: one pass a frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .pose import box_affine, crop

INPUT = 120
# First-pass square from the canonical one (side S, centred between the eyes and the mouth's midpoint
# ... E at 41.4/128 of S): 3DDFA_V2 frames brow to chin with margin, about 1.1 x S, centred ~0.1 S lower.
FIRST_SCALE, FIRST_SHIFT = 1.1, 0.1


@dataclass
class HeadPose:
    yaw: float  # degrees, + = nose towards the image's right
    pitch: float  # degrees, + = looking up
    roll: float  # degrees, + = head tilted clockwise in the image
    landmarks: np.ndarray  # (68, 2) image pixels, hidden side included
    square: tuple  # (cx, cy, side, angle) of the crop the network read


def angles(param: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from the 12 pose values [sR | t] (row-major 3x4).

    The two rows of sR are normalised, the third is their cross product; yaw is the rotation about
    the model's vertical axis. The model's x axis points to the image's right and its y axis up, so
    a face turned towards the image's right (our + yaw) has R[2, 0] < 0."""
    p = np.asarray(param[:12], np.float64).reshape(3, 4)
    r1, r2 = p[0, :3] / np.linalg.norm(p[0, :3]), p[1, :3] / np.linalg.norm(p[1, :3])
    r = np.stack([r1, r2, np.cross(r1, r2)])
    yaw = -math.degrees(math.asin(float(np.clip(r[2, 0], -1.0, 1.0))))
    c = math.cos(math.radians(yaw)) or 1e-9
    pitch = math.degrees(math.atan2(r[2, 1] / c, r[2, 2] / c))
    roll = -math.degrees(math.atan2(r[1, 0] / c, r[0, 0] / c))
    return yaw, pitch, roll


class Tddfa:
    """``read(rgb, squares)`` -> one HeadPose per square (cx, cy, side, angle) of the canonical crop."""

    def __init__(self, path: str | None = None, threads: int = 2):
        from .assets import asset
        from .engines import onnx_session

        self.path = path or asset("tddfa_mb05.onnx")
        self.session = onnx_session(self.path, threads, "cpu")

    def _run(self, rgb: np.ndarray, squares: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
        crops = np.stack([crop(rgb, sq, INPUT) for sq in squares])
        return self.session.run(["param", "landmarks"], {"image": crops})

    @staticmethod
    def _to_image(lm: np.ndarray, square) -> np.ndarray:
        """(2, 68) crop pixels -> (68, 2) image pixels."""
        inv = cv2.invertAffineTransform(box_affine(*square, size=INPUT))
        return lm.T @ inv[:, :2].T + inv[:, 2]

    @staticmethod
    def first_square(canonical_square) -> tuple:
        """The first pass's square from a face's canonical one: enlarged and moved down to frame brow to chin."""
        cx, cy, side, angle = canonical_square
        return (cx - math.sin(angle) * FIRST_SHIFT * side, cy + math.cos(angle) * FIRST_SHIFT * side,
                side * FIRST_SCALE, angle)

    @staticmethod
    def square_of(pts: np.ndarray) -> tuple:
        """The second pass's square from landmarks (68, 2): sqrt(2) x their larger extent, on their bounds."""
        lo, hi = pts.min(0), pts.max(0)
        c = (lo + hi) / 2
        return float(c[0]), float(c[1]), float(math.sqrt(2) * (hi - lo).max()), 0.0

    def read(self, rgb: np.ndarray, canonical_squares: list[tuple], previous: list | None = None) -> list[HeadPose]:
        """``previous``: per square, the same face's landmarks in the previous video frame (or None):
        where given, the first pass is skipped and the second starts from them."""
        if not canonical_squares:
            return []
        previous = previous or [None] * len(canonical_squares)
        first = [self.first_square(sq) for sq, prev in zip(canonical_squares, previous) if prev is None]
        lms = iter(self._run(rgb, first)[1] if first else [])
        sq1 = iter(first)
        second = [self.square_of(np.asarray(prev) if prev is not None else self._to_image(next(lms), next(sq1)))
                  for prev in previous]
        params, lms = self._run(rgb, second)
        return [HeadPose(*angles(p), self._to_image(lm, sq), sq) for p, lm, sq in zip(params, lms, second)]
