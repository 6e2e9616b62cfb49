"""Real tiny models and a real face video for the runtime tests and benchmarks.

``ensure_tiny_models(dir)``: a width-0.25 edge generator and a small CVAE frontalizer (two
inputs: image + yaw one-hot), untrained but with their BatchNorm statistics set from real
face crops, so that the output depends strongly on the input and on the yaw (a fresh net
outputs flat grey, which would hide a wrong channel order, range or yaw input);
both saved as .keras + sidecar and exported with ``export.convert.export_model`` to ONNX
and TFLite (fp32, fp16, dynamic-range int8, full int8 calibrated on crops of the bundled
sample). Built once per directory (a ``done`` file marks completion).

``make_face_video(path, frames)``: 640x480 mp4v video of ``samples/grace_hopper.jpg``
moving left/right and growing/shrinking (one face, always inside the frame).
"""
from __future__ import annotations

import json
import os

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "samples", "grace_hopper.jpg")
EDGE_FORMATS = ["onnx", "tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8"]
CVAE_FORMATS = ["onnx", "tflite-fp32"]


def sample_crops() -> np.ndarray:
    """8 real 128 px face crops: the sample's face, mirrored, shifted and re-lit."""
    from runtime.detect import FaceAnalyzer
    from runtime.image_io import load_image

    crop = FaceAnalyzer("fast", threads=1).analyze(load_image(SAMPLE).rgb)[0][0].crop
    out = []
    for flip in (False, True):
        c = crop[:, ::-1] if flip else crop
        for dx, gain in ((0, 1.0), (6, 0.8), (-6, 1.15), (3, 0.95)):
            out.append(np.clip(np.roll(c, dx, axis=1).astype(np.float32) * gain, 0, 255).astype(np.uint8))
    return np.stack(out)


def calibrate_batchnorm(model, inputs) -> None:
    """Moving statistics := the statistics of ``inputs`` (one training-mode pass, momentum 0)."""
    import keras

    bns = [l for l in model._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)]
    for layer in bns:
        layer.momentum = 0.0
    model(inputs, training=True)
    for layer in bns:
        layer.momentum = 0.99


def ensure_tiny_models(out_dir: str) -> dict:
    """{'edge': {format: path, 'keras': path}, 'cvae': {...}, 'crops': path of the crops .npy}."""
    index = os.path.join(out_dir, "done")
    if os.path.exists(index):
        with open(index) as f:
            return json.load(f)
    os.makedirs(out_dir, exist_ok=True)
    import keras

    from export.convert import export_model
    from runtime.model_meta import default_meta, write_sidecar
    from training.models import cvae_frontalizer, cvae_networks, edge_generator

    keras.utils.set_random_seed(0)
    crops = sample_crops()
    x = crops.astype(np.float32) / 127.5 - 1.0
    edge = edge_generator(width=0.25)
    calibrate_batchnorm(edge, x)
    result = {"crops": os.path.join(out_dir, "crops.npy")}
    np.save(result["crops"], crops)
    kp = os.path.join(out_dir, "edge.keras")
    edge.save(kp)
    write_sidecar(kp, default_meta("edge"))
    result["edge"] = {"keras": kp, **export_model(kp, EDGE_FORMATS, os.path.join(out_dir, "edge"), calib_images=crops)}

    enc, dec = cvae_networks(latent=16, base=8)
    cvae = cvae_frontalizer(enc, dec)
    calibrate_batchnorm(cvae, [x, np.eye(13, dtype=np.float32)[np.arange(len(x)) % 13]])
    kp = os.path.join(out_dir, "cvae.keras")
    cvae.save(kp)
    write_sidecar(kp, default_meta("cvae"))
    result["cvae"] = {"keras": kp, **export_model(kp, CVAE_FORMATS, os.path.join(out_dir, "cvae"))}
    with open(index, "w") as f:
        json.dump(result, f)
    return result


def video_transform(i: int, frames: int, size=(640, 480), src_shape=(600, 512)) -> np.ndarray:
    """2x3 matrix mapping the sample photo into frame ``i`` of ``make_face_video``."""
    w, h = size
    t = i / max(1, frames - 1)
    s = 0.6 + 0.15 * np.sin(2 * np.pi * t)  # face ~110-200 px
    cx = w / 2 + 110 * np.sin(3 * np.pi * t)
    cy = h / 2 + 25 * np.cos(2 * np.pi * t)
    return np.float32([[s, 0, cx - s * src_shape[1] / 2], [0, s, cy - s * src_shape[0] / 2]])


def make_face_video(path: str, frames: int = 60, size=(640, 480), fps: float = 30.0) -> str:
    src = cv2.imread(SAMPLE)
    vw = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(frames):
        m = video_transform(i, frames, size, src.shape[:2])
        vw.write(cv2.warpAffine(src, m, size, borderMode=cv2.BORDER_CONSTANT, borderValue=(40, 40, 40)))
    vw.release()
    return path
