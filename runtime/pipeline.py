"""detect -> crop -> frontalize, shared by the CLI (``runtime.frontalize``) and the camera loop.

The crop framing (scale, vertical shift, size) comes from the model's metadata, so every
model sees faces framed the way its training crops were.
"""
from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from .detect import Face, FaceAnalyzer
from .engines import CHUNK, Engine, load_engine
from .errors import ModelError
from .pose import CROP_RULE  # the framing every model is trained on (android_demo reads it here)

# The default generator: runtime.geometry's (3DDFA_V2's landmarks + this photo's own pixels turned to
# frontal; models/GENERATOR_V2.md). A model file's name (e.g. the learned "frontalizer.onnx") that
# is not a local file is looked up in runtime/assets/ (runtime.engines.load_engine).
GEOMETRY = DEFAULT_MODEL = "geometry"


def load_generator(model: str, engine: str = "auto", threads: int = 2, **kw) -> Engine:
    """``"geometry"``: runtime.geometry's generator (no model file); ``"geometry+refiner.onnx"``: the same
    followed by a refiner model (any format ``engines.load_engine`` reads); else ``engines.load_engine``."""
    if model == GEOMETRY or model.startswith(GEOMETRY + "+"):
        from .geometry import GeometryEngine

        refiner = model[len(GEOMETRY) + 1:] or None
        return GeometryEngine(threads, refiner=refiner and load_engine(refiner, engine, threads, **kw))
    return load_engine(model, engine, threads, **kw)


def analyzer_for(engine: Engine, detector: str = "auto", threads: int = 2, **kw) -> FaceAnalyzer:
    m = engine.meta
    if m.get("crop_rule", CROP_RULE) != CROP_RULE:
        raise ModelError(f"{engine.path}: trained on '{m.get('crop_rule')}' crops; this runtime frames faces "
                         f"'{CROP_RULE}' (runtime.pose): re-train the model on crops from training.prepare")
    return FaceAnalyzer(detector=detector, crop_size=int(m.get("input_size", 128)), threads=threads, **kw)


@dataclass
class FaceResult:
    """One face of one image: the model's frontal view and where it came from.

    ``frontal``, ``crop``: RGB uint8 (the model's size, 128 px by default). ``box``: [x0, y0, x1, y1]
    of the crop square in the input's pixels (may extend past the image). ``yaw``: degrees, positive
    = nose towards the image's right (NaN when unknown). ``detector``: the detectors that found it
    ("track" in a video between detections). ``score``: the pose network's face score, 0..1.
    ``index``: 0 for the largest face. ``frame``: the frame index for video sources."""

    frontal: np.ndarray = field(repr=False)
    crop: np.ndarray = field(repr=False)
    box: np.ndarray
    yaw: float
    detector: str
    score: float
    index: int = 0
    frame: int | None = None
    source: str = ""
    image: np.ndarray | None = field(default=None, repr=False)  # the input (RGB), for sheet()
    face: Face | None = field(default=None, repr=False)  # the analyzer's Face (landmarks, square)
    # batch() keeps no image: sheet() reads it again from the input it was given (a path, the
    # caller's own array or PIL image), so 200 photos do not stay in memory
    reload: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)

    def save(self, path, what: str = "frontal") -> str:
        """Write the frontal face (``what="crop"``: the crop, ``"sheet"``: the sheet) to ``path``
        (format by extension, written atomically). Returns the path."""
        from .image_io import atomic_write_image

        img = {"frontal": self.frontal, "crop": self.crop}.get(what)
        if img is None:
            if what != "sheet":
                raise ValueError("what must be frontal, crop or sheet")
            img = self.sheet()
        atomic_write_image(os.fspath(path), img)
        return os.fspath(path)

    def sheet(self, height: int = 256) -> np.ndarray:
        """input (with the crop square) | crop | frontal, side by side, RGB uint8 ``height`` px high."""
        image = self.image if self.image is not None or self.reload is None else self.reload()
        if image is None or self.face is None:
            return side_by_side([self.crop, self.frontal], height)
        shown = image.copy()
        draw_face(shown, self.face)
        return side_by_side([shown, self.crop, self.frontal], height)

    def as_dict(self) -> dict:
        """JSON-ready fields (no pixels)."""
        return {"source": self.source, "frame": self.frame, "face": self.index,
                "box": [round(float(v), 1) for v in self.box],
                "yaw": round(float(self.yaw), 1) if np.isfinite(self.yaw) else None,
                "detector": self.detector, "score": round(float(self.score), 3)}


@dataclass
class FrameResult:
    """One frame of ``Frontalizer.video``: its index, the frame (RGB) and its faces."""

    index: int
    image: np.ndarray = field(repr=False)
    faces: list[FaceResult]


def _reloaded(image, bgr: bool) -> np.ndarray:
    return to_rgb(image, bgr)[0]


def to_rgb(image, bgr: bool = False) -> tuple[np.ndarray, float, str]:
    """(RGB uint8 array, loaded pixels per file pixel, name) from a path, an array or a PIL image.
    Arrays are RGB unless ``bgr=True``; gray (HxW or HxWx1) is expanded, an alpha channel dropped."""
    if isinstance(image, (str, os.PathLike)):
        from .image_io import load_image

        img = load_image(image)
        return img.rgb, img.scale, os.fspath(image)
    if not isinstance(image, np.ndarray) and hasattr(image, "convert") and hasattr(image, "mode"):  # PIL
        return np.asarray(image.convert("RGB")), 1.0, getattr(image, "filename", "") or "<PIL image>"
    a = np.asarray(image)
    if a.dtype != np.uint8:
        if a.dtype.kind == "f" and a.size and float(np.nanmax(a)) <= 1.0:
            a = a * 255.0
        a = np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return cv2.cvtColor(a, cv2.COLOR_GRAY2RGB), 1.0, "<array>"
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {a.shape}")
    a = a[:, :, :3]
    if bgr:
        a = a[:, :, ::-1]
    return np.ascontiguousarray(a), 1.0, "<array>"


@contextlib.contextmanager
def _quiet():
    """The engines' load chatter (LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate") kept
    off the caller's stderr; error lines still pass."""
    from .image_io import captured_stderr, keep_errors

    said: list[str] = []
    try:
        with captured_stderr(said):
            yield
    finally:
        keep_errors(said)


class Frontalizer:
    """Faces in, frontal faces out::

        from runtime import Frontalizer
        fr = Frontalizer()                 # the bundled model; nothing is loaded yet
        faces = fr("photo.jpg")            # a path, an RGB array (bgr=True for OpenCV's) or a PIL image
        faces[0].save("front.png"); faces[0].sheet()
        fr.batch(["a.jpg", "b.jpg"])       # a list of results per image; bounded memory
        for frame in fr.video("clip.mp4", vid_stride=2): frame.faces

    ``model``: ``"geometry"`` (the default: ``runtime.geometry``, the photo's own pixels turned to
    frontal), a file (.onnx, .tflite, .keras) or the name of a bundled one (``frontalizer.onnx``).
    ``providers``: ONNX execution providers (``"cuda,cpu"``; see ``runtime.engines.provider_names``).
    The model and detectors load on first use (or ``load()``), each file once.
    """

    def __init__(self, model: str | os.PathLike | Engine | None = None, engine: str = "auto", threads: int = 2,
                 detector: str = "auto", providers=None, max_faces: int | None = None):
        self.model = DEFAULT_MODEL if model is None else model
        self.engine_kind, self.threads, self.detector, self.providers = engine, threads, detector, providers
        self.max_faces = max_faces
        self._engine = model if isinstance(model, Engine) else None
        self._analyzer = None

    # -- lazy loading --
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            kw = {"providers": self.providers} if self.providers is not None else {}
            with _quiet():
                self._engine = load_generator(os.fspath(self.model), self.engine_kind, self.threads, **kw)
        return self._engine

    @property
    def analyzer(self) -> FaceAnalyzer:
        if self._analyzer is None:
            engine = self.engine
            with _quiet():
                self._analyzer = analyzer_for(engine, self.detector, self.threads)
        return self._analyzer

    def load(self) -> "Frontalizer":
        """Load the model and the detectors now (ModelError if one cannot be loaded)."""
        self.analyzer  # noqa: B018  (loads the engine too)
        return self

    def __repr__(self) -> str:
        state = repr(self._engine) if self._engine is not None else "not loaded"
        return f"Frontalizer({os.fspath(self.model) if not isinstance(self.model, Engine) else self.model.path!s}, {state})"

    # -- the two stages, as the CLI and camera loop use them --
    def faces(self, rgb: np.ndarray, max_faces: int | None = None) -> tuple[list[Face], list[str]]:
        """Faces (largest first) in an RGB uint8 image, and notes about candidates dropped."""
        return self.analyzer.analyze(rgb, max_faces)

    def frontalize(self, faces: list[Face], rgb: np.ndarray | None = None) -> list[np.ndarray]:
        """One RGB uint8 frontal prediction per face of the RGB image ``rgb`` (a learned model reads
        only the crops, in one batched call; the geometric one needs ``rgb``)."""
        return self.engine.frontalize(rgb, faces)

    # -- the public API --
    def _results(self, rgb, scale, name, faces, frontals, frame=None) -> list[FaceResult]:
        out = []
        for k, (f, fr) in enumerate(zip(faces, frontals)):
            out.append(FaceResult(fr, f.crop, np.asarray(f.box, float) / scale, float(f.yaw), f.detector,
                                  float(f.score), k, frame, name, rgb, f))
        return out

    def __call__(self, image, bgr: bool = False, max_faces: int | None = None) -> list[FaceResult]:
        """Every face of one image (largest first) as a ``FaceResult``; [] when there is none.
        ``image``: a path, an RGB uint8 array (``bgr=True`` for OpenCV's BGR order) or a PIL image.
        A box is in the file's pixels (a path's image is reduced when its long side exceeds 4096)."""
        rgb, scale, name = to_rgb(image, bgr)
        faces, _ = self.faces(rgb, max_faces or self.max_faces)
        return self._results(rgb, scale, name, faces, self.frontalize(faces, rgb))

    def batch(self, images, bgr: bool = False, max_faces: int | None = None) -> list[list[FaceResult]]:
        """``__call__`` over a list (or any iterable) of images, in order. Memory stays bounded
        whatever their number: one image is held at a time, faces go to a learned model in chunks of
        ``engines.CHUNK`` across images (to the geometric one with their image), and a result keeps no
        copy of its image (``sheet()`` reads it again)."""
        out: list[list[FaceResult]] = []
        pending: list[FaceResult] = []  # results whose frontal is still to come

        def flush():
            for r, frontal in zip(pending, self.frontalize([r.face for r in pending])):
                r.frontal = frontal
            pending.clear()

        now = self.engine.needs_photo  # the geometric generator: each image's faces at once, with the image
        for im in images:
            rgb, scale, name = to_rgb(im, bgr)
            faces, _ = self.faces(rgb, max_faces or self.max_faces)
            frontals = self.frontalize(faces, rgb) if now else [None] * len(faces)
            results = self._results(rgb, scale, name, faces, frontals)
            for r in results:
                r.image, r.reload = None, functools.partial(_reloaded, im, bgr)
            out.append(results)
            pending += [] if now else results
            if len(pending) >= CHUNK:
                flush()
        flush()
        return out

    def video(self, source, vid_stride: int = 1, max_frames: int | None = None,
              max_faces: int | None = None):
        """A generator of ``FrameResult`` over a video file, a webcam index (``0``), a stream URL or
        a GStreamer pipeline (see ``runtime.sources``): frames in order, every ``vid_stride``-th."""
        from .sources import frames

        name = str(source)
        for idx, bgr in frames(source, vid_stride, max_frames):
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            faces, _ = self.faces(rgb, max_faces or self.max_faces)
            yield FrameResult(idx, rgb, self._results(rgb, 1.0, name, faces, self.frontalize(faces, rgb), idx))


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
