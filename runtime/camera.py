"""Live frontalization: ``python -m runtime.camera [--source 0|video.mp4|rtsp://...]``.

Per frame: detect (every ``--detect-every`` frames) or track -> pose network (yaw, eye and mouth
midpoints) -> canonical crop -> frontalize -> draw input (crop square, keypoints) | frontal
prediction, with FPS and per-stage milliseconds. Keys (window mode): q quit, s snapshot, m next
model (``--model`` may be given several times).

Capture runs on its own thread keeping only the latest frame, so a slow model drops frames
instead of piling them up. The generator runs on a thread of its own too: while it makes frame i's
frontal, the loop detects or tracks the next frames (up to ``AHEAD`` headless, one in a window;
frames stay in order). Headless, a third thread draws, encodes and logs each finished frame. A video
FILE in ``--headless`` mode is read in order, every frame (there is no real time to keep up with).

Detection and pose: ``runtime.detect.FaceAnalyzer`` (``--detector``). Tracking between detections:
the pose network reads the face again inside the previous frame's crop square (one pass, no
detector); when its face score drops the face counts as lost and the next frame runs the detector,
and a detection every N frames also resets any slow drift.

``--headless --out DIR`` writes ``DIR/camera.mkv`` (mp4v in Matroska; written as
``camera.part.mkv`` and renamed when closed). Matroska, not MP4: an MP4 without its closing
index (a SIGKILL, a power cut) has no decodable frame, a cut Matroska file decodes up to its
last cluster. SIGTERM is handled like Ctrl-C (the video is closed and renamed); a
``camera.part.mkv`` left by a SIGKILL is kept as ``camera.killed.mkv`` by the next run. Also
``DIR/frames.jsonl`` (one JSON line per processed frame: frame index, ``t`` (seconds since the
loop started, when the frame's frontal was ready), box, yaw, detector or "track", ms per stage, fps;
"draw" and "write" are the output thread's drawing and encoding) and snapshots. Exit code: 0 when the loop
ran and ended (end of video, camera gone, q, --max-frames), 1 when the source gave no frame
at all, 2 for a model or argument error, 4 when the output was lost: OUT's free space fell under
``MIN_FREE_BYTES`` (checked every ``FREE_CHECK_EVERY`` frames; OpenCV's video writer does not report
a full disk itself), a write failed for a full disk, or OUT vanished. The loop then stops with one
line; the video is closed (a playable file up to the last frame) and frames.jsonl ends with a whole
line.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from .detect import Face, FaceAnalyzer
from .engines import ENGINES
from .errors import FrontalizeError
from .image_io import atomic_write_image, captured_stderr, keep_errors, lost_reason, output_lost
from .pipeline import DEFAULT_MODEL, analyzer_for, load_generator, side_by_side
from .sources import SourceError, is_live, open_capture, parse_source  # noqa: F401  (re-exported)


class FrameSource:
    """Frames from a capture, read on a thread: in order (``latest_only=False``, decoded ahead
    into a small queue) or only the newest one (``latest_only=True``). ``read()`` -> (index, BGR frame) or None at the end, with
    ``self.reason`` saying why it ended."""

    def __init__(self, src, latest_only: bool, pace: bool = False, stall_s: float = 10.0, loop: bool = False):
        self.src, self.cap, self.loop = src, open_capture(src), loop and not is_live(src)
        self.fps = self.cap.get(cv2.CAP_PROP_FPS) or 0.0
        if not (1.0 <= self.fps <= 240.0):
            self.fps = 30.0
        self.latest_only, self.pace, self.stall_s = latest_only, pace, stall_s
        self.count, self.reason, self.dropped = 0, "", 0
        self._latest, self._ended, self._last_returned = None, False, -1
        self._cond, self._stop = threading.Condition(), False
        # In-order mode decodes ahead on a thread too (bounded queue, nothing dropped): decoding
        # then overlaps the model on the second core.
        self._queue = None if latest_only else queue.Queue(maxsize=4)
        self._thread = threading.Thread(target=self._reader if latest_only else self._prefetch,
                                        name="capture", daemon=True)
        self._thread.start()

    def _end_reason(self) -> str:
        if is_live(self.src):
            what = f"camera {self.src}" if isinstance(self.src, int) else str(self.src)
            return f"{what}: no more frames (disconnected or stream ended) after {self.count} frames"
        return f"{self.src}: end of video after {self.count} frames"

    def _grab(self):
        try:
            ok, frame = self.cap.read()
        except cv2.error as e:
            ok, frame = False, None
            self.reason = f"{self.src}: read error ({str(e).strip().splitlines()[-1]})"
        if (not ok or frame is None) and self.loop and not self.reason and self.count:
            self.cap.release()  # a video file played again from the start (--loop)
            self.cap = open_capture(self.src)
            ok, frame = self.cap.read()
        if not ok or frame is None:
            self.reason = self.reason or self._end_reason()
            return None
        self.count += 1
        return frame

    def _prefetch(self):
        while not self._stop:
            frame = self._grab()
            self._queue.put(None if frame is None else (self.count - 1, frame))
            if frame is None:
                return

    def _reader(self):
        t0 = time.perf_counter()
        while not self._stop:
            frame = self._grab()
            with self._cond:
                if frame is None:
                    self._ended = True
                else:
                    self._latest = (self.count - 1, frame)
                self._cond.notify_all()
            if frame is None:
                return
            if self.pace:  # a file shown live plays at its own frame rate
                delay = t0 + self.count / self.fps - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)

    def read(self):
        if not self.latest_only:
            try:
                return self._queue.get(timeout=self.stall_s)
            except queue.Empty:
                self.reason = f"{self.src}: no frame for {self.stall_s:.0f} s, stopping after {self.count} frames"
                return None
        with self._cond:
            ok = self._cond.wait_for(lambda: self._ended or (self._latest and self._latest[0] > self._last_returned),
                                     timeout=self.stall_s)
            if not ok:
                self.reason = f"{self.src}: no frame for {self.stall_s:.0f} s, stopping after {self.count} frames"
                return None
            if self._latest and self._latest[0] > self._last_returned:
                idx, frame = self._latest
                self.dropped += idx - self._last_returned - 1
                self._last_returned = idx
                return idx, frame
            return None

    def close(self):
        self._stop = True
        while self._queue is not None and not self._queue.empty():  # unblock a waiting put
            self._queue.get_nowait()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
            if self._thread.is_alive():  # stuck in a blocking read: releasing under it could crash
                return
        self.cap.release()


class FaceTracker:
    """The largest face: detected every ``detect_every`` frames (or when lost), and between
    detections read again by the pose network from where it was in the previous frame (one pass,
    ~1-2 ms, no detector): the pose network regresses the face's keypoints inside the old box,
    which is what tracking needs, and its face score says when the face is gone."""

    def __init__(self, analyzer, detect_every: int = 5):
        self.analyzer, self.detect_every = analyzer, max(1, detect_every)
        self.face: Face | None = None
        self.since_detect = 0

    def update(self, rgb: np.ndarray, ms: dict) -> Face | None:
        face = None
        if self.face is not None and self.since_detect < self.detect_every - 1:
            t = time.perf_counter()
            face = self.analyzer.track(rgb, self.face)
            ms["track"] = (time.perf_counter() - t) * 1e3
            if face is not None:
                face.detector = "track"
                self.since_detect += 1
        if face is None:
            t = time.perf_counter()
            cands = self.analyzer.detect(rgb)
            ms["detect"] = (time.perf_counter() - t) * 1e3
            t = time.perf_counter()
            faces, _ = self.analyzer.faces_from_candidates(rgb, cands, 1)
            ms["pose"] = (time.perf_counter() - t) * 1e3
            face = faces[0] if faces else None
            self.since_detect = 0
        self.face = face
        return face


def draw_frame(frame_bgr: np.ndarray, face: Face | None, frontal_rgb: np.ndarray | None, lines: list[str]) -> np.ndarray:
    """Input (crop square, eye/mouth midpoints) | frontal prediction, text lines on top. BGR in, BGR out."""
    img = frame_bgr.copy()
    h = img.shape[0]
    if face is not None:
        cv2.polylines(img, [np.round(face.corners).astype(np.int32).reshape(-1, 1, 2)], True, (0, 255, 0), 2)
        for x, y in face.landmarks.astype(int):
            cv2.circle(img, (int(x), int(y)), 2, (0, 200, 255), -1)
    if frontal_rgb is not None:
        right = cv2.cvtColor(frontal_rgb, cv2.COLOR_RGB2BGR)
    else:
        right = np.zeros((128, 128, 3), np.uint8)
        cv2.putText(right, "no face", (24, 68), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (200, 200, 200), 1)
    out = side_by_side([img, right], h)
    for i, s in enumerate(lines):
        y = 22 + 20 * i
        # the dark outline without anti-aliasing: a quarter of the time, hidden under the white text
        cv2.putText(out, s, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3, cv2.LINE_8)
        cv2.putText(out, s, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return out


# Frames the tracking stage may run ahead of the generator, headless: enough to absorb a detection
# frame (~14 ms, every --detect-every frames) without leaving the generator's core idle (headless
# camera loop on 2 cores: 94 FPS with 1, 104 with 2, 112 with 4). In a window, 1: each frame on
# screen waits for at most one frontal besides its own.
AHEAD = 4
MIN_FREE_BYTES = 16 * 2**20  # room kept to close the video and the JSON lines
FREE_CHECK_EVERY = 10  # frames between free-space checks (statvfs: microseconds)


class OutputLost(Exception):
    """OUT's disk is (nearly) full, read-only or gone: the loop stops (exit 4)."""


class Outputs:
    """Headless outputs: annotated video + per-frame JSON lines, closed/renamed on any exit."""

    def __init__(self, out_dir: str, fps: float):
        os.makedirs(out_dir, exist_ok=True)
        self.dir, self.fps = out_dir, fps
        self.video_path = os.path.join(out_dir, "camera.mkv")
        self.part_path = os.path.join(out_dir, "camera.part.mkv")  # ffmpeg picks the container by extension
        if os.path.exists(self.part_path):  # a run killed before it could close: keep what it wrote
            os.replace(self.part_path, os.path.join(out_dir, "camera.killed.mkv"))
        self.writer = None
        self.jsonl = open(os.path.join(out_dir, "frames.jsonl"), "w", buffering=1)
        self.records = 0
        self.error: BaseException | None = None  # what stopped the output thread, raised on the loop's thread
        self._raised = False
        # Drawing, mp4v encoding and the JSON line run on their own thread (OpenCV releases the GIL),
        # overlapping the next frames' work; the bounded queue applies back-pressure instead of growing.
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._thread = threading.Thread(target=self._work, name="output", daemon=True)
        self._thread.start()

    def _work(self):
        while (job := self._queue.get()) is not None:
            if self.error is None:
                try:
                    self._write(*job)
                except BaseException as e:  # noqa: BLE001 (handed to the loop's thread; later jobs are dropped)
                    self.error = e

    def _write(self, draw, record: dict):
        t = time.perf_counter()
        canvas = draw()
        record["ms"]["draw"] = round((time.perf_counter() - t) * 1e3, 2)
        if self.writer is None:
            h, w = canvas.shape[:2]
            self.writer = cv2.VideoWriter(self.part_path, cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self.writer.isOpened():
                raise FrontalizeError(f"{self.part_path}: cannot open video writer (mp4v)")
        t = time.perf_counter()
        self.writer.write(canvas)
        record["ms"]["write"] = round((time.perf_counter() - t) * 1e3, 2)
        self.jsonl.write(json.dumps(record) + "\n")
        self.records += 1

    def put(self, draw, record: dict):
        """Queue a frame: ``draw()`` makes its canvas on the output thread, then it is encoded and
        ``record`` (the frame's JSON line; its "ms" gets "draw" and "write") is written."""
        self.raise_error()
        self._queue.put((draw, record))

    def raise_error(self):
        """The output thread's error, once (at the next frame, else at close)."""
        if self.error is not None and not self._raised:
            self._raised = True
            raise self.error

    def check_room(self) -> None:
        """OutputLost when OUT is gone or its free space is under MIN_FREE_BYTES."""
        try:
            st = os.statvfs(self.dir)
            if os.path.isdir(self.dir) and st.f_bavail * st.f_frsize >= MIN_FREE_BYTES:
                return
            why = f"less than {MIN_FREE_BYTES // 2**20} MB free"
        except OSError:
            why = "output folder vanished"
        raise OutputLost(f"{self.dir}: {why}")

    def close(self):
        self._queue.put(None)
        self._thread.join()
        self.jsonl.close()
        if self.writer is not None:
            self.writer.release()
            os.replace(self.part_path, self.video_path)
        self.raise_error()


def has_gui() -> bool:
    info = cv2.getBuildInformation()
    line = next((l for l in info.splitlines() if l.strip().startswith("GUI:")), "GUI: NONE")
    return "NONE" not in line


def track_frame(frame_bgr: np.ndarray, tracker: FaceTracker, ms: dict):
    """The loop's first stage: (RGB frame, the face detected or tracked, or None)."""
    t = time.perf_counter()
    rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
    ms["convert"] = (time.perf_counter() - t) * 1e3
    return rgb, tracker.update(rgb, ms)


def generate(engine, rgb: np.ndarray, face: Face | None, ms: dict) -> np.ndarray | None:
    """The loop's second stage: the face's frontal view (None without a face)."""
    if face is None:
        return None
    t = time.perf_counter()
    frontal = engine.frontalize(rgb, [face])[0]
    ms["generator"] = (time.perf_counter() - t) * 1e3
    return frontal


def process_frame(frame_bgr: np.ndarray, tracker: FaceTracker, engine, fps: float, ms: dict):
    """One frame of the loop, all stages in turn: track/detect -> pose -> crop -> frontalize -> draw.
    Returns (face or None, annotated BGR canvas); stage times go into ``ms``."""
    rgb, face = track_frame(frame_bgr, tracker, ms)
    return face, draw_result(frame_bgr, face, generate(engine, rgb, face, ms), engine, fps, ms)


def draw_result(frame_bgr: np.ndarray, face: Face | None, frontal, engine, fps: float, ms: dict) -> np.ndarray:
    """The annotated BGR canvas of a frame (input | frontal, FPS and stage times)."""
    t = time.perf_counter()
    stages = " ".join(f"{s[:4]} {v:.1f}" for s, v in ms.items() if s not in ("capture", "convert"))
    lines = [f"{fps:5.1f} FPS  {os.path.basename(engine.path)} [{engine.name}]", f"ms: {stages}"]
    if face is not None:
        lines.append(f"yaw {face.yaw:+.0f}  {face.detector}")
    canvas = draw_frame(frame_bgr, face, frontal, lines)
    ms["draw"] = (time.perf_counter() - t) * 1e3
    return canvas


def frame_record(idx: int, face, ms: dict, fps: float) -> dict:
    return {"frame": idx, "box": None if face is None else [round(float(v), 1) for v in face.box],
            "yaw": None if face is None or not np.isfinite(face.yaw) else round(face.yaw, 1),
            "detector": None if face is None else face.detector,
            "ms": {s: round(v, 2) for s, v in ms.items()}, "fps": round(fps, 2)}


def run(args) -> int:
    src = parse_source(args.source)
    models = args.model or [DEFAULT_MODEL]
    engines = {}

    def engine_at(i):
        if i not in engines:
            kw = {"providers": args.providers} if args.providers else {}
            engines[i] = load_generator(models[i], args.engine, args.threads, **kw)
        return engines[i]

    k = 0
    said: list[str] = []
    try:
        with captured_stderr(said):  # load chatter (LiteRT's INFO line); errors are passed on
            engine = engine_at(0)
            analyzer = analyzer_for(engine, args.detector, args.threads)
    finally:
        keep_errors(said)
    tracker = FaceTracker(analyzer, args.detect_every)
    live = is_live(src)
    source = FrameSource(src, latest_only=live or not args.headless, pace=not live and not args.headless,
                         loop=args.loop)
    out = Outputs(args.out, source.fps) if args.headless else None
    snap_dir = args.out or "."
    times, n, snaps = deque(maxlen=30), 0, 0
    message, lost = "", ""
    # Stages on threads: while the generator makes frame i's frontal (3DDFA_V2 + geometry: numpy,
    # OpenCV and onnxruntime let go of the GIL), this thread reads and detects or tracks the next
    # frames, up to `ahead` of it, then hands frame i to the output thread (headless) or shows it.
    # Frames stay in order.
    pool = ThreadPoolExecutor(1, thread_name_prefix="generator")
    pending: deque = deque()  # (index, frame, face, ms, engine, future of the frontal), oldest first
    ahead = AHEAD if args.headless else 1

    def finish(p) -> str:
        """Draw, write or show a frame whose frontal is under way; a stop message, or ""."""
        nonlocal n, snaps, k, engine
        idx, frame, face, ms, eng, fut = p
        frontal = fut.result()
        times.append(time.perf_counter())
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        n += 1
        if out is not None:
            record = frame_record(idx, face, ms, fps)
            record["t"] = round(times[-1] - t_start, 4)
            try:
                if n % FREE_CHECK_EVERY == 1:
                    out.check_room()
                out.put(lambda: draw_result(frame, face, frontal, eng, fps, ms), record)
            except OSError as e:
                if not output_lost(e, args.out):
                    raise
                raise OutputLost(f"{args.out}: {lost_reason(e, args.out)}") from None
            return ""
        canvas = draw_result(frame, face, frontal, eng, fps, ms)
        cv2.imshow("frontalize", canvas)
        key = cv2.waitKey(1) & 0xFF
        if key == ord("q"):
            return f"quit after {n} frames"
        if key == ord("s"):
            path = os.path.join(snap_dir, f"snapshot_{snaps:04d}.png")
            atomic_write_image(path, cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB))
            snaps += 1
            print(f"snapshot: {path}", file=sys.stderr)
        if key == ord("m") and len(models) > 1:
            k = (k + 1) % len(models)
            engine = engine_at(k)
            analyzer.crop_size = int(engine.meta.get("input_size", 128))
        return ""

    t_start = time.perf_counter()
    try:
        started, ended, stop = 0, False, ""
        while True:
            if not ended and args.max_frames is not None and started >= args.max_frames:
                message, ended = f"stopped after --max-frames {started}", True
            if not ended:
                ms = {}
                t0 = time.perf_counter()
                got = source.read()
                if got is None:
                    message, ended = source.reason, True
                else:
                    ms["capture"] = (time.perf_counter() - t0) * 1e3
                    rgb, face = track_frame(got[1], tracker, ms)
                    started += 1
                    pending.append((got[0], got[1], face, ms, engine, pool.submit(generate, engine, rgb, face, ms)))
            if not pending:
                break
            # hand on every finished frame (a live camera shows each frontal as soon as it is made);
            # wait for the oldest only when the tracking stage is `ahead` frames ahead, or at the end
            while pending and (ended or len(pending) > ahead or pending[0][5].done()):
                stop = finish(pending.popleft())
                if stop:
                    break
            if stop:
                message = stop
                break
    except KeyboardInterrupt:
        message = f"interrupted after {n} frames"
    except OutputLost as e:
        lost = str(e)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        source.close()
        if out is not None:
            try:
                out.close()
            except OSError as e:  # a frame, the last JSON line or the rename did not fit
                lost = lost or f"{args.out}: {lost_reason(e, args.out)}"
        if not args.headless:
            cv2.destroyAllWindows()
    if lost:
        print(f"error: {lost}; stopped after {out.records} frames (camera.mkv and frames.jsonl hold them)",
              file=sys.stderr)
        return 4
    if source.dropped:
        message += f" ({source.dropped} frames dropped to keep up)"
    print(message, file=sys.stderr)
    if out is not None and n:
        print(f"wrote {out.video_path} and {os.path.join(args.out, 'frames.jsonl')} ({n} frames)", file=sys.stderr)
    return 0 if n else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.camera", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="0", help="camera index, video file, stream URL or a GStreamer pipeline "
                                                  "ending in appsink (Jetson CSI camera; default 0)")
    p.add_argument("--model", action="append", help=f"model file, repeat to cycle with 'm' (default {DEFAULT_MODEL})")
    p.add_argument("--engine", default="auto", choices=("auto",) + ENGINES)
    p.add_argument("--threads", type=int, default=2, help="inference threads (default 2)")
    p.add_argument("--providers", help="ONNX execution providers in order, e.g. tensorrt,cuda,cpu")
    p.add_argument("--detector", default="fast", choices=FaceAnalyzer.DETECTORS,
                   help="candidate detectors on detection frames (default fast: the two BlazeFace passes, "
                        "~15 ms CPU a 640x480 frame; default adds BlazeFace full-range and MTCNN, ~95 ms)")
    p.add_argument("--detect-every", type=int, default=5, help="run the detector every N frames, track between (default 5)")
    p.add_argument("--headless", action="store_true", help="no window: write an annotated video and per-frame JSON")
    p.add_argument("--out", help="output folder (required with --headless; snapshots go here too)")
    p.add_argument("--max-frames", type=int, help="stop after this many processed frames")
    p.add_argument("--loop", action="store_true", help="play a video file again from the start at its end (soak tests)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # our one-line messages only; cv2.utils.logging is missing from some builds (4.11's aarch64 wheel)
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is not None:
        log.setLogLevel(log.LOG_LEVEL_ERROR)
    else:
        cv2.setLogLevel(2)  # LOG_LEVEL_ERROR
    if args.headless and not args.out:
        print("error: --headless needs --out DIR", file=sys.stderr)
        return 2
    if not args.headless and not has_gui():
        print("error: this OpenCV build has no GUI (opencv-python-headless): use --headless --out DIR, "
              "or install opencv-python for a window", file=sys.stderr)
        return 2
    import signal

    def on_term(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)  # a service manager's stop closes the video cleanly
    try:
        return run(args)
    except SourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except FrontalizeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    sys.exit(main())
