"""Per-image generator speed, batch 1, pre/post-processing included (uint8 RGB crop in, uint8 out).

The original: the seed's VGGFace pix2pix U-Net generator in Keras. Against it: the same net
in onnxruntime and LiteRT, and the edge generator in onnxruntime and LiteRT at fp32, fp16,
dynamic-range int8 and full int8. 2 threads each (the machine's 2 cores).
"""
import os
import time

import pytest

from benchmarks.conftest import machine_load, peak_memory

THREADS = 2
CASES = [  # (id, which model set, format key, engine)
    ("vgg_unet-keras", "vgg", "keras", "keras"),
    ("vgg_unet-onnx", "vgg", "onnx", "onnx"),
    ("vgg_unet-tflite-fp32", "vgg", "tflite-fp32", "tflite"),
    ("edge-keras", "edge", "keras", "keras"),
    ("edge-onnx", "edge", "onnx", "onnx"),
    ("edge-tflite-fp32", "edge", "tflite-fp32", "tflite"),
    ("edge-tflite-fp16", "edge", "tflite-fp16", "tflite"),
    ("edge-tflite-dynamic-int8", "edge", "tflite-dynamic", "tflite"),
    ("edge-tflite-int8", "edge", "tflite-int8", "tflite"),
    # The static batch-1 twins (what a phone or the camera loop runs: XNNPACK plans a fixed shape).
    ("edge-tflite-fp32-b1", "edge", "tflite-fp32-b1", "tflite"),
    ("edge-tflite-int8-b1", "edge", "tflite-int8-b1", "tflite"),
    # the shipped geo generator (a second input: the yaw, 45° here)
    ("geo-keras", "geo", "keras", "keras"),
    ("geo-onnx", "geo", "onnx", "onnx"),
    ("geo-tflite-fp32-b1", "geo", "tflite-fp32-b1", "tflite"),
    ("geo-tflite-int8", "geo", "tflite-int8", "tflite"),
    ("geo-tflite-int8-b1", "geo", "tflite-int8-b1", "tflite"),
]
FIXTURES = {"vgg": "vgg_models", "edge": "edge_models", "geo": "geo_models"}
MODEL_NAMES = {"vgg": "vgg_unet (original)", "edge": "edge_generator", "geo": "geo_generator (shipped)"}


@pytest.mark.parametrize("case,which,fmt,engine", CASES, ids=[c[0] for c in CASES])
def test_generator(benchmark, request, face_crop, case, which, fmt, engine):
    from runtime.engines import load_engine

    models = request.getfixturevalue(FIXTURES[which])
    path = models["paths"][fmt]
    eng = load_engine(path, engine, THREADS)
    yaw = [45.0] if eng.needs_yaw else None
    for _ in range(3):  # warm-up: graph tracing, allocations
        eng.run(face_crop, yaw=yaw)
    benchmark.group = "generator (1 image, batch 1)"
    benchmark.extra_info.update({
        "case": case, "model": MODEL_NAMES[which], "format": fmt,
        "engine": engine, "providers": eng.providers, "threads": THREADS, "path": os.path.relpath(path),
        "size_mb": os.path.getsize(path) / 2**20, "source": models["source"],
        "calibration": models.get("calibration", ""), "original": case == "vgg_unet-keras",
        **machine_load(), **peak_memory(path, engine, THREADS)})
    rounds = 10 if which == "vgg" else 100
    cpu0 = time.process_time()
    out = benchmark.pedantic(eng.run, (face_crop, yaw), rounds=rounds, iterations=1)
    # CPU ms per image over all threads of this process: robust to other load on the machine.
    benchmark.extra_info["cpu_ms_per_image"] = (time.process_time() - cpu0) * 1e3 / rounds
    assert out.shape == (128, 128, 3)
