"""Adam with lazy (row-sparse) updates of embedding tables, the optimizer of the paper's baseline
(paper 000 A.2: "LazyAdam"; tensorflow_addons' ``LazyAdam``, which no longer exists for Keras 3).

Keras 3's ``Adam`` (checked with 3.15) turns the ``tf.IndexedSlices`` gradient of an embedding
lookup into a dense update: the moments and the weights of *every* row of every table are read
and written each step, touched or not. On the local CTR ranker (3.2M parameters, ~2.5M of them in
embedding tables) that was about a third of a training step (DESIGN §12: ~0.3 s/step on the
paper-shaped model).
"""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="adsformer")
class LazyAdam(keras.optimizers.Adam):
    """Adam whose sparse gradients update only the rows they touch (TF backend).

    Dense gradients get Keras' Adam unchanged. For a ``tf.IndexedSlices`` gradient (an embedding
    table's) with the distinct rows ``r`` it touches and ``g_r`` the sum of its values per row::

        m[r]   <- beta_1 m[r] + (1 - beta_1) g_r
        v[r]   <- beta_2 v[r] + (1 - beta_2) g_r^2
        var[r] <- var[r] - lr_t m[r] / (sqrt(v[r]) + epsilon),   lr_t = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)

    and the other rows, their moments included, stay as they are (Adam would decay their moments
    and keep moving them along their old momentum). That is tensorflow_addons' ``LazyAdam``; on rows
    touched every step it equals Adam on the dense gradient. Duplicated indices are summed first
    (``tf.unique`` + ``unsorted_segment_sum``, both deterministic on CPU), so the scatters write
    each row once. (Keras' ``Adam`` given the ``IndexedSlices`` squares each duplicate's slice
    before summing them, so its second moment of a row repeated in a batch is not the square of
    the row's gradient.)

    ``tf.unique`` has a data-dependent output shape, which XLA cannot compile: in a train step
    compiled with ``jit_compile=True`` (:func:`components.models.xla.in_xla_context`) the same
    update is computed densely, every row masked by whether the batch touched it. With
    ``amsgrad=True`` every update is Adam's (dense).
    """

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        from components.models.xla import in_xla_context

        if not isinstance(gradient, tf.IndexedSlices) or self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        alpha = lr * ops.sqrt(1 - ops.power(ops.cast(self.beta_2, dtype), step)) / (
            1 - ops.power(ops.cast(self.beta_1, dtype), step))
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        if in_xla_context():
            self._masked_dense_update(gradient, variable, m, v, alpha)
            return
        rows, position = tf.unique(gradient.indices)
        grad = tf.math.unsorted_segment_sum(tf.cast(gradient.values, dtype), position, tf.shape(rows)[0])
        m_rows = self.beta_1 * tf.gather(_tensor(m), rows) + (1 - self.beta_1) * grad
        v_rows = self.beta_2 * tf.gather(_tensor(v), rows) + (1 - self.beta_2) * tf.square(grad)
        self.assign(m, tf.IndexedSlices(m_rows, rows))
        self.assign(v, tf.IndexedSlices(v_rows, rows))
        self.assign_sub(variable, tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))

    def _masked_dense_update(self, gradient, variable, m, v, alpha):
        """The same update with static shapes (XLA): dense gradient and a touched-row mask."""
        import tensorflow as tf

        dtype = variable.dtype
        n = tf.shape(_tensor(variable), out_type=gradient.indices.dtype)[0]
        grad = tf.math.unsorted_segment_sum(tf.cast(gradient.values, dtype), gradient.indices, n)
        touched = tf.math.unsorted_segment_max(tf.ones_like(gradient.indices, dtype), gradient.indices, n) > 0
        touched = tf.reshape(touched, [-1] + [1] * (len(variable.shape) - 1))
        m_new = tf.where(touched, self.beta_1 * _tensor(m) + (1 - self.beta_1) * grad, _tensor(m))
        v_new = tf.where(touched, self.beta_2 * _tensor(v) + (1 - self.beta_2) * tf.square(grad), _tensor(v))
        self.assign(m, m_new)
        self.assign(v, v_new)
        self.assign_sub(variable, tf.where(touched, alpha * m_new / (tf.sqrt(v_new) + self.epsilon),
                                           tf.zeros_like(m_new)))


def _tensor(variable):
    """The backing ``tf.Variable`` of a Keras variable (``tf.gather`` reads it without a dense copy;
    ``FusedAdam`` passes its ``handle`` to ``ResourceApplyAdam``)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


def make_optimizer(name: str, learning_rate):
    """The training optimizer of ``training.optimizer``: ``adam``, ``lazy_adam`` or ``fused_adam``
    (:mod:`components.models.fused_adam`)."""
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "lazy_adam":
        return LazyAdam(learning_rate)
    if name == "fused_adam":
        from components.models.fused_adam import FusedAdam

        return FusedAdam(learning_rate)
    raise ValueError(f"unknown training.optimizer {name!r}; use adam, lazy_adam or fused_adam")
