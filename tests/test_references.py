"""The reference models: feature sets, the priors rule, and what they learn (components/references)."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from components.lake import Lake, parquet
from components.references import features as rf
from components.references.config import ReferencesConfig
from components.references.step import REFERENCES, _design, _fit, predictions_path, references_path
from schemas.features import ENGINEERED_FEATURES, PRIOR_FEATURES, SESSION_FEATURES
from tests.conftest import TINY_DATE


def table(n: int, seed: int = 0, signal: str | None = None) -> tuple[pa.Table, np.ndarray]:
    """A compacted examples table of random features; the label follows ``signal`` when given."""
    rng = np.random.default_rng(seed)
    cols = {name: rng.random(n).astype(np.float32) for name in ENGINEERED_FEATURES}
    cols.update(price=rng.uniform(1, 50, n), platform=rng.choice(["web", "ios", "android"], n).astype(object),
                logged_in=rng.integers(0, 2, n).astype(bool), position=rng.integers(0, 8, n),
                len_seq_listing_view=rng.integers(0, 5, n).astype(np.float32))
    y = rng.random(n) < (0.9 * (cols[signal] > 0.5) + 0.05 if signal else 0.3)
    return pa.table(cols), y.astype(np.int64)


def test_feature_sets_keep_the_session_out_of_the_nonpersonalized_set():
    t, _ = table(10)
    np_names = rf.feature_names("nonpersonalized", True, t.column_names)
    p_names = rf.feature_names("personalized", True, t.column_names)
    assert not set(SESSION_FEATURES) & set(np_names) and set(SESSION_FEATURES) <= set(p_names)
    assert "len_seq_listing_view" in p_names and "len_seq_listing_view" not in np_names
    assert set(np_names) < set(p_names) and "position" not in p_names
    no_priors = rf.feature_names("personalized", False, t.column_names)
    assert not set(PRIOR_FEATURES) & set(no_priors)
    x = rf.matrix(t, p_names)
    assert x.shape == (10, len(p_names)) and np.isfinite(x).all()


@pytest.mark.parametrize("learner", ["logreg", "gbdt"])
def test_a_reference_learns_a_planted_session_signal_only_when_it_sees_the_session(learner):
    train, y = table(4000, 1, signal="tgt_listing_view_count")
    test, y_test = table(2000, 2, signal="tgt_listing_view_count")
    cfg = ReferencesConfig(gbdt_max_iter=50)
    aucs = {}
    for feature_set in rf.FEATURE_SETS:
        names = rf.feature_names(feature_set, True, train.column_names)
        model = _fit(learner, _design(train, names, learner, False, cfg.max_position), y, cfg, 7)
        aucs[feature_set] = roc_auc_score(y_test, model.decision_function(
            _design(test, names, learner, False, cfg.max_position)))
    assert aucs["personalized"] > 0.85 and abs(aucs["nonpersonalized"] - 0.5) < 0.05, aucs


def test_position_design_adds_only_the_position():
    t, _ = table(20)
    names = rf.feature_names("nonpersonalized", True, t.column_names)
    base = _design(t, names, "logreg", False, 10)
    one_hot = _design(t, names, "logreg", True, 10)
    assert one_hot.shape[1] == base.shape[1] + 10 and (one_hot[:, base.shape[1]:].sum(axis=1) == 1).all()
    assert _design(t, names, "gbdt", True, 10).shape[1] == base.shape[1] + 1


def test_references_score_the_rankers_rows_on_the_tiny_run(tiny_run):
    lake = Lake(str(tiny_run))
    summary = json.loads(open(references_path(lake, TINY_DATE)).read())
    assert set(summary["tasks"]["ctr"]) == {name for name, *_ in REFERENCES}
    ranker = parquet.read_file(str(tiny_run / "runs" / TINY_DATE / "train_ctr" / "predictions" / "test.parquet"))
    for name, *_ in REFERENCES:
        entry = summary["tasks"]["ctr"][name]
        assert 0.5 < entry["validation_roc_auc"] <= 1.0, (name, entry)
        got = parquet.read_file(predictions_path(lake, TINY_DATE, "ctr", name, "test"))
        assert sorted(got.column("impression_id").to_pylist()) == sorted(ranker.column("impression_id").to_pylist())
        assert np.isfinite(got.column("logit").to_numpy()).all()
