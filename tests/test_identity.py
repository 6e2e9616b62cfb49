"""training.identity: the Keras port of dlib's face ResNet agrees with dlib, has finite input
gradients, and says how to get its weights when they are missing (no network needed for that).

The agreement tests skip unless face-api's weights are installed (``npm install --no-save
@vladmandic/face-api@1.7.15`` in the repository root, or ``FRONTALIZE_FACEAPI_DIR``)."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("keras")

from training import identity as I  # noqa: E402

# Measured: on grace_hopper's aligned chip the port is 0.038 (L2) from dlib's descriptor, on 40
# multipie frontals 0.037 mean / 0.043 max, cosine >= 0.9995. All of it is the uint8 quantization
# of face-api's weights (re-quantization-sized noise on the weights moves the descriptor 0.039-0.042).
MAX_L2 = 0.06
MIN_COS = 0.999


def test_missing_weights_dir_says_how_to_get_them(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"npm install --no-save @vladmandic/face-api@1\.7\.15"):
        I.load_face_embedder(str(tmp_path))
    monkeypatch.setenv("FRONTALIZE_FACEAPI_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="FRONTALIZE_FACEAPI_DIR"):
        I.load_face_embedder()


@pytest.fixture(scope="module")
def embedder():
    try:
        I.faceapi_dir()
    except FileNotFoundError as e:
        pytest.skip(f"face-api weights absent: {e}")
    return I.load_face_embedder()


@pytest.fixture(scope="module")
def aligned(grace):
    """grace_hopper: dlib's own descriptor and the 150 px 5-point chip it is computed on."""
    import dlib

    from runtime.detectors import dlib_model_file

    dets = dlib.get_frontal_face_detector()(grace, 0)
    assert len(dets) == 1
    shape = dlib.shape_predictor(dlib_model_file("shape_predictor_5_face_landmarks.dat"))(grace, dets[0])
    net = dlib.face_recognition_model_v1(dlib_model_file("dlib_face_recognition_resnet_model_v1.dat"))
    want = np.asarray(net.compute_face_descriptor(grace, shape), np.float32)
    chip = dlib.get_face_chip(grace, shape, size=150, padding=0.25)
    return chip, want


def _to_model(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(rgb, np.float32)[None] / 127.5 - 1.0


def test_structure(embedder):
    assert embedder.output_shape == (None, 128)
    assert not embedder.trainable_weights
    assert embedder(np.zeros((2, 128, 128, 3), np.float32)).shape == (2, 128)


def test_agrees_with_dlib(embedder, aligned):
    chip, want = aligned
    got = np.asarray(embedder(_to_model(chip)))[0]
    cos = float(got @ want / np.linalg.norm(got) / np.linalg.norm(want))
    assert np.linalg.norm(got - want) < MAX_L2
    assert cos > MIN_COS


def test_input_gradient_is_finite(embedder, grace):
    import cv2

    x = tf.constant(_to_model(cv2.resize(grace[40:440, 60:460], (128, 128), interpolation=cv2.INTER_AREA)))
    target = tf.zeros((1, 128))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.square(embedder(x) - target))
    g = tape.gradient(loss, x).numpy()
    assert g.shape == x.shape
    assert np.isfinite(g).all() and np.abs(g).max() > 0
