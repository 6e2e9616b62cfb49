"""The whole headless camera pipeline per frame on a 640x480 video with one face.

One round = one frame through ``runtime.camera.process_frame`` (detect every N frames or
optical-flow tracking, pose network, canonical crop, the generator, drawing) plus the mp4v write of the
annotated frame and video decoding of the next one, exactly as ``--headless`` does. The video
rewinds at its end. Report: median ms and the sustained FPS (1000 / mean ms: detection frames
are slower than tracked ones, so the mean is the honest rate). Generators: the default geometric one
(``geometry``: 3DDFA_V2's landmarks + runtime.geometry, every frame) and the learned one (ONNX, TFLite).
"""
import os
import time

import cv2
import pytest

from benchmarks.conftest import machine_load

ROUNDS = 300
CASES = [("geometry", 5), ("onnx", 5), ("tflite-fp32", 5), ("onnx", 1)]


@pytest.mark.parametrize("fmt,detect_every", CASES, ids=[f"{f}-detect-every-{n}" for f, n in CASES])
def test_camera_pipeline(benchmark, geo_models, face_video, tmp_path, fmt, detect_every):
    from runtime import camera
    from runtime.pipeline import analyzer_for, load_generator

    eng = load_generator("geometry" if fmt == "geometry" else geo_models["paths"][fmt], "auto", 2)
    tracker = camera.FaceTracker(analyzer_for(eng, "fast", 2), detect_every)
    cap = cv2.VideoCapture(face_video)
    writer = [None]
    stats = {"faces": 0, "frames": 0, "detections": 0}

    def one_frame():
        ok, frame = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = cap.read()
        ms = {}
        face, canvas = camera.process_frame(frame, tracker, eng, 0.0, ms)
        if writer[0] is None:
            h, w = canvas.shape[:2]
            writer[0] = cv2.VideoWriter(str(tmp_path / "bench.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30, (w, h))
        writer[0].write(canvas)
        stats["frames"] += 1
        stats["faces"] += face is not None
        stats["detections"] += "detect" in ms

    for _ in range(5):
        one_frame()
    benchmark.group = "camera pipeline (640x480, per frame)"
    cpu0 = time.process_time()
    benchmark.pedantic(one_frame, rounds=ROUNDS, iterations=1)
    cpu_ms = (time.process_time() - cpu0) * 1e3 / ROUNDS  # all threads of this process: robust to other load
    writer[0].release()
    benchmark.extra_info.update({"case": f"pipeline-{fmt}-detect-every-{detect_every}", "format": fmt,
                                 "detect_every": detect_every, "cpu_ms_per_frame": cpu_ms, "video": os.path.relpath(face_video),
                                 "source": geo_models["source"], **stats, **machine_load()})
    assert stats["faces"] >= 0.95 * stats["frames"]  # the face is found/tracked in (nearly) every frame


LOOP_FRAMES, WARM_FRAMES = 600, 30


def sustained_fps(rows: list[dict]) -> float:
    """Frames per second past start-up: from the ``t`` of frame WARM_FRAMES to that of the last one."""
    t = [r["t"] for r in rows[WARM_FRAMES:]]
    return (len(t) - 1) / (t[-1] - t[0])


@pytest.mark.parametrize("fmt", ["geometry", "onnx", "tflite-fp32"])
def test_camera_loop_end_to_end(benchmark, geo_models, face_video, tmp_path, fmt):
    """``python -m runtime.camera --headless`` as shipped (decode, generator and output on threads of
    their own): the video played LOOP_FRAMES frames (``--loop``). One round = one such run, start-up
    (model and dlib loading) included; per frame = round / frames. ``sustained_fps``: the loop's rate
    past start-up (frames.jsonl's ``t``, from frame WARM_FRAMES on), the median of the rounds."""
    import json

    import numpy as np

    from runtime import camera

    model = "geometry" if fmt == "geometry" else geo_models["paths"][fmt]
    args = ["--source", face_video, "--model", model, "--headless", "--out", str(tmp_path),
            "--detect-every", "5", "--loop", "--max-frames", str(LOOP_FRAMES)]
    rates = []

    def run():
        rc = camera.main(args)
        with open(tmp_path / "frames.jsonl") as f:
            rates.append(sustained_fps([json.loads(l) for l in f]))
        return rc

    run()  # warm-up: page cache, model load paths
    rates.clear()
    benchmark.group = "camera loop, whole video (per video)"
    cpu0 = time.process_time()
    rc = benchmark.pedantic(run, rounds=3, iterations=1)
    assert rc == 0
    with open(tmp_path / "frames.jsonl") as f:
        rows = [json.loads(l) for l in f]
    frames = len(rows)
    stages = {k: float(np.median([r["ms"][k] for r in rows if k in r["ms"]]))
              for k in ("capture", "detect", "pose", "track", "generator", "draw", "write")}
    benchmark.extra_info.update({"case": f"camera-loop-{fmt}", "format": fmt, "detect_every": 5,
                                 "frames": frames, "faces": sum(r["box"] is not None for r in rows),
                                 "per_frame": True, "cpu_ms_per_frame": (time.process_time() - cpu0) * 1e3 / (3 * frames),
                                 "stage_median_ms": stages, "sustained_fps": float(np.median(rates)),
                                 "sustained_fps_rounds": rates,
                                 # the loop's own 30-frame FPS readout, past start-up (model/dlib loading)
                                 "in_loop_fps": float(np.median([r["fps"] for r in rows[WARM_FRAMES:]])),
                                 "video": os.path.relpath(face_video), "source": geo_models["source"], **machine_load()})
    assert frames == LOOP_FRAMES
