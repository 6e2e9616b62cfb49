"""pix2pix (Isola et al. 2017): the VGGFace U-Net against a conditional PatchGAN, optionally with
a second, unconditional critic for the rows of pooled data that have no pixel target."""
from __future__ import annotations

import keras
import tensorflow as tf

from .base import Frontalizer
from .blocks import adv_loss, patch_discriminator, patchgan, vgg_unet


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
            l1 = self.pixel_l1(fake, data)
            # With the prior, the conditional PatchGAN judges the rows with a target only.
            paired = data.get("w") if prior else None
            g_adv = adv_loss(fake_logits, True, paired)
            extra = {}
            g_loss = self._with_identity(self.l1_weight * l1 + g_adv, extra, fake, y, data.get("idt"))
            g_loss = self._with_symmetry(g_loss, extra, fake, data)
            # On pooled data a wild profile's y is the profile itself: not a real (input, frontal) pair.
            d_loss = 0.5 * (adv_loss(real_logits, True, data.get("w")) + adv_loss(fake_logits, False, paired))
            if prior:
                wild = tf.cast(data["w"] <= 0, "float32")
                p_fake = self.prior_discriminator(fake, training=True)
                extra["prior_adv"] = adv_loss(p_fake, True, wild)
                g_loss += self.prior_weight * extra["prior_adv"]
                extra["p_loss"] = 0.5 * (adv_loss(self.prior_discriminator(data["real"], training=True), True)
                                         + adv_loss(p_fake, False, wild))
            g_scaled, d_scaled = self._scale(g_loss), self._scale(d_loss)
            p_scaled = self._scale(extra["p_loss"]) if prior else None
        g_vars, d_vars = self.generator.trainable_variables, self.discriminator.trainable_variables
        self.g_opt.apply_gradients(zip(gt.gradient(g_scaled, g_vars), g_vars))
        self.d_opt.apply_gradients(zip(dt.gradient(d_scaled, d_vars), d_vars))
        if prior:
            p_vars = self.prior_discriminator.trainable_variables
            self.p_opt.apply_gradients(zip(pt.gradient(p_scaled, p_vars), p_vars))
        return {"g_loss": g_loss, "l1": l1, "g_adv": g_adv, "d_loss": d_loss, **extra}
