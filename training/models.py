"""Keras 3 models: the four seed models (VGGFace U-Net autoencoder, pix2pix, DCGAN, CVAE) and
the edge generator. All generators map a 128x128 RGB image in [-1, 1] to one in [-1, 1].

Each trainable model is a ``keras.Model`` subclass owning its sub-networks and its own
``train_step`` (the keras-io pix2pix/CycleGAN pattern); ``model.generator`` is the network
that is exported (the CVAE exports ``model.frontalizer``: image + yaw one-hot -> frontal).
"""
from __future__ import annotations

import os

import h5py
import keras
import numpy as np
import tensorflow as tf
from keras import layers

from .datasets import FRONTAL_INDEX, YAWS

SIZE = 128
N_YAWS = len(YAWS)
VGGFACE_WEIGHTS = os.path.expanduser("~/.keras/models/vggface/rcmalli_vggface_tf_notop_vgg16.h5")
# keras-vggface version 1 preprocessing: RGB -> BGR, minus the training set's BGR mean.
VGGFACE_MEAN_BGR = (93.5940, 104.7624, 129.1863)


# BatchNorm momentum 0.9, not Keras' 0.99: with 0.99 the moving variance still carries the huge
# activations of the first ~100 steps after a few hundred steps (measured: 2-10x too large per layer
# after 330 steps), which compounds over 35 layers into a near-constant output at inference.
BN_MOMENTUM = 0.9


def _bn(name=None):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)


# ----------------------------------------------------------------------------- VGGFace
@keras.saving.register_keras_serializable("frontalize")
class VGGFacePreprocess(layers.Layer):
    """[-1, 1] RGB -> VGGFace input (0-255 BGR minus mean)."""

    def call(self, x):
        x = (x + 1.0) * 127.5
        x = x[..., ::-1]
        return x - tf.constant(VGGFACE_MEAN_BGR, dtype=x.dtype)


def vggface_encoder(size: int = SIZE) -> keras.Model:
    """VGG16 layout with keras-vggface's layer names, outputs the skip features and pool5."""
    inp = keras.Input((size, size, 3), name="image")
    x = VGGFacePreprocess(name="vggface_preprocess")(inp)
    feats = {}
    for block, (n, ch) in enumerate([(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)], start=1):
        for i in range(1, n + 1):
            x = layers.Conv2D(ch, 3, padding="same", activation="relu", name=f"conv{block}_{i}")(x)
        feats[f"conv{block}_{n}"] = x
        x = layers.MaxPooling2D(2, 2, name=f"pool{block}")(x)
    feats["pool5"] = x
    return keras.Model(inp, feats, name="vggface_vgg16")


def load_vggface_weights(encoder: keras.Model, path: str = VGGFACE_WEIGHTS, verbose: bool = True) -> bool:
    """Load a keras-vggface .h5 (Keras 2 save_weights layout) into ``encoder`` by layer name.

    Returns False when the file is absent: the encoder keeps its random weights (``vgg_unet``
    says so and trains it).
    """
    if not os.path.exists(path):
        return False
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["layer_names"]]
        loaded = 0
        for name in names:
            try:
                layer = encoder.get_layer(name)
            except ValueError:
                continue  # e.g. fc layers of the full model
            g = group[name]
            wnames = [w.decode() if isinstance(w, bytes) else w for w in g.attrs["weight_names"]]
            weights = [np.asarray(g[w]) for w in wnames]
            if not weights and not layer.weights:
                continue  # pooling / input: nothing to load, not counted as loaded
            if [w.shape for w in weights] != [tuple(v.shape) for v in layer.weights]:
                raise ValueError(f"{path}: layer {name} has shapes {[w.shape for w in weights]}, "
                                 f"expected {[tuple(v.shape) for v in layer.weights]}")
            layer.set_weights(weights)
            loaded += 1
    if loaded == 0:
        raise ValueError(f"{path}: no layer of the VGG16 encoder found in this file")
    if verbose:
        print(f"VGGFace weights: {loaded} layers loaded from {path}")
    return True


# What the generator's sidecar and the model card say about the encoder (``encoder_state``).
ENCODER_PRETRAINED = "VGGFace weights, frozen"
ENCODER_RANDOM = "random initialisation, trained with the decoder (no VGGFace weights)"


def vgg_unet(decoder: str = "upsample", name: str = "vgg_unet", weights: str | None = VGGFACE_WEIGHTS) -> keras.Model:
    """U-Net on the VGGFace encoder, skips from conv2_2 ... conv5_3.

    With the VGGFace weights (loaded by layer name from ``weights``) the encoder is frozen, as in
    the original project. Without them (``weights`` None or the file absent) it starts from random
    weights and trains with the decoder: a frozen random encoder cannot learn faces. Either way
    one line says which.

    decoder="upsample": bilinear upsampling + conv (the autoencoder); "transpose": transposed
    convs (pix2pix generator). Output tanh in [-1, 1].
    """
    enc = vggface_encoder()
    pretrained = weights is not None and load_vggface_weights(enc, weights)
    enc.trainable = not pretrained
    if not pretrained:
        where = f"not found at {weights}" if weights is not None else "not given"
        print(f"VGGFace weights {where}: the encoder starts from random weights and trains with the decoder.",
              flush=True)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    f = enc(inp)
    x = f["pool5"]  # 4x4x512
    for skip, ch in [("conv5_3", 512), ("conv4_3", 256), ("conv3_3", 128), ("conv2_2", 64)]:
        if decoder == "transpose":
            x = layers.Conv2DTranspose(ch, 4, strides=2, padding="same", use_bias=False)(x)
        else:
            x = layers.UpSampling2D(2, interpolation="bilinear")(x)
            x = layers.Conv2D(ch, 3, padding="same", use_bias=False)(x)
        x = _bn()(x)
        x = layers.ReLU()(x)
        x = layers.Concatenate()([x, f[skip]])
        x = layers.Conv2D(ch, 3, padding="same", activation="relu")(x)
    if decoder == "transpose":  # 64 -> 128
        x = layers.Conv2DTranspose(32, 4, strides=2, padding="same", activation="relu")(x)
    else:
        x = layers.UpSampling2D(2, interpolation="bilinear")(x)
        x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    out = layers.Conv2D(3, 3, padding="same", activation="tanh", dtype="float32", name="frontal")(x)
    return keras.Model(inp, out, name=name)


def encoder_state(generator: keras.Model) -> str | None:
    """ENCODER_PRETRAINED / ENCODER_RANDOM for a VGG U-Net generator, None for the others."""
    try:
        enc = generator.get_layer("vggface_vgg16")
    except ValueError:
        return None
    return ENCODER_RANDOM if enc.trainable else ENCODER_PRETRAINED


# ----------------------------------------------------------------------------- discriminators
def patchgan(base: int = 64, name: str = "patchgan") -> keras.Model:
    """pix2pix PatchGAN (70x70 receptive field) on concat(input, output): logits per patch."""
    a = keras.Input((SIZE, SIZE, 3), name="input_image")
    b = keras.Input((SIZE, SIZE, 3), name="target_image")
    x = layers.Concatenate()([a, b])
    for i, ch in enumerate([base, base * 2, base * 4]):
        x = layers.Conv2D(ch, 4, strides=2, padding="same", use_bias=i == 0)(x)
        if i:
            x = _bn()(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.ZeroPadding2D()(x)
    x = layers.Conv2D(base * 8, 4, use_bias=False)(x)
    x = _bn()(x)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.ZeroPadding2D()(x)
    out = layers.Conv2D(1, 4, dtype="float32")(x)
    return keras.Model([a, b], out, name=name)


def dcgan_discriminator(base: int = 64) -> keras.Model:
    inp = keras.Input((SIZE, SIZE, 3))
    x = inp
    for i, ch in enumerate([base, base * 2, base * 4, base * 8]):
        x = layers.Conv2D(ch, 4, strides=2, padding="same")(x)
        if i:
            x = _bn()(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Flatten()(x)
    return keras.Model(inp, layers.Dense(1, dtype="float32")(x), name="dcgan_discriminator")


# ----------------------------------------------------------------------------- DCGAN generator
def dcgan_generator(latent: int = 256, base: int = 64) -> keras.Model:
    """Conv encoder -> latent vector -> DCGAN transposed-conv decoder (no skips)."""
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = inp
    for i, ch in enumerate([base, base * 2, base * 4, base * 8, base * 8]):  # 128 -> 4
        x = layers.Conv2D(ch, 4, strides=2, padding="same", use_bias=i == 0)(x)
        if i:
            x = _bn()(x)
        x = layers.LeakyReLU(0.2)(x)
    z = layers.Dense(latent)(layers.Flatten()(x))
    x = layers.Dense(4 * 4 * base * 8, use_bias=False)(z)
    x = layers.ReLU()(_bn()(x))
    x = layers.Reshape((4, 4, base * 8))(x)
    for ch in [base * 8, base * 4, base * 2, base]:  # 4 -> 64
        x = layers.Conv2DTranspose(ch, 4, strides=2, padding="same", use_bias=False)(x)
        x = layers.ReLU()(_bn()(x))
    out = layers.Conv2DTranspose(3, 4, strides=2, padding="same", activation="tanh", dtype="float32",
                                 name="frontal")(x)
    return keras.Model(inp, out, name="dcgan_generator")


# ----------------------------------------------------------------------------- edge generator
def _ds_block(x, ch, stride=1, name=None):
    """MobileNet depthwise-separable block: dw3x3 -> BN -> ReLU6 -> pw1x1 -> BN -> ReLU6."""
    x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.ReLU(6.0)(_bn(name=f"{name}_dw_bn")(x))
    x = layers.Conv2D(ch, 1, use_bias=False, name=f"{name}_pw")(x)
    return layers.ReLU(6.0)(_bn(name=f"{name}_pw_bn")(x))


@keras.saving.register_keras_serializable("frontalize")
class WarpBlend(layers.Layer):
    """Output = softmax-weighted blend of (input warped by flow A, mirrored input warped by flow B,
    generated image).

    Frontalizing mostly moves pixels: copying them keeps the person's skin, eyes and lighting, which a
    decoder trained on 22 identities cannot invent for a new face; the mirrored source fills the half
    that a profile hides, the generated image what neither shows.

    Written for TFLite/ONNX speed, with the same result as plain bilinear sampling (float rounding
    aside): no channel slicing (a STRIDED_SLICE per tensor cost 0.18 ms in LiteRT, most of the old
    2.4 ms head), but 1x1 convolutions with constant 0/1 kernels that pick and sum channels, which
    XNNPACK runs; one Gather of 2 rows per pixel from a table whose rows hold a pixel and its right,
    lower and lower-right neighbours (built by a 2x2 convolution); the mirrored source is the image
    sampled at x' = W-1-x. Measured in LiteRT, 2 threads: 2.35 ms -> 0.74 ms per 128x128 image.
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


def edge_generator(width: float = 1.0, name: str = "edge_generator") -> keras.Model:
    """U-Net of depthwise-separable blocks with a dense bottleneck (global view for the pose change).

    Its heads predict two flow fields (at 16x16, upsampled), a 3-way blend and a generated image;
    WarpBlend turns them into the frontal face. At initialisation the flows are zero and the blend
    favours the input, so training starts from the raw input and learns to move it.
    """
    c = [int(round(v * width)) for v in (32, 64, 128, 192, 256)]
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = layers.Conv2D(c[0], 3, strides=2, padding="same", use_bias=False, name="stem")(inp)  # 64
    x = layers.ReLU(6.0)(_bn(name="stem_bn")(x))
    x = s64 = _ds_block(x, c[0], name="e64")
    x = _ds_block(x, c[1], 2, "d32")
    x = s32 = _ds_block(x, c[1], name="e32")
    x = _ds_block(x, c[2], 2, "d16")
    x = s16 = _ds_block(x, c[2], name="e16")
    x = _ds_block(x, c[3], 2, "d8")
    x = s8 = _ds_block(x, c[3], name="e8")
    x = _ds_block(x, c[4], 2, "d4")  # 4x4
    # Dense bottleneck: frontalizing moves features across the whole face.
    g = layers.Dense(256, activation="relu", name="bottleneck_in")(layers.Flatten()(x))
    g = layers.Dense(4 * 4 * c[4], activation="relu", name="bottleneck_out")(g)
    x = layers.Concatenate()([x, layers.Reshape((4, 4, c[4]))(g)])
    flow = None
    for skip, ch, tag in [(s8, c[3], "u8"), (s16, c[2], "u16"), (s32, c[1], "u32"), (s64, c[0], "u64")]:
        x = layers.UpSampling2D(2, interpolation="bilinear")(x)
        x = layers.Concatenate()([x, skip])
        x = _ds_block(x, ch, name=f"{tag}a")
        x = _ds_block(x, ch, name=f"{tag}b")
        if tag == "u16":  # smooth flow: predicted at 16x16, in units of 8 px, upsampled x8
            # (a 32x32 flow tore the face into patches after 1000 steps; 16x16 keeps pieces whole)
            flow = layers.Conv2D(4, 3, padding="same", kernel_initializer="zeros", name="flow")(x)
            flow = layers.Rescaling(8.0)(layers.UpSampling2D(8, interpolation="bilinear")(flow))
    x = layers.UpSampling2D(2, interpolation="bilinear")(x)  # 128
    x = _ds_block(x, 24, name="u128")
    generated = layers.Conv2D(3, 3, padding="same", activation="tanh", name="generated")(x)
    blend = layers.Conv2D(3, 3, padding="same", kernel_initializer="zeros",
                          bias_initializer=keras.initializers.Constant([3.0, 0.0, 0.0]), name="blend")(x)
    out = WarpBlend(dtype="float32", name="frontal")([inp, flow, blend, generated])
    return keras.Model(inp, out, name=name)


# ----------------------------------------------------------------------------- geometric generator
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


def geo_generator(width: float = 1.0, depth=None, name: str = "geo_generator") -> keras.Model:
    """(canonical face crop, its yaw in degrees) -> frontal face.

    1. Faces turned left are mirrored, so what follows sees |yaw| (mirrored back at the end).
    2. GeoFlow + WarpBlend: the geometric frontal (visible side resampled from a generic 3D face,
       hidden side from its mirror twin): the person's own pixels, moved where a frontal view has them.
    3. A U-Net of depthwise-separable blocks sees input, geometric frontal and |yaw|, and corrects
       the geometry: residual flows (16x16, upsampled, bounded to +-16 px), residual blend logits
       (32x32, upsampled) and a generated image for what neither branch shows. Its heads start at zero, so an
       untrained network outputs the geometric frontal.
    """
    if depth is None:
        from .face_prior import depth_map

        depth = depth_map()
    c = [int(round(v * width)) for v in (24, 48, 96, 144, 192)]
    img = keras.Input((SIZE, SIZE, 3), name="image")
    yaw = keras.Input((1,), name="yaw")
    x = MirrorIf(name="mirror_in")([img, yaw])
    geo_flow, geo_logits = GeoFlow(depth, name="geo_flow")(yaw)
    # generated branch at logit -6: x leaks in with weight < 0.3 %
    geo = WarpBlend(dtype="float32", name="geo_frontal")([x, geo_flow, geo_logits, x])
    yaw_map = YawPlane(name="yaw_plane")(yaw)
    h = layers.Concatenate()([x, geo, yaw_map])
    h = layers.Conv2D(c[0], 3, strides=2, padding="same", use_bias=False, name="stem")(h)  # 64
    h = layers.ReLU(6.0)(_bn(name="stem_bn")(h))
    h = s64 = _ds_block(h, c[0], name="e64")
    h = _ds_block(h, c[1], 2, "d32")
    h = s32 = _ds_block(h, c[1], name="e32")
    h = _ds_block(h, c[2], 2, "d16")
    h = s16 = _ds_block(h, c[2], name="e16")
    h = _ds_block(h, c[3], 2, "d8")
    h = s8 = _ds_block(h, c[3], name="e8")
    h = _ds_block(h, c[4], 2, "d4")  # 4x4: a global view for the pose change
    g = layers.Dense(256, activation="relu", name="bottleneck_in")(layers.Flatten()(h))
    g = layers.Dense(4 * 4 * c[4], activation="relu", name="bottleneck_out")(g)
    h = layers.Concatenate()([h, layers.Reshape((4, 4, c[4]))(g)])
    dflow = None
    for skip, ch, tag in [(s8, c[3], "u8"), (s16, c[2], "u16"), (s32, c[1], "u32"), (s64, c[0], "u64")]:
        h = layers.UpSampling2D(2, interpolation="bilinear")(h)
        h = layers.Concatenate()([h, skip])
        h = _ds_block(h, ch, name=f"{tag}a")
        h = _ds_block(h, ch, name=f"{tag}b")
        if tag == "u16":
            dflow = layers.Conv2D(4, 3, padding="same", kernel_initializer="zeros", activation="tanh", name="dflow")(h)
            dflow = layers.Rescaling(16.0)(layers.UpSampling2D(8, interpolation="bilinear")(dflow))
        if tag == "u32":
            # Blend logits at 32x32, upsampled: a per-pixel (128x128) choice between the three
            # sources turned into salt-and-pepper speckle within 250 steps (runs geo2-geo5).
            dlogits = layers.Conv2D(3, 3, padding="same", kernel_initializer="zeros", name="dlogits")(h)
            dlogits = layers.UpSampling2D(4, interpolation="bilinear", name="dlogits_up")(dlogits)
    # The generated image at 64x64, upsampled, from a zero kernel (mid-grey at the start): a 128 px
    # head from random weights fed speckle into the blend (runs geo2-geo6).
    generated = layers.Conv2D(3, 3, padding="same", activation="tanh", kernel_initializer="zeros",
                              name="generated")(h)
    generated = layers.UpSampling2D(2, interpolation="bilinear", name="generated_up")(generated)
    flow = layers.Add(name="flow")([geo_flow, dflow])
    logits = layers.Add(name="logits")([geo_logits, dlogits])
    out = WarpBlend(dtype="float32", name="frontal_blend")([x, flow, logits, generated])
    out = MirrorIf(name="frontal")([out, yaw])
    return keras.Model([img, yaw], out, name=name)


# ----------------------------------------------------------------------------- CVAE networks
def cvae_networks(latent: int = 128, base: int = 32) -> tuple[keras.Model, keras.Model]:
    img = keras.Input((SIZE, SIZE, 3), name="image")
    yaw = keras.Input((N_YAWS,), name="yaw")
    lab = layers.Reshape((1, 1, N_YAWS))(yaw)
    x = layers.Concatenate()([img, layers.UpSampling2D(SIZE)(lab)])
    for ch in [base, base * 2, base * 4, base * 8, base * 8]:
        x = layers.Conv2D(ch, 4, strides=2, padding="same")(x)
        x = layers.LeakyReLU(0.2)(_bn()(x))
    h = layers.Concatenate()([layers.Flatten()(x), yaw])
    # float32 under mixed precision: the sampling noise and the KL term are float32
    mu = layers.Dense(latent, name="mu", dtype="float32")(h)
    logvar = layers.Dense(latent, name="logvar", dtype="float32")(h)
    encoder = keras.Model([img, yaw], [mu, logvar], name="cvae_encoder")

    z = keras.Input((latent,), name="z")
    yaw2 = keras.Input((N_YAWS,), name="yaw")
    x = layers.Dense(4 * 4 * base * 8, activation="relu")(layers.Concatenate()([z, yaw2]))
    x = layers.Reshape((4, 4, base * 8))(x)
    for ch in [base * 8, base * 4, base * 2, base]:
        x = layers.Conv2DTranspose(ch, 4, strides=2, padding="same", use_bias=False)(x)
        x = layers.ReLU()(_bn()(x))
    out = layers.Conv2DTranspose(3, 4, strides=2, padding="same", activation="tanh", dtype="float32")(x)
    decoder = keras.Model([z, yaw2], out, name="cvae_decoder")
    return encoder, decoder


@keras.saving.register_keras_serializable("frontalize")
class FrontalLabel(layers.Layer):
    """The frontal yaw one-hot, one row per input row. A registered layer, not a Lambda: a saved
    Lambda loses its module globals (``tf``), so the .keras file would not load again."""

    def call(self, yaw):
        return tf.one_hot(tf.fill(tf.shape(yaw)[:1], FRONTAL_INDEX), N_YAWS)

    def compute_output_shape(self, shape):
        return (shape[0], N_YAWS)


def cvae_frontalizer(encoder: keras.Model, decoder: keras.Model) -> keras.Model:
    """Deterministic frontalizing path: (image, its yaw one-hot) -> decode(mu, frontal label)."""
    img = keras.Input((SIZE, SIZE, 3), name="image")
    yaw = keras.Input((N_YAWS,), name="yaw")
    mu, _ = encoder([img, yaw])
    frontal = FrontalLabel(name="frontal_label")(yaw)
    return keras.Model([img, yaw], decoder([mu, frontal]), name="cvae_frontalizer")


# ----------------------------------------------------------------------------- trainable wrappers
def _adv_loss(logits, real: bool, rows=None):
    """Mean sigmoid cross-entropy; with ``rows`` (per-row weights) only over rows whose weight is > 0."""
    labels = tf.ones_like(logits) if real else tf.zeros_like(logits)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels, logits)
    if rows is None:
        return tf.reduce_mean(ce)
    return _mean_of_rows(tf.cast(ce, "float32"), rows > 0)


def _mean_of_rows(values, keep):
    """Mean of each row of ``values`` (batch first), averaged over the rows where ``keep``; 0 if none."""
    per_row = tf.reduce_mean(values, axis=list(range(1, len(values.shape))))
    keep = tf.cast(keep, "float32")
    return tf.reduce_sum(per_row * keep) / tf.maximum(tf.reduce_sum(keep), 1.0)


def symmetry_loss(fake, w):
    """Mean |fake - mirror(fake)| over the rows whose pixel weight ``w`` is 0 (0 when there are none)."""
    fake = tf.cast(fake, "float32")
    return _mean_of_rows(tf.abs(fake - fake[:, :, ::-1]), w <= 0)


class Frontalizer(keras.Model):
    """Base: holds ``generator`` and the per-replica loss scaling for tf.distribute."""

    kind = "base"

    def __init__(self, id_net=None, id_weight=0.0, id_table=None, sym_weight=0.0, **kw):
        super().__init__(**kw)
        # Pooled data: a wild profile has no pixel target, and with the identity loss alone the
        # generator learns to copy the profile (seed5, models/SEED_MODELS.md). TP-GAN's symmetry loss
        # on those rows, sym_weight x mean |fake - mirror(fake)|, asks for a frontal face instead
        # (alone it gave one symmetric mask for everyone; with ``prior_weight`` see Pix2Pix).
        self.sym_weight = float(sym_weight)
        # Optional identity loss, for every model: id_weight x (1 - cosine) between the identity
        # network's embeddings of output and target (``training.id_nets``; MobileFace by default,
        # never an evaluation judge). Without it the seed models collapse to one template face at
        # CPU budgets (models/SEED_MODELS.md). Not checkpointed: the network is frozen.
        self.id_weight = float(id_weight) if id_net is not None else 0.0
        self.id_net = id_net if self.id_weight > 0 else None
        # Pooled data (training.pooled): (n, D) mean embeddings of the CFP identities, the identity
        # target of rows with ``idt`` >= 0 (wild profiles have no pixel target).
        self.id_table = None if id_table is None else tf.constant(id_table, "float32")

    def _identity(self, fake, target_embedding):
        """Mean (1 - cosine) of the output's embeddings against (stop-gradient) target embeddings."""
        e = self.id_net(tf.cast(fake, "float32"))
        return tf.reduce_mean(1.0 - tf.reduce_sum(e * tf.stop_gradient(target_embedding), -1))

    def _id_targets(self, y, idt=None):
        own = self.id_net(tf.cast(y, "float32"))
        if self.id_table is None or idt is None:
            return own
        table = tf.gather(self.id_table, tf.maximum(idt, 0))
        return tf.where(tf.reshape(idt >= 0, [-1, 1]), table, own)

    def _with_identity(self, loss, logs, fake, y, idt=None):
        """loss + id_weight x identity(fake, target), the term logged as ``id``; loss unchanged without it."""
        if self.id_net is None:
            return loss
        logs["id"] = self._identity(fake, self._id_targets(y, idt))
        return loss + self.id_weight * logs["id"]

    def _with_symmetry(self, loss, logs, fake, data):
        """loss + sym_weight x symmetry of the outputs of rows without a pixel target (``w`` == 0)."""
        if not self.sym_weight or "w" not in data:
            return loss
        logs["sym"] = symmetry_loss(fake, data["w"])
        return loss + self.sym_weight * logs["sym"]

    @staticmethod
    def _pixel_l1(fake, data):
        """Mean |fake - y|; on pooled data weighted per row by ``w`` (0: a wild profile, no target)."""
        if "w" not in data:
            return tf.reduce_mean(tf.abs(fake - data["y"]))
        w = tf.reshape(data["w"], [-1, 1, 1, 1])
        return tf.reduce_sum(w * tf.abs(fake - data["y"])) / (tf.reduce_sum(w) * SIZE * SIZE * 3 + 1e-6)

    def generate(self, x, yaw=None, training=False):
        return self.generator(x, training=training)

    def call(self, inputs, training=False):
        return self.generate(inputs["x"], inputs.get("yaw"), training=training)

    def _scale(self, loss):
        # Gradients are summed over replicas: divide by their number so the step matches one device.
        # Call inside the GradientTape, or the division is not recorded.
        return loss / tf.distribute.get_strategy().num_replicas_in_sync

    def test_step(self, data):
        return {"l1": self._pixel_l1(self.generate(data["x"], data["yaw"]), data)}

    def optimizers(self) -> dict:
        return {"g_opt": self.g_opt}

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3 (3.15) builds a distributed model from the mean of the replicas' first batches,
        # a strategy.reduce over the batch's dict that MultiWorkerMirroredStrategy cannot do (and a
        # cross-worker all-reduce of images): keras-team/keras#20585. Build from this worker's own
        # first batch instead; the variables are synchronised by the strategy anyway.
        strategy = self._distribute_strategy
        if iterator is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return super()._maybe_symbolic_build(iterator, data_batch)
        for _, _, it in iterator:
            data_batch = tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], next(it))
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def make_train_function(self, force=False):
        self._vector_logs()
        return super().make_train_function(force)

    def make_test_function(self, force=False):
        self._vector_logs()
        return super().make_test_function(force)

    def _vector_logs(self):
        # Keras 3 (3.15) averages the replicas' logs over several workers with
        # strategy.reduce("MEAN", v, axis=0), which fails on the scalars a train_step returns
        # (keras-team/keras#20585): give each a batch axis of 1 there, so the mean is the scalar.
        if not isinstance(self._distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return
        for name in ("train_step", "test_step"):
            step = getattr(self, name)
            if not getattr(step, "vector_logs", False):
                def vector(data, step=step):
                    return {k: tf.reshape(v, [1]) for k, v in step(data).items()}
                vector.vector_logs = True
                setattr(self, name, vector)

    def build_optimizers(self):
        for name, opt in self.optimizers().items():
            opt.build(self._opt_vars(name))

    def _opt_vars(self, name):
        return self.generator.trainable_variables


class Autoencoder(Frontalizer):
    """The seed's U-Net autoencoder: VGGFace encoder (frozen when its weights are loaded, else
    trained from random weights; see ``vgg_unet``), MSE."""

    kind = "autoencoder"

    def __init__(self, weights=VGGFACE_WEIGHTS, lr=2e-4, **kw):
        super().__init__(**kw)
        self.generator = vgg_unet("upsample", "vgg_unet_autoencoder", weights)
        self.g_opt = keras.optimizers.Adam(lr)

    def train_step(self, data):
        x, y = data["x"], data["y"]
        logs = {}
        with tf.GradientTape() as tape:
            fake = self.generator(x, training=True)
            mse = tf.reduce_mean(tf.square(fake - y))
            scaled = self._scale(self._with_identity(mse, logs, fake, y))
        grads = tape.gradient(scaled, self.generator.trainable_variables)
        self.g_opt.apply_gradients(zip(grads, self.generator.trainable_variables))
        return {"mse": mse, "l1": tf.reduce_mean(tf.abs(fake - y)), **logs}


class Pix2Pix(Frontalizer):
    """Conditional GAN: loss_G = l1_weight * L1 + adversarial; PatchGAN on (input, output).

    On pooled data, ``prior_weight`` > 0 adds a second, unconditional discriminator (the geo model's
    ``patch_discriminator``) that learns frontal photographs (``real``) against the outputs of the
    rows without a pixel target, and gives those rows its adversarial loss. The conditional PatchGAN
    cannot judge them: it never sees a real pair with a wild profile as input, so it learns "wild
    input = fake" (d_loss 0.001 in seed6) and then judges only the other rows.
    """

    kind = "pix2pix"

    def __init__(self, generator=None, discriminator=None, l1_weight=100.0, lr=2e-4, prior_weight=0.0, **kw):
        super().__init__(**kw)
        self.generator = generator if generator is not None else vgg_unet("transpose", "vgg_unet_pix2pix")
        self.discriminator = discriminator if discriminator is not None else patchgan()
        self.l1_weight = l1_weight
        self.g_opt = keras.optimizers.Adam(lr, beta_1=0.5)
        self.d_opt = keras.optimizers.Adam(lr, beta_1=0.5)
        self.prior_weight = float(prior_weight)
        if self.prior_weight:
            self.prior_discriminator = patch_discriminator(name="prior_discriminator")
            self.p_opt = keras.optimizers.Adam(lr, beta_1=0.5)

    def optimizers(self):
        extra = {"p_opt": self.p_opt} if self.prior_weight else {}
        return {"g_opt": self.g_opt, "d_opt": self.d_opt, **extra}

    def _opt_vars(self, name):
        net = {"g_opt": "generator", "d_opt": "discriminator", "p_opt": "prior_discriminator"}[name]
        return getattr(self, net).trainable_variables

    def _disc(self, x, img, training):
        return self.discriminator([x, img], training=training)

    def train_step(self, data):
        x, y = data["x"], data["y"]
        prior = self.prior_weight > 0 and "real" in data
        with tf.GradientTape() as gt, tf.GradientTape() as dt, tf.GradientTape() as pt:
            fake = self.generator(x, training=True)
            real_logits = self._disc(x, y, True)
            fake_logits = self._disc(x, fake, True)
            l1 = self._pixel_l1(fake, data)
            # With the prior, the conditional PatchGAN judges the rows with a target only.
            paired = data.get("w") if prior else None
            g_adv = _adv_loss(fake_logits, True, paired)
            extra = {}
            g_loss = self._with_identity(self.l1_weight * l1 + g_adv, extra, fake, y, data.get("idt"))
            g_loss = self._with_symmetry(g_loss, extra, fake, data)
            # On pooled data a wild profile's y is the profile itself: not a real (input, frontal) pair.
            d_loss = 0.5 * (_adv_loss(real_logits, True, data.get("w")) + _adv_loss(fake_logits, False, paired))
            if prior:
                wild = tf.cast(data["w"] <= 0, "float32")
                p_fake = self.prior_discriminator(fake, training=True)
                extra["prior_adv"] = _adv_loss(p_fake, True, wild)
                g_loss += self.prior_weight * extra["prior_adv"]
                extra["p_loss"] = 0.5 * (_adv_loss(self.prior_discriminator(data["real"], training=True), True)
                                         + _adv_loss(p_fake, False, wild))
            g_scaled, d_scaled = self._scale(g_loss), self._scale(d_loss)
            p_scaled = self._scale(extra["p_loss"]) if prior else None
        g_vars, d_vars = self.generator.trainable_variables, self.discriminator.trainable_variables
        self.g_opt.apply_gradients(zip(gt.gradient(g_scaled, g_vars), g_vars))
        self.d_opt.apply_gradients(zip(dt.gradient(d_scaled, d_vars), d_vars))
        if prior:
            p_vars = self.prior_discriminator.trainable_variables
            self.p_opt.apply_gradients(zip(pt.gradient(p_scaled, p_vars), p_vars))
        return {"g_loss": g_loss, "l1": l1, "g_adv": g_adv, "d_loss": d_loss, **extra}


class DCGAN(Pix2Pix):
    """Encoder-decoder generator with an unconditional DCGAN discriminator on the output alone."""

    kind = "dcgan"

    def __init__(self, l1_weight=100.0, lr=2e-4, **kw):
        super().__init__(dcgan_generator(), dcgan_discriminator(), l1_weight, lr, **kw)

    def _disc(self, x, img, training):
        return self.discriminator(img, training=training)


class EdgeGAN(Pix2Pix):
    """The edge generator trained with the pix2pix losses (a lighter PatchGAN)."""

    kind = "edge"

    def __init__(self, width=1.0, l1_weight=100.0, lr=2e-4, **kw):
        super().__init__(edge_generator(width), patchgan(base=32), l1_weight, lr, **kw)


class CVAE(Frontalizer):
    """Conditional VAE over the 13 yaw labels.

    Loss: reconstruct the side view from (z, its yaw) and the frontal view from (z, frontal label),
    plus beta * KL. Frontalizing: encode (x, yaw) and decode mu with the frontal label.
    """

    kind = "cvae"

    def __init__(self, latent=128, beta=1e-3, lr=2e-4, **kw):
        super().__init__(**kw)
        self.encoder, self.decoder = cvae_networks(latent)
        self.generator = self.frontalizer = cvae_frontalizer(self.encoder, self.decoder)
        self.beta = beta
        self.g_opt = keras.optimizers.Adam(lr)

    def _opt_vars(self, name):
        return self.encoder.trainable_variables + self.decoder.trainable_variables

    def generate(self, x, yaw=None, training=False):
        return self.frontalizer([x, tf.one_hot(yaw, N_YAWS)], training=training)

    def train_step(self, data):
        x, y = data["x"], data["y"]
        yaw = tf.one_hot(data["yaw"], N_YAWS)
        front = tf.one_hot(tf.fill(tf.shape(data["yaw"]), FRONTAL_INDEX), N_YAWS)
        with tf.GradientTape() as tape:
            mu, logvar = self.encoder([x, yaw], training=True)
            z = mu + tf.exp(0.5 * logvar) * tf.random.normal(tf.shape(mu))
            rec_side = tf.reduce_mean(tf.abs(self.decoder([z, yaw], training=True) - x))
            fake = self.decoder([z, front], training=True)
            rec_front = tf.reduce_mean(tf.abs(fake - y))
            kl = -0.5 * tf.reduce_mean(tf.reduce_sum(1 + logvar - tf.square(mu) - tf.exp(logvar), -1))
            logs = {}
            loss = self._with_identity(rec_side + rec_front + self.beta * kl, logs, fake, y)
            scaled = self._scale(loss)
        v = self._opt_vars("g_opt")
        self.g_opt.apply_gradients(zip(tape.gradient(scaled, v), v))
        return {"loss": loss, "l1": rec_front, "rec_side": rec_side, "kl": kl, **logs}


def patch_discriminator(base: int = 32, name: str = "patch_discriminator") -> keras.Model:
    """Unconditional PatchGAN (70 px receptive field) on one image: is each patch from a frontal photo?
    Unconditional, so wild photos without a target (CFP profiles) can be judged too."""
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = inp
    for i, ch in enumerate([base, base * 2, base * 4]):
        x = layers.Conv2D(ch, 4, strides=2, padding="same", use_bias=i == 0)(x)
        if i:
            x = _bn()(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Conv2D(base * 8, 4, padding="same", use_bias=False)(x)
    x = layers.LeakyReLU(0.2)(_bn()(x))
    return keras.Model(inp, layers.Conv2D(1, 4, padding="same", dtype="float32")(x), name=name)


class GeoGAN(Frontalizer):
    """The geometric generator (``geo_generator``), trained on the pooled crops (training.pooled).

    loss_G = l1_weight * pixel L1 (weighted per row: real pairs 1, TP-GAN pseudo-pairs 0.5, wild
    profiles 0) + id_weight * (1 - cosine) between the identity network's embeddings of output and
    target (the target's own embedding for pairs, the mean of the person's frontal photos for CFP)
    + adv_weight * non-saturating GAN loss against frontal photographs (multipie30 and CFP).

    The identity network is ``id_net`` (a callable: [-1, 1] canonical crops -> L2-normalised
    embeddings); it is the one recognizer the evaluation's identity figures must NOT come from.
    ``id_table``: (n, D) mean embeddings of CFP identities, indexed by the row's ``idt``.
    """

    kind = "geo"

    def __init__(self, width=1.0, l1_weight=20.0, id_weight=3.0, adv_weight=0.5, lr=2e-4, id_net=None,
                 id_table=None, **kw):
        super().__init__(id_net=id_net, id_weight=id_weight, id_table=id_table, **kw)
        self.generator = geo_generator(width)
        self.discriminator = patch_discriminator()
        self.l1_weight, self.adv_weight = l1_weight, adv_weight
        self.g_opt = keras.optimizers.Adam(lr, beta_1=0.5)
        self.d_opt = keras.optimizers.Adam(lr, beta_1=0.5)

    def optimizers(self):
        return {"g_opt": self.g_opt, "d_opt": self.d_opt}

    def _opt_vars(self, name):
        return (self.generator if name == "g_opt" else self.discriminator).trainable_variables

    def generate(self, x, yaw=None, training=False):
        return self.generator([x, yaw], training=training)

    def train_step(self, data):
        x, y, yaw, idt, real = data["x"], data["y"], data["yaw"], data["idt"], data["real"]
        with tf.GradientTape() as gt, tf.GradientTape() as dt:
            fake = self.generator([x, yaw], training=True)
            l1 = self._pixel_l1(fake, data)
            g_loss = self.l1_weight * l1
            gan = self.adv_weight > 0  # adv_weight 0: no discriminator pass at all (a third of a step)
            if gan:
                d_fake = self.discriminator(fake, training=True)
                d_real = self.discriminator(real, training=True)
                g_adv = _adv_loss(d_fake, True)
                g_loss += self.adv_weight * g_adv
                d_loss = 0.5 * (_adv_loss(d_real, True) + _adv_loss(d_fake, False))
            else:
                g_adv = d_loss = tf.zeros_like(l1)
            logs = {"l1": l1, "g_adv": g_adv}
            g_loss = self._with_identity(g_loss, logs, fake, y, idt)
            g_scaled, d_scaled = self._scale(g_loss), self._scale(d_loss)
        g_vars, d_vars = self.generator.trainable_variables, self.discriminator.trainable_variables
        self.g_opt.apply_gradients(zip(gt.gradient(g_scaled, g_vars), g_vars))
        if gan:
            self.d_opt.apply_gradients(zip(dt.gradient(d_scaled, d_vars), d_vars))
        return {"g_loss": g_loss, "d_loss": d_loss, **logs}


MODELS = {"autoencoder": Autoencoder, "pix2pix": Pix2Pix, "dcgan": DCGAN, "cvae": CVAE, "edge": EdgeGAN, "geo": GeoGAN}


# ----------------------------------------------------------------------------- size
def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (conv, depthwise, transposed conv, dense)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_macs(layer)
            continue
        if not layer.weights or not isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)):
            continue
        out = layer.output.shape
        k = layer.weights[0].shape
        if isinstance(layer, layers.DepthwiseConv2D):
            total += out[1] * out[2] * k[0] * k[1] * k[2] * k[3]
        elif isinstance(layer, layers.Conv2DTranspose):
            inp = layer.input.shape
            total += inp[1] * inp[2] * k[0] * k[1] * k[2] * k[3]
        elif isinstance(layer, layers.Conv2D):
            total += out[1] * out[2] * k[0] * k[1] * k[2] * k[3]
        elif isinstance(layer, layers.Dense):
            total += k[0] * k[1]
    return int(total)


def describe(model: keras.Model) -> str:
    return f"{model.name}: {count_macs(model) / 1e9:.3f} GMAC/image, {model.count_params() / 1e6:.2f} M parameters"
