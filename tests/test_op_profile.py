"""components.models.op_profile: op categories and the traced op-time breakdown of a real train step."""
from __future__ import annotations

import numpy as np
import pytest

from components.models import op_profile


@pytest.mark.parametrize("name, op_type, category", [
    ("ctr_train_1/deep_0_1/MatMul", "_MklMatMul", "matmul"),
    ("gradient_tape/block/MatMul_4/MatMul_1", "_MklBatchMatMulV2", "matmul"),
    ("ctr/cross_0/w/u/BiasAdd", "_MklNativeFusedMatMul", "matmul"),
    ("x/einsum/Einsum", "Einsum", "matmul"),
    ("adam/UnsortedSegmentSum_3", "UnsortedSegmentSum", "optimizer"),
    ("adam/Sqrt", "Sqrt", "optimizer"),
    ("adam_like/Sqrt", "Sqrt", "other"),
    ("ctr/listing_embedding/GatherV2", "GatherV2", "sparse"),
    ("ctr/encoder/DynamicStitch", "DynamicStitch", "sparse"),
    ("ctr/dropout/stateless_random_uniform", "StatelessRandomUniformV2", "random"),
    ("ctr/block/Softmax", "_MklSoftmax", "other"),
    ("ctr/block/transpose", "_MklTranspose", "other"),
])
def test_categorize(name, op_type, category):
    assert op_profile.categorize(name, op_type, optimizer_scope="adam") == category


def test_a_traced_train_step_splits_its_op_time_by_category(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,), dtype="int64")
    x = keras.layers.Flatten()(keras.layers.Embedding(1000, 16)(inputs))
    x = keras.layers.Dropout(0.2)(keras.layers.Dense(256, activation="relu")(x))
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    rng = np.random.default_rng(0)
    data = rng.integers(0, 1000, (512, 8)), rng.normal(size=(512, 1)).astype("float32")
    model.train_on_batch(*data)

    out = op_profile.trace_op_time(lambda: [model.train_on_batch(*data) for _ in range(3)],
                                   optimizer_scope=model.optimizer.name, log_dir=str(tmp_path))
    assert set(out["seconds"]) == set(op_profile.CATEGORIES)
    # The dense layers' matmuls, Adam's updates, the embedding gather and the dropout mask all ran.
    for category in ("matmul", "optimizer", "sparse", "random"):
        assert out["seconds"][category] > 0, (category, out)
    assert sum(out["shares"].values()) == pytest.approx(1, abs=1e-3)
    assert out["op_seconds"] == pytest.approx(sum(out["seconds"].values()), rel=1e-3)
    assert list(tmp_path.glob("plugins/profile/*/*.xplane.pb"))  # the trace was kept where asked


def test_no_ops_in_the_trace_is_an_error():
    with pytest.raises(RuntimeError, match="no TensorFlow op events"):
        op_profile.trace_op_time(lambda: None)
