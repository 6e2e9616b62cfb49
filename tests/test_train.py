"""``python -m training.train`` end to end on a tiny generated data set, for every model:
finite losses, checkpoints, the exported generator.keras + sidecar, and --resume continuing
at the same step. Plus tf.distribute with two logical CPU devices (a subprocess: logical
devices must be configured before TensorFlow initializes), two worker processes under
MultiWorkerMirroredStrategy, the input pipeline's sharding by worker, and the full profile."""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")

from synthetic_faces import multipie_manifest, pooled_manifest, write_multipie  # noqa: E402

from training.models import MODELS  # noqa: E402
from training.train import parse_args, train  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VGG = {"autoencoder", "pix2pix"}  # ~7 GMAC per image: the slow ones


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    d = tmp_path_factory.mktemp("multipie")
    write_multipie(str(d / "data"), ["001", "002", "003", "004"])
    path = str(d / "manifest.json")
    m = multipie_manifest(str(d / "data"), {"train": ["001", "002"], "val": ["003"], "test": ["004"]}, path)
    assert len(m["pairs"]["train"]) == 12 and len(m["pairs"]["val"]) == 6
    return path


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    d = tmp_path_factory.mktemp("pooled")
    pooled_manifest(str(d / "data"), str(d / "pooled.json"))
    return str(d / "pooled.json")


def _args(model, manifest, out, *extra):
    a = ["--model", model, "--manifest", manifest, "--out", str(out), "--steps", "3", "--batch", "2",
         "--val-limit", "2", "--verbose", "0"]
    if model == "edge":
        a += ["--width", "0.25"]
    if model == "geo":
        a += ["--width", "0.5", "--id-net", "none"]
    if model in VGG:
        a += ["--vggface-weights", ""]  # random encoder weights, whatever is in the keras cache
    return a + list(extra)


def _history(out):
    with open(os.path.join(out, "history.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("model", [pytest.param(m, marks=pytest.mark.slow) if m in VGG else m for m in MODELS])
def test_train_checkpoint_export_resume(model, manifest, pooled, tmp_path, capsys):
    import keras

    manifest = pooled if model == "geo" else manifest
    out = tmp_path / model
    r1 = train(parse_args(_args(model, manifest, out, "--epochs", "1")))
    assert (r1["epochs"], r1["steps"], r1["replicas"]) == (1, 3, 1)
    h = _history(out)
    assert [(e["epoch"], e["step"]) for e in h] == [(1, 3)]
    losses = {k: v for k, v in h[0].items() if k not in ("epoch", "step", "time")}
    assert "l1" in losses and "val_l1" in losses
    assert all(math.isfinite(v) for v in losses.values()), losses
    ckpts = os.listdir(out / "ckpt")
    assert "checkpoint" in ckpts and any(f.startswith("ckpt-3.") for f in ckpts), ckpts
    assert (out / "samples" / "epoch_001.png").stat().st_size > 0

    gen = out / "generator.keras"
    with open(str(gen) + ".json") as f:
        meta = json.load(f)
    assert meta["model"] == model and meta["input_size"] == 128
    g = keras.saving.load_model(str(gen), compile=False)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 128, 128, 3)).astype("float32")
    second = np.array([[30.0], [-60.0]], "float32") if model == "geo" else np.eye(13, dtype="float32")[[3, 9]]
    y = np.asarray(g([x, second] if len(g.inputs) == 2 else x))
    assert y.shape == (2, 128, 128, 3) and np.isfinite(y).all() and np.abs(y).max() <= 1.0

    capsys.readouterr()
    r2 = train(parse_args(_args(model, manifest, out, "--epochs", "2", "--resume")))
    assert "resumed from" in capsys.readouterr().out
    assert (r2["epochs"], r2["steps"]) == (2, 6)
    assert [(e["epoch"], e["step"]) for e in _history(out)] == [(1, 3), (2, 6)]
    assert any(f.startswith("ckpt-6.") for f in os.listdir(out / "ckpt"))


def test_resume_when_already_done_trains_nothing(manifest, tmp_path):
    out = tmp_path / "edge"
    train(parse_args(_args("edge", manifest, out, "--epochs", "1")))
    left = out / "ckpt" / "ckpt-2_temp"  # as a kill during TensorFlow's sharded save leaves it
    left.mkdir()
    (left / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"\0" * 1000)
    r = train(parse_args(_args("edge", manifest, out, "--epochs", "1", "--resume")))
    assert (r["epochs"], r["steps"]) == (1, 3)
    assert not [f for f in os.listdir(out / "ckpt") if "_temp" in f]
    assert len(_history(out)) == 1


def test_mirrored_strategy_two_cpu_replicas(manifest, tmp_path):
    out = tmp_path / "dist"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    p = subprocess.run([sys.executable, "-m", "training.train", *_args("edge", manifest, out, "--epochs", "1"),
                        "--cpu-replicas", "2"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads(p.stdout.strip().splitlines()[-1])
    # The per-replica batch is 2, so each of the 3 steps consumed a global batch of 4.
    assert (result["replicas"], result["steps"], result["epochs"]) == (2, 3, 1)
    assert all(math.isfinite(v) for k, v in _history(out)[0].items() if k != "time")
    assert (out / "generator.keras").exists()


@pytest.mark.parametrize("model", ["edge", "cvae"])
def test_identity_loss_trains_and_is_reported(model, manifest, tmp_path):
    from training.judges import human_models_dir

    try:
        human_models_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    out = tmp_path / model
    r = train(parse_args(_args(model, manifest, out, "--epochs", "1", "--id-weight", "10")))
    assert r["steps"] == 3
    h = _history(out)[0]
    # 1 - cosine between MobileFace embeddings of output and target: in (0, 2], and in the total loss
    assert 0 < h["id"] <= 2
    if model == "edge":
        assert h["g_loss"] > 100 * h["l1"] + 10 * h["id"] - 1e-3  # + the adversarial term (positive)
    else:
        assert h["loss"] > h["l1"] + h["rec_side"] + 10 * h["id"] - 1e-3  # + beta KL (positive)


def test_gan_on_pooled_rows_and_who_may(manifest, pooled, tmp_path, capsys):
    """The GANs also train on training.pooled's rows (wild profiles: identity loss only); the
    autoencoder and CVAE do not, the geo model only does."""
    from training.judges import human_models_dir

    try:
        human_models_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    out = tmp_path / "edge"
    r = train(parse_args(_args("edge", pooled, out, "--epochs", "1", "--id-weight", "10", "--sym-weight", "20")))
    assert r["steps"] == 3
    h = _history(out)[0]
    assert 0 < h["id"] <= 2 and 0 <= h["sym"] < 2 and math.isfinite(h["val_l1"])
    with pytest.raises(SystemExit, match="--sym-weight: only dcgan, edge, pix2pix on a pooled manifest"):
        train(parse_args(_args("edge", manifest, tmp_path / "e2", "--epochs", "1", "--sym-weight", "20")))
    # resumed with the prior discriminator: it starts fresh once, then is checkpointed and restored
    more = ("--id-weight", "10", "--prior-weight", "1", "--resume")
    train(parse_args(_args("edge", pooled, out, "--epochs", "2", *more)))
    assert "no prior discriminator" in capsys.readouterr().out
    train(parse_args(_args("edge", pooled, out, "--epochs", "3", *more)))
    assert "no prior discriminator" not in capsys.readouterr().out
    h = _history(out)
    assert [e.get("prior_adv") is None for e in h] == [True, False, False]
    assert all(math.isfinite(e["prior_adv"]) and 0 < e["p_loss"] for e in h[1:])
    with pytest.raises(SystemExit, match="--prior-weight: only"):
        train(parse_args(_args("pix2pix", manifest, tmp_path / "p", "--epochs", "1", "--prior-weight", "1")))
    with pytest.raises(SystemExit, match="autoencoder: .*pooled"):
        train(parse_args(_args("autoencoder", pooled, tmp_path / "a", "--epochs", "1")))
    with pytest.raises(SystemExit, match="geo: .*pooled"):
        train(parse_args(_args("geo", manifest, tmp_path / "g", "--epochs", "1")))


def test_row_weights_leave_targetless_rows_out():
    """Rows of pixel weight 0 (wild profiles, whose y is the profile itself) add nothing to the
    pixel L1 nor to the discriminator's real pairs; the symmetry loss sees those rows only."""
    import tensorflow as tf

    from training.models import SIZE, Frontalizer
    from training.models.blocks import adv_loss, symmetry_loss

    rng = np.random.default_rng(0)
    fake, y = (tf.constant(rng.uniform(-1, 1, (2, SIZE, SIZE, 3)), tf.float32) for _ in range(2))
    w = tf.constant([1.0, 0.0])
    l1 = Frontalizer.pixel_l1(fake, {"y": y, "w": w})
    np.testing.assert_allclose(float(l1), float(tf.reduce_mean(tf.abs(fake[:1] - y[:1]))), rtol=1e-4)
    logits = tf.constant(rng.normal(0, 2, (2, 8, 8, 1)), tf.float32)
    np.testing.assert_allclose(float(adv_loss(logits, True, w)), float(adv_loss(logits[:1], True)), rtol=1e-5)
    assert float(adv_loss(logits, True, w)) != pytest.approx(float(adv_loss(logits, True)))
    mirrored = tf.concat([fake[:1], (fake[1:] + fake[1:, :, ::-1]) / 2], 0)  # row 1 symmetric, row 0 not
    assert float(symmetry_loss(mirrored, w)) == pytest.approx(0.0, abs=1e-6)
    assert float(symmetry_loss(mirrored, 1 - w)) > 0.5
    assert float(symmetry_loss(fake, tf.constant([1.0, 1.0]))) == 0.0


def test_identity_loss_without_its_weights(manifest, tmp_path, monkeypatch, capsys):
    """A profile's default identity loss is dropped with a note; an explicit --id-weight is an error."""
    from training import judges

    monkeypatch.setenv("FRONTALIZE_HUMAN_MODELS_DIR", str(tmp_path / "no_weights"))
    monkeypatch.setattr(judges, "_CACHE", {})  # as in a fresh process: no judge loaded yet
    r = train(parse_args(_args("edge", manifest, tmp_path / "e", "--epochs", "1")))
    assert r["steps"] == 3
    assert "training without the identity loss" in capsys.readouterr().out
    assert "id" not in _history(tmp_path / "e")[0]
    with pytest.raises(SystemExit, match="--id-weight 1.0: .*no_weights.*not found"):
        train(parse_args(_args("cvae", manifest, tmp_path / "c", "--epochs", "1", "--id-weight", "1")))


def test_dataset_shards_are_disjoint_and_cover_the_split(manifest):
    from training.data import make_dataset

    def names(shard):
        ds = make_dataset(manifest, "train", 1, train=False, repeat=False, shard=shard)
        return [float(b["x"].numpy().mean()) for b in ds]  # the images themselves, decoded

    whole = names(None)
    parts = [names((2, 0)), names((2, 1))]
    assert len(whole) == 12 and [len(p) for p in parts] == [6, 6]
    assert sorted(parts[0] + parts[1]) == sorted(whole) and not set(parts[0]) & set(parts[1])
    with pytest.raises(ValueError, match="cannot be split over 13 workers"):
        make_dataset(manifest, "train", 1, train=True, shard=(13, 0))


def _two_workers(argvs: list[list[str]], timeout: int = 900) -> list[tuple[int, str, str]]:
    """Run ``python -m training.train`` as worker 0 and 1 of a localhost cluster; (rc, stdout, stderr)."""
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    procs = []
    try:
        for i, argv in enumerate(argvs):
            env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": json.dumps({"cluster": cluster,
                                                                         "task": {"type": "worker", "index": i}})}
            procs.append(subprocess.Popen([sys.executable, "-m", "training.train", *argv], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT))
        results = []
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            results.append((p.returncode, out, err))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_multiworker_mirrored_strategy(manifest, tmp_path):
    # Two local processes under MultiWorkerMirroredStrategy (TF_CONFIG, two localhost ports), as
    # two machines would run them: the same steps, the same weights at the end (the generator each
    # worker saved, BatchNorm statistics included), each reading its own shard of the files, and
    # only the chief writing the run folder.
    import keras

    import runtime.keras_layers  # noqa: F401  (registers the custom layers for load_model)

    run, scratch = tmp_path / "run", tmp_path / "worker1"
    outs = _two_workers([_args("edge", manifest, run, "--epochs", "1"),
                         _args("edge", manifest, run, "--epochs", "1", "--worker-dir", str(scratch))])
    for rc, out, err in outs:
        assert rc == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in outs]
    # per-replica batch 2 on each of 2 workers: 3 steps of a global batch of 4
    assert [(r["workers"], r["replicas"], r["steps"], r["epochs"], r["chief"]) for r in results] == \
        [(2, 2, 3, 1, True), (2, 2, 3, 1, False)]
    for i, (_, out, _) in enumerate(outs):
        assert f"input pipeline {i} of 2: ds.shard(2, {i}) of the file list" in out
    assert [(e["epoch"], e["step"]) for e in _history(run)] == [(e["epoch"], e["step"]) for e in _history(scratch)]
    assert _history(run)[0]["global_batch"] == 4 and _history(run)[0]["images_per_s"] > 0

    chief = keras.saving.load_model(str(run / "generator.keras"), compile=False)
    other = keras.saving.load_model(str(scratch / "generator.keras"), compile=False)
    assert [w.path for w in chief.weights] == [w.path for w in other.weights]
    for a, b in zip(chief.weights, other.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    moving = [w.numpy() for w in chief.weights if w.path.endswith("moving_mean")]
    assert moving and any(np.abs(m).max() > 0 for m in moving)  # trained statistics, not the zeros they start at
    # only the chief writes the run folder (checkpoints, curves); the other wrote its copies aside
    assert any(f.startswith("ckpt-3.") for f in os.listdir(run / "ckpt"))
    assert (run / "loss_curves.png").stat().st_size > 0 and not (scratch / "loss_curves.png").exists()
    assert sorted(os.listdir(run)) == sorted(["ckpt", "generator.keras", "generator.keras.json", "history.jsonl",
                                              "logs", "loss_curves.png", "samples", "steps.jsonl"])

    # --resume where worker 1 cannot see the chief's run folder: both stop before training
    outs = _two_workers([_args("edge", manifest, run, "--epochs", "2", "--resume"),
                         _args("edge", manifest, tmp_path / "elsewhere", "--epochs", "2", "--resume")])
    assert [rc for rc, _, _ in outs] == [1, 1]
    assert all("must resume from the same checkpoint" in err for _, _, err in outs)
    assert [(e["epoch"], e["step"]) for e in _history(run)] == [(1, 3)]
    # --resume from the shared run folder: both continue at step 3 and end equal again
    outs = _two_workers([_args("edge", manifest, run, "--epochs", "2", "--resume"),
                         _args("edge", manifest, run, "--epochs", "2", "--resume", "--worker-dir", str(scratch))])
    for rc, out, err in outs:
        assert rc == 0, err[-3000:]
        assert "resumed from" in out and json.loads(out.strip().splitlines()[-1])["steps"] == 6
    assert [(e["epoch"], e["step"]) for e in _history(run)] == [(1, 3), (2, 6)]
    chief = keras.saving.load_model(str(run / "generator.keras"), compile=False)
    other = keras.saving.load_model(str(scratch / "generator.keras"), compile=False)
    for a, b in zip(chief.weights, other.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


SEED_AND_EDGE = ["autoencoder", "pix2pix", "dcgan", "cvae", "edge"]


@pytest.mark.parametrize("model", [pytest.param(m, marks=pytest.mark.slow) if m in VGG else m for m in SEED_AND_EDGE])
def test_full_profile_with_bfloat16_trains(model, manifest, tmp_path):
    # The GPU profile's settings (for pix2pix the identity loss too) with the GPU's bfloat16 mixed
    # precision forced on this CPU, a batch of 1: dtype mistakes show here, not on a rented GPU.
    import keras

    out = tmp_path / model
    a = parse_args(_args(model, manifest, out, "--profile", "full", "--precision", "bfloat16", "--epochs", "1",
                         "--steps", "2", "--batch", "1", "--val-limit", "1"))
    try:
        r = train(a)
    finally:
        keras.mixed_precision.set_global_policy("float32")  # the policy is global: leave it as found
    assert r["steps"] == 2
    h = _history(out)[0]
    assert all(math.isfinite(v) for k, v in h.items() if k != "time"), h
    with open(out / "generator.keras.json") as f:
        meta = json.load(f)["training"]
    assert (meta["profile"], meta["precision"], meta["global_batch"]) == ("full", "mixed_bfloat16", 1)
    assert ("encoder" in meta) == (model in VGG)
    assert (out / "loss_curves.png").stat().st_size > 0
    # Export takes the float32 twin: a mixed-precision graph mixes bfloat16 and float16 casts that
    # onnxruntime refuses to load (found on the first bfloat16 pix2pix run).
    from export.convert import load_generator, to_onnx, yaw_input

    g, gmeta = load_generator(str(out / "generator.keras"))
    assert {layer.dtype_policy.name for layer in g._flatten_layers()} == {"float32"}
    if model in ("cvae", "dcgan"):  # the cheap ones (cvae: nested models and a Lambda)
        import onnxruntime as ort

        onnx_path = to_onnx(g, gmeta, str(tmp_path / f"{model}.onnx"))
        sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).uniform(-1, 1, (1, 128, 128, 3)).astype("float32")
        feeds = [x] + ([yaw_input(gmeta, [45.0], 1)] if len(sess.get_inputs()) == 2 else [])
        y = sess.run(None, dict(zip([i.name for i in sess.get_inputs()], feeds)))[0]
        np.testing.assert_allclose(y, np.asarray(g(feeds if len(feeds) == 2 else x)), atol=1e-4)
    if model in ("pix2pix", "edge"):  # the full profile's identity loss, where MobileFace's weights are
        from training.judges import human_models_dir

        try:
            human_models_dir()
            assert h["id"] > 0
        except FileNotFoundError:
            assert "id" not in h
