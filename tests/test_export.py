"""Export: a small edge generator to every format, checked against Keras.

Tolerances (export output vs Keras output, both in [-1, 1], on images the int8 calibration did
not see): ONNX and TFLite fp32 PSNR > 90 dB and max abs error < 1e-3; fp16 weights PSNR > 30 dB;
dynamic-range int8 PSNR > 30 dB; full int8 PSNR > 14 dB.

The generator is random but its BatchNorm statistics are set from data, so its activations have
the unit scale of a trained network (an untouched random one outputs ~0 and would pass any
tolerance). Random weights make it far more sensitive to float rounding than a trained one:
Keras itself differs by ~1e-5 between a batch of 8 and single images, and ONNX/TFLite fp32
reach a few 1e-4 at the worst pixel (typical error ~1e-6); the 1-epoch-trained edge generator
stays below 1e-6. Quantization suffers the same way: on this random model fp16 weights give
~33 dB and full int8 ~17 dB, where the trained edge generator gives 79 dB and 56 dB (see the
report of `python -m export --parity`). The bounds here catch a broken conversion (wrong scale,
zero point, layout or batch: < 10 dB), not the last dB.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
pytest.importorskip("tf2onnx")

from export.__main__ import main as export_main  # noqa: E402
from export.calib import CalibrationError, validation_crops  # noqa: E402
from export.convert import FORMATS, export_model, load_generator  # noqa: E402
from export.parity import Runner, parity_report, psnr  # noqa: E402
from runtime.errors import ModelError  # noqa: E402
from runtime.model_meta import default_meta, read_meta, write_sidecar  # noqa: E402

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


def smooth_images(n: int, seed: int) -> np.ndarray:
    """Face-sized blobs and gradients: uint8 RGB (n,128,128,3), not noise (noise is not an image)."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (6, 6, 3)).astype(np.float32)
        img = cv2.resize(small, (128, 128), interpolation=cv2.INTER_CUBIC)
        img += np.linspace(-30, 30, 128)[None, :, None] * rng.uniform(-1, 1)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def calibrate_bn(model, x):
    """Each BatchNorm's moving stats := the stats of its input on x (data-dependent init)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            feat = np.asarray(keras.Model(model.input, layer.input)(x, training=False))
            feat = feat.reshape(-1, feat.shape[-1])
            layer.moving_mean.assign(feat.mean(0))
            layer.moving_variance.assign(feat.var(0) + feat.var(0).mean() + 1e-3)
    return model


def save_generator(model, path, kind="edge"):
    model.save(path)
    write_sidecar(path, default_meta(kind))
    return path


@pytest.fixture(scope="module")
def small_edge(tmp_path_factory):
    import training.models as m

    keras.utils.set_random_seed(0)
    g = m.edge_generator(width=0.25)
    calibrate_bn(g, smooth_images(16, seed=1).astype(np.float32) / 127.5 - 1)
    return save_generator(g, str(tmp_path_factory.mktemp("edge") / "generator.keras"))


@pytest.fixture(scope="module")
def exported(small_edge, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    paths = export_model(small_edge, list(FORMATS), str(out), calib_images=smooth_images(32, seed=2))
    return paths


@pytest.fixture(scope="module")
def reference(small_edge):
    x = smooth_images(8, seed=3).astype(np.float32) / 127.5 - 1
    model, _ = load_generator(small_edge)
    return x, np.asarray(model(x, training=False))


def test_every_format_is_written_with_a_batch1_twin(exported):
    tflite = [f for f in FORMATS if f.startswith("tflite")]
    assert set(exported) == {"onnx"} | set(tflite) | {f"{f}-b1" for f in tflite}
    for fmt, path in exported.items():
        assert os.path.getsize(path) > 10_000, fmt
        if fmt != "onnx":
            assert os.path.exists(path + ".json"), fmt
    assert exported["tflite-fp32-b1"].endswith("edge_fp32_b1.tflite")


@pytest.mark.parametrize("fmt,max_err,min_psnr", [
    ("onnx", 1e-3, 90.0), ("tflite-fp32", 1e-3, 90.0), ("tflite-fp32-b1", 1e-3, 90.0),
    ("tflite-fp16", None, 30.0), ("tflite-fp16-b1", None, 30.0),
    ("tflite-dynamic", None, 30.0), ("tflite-dynamic-b1", None, 30.0),
    ("tflite-int8", None, 14.0), ("tflite-int8-b1", None, 14.0),
    ("tflite-int8-floatio", None, 14.0), ("tflite-int8-floatio-b1", None, 14.0),
])
def test_parity_with_keras(exported, reference, fmt, max_err, min_psnr):
    x, ref = reference
    assert ref.std() > 0.1  # the model's output varies: the tolerances below mean something
    out = Runner(exported[fmt])(x)
    assert out.shape == ref.shape
    if max_err is not None:
        assert np.max(np.abs(out - ref)) < max_err, f"{fmt}: PSNR {psnr(ref, out):.1f} dB"
    if min_psnr is not None:
        assert psnr(ref, out) > min_psnr, f"{fmt}: max abs err {np.max(np.abs(out - ref)):.3g}"


def test_metadata_round_trips(exported):
    meta = read_meta(exported["onnx"])
    assert (meta["format"], meta["model"], meta["batch"], meta["opset"]) == ("onnx", "edge", "dynamic", 17)
    assert meta["input_size"] == 128 and meta["crop_rule"] == "canonical-eye-mouth"
    fp32 = read_meta(exported["tflite-fp32"])
    assert (fp32["format"], fp32["batch"], fp32["quantization"], fp32["input_dtype"]) == \
        ("tflite", "dynamic", "none", "float32")
    int8 = read_meta(exported["tflite-int8-b1"])
    assert (int8["batch"], int8["input_dtype"], int8["output_dtype"]) == (1, "int8", "int8")
    # [-1, 1] in int8: about 1/128 per step, zero point near 0
    assert 0.005 < int8["input_scale"] < 0.01 and abs(int8["input_zero_point"]) <= 2
    assert 0.005 < int8["output_scale"] < 0.01
    floatio = read_meta(exported["tflite-int8-floatio"])
    assert floatio["input_dtype"] == "float32" and "input_scale" not in floatio


def test_batch1_variants_have_static_shape(exported):
    from ai_edge_litert.interpreter import Interpreter
    import onnx

    for fmt, path in exported.items():
        if fmt == "onnx":
            dim = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
            assert dim[0].dim_param == "batch" and [d.dim_value for d in dim[1:]] == [128, 128, 3]
            continue
        sig = list(Interpreter(model_path=path).get_input_details()[0]["shape_signature"])
        assert sig == ([1, 128, 128, 3] if fmt.endswith("-b1") else [-1, 128, 128, 3]), fmt


def test_dynamic_batch_runs_a_batch(exported, reference):
    x, ref = reference
    for fmt in ("onnx", "tflite-fp32"):
        r = Runner(exported[fmt])
        assert r(x[:3]).shape == (3, 128, 128, 3)
        np.testing.assert_allclose(r(x[:3]), ref[:3], atol=1e-3)


def test_int8_refuses_without_calibration(small_edge, tmp_path):
    with pytest.raises(ModelError, match="calibration"):
        export_model(small_edge, ["onnx", "tflite-int8"], str(tmp_path))
    assert os.listdir(tmp_path) == []  # refused before writing anything


def test_parity_report_writes_json_and_markdown(small_edge, exported, tmp_path):
    paths = {k: exported[k] for k in ("onnx", "tflite-int8-b1")}
    rep = parity_report(small_edge, paths, smooth_images(4, seed=4), latency_runs=1, out_dir=str(tmp_path))
    saved = json.load(open(tmp_path / "parity.json"))
    assert [r["format"] for r in saved["rows"]] == ["keras", "onnx", "tflite-int8-b1"]
    onnx_row = saved["rows"][1]
    assert onnx_row["max_abs_err"] < 1e-3 and onnx_row["latency_b1_ms"] > 0
    assert onnx_row["id_faces"] == 0 and "no face" in onnx_row["id_note"]  # blobs are not faces
    assert "| tflite-int8-b1 |" in (tmp_path / "parity.md").read_text() == rep["markdown"]


# ----------------------------------------------------------------------------- bad input
def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 400
    return msg


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelError) as e:
        export_model(str(tmp_path / "nope.keras"), ["onnx"], str(tmp_path))
    assert "no such model file" in _one_line(e)


@pytest.mark.parametrize("name", ["generator.keras", "model.onnx", "model.tflite"])
def test_corrupt_model_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelError) as e:
        if name.endswith(".keras"):
            write_sidecar(str(path), default_meta("edge"))
            export_model(str(path), ["onnx"], str(tmp_path / "out"))
        else:
            Runner(str(path))
    assert "not a" in _one_line(e)


def test_keras_without_sidecar(tmp_path, small_edge):
    import shutil

    path = tmp_path / "generator.keras"
    shutil.copy(small_edge, path)
    with pytest.raises(ModelError) as e:
        export_model(str(path), ["onnx"], str(tmp_path / "out"))
    assert "sidecar" in _one_line(e)


@pytest.mark.parametrize("shape", [(64, 64, 3), (128, 128, 1)])
def test_unexpected_signature(tmp_path, shape):
    inp = keras.Input(shape)
    model = keras.Model(inp, keras.layers.Conv2D(3, 3, padding="same", activation="tanh")(inp))
    path = save_generator(model, str(tmp_path / "generator.keras"))
    with pytest.raises(ModelError) as e:
        export_model(path, ["onnx"], str(tmp_path / "out"))
    assert "unexpected signature" in _one_line(e)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert export_main([str(tmp_path / "nope.keras"), "--out", str(tmp_path), "--formats", "onnx"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no such model file" in err and "\n" not in err
    assert export_main([str(tmp_path / "nope.keras"), "--out", str(tmp_path), "--formats", "onnx,bogus"]) == 2


# ----------------------------------------------------------------------------- calibration data
def _manifest(tmp_path) -> str:
    from runtime.image_io import atomic_write_image

    rows = {}
    for split, sid in (("train", "020"), ("val", "042"), ("test", "044")):
        rows[split] = []
        for i, img in enumerate(smooth_images(3, seed=int(sid))):
            rel = f"{sid}/{sid}_01_01_080_{i:02d}.png"
            atomic_write_image(str(tmp_path / rel), img)
            rows[split].append({"x": rel, "y": rel, "id": sid, "yaw": -45})
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"root": str(tmp_path), "pairs": rows,
                                "identities": {"train": ["020"], "val": ["042"], "test": ["044"]}}))
    return str(path)


def test_calibration_reads_validation_crops_only(tmp_path):
    m = _manifest(tmp_path)
    imgs, yaws = validation_crops(m, "val", n=10)
    assert imgs.shape == (3, 128, 128, 3) and imgs.dtype == np.uint8 and list(yaws) == [-45, -45, -45]
    with pytest.raises(CalibrationError, match="test split"):
        validation_crops(m, "test")
    with pytest.raises(CalibrationError, match="no such manifest"):
        validation_crops(str(tmp_path / "none.json"))


def test_cvae_two_inputs_convert(tmp_path):
    """The CVAE frontalizer (image + yaw one-hot, a Lambda for the frontal label) converts."""
    import training.models as m

    keras.utils.set_random_seed(0)
    enc, dec = m.cvae_networks(latent=8, base=4)
    path = save_generator(m.cvae_frontalizer(enc, dec), str(tmp_path / "generator.keras"), "cvae")
    calib = smooth_images(8, seed=5)
    paths = export_model(path, ["onnx", "tflite-fp32", "tflite-int8"], str(tmp_path / "out"),
                         calib_images=calib, calib_yaws=np.arange(8))
    model, _ = load_generator(path)
    x = calib[:2].astype(np.float32) / 127.5 - 1
    yaw = np.eye(13, dtype=np.float32)[[0, 12]]
    ref = np.asarray(model([x, yaw], training=False))
    for fmt in ("onnx", "tflite-fp32-b1"):
        np.testing.assert_allclose(Runner(paths[fmt])(x, yaw), ref, atol=1e-4)
    assert read_meta(paths["tflite-int8"])["inputs"][1]["shape"] == [-1, 13]
