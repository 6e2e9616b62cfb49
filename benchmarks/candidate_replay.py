"""Replay the analyzer's rules over every face candidate of a photo set:
``python -m benchmarks.candidate_replay dump OUT.pkl FILES...`` then ``... replay OUT.pkl``.

``dump`` runs the default candidate detector and the pose network once per photo (2 processes) and
keeps each candidate's box, passes, detector score and pose score. ``replay`` runs
``FaceAnalyzer.faces_from_candidates`` on them (no image needed) with the rules of
``runtime.detect`` and, for comparison, with the single-pass rule before the sure-BlazeFace
exception (every single-pass candidate needs SINGLE_MIN_SCORE): photos with a face, photos with
more than one, and every photo whose result differs. That is how BLAZEFACE_SURE was checked on
cfp400 (5,600 photos) and multipie30 044-049 (3,120).
"""
from __future__ import annotations

import argparse
import pickle
import sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from types import SimpleNamespace

import numpy as np

_FA = None


def _init():
    global _FA
    from runtime.detect import FaceAnalyzer

    _FA = FaceAnalyzer(threads=1)


def _one(path):
    from runtime.image_io import load_image

    try:
        rgb = load_image(path).rgb
    except Exception:  # noqa: BLE001 - an unreadable file is a photo without candidates here
        return path, None
    cands = _FA.detect(rgb)
    poses = _FA.pose.refine(rgb, [c[0] for c in cands])
    return path, [dict(box=np.asarray(b, float), det=float(s), name=n, score=float(p.score), yaw=float(p.yaw),
                       square=tuple(float(v) for v in p.square)) for (b, s, n), p in zip(cands, poses)]


def dump(out: str, files: list[str]) -> None:
    from tqdm import tqdm

    with ProcessPoolExecutor(2, initializer=_init) as ex:
        res = dict(tqdm(ex.map(_one, files, chunksize=16), total=len(files), desc="candidates", mininterval=10))
    with open(out, "wb") as f:
        pickle.dump(res, f)


def replay(res: dict, before: bool = False) -> dict:
    """path -> faces (None for an unreadable photo), by the analyzer's rules on stored candidates."""
    import runtime.detect as D

    fa = D.FaceAnalyzer.__new__(D.FaceAnalyzer)
    fa.detector, fa.crop_size, fa.min_face, fa.min_score = "default", 8, 24, D.MIN_SCORE
    if before:
        fa.needed_score = lambda name, s: D.MIN_SCORE if "+" in name else D.SINGLE_MIN_SCORE
    rgb = np.zeros((8, 8, 3), np.uint8)
    out = {}
    for path, cs in res.items():
        if cs is None:
            out[path] = None
            continue
        poses = [SimpleNamespace(score=c["score"], yaw=c["yaw"], square=c["square"], E=np.zeros(2), M=np.zeros(2))
                 for c in cs]
        fa.pose = SimpleNamespace(refine=lambda rgb, boxes, poses=poses: poses)
        out[path] = fa.faces_from_candidates(rgb, [(c["box"], c["det"], c["name"]) for c in cs])[0]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.candidate_replay", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("out")
    d.add_argument("files", nargs="+")
    r = sub.add_parser("replay")
    r.add_argument("dumps", nargs="+")
    a = ap.parse_args(argv)
    if a.cmd == "dump":
        dump(a.out, a.files)
        return 0
    for p in a.dumps:
        with open(p, "rb") as f:
            res = pickle.load(f)
        now, old = replay(res), replay(res, before=True)
        for name, o in (("before", old), ("now", now)):
            kinds = defaultdict(lambda: [0, 0, 0])
            for path, faces in o.items():
                k = next((k for k in ("frontal", "profile", "samples") if f"/{k}/" in f"/{path}"), "other")
                kinds[k][0] += 1
                kinds[k][1] += bool(faces)
                kinds[k][2] += bool(faces) and len(faces) > 1
            print(f"{p} {name}: " + "; ".join(f"{k}: {v[1]}/{v[0]} with a face, {v[2]} with more than one"
                                              for k, v in sorted(kinds.items())))
        for path in now:
            if len(now[path] or []) != len(old[path] or []):
                print(f"  differs: {path}: {len(old[path] or [])} -> {len(now[path] or [])} face(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
