"""Crop a raw photo folder to face crops: ``python -m training.prepare SRC DST``.

Every image under SRC goes through ``runtime.detect.FaceAnalyzer`` (one per worker
process) and its largest face is written to DST under the same relative path (HEIC/AVIF:
with ``.png`` added, ``crop_name``), as a
``--size`` square crop framed like the training data (the model metadata's default
crop_scale / crop_shift_y). Bad files never stop the run: each is listed in the report
with a one-line reason.

Resuming: a crop that already exists in DST is not redone, and a file that failed in
an earlier run (recorded in ``DST/prepare_journal.jsonl``) is not retried unless
``--retry-failed``. Crops and reports are written atomically, so a crash leaves either
the whole file or none.

Outputs besides the crops: ``prepare_report.json`` / ``.md`` (per yaw of the naming
scheme: images, faces found, rate; the failures; images with several faces),
``prepare_report.png`` (faces found per yaw), and ``manifest.json``
(``training.datasets.build_manifest`` on DST) unless ``--no-manifest``.
"""
from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import re
import sys
import time
import warnings
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from runtime.errors import FrontalizeError, shown
from runtime.image_io import (atomic_write_bytes, atomic_write_image, load_image, lost_reason, output_lost,
                              release_memory)
from runtime.model_meta import default_meta

from .datasets import IMAGE_EXTS, PARSERS, generic_parser

JOURNAL = "prepare_journal.jsonl"
REPORT = "prepare_report"
_TMP = re.compile(r"\.tmp\d+$")  # leftovers of atomic_write_bytes killed mid-write

_ANALYZER = None  # one FaceAnalyzer per worker process


def _die_with_parent() -> None:
    """In a worker: exit when the parent process dies, even by SIGKILL (nothing else would tell
    us). Linux: prctl(PR_SET_PDEATHSIG, SIGKILL); everywhere: a thread polling os.getppid()."""
    import signal
    import threading

    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def init_worker(settings: dict, worker: bool = False) -> None:
    global _ANALYZER
    if worker:
        _die_with_parent()
    from runtime.detect import FaceAnalyzer
    from runtime.image_io import captured_stderr, keep_errors

    said: list[str] = []
    try:
        with captured_stderr(said):  # LiteRT's INFO line, once per worker
            _ANALYZER = FaceAnalyzer(detector=settings["detector"], crop_size=settings["size"],
                                     min_face=settings["min_face"], threads=1)
    finally:
        keep_errors(said)


def failure_kind(message: str) -> str:
    """Short category of a one-line failure message (for the report's counts)."""
    for word, kind in (("truncated", "truncated"), ("empty file", "empty"), ("too large", "too large"),
                       ("smaller than", "face too small"), ("no face", "no face")):
        if word in message:
            return kind
    return "unreadable"


def crop_one(src: str, dst: str, rel: str) -> dict:
    """Crop the largest face of ``src`` into ``dst``; a result row, never an exception."""
    row = {"path": rel, "ok": False}
    try:
        img = load_image(src)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # BlazeFace's exp overflow on far-off logits
            faces, notes = _ANALYZER.analyze(img.rgb)
        if not faces:
            why = "; ".join(notes) if notes else "no face found"
            raise FrontalizeError(f"no face: {why}" if notes else why)
        face = faces[0]  # largest first
        atomic_write_image(dst, face.crop, make_dirs=False)  # prepare() made the folders: one gone is an error
        row.update(ok=True, faces=len(faces), detector=face.detector, yaw_est=round(face.yaw, 1),
                   score=round(face.score, 3), face_px=round(face.size / img.scale))
    except FrontalizeError as e:
        row["reason"] = str(e).replace(src + ": ", "").splitlines()[0]
    except OSError as e:
        if output_lost(e, os.path.dirname(dst)):
            raise  # a full disk or a vanished DST: prepare() stops the run
        row["reason"] = f"OSError: {e}"[:300]
    except Exception as e:  # a bug or a library error on one file must not stop the batch
        row["reason"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
    if not row["ok"]:
        row["kind"] = failure_kind(row["reason"])
    release_memory()
    return row


def crop_name(rel: str) -> str:
    """The crop's path in DST: the photo's own, with ``.png`` added to formats OpenCV cannot write
    (a phone's ``a.heic`` -> ``a.heic.png``, so it never clashes with an ``a.png`` beside it)."""
    return rel + ".png" if os.path.splitext(rel)[1].lower() in (".heic", ".heif", ".hif", ".avif") else rel


class OutputLost(Exception):
    """DST's disk or quota is full, its filesystem read-only, or DST vanished: the run stops (exit 4)."""


def list_images(root: str, exclude: str | None = None) -> tuple[list[str], int]:
    """Relative paths of files with an image extension (sorted), and how many other files were ignored.

    ``exclude``: a folder not to walk into (DST when it lies inside SRC).
    """
    rels, other = [], 0
    exclude = os.path.abspath(exclude) if exclude else None
    seen = set()
    for dirpath, dirs, files in os.walk(root, followlinks=True):  # symlinked data folders are common
        real = os.path.realpath(dirpath)
        if real in seen:  # a link loop, or the same folder twice
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if os.path.abspath(os.path.join(dirpath, d)) != exclude)
        for f in files:
            if os.path.splitext(f)[1].lower() in IMAGE_EXTS:
                rels.append(os.path.relpath(os.path.join(dirpath, f), root))
            else:
                other += 1
    return sorted(rels), other


def read_journal(path: str) -> dict[str, dict]:
    rows = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                    rows[row["path"]] = row
                except (ValueError, KeyError):
                    pass  # a line cut by a crash
    return rows


def _remove_tmp_leftovers(dst: str) -> None:
    for dirpath, _, files in os.walk(dst):
        for f in files:
            if _TMP.search(f):
                try:
                    os.remove(os.path.join(dirpath, f))
                except OSError:
                    pass


def summarize(rows: list[dict], yaw_of) -> dict:
    """Per-yaw counts, failures and multi-face images from the result rows."""
    per = defaultdict(lambda: {"images": 0, "faces": 0})
    for r in rows:
        y = yaw_of(r["path"])
        per[y]["images"] += 1
        per[y]["faces"] += int(r["ok"])
    table = []
    for y in sorted(per, key=lambda v: (v is None, v if v is not None else 0)):
        d = per[y]
        table.append({"yaw": y, "images": d["images"], "faces": d["faces"],
                      "rate": round(d["faces"] / d["images"], 4) if d["images"] else 0.0})
    failures = [{"path": r["path"], "kind": r["kind"], "reason": r["reason"]} for r in rows if not r["ok"]]
    kinds = defaultdict(int)
    for f in failures:
        kinds[f["kind"]] += 1
    ok = sum(r["ok"] for r in rows)
    return {"images": len(rows), "faces": ok, "failed": len(failures),
            "rate": round(ok / len(rows), 4) if rows else 0.0, "per_yaw": table,
            "failure_kinds": dict(sorted(kinds.items())), "failures": failures,
            "several_faces": [{"path": r["path"], "faces": r["faces"]} for r in rows
                              if r["ok"] and (r.get("faces") or 1) > 1]}


def report_markdown(rep: dict) -> str:
    lines = [f"# prepare report: {rep['src']} -> {rep['dst']}", "",
             f"{rep['images']} images, {rep['faces']} crops written ({100 * rep['rate']:.1f} %), "
             f"{rep['failed']} failed; detector `{rep['settings']['detector']}`, {rep['settings']['size']} px crops, "
             f"scheme `{rep['settings']['scheme']}`. This run: {rep['run']['processed']} processed, "
             f"{rep['run']['resumed']} resumed from an earlier run, {rep['run']['seconds']:.1f} s.", "",
             "| yaw (deg) | images | faces found | rate |", "|---:|---:|---:|---:|"]
    for r in rep["per_yaw"]:
        yaw = "unlabelled" if r["yaw"] is None else f"{r['yaw']:+d}" if r["yaw"] else "0"
        lines.append(f"| {yaw} | {r['images']} | {r['faces']} | {100 * r['rate']:.1f} % |")
    if rep["failures"]:
        lines += ["", "## Failures", "", ", ".join(f"{k}: {n}" for k, n in rep["failure_kinds"].items()), ""]
        lines += [shown(f"- `{f['path']}`: {f['reason']}") for f in rep["failures"]]
    if rep["several_faces"]:
        lines += ["", "## Several faces (the largest was cropped)", ""]
        lines += [shown(f"- `{f['path']}`: {f['faces']} faces") for f in rep["several_faces"]]
    return "\n".join(lines) + "\n"


def plot_per_yaw(rep: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = rep["per_yaw"]
    labels = ["?" if r["yaw"] is None else f"{r['yaw']:+d}" if r["yaw"] else "0" for r in rows]
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(rows) + 2), 3.2), dpi=100)
    ax.bar(labels, [r["images"] for r in rows], color="#dddddd", label="images")
    ax.bar(labels, [r["faces"] for r in rows], color="#3570b0", label="faces found")
    ax.set_xlabel("yaw (deg)")
    ax.set_ylabel("images")
    ax.set_title(f"Faces found per yaw: {rep['faces']} of {rep['images']} images")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def prepare(src: str, dst: str, scheme: str = "multipie", pattern: str | None = None, workers: int = 1,
            detector: str = "default", size: int = 128, min_face: int = 24, manifest: bool = True,
            retry_failed: bool = False, progress: bool = True) -> dict:
    """Crop every image of ``src`` into ``dst``; returns the report dict (also written to ``dst``)."""
    from tqdm import tqdm

    if not os.path.isdir(src):
        raise FrontalizeError(f"{src}: no such folder")
    if os.path.abspath(src) == os.path.abspath(dst):
        raise FrontalizeError("SRC and DST must differ (crops would overwrite the photos)")
    settings = {"scheme": scheme, "pattern": pattern, "detector": detector, "size": size, "min_face": min_face,
                "crop_rule": default_meta("geo")["crop_rule"]}
    parse = generic_parser(pattern) if scheme == "generic" else PARSERS[scheme]

    def yaw_of(rel):
        r = parse(rel)
        return r.yaw if r else None

    os.makedirs(dst, exist_ok=True)
    _remove_tmp_leftovers(dst)
    rels, other = list_images(src, exclude=dst)
    journal_path = os.path.join(dst, JOURNAL)
    journal = read_journal(journal_path)
    done, todo = {}, []
    for rel in rels:
        prev = journal.get(rel)
        if os.path.exists(os.path.join(dst, crop_name(rel))):
            done[rel] = prev if prev and prev["ok"] else {"path": rel, "ok": True, "faces": None}
        elif prev and not prev["ok"] and not retry_failed:
            done[rel] = prev
        else:
            todo.append(rel)

    t0 = time.time()
    results = dict(done)
    bar = tqdm(total=len(rels), initial=len(done), unit="img", desc="prepare", disable=not progress,
               dynamic_ncols=True)
    jf = open(journal_path, "a")
    try:
        for d in sorted({os.path.dirname(os.path.join(dst, crop_name(r))) for r in todo}):
            os.makedirs(d, exist_ok=True)

        def record(row):
            results[row["path"]] = row
            jf.write(json.dumps(row) + "\n")
            jf.flush()  # one line per image: a crash loses at most the line being written
            bar.update(1)

        jobs = [(os.path.join(src, r), os.path.join(dst, crop_name(r)), r) for r in todo]
        if workers <= 1 or len(jobs) <= 1:
            if jobs:
                init_worker(settings)
            for job in jobs:
                record(crop_one(*job))
        else:
            # spawn, not fork: forking a process whose OpenCV/LiteRT thread pools already run
            # (e.g. a caller that used FaceAnalyzer) can deadlock the children on a held lock.
            pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                                       initializer=init_worker, initargs=(settings, True))
            try:
                futures = [pool.submit(crop_one, *job) for job in jobs]
                for fut in as_completed(futures):
                    record(fut.result())
            except BrokenProcessPool:
                # A worker died (e.g. killed for memory); what finished is kept and journaled.
                bar.close()
                raise FrontalizeError(f"a worker process died after {len(results) - len(done)} of {len(jobs)} "
                                      f"images; run the same command again to resume") from None
            finally:
                pool.shutdown(cancel_futures=True)  # on Ctrl-C: stop now, not after the queued images
    except OSError as e:
        if not output_lost(e, dst):
            raise
        # a crop on disk counts as done on the next run (by its file), journaled or not
        bar.close()
        n = len(results) - len(done)
        raise OutputLost(f"{e.filename or dst}: {lost_reason(e, dst)}; "
                         f"stopped after {n} of {len(jobs)} images; free space and run the same command again "
                         f"to resume") from None
    finally:
        try:
            jf.close()
        except OSError:  # its last line could not be flushed to a full disk
            pass
    bar.close()

    rows = [results[r] for r in rels]
    rep = {"src": os.path.abspath(src), "dst": os.path.abspath(dst), "settings": settings,
           "run": {"processed": len(todo), "resumed": len(done), "seconds": round(time.time() - t0, 2),
                   "workers": workers, "other_files_ignored": other}}
    rep.update(summarize(rows, yaw_of))

    chart = os.path.join(dst, REPORT + ".png")
    if os.path.exists(chart):
        os.remove(chart)  # else the manifest scan would count it as an unmatched image
    if manifest:
        from .datasets import build_manifest, write_manifest

        try:
            m = build_manifest(dst, scheme, pattern)
            write_manifest(m, os.path.join(dst, "manifest.json"))
            rep["manifest"] = {k: len(v) for k, v in m["pairs"].items()}
        except ValueError as e:
            rep["manifest"] = f"not written: {e}"
    # ASCII JSON (undecodable file-name bytes as \\udcXX escapes); Markdown escaped to printable lines
    atomic_write_bytes(os.path.join(dst, REPORT + ".json"), json.dumps(rep, indent=1).encode("ascii"))
    atomic_write_bytes(os.path.join(dst, REPORT + ".md"), report_markdown(rep).encode("utf-8", "backslashreplace"))
    if rows:
        atomic_write_bytes(chart, plot_per_yaw(rep))
    return rep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="frontalize-prepare", description=__doc__.split("\n\n")[0],
                                 epilog="Exit code: 0 done (bad files are listed in the report, not fatal), 2 usage "
                                        "error or a worker died (rerun to resume), 3 internal error, 4 DST's disk filled up or DST "
                                        "vanished (rerun to resume), 130 interrupted.")
    ap.add_argument("src", help="folder of raw photos (walked recursively)")
    ap.add_argument("dst", help="output folder: crops under the same relative paths, reports, manifest")
    ap.add_argument("--scheme", choices=["multipie", "kface", "generic"], default="multipie",
                    help="file naming, for the yaw of each image and the manifest")
    ap.add_argument("--pattern", help="regex for --scheme generic, named groups id, yaw (and key)")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="processes")
    ap.add_argument("--detector", choices=["default", "fast"], default="default")
    ap.add_argument("--size", type=int, default=128, help="crop side in pixels")
    ap.add_argument("--min-face", type=int, default=24, help="smaller detected faces are skipped (px)")
    ap.add_argument("--retry-failed", action="store_true", help="retry files that failed in an earlier run")
    ap.add_argument("--no-manifest", action="store_true", help="do not write DST/manifest.json")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    if a.scheme == "generic" and not a.pattern:
        ap.error("--scheme generic needs --pattern")
    try:
        rep = prepare(a.src, a.dst, a.scheme, a.pattern, a.workers, a.detector, a.size,
                      a.min_face, not a.no_manifest, a.retry_failed, not a.no_progress)
    except (FrontalizeError, ValueError) as e:
        print(shown(f"error: {e}"), file=sys.stderr)
        return 2
    except OutputLost as e:
        print(shown(f"error: {e}"), file=sys.stderr)
        return 4
    except KeyboardInterrupt:
        print("\ninterrupted: crops written so far are kept; run the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: one line, its own exit code; the journal keeps what was done
        print(shown(f"error: internal error ({type(e).__name__}: {str(e).strip()[:300]})"), file=sys.stderr)
        return 3
    print(shown(f"{rep['images']} images ({rep['run']['resumed']} done in an earlier run): {rep['faces']} crops, "
                f"{rep['failed']} failed -> {os.path.join(a.dst, REPORT + '.md')}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
