"""Face-candidate detection: recall, extra boxes and time per detector and per combination (the
rates; ``benchmarks.detection_report`` turns them into the report and holds the command line).

``python -m benchmarks.detection_report collect --set cfp400 --passes NAME ...``
    runs each detector pass (``PASSES`` below, or ``runtime.detectors.PRESETS``) on every image of
    a set and caches its raw boxes, scores and time per image in ``artifacts/det_eval/raw/``.
``python -m benchmarks.detection_report report``
    fits the per-detector box convention and score calibration on cfp400, scores every pass and
    the combinations, and writes ``benchmarks/results/detection_rate.{md,json}`` and contact
    sheets in ``artifacts/det_eval/``.
``python -m benchmarks.detection_report timing``
    median ms per 640x480 frame of each pass and of the presets.
``python -m benchmarks.detection_report candidates``
    the default ``CandidateDetector``'s candidates for every cfp400 photo as JSON in
    ``artifacts/det_candidates/`` (for training/evaluating the verification stage).

Sets: ``cfp400`` (5,600 photos, one main face each; ground truth from CFP's 30 fiducials, see
``cfp400_truth``), ``multipie30`` (all 30 ids, recording 01, illuminations 01 04 07 10 13 16, all
13 cameras: 2,340 crops), ``multipie137`` (all 3,600 side views), ``samples`` (the bundled photos,
faces boxed by hand in ``samples_faces.json``).

A hit: a box that contains the centre of the true face box and whose side (sqrt of its area) is
0.5-2x the true side. Centre-in-box and a size band are used rather than IoU because the
detectors' box conventions differ (BlazeFace tight and high, Haar loose, MTCNN tall); the band
rejects boxes on an eye or an ear (< 0.5x) and head-and-shoulders boxes (> 2x). Extra boxes: every
box on a one-face photo besides the first hit; "off-face" extras do not overlap the true face box
at all (a non-face, or a second person), the others are duplicate or mis-sized boxes on the face.
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections import defaultdict

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from runtime import detectors as D  # noqa: E402
from runtime.detectors import Pass  # noqa: E402
from runtime.image_io import atomic_write_bytes, load_image  # noqa: E402
from training.datasets import MULTIPIE_CAM_YAW  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
CACHE = os.path.join(ROOT, "artifacts", "det_eval")
SAMPLES = os.path.join(ROOT, "samples")
SAMPLE_FACES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples_faces.json")
MP30_HELDOUT = [f"{i:03d}" for i in range(44, 50)]
MP137_HELDOUT = [f"{i:03d}" for i in range(325, 347)]

# Every pass evaluated; names say backend, view (min side s, pad p) and mirror (m). Raw-score
# floors are low on purpose: thresholds are swept in the report.
PASSES = {
    "bf-short": Pass("blazeface-short", score=0.3, params={"score": 0.3}),
    "bf-short-p25": Pass("blazeface-short", max_side=256, pad=0.25, score=0.3, params={"score": 0.3}),
    "bf-short-p50": Pass("blazeface-short", max_side=256, pad=0.5, score=0.3, params={"score": 0.3}),
    "bf-full": Pass("blazeface-full", max_side=384, score=0.3, params={"score": 0.3}),
    "bf-full-p25": Pass("blazeface-full", max_side=384, pad=0.25, score=0.3, params={"score": 0.3}),
    "bf-full-p50": Pass("blazeface-full", max_side=384, pad=0.5, score=0.3, params={"score": 0.3}),
    "bf-back": Pass("blazeface-back", score=0.3, params={"score": 0.3}),
    "bf-back-p25": Pass("blazeface-back", max_side=512, pad=0.25, score=0.3, params={"score": 0.3}),
    "mtcnn": Pass("mtcnn", max_side=640, params={"thresholds": (0.6, 0.6, 0.5)}),
    "mtcnn-p25": Pass("mtcnn", max_side=640, pad=0.25, params={"thresholds": (0.6, 0.6, 0.5)}),
    "mtcnn-s320-p25": Pass("mtcnn", min_side=320, max_side=640, pad=0.25, params={"thresholds": (0.6, 0.6, 0.5)}),
    "mtcnn-p25m": Pass("mtcnn", max_side=640, pad=0.25, mirror=True, params={"thresholds": (0.6, 0.6, 0.5)}),
    "haarprof-p25m": Pass("haar-profile", max_side=640, pad=0.25, mirror=True, params={"min_neighbors": 2}),
    "haarprof-s240-p25m": Pass("haar-profile", min_side=240, max_side=640, pad=0.25, mirror=True,
                               params={"min_neighbors": 2}),
    "haarfront-p25": Pass("haar-frontal", max_side=640, pad=0.25, params={"min_neighbors": 2}),
    "hog-s240-p25": Pass("hog", min_side=240, max_side=640, pad=0.25, score=-0.5, params={"adjust": -0.5}),
    "hog-s320-p25": Pass("hog", min_side=320, max_side=640, pad=0.25, score=-0.5, params={"adjust": -0.5}),
    "mmod-s256-p25": Pass("mmod", min_side=256, max_side=256, pad=0.25),
    # Measured (artifacts/det_eval cache, benchmarks/results) with FaceAnalyzer("cascade") of main 19ac9cd:
    # HOG, else BlazeFace short-range, else dlib CNN. That code is gone: the stored figures stay for
    # comparison; collecting this pass again fails ("unknown detector backend").
    "old-cascade": Pass("analyzer-cascade"),
    "lfd-p25": Pass("libfacedetection", max_side=640, pad=0.25, score=0.3),
    "lfd-s320-p25": Pass("libfacedetection", min_side=320, max_side=640, pad=0.25, score=0.3),
}


# ---------------------------------------------------------------- data sets
def cfp400_truth(root: str) -> list[dict]:
    """One record per photo: path, kind (frontal/profile), id and the true face box.

    CFP's 30 fiducials cover the whole face on a profile, but only one half on a frontal photo
    (jaw, one eye and brow, nose line, half the mouth: points 19-22 run down the nose bridge).
    The frontal box is therefore mirrored about the nose line: from the jaw side to as far again
    past the nose. Profiles: the box of the 30 points."""
    out = []
    with open(os.path.join(root, "Data", "fiducials.csv")) as f:
        for r in csv.DictReader(f):
            p = np.array([[float(r[f"x{i}"]), float(r[f"y{i}"])] for i in range(1, 31)])
            x0, y0 = p.min(0)
            x1, y1 = p.max(0)
            kind = r["image"].split("/")[3]
            if kind == "frontal":
                nose = p[18:22, 0].mean()
                jaw = p[:9, 0].mean()
                if jaw < nose:  # jaw half on the left: mirror to the right
                    x1 = nose + (nose - x0)
                else:
                    x0 = nose - (x1 - nose)
            out.append({"key": r["image"], "path": os.path.join(root, r["image"]), "kind": kind,
                        "id": r["image"].split("/")[2], "w": int(r["width"]), "h": int(r["height"]),
                        "gt": [[float(x0), float(y0), float(x1), float(y1)]]})
    return out


def multipie_items(root: str, which: str) -> list[dict]:
    out = []
    for sid in sorted(os.listdir(root)):
        folder = os.path.join(root, sid)
        if not os.path.isdir(folder):
            continue
        for f in sorted(os.listdir(folder)):
            parts = os.path.splitext(f)[0].split("_")
            if len(parts) != 5:
                continue  # multipie137's *_tpgan.jpg are GAN outputs, not photos
            _, _, rr, cam, ll = parts
            if which == "multipie30" and (rr != "01" or ll not in ("01", "04", "07", "10", "13", "16")):
                continue
            held = sid in (MP30_HELDOUT if which == "multipie30" else MP137_HELDOUT)
            out.append({"key": f"{sid}/{f}", "path": os.path.join(folder, f), "kind": str(MULTIPIE_CAM_YAW[cam]),
                        "id": sid, "heldout": held, "gt": None})
    return out


def sample_items() -> list[dict]:
    with open(SAMPLE_FACES) as f:
        faces = json.load(f)
    return [{"key": k, "path": os.path.join(SAMPLES, k), "kind": "photo", "id": k,
             "gt": v["faces"], "labels": v.get("labels", [])} for k, v in sorted(faces.items())]


def load_set(name: str, data: str) -> list[dict]:
    if name == "cfp400":
        return cfp400_truth(os.path.join(data, "cfp400"))
    if name in ("multipie30", "multipie137"):
        return multipie_items(os.path.join(data, name), name)
    if name == "samples":
        return sample_items()
    raise SystemExit(f"error: unknown set {name}")


# ---------------------------------------------------------------- collect
def pass_by_name(name: str) -> Pass:
    if name in PASSES:
        return PASSES[name]
    for preset in D.PRESETS.values():
        for p in preset:
            if p.name == name:
                return p
    raise SystemExit(f"error: unknown pass {name} (known: {sorted(PASSES)})")


def cache_path(set_name: str, pass_name: str) -> str:
    return os.path.join(CACHE, "raw", set_name, f"{pass_name}.json")


def collect(set_name: str, items: list[dict], pass_names: list[str], every: int = 1, progress: bool = True):
    from tqdm import tqdm

    items = items[::every]
    cv2.setNumThreads(1)  # one core per run: times comparable between backends
    imgs = {}
    for name in pass_names:
        p = pass_by_name(name)
        path = cache_path(set_name, name)
        done = {}
        if os.path.exists(path):
            with open(path) as f:
                done = json.load(f)["items"]
        todo = [it for it in items if it["key"] not in done]
        if not todo:
            continue
        runner = D.PassRunner(p, threads=1)
        first = load_image(todo[0]["path"]).rgb
        runner(first)  # warm-up: lazy loads and first allocations are not timed
        t_save = time.time()
        for it in tqdm(todo, desc=f"{set_name}/{name}", disable=not progress, unit="img", mininterval=10):
            rgb = imgs.get(it["key"])
            if rgb is None:
                rgb = load_image(it["path"]).rgb
                if len(imgs) < 6000:
                    imgs[it["key"]] = rgb
            t0, c0 = time.perf_counter(), time.process_time()
            found = runner(rgb)
            ms, cpu = 1000 * (time.perf_counter() - t0), 1000 * (time.process_time() - c0)
            done[it["key"]] = {"boxes": [[round(float(v), 2) for v in b] + [round(s, 4)] for b, s in found],
                               "ms": round(ms, 2), "cpu_ms": round(cpu, 2)}
            if time.time() - t_save > 120:
                _save(path, p, done)
                t_save = time.time()
        _save(path, p, done)


def _save(path, p: Pass, done: dict):
    cfg = {"kind": p.kind, "min_side": p.min_side, "max_side": p.max_side, "pad": p.pad, "mirror": p.mirror,
           "score": p.score, "params": {k: list(v) if isinstance(v, tuple) else v for k, v in p.params.items()}}
    atomic_write_bytes(path, json.dumps({"pass": cfg, "items": done}).encode())


def load_raw(set_name: str, pass_name: str) -> dict | None:
    path = cache_path(set_name, pass_name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)["items"]


# ---------------------------------------------------------------- scoring
def side(b) -> float:
    return math.sqrt(max(b[2] - b[0], 1e-6) * max(b[3] - b[1], 1e-6))


def is_hit(d, g, lo: float = 0.5, hi: float = 2.0) -> bool:
    cx, cy = (g[0] + g[2]) / 2, (g[1] + g[3]) / 2
    return d[0] <= cx <= d[2] and d[1] <= cy <= d[3] and lo <= side(d) / side(g) <= hi


def overlaps(d, g) -> bool:
    return min(d[2], g[2]) > max(d[0], g[0]) and min(d[3], g[3]) > max(d[1], g[1])


def score_image(boxes: list, gts: list) -> dict:
    """boxes: [[x0,y0,x1,y1,...]]; gts: true face boxes. Which faces were hit; extra boxes."""
    used, hit = set(), []
    for g in gts:
        h = next((i for i, b in enumerate(boxes) if i not in used and is_hit(b, g)), None)
        hit.append(h is not None)
        if h is not None:
            used.add(h)
    extra = [i for i in range(len(boxes)) if i not in used]
    off = [i for i in extra if not any(overlaps(boxes[i], g) for g in gts)]
    return {"hit": hit, "extra": extra, "off": off}


def plausible_multipie(b, n=128) -> bool:
    """No true box for Multi-PIE crops: a face is a box centred inside the crop, 0.2-1.0x its side."""
    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    return 0 <= cx <= n and 0 <= cy <= n and 0.2 * n <= side(b) <= 1.0 * n


def fit_box_fix(items, raw) -> tuple[float, float, float]:
    """Median (dx, dy, scale) that moves this pass's boxes onto the true face square, per kind, averaged."""
    per_kind = defaultdict(list)
    for it in items:
        r = raw.get(it["key"])
        if not r:
            continue
        g = it["gt"][0]
        hits = [b for b in r["boxes"] if is_hit(b, g)]
        if not hits:
            continue
        b = max(hits, key=lambda b: b[4])
        s = side(b)
        per_kind[it["kind"]].append(((g[0] + g[2] - b[0] - b[2]) / 2 / s, (g[1] + g[3] - b[1] - b[3]) / 2 / s, side(g) / s))
    meds = [np.median(np.array(v), 0) for v in per_kind.values() if len(v) >= 20]
    if not meds:
        return (0.0, 0.0, 1.0)
    m = np.mean(meds, 0)
    return (round(float(m[0]), 3), round(float(m[1]), 3), round(float(m[2]), 3))


def fit_logistic(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """P(hit | raw score) = sigmoid(a x + b), Newton's method with a little L2."""
    if len(set(y.tolist())) < 2:
        return (1.0, 0.0)
    mu, sd = x.mean(), x.std() + 1e-9
    z = (x - mu) / sd
    w = np.zeros(2)
    X = np.c_[z, np.ones_like(z)]
    for _ in range(50):
        p = 1 / (1 + np.exp(-X @ w))
        g = X.T @ (p - y) + 1e-3 * w
        H = X.T @ (X * (p * (1 - p))[:, None]) + 1e-3 * np.eye(2)
        w -= np.linalg.solve(H, g)
    a = w[0] / sd
    return (round(float(a), 4), round(float(w[1] - a * mu), 4))


def fit_score_fix(items, raw, fix) -> tuple[float, float]:
    xs, ys = [], []
    for it in items:
        r = raw.get(it["key"])
        if not r:
            continue
        g = it["gt"][0]
        for b in r["boxes"]:
            fb = D.square_fix(b[:4], fix)
            if is_hit(b, g):
                xs.append(b[4]), ys.append(1.0)
            elif not overlaps(fb, g):
                xs.append(b[4]), ys.append(0.0)
    return fit_logistic(np.array(xs, float), np.array(ys, float)) if xs else (1.0, 0.0)


def pass_boxes(raw_item, thr: float, fix=None) -> list:
    out = []
    for b in raw_item["boxes"]:
        if b[4] < thr:
            continue
        out.append(list(D.square_fix(b[:4], fix)) + [b[4]] if fix else b)
    return out


def combo_boxes(raws: dict, key: str, thrs: dict, iou: float, contain: float | None = 0.5) -> tuple[list, float]:
    """The merged candidates of passes ``thrs`` (name -> raw threshold) on one image; summed ms."""
    per_pass, ms = {}, 0.0
    for name, thr in thrs.items():
        r = raws[name].get(key)
        if r is None:
            return None, 0.0
        ms += r["ms"]
        per_pass[name] = [(D.square_fix(b[:4], D.BOX_FIX.get(name, (0, 0, 1))), b[4]) for b in r["boxes"] if b[4] >= thr]
    kinds = {n: pass_by_name(n).kind for n in thrs}
    dets = [(b, D.norm_score(n if n in D.SCORE_FIX else kinds[n], s), n, s) for n, f in per_pass.items() for b, s in f]
    cands = D.merge(dets, iou, contain)
    return [list(c.box) + [c.score, c.detectors] for c in cands], ms


def evaluate(items, boxes_of, multipie=False) -> dict:
    """Recall per kind, photos with extra / off-face boxes, median ms; boxes_of(item) -> (boxes, ms)."""
    agg = defaultdict(lambda: {"n": 0, "hit": 0, "extra": 0, "off": 0})
    mss = []
    for it in items:
        boxes, ms = boxes_of(it)
        if boxes is None:
            continue
        mss.append(ms)
        kinds = [it["kind"]] + (["heldout"] if it.get("heldout") else [])
        for k in kinds:
            a = agg[k]
            if multipie:
                ok = [b for b in boxes if plausible_multipie(b)]
                a["n"] += 1
                a["hit"] += bool(ok)
                a["extra"] += len(boxes) > 1
            else:
                s = score_image(boxes, it["gt"])
                a["n"] += len(it["gt"])
                a["hit"] += sum(s["hit"])
                a["extra"] += bool(s["extra"])
                a["off"] += bool(s["off"])
    out = {k: dict(v) for k, v in agg.items()}
    out["median_ms"] = round(float(np.median(mss)), 2) if mss else None
    out["mean_ms"] = round(float(np.mean(mss)), 2) if mss else None
    out["images"] = len(mss)
    return out


def pct(a, key="hit"):
    return f"{100 * a[key] / a['n']:.1f}" if a and a["n"] else "-"


# ---------------------------------------------------------------- report
def default_thresholds() -> dict:
    """Raw-score threshold per pass for the report (the detectors' usual operating points, lowered
    a little for recall: the verification stage removes false positives)."""
    t = {}
    for name, p in PASSES.items():
        t[name] = {"blazeface-short": 0.5, "blazeface-full": 0.5, "blazeface-back": 0.5, "mtcnn": 0.7,
                   "haar-profile": 0.0, "haar-frontal": 0.0, "hog": 0.0, "mmod": 0.0,
                   "libfacedetection": 0.5, "analyzer-cascade": -99.0}[p.kind]
    return t


def short_name(pass_name: str) -> str:
    return pass_name.replace("bf-", "").split("-")[0]


def contact_sheet(entries, path, tile=96, cols=10, title=None):
    """entries: (image path, box, label). Each box with a 25 % margin, its outline drawn."""
    tiles = []
    for p, b, label in entries:
        rgb = load_image(p).rgb
        s = side(b)
        m = 0.25 * s
        x0, y0, x1, y1 = b[0] - m, b[1] - m, b[2] + m, b[3] + m
        M = np.array([[tile / (x1 - x0), 0, -x0 * tile / (x1 - x0)], [0, tile / (y1 - y0), -y0 * tile / (y1 - y0)]])
        t = cv2.warpAffine(rgb, M, (tile, tile), borderValue=(0, 0, 0))
        q = np.array([b[0], b[1], b[2], b[3]]) * M[0, 0] + np.array([M[0, 2], M[1, 2], M[0, 2], M[1, 2]])
        cv2.rectangle(t, (int(q[0]), int(q[1])), (int(q[2]), int(q[3])), (0, 255, 0), 1)
        cv2.putText(t, label[:14], (2, tile - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.32, (255, 255, 0), 1, cv2.LINE_AA)
        tiles.append(t)
    if not tiles:
        return
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    sheet = np.vstack([np.hstack(tiles[i:i + cols]) for i in range(0, len(tiles), cols)])
    ok, buf = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    atomic_write_bytes(path, buf.tobytes())


def draw_samples(items, boxes_of, path):
    """The bundled photos, each scaled to 800 px: true faces in blue, candidates in green (hit) or red."""
    panels = []
    for it in items:
        rgb = load_image(it["path"]).rgb.copy()
        boxes, _ = boxes_of(it)
        s = 800 / max(rgb.shape[:2])
        img = cv2.resize(rgb, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        for g in it["gt"]:
            cv2.rectangle(img, tuple(int(v * s) for v in g[:2]), tuple(int(v * s) for v in g[2:4]), (0, 0, 255), 2)
        for b in boxes or []:
            ok = any(is_hit(b, g) for g in it["gt"])
            cv2.rectangle(img, tuple(int(v * s) for v in b[:2]), tuple(int(v * s) for v in b[2:4]),
                          (0, 220, 0) if ok else (255, 0, 0), 2)
            lab = "+".join(short_name(n) for n in b[5]) if len(b) > 5 else f"{b[4]:.2f}"
            cv2.putText(img, lab, (int(b[0] * s), max(12, int(b[1] * s) - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (255, 255, 0), 1, cv2.LINE_AA)
        panel = np.zeros((800, 800, 3), np.uint8)
        panel[:img.shape[0], :img.shape[1]] = img
        panels.append(panel)
    while len(panels) % 3:
        panels.append(np.zeros_like(panels[0]))
    sheet = np.vstack([np.hstack(panels[i:i + 3]) for i in range(0, len(panels), 3)])
    ok, buf = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    atomic_write_bytes(path, buf.tobytes())
