"""Benchmark fixtures: the exported models (cached in ``artifacts/bench_models/``) and a video.

Geo generator (shipped, ``runtime/assets/frontalizer.onnx``): its Keras file from ``runs/geo7_last`` when
present, else a freshly built ``geo_generator()``. Previous edge generator: ``models/edge_generator.keras``
if present, else a freshly built (untrained) ``edge_generator()``:
speed does not depend on the weights, but int8 calibration ranges do, so the report says
which one was used. The original: the seed's VGGFace pix2pix U-Net generator
(``vgg_unet("transpose", weights=None)``), saved once and exported the same way.
int8 calibration: validation crops (ids 042-043) of multipie30 when present, else crops of
the bundled sample. Exports are redone when the source file changes (size + mtime).
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.append(os.path.join(ROOT, "tests"))  # model_fixtures (shared with the tests)
CACHE = os.path.join(ROOT, "artifacts", "bench_models")
EDGE_SOURCES = [os.path.join(ROOT, "models", "edge_generator.keras")]  # gone since the geo model shipped
# The shipped geo generator's Keras file when this checkout trained it (runs/ is not in git), else
# the same architecture untrained: speed does not depend on the weights.
GEO_SOURCES = [os.path.join(ROOT, "runs", "geo7_last", "generator.keras")]
GEO_FORMATS = ["onnx", "tflite-fp32", "tflite-int8"]
EDGE_FORMATS = ["onnx", "tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8"]
VGG_FORMATS = ["onnx", "tflite-fp32"]
DATA = os.path.join(os.environ.get("FRONTALIZE_DATA", os.path.join(ROOT, "..", "shared", "data")), "multipie30")
VIDEO_FRAMES = 150


def calibration_crops(n: int = 64) -> tuple[np.ndarray, str]:
    """Real crops for int8 calibration, never from the test identities (044-049)."""
    from runtime.image_io import load_image

    files = sorted(glob.glob(os.path.join(DATA, "04[23]", "*.jpg")))
    if files:
        pick = files[:: max(1, len(files) // n)][:n]  # spread over yaws/illuminations
        return np.stack([load_image(p).rgb for p in pick]), f"multipie30 val ids 042-043 ({len(pick)} crops)"
    from model_fixtures import sample_crops

    return sample_crops(), "8 crops of samples/grace_hopper.jpg (multipie30 absent)"


def geo_calibration(n: int = 64) -> tuple[np.ndarray, np.ndarray, str]:
    """Canonical crops and their estimated yaws: the pooled manifest's validation rows when
    ``make crops`` has run, else the faces of the bundled photos through the runtime's pipeline."""
    pooled = os.path.join(ROOT, "artifacts", "pooled.json")
    if os.path.exists(pooled):
        from export.calib import validation_crops

        imgs, yaws = validation_crops(pooled, "val", n=n)
        return imgs, yaws, f"pooled manifest, validation identities ({len(imgs)} crops)"
    from runtime.detect import FaceAnalyzer
    from runtime.image_io import load_image

    fa = FaceAnalyzer("default", threads=1)
    faces = [f for p in sorted(glob.glob(os.path.join(ROOT, "samples", "*.jpg"))) for f in fa.analyze(load_image(p).rgb)[0]]
    return (np.stack([f.crop for f in faces]), np.array([f.yaw for f in faces], np.float32),
            f"{len(faces)} faces of samples/ (artifacts/pooled.json absent)")


def _stamp(path: str) -> dict:
    """Cache key of an export: the weights file and the code that builds and converts the graph."""
    import hashlib

    st = os.stat(path)
    code = hashlib.sha256()
    sources = sorted(glob.glob(os.path.join(ROOT, "training", "models", "*.py")))
    for src in sources + [os.path.join(ROOT, "runtime", "keras_layers.py"), os.path.join(ROOT, "export", "convert.py")]:
        with open(src, "rb") as f:
            code.update(f.read())
    return {"source": path, "size": st.st_size, "mtime": st.st_mtime, "code": code.hexdigest()[:16]}


def _export_cached(keras_path: str, formats: list[str], out_dir: str, calib) -> dict:
    from export.convert import export_model

    index = os.path.join(out_dir, "index.json")
    stamp = _stamp(keras_path)
    if os.path.exists(index):
        with open(index) as f:
            cached = json.load(f)
        if cached["stamp"] == stamp and all(os.path.exists(p) for p in cached["paths"].values()):
            return cached
    calib_images, calib_yaws, calib_note = None, None, ""
    if any("int8" in f for f in formats):
        got = calib()
        calib_images, calib_note = got[0], got[-1]
        calib_yaws = got[1] if len(got) == 3 else None
    paths = export_model(keras_path, formats, out_dir, calib_images=calib_images, calib_yaws=calib_yaws)
    cached = {"stamp": stamp, "paths": {"keras": keras_path, **paths}, "calibration": calib_note}
    from runtime.image_io import atomic_write_bytes

    atomic_write_bytes(index, json.dumps(cached, indent=1).encode())
    return cached


def _fresh_keras(name: str, build, model_kind: str) -> str:
    path = os.path.join(CACHE, f"{name}.keras")
    if not os.path.exists(path):
        from runtime.model_meta import default_meta, write_sidecar

        os.makedirs(CACHE, exist_ok=True)
        tmp = os.path.join(CACHE, f"{name}.tmp.keras")
        build().save(tmp)
        os.replace(tmp, path)
        write_sidecar(path, default_meta(model_kind))
    return path


def _generator_exports(sources: list[str], kind: str, formats: list[str], calib) -> dict:
    """Exports of the first existing source, else of the architecture untrained (training.models.<kind>_generator)."""
    src = next((p for p in sources if os.path.exists(p)), None)
    if src is None:
        import training.models

        src = _fresh_keras(f"{kind}_generator_untrained", getattr(training.models, f"{kind}_generator"), kind)
    out = _export_cached(src, formats, os.path.join(CACHE, kind), calib)
    return {**out, "source": os.path.relpath(src, ROOT)}


@pytest.fixture(scope="session")
def edge_models() -> dict:
    return _generator_exports(EDGE_SOURCES, "edge", EDGE_FORMATS, calibration_crops)


@pytest.fixture(scope="session")
def geo_models() -> dict:
    return _generator_exports(GEO_SOURCES, "geo", GEO_FORMATS, geo_calibration)


@pytest.fixture(scope="session")
def vgg_models() -> dict:
    from training.models import vgg_unet

    src = _fresh_keras("vgg_unet_transpose", lambda: vgg_unet("transpose", weights=None), "pix2pix")
    out = _export_cached(src, VGG_FORMATS, os.path.join(CACHE, "vgg_unet"), calibration_crops)
    return {**out, "source": os.path.relpath(src, ROOT)}


@pytest.fixture(scope="session")
def face_crop() -> np.ndarray:
    from model_fixtures import sample_crops

    return sample_crops()[0]


@pytest.fixture(scope="session")
def face_video() -> str:
    """640x480, 150 frames, one face (the bundled sample moving and scaling), cached."""
    from model_fixtures import make_face_video

    path = os.path.join(CACHE, f"face_640x480_{VIDEO_FRAMES}.mp4")
    if not os.path.exists(path):
        os.makedirs(CACHE, exist_ok=True)
        tmp = os.path.join(CACHE, "face.tmp.mp4")
        make_face_video(tmp, VIDEO_FRAMES)
        os.replace(tmp, path)
    return path


_PROBE = r"""
import json, resource, sys
import numpy as np
path, engine, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
if engine == "keras":
    import tensorflow, keras, runtime.keras_layers
elif engine == "onnx":
    import onnxruntime
else:
    import ai_edge_litert.interpreter
from runtime.engines import load_engine

def hwm_mb():  # peak RSS of this address space; ru_maxrss would carry the parent's peak over exec
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

base = hwm_mb()
eng = load_engine(path, engine, threads)
x = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
yaw = 0.0 if eng.needs_yaw else None
for _ in range(5):
    eng.run(x, yaw=yaw)
peak = hwm_mb()
print(json.dumps({"rss_base_mb": base, "rss_peak_mb": peak, "rss_delta_mb": peak - base}))
"""


def peak_memory(path: str, engine: str, threads: int = 2) -> dict:
    """Peak resident memory of loading ``path`` and running it 5 times, in a fresh process
    (VmHWM sees native allocations that tracemalloc misses). Baseline: after importing the
    engine's library, so the delta is the model's own cost."""
    r = subprocess.run([sys.executable, "-c", _PROBE, path, engine, str(threads)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        return {"rss_error": (r.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def machine_load() -> dict:
    return {"loadavg_1m": os.getloadavg()[0], "cpu_count": os.cpu_count()}
