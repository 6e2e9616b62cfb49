"""Fixtures and Python-runtime references for the browser tests (called by app.test.mjs).

    python tests/reference.py OUT_DIR DIST_MODELS_DIR [--roi x0,y0,x1,y1]

Writes into OUT_DIR:
- camera.y4m: samples/grace_hopper.jpg letterboxed into 640x480, 10 frames, for Chromium's
  fake camera (--use-file-for-fake-video-capture);
- image.rgb: the sample's raw RGB bytes (the test hands them to the page);
- reference.json: the Python runtime on the same image: FaceAnalyzer's ROI and crop (with
  the model's crop_scale/crop_shift_y) and the generator's float output (runtime.engines,
  onnxruntime, on DIST_MODELS_DIR/edge_generator.onnx) on that crop, the image size, and
  BlazeFace's raw outputs (onnxruntime on blazeface.onnx) for runtime/blazeface.py's
  letterboxed input tensor of the image.
With --roi, also crop_square of the sample at that ROI (the browser's), to compare pixels.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys

import cv2
import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from runtime.blazeface import INPUT  # noqa: E402
from runtime.crop import crop_square  # noqa: E402
from runtime.detect import FaceAnalyzer  # noqa: E402
from runtime.engines import load_engine  # noqa: E402
from runtime.image_io import load_image  # noqa: E402
from runtime.model_meta import read_meta  # noqa: E402

SAMPLE = os.path.join(ROOT, "samples", "grace_hopper.jpg")
b64 = lambda a: base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()  # noqa: E731


def write_y4m(rgb: np.ndarray, path: str, w: int = 640, h: int = 480, frames: int = 10) -> None:
    f = min(w / rgb.shape[1], h / rgb.shape[0])
    im = cv2.resize(rgb, (round(rgb.shape[1] * f), round(rgb.shape[0] * f)), interpolation=cv2.INTER_AREA)
    frame = np.full((h, w, 3), 90, np.uint8)
    y0, x0 = (h - im.shape[0]) // 2, (w - im.shape[1]) // 2
    frame[y0:y0 + im.shape[0], x0:x0 + im.shape[1]] = im
    yuv = cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes()
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + yuv)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("models", help="dist/models: edge_generator.onnx and blazeface.onnx")
    ap.add_argument("--roi")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rgb = load_image(SAMPLE).rgb
    if args.roi:
        roi = [float(v) for v in args.roi.split(",")]
        print(json.dumps({"crop": b64(crop_square(rgb, roi, 128))}))
        return
    write_y4m(rgb, os.path.join(args.out, "camera.y4m"))
    with open(os.path.join(args.out, "image.rgb"), "wb") as f:
        f.write(rgb.tobytes())
    model = os.path.join(args.models, "edge_generator.onnx")
    meta = read_meta(model)
    fa = FaceAnalyzer("cascade", crop_size=meta["input_size"], crop_scale=meta["crop_scale"],
                      crop_shift_y=meta["crop_shift_y"])
    face = fa.analyze(rgb, max_faces=1)[0][0]
    eng = load_engine(model, threads=1)
    y = eng.run_float(eng.preprocess(face.crop))[0].astype(np.float32)
    ref = {"width": rgb.shape[1], "height": rgb.shape[0], "roi": face.box.tolist(), "detector": face.detector,
           "crop": b64(face.crop), "output": b64(y), "output_uint8": b64(eng.postprocess(y[None])[0])}
    # BlazeFace input exactly as runtime/blazeface.py prepares it.
    side = max(rgb.shape[:2])
    pad = np.zeros((side, side, 3), np.uint8)
    pad[:rgb.shape[0], :rgb.shape[1]] = rgb
    x = (cv2.resize(pad, (INPUT, INPUT), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1.0)[None]
    sess = ort.InferenceSession(os.path.join(args.models, "blazeface.onnx"), providers=["CPUExecutionProvider"])
    reg, cls = sess.run(["regressors", "classificators"], {sess.get_inputs()[0].name: x})
    ref.update(det_input=b64(x), det_regressors=b64(reg), det_classificators=b64(cls))
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(ref, f)


if __name__ == "__main__":
    main()
