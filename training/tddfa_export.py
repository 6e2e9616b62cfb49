"""3DDFA_V2's MobileNet-0.5 (``../shared/models/3ddfa_v2``) as an ONNX file the runtime runs.

    python -m training.tddfa_export [--weights DIR] [--out artifacts/tddfa_mb05.onnx]   (make tddfa)

The checkpoint is a PyTorch state dict in PyTorch's legacy (pre-1.6) serialization: a few pickles,
then each tensor storage as raw little-endian bytes. It is read here with ``pickle`` and numpy, so
neither the build nor the runtime needs PyTorch. The network (MobileNetV1, widen factor 0.5, as the
checkpoint's tensor names and shapes say): a 3x3 stride-2 stem, 13 depthwise-separable blocks
(strides 1 2 1 2 1 2 1 1 1 1 1 2 1), global average pooling, and two heads on the 512-d feature:
``fc_param`` (62 values, normalised: param = out * std + mean) and ``fc_lm`` (68 x, then 68 y, in
[-1, 1] across the 120 px crop). Batch norms are folded into the convolutions (inference only).

The ONNX graph takes ``image``: (N, 120, 120, 3) uint8 RGB, as the runtime's crops are, and does the
network's own preprocessing (BGR, (x - 127.5) / 128, NCHW) inside; outputs ``param`` (N, 62), already
de-normalised with the checkpoint's mean and std, and ``landmarks`` (N, 2, 68) in crop pixels.

Licence: the code of 3DDFA_V2 is MIT; the weights were trained on 300W-LP to regress a Basel Face
Model 2009 variant, academic use only: the ONNX file is research-only, like Multi-PIE and CFP.
"""
from __future__ import annotations

import argparse
import collections
import os
import pickle
import struct

import numpy as np

DEFAULT_WEIGHTS = os.path.join(os.environ.get("FRONTALIZE_MODELS", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "models")), "3ddfa_v2")
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "artifacts", "tddfa_mb05.onnx")
SIZE = 120
BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default
STRIDES = {"dw2_1": 1, "dw2_2": 2, "dw3_1": 1, "dw3_2": 2, "dw4_1": 1, "dw4_2": 2, "dw5_1": 1, "dw5_2": 1,
           "dw5_3": 1, "dw5_4": 1, "dw5_5": 1, "dw5_6": 2, "dw6": 1}
_STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                   "LongStorage": np.int64, "IntStorage": np.int32, "ByteStorage": np.uint8}


def read_legacy_state_dict(path: str) -> dict[str, np.ndarray]:
    """name -> array of a state dict saved by torch.save in the legacy format (magic 0x1950a86a...)."""

    class Storage:
        def __init__(self, kind, key):
            self.kind, self.key = kind, key

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module == "torch._utils" and name.startswith("_rebuild_tensor"):
                return lambda storage, offset, size, stride, *_: (storage, offset, tuple(size), tuple(stride))
            if module == "torch" and name.endswith("Storage"):
                return name
            if module == "collections" and name == "OrderedDict":
                return collections.OrderedDict
            raise pickle.UnpicklingError(f"{path}: unexpected object {module}.{name} in a weights file")

        def persistent_load(self, pid):  # ('storage', kind, key, location, size)
            return Storage(pid[1], pid[2])

    with open(path, "rb") as f:
        if pickle.load(f) != 0x1950a86a20f9469cfc6c:
            raise ValueError(f"{path}: not a legacy PyTorch checkpoint")
        pickle.load(f)  # protocol version
        pickle.load(f)  # sys info
        obj = Unpickler(f).load()
        keys = pickle.load(f)
        state = obj.get("state_dict", obj)
        kinds = {t[0].key: t[0].kind for t in state.values() if isinstance(t, tuple)}
        storages = {}
        for key in keys:
            n = struct.unpack("<q", f.read(8))[0]
            dt = np.dtype(_STORAGE_DTYPES[kinds[key]])
            storages[key] = np.frombuffer(f.read(n * dt.itemsize), dt)
    out = {}
    for name, (storage, offset, size, stride) in state.items():
        a = storages[storage.key][offset:]
        out[name.removeprefix("module.")] = np.lib.stride_tricks.as_strided(
            a, size, [s * a.itemsize for s in stride]).copy()
    return out


def fold_bn(w: np.ndarray, sd: dict, bn: str) -> tuple[np.ndarray, np.ndarray]:
    """Convolution weights and bias with the batch norm ``bn`` folded in."""
    scale = sd[f"{bn}.weight"] / np.sqrt(sd[f"{bn}.running_var"] + BN_EPS)
    bias = sd[f"{bn}.bias"] - sd[f"{bn}.running_mean"] * scale
    return (w * scale[:, None, None, None]).astype(np.float32), bias.astype(np.float32)


def build_onnx(sd: dict[str, np.ndarray], mean: np.ndarray, std: np.ndarray):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def conv(x, name, w, b, stride, group=1):
        k = w.shape[-1]
        nodes.append(helper.make_node("Conv", [x, const(f"{name}.w", w), const(f"{name}.b", b)], [f"{name}.conv"],
                                      strides=[stride, stride], pads=[k // 2] * 4, group=group))
        nodes.append(helper.make_node("Relu", [f"{name}.conv"], [f"{name}.out"]))
        return f"{name}.out"

    # uint8 NHWC RGB -> float NCHW BGR, (x - 127.5) / 128
    nodes.append(helper.make_node("Cast", ["image"], ["x_f"], to=TensorProto.FLOAT))
    nodes.append(helper.make_node("Transpose", ["x_f"], ["x_nchw"], perm=[0, 3, 1, 2]))
    flip = np.zeros((3, 3, 1, 1), np.float32)
    flip[[0, 1, 2], [2, 1, 0]] = 1.0 / 128.0  # a 1x1 convolution: RGB -> BGR and the scale in one
    nodes.append(helper.make_node("Conv", ["x_nchw", const("bgr.w", flip), const("bgr.b", np.full(3, -127.5 / 128))],
                                  ["x_bgr"]))
    x = conv("x_bgr", "conv1", *fold_bn(sd["conv1.weight"], sd, "bn1"), 2)
    for block, stride in STRIDES.items():
        w = sd[f"{block}.conv_dw.weight"]
        x = conv(x, f"{block}.dw", *fold_bn(w, sd, f"{block}.bn_dw"), stride, group=w.shape[0])
        x = conv(x, f"{block}.pw", *fold_bn(sd[f"{block}.conv_sep.weight"], sd, f"{block}.bn_sep"), 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["feature"], axis=1))
    # param = (feature @ W.T + b) * std + mean, folded into one Gemm
    w, b = sd["fc_param.weight"] * std[:, None], sd["fc_param.bias"] * std + mean
    nodes.append(helper.make_node("Gemm", ["feature", const("fc_param.w", w), const("fc_param.b", b)], ["param"],
                                  transB=1))
    # landmarks in [-1, 1] -> crop pixels: (v + 1) * SIZE / 2
    w, b = sd["fc_lm.weight"] * (SIZE / 2), (sd["fc_lm.bias"] + 1) * (SIZE / 2)
    nodes.append(helper.make_node("Gemm", ["feature", const("fc_lm.w", w), const("fc_lm.b", b)], ["lm_flat"],
                                  transB=1))
    inits.append(numpy_helper.from_array(np.array([-1, 2, 68], np.int64), "lm_shape"))
    nodes.append(helper.make_node("Reshape", ["lm_flat", "lm_shape"], ["landmarks"]))
    graph = helper.make_graph(
        nodes, "tddfa_mb05",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("param", TensorProto.FLOAT, ["N", 62]),
         helper.make_tensor_value_info("landmarks", TensorProto.FLOAT, ["N", 2, 68])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="frontalize")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def reference_forward(sd: dict[str, np.ndarray], mean, std, rgb: np.ndarray) -> np.ndarray:
    """The unfolded network in numpy on one (120, 120, 3) uint8 RGB crop -> the 62 params: a check of
    the ONNX graph that does not share its BN folding or its fused heads."""
    import cv2

    x = (rgb[..., ::-1].astype(np.float64) - 127.5) / 128.0

    def bn(x, name):
        return (x - sd[f"{name}.running_mean"]) / np.sqrt(sd[f"{name}.running_var"] + BN_EPS) * sd[f"{name}.weight"] \
            + sd[f"{name}.bias"]

    def conv(x, w, stride, depthwise):
        k = w.shape[-1]
        xp = np.pad(x, ((k // 2, k // 2), (k // 2, k // 2), (0, 0)))
        if depthwise:
            y = np.stack([cv2.filter2D(xp[..., c].astype(np.float32), -1, w[c, 0].astype(np.float32),
                                       borderType=cv2.BORDER_CONSTANT) for c in range(x.shape[-1])], -1)
            y = y[k // 2: -(k // 2) or None, k // 2: -(k // 2) or None] if k > 1 else y
        elif k == 1:
            y = x @ w[:, :, 0, 0].T
        else:
            cols = np.stack([xp[i:i + x.shape[0], j:j + x.shape[1]] for i in range(k) for j in range(k)], -1)
            y = np.einsum("hwcq,ocq->hwo", cols, w.reshape(w.shape[0], w.shape[1], k * k))
        return y[::stride, ::stride]

    x = np.maximum(bn(conv(x, sd["conv1.weight"], 2, False), "bn1"), 0)
    for block, stride in STRIDES.items():
        x = np.maximum(bn(conv(x, sd[f"{block}.conv_dw.weight"], stride, True), f"{block}.bn_dw"), 0)
        x = np.maximum(bn(conv(x, sd[f"{block}.conv_sep.weight"], 1, False), f"{block}.bn_sep"), 0)
    f = x.mean((0, 1))
    return (sd["fc_param.weight"] @ f + sd["fc_param.bias"]) * std + mean


def load(weights_dir: str):
    sd = read_legacy_state_dict(os.path.join(weights_dir, "mb05_120x120.pth"))
    with open(os.path.join(weights_dir, "param_mean_std_62d_120x120.pkl"), "rb") as f:
        ms = pickle.load(f)
    return sd, np.asarray(ms["mean"], np.float64), np.asarray(ms["std"], np.float64)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.tddfa_export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS, help="folder of mb05_120x120.pth and its mean/std pickle")
    ap.add_argument("--out", default=DEFAULT_OUT)
    a = ap.parse_args(argv)
    import cv2
    import onnxruntime as ort

    from runtime.image_io import atomic_write_bytes

    sd, mean, std = load(a.weights)
    model = build_onnx(sd, mean, std)
    data = model.SerializeToString()
    # check against the unfolded numpy network on a real-looking input before writing
    rgb = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    rgb = cv2.GaussianBlur(rgb, (0, 0), 3)
    got = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(["param"], {"image": rgb[None]})[0][0]
    want = reference_forward(sd, mean, std, rgb)
    err = float(np.abs(got - want).max() / (np.abs(want).max() + 1e-9))
    if err > 1e-4:
        raise SystemExit(f"error: the ONNX graph disagrees with the reference network (relative {err:.2e})")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    atomic_write_bytes(a.out, data)
    print(f"{a.out}: {len(data) / 1e6:.1f} MB, parity with the unfolded network: relative max error {err:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
