"""``frontalize`` CLI: photos in, one predicted frontal face per detected face out.

    frontalize photo.jpg folder/ "shots/*.png" clip.mp4 --out out/front [--sheet] [--model M.onnx]
    frontalize --source rtsp://cam/stream --max-frames 100 --json

Inputs (positional or ``--source``, as in ultralytics' ``source=``; see ``runtime.sources``): image
files, folders (searched recursively for image files), glob patterns, video files (every
``--vid-stride``-th frame; one row per face per frame, ``<name>_f<frame>_face<k>.png``), a webcam
index (``0``), a stream URL (rtsp/rtmp/http...) or a GStreamer pipeline ending in ``appsink``.
A source that cannot be opened is an error row with one line saying why. ``--json`` prints one
JSON line per face to stdout as it goes; the progress bar (stderr) shows on inputs that take more than
a second. For each
face: ``<name>_face<k>.png`` (the frontal prediction, k = 0 for the largest face) and, with
``--sheet``, ``<name>_face<k>_sheet.png`` (input with the box | crop | frontal). ``<name>`` is
the file's stem (for files found in a folder: its path inside that folder, '/' -> '__');
clashes get ``-2``, ``-3``... ``results.csv`` and ``results.json`` list every file and face:
box (file pixels), yaw, detector, output path, status (ok | no_face | error) and the one-line
reason. An unreadable file or one without a face is reported and skipped, never fatal.
``--resume`` keeps the rows of an earlier run in ``--out`` whose outputs exist and skips those files;
rows are also appended (fsync'd) per file to ``results.journal.jsonl`` while the run goes on, so a
run killed at any moment (SIGKILL, power loss) resumes from there; SIGTERM is handled like Ctrl-C
(results so far are written). Temp files a killed run left in ``--out`` are removed.

Exit code: 0 when at least one file gave a frontal face, 1 when none did (all unreadable or
without a face, or no input matched), 2 for a model or usage error, 3 for an internal error
(a file raised an unexpected exception: it is reported as an error row and the batch goes on;
the results are still written), 4 when the output was lost: the disk or quota is full, the
filesystem went read-only or ``--out`` vanished. The run then stops at once with one line naming the
path: the file being written when it happened leaves nothing behind, results.csv/json list the files
done before it (space for them is set aside at the start, ``results.reserve``), and ``--resume``
after freeing space does the rest.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import glob
import io
import json
import os
import sys

import cv2
import numpy as np

from .engines import ENGINES
from .errors import FrontalizeError, ModelError, shown
from .image_io import (atomic_write_bytes, atomic_write_image, captured_stderr, keep_errors, load_image,
                       lost_reason, output_lost, release_memory, remove_stale_temps)
from .pipeline import DEFAULT_MODEL, Frontalizer, draw_face, side_by_side
from .sources import IMAGE_EXTS, SourceError, frame_count, frames, kind, open_capture

LIVE_KINDS = ("webcam", "stream", "gstreamer")
VIDEO_KINDS = ("video",) + LIVE_KINDS

FIELDS = ["file", "face", "status", "error", "box", "yaw", "detector", "output", "sheet", "frame"]
JOURNAL = "results.journal.jsonl"
MAX_NAME_BYTES = 150  # output stems are cut to this (+ "_face<k>_sheet.png" stays < 255 bytes)
EXIT_OK, EXIT_NO_FACE, EXIT_USAGE, EXIT_INTERNAL, EXIT_OUTPUT_LOST = 0, 1, 2, 3, 4
RESERVE = "results.reserve"  # space held for results.csv/json, given back when the disk fills


def reserve_bytes(n_inputs: int) -> int:
    """Room for results.csv + results.json: about 1 KB per row, a row per input (more for crowds:
    those files' rows may then be missing from results.json, never from the journal)."""
    return min(64 * 2**20, 2**20 + 2048 * n_inputs)


def _short(name: str) -> str:
    """``name`` cut (whole characters) to at most MAX_NAME_BYTES bytes on disk."""
    while len(os.fsencode(name)) > MAX_NAME_BYTES:
        name = name[:-1]
    return name


def _source_name(src: str) -> str:
    import re

    if src.isdigit():
        return f"cam{src}"
    return _short(re.sub(r"[^A-Za-z0-9._-]+", "_", src.split("://", 1)[-1]).strip("_")[:60] or "stream")


def expand_inputs(items: list[str]) -> tuple[list[tuple[str, str, str]], list[dict]]:
    """[(path or source, output name, kind: image | video | webcam | stream | gstreamer)] in a
    stable order, and rows for inputs that match nothing."""
    found, missing = [], []
    for item in items:
        k = kind(item)
        if k == "folder":
            hits = []
            for root, dirs, files in os.walk(item):
                dirs.sort()
                for f in sorted(files):
                    if os.path.splitext(f)[1].lower() in IMAGE_EXTS:
                        p = os.path.join(root, f)
                        hits.append((p, os.path.splitext(os.path.relpath(p, item))[0].replace(os.sep, "__"), "image"))
            if not hits:
                missing.append(_row(item, status="error", error=f"{item}: folder holds no image files"))
            found += hits
        elif k in ("image", "video"):
            found.append((item, os.path.splitext(os.path.basename(item))[0], k))
        elif k in LIVE_KINDS:
            found.append((item, _source_name(item), k))
        elif k == "glob":
            hits = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not hits:
                missing.append(_row(item, status="error", error=f"{item}: no file matches"))
            found += [(p, os.path.splitext(os.path.basename(p))[0], kind(p)) for p in hits]
        else:
            missing.append(_row(item, status="error", error=f"{item}: no such file"))
    seen, out, used = set(), [], {}
    for path, name, k in found:
        key = path if k in LIVE_KINDS else os.path.abspath(path)
        if key in seen:
            continue
        seen.add(key)
        name = _short(name)
        n = used.get(name, 0) + 1
        used[name] = n
        out.append((path, name if n == 1 else f"{name}-{n}", k))
    return out, missing


def _row(file, face=None, status="ok", error="", box=None, yaw=None, detector="", output="", sheet="",
         frame=None) -> dict:
    return {"file": file, "face": face, "status": status, "error": error, "box": box, "yaw": yaw,
            "detector": detector, "output": output, "sheet": sheet, "frame": frame}


def make_sheet(rgb: np.ndarray, face, frontal: np.ndarray, height: int = 256) -> np.ndarray:
    shown = rgb.copy()
    draw_face(shown, face)
    return side_by_side([shown, face.crop, frontal], height)


def process_file(fr: Frontalizer, path: str, name: str, out_dir: str, sheet: bool, max_faces) -> list[dict]:
    try:
        img = load_image(path)
    except FrontalizeError as e:
        return [_row(path, status="error", error=str(e))]
    return face_rows(fr, img.rgb, img.scale, path, name, out_dir, sheet, max_faces)


def face_rows(fr: Frontalizer, rgb, scale, path, name, out_dir, sheet, max_faces, frame=None) -> list[dict]:
    """Detect, frontalize and write one image's (or frame's) faces; its result rows."""
    faces, notes = fr.faces(rgb, max_faces)
    if not faces:
        why = "no face found" + (f" ({'; '.join(notes)})" if notes else "")
        return [_row(path, status="no_face", error=why, frame=frame)]
    frontals = fr.frontalize(faces, rgb)
    stem = name if frame is None else f"{name}_f{frame:06d}"
    rows = []
    try:
        for k, (face, frontal) in enumerate(zip(faces, frontals)):
            out = os.path.join(out_dir, f"{stem}_face{k}.png")
            atomic_write_image(out, frontal, make_dirs=False)
            rows.append(_row(path, k, "ok", "", None, None, face.detector, out, "", frame))
            if sheet:
                rows[-1]["sheet"] = os.path.join(out_dir, f"{stem}_face{k}_sheet.png")
                atomic_write_image(rows[-1]["sheet"], make_sheet(rgb, face, frontal), make_dirs=False)
            rows[-1]["box"] = [round(float(v) / scale, 1) for v in face.box]  # loaded pixels -> file pixels
            rows[-1]["yaw"] = round(face.yaw, 1) if np.isfinite(face.yaw) else None
    except OSError:  # e.g. the disk filled up: this file leaves nothing behind
        remove_outputs(rows)
        raise
    return rows


def remove_outputs(rows: list[dict]) -> None:
    for r in rows:
        for p in (r.get("output"), r.get("sheet")):
            if p:
                with contextlib.suppress(OSError):
                    os.unlink(p)


def process_video(fr: Frontalizer, src: str, name: str, out_dir: str, sheet: bool, max_faces, stride: int = 1,
                  max_frames=None, cap=None):
    """Rows per processed frame (a generator): a video file, a webcam, a stream. A source that
    cannot be opened gives one error row."""
    try:
        cap = cap if cap is not None else open_capture(src)
    except SourceError as e:
        yield [_row(src, status="error", error=str(e))]
        return
    n = 0
    for idx, bgr in frames(src, stride, max_frames, cap=cap):
        n += 1
        yield face_rows(fr, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), 1.0, src, name, out_dir, sheet, max_faces, idx)
    if n == 0:
        yield [_row(src, status="error", error=f"{src}: no frame could be read")]


def utf8_text(value):
    """A string as valid UTF-8 text: a file name's undecodable bytes (surrogate escapes) become
    backslash escapes (\\xff), the way ``ls -b`` shows them; other values pass through."""
    if not isinstance(value, str):
        return value
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no file name decodes to
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def write_results(out_dir: str, rows: list[dict], summary: dict) -> None:
    """results.csv (UTF-8: a file name's undecodable bytes as backslash escapes, ``utf8_text``) and
    results.json (ASCII: such bytes as \\udcXX escapes, which json.load and os.fsencode map back to
    the exact name; ``--resume`` reads this one)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, FIELDS)
    w.writeheader()
    for r in rows:
        cells = {**r, "box": "" if r["box"] is None else " ".join(f"{v:g}" for v in r["box"]),
                 "face": "" if r["face"] is None else r["face"], "yaw": "" if r["yaw"] is None else r["yaw"]}
        w.writerow({k: utf8_text(v) for k, v in cells.items()})
    atomic_write_bytes(os.path.join(out_dir, "results.csv"), buf.getvalue().encode("utf-8"), make_dirs=False)
    atomic_write_bytes(os.path.join(out_dir, "results.json"),
                       json.dumps({"summary": summary, "results": rows}, indent=1, ensure_ascii=True).encode("ascii"),
                       make_dirs=False)


def journal_append(f, rows: list[dict]) -> None:
    """One file's rows as one JSON line, on disk before the next file starts."""
    f.write(json.dumps(rows, ensure_ascii=True).encode("ascii") + b"\n")
    f.flush()
    os.fsync(f.fileno())


def previous_rows(out_dir: str) -> dict[str, list[dict]]:
    """Rows of an earlier run (results.json, then the journal of a run that was killed) whose
    every output still exists, by file."""
    rows = []
    try:
        with open(os.path.join(out_dir, "results.json")) as f:
            rows = json.load(f)["results"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        with open(os.path.join(out_dir, JOURNAL), "rb") as f:
            for line in f:
                try:
                    rows += json.loads(line)
                except ValueError:  # the line being written when the run was killed
                    continue
    except OSError:
        pass
    by_file: dict[str, list[dict]] = {}
    for r in rows:
        if isinstance(r, dict) and isinstance(r.get("file"), str):
            by_file.setdefault(r["file"], []).append(r)
    out = {}
    for f, rs in by_file.items():
        if rs and all(r.get("status") == "ok" and isinstance(r.get("output"), str) and os.path.exists(r["output"])
                      for r in rs):
            # the same file may be listed twice (results.json and the journal): keep one set
            out[f] = list({r.get("face"): r for r in rs}.values())
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="frontalize", description=__doc__.split("\n\n")[0],
                                epilog="Exit code: 0 when at least one file gave a frontal face, 1 when none did, "
                                       "2 for a model or usage error, 3 for an internal error (a file raised an "
                                       "unexpected exception; it is listed as an error and the batch goes on), "
                                       "4 when the output disk filled up or --out vanished (the run stops; "
                                       "--resume continues).")
    p.add_argument("inputs", nargs="*", help="image files, folders (recursive), glob patterns, video files, a webcam "
                                             "index, a stream URL or a GStreamer pipeline (also --source)")
    p.add_argument("--source", action="append", default=[], help="an input as above (may be repeated)")
    p.add_argument("--vid-stride", type=int, default=1, help="video sources: every N-th frame (default 1)")
    p.add_argument("--max-frames", type=int, help="video sources: at most this many frames each (a webcam or "
                                                  "stream otherwise runs until it ends or Ctrl-C)")
    p.add_argument("--json", action="store_true", help="print one JSON line per face to stdout")
    p.add_argument("--providers", help="ONNX execution providers in order, e.g. tensorrt,cuda,cpu (default: "
                                       "those of TensorRT, CUDA, CPU this onnxruntime has)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="generator: 'geometry' (the default: the photo's own pixels turned to frontal) or a model "
                        "file (.onnx, .tflite, .keras; 'frontalizer.onnx' is the bundled learned one)")
    p.add_argument("--engine", default="auto", choices=("auto",) + ENGINES, help="default: by file extension")
    p.add_argument("--threads", type=int, default=2, help="inference threads (default 2)")
    p.add_argument("--out", default="out/frontalize", help="output folder (default out/frontalize)")
    p.add_argument("--sheet", action="store_true", help="also write an input | crop | frontal sheet per face")
    p.add_argument("--detector", default="default", choices=("default", "fast"),
                   help="candidate detectors (default: BlazeFace short/back/full range + MTCNN, merged; "
                        "fast: the two BlazeFace passes)")
    p.add_argument("--max-faces", type=int, help="at most this many faces per image (largest first)")
    p.add_argument("--resume", action="store_true", help="skip files already done in --out's results.json")
    return p


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated()


class _OutputLost(Exception):
    """The output disk is full, read-only or gone: the run stops (exit 4)."""


def _main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from tqdm import tqdm

    if not args.inputs and not args.source:
        build_parser().error("give at least one input (positional or --source)")
    if args.vid_stride < 1:
        build_parser().error("--vid-stride must be >= 1")
    files, rows = expand_inputs(args.inputs + args.source)
    for r in rows:
        print(shown(f"skip: {r['error']}"), file=sys.stderr)
    if not files:
        print("error: no input image found", file=sys.stderr)
        return EXIT_NO_FACE
    said: list[str] = []
    try:
        with captured_stderr(said):  # the engines' load chatter (LiteRT INFO lines, oneDNN notes)
            fr = Frontalizer(args.model, args.engine, args.threads, args.detector, providers=args.providers).load()
    except ModelError as e:
        print(shown(f"error: {e}"), file=sys.stderr)
        return EXIT_USAGE
    finally:
        keep_errors(said)
    reserve = os.path.join(args.out, RESERVE)
    try:
        os.makedirs(args.out, exist_ok=True)
        remove_stale_temps(args.out)
        done = previous_rows(args.out) if args.resume else {}
        journal = open(os.path.join(args.out, JOURNAL), "ab" if args.resume else "wb")
    except OSError as e:
        print(shown(f"error: {args.out}: cannot write ({e.strerror})"), file=sys.stderr)
        return EXIT_USAGE
    try:
        atomic_write_bytes(reserve, bytes(reserve_bytes(len(files) + len(rows))), make_dirs=False)
    except OSError as e:
        journal.close()
        print(shown(f"error: {args.out}: cannot set aside room for the results ({e.strerror}); nothing was done"),
              file=sys.stderr)
        return EXIT_OUTPUT_LOST if output_lost(e, args.out) else EXIT_USAGE
    import signal

    old_term = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    summary = {"model": str(args.model), "engine": fr.engine.name, "providers": fr.engine.providers,
               "detector": args.detector, "files": len(files) + len(rows)}
    caps, total = {}, 0
    for path, _, k in files:  # videos are opened up front: their frame counts size the progress bar
        if k == "video" and path not in done:
            try:
                caps[path] = open_capture(path)
                n = frame_count(caps[path]) or 1
                total += min(-(-n // args.vid_stride), args.max_frames or n)
            except SourceError:
                total += 1
        elif k in LIVE_KINDS:
            total = None if total is None or not args.max_frames else total + args.max_frames
        elif total is not None:
            total += 1
    bar = tqdm(total=total, desc="frontalize", unit="img", file=sys.stderr, delay=1.0)
    internal, lost = 0, None

    def report(got):
        for r in got:
            if r["status"] != "ok":
                tqdm.write(shown(f"skip: {r['error'] if r['error'].startswith(r['file']) else r['file'] + ': ' + r['error']}"),
                           file=sys.stderr)
            elif args.json:
                line = {k: r[k] for k in ("file", "frame", "face", "box", "yaw", "detector", "output", "sheet")}
                print(json.dumps(line, ensure_ascii=True), flush=True)
        try:
            journal_append(journal, got)  # first: a file is done once its rows are on disk
        except OSError as e:
            remove_outputs(got)
            raise _OutputLost(e) from None
        rows.extend(got)
        bar.update(1)
        bar.set_postfix(faces=sum(r["status"] == "ok" for r in rows), refresh=False)

    def guarded(path, work):
        nonlocal internal
        try:
            return work()
        except FrontalizeError as e:  # e.g. a model that fails on this input
            return [_row(path, status="error", error=str(e))]
        except (KeyboardInterrupt, MemoryError):
            raise
        except OSError as e:
            if output_lost(e, args.out):
                raise _OutputLost(e) from None
            internal += 1
            return [_row(path, status="error", error=f"internal error (OSError: {e})")]
        except Exception as e:  # a bug: reported, counted, and the batch goes on
            internal += 1
            return [_row(path, status="error", error=f"internal error ({type(e).__name__}: "
                                                      f"{(str(e).strip().splitlines() or [''])[-1][:200]})")]

    try:
        for path, name, k in files:
            if path in done:
                rows += done[path]
                bar.update(1)
                continue
            if k in VIDEO_KINDS:
                frames_rows = process_video(fr, path, name, args.out, args.sheet, args.max_faces, args.vid_stride,
                                            args.max_frames, caps.pop(path, None))
                while True:
                    got = guarded(path, lambda: next(frames_rows, None))
                    if got is None:
                        break
                    report(got)
                    if got and got[0]["status"] == "error" and got[0]["frame"] is None:
                        break  # the source itself failed (or an internal error): no more frames
            else:
                report(guarded(path, lambda: process_file(fr, path, name, args.out, args.sheet, args.max_faces)))
            release_memory()
    except KeyboardInterrupt as e:
        what = "terminated" if isinstance(e, _Terminated) else "interrupted"
        print(f"{what}: results so far are saved; rerun with --resume to continue", file=sys.stderr)
    except _OutputLost as e:
        lost = e.args[0]
    finally:
        bar.close()
        for cap in caps.values():
            cap.release()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        ok_files = {r["file"] for r in rows if r["status"] == "ok"}
        summary.update(ok_files=len(ok_files), faces=sum(r["status"] == "ok" for r in rows),
                       no_face=sum(r["status"] == "no_face" for r in rows),
                       errors=sum(r["status"] == "error" for r in rows), internal_errors=internal)
        with contextlib.suppress(OSError):
            os.unlink(reserve)  # its room is for the results
        with contextlib.suppress(OSError):
            journal.close()
        try:
            write_results(args.out, rows, summary)
        except OSError as e:
            if lost is None and not output_lost(e, args.out):
                raise
            lost = lost or e
            results_lost = True
        else:
            results_lost = False
            if len({r["file"] for r in rows}) >= summary["files"]:  # complete: results.json has it all
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(args.out, JOURNAL))
    if lost is not None:
        n_done = len({r["file"] for r in rows})
        why = lost_reason(lost, args.out)
        saved = ("nothing more can be written there" if not os.path.isdir(args.out) else
                 f"{JOURNAL} lists them (results.csv could not be written)" if results_lost else "results.csv lists them")
        print(shown(f"error: {lost.filename or args.out}: {why}; stopped after {n_done} of {summary['files']} inputs "
                    f"({saved}); free space and rerun with --resume"), file=sys.stderr)
        return EXIT_OUTPUT_LOST
    print(shown(f"{summary['faces']} faces from {summary['ok_files']} of {summary['files']} inputs "
                f"({summary['no_face']} without a face, {summary['errors']} unreadable) -> {args.out}/results.csv"),
          file=sys.stderr)
    if internal:
        print(f"error: {internal} file(s) hit an internal error (listed in results.csv)", file=sys.stderr)
        return EXIT_INTERNAL
    return EXIT_OK if ok_files else EXIT_NO_FACE


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def main(argv=None) -> int:
    """Console entry point: an unexpected exception outside the per-file loop exits 3, in one line."""
    try:
        return _main(argv)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        print(shown(f"error: internal error ({type(e).__name__}: {str(e).strip()[:300]})"), file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
