"""Fixtures and Python-runtime references for the browser tests (called by app.test.mjs).

    python tests/reference.py OUT_DIR DIST_MODELS_DIR

The sample is samples/profile_woman.jpg (a real left profile, public domain); the models are the
ones the app was built with (DIST_MODELS_DIR), run by the Python runtime (runtime.detectors,
runtime.pose, runtime.detect, runtime.engines: onnxruntime CPU), and the candidate passes are
the browser's photo passes (model.json), merged by runtime.detectors.CandidateDetector.
Writes into OUT_DIR:
- camera.y4m: the sample letterboxed into 640x480, 10 frames, for Chromium's fake camera;
- <name>.rgb: each sample's RGB bytes as runtime.image_io decodes them (the test hands the same
  bytes to the page, so that JPEG decoders play no part);
- reference.json:
  - pose: the first candidate box of FaceAnalyzer.detect, and for each of the two
    passes of PoseNet.refine on it: the input square, the 96x96 uint8 network input, the raw
    output row and the decoded pose (E, M, yaw, score, next square);
  - crop: runtime.pose.crop at the second pass's canonical square (FaceAnalyzer.face_from_box);
  - tddfa: runtime.tddfa's two passes from that square (each pass's square, 120 px input and 68
    landmarks; the pose), and geometry: runtime.geometry.GeometricFrontalizer on those landmarks
    (the default generator, GeometryEngine's steps);
  - images: FaceAnalyzer (with those passes) on each sample: its faces (with GeometryEngine's
    frontal and 3DDFA_V2's yaw) and every candidate box with its refined pose whatever the score
    (the browser's whole pipeline is compared with it: same detector, pose network, crop, generator);
  - passes: each detector pass's input tensor for the sample (view scaled and bordered,
    letterboxed, resized to the model's input) and the BlazeFace ONNX's raw outputs on it.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys

import cv2
import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from runtime.detect import FaceAnalyzer  # noqa: E402
from runtime.detectors import PRESETS, CandidateDetector  # noqa: E402
from runtime.geometry import GeometryEngine  # noqa: E402
from runtime.image_io import load_image  # noqa: E402
from runtime.pose import INPUT as POSE_INPUT, REFINE_SCALE, crop, det_square  # noqa: E402
from runtime.tddfa import INPUT as TDDFA_INPUT, Tddfa  # noqa: E402

SAMPLE = "profile_woman.jpg"
# whole-pipeline comparison; the hard hat (one sure BlazeFace pass) and the astronaut test the rules
SAMPLES = [SAMPLE, "two_people_three_quarter.jpg", "profile_hard_hat.jpg", "astronaut.jpg"]
b64 = lambda a: base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()  # noqa: E731


def write_y4m(rgb: np.ndarray, path: str, w: int = 640, h: int = 480, frames: int = 10) -> None:
    f = min(w / rgb.shape[1], h / rgb.shape[0])
    im = cv2.resize(rgb, (round(rgb.shape[1] * f), round(rgb.shape[0] * f)), interpolation=cv2.INTER_AREA)
    frame = np.full((h, w, 3), 90, np.uint8)
    y0, x0 = (h - im.shape[0]) // 2, (w - im.shape[1]) // 2
    frame[y0:y0 + im.shape[0], x0:x0 + im.shape[1]] = im
    yuv = cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes()
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + yuv)


def pose_dict(p) -> dict:
    return {"E": p.E.tolist(), "M": p.M.tolist(), "yaw": p.yaw, "score": p.score, "square": list(p.square)}


def face_dict(f, frontal) -> dict:
    return {"E": f.landmarks[0].tolist(), "M": f.landmarks[1].tolist(), "yaw": f.extra["posenet_yaw"],
            "tddfa_yaw": f.yaw, "score": f.score, "square": list(f.square), "crop": b64(f.crop), "frontal": b64(frontal)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("models", help="dist/models: model.json, posenet.onnx, frontalizer.onnx, blazeface_*.onnx")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.models, "model.json")) as f:
        names = [p["name"] for p in json.load(f)["detector"]["passes"]["photo"]]
    # The browser's photo passes (runtime.detectors passes by name), merged as CandidateDetector does.
    passes = list({p.name: p for preset in PRESETS.values() for p in preset if p.name in names}.values())
    fa = FaceAnalyzer("fast", pose_model=os.path.join(args.models, "posenet.onnx"), threads=1)
    geo = GeometryEngine(threads=1)
    geo.tddfa = Tddfa(os.path.join(args.models, "tddfa_mb05.onnx"), threads=1)  # the file the app was built with
    fa.candidates = CandidateDetector(passes)
    ref = {"sample": SAMPLE, "images": {}}
    for name in SAMPLES:
        rgb = load_image(os.path.join(ROOT, "samples", name)).rgb
        with open(os.path.join(args.out, name + ".rgb"), "wb") as f:
            f.write(rgb.tobytes())
        cands = fa.detect(rgb)
        faces, _ = fa.faces_from_candidates(rgb, cands)
        frontals = geo.frontalize(rgb, faces)  # sets face.yaw to 3DDFA_V2's (the pose network's in extra)
        poses = fa.pose.refine(rgb, [c[0] for c in cands])  # every candidate, whatever its score
        ref["images"][name] = {"width": rgb.shape[1], "height": rgb.shape[0],
                               "faces": [face_dict(f, y) for f, y in zip(faces, frontals)],
                               "candidates": [{"box": c[0].tolist(), **pose_dict(p)} for c, p in zip(cands, poses)]}
    rgb = load_image(os.path.join(ROOT, "samples", SAMPLE)).rgb
    write_y4m(rgb, os.path.join(args.out, "camera.y4m"))

    # The pose network's two passes on the first detector box, step by step (PoseNet.refine).
    cands = fa.detect(rgb)
    if not cands:
        sys.exit(f"error: the detector passes find no candidate in {SAMPLE}")
    box = cands[0][0]
    steps, sq = [], det_square(box)
    for _ in range(2):
        x = crop(rgb, sq, POSE_INPUT)[None]
        row = fa.pose.sess.run(None, {fa.pose.inp: x})[0][0]
        p = fa.pose.predict(rgb, [sq])[0]
        steps.append({"square": list(sq), "input": b64(x[0]), "row": row.tolist(), "pose": pose_dict(p)})
        sq = (p.square[0], p.square[1], p.square[2] * REFINE_SCALE, p.square[3])
    face = fa.face_from_box(rgb, box)
    ref["pose"] = {"box": box.tolist(), "passes": steps}
    ref["crop"] = {"square": list(face.square), "size": int(face.crop.shape[0]), "pixels": b64(face.crop), "yaw": face.yaw}

    # 3DDFA_V2's two passes from that canonical square (Tddfa.read), and the geometry on its landmarks.
    sq1 = geo.tddfa.first_square(face.square)
    first_in = crop(rgb, sq1, TDDFA_INPUT)
    _, lm1 = geo.tddfa._run(rgb, [sq1])
    pose = geo.tddfa.read(rgb, [face.square])[0]
    frontal = geo.geometry.frontalize(rgb, pose.landmarks, face.square, int(face.crop.shape[0]))
    ref["tddfa"] = {"first": {"square": list(map(float, sq1)), "input": b64(first_in), "landmarks": geo.tddfa._to_image(lm1[0], sq1).tolist()},
                    "second": {"square": list(map(float, pose.square)), "input": b64(crop(rgb, pose.square, TDDFA_INPUT)),
                               "landmarks": pose.landmarks.tolist()},
                    "yaw": pose.yaw, "pitch": pose.pitch, "roll": pose.roll}
    ref["geometry"] = {"square": list(face.square), "landmarks": pose.landmarks.tolist(), "output": b64(frontal)}

    # Each pass's BlazeFace input tensor, caught on its way into LiteRT, and the raw outputs of
    # the ONNX twin that the browser runs on it.
    ref["passes"] = []
    with open(os.path.join(args.models, "model.json")) as f:
        variants = json.load(f)["detector"]["variants"]
    for runner in fa.candidates.runners:
        seen, interp = [], runner.backend.interp
        set_tensor = interp.set_tensor
        interp.set_tensor = lambda i, v: (seen.append(np.array(v)), set_tensor(i, v))[1]
        runner(rgb)
        interp.set_tensor = set_tensor
        variant = runner.p.kind.split("-", 1)[1]
        sess = ort.InferenceSession(os.path.join(args.models, variants[variant]["file"]), providers=["CPUExecutionProvider"])
        logits, reg = sorted(sess.run(None, {sess.get_inputs()[0].name: seen[0]}), key=lambda a: a.shape[-1])
        ref["passes"].append({"name": runner.p.name, "variant": variant, "input": b64(seen[0]), "regressors": b64(reg),
                              "logits": b64(logits)})
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(ref, f)


if __name__ == "__main__":
    main()
