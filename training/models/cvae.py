"""Conditional VAE over the 13 yaw labels (the seed's CVAE on pose)."""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from runtime.keras_layers import SIZE, FrontalLabel

from ..datasets import FRONTAL_INDEX, YAWS
from .base import Frontalizer
from .blocks import batch_norm

N_YAWS = len(YAWS)


def cvae_networks(latent: int = 128, base: int = 32) -> tuple[keras.Model, keras.Model]:
    img = keras.Input((SIZE, SIZE, 3), name="image")
    yaw = keras.Input((N_YAWS,), name="yaw")
    lab = layers.Reshape((1, 1, N_YAWS))(yaw)
    x = layers.Concatenate()([img, layers.UpSampling2D(SIZE)(lab)])
    for ch in [base, base * 2, base * 4, base * 8, base * 8]:
        x = layers.Conv2D(ch, 4, strides=2, padding="same")(x)
        x = layers.LeakyReLU(0.2)(batch_norm()(x))
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
        x = layers.ReLU()(batch_norm()(x))
    out = layers.Conv2DTranspose(3, 4, strides=2, padding="same", activation="tanh", dtype="float32")(x)
    decoder = keras.Model([z, yaw2], out, name="cvae_decoder")
    return encoder, decoder


def cvae_frontalizer(encoder: keras.Model, decoder: keras.Model) -> keras.Model:
    """Deterministic frontalizing path: (image, its yaw one-hot) -> decode(mu, frontal label)."""
    img = keras.Input((SIZE, SIZE, 3), name="image")
    yaw = keras.Input((N_YAWS,), name="yaw")
    mu, _ = encoder([img, yaw])
    frontal = FrontalLabel(N_YAWS, FRONTAL_INDEX, name="frontal_label")(yaw)
    return keras.Model([img, yaw], decoder([mu, frontal]), name="cvae_frontalizer")


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
