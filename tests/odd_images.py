"""Writes the odd and bad inputs the loader, the face pipeline and prepare must survive.

Each is made from the bundled sample photo or from scratch; ``EXPECT`` says what each
should give (an ImageError phrase, or the number of faces / a documented result).
"""
import os
import struct
import zlib

import cv2
import numpy as np
from PIL import Image

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples", "grace_hopper.jpg")

# name -> ("error", phrase in the one-line message) | ("faces", n) | ("small", None): a ~20 px face,
# documented result: no face, with a "smaller than" note when the detector saw it.
EXPECT = {
    "not_an_image.jpg": ("error", "not an image"),
    "truncated.jpg": ("error", "truncated JPEG"),
    "empty.jpg": ("error", "empty file"),
    "huge_header.png": ("error", "too large"),
    "gray.png": ("faces", 1),
    "rgba.png": ("faces", 1),
    "gray16.png": ("faces", 1),
    "color16.png": ("faces", 1),
    "exif_rotated.jpg": ("faces", 1),
    "noise.png": ("faces", 0),
    "two_faces.jpg": ("faces", 2),
    "tiny_face.png": ("small", None),
    "huge_20000.jpg": ("faces", 1),
}


def png_with_size(w: int, h: int) -> bytes:
    """A valid 1-pixel PNG whose header claims w x h (only the header is read before refusing it)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))


def write_huge(path: str, side: int = 20000) -> None:
    """A side x side grayscale JPEG with the sample face pasted 8x larger (~1700 px face)."""
    g = Image.open(SAMPLE).convert("L")
    big = g.resize((g.width * 8, g.height * 8), Image.NEAREST)
    im = Image.new("L", (side, side), 128)
    im.paste(big, (side // 3, side // 4))
    im.save(path, quality=70)


def write_all(folder: str, huge: bool = True) -> dict[str, str]:
    os.makedirs(folder, exist_ok=True)
    p = {n: os.path.join(folder, n) for n in EXPECT if huge or n != "huge_20000.jpg"}
    data = open(SAMPLE, "rb").read()
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))
    with open(p["not_an_image.jpg"], "w") as f:
        f.write("this is a text file, not a JPEG\n")
    with open(p["truncated.jpg"], "wb") as f:
        f.write(data[: len(data) // 2])
    open(p["empty.jpg"], "wb").close()
    with open(p["huge_header.png"], "wb") as f:
        f.write(png_with_size(30000, 30000))
    Image.fromarray(rgb).convert("L").save(p["gray.png"])
    rgba = np.dstack([rgb, np.linspace(0, 255, rgb.shape[1], dtype=np.uint8)[None].repeat(rgb.shape[0], 0)])
    Image.fromarray(rgba, "RGBA").save(p["rgba.png"])
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    Image.fromarray(gray.astype(np.uint16) * 257).save(p["gray16.png"])  # PIL mode I;16
    cv2.imwrite(p["color16.png"], rgb[:, :, ::-1].astype(np.uint16) * 257)
    # Stored turned 90 deg counter-clockwise; EXIF orientation 6 says "rotate 90 clockwise to view".
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1))).save(p["exif_rotated.jpg"], quality=95, exif=exif.tobytes())
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(p["noise.png"])
    Image.fromarray(np.hstack([rgb, rgb])).save(p["two_faces.jpg"], quality=95)
    f = 20 / 215  # the sample's face is ~215 px wide
    Image.fromarray(cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)).save(p["tiny_face.png"])
    if huge:
        write_huge(p["huge_20000.jpg"])
    return p
