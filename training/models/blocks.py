"""Building blocks shared by the generators of ``training.models``: batch norm, MobileNet blocks,
the VGGFace U-Net (autoencoder and pix2pix), the PatchGAN critics and the GAN losses.

Every generator maps a 128x128 RGB image in [-1, 1] to one in [-1, 1].
"""
from __future__ import annotations

import os

import h5py
import keras
import numpy as np
import tensorflow as tf
from keras import layers

from runtime.keras_layers import SIZE, VGGFacePreprocess

VGGFACE_WEIGHTS = os.path.expanduser("~/.keras/models/vggface/rcmalli_vggface_tf_notop_vgg16.h5")

# BatchNorm momentum 0.9, not Keras' 0.99: with 0.99 the moving variance still carries the huge
# activations of the first ~100 steps after a few hundred steps (2-10x too large per layer after
# 330 steps), which compounds over 35 layers into a near-constant output at inference.
BN_MOMENTUM = 0.9


def batch_norm(name=None):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)


def ds_block(x, ch, stride=1, name=None):
    """MobileNet depthwise-separable block: dw3x3 -> BN -> ReLU6 -> pw1x1 -> BN -> ReLU6."""
    x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.ReLU(6.0)(batch_norm(name=f"{name}_dw_bn")(x))
    x = layers.Conv2D(ch, 1, use_bias=False, name=f"{name}_pw")(x)
    return layers.ReLU(6.0)(batch_norm(name=f"{name}_pw_bn")(x))


def mobile_unet_encoder(x, c):
    """The encoder of the edge and geo generators: a stride-2 stem and depthwise-separable blocks
    down to 4x4, plus a dense bottleneck (frontalizing moves features across the whole face, a
    global view). Returns the 4x4 features and the skips as (skip, channels, tag) from 8x8 to 64x64,
    the order ``up_block`` takes them in."""
    x = layers.Conv2D(c[0], 3, strides=2, padding="same", use_bias=False, name="stem")(x)  # 64
    x = layers.ReLU(6.0)(batch_norm(name="stem_bn")(x))
    x = s64 = ds_block(x, c[0], name="e64")
    x = ds_block(x, c[1], 2, "d32")
    x = s32 = ds_block(x, c[1], name="e32")
    x = ds_block(x, c[2], 2, "d16")
    x = s16 = ds_block(x, c[2], name="e16")
    x = ds_block(x, c[3], 2, "d8")
    x = s8 = ds_block(x, c[3], name="e8")
    x = ds_block(x, c[4], 2, "d4")  # 4x4
    g = layers.Dense(256, activation="relu", name="bottleneck_in")(layers.Flatten()(x))
    g = layers.Dense(4 * 4 * c[4], activation="relu", name="bottleneck_out")(g)
    x = layers.Concatenate()([x, layers.Reshape((4, 4, c[4]))(g)])
    return x, [(s8, c[3], "u8"), (s16, c[2], "u16"), (s32, c[1], "u32"), (s64, c[0], "u64")]


def up_block(x, skip, ch, tag):
    """x2 bilinear upsampling, the skip concatenated, two depthwise-separable blocks."""
    x = layers.UpSampling2D(2, interpolation="bilinear")(x)
    x = layers.Concatenate()([x, skip])
    x = ds_block(x, ch, name=f"{tag}a")
    return ds_block(x, ch, name=f"{tag}b")


# ----------------------------------------------------------------------------- VGGFace U-Net
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
        x = batch_norm()(x)
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


# ----------------------------------------------------------------------------- critics
def patchgan(base: int = 64, name: str = "patchgan") -> keras.Model:
    """pix2pix PatchGAN (70x70 receptive field) on concat(input, output): logits per patch."""
    a = keras.Input((SIZE, SIZE, 3), name="input_image")
    b = keras.Input((SIZE, SIZE, 3), name="target_image")
    x = layers.Concatenate()([a, b])
    for i, ch in enumerate([base, base * 2, base * 4]):
        x = layers.Conv2D(ch, 4, strides=2, padding="same", use_bias=i == 0)(x)
        if i:
            x = batch_norm()(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.ZeroPadding2D()(x)
    x = layers.Conv2D(base * 8, 4, use_bias=False)(x)
    x = batch_norm()(x)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.ZeroPadding2D()(x)
    out = layers.Conv2D(1, 4, dtype="float32")(x)
    return keras.Model([a, b], out, name=name)


def patch_discriminator(base: int = 32, name: str = "patch_discriminator") -> keras.Model:
    """Unconditional PatchGAN (70 px receptive field) on one image: is each patch from a frontal photo?
    Unconditional, so wild photos without a target (CFP profiles) can be judged too."""
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = inp
    for i, ch in enumerate([base, base * 2, base * 4]):
        x = layers.Conv2D(ch, 4, strides=2, padding="same", use_bias=i == 0)(x)
        if i:
            x = batch_norm()(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Conv2D(base * 8, 4, padding="same", use_bias=False)(x)
    x = layers.LeakyReLU(0.2)(batch_norm()(x))
    return keras.Model(inp, layers.Conv2D(1, 4, padding="same", dtype="float32")(x), name=name)


# ----------------------------------------------------------------------------- losses
def adv_loss(logits, real: bool, rows=None):
    """Mean sigmoid cross-entropy; with ``rows`` (per-row weights) only over rows whose weight is > 0."""
    labels = tf.ones_like(logits) if real else tf.zeros_like(logits)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels, logits)
    if rows is None:
        return tf.reduce_mean(ce)
    return mean_of_rows(tf.cast(ce, "float32"), rows > 0)


def mean_of_rows(values, keep):
    """Mean of each row of ``values`` (batch first), averaged over the rows where ``keep``; 0 if none."""
    per_row = tf.reduce_mean(values, axis=list(range(1, len(values.shape))))
    keep = tf.cast(keep, "float32")
    return tf.reduce_sum(per_row * keep) / tf.maximum(tf.reduce_sum(keep), 1.0)


def symmetry_loss(fake, w):
    """Mean |fake - mirror(fake)| over the rows whose pixel weight ``w`` is 0 (0 when there are none)."""
    fake = tf.cast(fake, "float32")
    return mean_of_rows(tf.abs(fake - fake[:, :, ::-1]), w <= 0)
