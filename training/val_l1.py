"""Model selection for the geo generator on validation identities only:
``python -m training.val_l1 runs/A/generator.keras runs/B/generator.keras [--manifest artifacts/pooled.json]``.

Mean |output - target| ([-1, 1] scale) per row kind on up to ``--per-kind`` rows of each kind,
spread evenly over the pooled manifest's validation split (multipie30 042-043, multipie137
315-324, cfp400 301-350). The training log's ``val_l1`` reads only the first rows of the split
(one multipie30 person), so checkpoints are compared with this instead.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np

KINDS = ("mp30", "mp30_front", "mp137", "cfp_frontal")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--manifest", default="artifacts/pooled.json")
    ap.add_argument("--per-kind", type=int, default=96)
    a = ap.parse_args(argv)
    import keras

    from . import models  # noqa: F401  (registers the custom layers)
    from .data import make_pooled_dataset

    with open(a.manifest) as f:
        m = json.load(f)
    by = defaultdict(list)
    for r in m["pairs"]["val"]:
        by[r["kind"]].append(r)
    sel = [r for k in KINDS for r in by[k][::max(1, len(by[k]) // a.per_kind)][:a.per_kind]]
    ds = make_pooled_dataset({**m, "pairs": {"sel": sel}}, "sel", 16, train=False)
    for path in a.models:
        g = keras.models.load_model(path, compile=False)
        per, i = defaultdict(list), 0
        for b in ds:
            err = np.abs(g([b["x"], b["yaw"]], training=False).numpy() - b["y"].numpy()).mean(axis=(1, 2, 3))
            for v in err:
                per[sel[i]["kind"]].append(float(v))
                i += 1
        print(json.dumps({"model": path, **{k: round(float(np.mean(v)), 4) for k, v in per.items()}}), flush=True)


if __name__ == "__main__":
    main()
