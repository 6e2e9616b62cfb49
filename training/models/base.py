"""``Frontalizer``: the base of every trainable model of ``training.models`` (the keras-io pix2pix
pattern: a ``keras.Model`` that owns its networks and its ``train_step``). It holds ``generator``, the
network that is exported, and what all models share: the identity and symmetry terms, the per-row
pixel L1 of pooled data, the per-replica loss scaling and the multi-worker fixes.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from runtime.keras_layers import SIZE

from .blocks import symmetry_loss


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
    def pixel_l1(fake, data):
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
        return {"l1": self.pixel_l1(self.generate(data["x"], data["yaw"]), data)}

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
