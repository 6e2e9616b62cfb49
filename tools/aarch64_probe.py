"""The Python half of ``make check-aarch64`` (tools/check_aarch64.sh): runs against the *installed*
``frontalize`` wheel, never the checkout.

    python aarch64_probe.py run SAMPLES OUT.npz [--crops X86.npz]   # the 3-line API + generator speed
    python aarch64_probe.py video PHOTO OUT.mp4                     # a short face video for the camera
    python aarch64_probe.py compare X86.npz ARM.npz                 # parity; exit 1 when it fails

``run`` frontalizes every photo of SAMPLES with the API's three lines, keeps each face's box, crop
and frontal, and times per face the default geometric generator and the learned one as fp32 (ONNX)
and int8 (TFLite). Given the x86 run's file (``--crops``), it runs the generators on the x86 run's
faces (the same crops and squares), so the engines are compared on identical input; ``compare``
checks the faces found, the boxes and the PSNR of the outputs.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import sys
import time

import numpy as np

# Parity bars (README "Jetson"): each generator on the same faces through another CPU's kernels, and
# the whole path (detection and crop included: a box that moves by a pixel moves the output, measured
# 24 dB on the hard-hat profile whose box moved 1.3 px, 43-83 dB on the others).
ENGINE_PSNR = {"geometry": 40.0, "fp32": 40.0, "int8": 30.0}
PATH_PSNR = 20.0
BOX_PX = 2.0
# The default generator (runtime.geometry) and the learned one as fp32 ONNX and int8 TFLite.
GENERATORS = {"geometry": "geometry", "fp32": "frontalizer.onnx", "int8": "frontalizer_int8_b1.tflite"}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse < 255.0**2 * 1e-10 else float(10 * np.log10(255.0**2 / mse))  # 100: identical


def as_face(crop, yaw, square):
    from runtime.detect import Face

    return Face(crop, None, None, None, float(yaw), "x86", square=tuple(float(v) for v in square))


def per_face_ms(engine, faces: list, photos: list, repeats: int) -> float:
    engine.frontalize(photos[0], [faces[0]])  # warm-up (XNNPACK / ORT first-call set-up)
    t = []
    for _ in range(repeats):
        for f, rgb in zip(faces, photos):
            t0 = time.perf_counter()
            engine.frontalize(rgb, [f])
            t.append(time.perf_counter() - t0)
    return 1000 * float(np.median(t))


def run(samples: str, out: str, crops_from: str | None, repeats: int) -> None:
    from runtime import Frontalizer
    from runtime.image_io import load_image
    from runtime.pipeline import load_generator

    paths = sorted(p for p in glob.glob(os.path.join(samples, "*")) if p.lower().endswith((".jpg", ".jpeg", ".png")))
    fr = Frontalizer()
    arrays, faces = {}, {}
    for p in paths:
        name = os.path.basename(p)
        res = fr(p)
        faces[name] = [{"box": [round(float(v), 2) for v in r.box], "yaw": round(r.yaw, 1)} for r in res]
        for k, r in enumerate(res):
            arrays[f"crop/{name}/{k}"], arrays[f"frontal/{name}/{k}"] = r.crop, r.frontal
            arrays[f"yaw/{name}/{k}"] = np.float32(r.face.extra.get("posenet_yaw", r.yaw))
            arrays[f"square/{name}/{k}"] = np.float64(r.face.square)
        print(f"  {name}: {len(res)} face(s) {[f['yaw'] for f in faces[name]]}", flush=True)
    # the reference faces: the x86 run's (crops, pose-network yaws, squares) when given, else this run's
    src = np.load(crops_from) if crops_from else arrays
    keys = sorted(k[5:] for k in src if k.startswith("crop/"))
    photos = {name: load_image(os.path.join(samples, name)).rgb for name in {k.rsplit("/", 1)[0] for k in keys}}
    photo_of = [photos[k.rsplit("/", 1)[0]] for k in keys]
    speed = {}
    for kind, model in GENERATORS.items():
        eng = load_generator(model, threads=2)
        # fresh faces per generator: the geometric one sets a face's yaw to 3DDFA_V2's
        ref = [as_face(src["crop/" + k], src["yaw/" + k], src["square/" + k]) for k in keys]
        for k, f, rgb in zip(keys, ref, photo_of):
            arrays[f"{kind}_on_ref/{k}"] = eng.frontalize(rgb, [f])[0]
        speed[kind] = per_face_ms(eng, ref, photo_of, repeats)
        print(f"  {kind} generator ({model}): {speed[kind]:.1f} ms per face (median of {repeats}x{len(keys)})",
              flush=True)
    import cv2
    import onnxruntime
    info = {"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__, "faces": faces, "speed_ms": speed}
    tmp = out + ".tmp.npz"
    np.savez_compressed(tmp, info=json.dumps(info), **arrays)
    os.replace(tmp, out)


def video(photo: str, out: str, frames: int = 24) -> None:
    """A 640x480 clip of one photo moving and zooming (the camera loop's input)."""
    import cv2

    src = cv2.imread(photo)
    if src is None:
        sys.exit(f"error: {photo}: not a readable image")
    h, w = src.shape[:2]
    vw = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*"mp4v"), 15.0, (640, 480))
    for i in range(frames):
        s = 420 / max(h, w) * (1 + 0.1 * np.sin(i / 4))
        m = np.float32([[s, 0, 320 - s * w / 2 + 30 * np.sin(i / 5)], [0, s, 240 - s * h / 2]])
        vw.write(cv2.warpAffine(src, m, (640, 480), borderValue=(40, 40, 40)))
    vw.release()


def compare(x86: str, arm: str) -> int:
    a, b = np.load(x86), np.load(arm)
    ia, ib = json.loads(str(a["info"])), json.loads(str(b["info"]))
    fails = []
    print(f"x86: {ia['machine']} python {ia['python']} onnxruntime {ia['onnxruntime']} numpy {ia['numpy']} "
          f"opencv {ia['opencv']}")
    print(f"arm: {ib['machine']} python {ib['python']} onnxruntime {ib['onnxruntime']} numpy {ib['numpy']} "
          f"opencv {ib['opencv']}")
    if ib["machine"] != "aarch64":
        fails.append(f"the second run is {ib['machine']}, not aarch64")
    path_psnr = []
    for name in sorted(set(ia["faces"]) | set(ib["faces"])):
        fa, fb = ia["faces"].get(name, []), ib["faces"].get(name, [])
        if len(fa) != len(fb):
            fails.append(f"{name}: {len(fa)} face(s) on x86, {len(fb)} on aarch64")
            continue
        for k, (x, y) in enumerate(zip(fa, fb)):
            d = float(np.max(np.abs(np.subtract(x["box"], y["box"]))))
            p = psnr(a[f"frontal/{name}/{k}"], b[f"frontal/{name}/{k}"])
            path_psnr.append(p)
            print(f"  {name} face {k}: box diff {d:.2f} px, yaw {x['yaw']} / {y['yaw']}, whole path PSNR {p:.1f} dB")
            if d > BOX_PX:
                fails.append(f"{name} face {k}: box differs by {d:.1f} px (> {BOX_PX})")
            if p < PATH_PSNR:
                fails.append(f"{name} face {k}: whole-path PSNR {p:.1f} dB (< {PATH_PSNR})")
    n = sum(len(v) for v in ia["faces"].values())
    print(f"faces found: x86 {n}, aarch64 {sum(len(v) for v in ib['faces'].values())} in {len(ia['faces'])} photos")
    for kind, bar in ENGINE_PSNR.items():
        keys = [k for k in b.files if k.startswith(f"{kind}_on_ref/")]
        ps = [psnr(b[k], a[k]) for k in keys]
        if not ps:
            fails.append(f"no {kind} outputs on the x86 crops")
            continue
        print(f"{kind} generator on the x86 crops: min PSNR {min(ps):.1f} dB, mean {np.mean(ps):.1f} dB "
              f"({len(ps)} faces; bar {bar} dB)")
        if min(ps) < bar:
            fails.append(f"{kind} generator: PSNR {min(ps):.1f} dB on the same crops (< {bar})")
    for kind in GENERATORS:
        print(f"{kind} generator per face: x86 {ia['speed_ms'][kind]:.1f} ms, aarch64 EMULATED (qemu-user) "
              f"{ib['speed_ms'][kind]:.1f} ms")
    for f in fails:
        print("PARITY FAIL:", f)
    print("parity:", "FAIL" if fails else "ok")
    return 1 if fails else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="aarch64_probe.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("samples")
    r.add_argument("out")
    r.add_argument("--crops", help="the x86 run's .npz: also run the generators on its crops")
    r.add_argument("--repeats", type=int, default=3)
    v = sub.add_parser("video")
    v.add_argument("photo")
    v.add_argument("out")
    c = sub.add_parser("compare")
    c.add_argument("x86")
    c.add_argument("arm")
    a = ap.parse_args(argv)
    if a.cmd == "run":
        run(a.samples, a.out, a.crops, a.repeats)
    elif a.cmd == "video":
        video(a.photo, a.out)
    else:
        return compare(a.x86, a.arm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
