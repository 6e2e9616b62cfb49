"""What a ``source`` is, as in ultralytics' ``source=``: one string says it all.

- an image file (``IMAGE_EXTS``), a folder (searched recursively for images) or a glob pattern
- a video file (``VIDEO_EXTS``, or any existing file OpenCV opens as a video)
- a webcam index (``0``, ``1``...) or a device (``/dev/video0``)
- a stream URL (``rtsp://``, ``rtmp://``, ``http(s)://``, ``udp://``...)
- a GStreamer pipeline ending in ``appsink`` (e.g. a Jetson CSI camera:
  ``nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720 ! nvvidconv ! video/x-raw,format=BGRx
  ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1``), opened with OpenCV's GStreamer backend.

``kind(src)`` names it; ``open_capture(src)`` opens a video-like one; ``frames(src, stride)`` reads
its frames in order (BGR), every ``stride``-th one.
"""
from __future__ import annotations

import glob
import os

import cv2

from .errors import FrontalizeError
from .image_io import captured_stderr

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2", ".pgm", ".ppm", ".gif",
              ".heic", ".heif", ".hif", ".avif"}  # phone formats (runtime.image_io: pi-heif, Pillow)
VIDEO_EXTS = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp",
              ".asf", ".mts", ".m2ts", ".ogv"}
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


class SourceError(FrontalizeError):
    """A camera/video/stream that cannot be opened."""


def is_gstreamer(src) -> bool:
    return isinstance(src, str) and "appsink" in src and "!" in src


def is_stream(src) -> bool:
    return isinstance(src, str) and src.lower().startswith(STREAM_SCHEMES)


def parse_source(src):
    """``"0"`` -> 0 (a webcam index); anything else as it is."""
    if isinstance(src, str) and src.strip().isdigit():
        return int(src.strip())
    return src


def is_live(src) -> bool:
    src = parse_source(src)
    return isinstance(src, int) or is_stream(src) or is_gstreamer(src) or str(src).startswith("/dev/video")


def kind(src) -> str:
    """image | folder | glob | video | webcam | stream | gstreamer | missing."""
    src = parse_source(src)
    if isinstance(src, int) or str(src).startswith("/dev/video"):
        return "webcam"
    s = os.fspath(src)
    if is_gstreamer(s):
        return "gstreamer"
    if is_stream(s):
        return "stream"
    if os.path.isdir(s):
        return "folder"
    if os.path.exists(s):
        return "video" if os.path.splitext(s)[1].lower() in VIDEO_EXTS else "image"
    if glob.has_magic(s):
        return "glob"
    return "missing"


def open_capture(src, timeout_ms: int = 5000) -> cv2.VideoCapture:
    """An opened ``cv2.VideoCapture`` or SourceError with one line saying why not."""
    src = parse_source(src)
    if not is_live(src) and not os.path.exists(src):
        raise SourceError(f"{src}: no such video file")
    if is_gstreamer(src):
        cap = cv2.VideoCapture(src, cv2.CAP_GSTREAMER)
        if not cap.isOpened():
            gst = next((l for l in cv2.getBuildInformation().splitlines() if "GStreamer" in l), "GStreamer: NO")
            raise SourceError(f"{src[:80]}: cannot open the GStreamer pipeline ({gst.strip()} in this OpenCV build)")
        return cap
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
    said: list[str] = []
    with captured_stderr(said):  # FFmpeg's own "[tcp @ 0x..] Connection refused": our one line says it
        cap = cv2.VideoCapture(src, cv2.CAP_ANY, params)
    if not cap.isOpened():
        what = f"camera {src}" if isinstance(src, int) else str(src)
        raise SourceError(f"{what}: cannot open (no such device, unreachable stream or unsupported format)")
    return cap


def frame_count(cap: cv2.VideoCapture) -> int | None:
    n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(n) if n and n > 0 else None


def frames(src, stride: int = 1, max_frames: int | None = None, cap: cv2.VideoCapture | None = None):
    """(frame index, BGR frame) of a video / camera / stream, in order, every ``stride``-th frame
    (skipped frames are grabbed, not decoded); at most ``max_frames`` frames are yielded."""
    cap = cap if cap is not None else open_capture(src)
    stride = max(1, int(stride))
    try:
        idx, n = 0, 0
        while max_frames is None or n < max_frames:
            if idx % stride:
                if not cap.grab():
                    return
                idx += 1
                continue
            ok, frame = cap.read()
            if not ok or frame is None:
                return
            yield idx, frame
            idx += 1
            n += 1
    finally:
        cap.release()
