"""DCGAN: a conv encoder -> latent vector -> transposed-conv decoder (no skips), judged by an
unconditional discriminator on the output alone, with pix2pix's losses."""
from __future__ import annotations

import keras
from keras import layers

from runtime.keras_layers import SIZE

from .blocks import batch_norm
from .pix2pix import Pix2Pix


def dcgan_discriminator(base: int = 64) -> keras.Model:
    inp = keras.Input((SIZE, SIZE, 3))
    x = inp
    for i, ch in enumerate([base, base * 2, base * 4, base * 8]):
        x = layers.Conv2D(ch, 4, strides=2, padding="same")(x)
        if i:
            x = batch_norm()(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Flatten()(x)
    return keras.Model(inp, layers.Dense(1, dtype="float32")(x), name="dcgan_discriminator")


def dcgan_generator(latent: int = 256, base: int = 64) -> keras.Model:
    """Conv encoder -> latent vector -> DCGAN transposed-conv decoder (no skips)."""
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = inp
    for i, ch in enumerate([base, base * 2, base * 4, base * 8, base * 8]):  # 128 -> 4
        x = layers.Conv2D(ch, 4, strides=2, padding="same", use_bias=i == 0)(x)
        if i:
            x = batch_norm()(x)
        x = layers.LeakyReLU(0.2)(x)
    z = layers.Dense(latent)(layers.Flatten()(x))
    x = layers.Dense(4 * 4 * base * 8, use_bias=False)(z)
    x = layers.ReLU()(batch_norm()(x))
    x = layers.Reshape((4, 4, base * 8))(x)
    for ch in [base * 8, base * 4, base * 2, base]:  # 4 -> 64
        x = layers.Conv2DTranspose(ch, 4, strides=2, padding="same", use_bias=False)(x)
        x = layers.ReLU()(batch_norm()(x))
    out = layers.Conv2DTranspose(3, 4, strides=2, padding="same", activation="tanh", dtype="float32",
                                 name="frontal")(x)
    return keras.Model(inp, out, name="dcgan_generator")


class DCGAN(Pix2Pix):
    """Encoder-decoder generator with an unconditional DCGAN discriminator on the output alone."""

    kind = "dcgan"

    def __init__(self, l1_weight=100.0, lr=2e-4, **kw):
        super().__init__(dcgan_generator(), dcgan_discriminator(), l1_weight, lr, **kw)

    def _disc(self, x, img, training):
        return self.discriminator(img, training=training)
