"""Square face ROI from landmarks (the 3DDFA rule) and zero-padded cropping.

3DDFA's ``parse_roi_box_from_landmark``: take the bounding box of the landmarks,
make it a square on the same centre with side = the longer box side, then grow
that square to side = its own diagonal (x sqrt 2). ``scale`` multiplies the final
side and ``shift_y`` moves the box down by that fraction of its side: (1.0, 0.0) is the
3DDFA rule. A model states the framing it was trained on in its metadata (multipie30's
crops are the 3DDFA box at scale 0.95 moved up by 0.075 of its side, measured on 30
frontal crops), and the runtime crops with that.
"""
from __future__ import annotations

import math

import cv2
import numpy as np


def roi_from_landmarks(landmarks: np.ndarray, scale: float = 1.0, shift_y: float = 0.0) -> np.ndarray:
    """(N,2) points -> [x0, y0, x1, y1] float square box; ``shift_y`` moves it by that fraction of its side."""
    pts = np.asarray(landmarks, dtype=np.float64)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = max(x1 - x0, y1 - y0)  # squared box
    side = side * math.sqrt(2.0) * scale  # grown to its diagonal
    cy += shift_y * side
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def crop_square(image: np.ndarray, box, size: int = 128) -> np.ndarray:
    """Crop ``box`` (rounded to whole pixels) with zeros outside the image, resize to size x size."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty crop box {box}")
    h, w = image.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0) + image.shape[2:], dtype=image.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    interp = cv2.INTER_AREA if out.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(out, (size, size), interpolation=interp)
