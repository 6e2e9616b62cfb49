"""A seeded corpus of hostile inputs and the run that proves the runtime survives it (issue 12).

    python -m benchmarks.fuzz_inputs write /tmp/fuzz            # >= 1,000 files, seed 0
    python -m benchmarks.fuzz_inputs run /tmp/fuzz --model M.onnx [--md benchmarks/results/fuzz.md]

``write``: broken, truncated, padded, bomb-sized, odd-typed and oddly named files (the kinds of
issue 12), each kind in its own folder so that the report can group them. ``run``:

1. ``frontalize`` (the CLI, a subprocess with a timeout) on the whole corpus: exit code, every
   file in results.csv, no traceback, every stderr line a ``skip:``/summary line;
2. ``training.prepare`` (the CLI, ``--workers 2``) on the same corpus, same checks;
3. peak RSS per file: every file through ``process_file`` in one process, the peak reset before
   each file (``/proc/self/clear_refs`` 5, read back from ``VmHWM``): the whole process's peak
   while that file was handled (models and detectors included), max per kind.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import struct
import subprocess
import sys
import time
import zlib

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "samples", "grace_hopper.jpg")
BUDGET_MB = 600  # peak RSS of the whole CLI process on any single input


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(w: int, h: int) -> bytes:
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def jpeg_claiming(jpg: bytes, w: int, h: int) -> bytes:
    """``jpg`` with its frame header's size replaced (SOF0 or SOF2)."""
    for sof in (b"\xff\xc0", b"\xff\xc2"):
        i = jpg.find(sof)
        if i > 0:
            return jpg[:i + 5] + struct.pack(">HH", h, w) + jpg[i + 9:]
    raise ValueError("no SOF")


def mutate(data: bytes, rng: np.random.Generator, i: int) -> bytes:
    """A broken copy of ``data``, by ``i % 3``: 1-19 flipped bits, cut at a random point, or 4 bytes
    overwritten within the first 400 (the header)."""
    d = bytearray(data)
    if i % 3 == 0:
        for _ in range(int(rng.integers(1, 20))):
            k = int(rng.integers(0, len(d)))
            d[k] ^= 1 << int(rng.integers(0, 8))
    elif i % 3 == 1:
        d = d[:int(rng.integers(1, len(d)))]
    else:
        k = int(rng.integers(0, min(len(d), 400)))
        d[k:k + 4] = rng.bytes(4)
    return bytes(d)


def write_corpus(root: str, seed: int = 0) -> dict[str, int]:
    import cv2
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(seed)
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))
    small = cv2.resize(rgb, (256, 300), interpolation=cv2.INTER_AREA)

    def enc(img, fmt="JPEG", **kw) -> bytes:
        b = io.BytesIO()
        Image.fromarray(img).save(b, fmt, **kw)
        return b.getvalue()

    jpg, png = enc(small, quality=85), enc(small, "PNG")
    counts: dict[str, int] = {}

    def put(kind: str, name: str | bytes, data: bytes | None = None, make=None):
        d = os.path.join(root, kind)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(os.fsencode(d), name if isinstance(name, bytes) else os.fsencode(name))
        if make:
            make(path)
        else:
            with open(path, "wb") as f:
                f.write(data)
        counts[kind] = counts.get(kind, 0) + 1

    for i in range(20):  # real faces, resized and re-encoded
        s = rng.uniform(0.3, 1.5)
        im = cv2.resize(rgb, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        put("faces", f"f{i:03d}.{['jpg', 'png', 'webp', 'bmp'][i % 4]}", enc(im, ["JPEG", "PNG", "WEBP", "BMP"][i % 4]))
    for i in range(150):  # noise of random sizes and formats
        h, w = rng.integers(8, 320, 2)
        im = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        fmt, ext = [("JPEG", "jpg"), ("PNG", "png"), ("BMP", "bmp"), ("WEBP", "webp"), ("TIFF", "tif")][i % 5]
        put("noise", f"n{i:03d}.{ext}", enc(im, fmt))
    for i in range(200):  # JPEG cut at a random point, half with an end-of-image marker put back
        cut = int(rng.integers(2, len(jpg) - 2))
        put("jpeg_cut" if i % 2 else "jpeg_cut_eoi", f"c{i:03d}.jpg", jpg[:cut] + (b"" if i % 2 else b"\xff\xd9"))
    prog = enc(small, quality=85, progressive=True)
    for i in range(40):  # progressive JPEG cut (scans missing: the hard case)
        cut = int(rng.integers(len(prog) // 4, len(prog) - 2))
        put("jpeg_prog_cut", f"p{i:03d}.jpg", prog[:cut] + (b"\xff\xd9" if i % 2 else b""))
    for i in range(50):
        put("png_cut", f"c{i:03d}.png", png[:int(rng.integers(8, len(png) - 1))])
    for i in range(50):  # complete JPEG + trailing data (motion photo video, zero padding)
        tail = [b"\0" * int(rng.integers(1, 100000)), b"....ftypmp42" + rng.bytes(int(rng.integers(1000, 200000)))][i % 2]
        put("jpeg_trailing", f"t{i:03d}.jpg", jpg + tail)
    for i in range(30):
        put("png_after_iend", f"t{i:03d}.png", png + rng.bytes(int(rng.integers(1, 5000))))
    magics = [b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"II*\0", b"MM\0*", b"BM", b"RIFF\0\0\0\0WEBP", b"P6\n"]
    for i in range(200):  # a known magic, then garbage
        m = magics[i % len(magics)]
        put("magic_garbage", f"g{i:03d}.{['jpg', 'png', 'gif', 'tif', 'tif', 'bmp', 'webp', 'ppm'][i % 8]}",
            m + rng.bytes(int(rng.integers(0, 20000))))
    for i in range(30):
        w, h = (int(v) for v in rng.integers(9000, 65535, 2))
        put("bomb_png", f"b{i:03d}.png", png_claiming(w, h))
    for i in range(30):
        w, h = (int(v) for v in rng.integers(9000, 65535, 2))
        put("bomb_jpeg_progressive", f"b{i:03d}.jpg", jpeg_claiming(enc(np.zeros((16, 16, 3), np.uint8),
                                                                        progressive=True), w, h))
    for i in range(20):
        w, h = (int(v) for v in rng.integers(20000, 65535, 2))
        put("bomb_jpeg_baseline", f"b{i:03d}.jpg", jpeg_claiming(enc(np.zeros((16, 16, 3), np.uint8)), w, h))
    put("bomb_png", "real_12000.png", enc(np.zeros((12000, 12000), np.uint8), "PNG"))
    from runtime.image_io import MAX_DECODE_BYTES

    big = np.zeros((MAX_DECODE_BYTES // 6 // 8000 - 1, 8000, 3), np.uint8)  # just inside the decode budget
    big[::7] = 200
    big[:, ::5, 1] = 90
    put("at_budget", "rgb8_8000w.png", cv2.imencode(".png", big)[1].tobytes())
    put("at_budget", "rgb16_8000w.png", cv2.imencode(".png", big[: len(big) // 2].astype(np.uint16) * 257)[1].tobytes())
    face = cv2.resize(rgb[:, :, ::-1], (8000, len(big)), interpolation=cv2.INTER_LINEAR)
    put("at_budget", "face_8000w.png", cv2.imencode(".png", face)[1].tobytes())
    put("at_budget", "face_42mp.jpg", cv2.imencode(".jpg", cv2.resize(face, (6000, 7000)))[1].tobytes())
    del face
    put("at_budget", "noise_5200.jpg", cv2.imencode(".jpg", rng.integers(0, 256, (5200, 5200, 3), dtype=np.uint8),
                                                    [cv2.IMWRITE_JPEG_QUALITY, 97])[1].tobytes())
    del big
    for i, (h, w) in enumerate([(1, 65000), (65000, 1), (5, 50000), (50000, 5), (2, 9000), (9000, 3), (1, 1), (3, 2)] * 5):
        ext = ["png", "jpg"][i % 2]
        if ext == "jpg" and max(h, w) > 65500:
            ext = "png"
        ok, e = cv2.imencode("." + ext, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        put("extreme_aspect", f"a{i:03d}.{ext}", e.tobytes())
    g = small[..., 1]
    for i in range(40):
        b = io.BytesIO()
        kind = i % 5
        arr = [g.astype(np.float32) / 255, g.astype(np.uint32) * 1000, g.astype(np.int16) - 100,
               np.dstack([small, small[..., :2]]), small.astype(np.uint16) * 257][kind]
        tifffile.imwrite(b, arr, planarconfig="contig" if arr.ndim == 3 else None)
        put("tiff_odd", f"t{i:03d}.tif", b.getvalue())
    for i in range(20):
        frames = [Image.fromarray(np.roll(small, 10 * k, 1)) for k in range(1 + i % 3)]
        b = io.BytesIO()
        frames[0].save(b, "GIF", save_all=True, append_images=frames[1:])
        put("gif", f"g{i:03d}.gif", b.getvalue())
    # phone formats (issue 27): the HEIC encoded here with pillow-heif (tests/data/), AVIF by Pillow;
    # whole ones (faces), then bit flips, cuts and overwritten header bytes
    heic = open(os.path.join(ROOT, "tests", "data", "profile_woman.heic"), "rb").read()
    avif = enc(small, "AVIF", quality=60)
    for ext, data in (("heic", heic), ("avif", avif)):
        for i in range(5):
            put("phone_formats", f"whole{i}.{ext}", data if ext == "heic" else enc(np.roll(small, 7 * i, 1), "AVIF"))
        for i in range(60):
            put("phone_formats_broken", f"b{i:03d}.{ext}", mutate(data, rng, i))
    hdr = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 8000 +X 8000\n"
    for i in range(10):
        put("other_format", f"hdr{i}.jpg", hdr + rng.bytes(20000))
    for i, m in enumerate([b"v/1\x01", b"%PDF-1.4\n", b"\0\0\0\x18ftypheic", b"PK\x03\x04", b"\x7fELF"] * 2):
        put("other_format", f"o{i}.jpg", m + rng.bytes(3000))
    for i in range(10):
        put("empty_or_text", f"e{i}.jpg", b"")
        put("empty_or_text", f"t{i}.png", b"hello, not an image\n" * int(rng.integers(1, 100)))
    for i in range(10):  # names: 244 bytes, undecodable bytes, newline / tab, non-Latin
        put("names", ("L" * 236 + f"{i:04d}.jpg"), jpg)
        put("names", b"bad\xff\xfe" + str(i).encode() + b".jpg", jpg)
        put("names", f"new\nline\t{i}.jpg", jpg[: len(jpg) // 2])
        put("names", f"顔 {i} é.png", png)
    modes = [("L", "png"), ("RGBA", "png"), ("P", "png"), ("CMYK", "jpg"), ("I;16", "png"), ("1", "png"), ("LA", "png")]
    for i in range(49):
        mode, ext = modes[i % len(modes)]
        im = Image.fromarray(small).convert(mode if mode != "I;16" else "L")
        if mode == "I;16":
            im = Image.fromarray(np.asarray(im).astype(np.uint16) * 257)
        b = io.BytesIO()
        im.save(b, "JPEG" if ext == "jpg" else "PNG")
        put("modes", f"m{i:03d}.{ext}", b.getvalue())
    for i in range(3):
        put("special", f"fifo{i}.jpg", make=os.mkfifo)
    put("special", "zero.jpg", make=lambda p: os.symlink("/dev/zero", p))
    put("special", "dir.jpg", make=os.mkdir)

    def sparse(p):
        with open(p, "wb") as f:
            f.truncate(2**30)

    put("special", "sparse_1gib.jpg", make=sparse)
    with open(os.path.join(root, "counts.json"), "w") as f:
        json.dump({"seed": seed, "files": sum(counts.values()), "kinds": counts}, f, indent=1)
    return counts


# ---------------------------------------------------------------- run
def _files(root: str) -> list[tuple[str, str]]:
    out = []
    for kind in sorted(os.listdir(root)):
        d = os.path.join(root, kind)
        if os.path.isdir(d):
            out += [(kind, os.path.join(d, f)) for f in sorted(os.listdir(d)) if not os.path.isdir(os.path.join(d, f))]
    return out


def _hwm_mb() -> float:
    return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024


def per_file_rss(root: str, model: str, out: str) -> dict[str, tuple[float, str]]:
    from runtime import frontalize
    from runtime.image_io import release_memory
    from runtime.pipeline import Frontalizer

    fr = Frontalizer(model, threads=1, detector="default")
    os.makedirs(out, exist_ok=True)  # the CLI makes --out; process_file does not (a vanished one is an error)
    worst: dict[str, tuple[float, str]] = {}
    for kind, path in _files(root):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        try:
            frontalize.process_file(fr, path, "x", out, False, None)
        except Exception as e:  # counted as a crash by the CLI run; here only memory matters
            print(f"{kind}/{os.path.basename(path)!r}: {type(e).__name__}", file=sys.stderr)
        mb = _hwm_mb()
        release_memory()  # as the CLI does after each file
        if mb > worst.get(kind, (0, ""))[0]:
            worst[kind] = (mb, os.path.basename(path))
    return worst


def run_cli(cmd: list[str], timeout: int) -> dict:
    t0 = time.time()
    try:
        r = subprocess.run(["/usr/bin/time", "-f", "MAXRSS %M"] + cmd, cwd=ROOT, capture_output=True, timeout=timeout)
        rc, err = r.returncode, r.stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        return {"rc": "timeout", "seconds": timeout, "stderr_lines": [], "maxrss_mb": None}
    m = re.search(r"MAXRSS (\d+)", err)
    lines = [l for l in err.replace("\r", "\n").splitlines() if l.strip() and not l.startswith("MAXRSS")]
    return {"rc": rc, "seconds": round(time.time() - t0, 1), "maxrss_mb": round(int(m.group(1)) / 1024) if m else None,
            "stderr_lines": lines}


def run(root: str, model: str, work: str, md: str | None) -> dict:
    import csv

    from runtime import frontalize

    files = _files(root)
    counts = json.load(open(os.path.join(root, "counts.json")))
    res: dict = {"corpus": counts}
    out = os.path.join(work, "frontalize")
    cli = run_cli([sys.executable, "-m", "runtime.frontalize", root, "--model", model, "--out", out, "--threads", "1"], 3600)
    with open(os.path.join(out, "results.csv"), "rb") as f:
        rows = list(csv.DictReader(io.StringIO(f.read().decode("utf-8", "surrogateescape"))))
    listed = {r["file"] for r in rows}
    bar = re.compile(r"^frontalize:|^\s*$")
    other = [l for l in cli["stderr_lines"] if not (l.startswith("skip: ") or bar.match(l) or " faces from " in l)]
    res["frontalize"] = {"rc": cli["rc"], "seconds": cli["seconds"], "maxrss_mb": cli["maxrss_mb"],
                         # results.csv holds names as valid UTF-8 (undecodable bytes as \xff escapes)
                         "files": len(files), "in_results": sum(frontalize.utf8_text(p) in listed for _, p in files),
                         "status": {s: sum(r["status"] == s for r in rows) for s in ("ok", "no_face", "error")},
                         "internal_errors": sum("internal error" in r["error"] for r in rows),
                         "traceback": any("Traceback" in l for l in cli["stderr_lines"]), "other_stderr": other[:20]}
    kind_of = {frontalize.utf8_text(p): k for k, p in files}
    by_kind: dict[str, dict[str, int]] = {}
    for r in rows:
        if r["face"] in ("", "0"):
            k = by_kind.setdefault(kind_of.get(r["file"], "?"), {"ok": 0, "no_face": 0, "error": 0})
            k[r["status"]] = k.get(r["status"], 0) + 1
    res["frontalize"]["by_kind"] = by_kind
    dst = os.path.join(work, "prepare")
    pc = run_cli([sys.executable, "-m", "training.prepare", root, dst, "--workers", "2", "--no-progress",
                  "--no-manifest"], 3600)
    try:
        rep = json.load(open(os.path.join(dst, "prepare_report.json")))
    except OSError:
        print("\n".join(pc["stderr_lines"][-20:]), file=sys.stderr)
        raise
    res["prepare"] = {"rc": pc["rc"], "seconds": pc["seconds"], "maxrss_mb_parent": pc["maxrss_mb"],
                      "images": rep["images"], "faces": rep["faces"], "failed": rep["failed"],
                      "crashes": sum(f["kind"] == "unreadable" and ("Error:" in f["reason"]) for f in rep["failures"]),
                      "traceback": any("Traceback" in l for l in pc["stderr_lines"]),
                      "stderr": [l for l in pc["stderr_lines"] if " crops, " not in l][:20]}
    worst = per_file_rss(root, model, os.path.join(work, "rss"))
    res["peak_rss_mb"] = {k: {"mb": round(v[0]), "file": v[1]} for k, v in sorted(worst.items())}
    if md:
        write_md(res, md)
    return res


def write_md(res: dict, path: str) -> None:
    f, p = res["frontalize"], res["prepare"]
    lines = ["# Hostile inputs (issue 12): `python -m benchmarks.fuzz_inputs`", "",
             f"Corpus: {res['corpus']['files']} files, seed {res['corpus']['seed']}, {len(res['corpus']['kinds'])} kinds.", "",
             f"- `frontalize` on all of it: exit {f['rc']}, {f['seconds']} s, max RSS {f['maxrss_mb']} MB; "
             f"{f['in_results']} of {f['files']} files in results.csv ({f['status']['ok']} faces, "
             f"{f['status']['no_face']} no face, {f['status']['error']} error rows); internal errors "
             f"{f['internal_errors']}; traceback: {f['traceback']}; other stderr lines: {len(f['other_stderr'])}.",
             f"- `training.prepare --workers 2`: exit {p['rc']}, {p['seconds']} s; {p['images']} images, "
             f"{p['faces']} crops, {p['failed']} failed with a reason; crashes {p['crashes']}; traceback: {p['traceback']}.",
             "", f"Peak RSS of the whole process while one file is handled (models loaded; budget {BUDGET_MB} MB), "
             "worst file per kind, and what `frontalize` said about each kind's files:", "",
             "| kind | files | peak RSS (MB) | worst file | ok | no face | error |", "|---|---:|---:|---|---:|---:|---:|"]
    for k, v in res["peak_rss_mb"].items():
        st = f.get("by_kind", {}).get(k, {})
        lines.append(f"| {k} | {res['corpus']['kinds'].get(k, '')} | {v['mb']} | `{ascii(v['file'])[1:-1][:60]}` | "
                     f"{st.get('ok', '')} | {st.get('no_face', '')} | {st.get('error', '')} |")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.fuzz_inputs", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("dir")
    w.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run")
    r.add_argument("dir")
    r.add_argument("--model", required=True)
    r.add_argument("--work", default="/tmp/fuzz_work")
    r.add_argument("--md", default=os.path.join(ROOT, "benchmarks", "results", "fuzz.md"))
    a = ap.parse_args(argv)
    if a.cmd == "write":
        counts = write_corpus(a.dir, a.seed)
        print(f"{sum(counts.values())} files in {len(counts)} kinds -> {a.dir}")
        return 0
    res = run(a.dir, a.model, a.work, a.md)
    print(json.dumps(res, indent=1))
    bad = (res["frontalize"]["rc"] not in (0, 1) or res["frontalize"]["in_results"] != res["frontalize"]["files"]
           or res["frontalize"]["traceback"] or res["prepare"]["rc"] != 0 or res["prepare"]["traceback"]
           or max(v["mb"] for v in res["peak_rss_mb"].values()) > BUDGET_MB)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
