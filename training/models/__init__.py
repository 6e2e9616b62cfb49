"""Keras 3 models, one file each (the keras-io pix2pix pattern: the model, its networks and its
``train_step`` together): the four seed models (``autoencoder``, ``pix2pix``, ``dcgan``, ``cvae``),
the ``edge`` generator and the shipped ``geo`` generator. Shared networks and losses are in
``blocks``, the common base class in ``base``, and the custom layers a saved model needs in
``runtime.keras_layers`` (the runtime's Keras engine and export load .keras files with them).

``model.generator`` is the network that is exported (the CVAE's is its frontalizer: image + yaw
one-hot -> frontal).
"""
from __future__ import annotations

import keras
from keras import layers

from runtime.keras_layers import SIZE, WarpBlend

from .autoencoder import Autoencoder
from .base import Frontalizer
from .blocks import (ENCODER_PRETRAINED, ENCODER_RANDOM, encoder_state, load_vggface_weights, patchgan,
                     vgg_unet, vggface_encoder)
from .cvae import CVAE, cvae_frontalizer, cvae_networks
from .dcgan import DCGAN, dcgan_generator
from .edge import EdgeGAN, edge_generator
from .geo import GeoGAN, geo_generator
from .pix2pix import Pix2Pix

MODELS = {"autoencoder": Autoencoder, "pix2pix": Pix2Pix, "dcgan": DCGAN, "cvae": CVAE, "edge": EdgeGAN, "geo": GeoGAN}

__all__ = ["MODELS", "SIZE", "Frontalizer", "Autoencoder", "Pix2Pix", "DCGAN", "EdgeGAN", "GeoGAN", "CVAE",
           "WarpBlend", "ENCODER_PRETRAINED", "ENCODER_RANDOM", "encoder_state", "load_vggface_weights", "patchgan",
           "vgg_unet", "vggface_encoder", "cvae_frontalizer", "cvae_networks", "dcgan_generator", "edge_generator",
           "geo_generator", "count_macs", "describe"]


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
