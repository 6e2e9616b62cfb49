"""Dataset adapters: file names -> records (identity, yaw, pairing key, path), pairs, splits, manifest.

Three naming schemes:

- ``multipie``: ``SID/SID_SS_RR_CAM_LL.jpg`` (../shared/data/multipie30/README.md). CAM fixes
  the yaw; the frontal camera is 051. Pairing key = (SID, SS, RR, LL): same person,
  session, expression and lighting.
- ``kface``: the seed project's AIHub K-Face layout, ``ID/S00x/Lxx/Exx/Cxx.jpg``
  (identity / accessory / lighting / expression / camera angle, 20 cameras C1..C20).
  The angle of each camera comes from KFACE_YAW; C7 is frontal. Pairing key =
  (ID, S, L, E).
- ``generic``: a regular expression with named groups ``id``, ``yaw`` (degrees) and
  optional ``key`` (the rest of the pairing key), e.g.
  ``(?P<id>[^/]+)/(?P<key>.+)_yaw(?P<yaw>-?\\d+)\\.\\w+$``.

Pairing rule (all schemes): a side view pairs with the frontal view (yaw 0) whose
pairing key is equal. Side views without a frontal partner are dropped and counted.
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff",
              ".heic", ".heif", ".hif", ".avif"}  # phone formats (runtime.image_io: pi-heif, Pillow)
YAWS = tuple(range(-90, 91, 15))  # the 13 pose labels; index 6 is frontal
FRONTAL_INDEX = YAWS.index(0)
DEFAULT_DATA_ROOT = os.environ.get("FRONTALIZE_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))

MULTIPIE_CAM_YAW = {"110": -90, "120": -75, "090": -60, "080": -45, "130": -30, "140": -15, "051": 0,
                    "050": 15, "041": 30, "190": 45, "200": 60, "010": 75, "240": 90}
# K-Face cameras C1..C20: C1-C13 sweep -90..+90 in 15 degree steps at eye height (C7 frontal);
# C14-C20 are the raised/lowered cameras, mapped to their nearest yaw; only the eye-height ring
# is used for pairing by default (KFACE_PITCHED holds the rest, kept as records with pitch != 0).
KFACE_YAW = {f"C{i}": YAWS[i - 1] for i in range(1, 14)}
KFACE_PITCHED = {"C14": -30, "C15": -15, "C16": 0, "C17": 15, "C18": 30, "C19": 0, "C20": 0}


@dataclass(frozen=True)
class Record:
    path: str  # relative to the dataset root
    identity: str
    yaw: int
    key: str  # pairing key: equal keys = same identity, lighting, expression (and session/accessory)


def yaw_index(yaw: float) -> int:
    """Nearest of the 13 pose labels."""
    return min(range(len(YAWS)), key=lambda i: abs(YAWS[i] - yaw))


_MULTIPIE = re.compile(r"(?:^|/)(\d{3})_(\d{2})_(\d{2})_(\d{3})_(\d{2})\.\w+$")
_KFACE = re.compile(r"(?:^|/)([^/]+)/(S\d+)/(L\d+)/(E\d+)/(C\d+)\.\w+$")


def parse_multipie(rel: str) -> Record | None:
    m = _MULTIPIE.search(rel.replace(os.sep, "/"))
    if not m or m.group(4) not in MULTIPIE_CAM_YAW:
        return None
    sid, ss, rr, cam, ll = m.groups()
    return Record(rel, sid, MULTIPIE_CAM_YAW[cam], f"{sid}_{ss}_{rr}_{ll}")


def parse_kface(rel: str) -> Record | None:
    m = _KFACE.search(rel.replace(os.sep, "/"))
    if not m or m.group(5) not in KFACE_YAW:
        return None  # pitched cameras are not paired
    pid, s, light, expr, cam = m.groups()
    return Record(rel, pid, KFACE_YAW[cam], f"{pid}_{s}_{light}_{expr}")


def generic_parser(pattern: str):
    rx = re.compile(pattern)
    if "id" not in rx.groupindex or "yaw" not in rx.groupindex:
        raise ValueError("generic pattern needs named groups 'id' and 'yaw'")

    def parse(rel: str) -> Record | None:
        m = rx.search(rel.replace(os.sep, "/"))
        if not m:
            return None
        key = m.groupdict().get("key") or ""
        return Record(rel, m["id"], int(round(float(m["yaw"]))), f"{m['id']}_{key}")

    return parse


PARSERS = {"multipie": parse_multipie, "kface": parse_kface}


def scan(root: str, scheme: str = "multipie", pattern: str | None = None) -> tuple[list[Record], list[str]]:
    """Walk ``root``; returns (records sorted by path, relative paths that did not match)."""
    parse = generic_parser(pattern) if scheme == "generic" else PARSERS[scheme]
    records, skipped = [], []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if os.path.splitext(f)[1].lower() not in IMAGE_EXTS:
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), root)
            r = parse(rel)
            (records.append(r) if r else skipped.append(rel))
    records.sort(key=lambda r: r.path)
    return records, sorted(skipped)


def make_pairs(records: list[Record]) -> tuple[list[tuple[Record, Record]], int]:
    """(side, frontal) pairs by the pairing rule; also the number of unpaired side views."""
    frontal = {r.key: r for r in records if r.yaw == 0}
    pairs, unpaired = [], 0
    for r in records:
        if r.yaw == 0:
            continue
        f = frontal.get(r.key)
        if f is None:
            unpaired += 1
        else:
            pairs.append((r, f))
    return pairs, unpaired


# The multipie30 split from its README: test ids are held out from everything. Two of the
# training identities are kept aside as validation (model selection, int8 calibration).
MULTIPIE30_SPLIT = {
    "train": [f"{i:03d}" for i in range(20, 42)],
    "val": ["042", "043"],
    "test": [f"{i:03d}" for i in range(44, 50)],
}


def split_identities(identities, val: float = 0.1, test: float = 0.2, seed: int = 0) -> dict[str, list[str]]:
    """Identity-disjoint split by a seeded shuffle (used where no fixed split is given)."""
    import random

    ids = sorted(set(identities))
    random.Random(seed).shuffle(ids)
    n_test = max(1, round(len(ids) * test)) if len(ids) > 2 else 0
    n_val = max(1, round(len(ids) * val)) if len(ids) > 2 else 0
    return {"test": sorted(ids[:n_test]), "val": sorted(ids[n_test:n_test + n_val]),
            "train": sorted(ids[n_test + n_val:])}


def build_manifest(root: str, scheme: str = "multipie", pattern: str | None = None,
                   split: dict[str, list[str]] | None = None, seed: int = 0) -> dict:
    records, skipped = scan(root, scheme, pattern)
    if not records:
        raise ValueError(f"{root}: no images matching the {scheme} naming")
    pairs, unpaired = make_pairs(records)
    ids = sorted({r.identity for r in records})
    if split is None:
        split = MULTIPIE30_SPLIT if scheme == "multipie" and set(ids) <= set(sum(MULTIPIE30_SPLIT.values(), [])) \
            else split_identities(ids, seed=seed)
    owner = {i: name for name, group in split.items() for i in group}
    out = {name: [] for name in split}
    for side, front in pairs:
        name = owner.get(side.identity)
        if name is not None:
            out[name].append({"x": side.path, "y": front.path, "id": side.identity, "yaw": side.yaw})
    counts = Counter(r.yaw for r in records)
    return {
        "root": os.path.abspath(root), "scheme": scheme, "yaws": list(YAWS),
        "identities": {k: sorted(v) for k, v in split.items()},
        "pairs": out, "unpaired_side_views": unpaired, "unmatched_files": len(skipped),
        "images_per_yaw": {str(k): counts[k] for k in sorted(counts)},
    }


def check_disjoint(manifest: dict) -> None:
    seen = defaultdict(set)
    for name, rows in manifest["pairs"].items():
        for row in rows:
            seen[row["id"]].add(name)
    clash = {i: s for i, s in seen.items() if len(s) > 1}
    if clash:
        raise ValueError(f"identities in more than one split: {clash}")


def write_manifest(manifest: dict, path: str) -> None:
    check_disjoint(manifest)
    from runtime.image_io import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(manifest, indent=1).encode())


def read_manifest(path: str) -> dict:
    with open(path) as f:
        m = json.load(f)
    check_disjoint(m)
    return m


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m training.datasets", description="Write a paired, identity-split manifest.")
    ap.add_argument("root", nargs="?", default=os.path.join(DEFAULT_DATA_ROOT, "multipie30"))
    ap.add_argument("--scheme", choices=["multipie", "kface", "generic"], default="multipie")
    ap.add_argument("--pattern", help="regex for --scheme generic (named groups id, yaw, key)")
    ap.add_argument("--out", default="artifacts/manifest.json")
    a = ap.parse_args(argv)
    m = build_manifest(a.root, a.scheme, a.pattern)
    write_manifest(m, a.out)
    print(f"{a.out}: " + ", ".join(f"{k} {len(v)} pairs / {len(m['identities'][k])} ids" for k, v in m["pairs"].items()))


if __name__ == "__main__":
    main()
