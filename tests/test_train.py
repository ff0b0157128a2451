"""Early stopping on the validation split (components/models/train.py ``fit``)."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from components.models.config import RankerConfig, TrainingConfig, WideConfig
from components.models.ranker import build_ranker
from components.models.train import fit, task_batches
from tests.distributed_train_worker import VOCAB, synthetic


def _ranker():
    keras.utils.set_random_seed(3)
    cfg = RankerConfig(personalized=False, cross_layers=1, cross_rank=8, deep=[16], dropout=0.0, debias=False)
    wide = WideConfig(listing=8, shop=4, taxonomy=4, query=4, query_token=4, platform=2, hour_of_day=2,
                      day_of_week=2, position=4, max_position=16)
    return build_ranker(cfg, wide, VOCAB)


def _batches(rows: int, seed: int, flip: bool = False):
    features, clicked, _ = synthetic(rows, seed)
    labels = 1.0 - clicked if flip else clicked
    return tf.data.Dataset.from_tensor_slices({**features, "clicked": labels}).batch(64)


def test_early_stopping_keeps_the_epoch_with_the_best_validation_auc():
    """Validation labels are the opposite of the training ones: the better the model learns, the
    worse its validation ROC-AUC, so the first epoch is the best; with patience 0 training stops
    after the second and the first epoch's weights come back."""
    ranker = _ranker()
    train = task_batches(_batches(64 * 30, seed=1).repeat(), "ctr", ranker.input_names)
    validation = task_batches(_batches(2048, seed=2, flip=True), "ctr", ranker.input_names)
    snapshots = []

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append([w.copy() for w in self.model.get_weights()])

    cfg = TrainingConfig(batch_size=64, epochs=5, learning_rate=5e-3, early_stopping_patience=0)
    original_fit = ranker.train.fit

    def fit_with_snapshot(*args, callbacks=(), **kwargs):
        return original_fit(*args, callbacks=list(callbacks) + [Snapshot()], **kwargs)

    ranker.train.fit = fit_with_snapshot
    outcome = fit(ranker, train, 30, cfg, None, lambda *_: None, validation_ds=validation)
    history = outcome.history
    assert len(history["loss"]) == 2 and history["best_epoch"] == 1
    assert history["val_auc"][0] > history["val_auc"][1]
    assert history["loss"][1] < history["loss"][0]  # training itself kept improving
    for now, first, second in zip(ranker.train.get_weights(), snapshots[0], snapshots[1]):
        np.testing.assert_array_equal(now, first)
    assert any(not np.array_equal(a, b) for a, b in zip(snapshots[0], snapshots[1]))


def test_without_patience_there_is_no_validation_pass():
    ranker = _ranker()
    train = task_batches(_batches(64 * 10, seed=1).repeat(), "ctr", ranker.input_names)
    validation = task_batches(_batches(256, seed=2), "ctr", ranker.input_names)
    outcome = fit(ranker, train, 10, TrainingConfig(batch_size=64, epochs=2), None, lambda *_: None,
                  validation_ds=validation)
    assert "val_auc" not in outcome.history and len(outcome.history["loss"]) == 2


def _personalized_ranker():
    """A small CTR ranker with the ADPM (encoder with length buckets + learned pools) and the debias tower."""
    from components.models.adpm import ADPM, AdpmConfig
    from tests.distributed_train_worker import PAIRS_3, SEQ_LEN

    keras.utils.set_random_seed(3)
    adpm = ADPM(AdpmConfig.model_validate({
        "component1": {"embedding_dim": 8, "heads": 2, "ff_dim": 16, "max_len": SEQ_LEN, "length_buckets": [2, 4]},
        "component2": {"enabled": False},
        "component3": {"pairs": PAIRS_3, "dims": {"listing": 4, "shop": 4, "taxonomy": 4, "query": 4}}}), VOCAB)
    cfg = RankerConfig(cross_layers=1, cross_rank=8, deep=[16], dropout=0.1, debias=True, debias_hidden=[4])
    wide = WideConfig(listing=8, shop=4, taxonomy=4, query=4, query_token=4, platform=2, hour_of_day=2,
                      day_of_week=2, position=4, max_position=16)
    return build_ranker(cfg, wide, VOCAB, adpm, adpm.input_specs)


def test_early_stopping_of_a_ranker_with_the_debias_tower_monitors_the_score_model():
    """With the debias tower the trained model adds a position logit that serving never sees: the
    validation ROC-AUC that picks the epoch is the score model's (main logit only). After training the
    best epoch's weights are back, so the score model's ROC-AUC now equals the recorded best, and the
    trained model's (which credits the position, a strong signal in this data) does not."""
    ranker = _personalized_ranker()
    assert ranker.score is not ranker.train
    train = task_batches(_batches(64 * 20, seed=1).repeat(), "ctr", ranker.input_names)
    validation = task_batches(_batches(1024, seed=2), "ctr", ranker.input_names)
    cfg = TrainingConfig(batch_size=64, epochs=3, learning_rate=5e-3, early_stopping_patience=3)
    history = fit(ranker, train, 20, cfg, None, lambda *_: None, validation_ds=validation).history
    assert len(history["val_auc"]) == 3
    best = history["val_auc"][history["best_epoch"] - 1]
    def auc(model):  # the metric early stopping reads, on this model's logits
        metric = keras.metrics.AUC(from_logits=True)
        for inputs, labels in validation:
            metric.update_state(labels, model(inputs, training=False))
        return float(metric.result())

    score_auc, train_auc = auc(ranker.score), auc(ranker.train)
    assert score_auc == pytest.approx(best, abs=1e-4)
    assert abs(train_auc - best) > 0.01, (train_auc, best)


def test_xla_lazy_adam_and_fused_adam_options_train_the_personalized_ranker():
    """training.jit_compile (the layers' static-shape formulations), training.optimizer=lazy_adam and
    fused_adam: the loss falls, and without XLA the same seed gives the same weights twice."""
    def run(**options):
        ranker = _personalized_ranker()
        train = task_batches(_batches(64 * 20, seed=1).repeat(), "ctr", ranker.input_names)
        outcome = fit(ranker, train, 20, TrainingConfig(batch_size=64, epochs=2, learning_rate=5e-3, **options),
                      None, lambda *_: None)
        return outcome.history["loss"], [w.copy() for w in ranker.train.get_weights()]

    # fused_adam without XLA: tests/test_fused_adam.py
    for options in ({"jit_compile": True}, {"jit_compile": True, "optimizer": "lazy_adam"},
                    {"jit_compile": True, "optimizer": "fused_adam"}):
        losses, _ = run(**options)
        assert losses[1] < losses[0], options
    losses, weights = run(optimizer="lazy_adam")
    assert losses[1] < losses[0]
    _, again = run(optimizer="lazy_adam")
    for a, b in zip(weights, again):
        np.testing.assert_array_equal(a, b)


def test_profile_batches_write_a_profiler_trace(tmp_path):
    """training.profile_batches traces those batches with TensorFlow's profiler into the log directory."""
    import pydantic
    import pytest

    ranker = _ranker()
    train = task_batches(_batches(64 * 6, seed=1).repeat(), "ctr", ranker.input_names)
    fit(ranker, train, 6, TrainingConfig(batch_size=64, epochs=1, profile_batches=[2, 3]), str(tmp_path),
        lambda *_: None)
    traces = [f for _, _, files in tf.io.gfile.walk(str(tmp_path)) for f in files if f.endswith(".xplane.pb")]
    assert traces, sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(pydantic.ValidationError, match="profile_batches"):
        TrainingConfig(profile_batches=[3, 2])
