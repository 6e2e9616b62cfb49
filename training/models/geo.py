"""The geometric generator, the shipped model: a geometric frontal (a generic 3D face turned by the
face's yaw, the hidden side from its mirror twin) corrected by a small U-Net, trained on pooled crops."""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from runtime.keras_layers import SIZE, GeoFlow, MirrorIf, WarpBlend, YawPlane

from .base import Frontalizer
from .blocks import adv_loss, mobile_unet_encoder, patch_discriminator, up_block


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
        from ..face_prior import depth_map

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
    h, skips = mobile_unet_encoder(h, c)
    dflow = None
    for skip, ch, tag in skips:
        h = up_block(h, skip, ch, tag)
        if tag == "u16":
            dflow = layers.Conv2D(4, 3, padding="same", kernel_initializer="zeros", activation="tanh", name="dflow")(h)
            dflow = layers.Rescaling(16.0)(layers.UpSampling2D(8, interpolation="bilinear")(dflow))
        if tag == "u32":
            # Blend logits at 32x32, upsampled: a per-pixel (128x128) choice between the three
            # sources turns into salt-and-pepper speckle within a few hundred steps.
            dlogits = layers.Conv2D(3, 3, padding="same", kernel_initializer="zeros", name="dlogits")(h)
            dlogits = layers.UpSampling2D(4, interpolation="bilinear", name="dlogits_up")(dlogits)
    # The generated image at 64x64, upsampled, from a zero kernel (mid-grey at the start): a 128 px
    # head from random weights feeds speckle into the blend.
    generated = layers.Conv2D(3, 3, padding="same", activation="tanh", kernel_initializer="zeros",
                              name="generated")(h)
    generated = layers.UpSampling2D(2, interpolation="bilinear", name="generated_up")(generated)
    flow = layers.Add(name="flow")([geo_flow, dflow])
    logits = layers.Add(name="logits")([geo_logits, dlogits])
    out = WarpBlend(dtype="float32", name="frontal_blend")([x, flow, logits, generated])
    out = MirrorIf(name="frontal")([out, yaw])
    return keras.Model([img, yaw], out, name=name)


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
            l1 = self.pixel_l1(fake, data)
            g_loss = self.l1_weight * l1
            gan = self.adv_weight > 0  # adv_weight 0: no discriminator pass at all (a third of a step)
            if gan:
                d_fake = self.discriminator(fake, training=True)
                d_real = self.discriminator(real, training=True)
                g_adv = adv_loss(d_fake, True)
                g_loss += self.adv_weight * g_adv
                d_loss = 0.5 * (adv_loss(d_real, True) + adv_loss(d_fake, False))
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
