"""Parity of each export with the Keras generator it came from, on the same real crops.

Per file: max abs error and PSNR of the export's output vs the Keras output (both in [-1, 1],
PSNR over that range of 2), the change in identity (distance between dlib ResNet face
embeddings of the export's and the Keras output; < 0.6 is dlib's same-person threshold),
file size, and batch-1 latency (onnxruntime CPU, LiteRT with 2 threads).
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from runtime.errors import ModelError, first_line
from runtime.image_io import atomic_write_bytes

from .convert import to_float_inputs

LITERT_THREADS = 2


# ----------------------------------------------------------------------------- runners
class Runner:
    """Runs one exported file on float32 NHWC in [-1, 1] (+ yaw one-hot for cvae); float out."""

    def __init__(self, path: str, threads: int = LITERT_THREADS):
        if not os.path.exists(path):
            raise ModelError(f"{path}: no such model file")
        self.path = path
        if path.endswith(".onnx"):
            self._init_onnx(threads)
        elif path.endswith(".tflite"):
            self._init_tflite(threads)
        else:
            raise ModelError(f"{path}: unknown model type (expected .onnx or .tflite)")

    def _init_onnx(self, threads):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        try:
            self.sess = ort.InferenceSession(self.path, so, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ModelError(f"{self.path}: not a valid ONNX model ({first_line(e)})") from None
        self.n_inputs = len(self.sess.get_inputs())
        self.batch = None

    def _init_tflite(self, threads):
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.it = Interpreter(model_path=self.path, num_threads=threads)
            self.it.allocate_tensors()
        except Exception as e:
            raise ModelError(f"{self.path}: not a valid TFLite model ({first_line(e)})") from None
        self.ins, self.outs = self.it.get_input_details(), self.it.get_output_details()
        self.n_inputs = len(self.ins)
        b = int(self.ins[0]["shape_signature"][0])
        self.batch = b if b > 0 else None
        self._cur = None

    def _tflite(self, feeds):
        n = len(feeds[0])
        if self._cur != n:
            for d, f in zip(self.ins, feeds):
                self.it.resize_tensor_input(d["index"], list(f.shape), strict=False)
            self.it.allocate_tensors()
            self._cur = n
        for d, f in zip(self.ins, feeds):
            scale, zp = d["quantization"]
            if d["dtype"] in (np.int8, np.uint8):
                info = np.iinfo(d["dtype"])
                f = np.clip(np.round(f / scale + zp), info.min, info.max)
            self.it.set_tensor(d["index"], f.astype(d["dtype"]))
        self.it.invoke()
        o = self.outs[0]
        y = self.it.get_tensor(o["index"])
        if o["dtype"] in (np.int8, np.uint8):
            scale, zp = o["quantization"]
            y = (y.astype(np.float32) - zp) * scale
        return y.astype(np.float32)

    def _order(self, names, x, yaw_onehot):
        """Feeds in the model's input order (by name: a converter may put 'yaw' first)."""
        if len(names) == 1:
            return [x.astype(np.float32)]
        if yaw_onehot is None:
            raise ModelError(f"{self.path}: this model needs a yaw one-hot as its second input")
        return [(yaw_onehot if "yaw" in n else x).astype(np.float32) for n in names]

    def __call__(self, x: np.ndarray, yaw_onehot: np.ndarray | None = None) -> np.ndarray:
        if self.path.endswith(".onnx"):
            names = [i.name for i in self.sess.get_inputs()]
            return self.sess.run(None, dict(zip(names, self._order(names, x, yaw_onehot))))[0]
        feeds = self._order([d["name"] for d in self.ins], x, yaw_onehot)
        if self.batch == 1 and len(x) > 1:  # static batch 1: one image at a time
            return np.concatenate([self._tflite([f[i:i + 1] for f in feeds]) for i in range(len(x))])
        return self._tflite(feeds)


# ----------------------------------------------------------------------------- identity
class FaceEmbedder:
    """dlib's ResNet face embedding (face_recognition_models weights) of a generated 128 crop."""

    def __init__(self):
        import dlib

        from runtime.detectors import dlib_model_file

        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(dlib_model_file("shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(dlib_model_file("dlib_face_recognition_resnet_model_v1.dat"))

    def box(self, rgb: np.ndarray):
        """Face box on the crop upscaled to 256 (HOG misses faces this small), or None."""
        import cv2

        big = cv2.resize(rgb, (256, 256), interpolation=cv2.INTER_CUBIC)
        dets = self.detector(big, 1)
        return (big, max(dets, key=lambda r: r.area())) if len(dets) else (big, None)

    def embed(self, big: np.ndarray, rect) -> np.ndarray:
        import dlib

        chip = dlib.get_face_chip(big, self.shape(big, rect), size=150, padding=0.25)
        return np.asarray(self.net.compute_face_descriptor(chip))


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip((x + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def identity_shift(embedder: FaceEmbedder, ref: np.ndarray, out: np.ndarray) -> dict:
    """Embedding distance export vs Keras, on the crops where a face is found in the Keras output."""
    import cv2

    dists = []
    for r, o in zip(to_uint8(ref), to_uint8(out)):
        big_r, rect = embedder.box(r)
        if rect is None:
            continue
        big_o = cv2.resize(o, (256, 256), interpolation=cv2.INTER_CUBIC)  # same box: same framing
        dists.append(float(np.linalg.norm(embedder.embed(big_r, rect) - embedder.embed(big_o, rect))))
    if not dists:
        return {"id_dist_mean": None, "id_dist_max": None, "id_faces": 0,
                "id_note": "no face found in the Keras outputs (256 upscale, dlib HOG): identity skipped"}
    return {"id_dist_mean": round(float(np.mean(dists)), 4), "id_dist_max": round(float(np.max(dists)), 4),
            "id_faces": len(dists)}


# ----------------------------------------------------------------------------- metrics
def psnr(ref: np.ndarray, out: np.ndarray) -> float:
    mse = float(np.mean((ref.astype(np.float64) - out) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)  # range [-1, 1]: peak 2


def latency_ms(fn, runs: int) -> float:
    fn()  # warm-up (allocation, first-run caches)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return round(1000 * float(np.median(ts)), 2)


def parity_report(keras_path: str, paths: dict[str, str], images: np.ndarray, yaws: np.ndarray | None = None,
                  latency_runs: int = 20, out_dir: str | None = None, identity: bool = True,
                  targets: np.ndarray | None = None) -> dict:
    """Compare every export in ``paths`` (format -> file) with the Keras model on ``images``.

    ``targets`` (the real frontal views, uint8): adds each model's PSNR vs the ground truth
    and its change from Keras (what quantization costs in quality, not just in agreement).

    Returns {"rows": [...], "markdown": str} and writes parity.json / parity.md into out_dir.
    """
    from .convert import load_generator

    model, meta = load_generator(keras_path)
    x = to_float_inputs(images)
    from .convert import yaw_input

    onehot = yaw_input(meta, yaws, len(x))  # the second input, if the model has one
    two = len(model.inputs) == 2
    feeds = [x, onehot] if two else [x]

    def keras_run(f):
        return np.asarray(model(f if two else f[0], training=False))

    ref = np.concatenate([keras_run([f[i:i + 8] for f in feeds]) for i in range(0, len(x), 8)])
    y = to_float_inputs(targets) if targets is not None else None
    keras_gt = round(psnr(y, ref), 2) if y is not None else None
    embedder = FaceEmbedder() if identity else None
    one = [f[:1] for f in feeds]
    rows = [{"format": "keras", "file": os.path.basename(keras_path), "size_mb": round(os.path.getsize(keras_path) / 1e6, 3),
             "max_abs_err": 0.0, "psnr_db": None, "psnr_gt_db": keras_gt, "latency_b1_ms": latency_ms(lambda: keras_run(one), latency_runs),
             "engine": "keras (TF CPU)"}]
    try:
        from tqdm import tqdm
        items = tqdm(list(paths.items()), desc="parity", unit="file")
    except ImportError:
        items = paths.items()
    for fmt, path in items:
        run = Runner(path)
        out = run(x, onehot)
        row = {"format": fmt, "file": os.path.basename(path), "size_mb": round(os.path.getsize(path) / 1e6, 3),
               "max_abs_err": float(f"{np.max(np.abs(out - ref)):.3g}"), "psnr_db": round(psnr(ref, out), 2),
               "latency_b1_ms": latency_ms(lambda: run(x[:1], None if onehot is None else onehot[:1]), latency_runs),
               "engine": "onnxruntime CPU" if path.endswith(".onnx") else f"LiteRT {LITERT_THREADS} threads"}
        if y is not None:
            row["psnr_gt_db"] = round(psnr(y, out), 2)
            row["psnr_gt_change_db"] = round(row["psnr_gt_db"] - keras_gt, 3)
        if embedder is not None:
            row.update(identity_shift(embedder, ref, out))
        rows.append(row)
    report = {"model": meta.get("model"), "keras": keras_path, "n_images": int(len(x)),
              "images": "validation crops (manifest 'val' ids), disjoint from the int8 calibration crops",
              "latency_runs": latency_runs, "rows": rows}
    report["markdown"] = markdown(report)
    if out_dir:
        report["json_path"] = os.path.join(out_dir, "parity.json")
        report["md_path"] = os.path.join(out_dir, "parity.md")
        atomic_write_bytes(report["json_path"], json.dumps({k: v for k, v in report.items() if k != "markdown"},
                                                           indent=1).encode())
        atomic_write_bytes(report["md_path"], report["markdown"].encode())
    return report


def markdown(report: dict) -> str:
    head = (f"Parity of `{report['keras']}` ({report['model']}) exports vs Keras on {report['n_images']} "
            f"{report['images']}; latency: batch 1, median of {report['latency_runs']} runs.\n\n")
    lines = ["| format | file | size MB | PSNR vs Keras dB | max abs err | PSNR vs target dB (change) "
             "| id dist mean / max (faces) | latency b1 ms | engine |", "|---|---|---|---|---|---|---|---|---|"]
    def gt(r):
        if r.get("psnr_gt_db") is None:
            return "-"
        return f"{r['psnr_gt_db']}" + (f" ({r['psnr_gt_change_db']:+})" if "psnr_gt_change_db" in r else "")

    for r in report["rows"]:
        idc = "-" if r["format"] == "keras" else (
            f"{r['id_dist_mean']} / {r['id_dist_max']} ({r['id_faces']})" if r.get("id_faces") else "no face")
        lines.append(f"| {r['format']} | {r['file']} | {r['size_mb']} | {r['psnr_db'] if r['psnr_db'] is not None else '-'} "
                     f"| {r['max_abs_err']} | {gt(r)} | {idc} | {r['latency_b1_ms']} | {r['engine']} |")
    notes = {r.get("id_note") for r in report["rows"] if r.get("id_note")}
    return head + "\n".join(lines) + "\n" + "".join(f"\nNote: {n}\n" for n in notes)
