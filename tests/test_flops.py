"""Matmul FLOP counts (components/models/flops.py) of tiny models, by hand."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from components.models.flops import (count_flops, matmul_peak_gflops, replay_matmuls,  # noqa: E402
                                     training_flops_per_example, utilization)


def _dense_model():
    """x [B, 4] -> Dense(3) -> Dense(1)."""
    x = keras.Input((4,), name="x")
    return keras.Model({"x": x}, keras.layers.Dense(1)(keras.layers.Dense(3)(x)))


def test_dense_model_forward_and_training_flops_by_hand():
    batch = {"x": np.zeros((2, 4), np.float32)}
    # forward: 2 B d_in d_out per Dense: 2*2*4*3 + 2*2*3*1 = 48 + 12
    forward = count_flops(_dense_model(), batch)
    assert (forward.total, forward.by_op, forward.unknown, forward.batch_size) == (60, {"MatMul": 60}, [], 2)
    assert forward.per_example == 30
    # backward: Dense(1): dW = h^T g (2*3*2*1 = 12) and dh = g W^T (2*2*1*3 = 12); Dense(3): dW = x^T g
    # (2*4*2*3 = 48), no dx (the input is not a variable) -> 60 + 72 = 132, i.e. 66 per example (3x
    # forward would say 90)
    training = count_flops(_dense_model(), batch, training=True)
    assert training.total == 132 and training.unknown == []
    assert training_flops_per_example(_dense_model(), batch) == 66


def test_replay_runs_the_training_matmuls_alone():
    batch = {"x": np.zeros((64, 4), np.float32)}
    replay = replay_matmuls(_dense_model(), batch, repeats=3, warmup=1)
    # forward: 2 products; backward: dW and dh of Dense(1), dW of Dense(3) (test above)
    assert replay["matmuls"] == 5 and replay["not_replayed"] == []
    assert replay["flops"] == count_flops(_dense_model(), batch, training=True).total
    assert replay["flops_per_example"] == replay["flops"] / 64
    assert replay["seconds"] > 0 and replay["gflops"] == pytest.approx(replay["flops"] / replay["seconds"] / 1e9)


def test_replay_lists_the_einsums_it_does_not_run():
    x = keras.Input((2, 2), name="s")
    model = keras.Model({"s": x}, keras.layers.MultiHeadAttention(1, key_dim=2)(x, x))
    batch = {"s": np.zeros((1, 2, 2), np.float32)}
    replay = replay_matmuls(model, batch, repeats=2, warmup=1)
    assert replay["not_replayed"] and all(s.startswith("Einsum ") for s in replay["not_replayed"])
    assert replay["flops"] < count_flops(model, batch, training=True).total


def test_attention_einsums_and_batched_matmuls_by_hand():
    """MultiHeadAttention, 1 head of size 2 on [1, 2, 2]: Q, K, V and output projections 2*L*d*(h k)
    = 16 each, scores and weighted values 2*h*L*L*k = 16 each: 96."""
    x = keras.Input((2, 2), name="s")
    model = keras.Model({"s": x}, keras.layers.MultiHeadAttention(1, key_dim=2)(x, x))
    count = count_flops(model, {"s": np.zeros((1, 2, 2), np.float32)})
    assert count.total == 96 and count.unknown == []


def test_a_ranker_object_counts_its_train_model_and_ignores_extra_features():
    class Ranker:
        train = _dense_model()

    batch = {"x": np.zeros((5, 4), np.float32), "clicked": np.zeros(5, np.float32)}
    assert training_flops_per_example(Ranker(), batch) == 66


def test_einsum_with_ellipsis_and_a_mismatched_batch():
    from components.models.flops import _einsum_flops

    assert _einsum_flops("...ij,jk->...ik", [[3, 5, 2, 4], [4, 6]]) == 2 * 3 * 5 * 2 * 4 * 6
    assert _einsum_flops("ij->ji", [[2, 3]]) is None  # one operand: not a product
    with pytest.raises(ValueError, match="one batch size"):
        count_flops(_dense_model(), {"x": np.zeros((2, 4), np.float32), "y": np.zeros((3,), np.float32)})


def test_peak_and_utilization():
    peak = matmul_peak_gflops(n=256, repeats=2)
    assert peak > 0.1
    assert utilization(1000.0, 2e6, 100.0) == pytest.approx(0.02)


def test_executed_count_of_a_length_bucketed_encoder_is_the_count_at_the_rows_widths():
    """An ADPM with only the encoder, buckets (2, 4): rows whose last valid position fits width 2 are
    encoded at width 2, so on a batch where every row has at most one action the executed count is
    the nominal count of the same batch cut to one sequence position; without buckets it is nominal."""
    from components.models.adpm import ADPM, AdpmConfig
    from components.models.flops import executed_training_flops

    def model(buckets):
        cfg = AdpmConfig.model_validate({"component1": {"pairs": [["listing", "view"]], "length_buckets": buckets,
                                                        "embedding_dim": 4, "ff_dim": 8, "heads": 2},
                                         "component2": {"enabled": False}, "component3": {"enabled": False}})
        layer = ADPM(cfg, {"listing": 9})
        inputs = {k: keras.Input(shape=s, dtype=d, name=k) for k, (d, s) in layer.input_specs.items()}
        return keras.Model(inputs, layer(inputs))

    sequence = np.full((4, 7), -1, np.int64)
    sequence[1, 0], sequence[3, 0] = 3, 5
    batch = {"listing_id_idx": np.array([1, 2, 3, 4], np.int64), "seq_listing_view_idx": sequence}
    cut = {**batch, "seq_listing_view_idx": sequence[:, :1]}
    split = model([2, 4])
    assert executed_training_flops(split, batch).total == count_flops(split, cut, training=True).total
    assert executed_training_flops(split, batch).total < count_flops(split, batch, training=True).total
    plain = model([])
    assert executed_training_flops(plain, batch).total == count_flops(plain, batch, training=True).total
    sequence[2, 2] = 4  # last valid position 4 (target included): bucket 4
    mixed = executed_training_flops(split, batch).total
    rows = [count_flops(split, {k: v[i:i + 1, :w] if v.ndim == 2 else v[i:i + 1] for k, v in batch.items()},
                        training=True).total for i, w in enumerate([1, 1, 3, 1])]
    assert mixed == sum(rows)
