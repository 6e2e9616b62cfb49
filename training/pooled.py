"""The pooled training manifest of the geometric generator, from the crop pipeline's output.

``python -m training.pooled --crops artifacts/crops --out artifacts/pooled.json``

``training.prepare`` crops each set through the runtime's own ``FaceAnalyzer`` into
``CROPS/<set>/`` (same relative paths, a journal with each crop's estimated yaw and face
score). This joins them into rows of one kind each:

| kind | x | y (target) | pixel weight | identity target |
|---|---|---|---|---|
| ``mp30`` | multipie30 side view | the same instant's frontal (camera 051), a real photo | 1 | embedding of y |
| ``mp30_front`` | multipie30 frontal | itself | 1 | embedding of y |
| ``mp137`` | multipie137 side view | TP-GAN's frontal made from it (pseudo-target) | 0.5 | embedding of y |
| ``cfp_profile`` | cfp400 profile photo | none | 0 | mean embedding of the person's frontal photos |
| ``cfp_frontal`` | cfp400 frontal photo | itself | 1 | mean embedding of the person's frontal photos |

Every row carries ``yaw_est``, the pose network's yaw of x, which is what the generator gets at
run time. Identity splits are ``training.pose_labels.SPLITS`` (named in the manifest): test
identities (multipie30 044-049, multipie137 325-346, cfp400 351-400) are listed under ``test`` only
and never reach training, selection or calibration. ``reals`` lists the frontal photographs
(multipie30 camera 051, cfp400 frontal) the discriminator learns from.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
from collections import Counter, defaultdict

from .datasets import MULTIPIE_CAM_YAW
from .pose_labels import SPLITS, split_of

_MP = re.compile(r"(\d{3})_(\d{2})_(\d{2})_(\d{3})_(\d{2})\.\w+$")
KIND_WEIGHT = {"mp30": 1.0, "mp30_front": 1.0, "mp137": 0.5, "cfp_profile": 0.0, "cfp_frontal": 1.0}


def read_crops(folder: str) -> dict[str, dict]:
    """rel path -> journal row, for the crops that exist."""
    rows = {}
    path = os.path.join(folder, "prepare_journal.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: run training.prepare on this set first")
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("ok") and os.path.exists(os.path.join(folder, r["path"])):
                rows[r["path"]] = r
    return rows


def _row(kind, s, x, y, ident, yaw, yaw_est, idt=-1):
    return {"kind": kind, "set": s, "x": x, "y": y, "id": ident, "yaw": yaw, "yaw_est": yaw_est,
            "w": KIND_WEIGHT[kind], "idt": idt}


def multipie_rows(crops: str, data: str, dropped: Counter | None = None):
    """(kind, set, split, x, y, id, yaw, journal row of x) of the two Multi-PIE sets' crops: multipie30
    frontals (``mp30_front``, y = x) and side views paired with the same instant's camera 051 (``mp30``),
    multipie137 side views with TP-GAN's frontal made from them (``mp137``, yaw +|camera yaw|: stored
    nose-right). Pairs whose partner was not cropped are counted in ``dropped``."""
    dropped = Counter() if dropped is None else dropped
    mp30 = read_crops(os.path.join(crops, "multipie30"))
    for rel, r in sorted(mp30.items()):
        sid, ss, rr, cam, ll = _MP.search(rel).groups()
        split = split_of("multipie30", sid)
        if cam == "051":
            yield "mp30_front", "multipie30", split, f"multipie30/{rel}", f"multipie30/{rel}", f"mp30-{sid}", 0, r
            continue
        front = rel.replace(f"_{cam}_", "_051_")
        if front not in mp30:
            dropped["multipie30: frontal not cropped"] += 1
            continue
        yield ("mp30", "multipie30", split, f"multipie30/{rel}", f"multipie30/{front}", f"mp30-{sid}",
               MULTIPIE_CAM_YAW[cam], r)
    mp137 = read_crops(os.path.join(crops, "multipie137"))
    with open(os.path.join(data, "multipie137", "pairs.csv")) as f:
        for rec in csv.DictReader(f):
            side, front = rec["side"], rec["frontal"]
            if side not in mp137 or front not in mp137:
                dropped["multipie137: side or TP-GAN frontal not cropped"] += 1
                continue
            sid, ss, rr, cam, ll = _MP.search(side).groups()
            yield ("mp137", "multipie137", split_of("multipie137", sid), f"multipie137/{side}",
                   f"multipie137/{front}", f"mp137-{sid}", abs(MULTIPIE_CAM_YAW[cam]), mp137[side])


def build(crops: str, data: str) -> dict:
    out = {"kind": "pooled", "root": os.path.abspath(crops),
           "splits": {s: {k: [min(v), max(v)] for k, v in d.items()} for s, d in SPLITS.items()},
           "pairs": defaultdict(list), "reals": defaultdict(list), "dropped": Counter()}
    for kind, s, split, x, y, ident, yaw, r in multipie_rows(crops, data, out["dropped"]):
        out["pairs"][split].append(_row(kind, s, x, y, ident, yaw, r["yaw_est"]))
        if kind == "mp30_front":
            out["reals"][split].append(x)
    cfp = read_crops(os.path.join(crops, "cfp400"))
    ids = sorted({rel.split("/")[0] for rel in cfp})
    index = {i: k for k, i in enumerate(ids)}
    out["cfp_identities"] = ids
    for rel, r in sorted(cfp.items()):
        sid, kind = rel.split("/")[0], rel.split("/")[1]
        split = split_of("cfp400", sid)
        x = f"cfp400/{rel}"
        if kind == "frontal":
            out["pairs"][split].append(_row("cfp_frontal", "cfp400", x, x, f"cfp-{sid}", 0, r["yaw_est"], index[sid]))
            out["reals"][split].append(x)
        else:
            out["pairs"][split].append(_row("cfp_profile", "cfp400", x, x, f"cfp-{sid}", None, r["yaw_est"],
                                            index[sid]))
    out["pairs"], out["reals"], out["dropped"] = dict(out["pairs"]), dict(out["reals"]), dict(out["dropped"])
    out["counts"] = {split: dict(Counter(r["kind"] for r in rows)) for split, rows in out["pairs"].items()}
    return out


def paired(crops: str, data: str) -> dict:
    """The seed models' paired manifest (``training.datasets`` layout) from the same crops: multipie30's
    real pairs and multipie137's side views with TP-GAN's frontal as pseudo-target, identity splits
    of ``SPLITS``. 22 training people in multipie30 alone are too few (the models learnt a mean face
    for strangers, README "Seed models"); multipie137 adds 107 (129 in all). cfp400 has no pairs and is not read."""
    rows = defaultdict(list)
    for kind, _set, split, x, y, ident, yaw, _row_of_x in multipie_rows(crops, data):
        if kind != "mp30_front":
            rows[split].append({"x": x, "y": y, "id": ident, "yaw": yaw})
    pairs = {k: rows.get(k, []) for k in ("train", "val", "test")}
    return {"root": os.path.abspath(crops), "scheme": "multipie30+multipie137",
            "identities": {k: sorted({r["id"] for r in v}) for k, v in pairs.items()}, "pairs": pairs}


def main(argv=None) -> None:
    from .datasets import DEFAULT_DATA_ROOT

    ap = argparse.ArgumentParser(prog="python -m training.pooled", description=__doc__.split("\n")[0])
    ap.add_argument("--crops", default="artifacts/crops")
    ap.add_argument("--data", default=DEFAULT_DATA_ROOT)
    ap.add_argument("--out", default="artifacts/pooled.json")
    ap.add_argument("--paired", action="store_true",
                    help="write the seed models' paired manifest (multipie30 + multipie137 pairs) instead")
    a = ap.parse_args(argv)
    if a.paired:
        from .datasets import write_manifest

        m = paired(a.crops, a.data)
        write_manifest(m, a.out)
        print(f"{a.out}: " + ", ".join(f"{k} {len(v)} pairs / {len(m['identities'][k])} ids" for k, v in m["pairs"].items()))
        return
    m = build(a.crops, a.data)
    from runtime.image_io import atomic_write_bytes

    atomic_write_bytes(a.out, json.dumps(m, indent=1).encode())
    print(f"{a.out}: {json.dumps(m['counts'])}; dropped {m['dropped']}")


if __name__ == "__main__":
    main()
