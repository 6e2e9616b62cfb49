"""The models: each one learns (generator L1 falls over 50 steps on one fixed pair),
VGGFace weights load by layer name from a Keras 2 ``save_weights`` h5, and count_macs."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from synthetic_faces import cartoon_face  # noqa: E402

from training import models as M  # noqa: E402
from training.datasets import YAWS  # noqa: E402

VGG = {"autoencoder", "pix2pix"}


def _model(name):
    if name == "autoencoder":
        return M.Autoencoder(weights=None)
    if name == "pix2pix":
        return M.Pix2Pix(generator=M.vgg_unet("transpose", "vgg_unet_pix2pix", weights=None))
    return M.MODELS[name]()


def _gen_l1(model, data):
    # Training-mode forward (batch statistics): after 50 steps BatchNorm's moving averages have
    # not caught up, so inference mode would measure them rather than what was learned.
    return float(tf.reduce_mean(tf.abs(model.generate(data["x"], data["yaw"], training=True) - data["y"])))


@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.slow) if m in VGG else m for m in M.MODELS])
def test_generator_l1_falls_on_a_fixed_pair(name):
    keras.utils.set_random_seed(0)
    batch = 1 if name in VGG else 2  # the VGG U-Nets cost ~7 GMAC per image
    yaws = [45, -75][:batch]
    x = np.stack([cartoon_face(i + 1, y, "07") for i, y in enumerate(yaws)]).astype("float32") / 127.5 - 1
    t = np.stack([cartoon_face(i + 1, 0, "07") for i in range(batch)]).astype("float32") / 127.5 - 1
    data = {"x": tf.constant(x), "y": tf.constant(t), "yaw": tf.constant([YAWS.index(y) for y in yaws], tf.int32)}
    if name == "geo":  # the pooled batch: yaw in degrees, per-row pixel weight, CFP identity, real frontals
        data.update(yaw=tf.constant([[float(y)] for y in yaws]), w=tf.ones([batch]), idt=tf.fill([batch], -1),
                    real=tf.constant(t))
    model = _model(name)
    before = _gen_l1(model, data)
    step = tf.function(model.train_step)
    for _ in range(50):
        logs = step(data)
    after = _gen_l1(model, data)
    assert all(np.isfinite(float(v)) for v in logs.values())
    assert after < 0.6 * before, (name, before, after)


# ----------------------------------------------------------------------------- VGGFace weights
def _write_keras2_h5(path, layers: dict, wrap: bool = False, extra_layers=("input_1", "pool1", "fc6")):
    """keras-vggface's layout: root attr layer_names; per layer a group with attr weight_names
    and datasets ``<layer>/<layer>/kernel:0``. ``wrap``: inside model_weights (a full-model save)."""
    with h5py.File(path, "w") as f:
        g = f.create_group("model_weights") if wrap else f
        names = [*layers, *extra_layers]
        g.attrs["layer_names"] = [n.encode() for n in names]
        g.attrs["backend"] = b"tensorflow"
        g.attrs["keras_version"] = b"2.1.5"
        for name in names:
            grp = g.create_group(name)
            ws = layers.get(name, {})
            if name == "fc6":  # a layer the notop encoder does not have: ignored
                ws = {"kernel:0": np.ones((4, 4), np.float32), "bias:0": np.ones(4, np.float32)}
            grp.attrs["weight_names"] = [f"{name}/{k}".encode() for k in ws]
            for k, v in ws.items():
                grp.create_dataset(f"{name}/{k}", data=v)


def _known(shape_k, cin_cout, seed):
    rng = np.random.default_rng(seed)
    return {"kernel:0": rng.standard_normal(shape_k + cin_cout).astype(np.float32),
            "bias:0": rng.standard_normal(cin_cout[1]).astype(np.float32)}


@pytest.mark.parametrize("wrap", [False, True])
def test_vggface_weights_land_on_named_layers(tmp_path, wrap, capsys):
    enc = M.vggface_encoder()
    untouched = enc.get_layer("conv2_1").get_weights()[0].copy()
    layers = {"conv1_1": _known((3, 3), (3, 64), 1), "conv1_2": _known((3, 3), (64, 64), 2),
              "conv5_3": _known((3, 3), (512, 512), 3)}
    path = str(tmp_path / "vggface.h5")
    _write_keras2_h5(path, layers, wrap)
    assert M.load_vggface_weights(enc, path) is True
    assert "3 layers loaded" in capsys.readouterr().out
    for name, ws in layers.items():
        kernel, bias = enc.get_layer(name).get_weights()
        np.testing.assert_array_equal(kernel, ws["kernel:0"])
        np.testing.assert_array_equal(bias, ws["bias:0"])
    np.testing.assert_array_equal(enc.get_layer("conv2_1").get_weights()[0], untouched)


def test_vggface_weights_absent_says_so_once_and_keeps_random_weights(tmp_path, capsys):
    missing = str(tmp_path / "nowhere" / "vggface.h5")
    g = M.vgg_unet("upsample", "ae", weights=missing)
    out = capsys.readouterr().out
    assert out.count("VGGFace weights not found") == 1 and missing in out
    k = g.get_layer("vggface_vgg16").get_layer("conv1_1").get_weights()[0]
    assert k.std() > 0.01  # initialized, not zeros
    assert M.load_vggface_weights(M.vggface_encoder(), missing, verbose=False) is False
    assert capsys.readouterr().out == ""


def _vgg_model(name, weights):
    if name == "autoencoder":
        return M.Autoencoder(weights=weights)
    return M.Pix2Pix(generator=M.vgg_unet("transpose", "vgg_unet_pix2pix", weights=weights))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(VGG))
@pytest.mark.parametrize("with_weights", [False, True])
def test_vgg_encoder_trains_without_weights_and_stays_frozen_with_them(tmp_path, name, with_weights, capsys):
    # Without VGGFace's weights a frozen encoder would be random features forever: it must train.
    # With them (here a file holding conv1_1 only, in keras-vggface's layout) it is frozen, as the
    # original froze it, and the decoder alone learns.
    keras.utils.set_random_seed(0)
    path = str(tmp_path / "vggface.h5")
    if with_weights:
        _write_keras2_h5(path, {"conv1_1": _known((3, 3), (3, 64), 1)})
    model = _vgg_model(name, path)
    out = capsys.readouterr().out
    assert out.count("VGGFace weights") == 1, out
    assert ("1 layers loaded" in out) == with_weights and ("trains with the decoder" in out) != with_weights
    assert M.encoder_state(model.generator) == (M.ENCODER_PRETRAINED if with_weights else M.ENCODER_RANDOM)
    enc = model.generator.get_layer("vggface_vgg16")
    dec = model.generator.get_layer("frontal")
    if with_weights:
        np.testing.assert_array_equal(enc.get_layer("conv1_1").get_weights()[0], _known((3, 3), (3, 64), 1)["kernel:0"])
    before_enc = [w.copy() for w in enc.get_weights()]
    before_dec = dec.get_weights()[0].copy()
    x = np.stack([cartoon_face(1, 45, "07")]).astype("float32") / 127.5 - 1
    t = np.stack([cartoon_face(1, 0, "07")]).astype("float32") / 127.5 - 1
    logs = model.train_step({"x": tf.constant(x), "y": tf.constant(t), "yaw": tf.constant([YAWS.index(45)])})
    assert all(np.isfinite(float(v)) for v in logs.values())
    assert not np.array_equal(dec.get_weights()[0], before_dec)  # the step ran and trained the decoder
    changed = [not np.array_equal(a, b) for a, b in zip(enc.get_weights(), before_enc)]
    assert len(changed) == 26  # 13 convolutions x (kernel, bias)
    if with_weights:
        assert not any(changed)
    else:
        assert all(changed)


def test_vggface_weights_shape_mismatch_is_a_clear_error(tmp_path):
    path = str(tmp_path / "bad.h5")
    _write_keras2_h5(path, {"conv1_1": _known((3, 3), (3, 32), 1)})  # 32 filters, the encoder has 64
    with pytest.raises(ValueError, match=r"layer conv1_1 has shapes \[\(3, 3, 3, 32\), \(32,\)\], "
                                         r"expected \[\(3, 3, 3, 64\), \(64,\)\]"):
        M.load_vggface_weights(M.vggface_encoder(), path)


def test_vggface_weights_file_without_vgg_layers_is_an_error(tmp_path):
    path = str(tmp_path / "other.h5")
    _write_keras2_h5(path, {}, extra_layers=("dense_1",))
    with pytest.raises(ValueError, match="no layer of the VGG16 encoder"):
        M.load_vggface_weights(M.vggface_encoder(), path)


# ----------------------------------------------------------------------------- count_macs
def test_count_macs_by_hand():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)  # 8*8 outputs * 3*3*3 inputs * 4 filters
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)  # 4*4 outputs * 3*3 * 4 channels
    x = keras.layers.Dense(5)(keras.layers.Flatten()(x))  # 64 * 5
    m = keras.Model(inp, x)
    assert M.count_macs(m) == 8 * 8 * 27 * 4 + 4 * 4 * 9 * 4 + 64 * 5
    outer_in = keras.Input((8, 8, 3))
    outer = keras.Model(outer_in, keras.layers.Dense(2)(m(outer_in)))  # a nested model is counted too
    assert M.count_macs(outer) == M.count_macs(m) + 5 * 2


def test_edge_generator_fits_the_edge_budget():
    g = M.edge_generator()
    macs = M.count_macs(g)
    assert 0.05e9 < macs <= 0.6e9, macs
    assert M.count_macs(M.vgg_unet(weights=None)) > 10 * macs  # the seed model it replaces
    assert g.output.shape[1:] == (128, 128, 3)


def _bilinear(img, fx, fy):
    """Reference: sample img (H, W, C) at (x + fx, y + fy), coordinates clamped to the image."""
    h, w = img.shape[:2]
    gy, gx = np.mgrid[0:h, 0:w].astype("float64")
    x, y = np.clip(gx + fx, 0, w - 1), np.clip(gy + fy, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    ax, ay = (x - x0)[..., None], (y - y0)[..., None]
    top = img[y0, x0] * (1 - ax) + img[y0, x1] * ax
    return top * (1 - ay) + (img[y1, x0] * (1 - ax) + img[y1, x1] * ax) * ay


def test_warp_blend_is_bilinear_sampling_of_input_and_mirror():
    # WarpBlend is written with 1x1 convolutions and a neighbour-row gather for TFLite speed; it
    # must equal plain bilinear sampling (flows past the border, fractional and whole-pixel moves).
    rng = np.random.default_rng(0)
    b, h, w = 2, 32, 32
    image = rng.uniform(-1, 1, (b, h, w, 3))
    flow = rng.normal(0, 12, (b, h, w, 4))
    flow[0, :4] = np.round(flow[0, :4])
    logits = rng.normal(0, 2, (b, h, w, 3))
    generated = rng.uniform(-1, 1, (b, h, w, 3))
    out = M.WarpBlend()([tf.constant(a, tf.float32) for a in (image, flow, logits, generated)]).numpy()
    e = np.exp(logits - logits.max(-1, keepdims=True))
    wts = e / e.sum(-1, keepdims=True)
    for i in range(b):
        a = _bilinear(image[i], flow[i, ..., 0], flow[i, ..., 1])
        m = _bilinear(image[i, :, ::-1], flow[i, ..., 2], flow[i, ..., 3])
        ref = wts[i, ..., :1] * a + wts[i, ..., 1:2] * m + wts[i, ..., 2:3] * generated[i]
        np.testing.assert_allclose(out[i], ref, atol=2e-5)
    # zero flows and an all-input blend give the input back
    same = M.WarpBlend()([tf.constant(image, tf.float32), tf.zeros((b, h, w, 4)),
                          tf.constant(np.broadcast_to([30.0, 0, 0], (b, h, w, 3)), tf.float32),
                          tf.constant(generated, tf.float32)]).numpy()
    np.testing.assert_allclose(same, image, atol=1e-5)
