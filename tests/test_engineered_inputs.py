"""The engineered features as model inputs: one scaling for the transform and the references, the
priors rule of a run, and what each ranker reads."""
from __future__ import annotations

import datetime as dt
import types

import numpy as np
import pyarrow as pa
import pytest

from components.references import features as rf
from schemas.features import ENGINEERED_FEATURES, NONPERSONALIZED_GROUPS, SESSION_FEATURES, group_of, scaling


def test_the_transform_scales_each_feature_as_the_references_do():
    import tensorflow as tf

    from components.transform.features import scaled

    values = np.array([0.0, 0.5, 3.0, 3600.0, 1e-6], dtype=np.float32)
    table = pa.table({name: values for name in ENGINEERED_FEATURES})
    for name in ENGINEERED_FEATURES:
        want = rf._transformed(table, name)
        got = scaled(tf.constant(values), scaling(name)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_every_feature_has_one_group_and_the_session_is_personalization():
    assert {group_of(f) for f in SESSION_FEATURES} == {"session"}
    assert "session" not in NONPERSONALIZED_GROUPS
    assert len(set(ENGINEERED_FEATURES)) == len(ENGINEERED_FEATURES)


class FakeLake:
    """Only what ``engineered_features`` asks of a lake: which validated impression days are there."""

    def __init__(self, days):
        self.days = set(days)


@pytest.fixture
def found(monkeypatch):
    from components.sessionize import step as sessionize_step

    def prior_days_found(lake, day, prior_days):
        days = [day - dt.timedelta(days=k) for k in range(1, prior_days + 1)]
        present = [d for d in days if d in lake.days]
        return [str(d) for d in present], len(present)

    monkeypatch.setattr(sessionize_step, "prior_days_found", prior_days_found)


def config(prior_days):
    from components.window import WindowConfig

    return types.SimpleNamespace(sessionize=types.SimpleNamespace(prior_days=prior_days),
                                 window=WindowConfig(train_days=2))


def test_priors_are_on_only_when_every_training_day_has_all_its_earlier_days(found):
    from components.transform.step import engineered_features

    date = dt.date(2026, 3, 4)  # train 03-01, 03-02
    names, priors = engineered_features(config(1), date, FakeLake([dt.date(2026, 2, 28), dt.date(2026, 3, 1)]))
    assert priors["used"] and "prior_listing_ctr" in names and "prior_days" not in names
    names, priors = engineered_features(config(1), date, FakeLake([dt.date(2026, 3, 1)]))
    assert not priors["used"] and "2026-03-01" in priors["why"]
    assert not any(n.startswith("prior_") for n in names) and "tgt_listing_view_count" in names
    assert not engineered_features(config(0), date, FakeLake([]))[1]["used"]


def test_the_baseline_reads_no_session_feature_and_the_ranker_reads_them_all(monkeypatch):
    from components.models import input as model_input
    from components.models.config import RankerConfig
    from components.models.step import engineered_inputs

    names = types.SimpleNamespace(float_scalars=tuple(f"eng_{f}" for f in ENGINEERED_FEATURES),
                                  int_scalars=tuple(f"engb_{f}" for f in ENGINEERED_FEATURES))
    monkeypatch.setattr(model_input, "feature_names", lambda _: names)
    personalized = engineered_inputs("t", RankerConfig(personalized=True))
    baseline = engineered_inputs("t", RankerConfig(personalized=False))
    assert len(personalized) == 2 * len(ENGINEERED_FEATURES)
    assert not any(n.endswith(SESSION_FEATURES) for n in baseline) and len(baseline) > 10
    assert engineered_inputs("t", RankerConfig(engineered=False)) == ()


def test_the_ranker_holds_a_linear_term_of_the_engineered_features():
    import keras

    from components.models.config import RankerConfig, WideConfig
    from components.models.ranker import build_ranker

    vocab = {"listing": 5, "shop": 3, "taxonomy": 3, "query": 4, "query_token": 4, "platform": 4}
    engineered = ("eng_req_price_rank", "engb_req_price_rank", "eng_rel_title")
    cfg = RankerConfig(personalized=False, debias=False, cross_layers=1, deep=[8], dropout=0.0)
    ranker = build_ranker(cfg, WideConfig(), vocab, engineered=engineered, engineered_buckets=4)
    assert set(engineered) <= set(ranker.input_names)
    linear = ranker.score.get_layer("engineered_linear")
    assert linear.kernel.shape == (2, 1)  # the two standardized features, not the bucket
    # The linear term moves the logit with its feature alone: set every other weight to zero.
    for layer in ranker.score.layers:
        if layer is not linear:
            for w in layer.weights:
                w.assign(np.zeros(w.shape, w.dtype) if "variance" not in w.path else np.ones(w.shape, w.dtype))
    linear.kernel.assign(np.array([[2.0], [0.0]], np.float32))
    linear.bias.assign(np.zeros(1, np.float32))
    batch = {}
    for t in ranker.score.inputs:
        batch[t.name] = np.zeros((3,) + tuple(d or 1 for d in t.shape[1:]), t.dtype)
    batch["eng_req_price_rank"] = np.array([0.0, 1.0, -1.0], np.float32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ranker.score(batch, training=False)), [0.0, 2.0, -2.0],
                               atol=1e-5)
