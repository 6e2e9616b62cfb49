"""Engines on real tiny exported models: every engine/format agrees with the Keras original."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from model_fixtures import ROOT, ensure_tiny_models
from runtime.engines import OnnxEngine, TFLiteEngine, load_engine
from runtime.errors import ModelError

FP32 = ["onnx", "tflite-fp32", "tflite-fp32-b1"]
# Minimum correlation with the Keras output. The tiny net is untrained and high-gain, so it
# amplifies quantization noise; wrong channel order / mirroring score ~0.55-0.63 on it.
QUANTIZED = {"tflite-fp16": 0.99, "tflite-fp16-b1": 0.99, "tflite-dynamic": 0.95, "tflite-int8": 0.75,
             "tflite-int8-b1": 0.75}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return ensure_tiny_models(str(tmp_path_factory.getbasetemp() / "tiny_models"))


@pytest.fixture(scope="session")
def crops(tiny):
    return np.load(tiny["crops"])


@pytest.fixture(scope="session")
def reference(tiny, crops):
    """The Keras model called directly, normalization written out here (not the engine's)."""
    import keras

    import training.models  # noqa: F401

    model = keras.saving.load_model(tiny["edge"]["keras"], compile=False)
    y = np.asarray(model(crops.astype(np.float32) / 127.5 - 1.0, training=False))
    return np.clip((y + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def corr(a, b):
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def test_keras_engine_matches_the_model_called_directly(tiny, crops, reference):
    out = load_engine(tiny["edge"]["keras"]).run(crops)
    assert out.dtype == np.uint8 and out.shape == crops.shape
    assert np.abs(out.astype(int) - reference).max() <= 1
    assert reference.std() > 20  # the fixture's output really depends on the input


@pytest.mark.parametrize("fmt", FP32)
def test_fp32_engines_agree_with_keras(tiny, crops, reference, fmt):
    eng = load_engine(tiny["edge"][fmt], threads=1)
    out = eng.run(crops)
    assert out.shape == crops.shape
    assert np.abs(out.astype(int) - reference).max() <= 2
    assert eng.meta["model"] == "edge"


@pytest.mark.parametrize("fmt", sorted(QUANTIZED))
def test_quantized_engines_stay_close(tiny, crops, reference, fmt):
    out = load_engine(tiny["edge"][fmt]).run(crops)
    assert corr(out, reference) >= QUANTIZED[fmt]
    assert corr(out, reference) > corr(reference[..., ::-1], reference) + 0.1  # beats a channel-order bug


def test_int8_engine_quantizes_its_int8_io(tiny, crops):
    eng = load_engine(tiny["edge"]["tflite-int8"])
    assert isinstance(eng, TFLiteEngine)
    assert eng.image_in["dtype"] == np.int8 and eng.out["dtype"] == np.int8
    assert eng.image_in["quantization"][0] > 0


def test_single_image_batches_and_resizing(tiny, crops, reference):
    dyn, b1 = load_engine(tiny["edge"]["tflite-fp32"]), load_engine(tiny["edge"]["tflite-fp32-b1"])
    assert dyn.dynamic_batch and not b1.dynamic_batch
    one = b1.run(crops[0])
    assert one.shape == (128, 128, 3)
    np.testing.assert_allclose(one, reference[0], atol=2)
    for n in (3, 1, 5):  # resized each time the batch changes
        assert dyn.run(crops[:n]).shape == (n, 128, 128, 3)
    big = np.repeat(np.repeat(crops[:2], 2, axis=1), 2, axis=2)  # 256 px in -> resized to 128
    assert b1.run(big).shape == (2, 128, 128, 3)
    with pytest.raises(ValueError):
        b1.run(np.zeros((2, 64, 64), np.uint8))


def test_float_input_is_taken_as_model_range(tiny, crops, reference):
    eng = load_engine(tiny["edge"]["onnx"])
    out = eng.run(crops.astype(np.float32) / 127.5 - 1.0)
    assert np.abs(out.astype(int) - reference).max() <= 2


def test_onnx_providers_end_with_cpu(tiny):
    import onnxruntime as ort

    eng = load_engine(tiny["edge"]["onnx"])
    assert isinstance(eng, OnnxEngine)
    assert eng.providers[-1] == "CPUExecutionProvider"
    assert set(eng.providers) <= set(ort.get_available_providers())


def test_cvae_uses_the_yaw_and_engines_agree(tiny, crops):
    keras_eng = load_engine(tiny["cvae"]["keras"])
    assert keras_eng.needs_yaw
    with pytest.raises(ValueError, match="yaw"):
        keras_eng.run(crops)
    left, right = keras_eng.run(crops, yaw=-40.0), keras_eng.run(crops, yaw=[50.0] * len(crops))
    assert np.abs(left.astype(int) - right).mean() > 5  # the yaw input reaches the model
    # -40 -> nearest label -45 and -38 -> -45 too: same one-hot, same output
    np.testing.assert_array_equal(keras_eng.run(crops, yaw=-38.0), left)
    for fmt in ("onnx", "tflite-fp32", "tflite-fp32-b1"):
        out = load_engine(tiny["cvae"][fmt]).run(crops, yaw=-40.0)
        assert np.abs(out.astype(int) - left).max() <= 2, fmt


def test_bad_model_files_give_one_line_model_errors(tiny, tmp_path):
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"\x08\x01garbage" * 50)
    bad_tflite = tmp_path / "bad.tflite"
    bad_tflite.write_bytes(os.urandom(4096))
    (tmp_path / "bad.tflite.json").write_text(json.dumps({"model": "edge", "input_size": 128}))
    no_sidecar = tmp_path / "copy.tflite"
    no_sidecar.write_bytes(open(tiny["edge"]["tflite-fp32"], "rb").read())
    bad_keras = tmp_path / "bad.keras"
    bad_keras.write_bytes(b"PK\x03\x04 not a zip")
    (tmp_path / "bad.keras.json").write_text(json.dumps({"model": "edge"}))
    cases = [tmp_path / "missing.onnx", bad_onnx, bad_tflite, no_sidecar, bad_keras, tmp_path / "model.pt"]
    (tmp_path / "model.pt").write_bytes(b"x")
    for path in cases:
        with pytest.raises(ModelError) as e:
            load_engine(str(path))
        msg = str(e.value)
        assert "\n" not in msg and str(path) in msg, msg


def test_runtime_runs_without_tensorflow(tiny, crops):
    """Block TensorFlow and keras imports: the ONNX/TFLite engines, CLI and camera still load and run."""
    code = (
        "import sys, numpy as np\n"
        "sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "from runtime.engines import load_engine\n"
        "import runtime.camera, runtime.frontalize, runtime.pipeline\n"
        f"x = np.load({tiny['crops']!r})\n"
        f"for p in ({tiny['edge']['onnx']!r}, {tiny['edge']['tflite-int8']!r}):\n"
        "    assert load_engine(p).run(x).shape == x.shape\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]
