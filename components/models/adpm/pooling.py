"""Global max or average pooling over the valid positions of a padded sequence (paper 000 eqs. 8-10), and the
masked mean of looked-up vectors (:func:`masked_mean_lookup`)."""
from __future__ import annotations

import keras
from keras import ops

# Lowest finite value per float dtype: what padded positions become before the max.
_LOWEST = {"float16": -65504.0, "bfloat16": -3.3895313892515355e38, "float32": -3.4028234663852886e38,
           "float64": -1.7976931348623157e308}


@keras.saving.register_keras_serializable(package="adsformer")
class MaskedGlobalPooling(keras.layers.Layer):
    """Pool ``x`` ``[B, L, d]`` over the positions where ``valid`` ``[B, L]`` (bool) is True -> ``[B, d]``.

    ``mode="max"`` (adSformer block, paper 000 §2.3 eq. 8)::

        out[b, k] = max_{l : m[b,l]} x[b, l, k]        (0 when row b has no valid position)

    padded positions are replaced by the lowest finite value of the dtype before the max, so they
    never win it, even when their values are larger than every valid one.

    ``mode="avg"`` (component 1 ablation §5.1; components 2 and 3, eqs. 9-10)::

        out[b] = sum_l m[b,l] x[b,l] / max(sum_l m[b,l], 1)   (0 for a row without valid positions)
    """

    def __init__(self, mode: str = "max", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("max", "avg"):
            raise ValueError(f"pooling mode must be 'max' or 'avg', got {mode!r}")
        self.mode = mode

    def call(self, inputs, valid):
        mask = ops.cast(valid, "bool")
        if self.mode == "avg":
            return masked_mean(inputs, mask)
        lowest = ops.cast(_LOWEST.get(keras.backend.standardize_dtype(inputs.dtype), _LOWEST["float32"]), inputs.dtype)
        filled = ops.where(mask[..., None], inputs, lowest)
        pooled = ops.max(filled, axis=-2, initial=lowest)  # initial: Keras asserts on an empty batch without it
        any_valid = ops.any(mask, axis=-1, keepdims=True)
        return ops.where(any_valid, pooled, ops.zeros_like(pooled))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-2]) + (input_shape[-1],)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def masked_mean(inputs, mask):
    """Mean of ``inputs`` ``[B, L, d]`` over the True positions of ``mask`` ``[B, L]`` (0 for an empty row)."""
    weights = ops.cast(mask, inputs.dtype)
    total = ops.sum(inputs * weights[..., None], axis=-2)
    return total / ops.maximum(ops.sum(weights, axis=-1, keepdims=True), ops.cast(1.0, inputs.dtype))


def masked_mean_lookup(lookup, rows, valid):
    """Mean of looked-up vectors over the valid positions of a padded row-index matrix (eqs. 9-10)::

        out[b] = sum_l valid[b,l] lookup(rows[b,l]) / max(sum_l valid[b,l], 1)     (0 for an empty row)

    ``rows`` int ``[B, L]`` (what sits at invalid positions must still be a valid row, e.g. a padding
    row: the static-shape formulation looks it up), ``valid`` bool ``[B, L]``, ``lookup`` maps an
    int tensor of rows to vectors (an ``Embedding`` layer, ``lambda r: tf.gather(table, r)``).

    Outside XLA only the valid entries are looked up and summed per row (``tf.where`` +
    ``unsorted_segment_sum``): sequences here are mostly padding (local preset: ~10 valid of 50
    listing views on average), so this gathers ~5x fewer vectors than ``[B, L, d]`` and an
    embedding table's gradient has ~5x fewer rows. Under XLA (static shapes) the ``[B, L, d]``
    lookup is pooled by :func:`masked_mean`. See :mod:`components.models.xla`.
    """
    import tensorflow as tf

    from components.models.xla import in_xla_context

    valid = tf.cast(valid, tf.bool)
    if in_xla_context():
        return masked_mean(lookup(rows), valid)               # the [B, L, d] lookup, padding included
    where = tf.where(valid)                                   # [nnz, 2], row-major
    vectors = lookup(tf.gather_nd(rows, where))               # [nnz, d]
    total = tf.math.unsorted_segment_sum(vectors, where[:, 0], tf.shape(rows, out_type=tf.int64)[0])
    count = tf.reduce_sum(tf.cast(valid, vectors.dtype), axis=-1, keepdims=True)
    return total / tf.maximum(count, tf.ones_like(count))
