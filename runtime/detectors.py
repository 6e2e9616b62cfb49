"""Face candidate boxes from several detectors, merged: ``CandidateDetector``.

Every backend is a callable ``rgb uint8 HxWx3 -> [(box [x0,y0,x1,y1] float, score)]`` in the
pixels of the image it is given. A ``Pass`` runs one backend on a prepared view of the photo
(scaled into [min_side, max_side] on its long side, a border of ``pad`` x long side added so
that faces filling the frame or touching its edge are seen whole, optionally mirrored), maps the
boxes back to the photo and moves each onto one common box convention (a square on the face,
``BOX_FIX``, measured per backend). ``CandidateDetector`` runs all its passes and merges every
box with OpenCV's NMS (``cv2.dnn.NMSBoxes``): each candidate keeps the detectors that agreed on
it and the best score. Candidates come largest first; rejecting non-faces is left to the
verification stage that follows (landmarks / pose / face score).

Backends: BlazeFace short-range, full-range and back-camera (MediaPipe, runtime/blazeface.py),
MTCNN (runtime/mtcnn.py), OpenCV's Haar profile cascade (image and mirror), dlib's HOG and MMOD
CNN detectors. The choice of passes (``PRESETS``) is measured in benchmarks/detection_rate.py.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import cv2
import numpy as np

from .errors import ModelError


# ---------------------------------------------------------------- backends
class HaarCascade:
    """OpenCV cascade from opencv-python's ``cv2.data.haarcascades``; score = the last stage's
    weight sum (``detectMultiScale3``). The profile cascade only knows faces looking to the image's
    left; run it with ``Pass(mirror=True)`` for the other side."""

    def __init__(self, name: str = "haarcascade_profileface.xml", min_neighbors: int = 3,
                 scale_factor: float = 1.1, min_size: int = 24):
        path = os.path.join(cv2.data.haarcascades, name)
        self.cc = cv2.CascadeClassifier(path)
        if self.cc.empty():
            raise ModelError(f"{path}: cannot load the OpenCV cascade")
        self.min_neighbors, self.scale_factor, self.min_size = min_neighbors, scale_factor, min_size

    def __call__(self, rgb):
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        rects, _, weights = self.cc.detectMultiScale3(
            gray, self.scale_factor, self.min_neighbors, minSize=(self.min_size, self.min_size),
            outputRejectLevels=True)
        return [(np.array([x, y, x + w, y + h], float), float(s))
                for (x, y, w, h), s in zip(np.reshape(rects, (-1, 4)), np.reshape(weights, -1))]


class DlibHog:
    """dlib's HOG + linear SVM frontal detector; ``adjust`` < 0 lowers its threshold (more recall)."""

    def __init__(self, upsample: int = 0, adjust: float = 0.0):
        import dlib

        self.det, self.upsample, self.adjust = dlib.get_frontal_face_detector(), upsample, adjust

    def __call__(self, rgb):
        dets, scores, _ = self.det.run(np.ascontiguousarray(rgb), self.upsample, self.adjust)
        return [(np.array([d.left(), d.top(), d.right(), d.bottom()], float), float(s)) for d, s in zip(dets, scores)]


def dlib_model_file(name: str) -> str:
    """A dlib model file of face-recognition-models (``mmod_human_face_detector.dat``,
    ``shape_predictor_68_face_landmarks.dat``...). Found without importing the package, whose
    ``__init__`` imports the deprecated ``pkg_resources`` (a warning on every import)."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        raise ModelError("face-recognition-models is not installed (pip install face-recognition-models)")
    return os.path.join(list(spec.submodule_search_locations)[0], "models", name)


class DlibCnn:
    """dlib's MMOD CNN face detector (face-recognition-models' mmod_human_face_detector.dat)."""

    def __init__(self, upsample: int = 0):
        import dlib

        self.det, self.upsample = dlib.cnn_face_detection_model_v1(dlib_model_file("mmod_human_face_detector.dat")), upsample

    def __call__(self, rgb):
        return [(np.array([d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()], float), float(d.confidence))
                for d in self.det(np.ascontiguousarray(rgb), self.upsample)]


class LibFaceDetection:
    """libfacedetection (Shiqi Yu's YuNet-family CNN, BSD-3) from the optional ``yuface`` wheel
    (CPython 3.11 x86-64 only, so not a dependency: evaluated in benchmarks/detection_rate.py)."""

    def __init__(self):
        try:
            import yuface
        except ImportError:
            raise ModelError("libfacedetection backend needs the optional yuface wheel (pip install yuface)") from None
        self.yuface = yuface

    def __call__(self, rgb):
        confs, boxes, _ = self.yuface.detect(np.ascontiguousarray(rgb[:, :, ::-1]), conf=0.0)
        return [(np.array([x, y, x + w, y + h], float), float(c) / 100.0)
                for c, (x, y, w, h) in zip(np.reshape(confs, -1), np.reshape(boxes, (-1, 4)).astype(float))]


def make_backend(kind: str, threads: int = 1, **kw):
    """kind: blazeface-short | blazeface-full | blazeface-back | mtcnn | haar-profile | haar-frontal | hog | mmod
    | libfacedetection (optional yuface wheel)."""
    if kind.startswith("blazeface-"):
        from .blazeface import BlazeFace

        return BlazeFace(threads=threads, variant=kind.split("-", 1)[1], **kw)
    if kind == "mtcnn":
        from .mtcnn import MTCNN

        return MTCNN(threads=threads, **kw)
    if kind == "haar-profile":
        return HaarCascade("haarcascade_profileface.xml", **kw)
    if kind == "haar-frontal":
        return HaarCascade("haarcascade_frontalface_alt2.xml", **kw)
    if kind == "hog":
        return DlibHog(**kw)
    if kind == "mmod":
        return DlibCnn(**kw)
    if kind == "libfacedetection":
        return LibFaceDetection(**kw)
    raise ValueError(f"unknown detector backend {kind!r}")


# ---------------------------------------------------------------- views and box convention
def prepare(rgb: np.ndarray, min_side: int = 0, max_side: int = 0, pad: float = 0.0):
    """The view a backend sees: long side scaled into [min_side, max_side] (0: no bound), then a
    mid-grey border of ``pad`` x the scaled long side on every side. Returns (view, scale, offset):
    view pixel = photo pixel * scale + offset."""
    h, w = rgb.shape[:2]
    long_side = max(h, w)
    s = 1.0
    if min_side and long_side < min_side:
        s = min_side / long_side
    elif max_side and long_side > max_side:
        s = max_side / long_side
    img = rgb if s == 1.0 else cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))),
                                          interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    b = int(round(pad * long_side * s))
    if b:
        img = cv2.copyMakeBorder(img, b, b, b, b, cv2.BORDER_CONSTANT, value=(128, 128, 128))
    return img, s, float(b)


def square_fix(box: np.ndarray, fix=(0.0, 0.0, 1.0)) -> np.ndarray:
    """A detector box -> the common convention: a square of side ``fix[2]`` x sqrt(w h), centred at
    the box centre moved by (fix[0], fix[1]) x that side."""
    x0, y0, x1, y1 = box
    side = math.sqrt(max(x1 - x0, 1e-6) * max(y1 - y0, 1e-6))
    cx, cy = (x0 + x1) / 2 + fix[0] * side, (y0 + y1) / 2 + fix[1] * side
    half = fix[2] * side / 2
    return np.array([cx - half, cy - half, cx + half, cy + half])


# Per pass (dx, dy, scale) onto the common square (the face from brow to chin, cheek to cheek:
# the box of CFP's fiducials, see benchmarks/detection_rate.py): medians over the hits on cfp400
# ids 001-350, frontal and profile averaged. Printed by ``python -m benchmarks.detection_report report``.
BOX_FIX: dict[str, tuple[float, float, float]] = {
    "bf-short-p25": (-0.004, 0.063, 0.904),
    "bf-short-p50": (0.0, 0.064, 0.9),
    "bf-back": (-0.016, 0.137, 0.949),
    "bf-back-p25": (0.004, 0.081, 0.919),
    "mtcnn": (0.011, 0.143, 0.888),
    "mtcnn-p25": (0.011, 0.157, 0.877),
    "bf-full": (0.067, 0.104, 0.874),
    "bf-full-p50": (0.077, 0.107, 0.876),
    "bf-short": (-0.014, 0.072, 0.939),
    "hog-s240-p25": (0.071, 0.112, 0.908),
}

# Per pass logistic (a, b): comparable score = 1 / (1 + exp(-(a * raw + b))) = P(the box is a hit)
# fitted on the same photos (hits against boxes off the face); orders boxes in the merge. Raw
# scores already in [0, 1] are used as they are where a pass has no entry.
SCORE_FIX: dict[str, tuple[float, float]] = {
    "bf-short-p25": (15.4498, -5.7497),
    "bf-short-p50": (15.5668, -4.0342),
    "bf-back": (10.1148, -1.0197),
    "bf-back-p25": (18.9844, -7.0362),
    "mtcnn": (16.8215, -9.0209),
    "mtcnn-p25": (17.7871, -10.5971),
    "bf-full": (17.3354, -0.9145),
    "bf-full-p50": (46.6199, -12.1974),
    "bf-short": (15.3364, -4.9174),
    "hog-s240-p25": (7.093, 7.5518),
}


def norm_score(kind: str, raw: float) -> float:
    a, b = SCORE_FIX.get(kind, (None, None))
    if a is None:
        return float(raw) if 0.0 <= raw <= 1.0 else 1.0 / (1.0 + math.exp(-raw))
    return 1.0 / (1.0 + math.exp(-(a * raw + b)))


@dataclass
class Pass:
    """One backend on one view of the photo. ``name`` labels its boxes (e.g. "mtcnn")."""

    kind: str
    min_side: int = 0
    max_side: int = 0
    pad: float = 0.0
    mirror: bool = False
    score: float = 0.0  # raw-score floor
    params: dict = field(default_factory=dict)
    name: str = ""

    def __post_init__(self):
        self.name = self.name or self.kind


class PassRunner:
    """Runs one ``Pass``: view, backend (image and mirror), boxes mapped back to the photo."""

    def __init__(self, p: Pass, threads: int):
        self.p, self.backend = p, make_backend(p.kind, threads=threads, **p.params)

    def __call__(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        p = self.p
        img, s, off = prepare(rgb, p.min_side, p.max_side, p.pad)
        out = []
        for flip in ((False, True) if p.mirror else (False,)):
            view = img[:, ::-1] if flip else img
            for b, sc in self.backend(np.ascontiguousarray(view)):
                if sc < p.score:
                    continue
                b = np.asarray(b, float).copy()
                if flip:
                    b[[0, 2]] = view.shape[1] - b[[2, 0]]
                out.append(((b - off) / s, float(sc)))
        return out


# ---------------------------------------------------------------- merge
@dataclass
class Candidate:
    box: np.ndarray  # [x0,y0,x1,y1] photo pixels, common convention (square; may extend past the image)
    score: float  # best comparable score among the boxes merged here
    detectors: tuple  # names of the passes that agreed, best first
    members: list = field(default_factory=list)  # [(name, box, raw score)] merged into this one

    @property
    def side(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def votes(self) -> int:
        return len(self.detectors)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def merge(dets: list[tuple[np.ndarray, float, str, float]], iou_thr: float = 0.4,
          contain: float | None = 0.5) -> list[Candidate]:
    """dets: (box, comparable score, pass name, raw score). OpenCV NMS keeps the best box of each
    cluster; every other box joins the kept box it overlaps most. Then a smaller candidate lying
    ``contain`` or more inside a stronger one (more detectors, then higher score) joins it: second
    boxes on one face (mostly BlazeFace on the ear of a profile, also an eye or half a face) overlap
    the face's box by IoU 0.1-0.3 only. Largest first."""
    if not dets:
        return []
    boxes = np.array([d[0] for d in dets], float)
    scores = [float(d[1]) for d in dets]
    xywh = np.c_[boxes[:, :2], boxes[:, 2:] - boxes[:, :2]].tolist()
    keep = np.asarray(cv2.dnn.NMSBoxes(xywh, scores, 0.0, iou_thr), int).reshape(-1).tolist()
    groups = {k: [] for k in keep}
    for i in range(len(dets)):
        k = i if i in groups else max(keep, key=lambda j: iou(boxes[i], boxes[j]))
        groups[k].append(i)
    if contain:
        def strength(k):
            return (len({dets[i][2] for i in groups[k]}), scores[k])

        kept = []
        for k in sorted(groups, key=strength, reverse=True):
            host = next((h for h in kept if inside(boxes[k], boxes[h]) >= contain
                         and side(boxes[k]) < side(boxes[h])), None)
            if host is None:
                kept.append(k)
            else:
                groups[host] += groups.pop(k)
    out = []
    for k, members in groups.items():
        members.sort(key=lambda i: -scores[i])
        names = tuple(dict.fromkeys(dets[i][2] for i in members))
        out.append(Candidate(boxes[k].copy(), max(scores[i] for i in members), names,
                             [(dets[i][2], boxes[i], dets[i][3]) for i in members]))
    out.sort(key=lambda c: -c.side)
    return out


def side(b: np.ndarray) -> float:
    return float(math.sqrt(max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)))


def inside(a: np.ndarray, b: np.ndarray) -> float:
    """Share of box a's area that lies inside box b."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return float(iw * ih / max((a[2] - a[0]) * (a[3] - a[1]), 1e-9))


# ---------------------------------------------------------------- the combined detector
_MTCNN = {"thresholds": (0.6, 0.6, 0.5)}
# Chosen on cfp400, Multi-PIE and the bundled photos (benchmarks/results/detection_rate.md):
# "default" for photos; "fast" (the two BlazeFace passes, ~10 ms a 640x480 frame) for a camera
# loop, with "default" now and then (e.g. when "fast" finds nothing).
PRESETS: dict[str, list[Pass]] = {
    "default": [
        Pass("blazeface-short", max_side=256, pad=0.25, score=0.5, params={"score": 0.5}, name="bf-short-p25"),
        Pass("blazeface-back", max_side=512, pad=0.25, score=0.5, params={"score": 0.5}, name="bf-back-p25"),
        Pass("blazeface-full", max_side=384, score=0.5, params={"score": 0.5}, name="bf-full"),
        Pass("mtcnn", max_side=640, score=0.7, params=_MTCNN, name="mtcnn"),
    ],
    "fast": [
        Pass("blazeface-short", max_side=256, pad=0.25, score=0.5, params={"score": 0.5}, name="bf-short-p25"),
        Pass("blazeface-back", max_side=512, pad=0.25, score=0.5, params={"score": 0.5}, name="bf-back-p25"),
    ],
}


class CandidateDetector:
    """Runs ``passes`` (a preset name or a list of ``Pass``) and merges their boxes.

    ``CandidateDetector()(rgb)`` -> [Candidate], largest first. ``raw(rgb)`` -> the boxes of each
    pass before the merge (``{name: [(box, raw score)]}``, already in the common convention)."""

    def __init__(self, passes="default", iou: float = 0.4, contain: float | None = 0.5, threads: int = 1):
        if isinstance(passes, str):
            if passes not in PRESETS:
                raise ValueError(f"unknown preset {passes!r}: one of {sorted(PRESETS)}")
            passes = PRESETS[passes]
        names = [p.name for p in passes]
        if len(set(names)) != len(names):
            raise ValueError(f"pass names must be unique: {names}")
        self.passes, self.iou, self.contain = list(passes), iou, contain
        self.runners = [PassRunner(p, threads) for p in self.passes]

    def raw(self, rgb: np.ndarray) -> dict[str, list[tuple[np.ndarray, float]]]:
        return {r.p.name: [(square_fix(b, BOX_FIX.get(r.p.name, (0.0, 0.0, 1.0))), s) for b, s in r(rgb)]
                for r in self.runners}

    def merge_raw(self, raw: dict) -> list[Candidate]:
        kinds = {p.name: p.kind for p in self.passes}
        dets = [(b, norm_score(name, s) if name in SCORE_FIX else norm_score(kinds.get(name, name), s), name, s)
                for name, found in raw.items() for b, s in found]
        return merge(dets, self.iou, self.contain)

    def __call__(self, rgb: np.ndarray) -> list[Candidate]:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 HxWx3 image, got {rgb.dtype} {rgb.shape}")
        return self.merge_raw(self.raw(rgb))

    def detect(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float, str]]:
        """``FaceAnalyzer.detect``'s format: [(box, score, "+"-joined detector names)], largest first."""
        return [(c.box, c.score, "+".join(c.detectors)) for c in self(rgb)]
