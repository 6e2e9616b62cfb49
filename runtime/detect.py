"""Face detection, 68 landmarks, 3DDFA square ROI, crop and yaw: ``FaceAnalyzer``.

Detector strategy ``cascade`` (the default), chosen by measurement on multipie30
(README, "Side faces"):

1. dlib HOG frontal detector (fast, ~10 ms at 640 px; finds faces up to ~45 deg of yaw);
2. where it finds nothing: BlazeFace short-range (MediaPipe's tflite via LiteRT, ~2 ms),
   which also fires on profiles;
3. where that finds nothing too: dlib's CNN (MMOD) detector from face-recognition-models
   on the image downscaled to ``cnn_side`` px (slow, ~0.1-0.3 s, but rarely reached).

Landmarks come from dlib's 68-point shape predictor on the detector's box (boxes from
BlazeFace are mapped to HOG-like boxes first). Yaw is estimated with solvePnP of six
landmarks against a generic 3D face; positive yaw = the face turned towards the image's
left side, the sign of multipie30's camera table.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import cv2
import numpy as np

from .crop import crop_square, roi_from_landmarks
from .errors import ModelError

# Generic 3D face (mm) for solvePnP: nose tip, chin, eye outer corners, mouth corners.
_PNP_IDX = [30, 8, 36, 45, 48, 54]
_PNP_3D = np.array([[0.0, 0.0, 0.0], [0.0, -63.6, -12.5], [-43.3, 32.7, -26.0],
                    [43.3, 32.7, -26.0], [-28.9, -28.9, -24.1], [28.9, -28.9, -24.1]])


@dataclass
class Face:
    crop: np.ndarray  # size x size x 3 RGB uint8
    box: np.ndarray  # square ROI [x0,y0,x1,y1] in image pixels (may extend past the image)
    det_box: np.ndarray  # detector box [x0,y0,x1,y1]
    landmarks: np.ndarray  # (68,2) image pixels
    yaw: float  # degrees, estimated
    detector: str
    score: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def size(self) -> float:
        return float(self.det_box[2] - self.det_box[0])


def _dlib_models() -> tuple[str, str]:
    """Paths of the 68-landmark and CNN detector models shipped in face-recognition-models."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        raise ModelError("face-recognition-models is not installed (pip install face-recognition-models)")
    models = os.path.join(list(spec.submodule_search_locations)[0], "models")
    return (os.path.join(models, "shape_predictor_68_face_landmarks.dat"),
            os.path.join(models, "mmod_human_face_detector.dat"))


def dlib_model_dir() -> str:
    return os.path.dirname(_dlib_models()[0])


def estimate_yaw(landmarks: np.ndarray, image_size: tuple[int, int]) -> float:
    h, w = image_size
    f = float(max(h, w))
    cam = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    ok, rvec, _ = cv2.solvePnP(_PNP_3D, landmarks[_PNP_IDX].astype(np.float64), cam, None,
                               flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return float("nan")
    r, _ = cv2.Rodrigues(rvec)
    # yaw = rotation about the vertical axis, from the rotation matrix's third row.
    return float(-math.degrees(math.asin(max(-1.0, min(1.0, -r[2, 0])))))


class FaceAnalyzer:
    DETECTORS = ("cascade", "hog", "blazeface", "cnn")

    def __init__(self, detector: str = "cascade", crop_size: int = 128, crop_scale: float = 1.0, crop_shift_y: float = 0.0,
                 det_side: int = 640, min_det_side: int = 256, cnn_side: int = 256, min_face: int = 24,
                 threads: int = 2):
        import dlib

        if detector not in self.DETECTORS:
            raise ValueError(f"detector must be one of {self.DETECTORS}")
        self.detector, self.crop_size, self.crop_scale, self.crop_shift_y = detector, crop_size, crop_scale, crop_shift_y
        self.det_side, self.min_det_side, self.cnn_side, self.min_face = det_side, min_det_side, cnn_side, min_face
        shape_path, cnn_path = _dlib_models()
        self.shape = dlib.shape_predictor(shape_path)
        self.hog = dlib.get_frontal_face_detector()
        self._cnn_path, self._cnn, self._blaze, self._threads = cnn_path, None, None, threads
        self._dlib = dlib

    # -- detectors, each on an RGB image, returning [(box, score)] in that image's pixels --
    def _hog(self, img):
        dets, scores, _ = self.hog.run(img, 0, 0.0)
        return [(np.array([d.left(), d.top(), d.right(), d.bottom()], float), float(s)) for d, s in zip(dets, scores)]

    def _blazeface(self, img):
        if self._blaze is None:
            from .blazeface import BlazeFace

            self._blaze = BlazeFace(threads=self._threads)
        out = []
        for b, s in self._blaze(img):
            # BlazeFace boxes sit higher and tighter than dlib's: shift down and grow ~10%
            # so the 68-point predictor starts where it was trained to.
            cx, cy, side = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, (b[2] - b[0]) * 1.1
            cy += 0.1 * side
            out.append((np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]), s))
        return out

    def _cnn_detect(self, img):
        if self._cnn is None:
            self._cnn = self._dlib.cnn_face_detection_model_v1(self._cnn_path)
        f = min(1.0, self.cnn_side / max(img.shape[:2]))
        small = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) if f < 1 else img
        dets = self._cnn(small, 0)
        return [(np.array([d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()], float) / f,
                 float(d.confidence)) for d in dets]

    def detect(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float, str]]:
        """Boxes in ``rgb``'s pixels, largest first."""
        h, w = rgb.shape[:2]
        long_side = max(h, w)
        f = min(self.det_side, max(self.min_det_side, long_side)) / long_side
        img = cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR) \
            if abs(f - 1) > 1e-6 else rgb
        order = {"cascade": ("hog", "blazeface", "cnn")}.get(self.detector, (self.detector,))
        found, name = [], ""
        for name in order:
            found = {"hog": self._hog, "blazeface": self._blazeface, "cnn": self._cnn_detect}[name](img)
            if found:
                break
        out = [(b / f, s, name) for b, s in found]
        return sorted(out, key=lambda t: -(t[0][2] - t[0][0]))

    def landmarks(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        shape = self.shape(rgb, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)

    def analyze(self, rgb: np.ndarray, max_faces: int | None = None) -> tuple[list[Face], list[str]]:
        """All faces (largest first) and notes about faces that were skipped (e.g. too small)."""
        faces, notes = [], []
        for box, score, name in self.detect(rgb):
            if box[2] - box[0] < self.min_face:
                notes.append(f"face of {box[2] - box[0]:.0f} px skipped (smaller than {self.min_face} px)")
                continue
            faces.append(self.face_from_box(rgb, box, score, name))
            if max_faces and len(faces) >= max_faces:
                break
        return faces, notes

    def face_from_box(self, rgb, box, score=1.0, name="given") -> Face:
        lm = self.landmarks(rgb, box)
        roi = roi_from_landmarks(lm, self.crop_scale, self.crop_shift_y)
        return Face(crop_square(rgb, roi, self.crop_size), roi, np.asarray(box, float), lm,
                    estimate_yaw(lm, rgb.shape[:2]), name, score)
