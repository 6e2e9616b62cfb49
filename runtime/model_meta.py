"""What a runtime needs to use an exported generator, stored with the model.

ONNX: ``metadata_props`` (each value a string; this dict is stored as JSON under the key
``frontalize``). TFLite: a JSON sidecar ``<model>.tflite.json``. Keras: the same JSON as
``<model>.keras.json`` beside the file. Runtimes read this instead of hard-coding sizes.
"""
from __future__ import annotations

import json
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


def read_meta(model_path: str) -> dict:
    """Metadata of a .onnx (metadata_props) or .tflite/.keras (sidecar JSON) file."""
    if not os.path.exists(model_path):
        raise ModelError(f"{model_path}: no such model file")
    if model_path.endswith(".onnx"):
        import onnxruntime as ort

        try:
            sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ModelError(f"{model_path}: not a valid ONNX model ({str(e).splitlines()[0][:200]})") from None
        props = sess.get_modelmeta().custom_metadata_map
        if META_KEY not in props:
            raise ModelError(f"{model_path}: no '{META_KEY}' metadata (not exported by `python -m export`)")
        return json.loads(props[META_KEY])
    side = sidecar_path(model_path)
    if not os.path.exists(side):
        raise ModelError(f"{model_path}: metadata sidecar {os.path.basename(side)} is missing")
    with open(side) as f:
        return json.load(f)
