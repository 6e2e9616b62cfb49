"""The pose network: a face box in, yaw + framing keypoints + a face score out.

``python -m training.posenet --labels artifacts/pose_labels.json --out runs/posenet``

It replaces dlib's 68-point model, which was trained on faces up to ~45 deg and reads profiles
wrongly (Multi-PIE +90 deg read as -3 deg). Input: a square (possibly rotated) box around a face
candidate, resampled to ``INPUT`` px (``runtime.pose.box_affine``). Outputs (one float vector,
``runtime.pose.decode`` reads it):

- ``score``: logit that the box holds a face (the verification of detector boxes);
- ``E``, ``M``: the eye-midpoint and mouth-midpoint (``training.pose_labels``) in the input's
  coordinates scaled to [-1, 1]. They fix the canonical crop (``runtime.pose.canonical_square``);
- yaw as logits over ``runtime.pose.YAW_BINS`` (-90 .. 90 deg in 15 deg steps; positive = nose towards
  the image's right); the estimate is the softmax expectation. A classification, not a regression:
  an L1 regression of yaw sat at the median (0 deg) for 1,500 steps while the keypoints trained,
  and the weak labels of the wild photos ("frontal": |yaw| <= 30, "profile": |yaw| >= 60 on the
  nose's side) become the probability of the allowed bins.

Training samples are made on the fly from the labelled images of ``training.pose_labels``: boxes
around the face jittered the way detector boxes and the refinement pass place them (see
``sample_box``), rotated, flipped (yaw sign and keypoints follow), recoloured, blurred,
downscaled; negatives are boxes away from the face and crops of the non-face pictures shipped
with scikit-image, plus (optionally) the detectors' own false boxes (``--hard-negatives``).
Only the ``train`` identities of ``training.pose_labels.SPLITS`` are read; ``val`` picks the epoch.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import cv2
import numpy as np

from runtime.pose import INPUT, YAW_BINS, apply, box_affine, canonical_square

OUT_DIM = 5 + len(YAW_BINS)  # score, Ex, Ey, Mx, My, yaw bin logits
TARGET_DIM = 7  # score, yaw/90, Ex, Ey, Mx, My, kind
NEGATIVE_IMAGES = ["brick", "coffee", "chelsea", "coins", "grass", "gravel", "horse", "hubble_deep_field",
                   "ihc", "logo", "moon", "motorcycle_left", "motorcycle_right", "page", "retina", "rocket",
                   "text", "color", "clock_motion", "chessboard_RGB", "cell", "microaneurysms"]


# ----------------------------------------------------------------------------- data
def load_rows(labels_path: str, splits=("train",)) -> tuple[str, list[dict]]:
    with open(labels_path) as f:
        lab = json.load(f)
    rows = [r for r in lab["rows"] if r["split"] in splits and r["E"] is not None]
    return lab["root"], rows


class ImageCache:
    def __init__(self, root: str):
        self.root, self.cache = root, {}

    def __call__(self, row: dict) -> np.ndarray:
        key = (row["set"], row["path"])
        img = self.cache.get(key)
        if img is None:
            bgr = cv2.imread(os.path.join(self.root, row["set"], row["path"]), cv2.IMREAD_COLOR)
            img = self.cache[key] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return img


def negative_pictures() -> list[np.ndarray]:
    import skimage

    d = os.path.join(os.path.dirname(skimage.__file__), "data")
    out = []
    for name in NEGATIVE_IMAGES:
        for ext in (".png", ".jpg"):
            p = os.path.join(d, name + ext)
            if os.path.exists(p):
                img = cv2.imread(p, cv2.IMREAD_COLOR)
                if img is not None:
                    out.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return out


def sample_box(rng, c, side, angle):
    """A pose-net input box around a face whose canonical square is (c, side, angle).

    Two regimes, as at run time: the refinement pass (box = canonical square x 1.25, small
    error) and the first pass from a detector box (centre off by up to ~0.3 of the side, side
    x0.55-1.7 of the refined one, any roll)."""
    if rng.random() < 0.45:
        k = 1.25 * math.exp(rng.normal(0, 0.06))
        shift = rng.normal(0, 0.03, 2) * side
        da = rng.normal(0, math.radians(4))
    else:
        k = 1.25 * math.exp(rng.uniform(-0.6, 0.3))
        shift = rng.uniform(-0.3, 0.3, 2) * side
        da = rng.normal(0, math.radians(12)) if rng.random() < 0.7 else rng.uniform(-math.pi / 4, math.pi / 4)
    return c[0] + shift[0], c[1] + shift[1], side * k, angle + da


def photometric(rng, x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    if rng.random() < 0.1:
        x = np.repeat(x.mean(2, keepdims=True), 3, 2)
    x = x * rng.uniform(0.6, 1.4) + rng.uniform(-40, 40)
    x = x * (1 + rng.uniform(-0.15, 0.15, 3))  # colour cast
    if rng.random() < 0.3:
        x = (x / 255.0) ** rng.uniform(0.6, 1.6) * 255.0 if x.min() >= 0 else x
    x = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < 0.25:
        f = rng.uniform(0.2, 0.6)  # small face in a small photo
        s = max(8, int(INPUT * f))
        x = cv2.resize(cv2.resize(x, (s, s), interpolation=cv2.INTER_AREA), (INPUT, INPUT))
    if rng.random() < 0.2:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < 0.2:
        ok, enc = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 70))])
        x = cv2.imdecode(enc, cv2.IMREAD_UNCHANGED)
    if rng.random() < 0.15:
        x = np.clip(x.astype(np.int16) + rng.normal(0, 6, x.shape), 0, 255).astype(np.uint8)
    return x


def warp(img, aff):
    border = cv2.BORDER_REPLICATE if np.random.random() < 0.5 else cv2.BORDER_CONSTANT
    return cv2.warpAffine(img, aff, (INPUT, INPUT), flags=cv2.INTER_LINEAR, borderMode=border)


class Sampler:
    """Endless batches (x uint8 NxHxWx3, target float Nx6, mask Nx4) for Keras."""

    def __init__(self, root, rows, seed=0, neg_fraction=0.25, hard_negatives=None, set_weights=None):
        self.rng = np.random.default_rng(seed)
        self.images = ImageCache(root)
        self.rows = rows
        w = np.array([(set_weights or {}).get(r["set"], 1.0) for r in rows], float)
        self.p = w / w.sum()
        self.neg_fraction = neg_fraction
        self.neg_pictures = negative_pictures()
        self.hard = hard_negatives or []  # (row-like {set, path}, box [x0,y0,x1,y1])

    def positive(self):
        rng = self.rng
        r = self.rows[rng.choice(len(self.rows), p=self.p)]
        img = self.images(r)
        e, m = np.array(r["E"]), np.array(r["M"])
        cx, cy, side, angle = canonical_square(e, m)
        bx, by, bs, ba = sample_box(rng, (cx, cy), side, angle)
        aff = box_affine(bx, by, bs, ba)
        x = warp(img, aff)
        kp = apply(aff, [e, m]) / INPUT * 2 - 1
        yaw = r["yaw"] / 90.0
        if rng.random() < 0.5:  # mirror: yaw sign flips, keypoints mirror
            x = x[:, ::-1]
            kp[:, 0] = -kp[:, 0]
            yaw = -yaw
        kind = {"exact": 0.0, "frontal": 1.0, "profile": 2.0}[r["yaw_kind"]]
        return photometric(rng, x), np.array([1.0, yaw, *kp.reshape(-1)], np.float32), kind

    def negative(self):
        rng = self.rng
        u = rng.random()
        if self.hard and u < 0.4:
            r, b = self.hard[rng.integers(len(self.hard))]
            img = self.images(r)
            cx, cy, s = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, (b[2] - b[0])
            aff = box_affine(cx, cy, s * 1.25 * math.exp(rng.normal(0, 0.1)), rng.normal(0, 0.2))
            return warp(img, aff)
        if u < 0.7:  # a picture without people
            img = self.neg_pictures[rng.integers(len(self.neg_pictures))]
            h, w = img.shape[:2]
            s = rng.uniform(0.1, 1.0) * min(h, w)
            aff = box_affine(rng.uniform(s / 2, w - s / 2), rng.uniform(s / 2, h - s / 2), s, rng.normal(0, 0.3))
            return warp(img, aff)
        # a box of a face photo far from the face (background, shoulders, hair, a cut-off part)
        r = self.rows[rng.integers(len(self.rows))]
        img = self.images(r)
        cx, cy, side, angle = canonical_square(r["E"], r["M"])
        for _ in range(20):
            s = side * math.exp(rng.uniform(-1.0, 0.3))
            bx, by = rng.uniform(0, img.shape[1]), rng.uniform(0, img.shape[0])
            if math.hypot(bx - cx, by - cy) > 0.75 * side + 0.5 * s:
                return warp(img, box_affine(bx, by, s, rng.normal(0, 0.3)))
        img = self.neg_pictures[rng.integers(len(self.neg_pictures))]
        return warp(img, box_affine(img.shape[1] / 2, img.shape[0] / 2, min(img.shape[:2]) / 2))

    def batch(self, n):
        xs, ts, kinds = [], [], []
        for _ in range(n):
            if self.rng.random() < self.neg_fraction:
                xs.append(photometric(self.rng, self.negative()))
                ts.append(np.zeros(TARGET_DIM - 1, np.float32))
                kinds.append(-1.0)
            else:
                x, t, k = self.positive()
                xs.append(x)
                ts.append(t)
                kinds.append(k)
        t = np.stack(ts)
        return np.stack(xs), np.concatenate([t, np.array(kinds, np.float32)[:, None]], 1)


# ----------------------------------------------------------------------------- model
def build_model(alpha: float = 0.5):
    import keras
    from keras import layers

    inp = keras.Input((INPUT, INPUT, 3), dtype="uint8", name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(keras.ops.cast(inp, "float32"))
    base = keras.applications.MobileNetV2(input_shape=(INPUT, INPUT, 3), alpha=alpha, include_top=False,
                                          weights=None)
    for layer in base.layers:  # Keras' 0.999 keeps the moving statistics at their initial values
        if isinstance(layer, layers.BatchNormalization):  # for thousands of steps (validation read garbage)
            layer.momentum = 0.95
    f = base(x)
    f = layers.GlobalAveragePooling2D()(f)
    f = layers.Dense(128, activation="relu")(f)
    out = layers.Dense(OUT_DIM, name="pose")(f)
    return keras.Model(inp, out, name="posenet")


def pose_loss(t, y):
    """t: (score, yaw/90, Ex, Ey, Mx, My, kind); kind -1 negative, 0 exact yaw, 1 'frontal' bound,
    2 'profile' bound. y: the network's (score, Ex, Ey, Mx, My, yaw bin logits)."""
    import tensorflow as tf

    bins = tf.constant(YAW_BINS, tf.float32)
    kind = t[:, 6]
    pos = tf.cast(kind >= 0, tf.float32)
    score = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=t[:, 0], logits=y[:, 0]))
    yaw = t[:, 1:2] * 90.0
    logp = tf.nn.log_softmax(y[:, 5:], -1)
    # exact: cross-entropy to a Gaussian around the true yaw (sd 7.5 deg), plus the expectation's error
    soft = tf.exp(-0.5 * tf.square((bins[None] - yaw) / 7.5))
    soft = soft / tf.reduce_sum(soft, -1, keepdims=True)
    expect = tf.reduce_sum(tf.exp(logp) * bins[None], -1)
    exact_l = -tf.reduce_sum(soft * logp, -1) + tf.abs(expect - yaw[:, 0]) / 90.0
    # weak: -log of the probability of the allowed bins
    frontal_ok = tf.cast(tf.abs(bins) <= 30, tf.float32)[None]
    profile_ok = tf.cast(tf.sign(yaw) * bins[None] >= 60, tf.float32)
    weak = lambda ok: -tf.math.log(tf.reduce_sum(tf.exp(logp) * ok, -1) + 1e-6)
    yaw_l = (tf.cast(tf.equal(kind, 0), tf.float32) * exact_l + tf.cast(tf.equal(kind, 1), tf.float32) * weak(frontal_ok)
             + tf.cast(tf.equal(kind, 2), tf.float32) * weak(profile_ok))
    kp = tf.reduce_sum(tf.abs(t[:, 2:6] - y[:, 1:5]), 1)
    n = tf.maximum(tf.reduce_sum(pos), 1.0)
    return score + tf.reduce_sum(yaw_l * pos) / n + 4.0 * tf.reduce_sum(kp * pos) / n


# ----------------------------------------------------------------------------- evaluation
def val_set(root, rows, n=1500, seed=123):
    """A fixed validation batch (refinement-pass boxes only, no photometric change)."""
    s = Sampler(root, rows, seed=seed, neg_fraction=0.0)
    xs, ts = [], []
    for _ in range(n):
        r = rows[s.rng.integers(len(rows))]
        img = s.images(r)
        cx, cy, side, angle = canonical_square(r["E"], r["M"])
        aff = box_affine(cx, cy, side * 1.25, angle)
        xs.append(cv2.warpAffine(img, aff, (INPUT, INPUT), flags=cv2.INTER_LINEAR))
        kp = apply(aff, [r["E"], r["M"]]) / INPUT * 2 - 1
        kind = {"exact": 0.0, "frontal": 1.0, "profile": 2.0}[r["yaw_kind"]]
        ts.append([1.0, r["yaw"] / 90, *kp.reshape(-1), kind])
    return np.stack(xs), np.array(ts, np.float32)


def val_metrics(model, x, t) -> dict:
    from runtime.pose import decode_yaw

    y = model.predict(x, batch_size=128, verbose=0)
    ex = t[:, 6] == 0
    yaw_mae = float(np.mean(np.abs(decode_yaw(y[ex, 5:]) - t[ex, 1] * 90)))
    kp_err = float(np.mean(np.abs(y[:, 1:5] - t[:, 2:6])) * INPUT / 2)
    return {"yaw_mae": yaw_mae, "kp_px": kp_err, "score_min": float(y[:, 0].min())}


def export_onnx(keras_path: str, onnx_path: str) -> str:
    """The trained network as ONNX (uint8 NHWC input, dynamic batch, opset 17) for runtime.pose."""
    import keras
    import tensorflow as tf
    import tf2onnx

    from runtime.image_io import atomic_write_bytes

    model = keras.models.load_model(keras_path, compile=False)
    spec = [tf.TensorSpec((None, INPUT, INPUT, 3), tf.uint8, name="image")]

    @tf.function(input_signature=spec)
    def serve(image):
        return {"pose": model(image, training=False)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=17)
    for vi in list(proto.graph.input) + list(proto.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_param = "batch"
    entry = proto.metadata_props.add()
    entry.key, entry.value = "frontalize", json.dumps({"model": "posenet", "input_size": INPUT,
                                                       "outputs": ["score_logit", "Ex", "Ey", "Mx", "My"] + [f"yaw{b:+d}" for b in YAW_BINS]})
    atomic_write_bytes(onnx_path, proto.SerializeToString())
    return onnx_path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m training.posenet", description=__doc__.split("\n")[0])
    ap.add_argument("--labels", default="artifacts/pose_labels.json")
    ap.add_argument("--out", default="runs/posenet")
    ap.add_argument("--steps", type=int, default=12000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--hard-negatives", help="JSON list of {set, path, box} boxes that are not faces")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--init", help="start from this .keras model (fine-tuning), with a fresh schedule")
    ap.add_argument("--export", metavar="ONNX", help="only export OUT/best.keras to this ONNX file")
    a = ap.parse_args(argv)
    if a.export:
        print(export_onnx(os.path.join(a.out, "best.keras"), a.export))
        return

    import keras
    import tensorflow as tf

    os.makedirs(a.out, exist_ok=True)
    root, rows = load_rows(a.labels, ("train",))
    _, vrows = load_rows(a.labels, ("val",))
    hard = []
    if a.hard_negatives:
        with open(a.hard_negatives) as f:
            hard = [({"set": h["set"], "path": h["path"]}, h["box"]) for h in json.load(f) if h.get("split") == "train"]
    # balance: the studio sets have many near-identical images, CFP has the variety of the wild
    counts = {s: sum(r["set"] == s for r in rows) for s in {r["set"] for r in rows}}
    share = {"multipie30": 0.25, "multipie137": 0.3, "cfp400": 0.45}
    weights = {s: share.get(s, 0.1) / n for s, n in counts.items()}
    print("train images:", counts, "val:", len(vrows), "hard negatives:", len(hard))
    sampler = Sampler(root, rows, seed=0, hard_negatives=hard, set_weights=weights)
    vx, vt = val_set(root, vrows)

    ckpt = os.path.join(a.out, "posenet.keras")
    model = keras.models.load_model(a.init, compile=False) if a.init else build_model(a.alpha)
    start = 0
    state_path = os.path.join(a.out, "state.json")
    if a.resume and os.path.exists(ckpt) and os.path.exists(state_path):
        model = keras.models.load_model(ckpt, compile=False)
        start = json.load(open(state_path))["step"]
    sched = keras.optimizers.schedules.CosineDecay(a.lr, a.steps, alpha=0.02)
    opt = keras.optimizers.Adam(sched)
    opt.iterations.assign(start) if start else None

    @tf.function(reduce_retracing=True)
    def step(x, t):
        with tf.GradientTape() as tape:
            y = model(x, training=True)
            loss = pose_loss(t, y)
        g = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss

    best = json.load(open(state_path)).get("best", 1e9) if start else 1e9
    t0, losses = time.time(), []
    from tqdm import tqdm

    import queue
    import threading

    batches = queue.Queue(maxsize=4)  # made on a thread while TensorFlow runs (cv2/numpy release the GIL)

    def produce():
        while True:
            batches.put(sampler.batch(a.batch))

    threading.Thread(target=produce, daemon=True).start()
    bar = tqdm(range(start, a.steps), initial=start, total=a.steps, unit="step")
    for i in bar:
        x, t = batches.get()
        losses.append(float(step(tf.constant(x), tf.constant(t))))
        if (i + 1) % 500 == 0 or i + 1 == a.steps:
            m = val_metrics(model, vx, vt)
            sel = m["yaw_mae"] / 10 + m["kp_px"]  # 10 deg of yaw ~ 1 px of keypoint
            bar.write(f"step {i + 1} loss {np.mean(losses[-500:]):.4f} val yaw MAE {m['yaw_mae']:.2f} deg, "
                      f"keypoints {m['kp_px']:.2f} px ({time.time() - t0:.0f} s)")
            tmp = ckpt + ".tmp.keras"
            model.save(tmp)
            os.replace(tmp, ckpt)
            if sel < best:
                best = sel
                model.save(os.path.join(a.out, "best.keras.tmp.keras"))
                os.replace(os.path.join(a.out, "best.keras.tmp.keras"), os.path.join(a.out, "best.keras"))
            with open(state_path + ".tmp", "w") as f:
                json.dump({"step": i + 1, "best": best, "val": m}, f)
            os.replace(state_path + ".tmp", state_path)


if __name__ == "__main__":
    main()
