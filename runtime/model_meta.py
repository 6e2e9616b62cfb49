"""What a runtime needs to use an exported generator, stored with the model.

ONNX: ``metadata_props`` (each value a string; this dict is stored as JSON under the key
``frontalize``). TFLite: a JSON sidecar ``<model>.tflite.json``. Keras: the same JSON as
``<model>.keras.json`` beside the file. Runtimes read this instead of hard-coding sizes.
"""
from __future__ import annotations

import json
import math
import os

from .errors import ModelError

META_KEY = "frontalize"
YAWS = list(range(-90, 91, 15))


def default_meta(model: str, **kw) -> dict:
    meta = {
        "model": model,  # geo | edge | pix2pix | autoencoder | dcgan | cvae
        "input_size": 128,
        "layout": "NHWC",
        "channel_order": "RGB",
        "input_range": [-1.0, 1.0],
        "output_range": [-1.0, 1.0],
        # Framing of the training crops (runtime.pose: eye midpoint at (64, 41.4)/128, mouth midpoint
        # 47.5/128 below it); training.prepare crops with the runtime's own code.
        "crop_rule": "canonical-eye-mouth",
        # cvae only: second input, one-hot over these yaw labels; the frontal label is 0.
        "yaw_labels": YAWS if model == "cvae" else None,
        # geo only: second input, each face's yaw in degrees, shape (N, 1)
        "yaw_input": "degrees" if model == "geo" else None,
        "format": "keras",
        "batch": "dynamic",
    }
    meta.update(kw)
    return meta


def sidecar_path(model_path: str) -> str:
    return model_path + ".json"


def write_sidecar(model_path: str, meta: dict) -> None:
    from .image_io import atomic_write_bytes

    atomic_write_bytes(sidecar_path(model_path), json.dumps(meta, indent=1).encode())


def require_regular_file(path: str, what: str) -> None:
    """Refuse a FIFO, device or folder by ``stat`` before anything opens it (a FIFO blocks ``open``)."""
    import stat

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ModelError(f"{path}: no such {what}") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read {what} ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ModelError(f"{path}: not a regular file (a FIFO, device or folder cannot be a {what})")


def _number_pair(meta: dict, key: str, path: str) -> None:
    v = meta.get(key, [-1.0, 1.0])
    try:
        lo, hi = (float(x) for x in v)
        ok = math.isfinite(lo) and math.isfinite(hi) and lo != hi and not isinstance(v, str)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ModelError(f"{path}: metadata {key} must be two different finite numbers [lo, hi], got {v!r}"[:300])


def validate_meta(meta, path: str) -> dict:
    """The metadata fields a runtime relies on, checked: one ModelError line for the first bad one."""
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: metadata must be a JSON object, got {type(meta).__name__}")
    size = meta.get("input_size", 128)
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 2048:
        raise ModelError(f"{path}: metadata input_size must be a whole number of pixels in 8..2048, got {size!r}"[:300])
    _number_pair(meta, "input_range", path)
    _number_pair(meta, "output_range", path)
    if meta.get("layout", "NHWC") != "NHWC":
        raise ModelError(f"{path}: layout {meta.get('layout')!r} not supported (NHWC only)"[:300])
    if str(meta.get("channel_order", "RGB")).upper() not in ("RGB", "BGR"):
        raise ModelError(f"{path}: metadata channel_order must be RGB or BGR, got {meta.get('channel_order')!r}"[:300])
    labels = meta.get("yaw_labels")
    if labels is not None and (not isinstance(labels, list) or not labels or
                               not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in labels)):
        raise ModelError(f"{path}: metadata yaw_labels must be a list of numbers, got {labels!r}"[:300])
    return meta


def meta_from_session(sess, model_path: str) -> dict:
    """The metadata of an open onnxruntime session (its ``metadata_props``), validated."""
    props = sess.get_modelmeta().custom_metadata_map
    if META_KEY not in props:
        raise ModelError(f"{model_path}: no '{META_KEY}' metadata (not exported by `python -m export`)")
    return validate_meta(json.loads(props[META_KEY]), model_path)


def read_meta(model_path: str) -> dict:
    """Metadata of a .onnx (metadata_props) or .tflite/.keras (sidecar JSON) file, validated."""
    require_regular_file(model_path, "model file")
    if model_path.endswith(".onnx"):
        import onnxruntime as ort

        try:
            sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ModelError(f"{model_path}: not a valid ONNX model ({str(e).splitlines()[0][:200]})") from None
        return meta_from_session(sess, model_path)
    side = sidecar_path(model_path)
    if not os.path.exists(side):
        raise ModelError(f"{model_path}: metadata sidecar {os.path.basename(side)} is missing")
    require_regular_file(side, "metadata sidecar")
    with open(side, "rb") as f:
        return validate_meta(json.loads(f.read(1 << 20)), model_path)
