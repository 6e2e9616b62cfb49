"""detect -> crop -> frontalize, shared by the CLI (``runtime.frontalize``) and the camera loop.

The crop framing (scale, vertical shift, size) comes from the model's metadata, so every
model sees faces framed the way its training crops were.
"""
from __future__ import annotations

import cv2
import numpy as np

from .detect import Face, FaceAnalyzer
from .engines import Engine, load_engine
from .errors import ModelError

# The shipped generator, bundled in runtime/assets/ (a bare name that is not a local file is looked
# up there, see runtime.engines.load_engine).
DEFAULT_MODEL = "frontalizer.onnx"


CROP_RULE = "canonical-eye-mouth"  # runtime.pose: the framing every model is trained on


def analyzer_for(engine: Engine, detector: str = "auto", threads: int = 2, **kw) -> FaceAnalyzer:
    m = engine.meta
    if m.get("crop_rule", CROP_RULE) != CROP_RULE:
        raise ModelError(f"{engine.path}: trained on '{m.get('crop_rule')}' crops; this runtime frames faces "
                         f"'{CROP_RULE}' (runtime.pose): re-train the model on crops from training.prepare")
    return FaceAnalyzer(detector=detector, crop_size=int(m.get("input_size", 128)), threads=threads, **kw)


class Frontalizer:
    """A model plus a face analyzer framed for it."""

    def __init__(self, model: str | Engine = DEFAULT_MODEL, engine: str = "auto", threads: int = 2,
                 detector: str = "auto"):
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
    """Draw the crop square (and the eye/mouth midpoints) of ``face`` on an RGB image in place."""
    pts = np.round(face.corners).astype(np.int32)
    cv2.polylines(img, [pts.reshape(-1, 1, 2)], True, color, 2, cv2.LINE_AA)
    x0, y0 = int(pts[:, 0].min()), int(pts[:, 1].min())
    if landmarks:
        r = max(2, int(face.size / 60))
        for x, y in face.landmarks.astype(int):
            cv2.circle(img, (int(x), int(y)), r, (255, 200, 0), -1, cv2.LINE_AA)
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
