"""The custom Keras layers that a saved generator (.keras) holds, registered under "frontalize".

Training builds models from them, export loads the saved files with them, and the runtime's Keras
engine needs them to load a .keras file: so they live here, in the runtime package, and not in
``training/``. Importing this module imports TensorFlow and Keras: only the Keras engine, training
and export do; the ONNX/TFLite runtime never does.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

SIZE = 128  # the generators' input and output side, in pixels
# keras-vggface version 1 preprocessing: RGB -> BGR, minus the training set's BGR mean.
VGGFACE_MEAN_BGR = (93.5940, 104.7624, 129.1863)


@keras.saving.register_keras_serializable("frontalize")
class VGGFacePreprocess(layers.Layer):
    """[-1, 1] RGB -> VGGFace input (0-255 BGR minus mean)."""

    def call(self, x):
        x = (x + 1.0) * 127.5
        x = x[..., ::-1]
        return x - tf.constant(VGGFACE_MEAN_BGR, dtype=x.dtype)



@keras.saving.register_keras_serializable("frontalize")
class WarpBlend(layers.Layer):
    """Output = softmax-weighted blend of (input warped by flow A, mirrored input warped by flow B,
    generated image).

    Frontalizing mostly moves pixels: copying them keeps the person's skin, eyes and lighting, which a
    decoder trained on 22 identities cannot invent for a new face; the mirrored source fills the half
    that a profile hides, the generated image what neither shows.

    Written for TFLite/ONNX speed, with the same result as plain bilinear sampling (float rounding
    aside): no channel slicing (a STRIDED_SLICE per tensor costs 0.18 ms in LiteRT), but 1x1
    convolutions with constant 0/1 kernels that pick and sum channels, which XNNPACK runs; one
    Gather of 2 rows per pixel from a table whose rows hold a pixel and its right, lower and
    lower-right neighbours (built by a 2x2 convolution); the mirrored source is the image sampled at
    x' = W-1-x. In LiteRT, 2 threads: 0.74 ms per 128x128 image (2.35 ms with slicing and a
    per-pixel gather of each corner).
    """

    @staticmethod
    def _constants(h: int, w: int) -> dict[str, np.ndarray]:
        gy, gx = np.meshgrid(np.arange(h, dtype="f4"), np.arange(w, dtype="f4"), indexing="ij")
        # flow channels are (ax, ay, bx, by): branch b samples the mirrored image at W-1-x.
        # the grid as a row plus a column (broadcast add): a full 128x128x4 constant adds 0.25 MB
        k = {"grid_x": np.stack([gx[:1], 0 * gx[:1], w - 1 - gx[:1], 0 * gx[:1]], -1)[None],
             "grid_y": np.stack([0 * gy[:, :1], gy[:, :1], 0 * gy[:, :1], gy[:, :1]], -1)[None],
             "sign": np.diag(np.array([1, 1, -1, 1], "f4"))}
        k["index"] = np.zeros((4, 2), "f4")  # (x0, y0) per branch -> row y0 * W + x0
        k["index"][[0, 1, 2, 3], [0, 0, 1, 1]] = [1, w, 1, w]
        k["table"] = np.zeros((2, 2, 3, 12), "f4")  # 2x2 conv: pixel, right, lower, lower-right
        for dy in (0, 1):
            for dx in (0, 1):
                k["table"][dy, dx, range(3), [(2 * dy + dx) * 3 + c for c in range(3)]] = 1
        # 24 channels of the gathered rows: branch x corner (dy, dx) x colour. Their bilinear weight
        # is (ax or 1-ax) * (ay or 1-ay) * blend weight of the branch, each a 1x1 conv (+ constant).
        k.update(wx=np.zeros((4, 24), "f4"), cx=np.zeros(24, "f4"), wy=np.zeros((4, 24), "f4"),
                 cy=np.zeros(24, "f4"), wb=np.zeros((3, 24), "f4"), sum=np.zeros((24, 3), "f4"))
        j = 0
        for br in range(2):
            for dy in (0, 1):
                for dx in (0, 1):
                    for c in range(3):
                        k["wx"][2 * br, j], k["cx"][j] = (1, 0) if dx else (-1, 1)
                        k["wy"][2 * br + 1, j], k["cy"][j] = (1, 0) if dy else (-1, 1)
                        k["wb"][br, j] = k["sum"][j, c] = 1
                        j += 1
        k["ones"] = np.ones((3, 1), "f4")
        k["third"] = np.zeros((3, 3), "f4")
        k["third"][2] = 1
        return k

    def call(self, inputs):
        image, flow, logits, generated = inputs
        h, w = image.shape[1], image.shape[2]  # static: the constants are built for this size
        k = {n: tf.constant(v, dtype=image.dtype) for n, v in self._constants(h, w).items()}

        def pick(x, name):  # 1x1 convolution with a constant kernel
            return tf.nn.conv2d(x, k[name][None, None], 1, "VALID")

        b = tf.shape(image)[0]
        xy = tf.clip_by_value(pick(flow, "sign") + k["grid_x"] + k["grid_y"], 0.0, float(max(h, w) - 1))
        if h != w:
            xy = tf.minimum(xy, tf.constant([w - 1, h - 1, w - 1, h - 1], image.dtype))
        xy0 = tf.floor(xy)
        frac = xy - xy0
        rows = tf.cast(pick(xy0, "index"), tf.int32) + tf.reshape(tf.range(b) * (h * w), [-1, 1, 1, 1])
        # zero padding: the right/lower neighbours of the last column/row exist (with weight 0)
        padded = tf.pad(image, [[0, 0], [0, 1], [0, 1], [0, 0]])
        table = tf.reshape(tf.nn.conv2d(padded, k["table"], 1, "VALID"), [-1, 12])
        pixels = tf.reshape(tf.gather(table, rows), [b, h, w, 24])
        e = tf.exp(tf.clip_by_value(logits, -80.0, 80.0))  # softmax over 3; the clip keeps exp finite
        blend = e / pick(e, "ones")
        weights = (pick(frac, "wx") + k["cx"]) * (pick(frac, "wy") + k["cy"]) * pick(blend, "wb")
        return pick(pixels * weights, "sum") + pick(blend, "third") * generated

    def compute_output_shape(self, shapes):
        return shapes[0]


@keras.saving.register_keras_serializable("frontalize")
class GeoFlow(layers.Layer):
    """Flows and blend logits of the geometric frontalization (Hassner et al. 2015, soft symmetry),
    from the face's |yaw| and a generic depth map, in WarpBlend's conventions.

    The canonical crop is centred on the eye midpoint (runtime.pose), which is the pivot: a point of
    the frontal face at (u, v) with depth z (towards the camera, 0 at the eyes) shows in a view
    turned by yaw t (nose to the right) at x = c + (u - c) cos t + z sin t, same v (c = 63.5, the
    centre in pixel indices). Branch A samples the input there; branch B the point's mirror twin,
    (2c - u, v), which a profile shows when the point itself is hidden. A point is seen when its
    surface normal still faces the camera: n = cos t + dz/du sin t > 0; the blend favours A where
    n > ``tau`` and B elsewhere. The generated branch starts off (logit -6).
    """

    def __init__(self, depth=None, tau=0.3, sharpness=12.0, **kw):
        super().__init__(**kw)
        self.tau, self.sharpness = float(tau), float(sharpness)
        self._depth_init = None if depth is None else np.asarray(depth, "float32")

    def build(self, shape):
        init = self._depth_init if self._depth_init is not None else np.zeros((SIZE, SIZE), "float32")
        self.depth = self.add_weight(name="depth", shape=(SIZE, SIZE), trainable=False,
                                     initializer=keras.initializers.Constant(init))

    def get_config(self):
        return {**super().get_config(), "tau": self.tau, "sharpness": self.sharpness}

    def call(self, yaw_deg):
        t = tf.reshape(tf.abs(tf.cast(yaw_deg, "float32")), [-1, 1, 1]) * (np.pi / 180.0)
        c, s = tf.cos(t), tf.sin(t)
        z = self.depth[None]
        gx = tf.constant(np.arange(SIZE, dtype="float32")[None, None, :])
        ctr = (SIZE - 1) / 2.0
        xa = ctr + (gx - ctr) * c + z * s
        xb = ctr + (ctr - gx) * c + z * s
        dz = tf.concat([z[:, :, 1:2] - z[:, :, :1], (z[:, :, 2:] - z[:, :, :-2]) / 2, z[:, :, -1:] - z[:, :, -2:-1]], 2)
        seen = c + dz * s
        zero = tf.zeros_like(xa)
        # WarpBlend: A samples x + ax, B samples W-1-x - bx
        flow = tf.stack([xa - gx, zero, (SIZE - 1) - gx - xb, zero], -1)
        logits = tf.stack([self.sharpness * (seen - self.tau), zero, zero - 6.0], -1)
        return flow, logits

    def compute_output_shape(self, shape):
        return (shape[0], SIZE, SIZE, 4), (shape[0], SIZE, SIZE, 3)


@keras.saving.register_keras_serializable("frontalize")
class MirrorIf(layers.Layer):
    """Mirror the images of a batch whose yaw is negative: the network only sees nose-right faces."""

    def call(self, inputs):
        img, yaw = inputs
        neg = tf.reshape(tf.cast(yaw, img.dtype) < 0, [-1, 1, 1, 1])
        return tf.where(neg, tf.reverse(img, [2]), img)

    def compute_output_shape(self, shapes):
        return shapes[0]


@keras.saving.register_keras_serializable("frontalize")
class YawPlane(layers.Layer):
    """|yaw| / 90 as a constant image plane (N, 128, 128, 1): the U-Net's view of the pose."""

    def call(self, yaw):
        a = tf.reshape(tf.abs(tf.cast(yaw, "float32")) / 90.0, [-1, 1, 1, 1])
        return tf.tile(a, [1, SIZE, SIZE, 1])

    def compute_output_shape(self, shape):
        return (shape[0], SIZE, SIZE, 1)


@keras.saving.register_keras_serializable("frontalize")
class FrontalLabel(layers.Layer):
    """The frontal yaw one-hot (``n_yaws`` labels, frontal at ``frontal_index``), one row per input
    row: the CVAE's frontalizing label. A registered layer, not a Lambda: a saved Lambda loses its
    module globals (``tf``), so the .keras file would not load again. The defaults are the CVAE's
    13 labels -90..90 in steps of 15, which files saved before these were stored rely on."""

    def __init__(self, n_yaws: int = 13, frontal_index: int = 6, **kw):
        super().__init__(**kw)
        self.n_yaws, self.frontal_index = int(n_yaws), int(frontal_index)

    def get_config(self):
        return {**super().get_config(), "n_yaws": self.n_yaws, "frontal_index": self.frontal_index}

    def call(self, yaw):
        return tf.one_hot(tf.fill(tf.shape(yaw)[:1], self.frontal_index), self.n_yaws)

    def compute_output_shape(self, shape):
        return (shape[0], self.n_yaws)
