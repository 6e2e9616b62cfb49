"""Robust image loading: every bad file becomes an ImageError with a one-line reason.

Decisions (documented in README):
- EXIF orientation is applied (a phone photo comes out upright).
- Grayscale is expanded to 3 channels, alpha is dropped, 16-bit is scaled to 8-bit.
- Images whose long side exceeds ``max_side`` are decoded reduced (JPEG decodes at
  1/2, 1/4, 1/8 natively) and then resized, so a 20000x20000 photo costs a few
  hundred MB at most. ``LoadedImage.scale`` maps loaded pixels back to the file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import ImageError

MAX_SIDE = 4096
_JPEG_MAGIC = b"\xff\xd8"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class LoadedImage:
    rgb: np.ndarray  # HxWx3 uint8, RGB
    scale: float  # loaded pixels per file pixel (<1 when reduced)
    path: str = ""


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header without decoding, or None if unknown.

    Raises ImageError for a non-JPEG image too large to decode in full (only JPEG can be
    decoded reduced): PIL's decompression-bomb limit is that memory bound.
    """
    import io
    import warnings

    from PIL import Image, JpegImagePlugin

    try:
        if data.startswith(_JPEG_MAGIC):
            # The plugin class directly: Image.open would refuse a 20000x20000 JPEG as a
            # "decompression bomb" before we could read its size and decode it reduced.
            return JpegImagePlugin.JpegImageFile(io.BytesIO(data)).size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                return im.size
    except Image.DecompressionBombError as e:
        raise ImageError(f"image too large to decode ({str(e).split('(')[1].split(')')[0]}; "
                         f"only JPEG is decoded reduced)") from None
    except Exception:
        return None


def _check_complete(data: bytes, name: str) -> None:
    if data.startswith(_JPEG_MAGIC):
        # A complete JPEG ends with the EOI marker (trailing padding is tolerated).
        if b"\xff\xd9" not in data[-1024:]:
            raise ImageError(f"{name}: truncated JPEG (no end-of-image marker)")
    elif data.startswith(_PNG_MAGIC):
        if b"IEND" not in data[-64:]:
            raise ImageError(f"{name}: truncated PNG (no IEND chunk)")


def to_rgb8(img: np.ndarray) -> np.ndarray:
    """Any decoded OpenCV array (gray, BGR, BGRA; 8/16-bit or float) -> RGB uint8."""
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageError(f"unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    if img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def decode_image(data: bytes, name: str = "<bytes>", max_side: int = MAX_SIDE) -> LoadedImage:
    if len(data) == 0:
        raise ImageError(f"{name}: empty file (0 bytes)")
    _check_complete(data, name)
    buf = np.frombuffer(data, np.uint8)
    try:
        size = _header_size(data)
    except ImageError as e:
        raise ImageError(f"{name}: {e}") from None
    reduce = 1
    if size and max(size) > max_side and data.startswith(_JPEG_MAGIC):
        while reduce < 8 and max(size) / (reduce * 2) >= max_side:
            reduce *= 2
    # ANYDEPTH keeps 16-bit; COLOR applies EXIF orientation and gives 3 channels.
    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
             4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}[reduce]
    if reduce == 1:
        flags |= cv2.IMREAD_ANYDEPTH
    try:
        img = cv2.imdecode(buf, flags)
    except cv2.error as e:
        raise ImageError(f"{name}: cannot decode image ({str(e).strip().splitlines()[-1]})") from None
    if img is None:
        raise ImageError(f"{name}: not an image or corrupt (unknown format)")
    rgb = to_rgb8(img)
    scale = 1.0 / reduce
    h, w = rgb.shape[:2]
    if max(h, w) > max_side:
        f = max_side / max(h, w)
        rgb = cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        scale *= f
    return LoadedImage(np.ascontiguousarray(rgb), scale, name)


def load_image(path: str | os.PathLike, max_side: int = MAX_SIDE) -> LoadedImage:
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror})") from None
    return decode_image(data, path, max_side)


def atomic_write_image(path: str | os.PathLike, rgb: np.ndarray, quality: int = 95) -> None:
    """Write an RGB image so that a crash never leaves a half-written file."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower() or ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    try:
        ok, enc = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    except cv2.error:  # no encoder for this extension
        ok = False
    if not ok:
        raise ImageError(f"{path}: cannot encode image as {ext}")
    atomic_write_bytes(path, enc.tobytes())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
