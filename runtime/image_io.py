"""Robust image loading: every bad file becomes an ImageError with a one-line reason.

Decisions (documented in README, "Reliability"):
- Only regular files are opened (``O_NONBLOCK`` + ``fstat``: a FIFO or device is refused, never
  read), and only up to ``MAX_FILE_BYTES``.
- The size is read from the header (Pillow, lazily) before anything is decoded; an image whose
  decode would need more than ``MAX_DECODE_BYTES`` (measured: OpenCV's decoders peak at twice
  the decoded array) is refused (JPEG counts at the 1/2, 1/4, 1/8
  reduction libjpeg decodes it at, reduced further when over budget; a progressive JPEG also
  holds its full-size DCT coefficients: 2 bytes per sample).
  Formats Pillow cannot size (e.g. Radiance HDR, OpenEXR) are refused.
- EXIF orientation is applied (a phone photo comes out upright).
- HEIC/HEIF (iPhone photos) decode through ``pi-heif`` (libheif + libde265, decode-only; its irot/
  imir and EXIF orientation applied), AVIF through Pillow's own plugin (libavif + dav1d); both
  through Pillow, with the same header-first budget (counted at 3x the output: the decoder's
  buffer, Pillow's image, the array).
- Grayscale is expanded to 3 channels, alpha is dropped, 16-bit is scaled to 8-bit, float/32-bit
  single-channel TIFFs are scaled from their own range; GIF: the first frame.
- Data after the end of the image (JPEG EOI, PNG IEND: motion photos, padding) is ignored; a JPEG
  whose entropy data ends early (libjpeg's "premature end" warning) is reported truncated.
- The decoders' own messages on stderr are captured during the decode (they become the reason
  or are dropped), so stderr carries only the one-line reasons.
- Images whose long side exceeds ``max_side`` are resized; ``LoadedImage.scale`` maps loaded
  pixels back to the file.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import tempfile
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import ImageError

MAX_SIDE = 4096
MAX_FILE_BYTES = 48 * 2**20  # bigger files are refused before reading
MAX_DECODE_BYTES = 128 * 2**20  # decoder peak per image: 2 x output (+ progressive JPEG coefficients)
# HEIC/AVIF have no reduced decode: a 24 MP phone photo (5712x4284) peaks at ~230 MB above the imports
# (measured: 3.1 x its RGB size), so they get their own budget, counted at 3 x: up to 28 MP
PHONE_DECODE_BYTES = 256 * 2**20
_JPEG_MAGIC = b"\xff\xd8"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class LoadedImage:
    rgb: np.ndarray  # HxWx3 uint8, RGB
    scale: float  # loaded pixels per file pixel (<1 when reduced)
    path: str = ""


@contextlib.contextmanager
def captured_stderr(out: list):
    """Everything written to file descriptor 2 inside the block (C libraries: libjpeg, libpng,
    OpenCV, LiteRT) is appended to ``out`` as one string instead of reaching the terminal."""
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError):
        pass
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read(65536).decode("utf-8", "replace"))


def keep_errors(said: list[str]) -> None:
    """Pass on what ``captured_stderr`` caught, less the informational lines (INFO, I/W-prefixed
    absl logs, oneDNN and CPU-feature notes) a user cannot act on."""
    import re

    for line in "".join(said).splitlines():
        if line.strip() and not re.match(r"(INFO:|WARNING: All log messages|[IW]\d{4} |To enable the following)", line):
            print(line, file=sys.stderr)


def _header(f, name: str):
    """(width, height, decode bytes per pixel, reduce) from the header, without decoding.

    Raises ImageError when the format is not one Pillow can size or the decode is over budget."""
    import warnings

    from PIL import Image, JpegImagePlugin

    register_heif()
    f.seek(0)
    head = f.read(16)
    f.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if head.startswith(_JPEG_MAGIC):
                # The plugin class directly: Image.open would refuse a 20000x20000 JPEG as a
                # "decompression bomb" before we could read its size and decode it reduced.
                im = JpegImagePlugin.JpegImageFile(f)
            else:
                saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our own budget below
                try:
                    im = Image.open(f)
                finally:
                    Image.MAX_IMAGE_PIXELS = saved
            w, h, mode, fmt = im.width, im.height, im.mode, im.format
            progressive = bool(im.info.get("progressive") or im.info.get("progression"))
            coef = 0  # a progressive JPEG's DCT coefficients: 2 bytes per sample of each component
            if fmt == "JPEG" and progressive:
                layers = getattr(im, "layer", None) or [("1", 1, 1, 0)] * 3
                hmax, vmax = max(l[1] for l in layers), max(l[2] for l in layers)
                coef = int(w * h * 2 * sum(l[1] * l[2] for l in layers) / (hmax * vmax))
    except Exception:
        if head.startswith(_JPEG_MAGIC):
            raise ImageError(f"{name}: truncated or corrupt JPEG header") from None
        if head.startswith(_PNG_MAGIC):
            raise ImageError(f"{name}: corrupt or truncated PNG header") from None
        if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS and register_heif():
            raise ImageError(f"{name}: corrupt or truncated HEIF/AVIF header") from None
        kind = _magic_name(head)
        raise ImageError(f"{name}: not an image or unsupported format ({kind})") from None
    if w <= 0 or h <= 0:
        raise ImageError(f"{name}: image header says {w}x{h} pixels")
    sample = 2 if mode.startswith("I;16") else 4 if mode in ("I", "F") else 1
    reduce = 1

    copies = 3 if fmt in PILLOW_ONLY else 2

    def need():  # imdecode's peak: the output twice (decoded, then copied out) + coefficients
        return copies * -(-w // reduce) * -(-h // reduce) * 3 * sample + coef

    if fmt == "JPEG":  # libjpeg decodes at 1/2, 1/4, 1/8: reduce to MAX_SIDE, more if over budget
        while reduce < 8 and (max(w, h) / (reduce * 2) >= MAX_SIDE or need() > MAX_DECODE_BYTES):
            reduce *= 2
    budget = PHONE_DECODE_BYTES if fmt in PILLOW_ONLY else MAX_DECODE_BYTES
    if need() > budget:
        what = "progressive JPEG" if fmt == "JPEG" and progressive else fmt or "image"
        raise ImageError(f"{name}: image too large to decode ({what} {w}x{h}: {need() / 2**20:.0f} MB > "
                         f"{budget / 2**20:.0f} MB budget)")
    return w, h, fmt, reduce


PILLOW_ONLY = ("HEIF", "AVIF")  # formats OpenCV's wheels do not decode
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis")
_HEIF = None


def register_heif() -> bool:
    """Let Pillow open HEIC/HEIF (pi-heif, once); False when pi-heif is not installed."""
    global _HEIF
    if _HEIF is None:
        try:
            import pi_heif

            pi_heif.register_heif_opener()
            _HEIF = True
        except ImportError:
            _HEIF = False
    return _HEIF


def _magic_name(head: bytes) -> str:
    for magic, kind in ((b"#?RADIANCE", "Radiance HDR"), (b"#?RGBE", "Radiance HDR"), (b"v/1\x01", "OpenEXR"),
                        (b"PF", "PFM"), (b"Pf", "PFM"), (b"GIF8", "GIF"), (b"%PDF", "PDF")):
        if head.startswith(magic):
            return kind
    if head[:4] in (b"II*\0", b"MM\0*"):
        return "a TIFF layout neither OpenCV nor Pillow reads, e.g. more than 4 samples per pixel"
    if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        return "HEIF/AVIF" if register_heif() else "HEIF/AVIF; pip install pi-heif to read HEIC"
    return "unknown format"


def to_rgb8(img: np.ndarray) -> np.ndarray:
    """Any decoded OpenCV array (gray, BGR, BGRA; 8/16-bit or float) -> RGB uint8."""
    if img.dtype == np.uint16:
        img = cv2.convertScaleAbs(img, alpha=1 / 257.0)  # rounds and saturates, no float copy
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
    if img.flags["C_CONTIGUOUS"] and img.flags["WRITEABLE"]:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)  # in place: no second full-size copy
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _pillow_decode(data: bytes, name: str, max_side: int = MAX_SIDE) -> np.ndarray:
    """What OpenCV cannot decode but Pillow can: 32-bit int / float single-channel TIFFs
    (scaled from their own finite min..max to 0..255). Returns RGB uint8."""
    import io

    from PIL import Image

    from PIL import ImageOps

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode = im.mode
            if im.format in PILLOW_ONLY:  # 8-bit RGB(A)/L, upright (EXIF orientation, HEIF's irot/imir)
                if im.mode != "RGB":
                    im = im.convert("RGB")
                k = -(-max(im.size) // max_side)
                if k > 1:  # a 24 MP phone photo: box-reduce before any further copy
                    im = im.reduce(k)
                return np.asarray(ImageOps.exif_transpose(im))
            a = np.asarray(im)
    except Exception as e:
        raise ImageError(f"{name}: cannot decode image ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})") from None
    if mode in ("I", "F", "I;16", "I;16B", "I;16L") or a.dtype.kind in "iuf" and a.dtype != np.uint8:
        a = a.astype(np.float64)
        fin = a[np.isfinite(a)]
        if fin.size == 0:
            raise ImageError(f"{name}: {mode} image has no finite pixel value")
        lo, hi = float(fin.min()), float(fin.max())
        if 0.0 <= lo and hi <= 1.0 and a.dtype.kind == "f" and mode == "F":
            lo, hi = 0.0, 1.0
        a = np.clip(np.nan_to_num((a - lo) * (255.0 / max(hi - lo, 1e-12)) + 0.5, nan=0.0), 0, 255).astype(np.uint8)
        return cv2.cvtColor(a, cv2.COLOR_GRAY2RGB) if a.ndim == 2 else np.ascontiguousarray(a[..., :3])
    raise ImageError(f"{name}: cannot decode {mode} image")


def decode_image(data: bytes, name: str = "<bytes>", max_side: int = MAX_SIDE) -> LoadedImage:
    import io

    if len(data) == 0:
        raise ImageError(f"{name}: empty file (0 bytes)")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{name}: file too large ({len(data) / 2**20:.0f} MB > {MAX_FILE_BYTES / 2**20:.0f} MB budget)")
    if data.startswith(_PNG_MAGIC) and b"IEND" not in data:
        raise ImageError(f"{name}: truncated PNG (no IEND chunk)")
    w, h, fmt, reduce = _header(io.BytesIO(data), name)
    buf = np.frombuffer(data, np.uint8)
    # ANYDEPTH keeps 16-bit; COLOR applies EXIF orientation and gives 3 channels.
    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
             4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}[reduce]
    if reduce == 1:
        flags |= cv2.IMREAD_ANYDEPTH
    chatter: list[str] = []
    try:
        with captured_stderr(chatter):
            img = None if fmt in PILLOW_ONLY else cv2.imdecode(buf, flags)
    except cv2.error:
        img = None
    said = chatter[0] if chatter else ""
    if img is not None and fmt == "JPEG" and "remature end" in said:
        raise ImageError(f"{name}: truncated JPEG (image data ends early)")
    if img is None and fmt == "JPEG":
        raise ImageError(f"{name}: truncated JPEG (no end-of-image marker)" if b"\xff\xd9" not in data[2:]
                         else f"{name}: truncated JPEG or corrupt image data")
    if img is None and fmt == "PNG":
        raise ImageError(f"{name}: corrupt or truncated PNG")
    if img is None or img.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        rgb = _pillow_decode(data, name, max_side)
    else:
        try:
            rgb = to_rgb8(img)
        except ImageError as e:
            raise ImageError(f"{name}: {e}") from None
    del img
    scale = 1.0 / reduce if fmt not in PILLOW_ONLY else max(rgb.shape[:2]) / max(w, h)  # reduced while decoding
    h, w = rgb.shape[:2]
    if max(h, w) > max_side:
        f = max_side / max(h, w)
        rgb = cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        scale *= f
    return LoadedImage(np.ascontiguousarray(rgb), scale, name)


def release_memory() -> None:
    """Hand freed heap memory back to the system (glibc ``malloc_trim``; elsewhere nothing). After a
    big image, glibc keeps the freed pages (its mmap threshold has grown), so a batch's RSS would
    creep up by a decode's size; called once per file, it costs well under a millisecond."""
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM = None


def open_regular(path: str, what: str = "file"):
    """Open ``path`` for reading only if it is a regular file: ``O_NONBLOCK`` so a FIFO never blocks,
    then ``fstat`` on the descriptor (no race with a swapped path). Returns (file object, size);
    raises OSError with a one-line strerror otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                    else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
            raise OSError(errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL, f"is {kind}, not a regular {what}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def load_image(path: str | os.PathLike, max_side: int = MAX_SIDE) -> LoadedImage:
    path = os.fspath(path)
    try:
        f, size = open_regular(path)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except OSError as e:
        if e.errno == errno.EISDIR:
            raise ImageError(f"{path}: is a directory") from None
        raise ImageError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        if size > MAX_FILE_BYTES:
            raise ImageError(f"{path}: file too large ({size / 2**20:.0f} MB > {MAX_FILE_BYTES / 2**20:.0f} MB budget)")
        if size:
            _header(f, path)  # refuse a bomb before reading the whole file
            f.seek(0)
        try:
            data = f.read(MAX_FILE_BYTES + 1)
        except OSError as e:
            raise ImageError(f"{path}: cannot read ({e.strerror})") from None
    return decode_image(data, path, max_side)


def atomic_write_image(path: str | os.PathLike, rgb: np.ndarray, quality: int = 95, make_dirs: bool = True) -> None:
    """Write an RGB image so that a crash never leaves a half-written file (``atomic_write_bytes``)."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower() or ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    try:
        ok, enc = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    except cv2.error:  # no encoder for this extension
        ok = False
    if not ok:
        raise ImageError(f"{path}: cannot encode image as {ext}")
    atomic_write_bytes(path, enc.tobytes(), make_dirs)


TMP_TAG = ".tmp"


def temp_name(path: str) -> str:
    """The temp file beside ``path``: ``.<name>.tmp<pid>``, the name cut (in bytes) so that the
    whole stays within 255 bytes whatever ``path``'s length."""
    d, base = os.path.split(path)
    b = os.fsencode(base)[:200]
    return os.path.join(d, os.fsdecode(b"." + b + f"{TMP_TAG}{os.getpid()}".encode()))


def atomic_write_bytes(path: str | os.PathLike, data: bytes, make_dirs: bool = True) -> None:
    """Write to a temp file beside ``path``, fsync, rename: ``path`` is the old file or the whole new
    one, never a part. On failure the temp file is removed and the OSError names ``path`` (a full
    disk: ENOSPC). ``make_dirs=False``: a missing folder is an error, not created again (a batch
    whose output folder vanished, e.g. an unmounted stick, must not write into the mount point)."""
    path = os.fspath(path)
    if make_dirs:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:
            raise OSError(e.errno, e.strerror, path) from None
        raise


OUTPUT_LOST = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # a write that no retry of the next file will fix


def output_lost(e: BaseException, folder: str) -> bool:
    """Whether ``e`` (from writing into ``folder``) means the output is gone for every later file too:
    the disk or quota is full, the filesystem went read-only, or the folder itself vanished."""
    return isinstance(e, OSError) and (e.errno in OUTPUT_LOST or not os.path.isdir(folder))


def lost_reason(e: OSError, folder: str) -> str:
    """What to tell the user about an ``output_lost`` error: the folder is gone, or the system's words."""
    return "output folder vanished" if not os.path.isdir(folder) else (e.strerror or str(e)).lower()


def remove_stale_temps(folder: str) -> int:
    """Delete temp files left in ``folder`` by a killed writer (``.*.tmp<pid>`` and the older
    ``*.tmp<pid>``) whose process is gone. Returns how many were removed."""
    import re

    n = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for f in names:
        m = re.search(r"\.tmp(\d+)$", f)
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # a live process: maybe another writer
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, f))
            n += 1
    return n
