"""The edge generator: a MobileNet U-Net whose heads predict flows, a blend and a generated image
(WarpBlend), trained with pix2pix's losses against a light PatchGAN."""
from __future__ import annotations

import keras
from keras import layers

from runtime.keras_layers import SIZE, WarpBlend

from .blocks import ds_block, mobile_unet_encoder, patchgan, up_block
from .pix2pix import Pix2Pix


def edge_generator(width: float = 1.0, name: str = "edge_generator") -> keras.Model:
    """U-Net of depthwise-separable blocks with a dense bottleneck (global view for the pose change).

    Its heads predict two flow fields (at 16x16, upsampled), a 3-way blend and a generated image;
    WarpBlend turns them into the frontal face. At initialisation the flows are zero and the blend
    favours the input, so training starts from the raw input and learns to move it.
    """
    c = [int(round(v * width)) for v in (32, 64, 128, 192, 256)]
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x, skips = mobile_unet_encoder(inp, c)
    flow = None
    for skip, ch, tag in skips:
        x = up_block(x, skip, ch, tag)
        if tag == "u16":  # smooth flow: predicted at 16x16, in units of 8 px, upsampled x8
            # (a 32x32 flow tore the face into patches after 1000 steps; 16x16 keeps pieces whole)
            flow = layers.Conv2D(4, 3, padding="same", kernel_initializer="zeros", name="flow")(x)
            flow = layers.Rescaling(8.0)(layers.UpSampling2D(8, interpolation="bilinear")(flow))
    x = layers.UpSampling2D(2, interpolation="bilinear")(x)  # 128
    x = ds_block(x, 24, name="u128")
    generated = layers.Conv2D(3, 3, padding="same", activation="tanh", name="generated")(x)
    blend = layers.Conv2D(3, 3, padding="same", kernel_initializer="zeros",
                          bias_initializer=keras.initializers.Constant([3.0, 0.0, 0.0]), name="blend")(x)
    out = WarpBlend(dtype="float32", name="frontal")([inp, flow, blend, generated])
    return keras.Model(inp, out, name=name)


class EdgeGAN(Pix2Pix):
    """The edge generator trained with the pix2pix losses (a lighter PatchGAN)."""

    kind = "edge"

    def __init__(self, width=1.0, l1_weight=100.0, lr=2e-4, **kw):
        super().__init__(edge_generator(width), patchgan(base=32), l1_weight, lr, **kw)
