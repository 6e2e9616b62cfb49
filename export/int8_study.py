"""Where full-int8 loses accuracy: ``python -m export.int8_study MODEL.keras [--calib MANIFEST]``.

Prints, for the batch-1 model on validation crops (disjoint from the calibration crops):
PSNR vs Keras for several calibration set sizes; the layers with the largest quantization
error relative to their step (TFLite QuantizationDebugger; ~0.29 = 1/sqrt(12) is plain
rounding, much more means a badly fitting range); and the PSNR when the worst layers are left
in float (selective quantization; needs float kernels, so not for int8-only accelerators).
"""
from __future__ import annotations

import argparse
import csv
import io

import numpy as np


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m export.int8_study", description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--calib", default="artifacts/manifest.json")
    ap.add_argument("--sizes", default="16,64,200", help="calibration set sizes to compare")
    ap.add_argument("--eval-n", type=int, default=32)
    ap.add_argument("--deny", type=int, default=5, help="leave this many worst layers in float")
    a = ap.parse_args(argv)

    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from .calib import validation_crops
    from .convert import frozen_function, load_generator, representative_dataset, to_float_inputs
    from .parity import psnr

    model, meta = load_generator(a.model)
    if len(model.inputs) != 1:
        raise SystemExit("int8_study handles single-input generators")
    frozen = frozen_function(model, meta, 1)
    sizes = [int(s) for s in a.sizes.split(",")]
    cal, _ = validation_crops(a.calib, "val", max(sizes))
    x = to_float_inputs(validation_crops(a.calib, "val", a.eval_n, phase=0.5)[0])
    ref = np.asarray(model(x, training=False))

    def run(content: bytes) -> np.ndarray:
        it = Interpreter(model_content=content, num_threads=2)
        it.allocate_tensors()
        i, o = it.get_input_details()[0], it.get_output_details()[0]
        out = []
        for k in range(len(x)):
            it.set_tensor(i["index"], x[k:k + 1])
            it.invoke()
            out.append(it.get_tensor(o["index"]))
        return np.concatenate(out)

    def converter(n):
        c = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = representative_dataset(cal[:n], None, None)
        return c

    for n in sizes:
        c = converter(n)
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        print(f"calibration {n:4d} crops: full int8 PSNR vs Keras {psnr(ref, run(c.convert())):.2f} dB", flush=True)

    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter(max(sizes)), debug_dataset=representative_dataset(cal[: min(32, len(cal))], None, None))
    debugger.run()
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    for r in rows:
        r["err_per_step"] = float(np.sqrt(float(r["mean_squared_error"])) / float(r["scale"]))
    rows.sort(key=lambda r: -r["err_per_step"])
    print("worst layers (rms error / quantization step):")
    for r in rows[: a.deny]:
        print(f"  {r['err_per_step']:.3f}  {r['op_name']:16s} {r['tensor_name'][:90]}")
    c = converter(max(sizes))
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=[r["tensor_name"] for r in rows[: a.deny]])
    sel = tf.lite.experimental.QuantizationDebugger(
        converter=c, debug_dataset=representative_dataset(cal[:8], None, None), debug_options=opts)
    print(f"worst {a.deny} layers in float: PSNR vs Keras {psnr(ref, run(sel.get_nondebug_quantized_model())):.2f} dB")


if __name__ == "__main__":
    main()
