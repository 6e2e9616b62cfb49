"""Train one model: ``python -m training.train --model edge --manifest artifacts/manifest.json``.

Checkpoints (generator, discriminator, optimizers, epoch) every epoch through
tf.train.CheckpointManager, whose pointer file is replaced atomically: a kill mid-save
leaves the previous checkpoint in force. ``--resume`` restores it, so the optimizer step
count and epoch continue where they were. TensorBoard logs and a PNG grid of
(input | prediction | target) on fixed validation pairs are written each epoch.

Scaling: with several GPUs, MirroredStrategy; with TF_CONFIG set, MultiWorkerMirroredStrategy;
``--cpu-replicas N`` splits the CPU into N logical devices under MirroredStrategy (tests).
Mixed precision (bfloat16) is used when a GPU is present.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

PROFILES = {
    # fast: what `make train` runs on a 2-core CPU (about 90 minutes for all five).
    "fast": {"edge": (4, 250, 16), "pix2pix": (1, 60, 8), "autoencoder": (1, 60, 8),
             "dcgan": (1, 150, 16), "cvae": (1, 200, 16), "geo": (20, 250, 16)},
    # full: for a GPU. (epochs, steps per epoch, batch)
    "full": {"edge": (60, 660, 16), "pix2pix": (40, 660, 16), "autoencoder": (40, 660, 16),
             "dcgan": (60, 660, 16), "cvae": (60, 660, 16), "geo": (60, 1000, 32)},
}


# Identity-loss weight per profile and model when --id-weight is not given (see EdgeGAN /
# Pix2Pix._identity_loss). Without face-api's weights the profile default is dropped with a note.
PROFILE_ID_WEIGHT = {"fast": {"edge": 20.0, "geo": 3.0}, "full": {"edge": 20.0, "pix2pix": 20.0, "geo": 3.0}}


def make_strategy(cpu_replicas: int = 0):
    import tensorflow as tf

    if cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_replicas)])
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        import keras

        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _grid(model, batch, path):
    """(input | prediction | target) rows, written atomically as PNG."""
    import numpy as np

    from runtime.image_io import atomic_write_image

    fake = model.generate(batch["x"], batch["yaw"]).numpy()
    rows = [np.concatenate([batch["x"][i], fake[i], batch["y"][i]], axis=1) for i in range(len(fake))]
    img = ((np.concatenate(rows, axis=0) + 1) * 127.5).clip(0, 255).astype("uint8")
    atomic_write_image(path, img)


def export_generator(model, out_dir: str, extra: dict | None = None) -> str:
    """Save the exportable generator as a .keras file (atomic) with its metadata sidecar."""
    from runtime.model_meta import default_meta, write_sidecar

    path = os.path.join(out_dir, "generator.keras")
    tmp = os.path.join(out_dir, "generator.tmp.keras")
    model.generator.save(tmp)
    os.replace(tmp, path)
    write_sidecar(path, default_meta(model.kind, **(extra or {})))
    return path


def train(args) -> dict:
    import keras
    import tensorflow as tf

    from .data import make_dataset
    from .datasets import read_manifest
    from .models import MODELS, describe

    keras.utils.set_random_seed(args.seed)
    strategy = make_strategy(args.cpu_replicas)
    manifest = read_manifest(args.manifest)
    root = args.data or manifest["root"]
    os.makedirs(args.out, exist_ok=True)
    n_rep = strategy.num_replicas_in_sync
    global_batch = args.batch * n_rep
    pooled = manifest.get("kind") == "pooled"  # training.pooled: the geo generator's data
    if pooled != (args.model == "geo"):
        raise SystemExit("the geo model trains on a pooled manifest (python -m training.pooled), "
                         "the other models on a paired one (python -m training.datasets)")
    if pooled:
        from .data import make_pooled_dataset

        train_ds = make_pooled_dataset(manifest, "train", global_batch, train=True, seed=args.seed)
        val_ds = make_pooled_dataset(manifest, "val", global_batch, train=False, limit=args.val_limit)
        # fixed sample rows: studio pairs at 30/60/90, TP-GAN pseudo-pairs at 90, two wild profiles
        rows, fixed_rows = manifest["pairs"]["val"], []
        for kind, yaw in [("mp30", 30), ("mp30", -60), ("mp30", 90), ("mp137", 90), ("cfp_profile", None),
                          ("cfp_profile", None)]:
            hit = [r for r in rows if r["kind"] == kind and (yaw is None or r["yaw"] == yaw) and r not in fixed_rows]
            fixed_rows += hit[len(hit) // 3: len(hit) // 3 + 1]
        fixed = next(iter(make_pooled_dataset({**manifest, "pairs": {"fixed": fixed_rows}}, "fixed", len(fixed_rows),
                                              train=False)))
    else:
        train_ds = make_dataset(manifest, "train", global_batch, train=True, seed=args.seed, root=root)
        val_split = "val" if manifest["pairs"].get("val") else "train"
        val_ds = make_dataset(manifest, val_split, global_batch, train=False, root=root,
                              limit=args.val_limit, repeat=False)
        rows = manifest["pairs"][val_split]
        # One fixed pair per yaw in (-90, -60, -30, 30, 60, 90) where the split has it.
        by_yaw = {}
        for r in rows:
            by_yaw.setdefault(int(r["yaw"]), r)
        fixed_rows = [by_yaw[y] for y in (-90, -60, -30, 30, 60, 90) if y in by_yaw] or rows[:6]
        fixed = next(iter(make_dataset({**manifest, "pairs": {"fixed": fixed_rows}}, "fixed", 6, train=False,
                                       root=root, repeat=False)))

    with strategy.scope():
        kw = {"width": args.width} if args.model in ("edge", "geo") else {}
        if args.model == "geo":
            if args.id_net == "none":
                args.id_weight = 0.0
            else:
                from .id_nets import cfp_identity_table, identity_network

                kw["id_net"] = identity_network(args.id_net)
                kw["id_table"] = cfp_identity_table(kw["id_net"], manifest, "train")
        if args.model == "autoencoder" and args.vggface_weights is not None:
            kw["weights"] = args.vggface_weights or None  # "" = random weights, as for pix2pix
        if args.model == "pix2pix" and args.vggface_weights is not None:
            from .models import vgg_unet

            kw["generator"] = vgg_unet("transpose", "vgg_unet_pix2pix", args.vggface_weights or None)
        if args.id_weight is None:
            args.id_weight = PROFILE_ID_WEIGHT[args.profile].get(args.model, 0.0)
            if args.id_weight and args.model != "geo":
                from .identity import faceapi_dir

                try:
                    faceapi_dir()
                except FileNotFoundError as e:
                    print(f"training without the identity loss: {e}", flush=True)
                    args.id_weight = 0.0
        if args.id_weight:
            if args.model not in ("edge", "pix2pix", "geo"):
                raise SystemExit(f"--id-weight applies to edge and pix2pix, not {args.model}")
            kw["id_weight"] = args.id_weight
        model = MODELS[args.model](**kw)
        model.compile()
        model.build_optimizers()
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        ckpt = tf.train.Checkpoint(generator=model.generator, epoch=epoch,
                                   **{k: v for k, v in [("discriminator", getattr(model, "discriminator", None)),
                                                        ("encoder", getattr(model, "encoder", None)),
                                                        ("decoder", getattr(model, "decoder", None))] if v is not None},
                                   **model.optimizers())
    print(describe(model.generator), flush=True)
    manager = tf.train.CheckpointManager(ckpt, os.path.join(args.out, "ckpt"), max_to_keep=2)
    if args.resume and manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        print(f"resumed from {manager.latest_checkpoint}: epoch {int(epoch.numpy())}, "
              f"step {int(model.g_opt.iterations.numpy())}", flush=True)
    elif args.resume:
        print("--resume: no checkpoint yet, starting fresh", flush=True)

    class EpochEnd(keras.callbacks.Callback):
        def on_epoch_end(self, ep, logs=None):
            epoch.assign(ep + 1)
            step = int(model.g_opt.iterations.numpy())
            manager.save(checkpoint_number=step)
            _grid(model, fixed, os.path.join(args.out, "samples", f"epoch_{ep + 1:03d}.png"))
            with open(os.path.join(args.out, "history.jsonl"), "a") as f:
                f.write(json.dumps({"epoch": ep + 1, "step": step, "time": time.time(),
                                    **{k: float(v) for k, v in (logs or {}).items()}}) + "\n")

    t0 = time.time()
    start = int(epoch.numpy())
    if start < args.epochs:
        model.fit(train_ds, epochs=args.epochs, initial_epoch=start, steps_per_epoch=args.steps,
                  validation_data=val_ds, verbose=args.verbose,
                  callbacks=[EpochEnd(), keras.callbacks.TensorBoard(os.path.join(args.out, "logs"), update_freq=50)])
    path = export_generator(model, args.out)
    result = {"model": args.model, "epochs": int(epoch.numpy()), "steps": int(model.g_opt.iterations.numpy()),
              "seconds": round(time.time() - t0, 1), "generator": path, "replicas": n_rep}
    print(json.dumps(result), flush=True)
    return result


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, choices=["autoencoder", "pix2pix", "dcgan", "cvae", "edge", "geo"])
    ap.add_argument("--id-net", default="mobilefacenet", choices=["mobilefacenet", "dlib", "none"],
                    help="geo: the recognizer of the identity loss (default mobilefacenet; the evaluation "
                         "judges with faceres and dlib, never with the loss's network)")
    ap.add_argument("--manifest", default="artifacts/manifest.json")
    ap.add_argument("--data", help="dataset root (default: the manifest's)")
    ap.add_argument("--out", help="run folder (default runs/MODEL)")
    ap.add_argument("--profile", choices=list(PROFILES), default="fast")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--steps", type=int, help="steps per epoch")
    ap.add_argument("--batch", type=int, help="per-replica batch size")
    ap.add_argument("--width", type=float, default=1.0, help="edge generator width multiplier")
    ap.add_argument("--vggface-weights", help="keras-vggface notop .h5 (default: the keras-vggface cache path)")
    ap.add_argument("--val-limit", type=int, default=256, help="validation pairs per epoch")
    ap.add_argument("--id-weight", type=float,
                    help="weight of the identity loss (dlib face-descriptor distance, prediction vs "
                         "frontal; needs face-api's weights, see training/identity.py); edge, pix2pix "
                         "(default: the profile's, PROFILE_ID_WEIGHT)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--cpu-replicas", type=int, default=0, help="split the CPU into N devices (tests)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", type=int, default=1 if sys.stdout.isatty() else 2)
    a = ap.parse_args(argv)
    e, s, b = PROFILES[a.profile][a.model]
    a.epochs, a.steps, a.batch = a.epochs or e, a.steps or s, a.batch or b
    a.out = a.out or os.path.join("runs", a.model)
    return a


def main(argv=None):
    train(parse_args(argv))


if __name__ == "__main__":
    main()
