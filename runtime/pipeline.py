"""detect -> crop -> frontalize, shared by the CLI (``runtime.frontalize``) and the camera loop.

The crop framing (scale, vertical shift, size) comes from the model's metadata, so every
model sees faces framed the way its training crops were.
"""
from __future__ import annotations

import cv2
import numpy as np

from .detect import Face, FaceAnalyzer
from .engines import Engine, load_engine

DEFAULT_MODEL = "models/edge_generator.onnx"


def analyzer_for(engine: Engine, detector: str = "cascade", threads: int = 2, **kw) -> FaceAnalyzer:
    m = engine.meta
    return FaceAnalyzer(detector=detector, crop_size=int(m.get("input_size", 128)),
                        crop_scale=float(m.get("crop_scale", 1.0)), crop_shift_y=float(m.get("crop_shift_y", 0.0)),
                        threads=threads, **kw)


class Frontalizer:
    """A model plus a face analyzer framed for it."""

    def __init__(self, model: str | Engine = DEFAULT_MODEL, engine: str = "auto", threads: int = 2,
                 detector: str = "cascade"):
        self.engine = model if isinstance(model, Engine) else load_engine(model, engine, threads)
        self.analyzer = analyzer_for(self.engine, detector, threads)

    def faces(self, rgb: np.ndarray, max_faces: int | None = None) -> tuple[list[Face], list[str]]:
        return self.analyzer.analyze(rgb, max_faces)

    def frontalize(self, faces: list[Face]) -> list[np.ndarray]:
        """One RGB uint8 frontal prediction per face (one batched model call)."""
        if not faces:
            return []
        crops = np.stack([f.crop for f in faces])
        return list(self.engine.run(crops, yaw=[f.yaw for f in faces]))


def draw_face(img: np.ndarray, face: Face, color=(0, 255, 0), landmarks: bool = True) -> None:
    """Draw the crop box (and landmarks) of ``face`` on an RGB image in place."""
    x0, y0, x1, y1 = (int(round(v)) for v in face.box)
    cv2.rectangle(img, (x0, y0), (x1, y1), color, 2, cv2.LINE_AA)
    if landmarks:
        for x, y in face.landmarks.astype(int):
            cv2.circle(img, (int(x), int(y)), 1, (255, 200, 0), -1)
    label = f"yaw {face.yaw:+.0f}" if np.isfinite(face.yaw) else "yaw ?"
    cv2.putText(img, label, (x0, max(12, y0 - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)


def side_by_side(images: list[np.ndarray], height: int) -> np.ndarray:
    """Resize each RGB image to ``height`` (keeping aspect) and concatenate left to right."""
    row = []
    for im in images:
        if im.shape[0] == height:
            row.append(im)
            continue
        w = max(1, round(im.shape[1] * height / im.shape[0]))
        interp = cv2.INTER_AREA if im.shape[0] > height else cv2.INTER_LINEAR
        row.append(cv2.resize(im, (w, height), interpolation=interp))
    return np.concatenate(row, axis=1)
