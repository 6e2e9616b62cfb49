"""Generator v2's refiner: its Rotate-and-Render pairs (a real sample of the prepare step) and the model."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT

DATA = os.environ.get("FRONTALIZE_DATA", os.path.join(ROOT, "..", "shared", "data"))
needs_data = pytest.mark.skipif(not os.path.isdir(os.path.join(DATA, "cfp400")) or
                                not os.path.isdir(os.path.join(DATA, "multipie30")),
                                reason="../shared/data (cfp400, multipie30) absent")


def psnr_in(a, b, mask) -> float:
    w = mask.astype(np.float64)[..., None] / 255.0
    mse = ((a.astype(np.float64) - b) ** 2 * w).sum() / (3 * w.sum())
    return float(10 * np.log10(255.0 ** 2 / mse))


@needs_data
def test_rotate_render_pairs_are_aligned_resumable_and_hold_out_the_test_people(tmp_path):
    from training import rotate_render as rr

    jobs = rr.list_jobs(DATA, renders=2)
    people = {j["person"] for j in jobs}
    assert not {f"cfp{i:03d}" for i in range(351, 401)} & people and not {f"mp{i:03d}" for i in range(44, 50)} & people
    assert {"render", "real"} == {j["kind"] for j in jobs}
    # one frontal photo turned by 0 and by 45 degrees, and one real Multi-PIE side view
    base = next(j for j in jobs if j["id"] == "cfp_010_01_0")
    pick = [{**base, "id": "t0", "turn": 0.0, "mirror": False}, {**base, "id": "t45", "turn": 45.0},
            next(j for j in jobs if j["kind"] == "real" and j["turn"] == 30.0)]
    rows = [rr.make_one(j, str(tmp_path)) for j in pick]
    assert all("file" in r for r in rows), rows
    tiles = [cv2.imread(str(tmp_path / r["file"]))[..., ::-1] for r in rows]
    assert all(t.shape == (128, 384, 3) for t in tiles)
    # turned by 0, the geometric output is the target itself up to resampling: the alignment holds
    x, y, m = tiles[0][:, :128], tiles[0][:, 128:256], tiles[0][:, 256:, 0]
    assert psnr_in(x, y, m) > 24
    assert abs(rows[1]["yaw"]) > 25 and abs(rows[2]["yaw"]) > 20  # 3DDFA_V2 reads the render as turned
    for t in tiles[1:]:  # and its frontal still matches the target better than a shifted copy does
        x, y, m = t[:, :128], t[:, 128:256], t[:, 256:, 0]
        assert psnr_in(x, y, m) > psnr_in(np.roll(x, 6, 1), y, m) + 1


@needs_data
def test_rotate_render_prepare_resumes(tmp_path):
    from training import rotate_render as rr

    out = tmp_path / "rnr"
    rr.prepare(DATA, str(out), renders=1, workers=1, limit=2)
    index = json.loads((out / "pairs.json").read_text())["pairs"]
    files = [r["file"] for r in index if "file" in r]
    assert len(index) == 2 and files
    os.remove(out / files[0])  # a lost output is made again; a finished one is not
    mtime = {f: os.path.getmtime(out / f) for f in files[1:]}
    rr.prepare(DATA, str(out), renders=1, workers=1, limit=2)
    assert (out / files[0]).exists()
    assert all(os.path.getmtime(out / f) == t for f, t in mtime.items())
    assert not [f for f in os.listdir(out) if ".tmp" in f]


def test_refiner_starts_as_the_identity_and_fits_the_budget():
    from training.models import count_macs
    from training.refiner import build_refiner

    model = build_refiner()
    assert count_macs(model) <= 0.6e9
    x = np.random.default_rng(0).uniform(-1, 1, (2, 128, 128, 3)).astype(np.float32)
    np.testing.assert_allclose(model(x).numpy(), x, atol=1e-6)


def test_geometry_plus_refiner_runs_through_the_users_path(tmp_path):
    """An untrained refiner (the identity) exported to ONNX and TFLite: ``geometry+<file>`` gives the
    geometric frontal back, through the CLI's own loader; a model that is not a refiner is refused."""
    from export.convert import export_model
    from runtime.errors import ModelError
    from runtime.image_io import load_image
    from runtime.pipeline import Frontalizer
    from training.refiner import build_refiner, save_refiner

    keras_path = save_refiner(build_refiner(), str(tmp_path), {"steps": 0})
    paths = export_model(keras_path, ["onnx", "tflite-fp32"], str(tmp_path / "export"))
    rgb = load_image(os.path.join(ROOT, "samples", "profile_woman.jpg")).rgb  # 3DDFA_V2: -82 deg, fully refined
    plain = Frontalizer("geometry")(rgb)
    assert abs(plain[0].yaw) > 75
    for fmt in ("onnx", "tflite-fp32-b1"):
        fr = Frontalizer("geometry+" + paths[fmt])
        refined = fr(rgb)
        assert os.path.basename(paths[fmt]) in repr(fr.engine)
        assert len(refined) == len(plain) == 1
        assert np.abs(refined[0].frontal.astype(int) - plain[0].frontal).max() <= 1, fmt
    with pytest.raises(ModelError, match="not a 128 px refiner"):
        Frontalizer("geometry+frontalizer.onnx").load()


@needs_data
def test_refiner_training_resumes_exactly(tmp_path):
    """Two steps in one run, or one step, a stop and a resumed step: the same weights."""
    import argparse

    from training import refiner as rf
    from training import rotate_render as rr

    jobs = {j["id"]: j for j in rr.list_jobs(DATA, renders=2)}
    pairs = tmp_path / "rnr"
    pairs.mkdir()
    rows = [rr.make_one(jobs[i], str(pairs)) for i in ("cfp_010_01_0", "cfp_011_02_1", "cfp_305_01_0")]
    assert all("file" in r for r in rows), rows
    (pairs / "pairs.json").write_text(json.dumps({"pairs": rows}))

    def run(out, total):
        return rf.train(argparse.Namespace(pairs=str(pairs), out=str(out), width=4, batch=2, lr=1e-3, id_weight=0.5,
                                           steps=1, total_steps=total, seed=0))

    run(tmp_path / "a", 2)
    run(tmp_path / "b", 1)
    log = run(tmp_path / "b", 2)
    assert [e["step"] for e in log["epochs"]] == [1, 2]
    import keras

    wa = keras.models.load_model(tmp_path / "a" / "refiner.keras").get_weights()
    wb = keras.models.load_model(tmp_path / "b" / "refiner.keras").get_weights()
    assert any(np.abs(w).max() > 0 for w in wa[-2:])  # it trained: the zero-initialised last layer moved
    for x, y in zip(wa, wb):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
