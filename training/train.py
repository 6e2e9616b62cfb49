"""Train one model: ``python -m training.train --model edge --manifest artifacts/manifest.json``.

Checkpoints (generator, discriminator, optimizers, epoch) every epoch through
tf.train.CheckpointManager, whose pointer file is replaced atomically: a kill mid-save
leaves the previous checkpoint in force, and the ``ckpt-N_temp`` folder such a kill leaves is
removed at the next start. ``--resume`` restores it, so the optimizer step
count and epoch continue where they were. TensorBoard logs and a PNG grid of
(input | prediction | target) on fixed validation pairs are written each epoch.

Each epoch appends a line to ``history.jsonl`` (losses, validation L1, training images per
second); every LOG_EVERY steps a line goes to ``steps.jsonl``; at the end ``loss_curves.png``
(training.curves) is drawn from both.

Scaling: with several GPUs, MirroredStrategy; with TF_CONFIG set, MultiWorkerMirroredStrategy
(one process per machine; each worker reads its own shard of the images, see training.data;
only the chief writes the run folder, the others write to a scratch folder, ``--worker-dir``);
``--cpu-replicas N`` splits the CPU into N logical devices under MirroredStrategy (tests).
``--batch`` is per replica: the global batch is batch x replicas over all workers.
Mixed precision (bfloat16) is used when a GPU is present (``--precision``).
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import time

PROFILES = {
    # fast: what `make train` runs on a 2-core CPU: the seed models' CPU fit (README "Seed models":
    # 10-25 minutes each, the VGG U-Nets ~0.6 pass over multipie30's 10,536 training pairs).
    "fast": {"edge": (4, 250, 16), "pix2pix": (5, 200, 16), "autoencoder": (5, 85, 16),
             "dcgan": (5, 150, 16), "cvae": (6, 300, 16), "geo": (20, 250, 16)},
    # full: for a GPU. (epochs, steps per epoch, batch per replica); 165 steps of 64 are one pass
    # over multipie30's 10,560 training pairs.
    "full": {"edge": (60, 165, 64), "pix2pix": (40, 165, 64), "autoencoder": (40, 165, 64),
             "dcgan": (60, 165, 64), "cvae": (60, 165, 64), "geo": (60, 1000, 32)},
}
LOG_EVERY = 10  # steps between lines of steps.jsonl


# Identity-loss weight per profile and model when --id-weight is not given (Frontalizer._identity:
# 1 - cosine of --id-net embeddings). Without the network's weights the default is dropped with a note.
# Seed models: about 0.7 x their pixel term at the start (models/SEED_MODELS.md, "Identity loss").
ID_WEIGHT = {"edge": 20.0, "geo": 1.0, "pix2pix": 30.0, "dcgan": 30.0, "autoencoder": 0.1, "cvae": 0.5}
PROFILE_ID_WEIGHT = {"fast": ID_WEIGHT, "full": ID_WEIGHT}  # one table today; a profile may differ
POOLED_MODELS = {"geo", "pix2pix", "dcgan", "edge"}  # the models that train on training.pooled's rows


def make_strategy(cpu_replicas: int = 0, precision: str = "auto"):
    """The tf.distribute strategy, and the Keras dtype policy (``precision``: auto = bfloat16
    mixed precision when a GPU is present, float32 otherwise; bfloat16; float32)."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_replicas)])
    elif os.environ.get("TF_CONFIG"):
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    mixed = precision == "bfloat16" or (precision == "auto" and bool(gpus))
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if mixed else "float32")
    return strategy


def worker_role(strategy) -> tuple[int, int, bool]:
    """(workers, this worker's index, is chief). One worker unless MultiWorkerMirroredStrategy;
    the chief is task "chief", or worker 0 when the cluster has no chief task."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not spec:
        return 1, 0, True
    kind, index = resolver.task_type, resolver.task_id or 0
    chiefs = len(spec.get("chief", []))
    workers = chiefs + len(spec.get("worker", []))
    if kind == "chief":
        return workers, 0, True
    return workers, index + chiefs, chiefs == 0 and index == 0


def _check_same_step(strategy, step: int, workers: int) -> None:
    """Every worker must start from the same checkpoint (else their weights differ for good)."""
    import tensorflow as tf

    if workers <= 1:
        return
    total = strategy.reduce("SUM", strategy.run(lambda: tf.constant(step, tf.int64)), axis=None)
    if int(total) != step * strategy.num_replicas_in_sync:
        raise SystemExit(f"this worker is at step {step} but another is not: every worker must resume from the "
                         f"same checkpoint, so the run folder (--out) must be on storage that all workers see")


def moving_statistics_sync(strategy, model):
    """A function that replaces every replica's BatchNorm moving mean and variance by their mean
    over all replicas of all workers (None with one replica). Keras 3 keeps one copy per replica,
    each updated from that replica's batches only (tf.keras 2 averaged them on read), so without
    this the workers' checkpoints and generators differ. The moving averages are linear in the
    batch statistics, so averaging them at each epoch's end equals averaging every update."""
    import tensorflow as tf

    if strategy.num_replicas_in_sync <= 1:
        return None
    stats = [v for v in model.non_trainable_variables if v.path.endswith(("/moving_mean", "/moving_variance"))]

    def replica():
        ctx = tf.distribute.get_replica_context()
        for v in stats:
            v.assign(ctx.all_reduce("MEAN", tf.identity(v.value)))

    return tf.function(lambda: strategy.run(replica))


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


def _epoch_callback(model, run_dir: str, global_batch: int, epoch_var, manager, fixed, sync):
    """Keras callback: steps.jsonl every LOG_EVERY steps; at each epoch's end the replicas' BatchNorm
    statistics averaged (``sync``), a checkpoint, the sample grid and a history.jsonl line with
    training images/s (steady state: from the end of the epoch's first step to the end of its
    last, so graph tracing is left out)."""
    import keras

    class EpochEnd(keras.callbacks.Callback):
        def on_epoch_begin(self, ep, logs=None):
            self.ep, self.t_begin, self.t_first, self.t_last, self.n = ep + 1, time.time(), None, None, 0

        def on_train_batch_end(self, batch, logs=None):
            self.t_last = time.time()
            self.t_first = self.t_first or self.t_last
            self.n += 1
            self.last = {"step": int(model.g_opt.iterations.numpy()), "epoch": self.ep, "time": self.t_last,
                         **{k: float(v) for k, v in (logs or {}).items()}}
            if self.last["step"] % LOG_EVERY == 0 or self.n == 1:
                self._log_step()

        def _log_step(self):
            with open(os.path.join(run_dir, "steps.jsonl"), "a") as f:
                f.write(json.dumps(self.last) + "\n")

        def on_epoch_end(self, ep, logs=None):
            epoch_var.assign(ep + 1)
            step = int(model.g_opt.iterations.numpy())
            if self.n and step % LOG_EVERY and self.n > 1:
                self._log_step()  # the epoch's last step, so the curve reaches the checkpoint
            if self.n > 1:
                rate = (self.n - 1) * global_batch / max(self.t_last - self.t_first, 1e-9)
            else:
                rate = self.n * global_batch / max((self.t_last or time.time()) - self.t_begin, 1e-9)
            if sync is not None:
                sync()
            manager.save(checkpoint_number=step)
            _grid(model, fixed, os.path.join(run_dir, "samples", f"epoch_{ep + 1:03d}.png"))
            with open(os.path.join(run_dir, "history.jsonl"), "a") as f:
                f.write(json.dumps({"epoch": ep + 1, "step": step, "time": time.time(),
                                    "images_per_s": round(rate, 2), "global_batch": global_batch,
                                    "train_s": round((self.t_last or self.t_begin) - self.t_begin, 2),
                                    **{k: float(v) for k, v in (logs or {}).items()}}) + "\n")

    return EpochEnd()


def remove_checkpoint_leftovers(ckpt_dir: str) -> int:
    """Delete what a kill during a checkpoint write leaves: TensorFlow's ``ckpt-N_temp*`` shard
    folders (merged and removed only when a save completes) and temp files of atomic writes.
    The checkpoint in force (the ``checkpoint`` pointer file) is never touched."""
    import re
    import shutil

    from runtime.image_io import remove_stale_temps

    n = remove_stale_temps(ckpt_dir)
    try:
        names = os.listdir(ckpt_dir)
    except OSError:
        return n
    for f in names:
        p = os.path.join(ckpt_dir, f)
        if re.search(r"_temp(_[0-9a-f]+)?$", f) and os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
            n += 1
    return n


def train(args) -> dict:
    import keras
    import tensorflow as tf

    from .data import make_dataset
    from .datasets import read_manifest
    from .models import MODELS, describe, encoder_state

    keras.utils.set_random_seed(args.seed)
    strategy = make_strategy(args.cpu_replicas, args.precision)
    workers, worker_index, chief = worker_role(strategy)
    manifest = read_manifest(args.manifest)
    root = args.data or manifest["root"]
    # Only the chief writes the run folder; the other workers save the same checkpoints, samples
    # and generator (saving may need every worker: collective reads) into a scratch folder.
    scratch = None
    if chief:
        run_dir = args.out
    else:
        run_dir = args.worker_dir or tempfile.mkdtemp(prefix=f"frontalize-worker{worker_index}-")
        if not args.worker_dir:
            scratch = run_dir
            atexit.register(shutil.rmtree, scratch, True)  # also when the run stops on an error
    os.makedirs(run_dir, exist_ok=True)
    n_rep = strategy.num_replicas_in_sync
    global_batch = args.batch * n_rep
    if workers > 1:
        print(f"worker {worker_index} of {workers} ({'chief' if chief else 'writes to ' + run_dir}), "
              f"{n_rep} replicas in all, global batch {global_batch}", flush=True)
    pooled = manifest.get("kind") == "pooled"  # training.pooled: the geo generator's data, and the GANs'
    # The GANs also take it: wild CFP profiles add identities through the identity loss alone
    # (pixel weight 0, left out of the discriminator's real pairs). The autoencoder and CVAE
    # train on paired manifests only.
    if (args.model == "geo" and not pooled) or (pooled and args.model not in POOLED_MODELS):
        raise SystemExit(f"{args.model}: the geo model trains on a pooled manifest (python -m training.pooled), "
                         f"{', '.join(sorted(POOLED_MODELS - {'geo'}))} on either, the others on a paired one "
                         "(python -m training.datasets)")
    for flag, value in (("--sym-weight", args.sym_weight), ("--prior-weight", args.prior_weight)):
        if value and not (pooled and args.model in POOLED_MODELS - {"geo"}):
            raise SystemExit(f"{flag}: only {', '.join(sorted(POOLED_MODELS - {'geo'}))} on a pooled manifest "
                             "have rows without a pixel target")

    def distribute(make, batch=global_batch):
        """One pipeline per worker, per-replica batches, this worker's shard of the files."""
        def fn(ctx):
            if ctx.num_input_pipelines > 1:
                print(f"input pipeline {ctx.input_pipeline_id} of {ctx.num_input_pipelines}: "
                      f"ds.shard({ctx.num_input_pipelines}, {ctx.input_pipeline_id}) of the file list", flush=True)
            return make(ctx.get_per_replica_batch_size(batch), (ctx.num_input_pipelines, ctx.input_pipeline_id))
        if n_rep == 1:
            return make(batch, None)
        return strategy.distribute_datasets_from_function(fn)

    val_split = "val" if manifest["pairs"].get("val") else "train"
    # Validation rows: a multiple of the global batch where there are enough (else of the replica
    # count), so every replica of every worker gets equal batches; Keras builds the model from the
    # mean of the replicas' first batches, which fails on unequal ones.
    n_val = min(args.val_limit, len(manifest["pairs"][val_split]))
    val_batch = min(global_batch, max(n_val // n_rep, 1) * n_rep)
    val_limit = n_val // val_batch * val_batch or n_val
    if pooled:
        from .data import make_pooled_dataset

        train_ds = distribute(lambda b, sh: make_pooled_dataset(manifest, "train", b, train=True, seed=args.seed,
                                                                shard=sh))
        val_ds = distribute(lambda b, sh: make_pooled_dataset(manifest, "val", b, train=False, limit=val_limit,
                                                              shard=sh), val_batch)
        # fixed sample rows: studio pairs at 30/60/90, TP-GAN pseudo-pairs at 90, two wild profiles
        rows, fixed_rows = manifest["pairs"]["val"], []
        for kind, yaw in [("mp30", 30), ("mp30", -60), ("mp30", 90), ("mp137", 90), ("cfp_profile", None),
                          ("cfp_profile", None)]:
            hit = [r for r in rows if r["kind"] == kind and (yaw is None or r["yaw"] == yaw) and r not in fixed_rows]
            fixed_rows += hit[len(hit) // 3: len(hit) // 3 + 1]
        fixed = next(iter(make_pooled_dataset({**manifest, "pairs": {"fixed": fixed_rows}}, "fixed", len(fixed_rows),
                                              train=False)))
    else:
        train_ds = distribute(lambda b, sh: make_dataset(manifest, "train", b, train=True, seed=args.seed, root=root,
                                                         shard=sh))
        val_ds = distribute(lambda b, sh: make_dataset(manifest, val_split, b, train=False, root=root,
                                                       limit=val_limit, repeat=False, shard=sh), val_batch)
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
            kw.update(adv_weight=args.adv_weight, lr=args.lr)
        if args.sym_weight:
            kw["sym_weight"] = args.sym_weight
        if args.prior_weight:
            kw["prior_weight"] = args.prior_weight
        if args.model == "autoencoder" and args.vggface_weights is not None:
            kw["weights"] = args.vggface_weights or None  # "" = random weights, as for pix2pix
        if args.model == "pix2pix" and args.vggface_weights is not None:
            from .models import vgg_unet

            kw["generator"] = vgg_unet("transpose", "vgg_unet_pix2pix", args.vggface_weights or None)
        explicit = args.id_weight is not None
        if args.id_net == "none":
            args.id_weight = 0.0
        elif not explicit:
            args.id_weight = PROFILE_ID_WEIGHT[args.profile].get(args.model, 0.0)
        if args.id_weight:
            from .id_nets import cfp_identity_table, identity_network

            try:
                id_net = identity_network(args.id_net)
            except FileNotFoundError as e:  # a profile's default is dropped with a note, --id-weight is not
                if explicit:
                    raise SystemExit(f"--id-weight {args.id_weight}: {e}")
                print(f"training without the identity loss: {e}", flush=True)
                args.id_weight = 0.0
            else:
                kw.update(id_net=id_net, id_weight=args.id_weight)
                if pooled:
                    kw["id_table"] = cfp_identity_table(id_net, manifest, "train")
        model = MODELS[args.model](**kw)
        model.compile()
        model.build_optimizers()
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        ckpt_parts = {"generator": model.generator, "epoch": epoch, **model.optimizers(),
                      **{k: getattr(model, k) for k in ("discriminator", "prior_discriminator", "encoder", "decoder")
                         if hasattr(model, k)}}
        ckpt = tf.train.Checkpoint(**ckpt_parts)
    print(describe(model.generator), flush=True)
    encoder = encoder_state(model.generator)
    removed = remove_checkpoint_leftovers(os.path.join(run_dir, "ckpt"))
    if removed:
        print(f"removed {removed} leftover(s) of a checkpoint write that was killed", flush=True)
    manager = tf.train.CheckpointManager(ckpt, os.path.join(run_dir, "ckpt"), max_to_keep=2)
    # every worker restores the chief's checkpoint: the run folder must be on shared storage
    latest = tf.train.latest_checkpoint(os.path.join(args.out, "ckpt")) if args.resume else None
    if latest:
        keys = {name.split("/")[0] for name, _ in tf.train.list_variables(latest)}
        if hasattr(model, "prior_discriminator") and "prior_discriminator" not in keys:
            # a run resumed with --prior-weight for the first time: the new critic starts fresh
            print("the checkpoint has no prior discriminator: it starts from random weights", flush=True)
            tf.train.Checkpoint(**{k: v for k, v in ckpt_parts.items() if k not in ("prior_discriminator", "p_opt")}
                                ).restore(latest).assert_existing_objects_matched()
        else:
            ckpt.restore(latest).assert_existing_objects_matched()
        print(f"resumed from {latest}: epoch {int(epoch.numpy())}, "
              f"step {int(model.g_opt.iterations.numpy())}", flush=True)
    elif args.resume:
        print("--resume: no checkpoint yet, starting fresh", flush=True)
    _check_same_step(strategy, int(model.g_opt.iterations.numpy()), workers)

    t0 = time.time()
    start = int(epoch.numpy())
    if start < args.epochs:
        model.fit(train_ds, epochs=args.epochs, initial_epoch=start, steps_per_epoch=args.steps,
                  shuffle=False,  # the tf.data pipeline shuffles; Keras warns that it ignores shuffle=True
                  validation_data=val_ds, validation_steps=max(1, val_limit // val_batch), verbose=args.verbose,
                  callbacks=[_epoch_callback(model, run_dir, global_batch, epoch, manager, fixed,
                                             moving_statistics_sync(strategy, model)),
                             keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"), update_freq=50)])
    extra = {"training": {"profile": args.profile, "precision": keras.mixed_precision.global_policy().name,
                          "global_batch": global_batch, "replicas": n_rep, "workers": workers,
                          "steps": int(model.g_opt.iterations.numpy())}}
    if encoder:
        extra["training"]["encoder"] = encoder
    path = export_generator(model, run_dir, extra)
    if chief:
        from .curves import plot_run

        plot_run(run_dir)
    result = {"model": args.model, "epochs": int(epoch.numpy()), "steps": int(model.g_opt.iterations.numpy()),
              "seconds": round(time.time() - t0, 1), "generator": path, "replicas": n_rep, "workers": workers,
              "chief": chief, **({"encoder": encoder} if encoder else {})}
    if scratch:
        result["generator"] = None  # in the scratch folder, deleted at exit
    print(json.dumps(result), flush=True)
    return result


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, choices=["autoencoder", "pix2pix", "dcgan", "cvae", "edge", "geo"])
    ap.add_argument("--id-net", default="mobileface", choices=["mobileface", "mobilefacenet", "dlib", "none"],
                    help="the recognizer of the identity loss (default mobileface, EER 8.8 %% on CFP; mobilefacenet separates people poorly, EER 32 %%; the evaluation "
                         "judges with faceres and dlib, never with the loss's network)")
    ap.add_argument("--adv-weight", type=float, default=0.05,
                    help="geo: weight of the adversarial loss (0.5 let the discriminator win within 750 CPU "
                         "steps: d_loss 0.08, validation L1 rising, speckled outputs)")
    ap.add_argument("--lr", type=float, default=1e-4, help="geo: Adam learning rate of both networks")
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
                    help="weight of the identity loss, 1 - cosine between --id-net embeddings of output and "
                         "target, any model (default: the profile's, PROFILE_ID_WEIGHT)")
    ap.add_argument("--sym-weight", type=float, default=0.0,
                    help="pix2pix, dcgan, edge on a pooled manifest: weight of the symmetry loss on the rows "
                         "without a pixel target (wild profiles), mean |output - its mirror|")
    ap.add_argument("--prior-weight", type=float, default=0.0,
                    help="pix2pix, dcgan, edge on a pooled manifest: weight of the adversarial loss of an "
                         "unconditional discriminator of frontal photographs on the rows without a pixel target")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--cpu-replicas", type=int, default=0, help="split the CPU into N devices (tests)")
    ap.add_argument("--precision", choices=["auto", "bfloat16", "float32"], default="auto",
                    help="auto: bfloat16 mixed precision when a GPU is present, else float32 (use float32 on "
                         "GPUs without bfloat16, older than Ampere)")
    ap.add_argument("--worker-dir", help="multi-worker: where a non-chief worker writes its copies of the "
                                         "checkpoints, samples and generator (default: a temporary folder, "
                                         "deleted at the end; a given folder is kept)")
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
