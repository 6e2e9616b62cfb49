"""Report, timing and candidate export of the detection rates of benchmarks/detection_rate.py, and the
command line of both (see detection_rate's docstring):
``python -m benchmarks.detection_report {collect,report,timing,candidates}``."""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
import warnings

import cv2
import numpy as np

from benchmarks import detection_rate as R
from runtime import detectors as D
from runtime.image_io import atomic_write_bytes, load_image
from training.datasets import DEFAULT_DATA_ROOT

FIT_IDS = {f"{i:03d}" for i in range(1, 351)}  # cfp400 folds 01-07 fit box/score conventions


def fits(cfp, names):
    """Box convention and score calibration of each pass, fitted on cfp400 ids 001-350."""
    fit_items = [it for it in cfp if it["id"] in FIT_IDS]
    box, score = {}, {}
    for n in names:
        raw = R.load_raw("cfp400", n)
        if raw is None:
            continue
        box[n] = R.fit_box_fix(fit_items, raw)
        score[n] = R.fit_score_fix(fit_items, raw, box[n])
    return box, score


def single(items, raw, thr, multipie=False):
    return R.evaluate(items, lambda it: (R.pass_boxes(raw[it["key"]], thr), raw[it["key"]]["ms"])
                      if it["key"] in raw else (None, 0), multipie)


def combo(items, raws, thrs, iou, multipie=False, contain=0.5):
    return R.evaluate(items, lambda it: R.combo_boxes(raws, it["key"], thrs, iou, contain), multipie)


def fmt_row(name, e, kinds, ms_key="median_ms"):
    cells = [f"{R.pct(e.get(k))} ({e[k]['n'] - e[k]['hit']} missed)" if k in e else "-" for k in kinds]
    ex = sum(e[k]["extra"] for k in kinds if k in e)
    off = sum(e[k]["off"] for k in kinds if k in e)
    n = sum(e[k]["n"] for k in kinds if k in e)
    return (f"| {name} | " + " | ".join(cells) + f" | {100 * ex / max(n, 1):.1f} | {100 * off / max(n, 1):.1f} | "
            f"{e[ms_key]} |")


def greedy(items, raws, thrs, iou, start, pool, steps=5):
    """Forward selection: add the pass that removes the most misses (frontal + profile)."""
    chosen, log = list(start), []
    for _ in range(steps):
        best = None
        for n in pool:
            if n in chosen:
                continue
            e = combo(items, raws, {k: thrs[k] for k in chosen + [n]}, iou)
            miss = sum(e[k]["n"] - e[k]["hit"] for k in ("frontal", "profile"))
            if best is None or miss < best[0]:
                best = (miss, n, e)
        if best is None:
            break
        chosen.append(best[1])
        log.append((list(chosen), best[2]))
    return log


def report(a) -> int:
    cfp = R.load_set("cfp400", a.data)
    names = [n for n in list(R.PASSES) + [p.name for ps in D.PRESETS.values() for p in ps]
             if R.load_raw("cfp400", n) is not None]
    names = list(dict.fromkeys(names))
    box, score = fits(cfp, names)
    D.BOX_FIX.update(box)
    D.SCORE_FIX.update(score)
    thr = R.default_thresholds()
    for ps in D.PRESETS.values():
        for p in ps:
            thr.setdefault(p.name, p.score)
    raws = {n: R.load_raw("cfp400", n) for n in names}
    full = {n: r for n, r in raws.items() if len(r) == len(cfp)}
    lines = ["# Face candidates: recall, extra boxes, time", "",
             f"Made by `python -m benchmarks.detection_report report` on {time.strftime('%Y-%m-%d')}, "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with other jobs: "
             "ms are wall times of one thread under that load; see the timing section for 640x480 frames).", "",
             "Hit: the box contains the centre of the true face box and its side is 0.5-2x the true side "
             "(true box: CFP's 30 fiducials, mirrored about the nose line on frontals). "
             "Extra %: photos with a box besides the hit; off-face %: photos with a box not touching the true "
             "face box (a non-face or another person).", ""]
    res = {"box_fix": box, "score_fix": score, "thresholds": thr, "single": {}, "combos": {}, "multipie": {}, "samples": {}}
    kinds = ["frontal", "profile"]
    lines += ["## Each pass alone, cfp400", "", "| pass | frontal recall % | profile recall % | extra % | off-face % | median ms |",
              "|---|---:|---:|---:|---:|---:|"]
    for n in names:
        e = single(cfp, raws[n], thr[n])
        res["single"][n] = e
        sub = "" if n in full else f" (every {round(len(cfp) / len(raws[n]))}th photo)"
        if n == "old-cascade":
            sub += " (FaceAnalyzer 'cascade' before the pose rework, main 19ac9cd: HOG, else BlazeFace, else dlib CNN)"
        lines.append(fmt_row(f"{n} (>= {thr[n]}){sub}", e, kinds))
    # threshold sweeps of the main passes
    lines += ["", "## Threshold sweeps (cfp400, full set where collected)", "",
              "| pass | raw threshold | frontal % | profile % | extra % | off-face % | median ms |", "|---|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        k = R.pass_by_name(n).kind
        grid = {"mtcnn": [0.5, 0.7, 0.9], "hog": [-0.5, -0.25, 0.0, 0.25], "mmod": [0.0, 0.3, 0.6],
                "haar-profile": [0.0, 0.5, 1.0], "haar-frontal": [0.0, 0.5, 1.0]}.get(k, [0.3, 0.4, 0.5, 0.6, 0.7])
        if n not in full or k == "analyzer-cascade":
            continue
        for t in grid:
            e = single(cfp, raws[n], t)
            lines.append(fmt_row(f"{n} | {t}", e, kinds))
    # combinations on the passes collected on the full set
    combos = {name: {p.name: thr[p.name] for p in ps} for name, ps in D.PRESETS.items()
              if all(p.name in full for p in ps)}
    lines += ["", "## Combinations (merged with cv2.dnn.NMSBoxes, IoU 0.4), cfp400", "",
              "| combination | frontal recall % | profile recall % | extra % | off-face % | median ms (sum of passes) |",
              "|---|---:|---:|---:|---:|---:|"]
    for cname, thrs in combos.items():
        e = combo(cfp, raws, thrs, 0.4)
        res["combos"][cname] = {"passes": thrs, **e}
        lines.append(fmt_row(f"preset `{cname}`: " + " + ".join(thrs), e, kinds))
    pool = [n for n in full]
    if pool:
        start = [max(pool, key=lambda n: res["single"][n]["profile"]["hit"] + res["single"][n]["frontal"]["hit"])]
        lines += ["", "Greedy forward selection (each row adds the pass that removes the most misses):", "",
                  "| passes | frontal recall % | profile recall % | extra % | off-face % | median ms |",
                  "|---|---:|---:|---:|---:|---:|"]
        e0 = res["single"][start[0]]
        lines.append(fmt_row(start[0], e0, kinds))
        for chosen, e in greedy(cfp, raws, thr, 0.4, start, pool, steps=min(6, len(pool) - 1)):
            res["combos"]["greedy:" + "+".join(chosen)] = e
            lines.append(fmt_row(" + ".join(chosen), e, kinds))
        if "default" in combos:
            for bump in ((0.6, 0.6), (0.65, 0.6)):
                thrs = dict(combos["default"])
                thrs["bf-short-p25"], thrs["bf-back-p25"] = bump
                e = combo(cfp, raws, thrs, 0.4)
                lines.append(fmt_row(f"preset `default` with BlazeFace short / back thresholds {bump[0]} / {bump[1]}", e, kinds))
            e = combo(cfp, raws, combos["default"], 0.4, contain=None)
            lines.append(fmt_row("preset `default` without folding boxes that lie half inside a stronger one", e, kinds))
        for iou in (0.3, 0.5):
            for cname, thrs in combos.items():
                e = combo(cfp, raws, thrs, iou)
                lines.append(fmt_row(f"preset `{cname}`, NMS IoU {iou}", e, kinds))
    # Multi-PIE per camera
    for mp in ("multipie30", "multipie137"):
        items = R.load_set(mp, a.data)
        mraws = {n: R.load_raw(mp, n) for n in names}
        mraws = {n: r for n, r in mraws.items() if r is not None and len(r) == len(items)}
        if not mraws:
            continue
        cams = [str(y) for y in range(-90, 91, 15) if any(it["kind"] == str(y) for it in items)]
        rows = {}
        for n in mraws:
            rows[n] = single(items, mraws[n], thr[n], multipie=True)
        for cname, ps in D.PRESETS.items():
            if all(p.name in mraws for p in ps):
                rows[f"preset {cname}"] = combo(items, mraws, {p.name: thr[p.name] for p in ps}, 0.4, multipie=True)
        res["multipie"][mp] = rows
        note = " (negative yaws stored mirrored)" if mp == "multipie137" else ""
        lines += ["", f"## {mp} per camera yaw{note}: % of crops with a plausible face box", "",
                  "| pass | " + " | ".join(cams) + " | held-out ids | crops with >1 box % |",
                  "|---|" + "---:|" * (len(cams) + 2)]
        for n, e in rows.items():
            tot = sum(e[c]["n"] for c in cams)
            ex = sum(e[c]["extra"] for c in cams)
            lines.append(f"| {n} | " + " | ".join(R.pct(e.get(c)) for c in cams) +
                         f" | {R.pct(e.get('heldout'))} | {100 * ex / max(tot, 1):.1f} |")
    # samples
    items = R.load_set("samples", a.data)
    sraws = {n: R.load_raw("samples", n) for n in names}
    sraws = {n: r for n, r in sraws.items() if r is not None}
    if sraws:
        lines += ["", "## Bundled photos: faces hit (true boxes by hand, benchmarks/samples_faces.json)", "",
                  "| pass | " + " | ".join(f"{it['key']} ({len(it['gt'])})" for it in items) + " | boxes off the faces |",
                  "|---|" + "---:|" * (len(items) + 1)]
        rows = {n: (lambda it, n=n: (R.pass_boxes(sraws[n][it["key"]], thr[n]), 0)) for n in sraws}
        for cname, ps in D.PRESETS.items():
            if all(p.name in sraws for p in ps):
                rows[f"preset {cname}"] = (lambda it, ps=ps: R.combo_boxes(sraws, it["key"], {p.name: thr[p.name] for p in ps}, 0.4))
        for n, f in rows.items():
            cells, off = [], 0
            for it in items:
                boxes, _ = f(it)
                s = R.score_image(boxes, it["gt"])
                cells.append(f"{sum(s['hit'])}/{len(it['gt'])}")
                off += len(s["off"])
            res["samples"][n] = cells
            lines.append(f"| {n} | " + " | ".join(cells) + f" | {off} |")
        if "default" in D.PRESETS and all(p.name in sraws for p in D.PRESETS["default"]):
            ps = D.PRESETS["default"]
            R.draw_samples(items, lambda it: R.combo_boxes(sraws, it["key"], {p.name: thr[p.name] for p in ps}, 0.4),
                           os.path.join(R.CACHE, "samples_default.png"))
    # sheets of off-face extras and of misses, for looking at
    if "default" in combos:
        thrs = combos["default"]
        rng = random.Random(0)
        off, onface, miss = [], [], []
        for it in cfp:
            boxes, _ = R.combo_boxes(raws, it["key"], thrs, 0.4)
            s = R.score_image(boxes, it["gt"])
            for i in s["extra"]:
                e = (it["path"], boxes[i][:4], f"{it['id']}{it['kind'][0]} {'+'.join(R.short_name(x) for x in boxes[i][5])}")
                (off if i in s["off"] else onface).append(e)
            if not all(s["hit"]):
                miss.append((it["path"], it["gt"][0], f"{it['id']}{it['kind'][0]} {it['key'][-6:-4]}"))
        rng.shuffle(off)
        rng.shuffle(onface)
        R.contact_sheet(off[:100], os.path.join(R.CACHE, "offface_default.png"))
        R.contact_sheet(onface[:100], os.path.join(R.CACHE, "onface_extra_default.png"))
        R.contact_sheet(miss[:100], os.path.join(R.CACHE, "missed_default.png"))
        res["offface_boxes"] = len(off)
        res["offface_sheet"] = [e[2] for e in off[:100]]
        lines += ["", f"Extra boxes of preset `default` on cfp400: {len(off)} off the face (a random 100 in "
                  f"artifacts/det_eval/offface_default.png), {len(onface)} on it (artifacts/det_eval/onface_extra_default.png); "
                  f"missed faces ({len(miss)}): artifacts/det_eval/missed_default.png."]
    lines += ["", "Box convention fitted per pass (dx, dy, scale; `runtime.detectors.BOX_FIX`): `" + json.dumps(box) + "`",
              "", "Score calibration (a, b; `SCORE_FIX`): `" + json.dumps(score) + "`"]
    os.makedirs(a.out, exist_ok=True)
    md = "\n".join(lines) + "\n"
    atomic_write_bytes(os.path.join(a.out, "detection_rate.md"), md.encode())
    atomic_write_bytes(os.path.join(a.out, "detection_rate.json"), json.dumps(res, indent=1, default=str).encode())
    print(md)
    return 0


def frames_640x480() -> list[np.ndarray]:
    """The bundled photos as 640x480 frames (centre crop to 4:3, resize)."""
    out = []
    for it in R.sample_items():
        rgb = load_image(it["path"]).rgb
        h, w = rgb.shape[:2]
        if w / h > 4 / 3:
            cw = int(h * 4 / 3)
            rgb = rgb[:, (w - cw) // 2:(w - cw) // 2 + cw]
        else:
            ch = int(w * 3 / 4)
            rgb = rgb[(h - ch) // 2:(h - ch) // 2 + ch]
        out.append(cv2.resize(rgb, (640, 480), interpolation=cv2.INTER_AREA))
    return out


TIMED = ["bf-short", "bf-full", "bf-back", "mtcnn-p25", "hog-s240-p25", "haarprof-p25m", "mmod-s256-p25", "lfd-p25"]


def timing(reps: int = 3) -> int:
    cv2.setNumThreads(1)
    frames = frames_640x480()
    rows = []
    names = list(dict.fromkeys([p.name for ps in D.PRESETS.values() for p in ps] + TIMED))
    for n in names:
        try:
            r = D.PassRunner(R.pass_by_name(n), threads=1)
        except Exception as e:  # optional backend missing
            rows.append((n, None, None, str(e)))
            continue
        r(frames[0])
        wall, cpu = [], []
        for _ in range(reps):
            for f in frames:
                t0, c0 = time.perf_counter(), time.process_time()
                r(f)
                wall.append(1000 * (time.perf_counter() - t0))
                cpu.append(1000 * (time.process_time() - c0))
        rows.append((n, float(np.median(wall)), float(np.median(cpu)), ""))
        print(f"{n}: median {rows[-1][1]:.1f} ms wall, {rows[-1][2]:.1f} ms CPU", flush=True)
    for pname in D.PRESETS:
        det = D.CandidateDetector(pname, threads=1)
        det(frames[0])
        wall, cpu = [], []
        for _ in range(reps):
            for f in frames:
                t0, c0 = time.perf_counter(), time.process_time()
                det(f)
                wall.append(1000 * (time.perf_counter() - t0))
                cpu.append(1000 * (time.process_time() - c0))
        rows.append((f"CandidateDetector('{pname}')", float(np.median(wall)), float(np.median(cpu)), ""))
        print(f"preset {pname}: median {rows[-1][1]:.1f} ms wall, {rows[-1][2]:.1f} ms CPU", flush=True)
    load = os.getloadavg()[0]
    md = ["# Detector time per 640x480 frame", "",
          f"`python -m benchmarks.detection_report timing`, {time.strftime('%Y-%m-%d')}: the {len(frames)} bundled photos as "
          f"640x480 frames, {reps} rounds, one thread; load average {load:.1f} on {os.cpu_count()} cores while measuring.", "",
          "| pass | median ms (wall) | median ms (CPU) |", "|---|---:|---:|"]
    md += [f"| {n} | {w:.1f} | {c:.1f} |" if w is not None else f"| {n} | - | - ({e}) |" for n, w, c, e in rows]
    atomic_write_bytes(os.path.join(R.RESULTS, "detection_timing.md"), ("\n".join(md) + "\n").encode())
    print("\n".join(md))
    return 0


def candidates(a) -> int:
    """Candidates of CandidateDetector('default') for every cfp400 photo, one JSON per identity
    (written as each identity is done; identities already written are skipped)."""
    from itertools import groupby

    from tqdm import tqdm

    cv2.setNumThreads(1)
    cfp = R.load_set("cfp400", a.data)
    det = D.CandidateDetector("default", threads=1)
    os.makedirs(a.out, exist_ok=True)
    bar = tqdm(total=len(cfp), unit="img", mininterval=10)
    for sid, group in groupby(cfp, key=lambda it: it["id"]):
        group = list(group)
        path = os.path.join(a.out, f"{sid}.json")
        if os.path.exists(path):
            bar.update(len(group))
            continue
        recs = []
        for it in group:
            c = det(load_image(it["path"]).rgb)
            recs.append({
                "image": it["key"], "kind": it["kind"], "width": it["w"], "height": it["h"], "true_box": it["gt"][0],
                "candidates": [{"box": [round(float(v), 2) for v in x.box], "score": round(float(x.score), 4),
                                "detectors": list(x.detectors), "hit": bool(R.is_hit(x.box, it["gt"][0])),
                                "members": [{"detector": m[0], "box": [round(float(v), 2) for v in m[1]],
                                             "raw_score": round(float(m[2]), 4)} for m in x.members]} for x in c]})
            bar.update(1)
        atomic_write_bytes(path, json.dumps(recs).encode())
    bar.close()
    meta = {"detector": "CandidateDetector('default')",
            "passes": [p.name for p in D.PRESETS["default"]], "box_fix": D.BOX_FIX, "score_fix": D.SCORE_FIX,
            "box": "candidate box: a square in the common convention (the face from brow to chin, see "
                   "runtime/detectors.py BOX_FIX); members: each pass's box (same convention) and raw score",
            "hit_rule": "box contains the true box centre and sqrt(area) is 0.5-2x the true side",
            "true_box": "CFP fiducial box, mirrored about the nose line on frontal photos", "photos": len(cfp)}
    atomic_write_bytes(os.path.join(a.out, "README.json"), json.dumps(meta, indent=1).encode())
    print(f"{len(cfp)} photos -> {a.out}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.detection_report", description=R.__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--set", required=True, choices=["cfp400", "multipie30", "multipie137", "samples"])
    c.add_argument("--passes", nargs="+", required=True)
    c.add_argument("--every", type=int, default=1, help="every k-th image only (quick looks)")
    r = sub.add_parser("report")
    r.add_argument("--out", default=R.RESULTS)
    sub.add_parser("timing")
    cd = sub.add_parser("candidates")
    cd.add_argument("--out", default=os.path.join(R.ROOT, "artifacts", "det_candidates"))
    ap.add_argument("--data", default=DEFAULT_DATA_ROOT)
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore", RuntimeWarning)
    if a.cmd == "collect":
        R.collect(a.set, R.load_set(a.set, a.data), a.passes, a.every)
        return 0
    if a.cmd == "timing":
        return timing()
    if a.cmd == "candidates":
        return candidates(a)
    return report(a)


if __name__ == "__main__":
    sys.exit(main())
