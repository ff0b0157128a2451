"""FusedAdam (components/models/fused_adam.py): Adam as TensorFlow's one-pass ResourceApplyAdam kernel."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import tensorflow as tf

from components.models.fused_adam import FusedAdam
from components.models.lazy_adam import make_optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(optimizer, steps: int = 4, densify: bool = False, ids=((0, 1, 2, 2), (3, 4, 0, 0))):
    """A table (sparse gradient) and a dense layer, ``steps`` updates; ``densify`` hands the
    optimizer the table's gradient as a dense tensor."""
    keras.utils.set_random_seed(0)
    table, dense = keras.layers.Embedding(5, 3), keras.layers.Dense(2)
    inp = keras.Input((None,), dtype="int64")
    model = keras.Model(inp, dense(keras.ops.sum(table(inp), axis=1)))
    rng = np.random.default_rng(1)
    x = tf.constant(ids)
    for _ in range(steps):
        y = tf.constant(rng.normal(size=(len(ids), 2)).astype(np.float32))
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - y) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        assert isinstance(grads[0], tf.IndexedSlices)
        if densify:
            grads = [tf.convert_to_tensor(g) for g in grads]
        optimizer.apply(grads, model.trainable_variables)
    return [v.numpy() for v in model.trainable_variables], optimizer


def test_equals_keras_adam_on_dense_gradients():
    fused, opt = _train(FusedAdam(0.05), densify=True)
    keras_adam, ref = _train(keras.optimizers.Adam(0.05), densify=True)
    for a, b in zip(fused, keras_adam):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(opt._momentums + opt._velocities, ref._momentums + ref._velocities):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-7)
    assert int(opt.iterations.numpy()) == 4


def test_a_sparse_gradient_is_summed_per_row_first():
    """Given the table's IndexedSlices (rows 0 and 2 repeated), the update is Adam's on the dense gradient."""
    sparse, _ = _train(FusedAdam(0.05))
    dense, _ = _train(keras.optimizers.Adam(0.05), densify=True)
    for a, b in zip(sparse, dense):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    keras_sparse, _ = _train(keras.optimizers.Adam(0.05))  # squares each repeated slice: not the same
    assert np.abs(keras_sparse[0] - sparse[0]).max() > 1e-4


def test_under_mirrored_strategy_on_two_logical_cpus():
    """Each replica's component of a mirrored variable gets the fused update: both stay equal and match
    the single-device training (a subprocess: logical devices are set before TensorFlow starts)."""
    script = textwrap.dedent("""
        import json, numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras
        from components.models.fused_adam import FusedAdam

        def train(strategy):
            with strategy.scope():
                keras.utils.set_random_seed(0)
                inp = keras.Input((None,), dtype="int64")
                model = keras.Model(inp, keras.layers.Dense(2)(keras.ops.sum(keras.layers.Embedding(5, 3)(inp), axis=1)))
                model.compile(optimizer=FusedAdam(0.05), loss="mse")
            model.initial = [v.numpy() for v in model.trainable_variables]
            rng = np.random.default_rng(1)
            x = np.array(((0, 1, 2, 2), (3, 4, 0, 0), (1, 1, 3, 4), (2, 0, 4, 4)))
            for _ in range(3):
                model.train_on_batch(x, rng.normal(size=(4, 2)).astype(np.float32))
            return model

        mirrored = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
        single = train(tf.distribute.get_strategy())
        out = {"replicas": [], "max_diff": 0.0, "moved": 0.0}
        for v, ref in zip(mirrored.trainable_variables, single.trainable_variables):
            components = v.value.values
            out["replicas"].append(len(components))
            for c in components:
                out["max_diff"] = max(out["max_diff"], float(np.abs(c.numpy() - ref.numpy()).max()))
        out["moved"] = min(float(np.abs(v.numpy() - w).max()) for v, w in zip(single.trainable_variables, single.initial))
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == [2, 2, 2]
    assert out["max_diff"] < 1e-5 and out["moved"] > 1e-3, out  # same updates, and they did move every weight


def test_by_name_and_serialization():
    opt = make_optimizer("fused_adam", 1e-3)
    assert isinstance(opt, FusedAdam)
    assert isinstance(keras.optimizers.deserialize(keras.optimizers.serialize(opt)), FusedAdam)
