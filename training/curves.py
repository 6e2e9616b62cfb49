"""Loss curves of a training run: ``python -m training.curves RUN_DIR [RUN_DIR ...]``.

Reads ``steps.jsonl`` (a line every LOG_EVERY steps) and ``history.jsonl`` (a line per epoch,
with the validation losses and training images/s) that ``training.train`` writes, and draws
``RUN_DIR/loss_curves.png``: one panel per loss, the training values against the optimizer step,
the validation value of the same loss (``val_<name>``) at each epoch's end. Lines that a resumed
run wrote again for the same step (or epoch) count once, the latest. Written atomically.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys

NOT_LOSSES = {"step", "epoch", "time", "images_per_s", "global_batch", "train_s"}


def read_jsonl(path: str, key: str) -> list[dict]:
    """Rows of a jsonl file, one per ``key`` value (the last written wins), in ``key`` order."""
    rows = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                    rows[r[key]] = r
                except (ValueError, KeyError):
                    pass  # a line cut by a kill
    return [rows[k] for k in sorted(rows)]


def plot_run(run_dir: str) -> str | None:
    """Draw ``run_dir/loss_curves.png``; returns its path, None when the run logged nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from runtime.image_io import atomic_write_bytes

    steps = read_jsonl(os.path.join(run_dir, "steps.jsonl"), "step")
    epochs = read_jsonl(os.path.join(run_dir, "history.jsonl"), "epoch")
    if not steps and not epochs:
        return None
    names = []
    for r in steps or epochs:
        names += [k for k in r if k not in NOT_LOSSES and not k.startswith("val_") and k not in names]
    cols = min(3, len(names)) or 1
    rows = -(-len(names) // cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.9 * rows), dpi=100, squeeze=False)
    for ax, name in zip(axes.flat, names):
        pts = [(r["step"], r[name]) for r in (steps or epochs) if name in r]
        if pts:
            ax.plot(*zip(*pts), color="#3570b0", lw=1, marker="." if len(pts) < 30 else None, label="train")
        val = [(r["step"], r[f"val_{name}"]) for r in epochs if f"val_{name}" in r]
        if val:
            ax.plot(*zip(*val), color="#d0502a", marker="o", ms=4, lw=1, label="validation")
            ax.legend(fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    rates = [r["images_per_s"] for r in epochs if "images_per_s" in r]
    title = os.path.basename(os.path.normpath(run_dir))
    if rates:
        title += f": {rates[-1]:.1f} images/s (last epoch, global batch {epochs[-1].get('global_batch', '?')})"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path = os.path.join(run_dir, "loss_curves.png")
    atomic_write_bytes(path, buf.getvalue())
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.curves", description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders of training.train")
    a = ap.parse_args(argv)
    status = 0
    for run in a.runs:
        path = plot_run(run)
        if path:
            print(path)
        else:
            print(f"error: {run}: no steps.jsonl or history.jsonl", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
