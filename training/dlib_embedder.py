"""dlib's ResNet face embeddings of 128 px face crops: the ``dlib`` identity judge (``training.judges``)
and ``training.evaluate``'s embeddings.

Embeddings, as dlib intends them: the HOG detector finds the face (largest box) in the 128 px
crop upscaled to 256 px; where it finds none the whole image is the face box (counted per method
as ``fallbacks``: profiles and blurry predictions often have no HOG face). The 5-point
landmarks, on the original pixels, align a 150 px chip with 25 % padding
(``dlib.get_face_chip(img, shape, 150, 0.25)``), and chips go through the ResNet in batches.
Check: the raw side input on ids 044-049 (recording 01, illuminations 07 and 12) gives gallery
distances 0.29 / 0.36 / 0.44 / 0.54 / 0.65 / 0.70 and rank-1 100 / 100 / 100 / 92 / 58 / 50 %
at 15 ... 90 degrees (reference measured before: 0.29 / 0.36 / 0.45 / 0.55 / 0.66 / 0.70 and
100 / 100 / 100 / 88 / 58 / 50 %; 60 degrees differ by one probe of 24). Target, gallery and baseline embeddings depend only
on the data: ``training.evaluate`` caches them on disk (``--embedding-cache``).
"""
from __future__ import annotations

import io
import os

import numpy as np

from runtime.detectors import dlib_model_file

UPSCALE = 256
CHIP, CHIP_PADDING = 150, 0.25
EMBED_VERSION = f"dlib-resnet-v1|hog@{UPSCALE}|sp5@orig|chip{CHIP}/{CHIP_PADDING}|fallback=whole"


class FaceEmbedder:
    """dlib ResNet face embeddings of 128 px face crops (see the module doc for the alignment)."""

    def __init__(self, cache_path: str | None = None):
        import dlib

        self._dlib = dlib
        self.hog = dlib.get_frontal_face_detector()
        self.sp5 = dlib.shape_predictor(dlib_model_file("shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(dlib_model_file("dlib_face_recognition_resnet_model_v1.dat"))
        self.cache_path = cache_path
        self.cache: dict[str, tuple[np.ndarray, bool]] = {}
        self._dirty = False
        if cache_path and os.path.exists(cache_path):
            with np.load(cache_path) as z:
                if str(z["version"]) == EMBED_VERSION:
                    self.cache = {k: (v, bool(f)) for k, v, f in zip(z["keys"], z["vectors"], z["found"])}

    def chip(self, rgb: np.ndarray) -> tuple[np.ndarray, bool]:
        import cv2

        # HOG misses faces under ~80 px: detect on a 2x upscale, align on the original pixels.
        h, w = rgb.shape[:2]
        f = UPSCALE / max(h, w)
        dets = self.hog(cv2.resize(rgb, (round(w * f), round(h * f)), interpolation=cv2.INTER_LINEAR), 0)
        found = len(dets) > 0
        if found:
            d = max(dets, key=lambda d: d.area())
            rect = self._dlib.rectangle(*(int(round(v / f)) for v in (d.left(), d.top(), d.right(), d.bottom())))
        else:
            rect = self._dlib.rectangle(0, 0, w - 1, h - 1)
        return self._dlib.get_face_chip(rgb, self.sp5(rgb, rect), CHIP, CHIP_PADDING), found

    def embed(self, images: list[np.ndarray], keys: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(N, 128) embeddings and (N,) bool 'HOG found a face'. ``keys`` (optional) index the cache."""
        out = np.zeros((len(images), 128), np.float32)
        found = np.zeros(len(images), bool)
        todo = []
        for i, img in enumerate(images):
            hit = self.cache.get(keys[i]) if keys else None
            if hit is not None:
                out[i], found[i] = hit
            else:
                todo.append(i)
        if todo:
            chips = []
            for i in todo:
                c, found[i] = self.chip(images[i])
                chips.append(c)
            out[todo] = np.asarray(self.net.compute_face_descriptor(chips), np.float32)
            if keys:
                for i in todo:
                    self.cache[keys[i]] = (out[i].copy(), bool(found[i]))
                self._dirty = True
        return out, found

    def save_cache(self) -> None:
        if not (self.cache_path and self._dirty):
            return
        from runtime.image_io import atomic_write_bytes

        keys = sorted(self.cache)
        buf = io.BytesIO()
        np.savez(buf, version=EMBED_VERSION, keys=np.array(keys),
                 vectors=np.stack([self.cache[k][0] for k in keys]),
                 found=np.array([self.cache[k][1] for k in keys]))
        os.makedirs(os.path.dirname(os.path.abspath(self.cache_path)), exist_ok=True)
        atomic_write_bytes(self.cache_path, buf.getvalue())
        self._dirty = False
