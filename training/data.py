"""tf.data input pipeline over a manifest: (side, frontal, yaw label) batches, never all in memory.

Augmentation (train only): a horizontal flip of both images that also flips the yaw sign,
and mild colour jitter (the same for side and frontal: they share the lighting).
Images are scaled to [-1, 1].

Sharding across workers (MultiWorkerMirroredStrategy): ``shard=(num_workers, index)`` applies
``ds.shard`` to the list of file names, before anything is read, so each worker reads and decodes
only its own 1/num_workers of the images. tf.data's auto-shard policy DATA would read and decode
every image on every worker and then keep 1/num_workers of them; FILE needs at least one file
per worker and a file-reading dataset (TFRecord), which a list of JPEG paths is not.
``training.train`` builds one pipeline per worker through ``strategy.distribute_datasets_from_function``
(per-replica batches, no auto-sharding).
"""
from __future__ import annotations

import os

import tensorflow as tf

from .datasets import YAWS, read_manifest

SIZE = 128
AUTOTUNE = tf.data.AUTOTUNE


def _load(path):
    img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    img = tf.image.resize(tf.cast(img, tf.float32), (SIZE, SIZE), antialias=True)
    return img / 127.5 - 1.0


def _jitter_and_flip(ex, seed):
    x, y, yaw = ex["x"], ex["y"], ex["yaw"]
    s = tf.random.stateless_uniform([4], seed)
    flip = s[0] < 0.5
    x = tf.where(flip, tf.reverse(x, [1]), x)
    y = tf.where(flip, tf.reverse(y, [1]), y)
    yaw = tf.where(flip, len(YAWS) - 1 - yaw, yaw)
    gain = 1.0 + (s[1] - 0.5) * 0.2  # contrast +-10 %
    bias = (s[2] - 0.5) * 0.1  # brightness +-5 %
    x = tf.clip_by_value(x * gain + bias, -1.0, 1.0)
    y = tf.clip_by_value(y * gain + bias, -1.0, 1.0)
    return {"x": x, "y": y, "yaw": yaw}


def rows_dataset(rows: list[dict], root: str) -> tf.data.Dataset:
    yaw_idx = [YAWS.index(int(r["yaw"])) for r in rows]
    return tf.data.Dataset.from_tensor_slices({
        "x": [os.path.join(root, r["x"]) for r in rows],
        "y": [os.path.join(root, r["y"]) for r in rows],
        "yaw": tf.constant(yaw_idx, tf.int32),
    })


def _shard(ds: tf.data.Dataset, n_rows: int, shard: tuple[int, int] | None) -> tuple[tf.data.Dataset, int]:
    """``ds.shard(num_workers, index)`` on the file list; returns the shard and its length."""
    if not shard or shard[0] <= 1:
        return ds, n_rows
    n, i = shard
    if n_rows < n:
        raise ValueError(f"{n_rows} rows cannot be split over {n} workers")
    return ds.shard(n, i), len(range(i, n_rows, n))


def make_dataset(manifest: dict | str, split: str, batch: int, train: bool, seed: int = 0,
                 root: str | None = None, limit: int | None = None, repeat: bool | None = None,
                 shard: tuple[int, int] | None = None) -> tf.data.Dataset:
    """``batch``: per pipeline (per worker without a strategy, per replica under
    ``distribute_datasets_from_function``). ``shard``: (num_workers, this worker's index)."""
    m = read_manifest(manifest) if isinstance(manifest, str) else manifest
    rows = m["pairs"][split][:limit] if limit else m["pairs"][split]
    if not rows:
        raise ValueError(f"manifest has no '{split}' pairs")
    ds, n = _shard(rows_dataset(rows, root or m["root"]), len(rows), shard)
    if train:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda e: {"x": _load(e["x"]), "y": _load(e["y"]), "yaw": e["yaw"]}, num_parallel_calls=AUTOTUNE)
    if train:
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=seed).batch(2)))
        ds = ds.map(lambda e, s: _jitter_and_flip(e, s), num_parallel_calls=AUTOTUNE)
    if repeat if repeat is not None else train:
        ds = ds.repeat()
    return ds.batch(batch, drop_remainder=train).prefetch(AUTOTUNE)


# ----------------------------------------------------------------------------- pooled (geo generator)
# Share of each row kind in a training batch (training.pooled): real pairs and pseudo-pairs carry
# the geometry, frontal pass-throughs teach "a frontal face comes back as itself", CFP's wild
# photos keep identity and realism off the grey studio.
KIND_SHARE = {"mp30": 0.3, "mp137": 0.25, "mp30_front": 0.1, "cfp_frontal": 0.1, "cfp_profile": 0.25}


def _pooled_example(root):
    def load(e):
        return {"x": _load(tf.strings.join([root, "/", e["x"]])), "y": _load(tf.strings.join([root, "/", e["y"]])),
                "yaw": e["yaw"], "w": e["w"], "idt": e["idt"]}
    return load


def _flip_pooled(ex, seed):
    s = tf.random.stateless_uniform([3], seed)
    flip = s[0] < 0.5
    gain, bias = 1.0 + (s[1] - 0.5) * 0.2, (s[2] - 0.5) * 0.1
    f = lambda im: tf.clip_by_value(tf.where(flip, tf.reverse(im, [1]), im) * gain + bias, -1.0, 1.0)
    return {**ex, "x": f(ex["x"]), "y": f(ex["y"]), "yaw": tf.where(flip, -ex["yaw"], ex["yaw"])}


def pooled_rows_dataset(rows: list[dict]) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices({
        "x": [r["x"] for r in rows], "y": [r["y"] for r in rows],
        "yaw": tf.constant([[float(r["yaw_est"])] for r in rows], tf.float32),
        "w": tf.constant([float(r["w"]) for r in rows], tf.float32),
        "idt": tf.constant([int(r["idt"]) for r in rows], tf.int32)})


def make_pooled_dataset(manifest: dict, split: str, batch: int, train: bool, seed: int = 0,
                        limit: int | None = None, repeat: bool | None = None,
                        shard: tuple[int, int] | None = None) -> tf.data.Dataset:
    """Batches of {x, y, yaw (degrees, estimated), w (pixel-loss weight), idt (CFP identity or -1)},
    and for training {real}: frontal photographs for the discriminator. Training mixes the row
    kinds by KIND_SHARE; evaluation reads the rows in order."""
    root = manifest["root"]
    rows = manifest["pairs"][split][:limit] if limit else manifest["pairs"][split]
    if not rows:
        raise ValueError(f"pooled manifest has no '{split}' rows")
    load = _pooled_example(root)
    if not train:
        ds = _shard(pooled_rows_dataset(rows), len(rows), shard)[0].map(load, num_parallel_calls=AUTOTUNE)
        if repeat:
            ds = ds.repeat()
        return ds.batch(batch).prefetch(AUTOTUNE)
    by_kind = {}
    for r in rows:
        by_kind.setdefault(r["kind"], []).append(r)
    kinds = [k for k in KIND_SHARE if k in by_kind]
    parts = []
    for k in kinds:
        part, n = _shard(pooled_rows_dataset(by_kind[k]), len(by_kind[k]), shard)
        parts.append(part.shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat())
    weights = [KIND_SHARE[k] for k in kinds]
    ds = tf.data.Dataset.sample_from_datasets(parts, [w / sum(weights) for w in weights], seed=seed)
    ds = ds.map(load, num_parallel_calls=AUTOTUNE)
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=seed).batch(2)))
    ds = ds.map(_flip_pooled, num_parallel_calls=AUTOTUNE)
    reals = manifest["reals"][split]
    real, n = _shard(tf.data.Dataset.from_tensor_slices([f"{root}/{p}" for p in reals]), len(reals), shard)
    real = (real.shuffle(n, seed=seed + 1, reshuffle_each_iteration=True).repeat()
            .map(_load, num_parallel_calls=AUTOTUNE)
            .map(lambda im: tf.image.random_flip_left_right(im), num_parallel_calls=AUTOTUNE))
    ds = tf.data.Dataset.zip((ds, real)).map(lambda e, r: {**e, "real": r})
    return ds.batch(batch, drop_remainder=True).prefetch(AUTOTUNE)
