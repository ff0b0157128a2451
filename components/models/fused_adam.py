"""Adam as one fused TensorFlow kernel per variable (``training.optimizer: fused_adam``; issue 7, fused ops).

Keras 3's ``Adam`` (checked with 3.15, TF backend) writes its update as separate element-wise ops:
``m += (g - m)(1 - beta_1)``, ``v += (g^2 - v)(1 - beta_2)``, ``var -= alpha m / (sqrt(v) + eps)``,
about ten passes over every weight and both moments each step. TensorFlow's ``ResourceApplyAdam``
kernel does the same update in one pass per variable. On the local CTR ranker (3.2M parameters,
most of them in embedding tables that dense Adam updates in full every step) the profiled
optimizer share of the train step's op time fell from ~11% to ~6% and a step was ~10-15% faster
(README "Benchmarks").

Same formulas as Keras' Adam, step for step (``alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)``,
epsilon outside the square root), with one difference on sparse gradients: an embedding table's
``tf.IndexedSlices`` gradient is summed per row first, so ``v`` gets the square of a row's total
gradient (Adam on the dense gradient), where Keras' Adam squares each repeated slice before
summing them. Not the default: the figures in the README were trained with Keras' Adam.
"""
from __future__ import annotations

import keras
from keras import ops

from components.models.lazy_adam import _tensor


@keras.saving.register_keras_serializable(package="adsformer")
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` whose update is ``tf.raw_ops.ResourceApplyAdam`` (TF backend).

    Under a ``tf.distribute`` strategy, Keras calls :meth:`update_step` inside
    ``strategy.extended.update``, where a mirrored variable's ``handle`` is the component of the
    device being updated. ``amsgrad=True`` falls back to Keras' update.
    """

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        if isinstance(gradient, tf.IndexedSlices):
            gradient = tf.convert_to_tensor(gradient)  # rows summed (unsorted_segment_sum)
        index = self._get_variable_index(variable)
        step = ops.cast(self.iterations + 1, dtype)

        def const(value):
            return ops.cast(value, dtype)

        tf.raw_ops.ResourceApplyAdam(
            var=_tensor(variable).handle, m=_tensor(self._momentums[index]).handle,
            v=_tensor(self._velocities[index]).handle,
            beta1_power=ops.power(const(self.beta_1), step), beta2_power=ops.power(const(self.beta_2), step),
            lr=const(learning_rate), beta1=const(self.beta_1), beta2=const(self.beta_2), epsilon=const(self.epsilon),
            grad=ops.cast(gradient, dtype), use_locking=False)
