"""LazyAdam (components/models/lazy_adam.py): row-sparse Adam for embedding tables."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from components.models.lazy_adam import LazyAdam, make_optimizer


def _train(optimizer, ids_per_step, steps: int = 3, densify: bool = False):
    keras.utils.set_random_seed(0)
    table = keras.layers.Embedding(5, 3)
    dense = keras.layers.Dense(1)
    ids = keras.Input((None,), dtype="int64")
    model = keras.Model(ids, dense(keras.ops.sum(table(ids), axis=1)))
    rng = np.random.default_rng(1)
    for step in range(steps):
        x = tf.constant(ids_per_step(step))
        y = tf.constant(rng.normal(size=(len(x), 1)).astype(np.float32))
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - y) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        assert isinstance(grads[0], tf.IndexedSlices)  # the table's gradient is sparse
        if densify:
            grads = [tf.convert_to_tensor(g) for g in grads]
        optimizer.apply(grads, model.trainable_variables)
    return [v.numpy() for v in model.trainable_variables]


def test_equals_adam_on_the_dense_gradient_when_every_row_is_touched_every_step():
    """Duplicated ids (rows 0 and 2) count once with their summed gradient, as in the dense gradient.
    (Keras' Adam given the IndexedSlices themselves squares each duplicate's slice before summing,
    so its second moment of a repeated row is not the square of the row's gradient.)"""
    every_row = lambda step: [[0, 1, 2, 2], [3, 4, 0, 0]]  # noqa: E731
    lazy = _train(LazyAdam(0.1), every_row)
    dense = _train(keras.optimizers.Adam(0.1), every_row, densify=True)
    for a, b in zip(lazy, dense):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_untouched_rows_and_their_moments_stay_put():
    initial = _train(LazyAdam(0.1), lambda step: [[0, 1]], steps=0)[0]
    lazy = LazyAdam(0.1)
    # row 4 is touched at step 0 only: Adam would keep moving it with its momentum, LazyAdam does not
    tables = _train(lazy, lambda step: [[0, 4]] if step == 0 else [[0, 1]], steps=3)
    after_first = _train(LazyAdam(0.1), lambda step: [[0, 4]], steps=1)[0]
    np.testing.assert_array_equal(tables[0][4], after_first[4])
    np.testing.assert_array_equal(tables[0][[2, 3]], initial[[2, 3]])
    m = lazy._momentums[0].numpy()
    assert np.all(m[[2, 3]] == 0) and np.all(m[[0, 1, 4]] != 0)
    dense = _train(keras.optimizers.Adam(0.1), lambda step: [[0, 4]] if step == 0 else [[0, 1]], steps=3)
    assert np.abs(dense[0][4] - after_first[4]).max() > 1e-3


def test_make_optimizer_by_name_and_serialization():
    assert type(make_optimizer("adam", 1e-3)) is keras.optimizers.Adam
    lazy = make_optimizer("lazy_adam", 1e-3)
    assert isinstance(lazy, LazyAdam)
    assert isinstance(keras.optimizers.deserialize(keras.optimizers.serialize(lazy)), LazyAdam)
    with pytest.raises(ValueError, match="adam, lazy_adam or fused_adam"):
        make_optimizer("sgd", 1e-3)


def test_the_xla_formulation_gives_the_same_update():
    """Under jit_compile (static shapes) the update is dense with a touched-row mask: same values."""
    ids = lambda step: [[0, 4, 4]] if step == 0 else [[0, 1, 1]]  # noqa: E731
    sparse = _train(LazyAdam(0.1), ids)
    keras.utils.set_random_seed(0)
    table = keras.layers.Embedding(5, 3)
    dense = keras.layers.Dense(1)
    inp = keras.Input((None,), dtype="int64")
    model = keras.Model(inp, dense(keras.ops.sum(table(inp), axis=1)))
    optimizer = LazyAdam(0.1)
    optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(1)

    @tf.function(jit_compile=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - y) ** 2)
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

    for s in range(3):
        x = tf.constant(ids(s))
        step(x, tf.constant(rng.normal(size=(len(x), 1)).astype(np.float32)))
    for a, b in zip(sparse, [v.numpy() for v in model.trainable_variables]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
