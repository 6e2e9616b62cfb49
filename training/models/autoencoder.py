"""The seed's VGGFace U-Net autoencoder (MSE), the 2019 project's first model."""
from __future__ import annotations

import keras
import tensorflow as tf

from .base import Frontalizer
from .blocks import VGGFACE_WEIGHTS, vgg_unet


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
