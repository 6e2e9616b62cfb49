"""tf.data input pipeline over a manifest: (side, frontal, yaw label) batches, never all in memory.

Augmentation (train only): a horizontal flip of both images that also flips the yaw sign,
and mild colour jitter (the same for side and frontal: they share the lighting).
Images are scaled to [-1, 1].
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


def make_dataset(manifest: dict | str, split: str, batch: int, train: bool, seed: int = 0,
                 root: str | None = None, limit: int | None = None, repeat: bool | None = None) -> tf.data.Dataset:
    m = read_manifest(manifest) if isinstance(manifest, str) else manifest
    rows = m["pairs"][split][:limit] if limit else m["pairs"][split]
    if not rows:
        raise ValueError(f"manifest has no '{split}' pairs")
    ds = rows_dataset(rows, root or m["root"])
    if train:
        ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda e: {"x": _load(e["x"]), "y": _load(e["y"]), "yaw": e["yaw"]}, num_parallel_calls=AUTOTUNE)
    if train:
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=seed).batch(2)))
        ds = ds.map(lambda e, s: _jitter_and_flip(e, s), num_parallel_calls=AUTOTUNE)
    if repeat if repeat is not None else train:
        ds = ds.repeat()
    return ds.batch(batch, drop_remainder=train).prefetch(AUTOTUNE)
