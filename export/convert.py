"""Convert a Keras generator (``generator.keras`` + sidecar) to ONNX and TFLite.

Formats (``FORMATS``): ``onnx`` (tf2onnx, opset 17, dynamic batch, metadata in
``metadata_props["frontalize"]``) and TFLite ``tflite-fp32``, ``tflite-fp16`` (float16
weights), ``tflite-dynamic`` (int8 weights, float activations), ``tflite-int8`` (full
integer, int8 input/output) and ``tflite-int8-floatio`` (full integer inside, float32
input/output: the quantize/dequantize happen in the model). Every TFLite file is written
twice: dynamic batch (``edge_fp32.tflite``) and static batch 1 (``edge_fp32_b1.tflite``, for
LiteRT.js which rejects dynamic shapes); each gets a ``<file>.json`` sidecar.

The TFLite path does not use ``tf.keras``: the Keras 3 model is wrapped in a ``tf.function``
with a fixed input signature and converted from its concrete function.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re

import numpy as np

from runtime.errors import ModelError, first_line
from runtime.image_io import atomic_write_bytes
from runtime.model_meta import META_KEY, read_meta, write_sidecar

SIZE = 128
N_YAWS = 13
OPSET = 17
FORMATS = ("onnx", "tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "tflite-int8-floatio")
DEFAULT_FORMATS = FORMATS
INT8_FORMATS = ("tflite-int8", "tflite-int8-floatio")
_TFLITE_SUFFIX = {"tflite-fp32": "fp32", "tflite-fp16": "fp16", "tflite-dynamic": "dynamic",
                  "tflite-int8": "int8", "tflite-int8-floatio": "int8_floatio"}
_QUANT = {"tflite-fp32": "none", "tflite-fp16": "float16-weights", "tflite-dynamic": "dynamic-range-int8",
          "tflite-int8": "full-int8", "tflite-int8-floatio": "full-int8-float-io"}


def load_generator(keras_path: str):
    """(keras model, metadata dict); ModelError for a missing/corrupt file or an unexpected signature."""
    if not os.path.exists(keras_path):
        raise ModelError(f"{keras_path}: no such model file")
    if not keras_path.endswith(".keras"):
        raise ModelError(f"{keras_path}: expected a .keras generator (as written by training.train)")
    meta = read_meta(keras_path)  # the sidecar: ModelError when missing
    import keras

    import runtime.keras_layers  # noqa: F401  (registers the custom layers)

    # CVAE files saved before FrontalLabel hold a Lambda (frontal one-hot) whose code is stored as
    # bytecode: Keras only loads it with safe_mode=False. Only our own cvae generators take this path.
    try:
        model = keras.models.load_model(keras_path, compile=False, safe_mode=meta.get("model") != "cvae")
    except Exception as e:
        raise ModelError(f"{keras_path}: not a loadable .keras model ({first_line(e)})") from None
    check_signature(model, meta, keras_path)
    return as_float32(model, safe_mode=meta.get("model") != "cvae"), meta


def as_float32(model, safe_mode: bool = True):
    """The same network with every layer in float32. A generator trained with mixed precision (the
    full profile on a GPU: mixed_bfloat16) keeps its weights in float32 but computes in bfloat16, and
    its ONNX graph mixes bfloat16 and float16 casts that onnxruntime refuses to load; the float32
    twin differs from it by bfloat16 rounding only (<= 0.02 on the [-1, 1] output)."""
    import keras

    if all(layer.dtype_policy.name == "float32" for layer in model._flatten_layers()):
        return model

    def to_float32(o):
        if isinstance(o, dict):
            if o.get("class_name") == "DTypePolicy" and isinstance(o.get("config"), dict):
                o["config"]["name"] = "float32"
            for v in o.values():
                to_float32(v)
        elif isinstance(o, list):
            for v in o:
                to_float32(v)

    cfg = keras.saving.serialize_keras_object(model)
    to_float32(cfg)
    twin = keras.saving.deserialize_keras_object(cfg, safe_mode=safe_mode)
    twin.set_weights(model.get_weights())
    return twin


def expected_inputs(meta: dict) -> list[tuple]:
    n = meta.get("input_size", SIZE)
    shapes = [(None, n, n, 3)]
    if meta.get("model") == "cvae":
        shapes.append((None, len(meta.get("yaw_labels") or range(N_YAWS))))
    if meta.get("yaw_input") == "degrees":
        shapes.append((None, 1))
    return shapes


def yaw_input(meta: dict, yaws_deg, n: int) -> np.ndarray | None:
    """The second input for faces at these yaws (degrees): (n, 1) degrees for the geo generator, a
    one-hot over the yaw labels for the cvae, None for single-input models."""
    yaws = np.zeros(n) if yaws_deg is None else np.broadcast_to(np.asarray(yaws_deg, np.float64).reshape(-1), (n,))
    if meta.get("yaw_input") == "degrees":
        return yaws.astype(np.float32).reshape(n, 1)
    labels = meta.get("yaw_labels")
    if labels:
        idx = np.abs(yaws[:, None] - np.asarray(labels, np.float64)[None]).argmin(1)
        return np.eye(len(labels), dtype=np.float32)[idx]
    return None


def check_signature(model, meta: dict, path: str) -> None:
    got_in = [tuple(t.shape) for t in model.inputs]
    got_out = [tuple(t.shape) for t in model.outputs]
    want_in = expected_inputs(meta)
    n = meta.get("input_size", SIZE)
    if got_in != want_in or got_out != [(None, n, n, 3)]:
        raise ModelError(f"{path}: unexpected signature: inputs {got_in} -> outputs {got_out}, "
                         f"expected {want_in} -> {[(None, n, n, 3)]} for a '{meta.get('model')}' generator")


def _specs(model, meta: dict, batch):
    import tensorflow as tf

    names = ["image", "yaw"][: len(model.inputs)]
    return [tf.TensorSpec((batch, *s[1:]), tf.float32, name=nm) for nm, s in zip(names, expected_inputs(meta))]


def _function(model, meta: dict, batch):
    """tf.function image[, yaw] -> {"frontal": ...} with the given batch (None = dynamic)."""
    import tensorflow as tf

    specs = _specs(model, meta, batch)
    if len(specs) == 1:
        @tf.function(input_signature=specs)
        def serve(image):
            return {"frontal": model(image, training=False)}
    else:
        @tf.function(input_signature=specs)
        def serve(image, yaw):
            return {"frontal": model([image, yaw], training=False)}
    return serve, specs


# ----------------------------------------------------------------------------- ONNX
def to_onnx(model, meta: dict, path: str) -> str:
    import tf2onnx

    fn, specs = _function(model, meta, None)
    try:
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=specs, opset=OPSET)
    except Exception as e:
        raise ModelError(f"ONNX conversion failed ({first_line(e)})") from None
    for vi in list(proto.graph.input) + list(proto.graph.output):  # name the dynamic dim
        vi.type.tensor_type.shape.dim[0].dim_param = "batch"
    m = {**meta, "format": "onnx", "batch": "dynamic", "quantization": "none", "opset": OPSET,
         "input_dtype": "float32", "output_dtype": "float32",
         "inputs": [i.name for i in proto.graph.input], "outputs": [o.name for o in proto.graph.output]}
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(m)
    atomic_write_bytes(path, proto.SerializeToString())
    return path


# ----------------------------------------------------------------------------- TFLite
def to_float_inputs(images: np.ndarray) -> np.ndarray:
    """uint8 RGB (N,H,W,3) -> float32 in [-1, 1]; float input is taken as already scaled."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 127.5 - 1.0
    return images.astype(np.float32)


def representative_dataset(calib: np.ndarray, yaws: np.ndarray | None, meta: dict | None):
    """Calibration feeds: the crops, with the second input made from their own yaws (degrees)."""
    x = to_float_inputs(calib)
    second = yaw_input(meta or {}, yaws, len(x))

    def gen():
        for i in range(len(x)):
            yield [x[i:i + 1]] if second is None else [x[i:i + 1], second[i:i + 1]]
    return gen


def frozen_function(model, meta: dict, batch):
    """The generator as a concrete function with its weights folded in as constants.

    Converting the unfrozen function of a Keras 3 model leaves READ_VARIABLE ops that fail
    during int8 calibration; frozen, every variant converts (and in a second, not ten).
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    fn, _ = _function(model, meta, batch)
    return convert_variables_to_constants_v2(fn.get_concrete_function())


# Tensors of the flow-warp heads (edge: WarpBlend layer "frontal", the flow conv and its rescaling;
# geo: the geometric flow, both WarpBlends, the mirroring and the residual flow/logit heads). Pixel coordinates, bilinear weights and Gather indices do not survive int8 (a 128-px
# coordinate in 256 levels, floor/cast on quantized values: the output was garbage), so a full-int8
# export keeps them in float and quantizes everything else (all the convolutions).
_WARP_TENSORS = re.compile(r"(/frontal[_/]|/flow[_/]|/rescaling[_/]|/geo_flow[_/]|/geo_frontal[_/]|/frontal_blend[_/]"
                           r"|/mirror_in[_/]|/dflow[_/]|/logits[_/]|/yaw_plane[_/]|^Identity$)")


def _has_warp(frozen) -> bool:
    return any(op.type == "GatherV2" and "frontal" in op.name for op in frozen.graph.get_operations())


def _int8_keep_warp_float(conv, calib, calib_yaws, meta) -> bytes:
    import tensorflow as tf

    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    data = representative_dataset(calib[: min(8, len(calib))], None if calib_yaws is None else calib_yaws[:8], meta)
    try:
        probe = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=data)
        probe.run()  # lists the quantized tensors by name
        buf = io.StringIO()
        probe.layer_statistics_dump(buf)
        names = [r["tensor_name"] for r in csv.DictReader(io.StringIO(buf.getvalue()))]
        deny = [n for n in names if _WARP_TENSORS.search(n)]
        opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=deny)
        sel = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=data, debug_options=opts)
        # The debugger's own get_nondebug_quantized_model() drops the int8 I/O types: quantize its
        # calibrated model ourselves with them.
        from tensorflow.lite.python import convert as tfl_convert

        int8_io = conv.inference_input_type == tf.int8
        io_type = tf.int8 if int8_io else tf.float32
        return tfl_convert.mlir_quantize(sel.calibrated_model, fully_quantize=int8_io,
                                         input_data_type=io_type, output_data_type=io_type,
                                         denylisted_nodes=deny)
    except Exception as e:
        raise ModelError(f"int8 conversion (warp head kept in float) failed ({first_line(e)})") from None


def tflite_bytes(frozen, fmt: str, calib: np.ndarray | None = None, calib_yaws: np.ndarray | None = None,
                 meta: dict | None = None) -> bytes:
    """Convert a ``frozen_function`` to one TFLite variant (``fmt``)."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    if fmt == "tflite-fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif fmt == "tflite-dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif fmt in INT8_FORMATS:
        if calib is None or len(calib) == 0:
            raise ModelError(f"{fmt} needs calibration images (real validation crops): "
                             "pass --calib MANIFEST or calib_images")
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative_dataset(calib, calib_yaws, meta)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if fmt == "tflite-int8":
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        if _has_warp(frozen):
            return _int8_keep_warp_float(conv, calib, calib_yaws, meta)
    elif fmt != "tflite-fp32":
        raise ModelError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")
    try:
        return conv.convert()
    except Exception as e:
        raise ModelError(f"{fmt} conversion failed ({first_line(e)})") from None


def tflite_io(content: bytes) -> tuple[list[dict], list[dict]]:
    """Inputs/outputs of a TFLite model in tensor order: name, shape signature, dtype, scale/zero-point."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content)

    def describe(details: list[dict]) -> list[dict]:
        rows = []
        for d in details:
            row = {"name": d["name"], "shape": [int(v) for v in d["shape_signature"]], "dtype": np.dtype(d["dtype"]).name}
            scale, zp = d["quantization"]
            if row["dtype"] in ("int8", "uint8"):
                row["scale"], row["zero_point"] = float(scale), int(zp)
            rows.append(row)
        return rows
    return describe(it.get_input_details()), describe(it.get_output_details())


def tflite_meta(meta: dict, fmt: str, batch, content: bytes) -> dict:
    ins, outs = tflite_io(content)
    m = {**meta, "format": "tflite", "batch": batch if batch else "dynamic", "quantization": _QUANT[fmt],
         "variant": fmt, "inputs": ins, "outputs": outs,
         }
    image = next(r for r in ins if "yaw" not in r["name"])
    m["input_dtype"], m["output_dtype"] = image["dtype"], outs[0]["dtype"]
    # Shortcuts for the image input/output (what a runtime needs to (de)quantize).
    for key, row in (("input", image), ("output", outs[0])):
        if "scale" in row:
            m[f"{key}_scale"], m[f"{key}_zero_point"] = row["scale"], row["zero_point"]
    return m


def write_tflite(frozen, meta: dict, fmt: str, path: str, batch, calib=None, calib_yaws=None) -> str:
    content = tflite_bytes(frozen, fmt, calib, calib_yaws, meta)
    atomic_write_bytes(path, content)
    write_sidecar(path, tflite_meta(meta, fmt, batch, content))
    return path


# ----------------------------------------------------------------------------- entry point
def output_paths(model_name: str, formats: list[str], out_dir: str) -> dict[str, str]:
    """format -> path; each TFLite format also has a '<format>-b1' static batch-1 twin."""
    paths = {}
    for fmt in formats:
        if fmt == "onnx":
            paths[fmt] = os.path.join(out_dir, f"{model_name}.onnx")
        elif fmt in _TFLITE_SUFFIX:
            base = os.path.join(out_dir, f"{model_name}_{_TFLITE_SUFFIX[fmt]}")
            paths[fmt], paths[f"{fmt}-b1"] = base + ".tflite", base + "_b1.tflite"
        else:
            raise ModelError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")
    return paths


def export_model(keras_path: str, formats: list[str], out_dir: str,
                 calib_images: np.ndarray | None = None, calib_yaws: np.ndarray | None = None,
                 progress: bool = False) -> dict[str, str]:
    """Write each format of the generator at ``keras_path`` into ``out_dir``.

    Returns {format: path}; TFLite formats add a ``<format>-b1`` entry (static batch 1).
    ``calib_images``: real crops, uint8 RGB (N,128,128,3) or float32 in [-1, 1], needed by the
    int8 formats (ModelError otherwise). ``calib_yaws``: their yaws in degrees (models with a yaw input).
    """
    formats = list(dict.fromkeys(formats))
    model, meta = load_generator(keras_path)
    paths = output_paths(meta["model"], formats, out_dir)
    if any(f in INT8_FORMATS for f in formats) and (calib_images is None or len(calib_images) == 0):
        raise ModelError("int8 formats need calibration images (real validation crops): "
                         "pass --calib MANIFEST or calib_images")
    os.makedirs(out_dir, exist_ok=True)
    jobs = [(f, b) for f in formats for b in ((None,) if f == "onnx" else (None, 1))]
    if progress:
        from tqdm import tqdm

        jobs = tqdm(jobs, desc=f"export {meta['model']}", unit="file")
    frozen = {}
    for fmt, batch in jobs:
        if progress:
            jobs.set_postfix_str(f"{fmt}{'-b1' if batch else ''}")
        if fmt == "onnx":
            to_onnx(model, meta, paths[fmt])
        else:
            if batch not in frozen:
                frozen[batch] = frozen_function(model, meta, batch)
            write_tflite(frozen[batch], meta, fmt, paths[f"{fmt}-b1" if batch else fmt], batch, calib_images, calib_yaws)
    return paths
