"""The engineered features the serving graph computes from raw inputs (``components.serving.features``)
against the batch features of the examples (``components.sessionize.features``), which
test_features_kernel.py checks against a plain reference. Training and serving must see the same
float32 values, or the transform's quantile buckets could differ at a boundary."""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from components.serving.features import SESSION_INPUTS, ServingFeatures, inputs_needed
from components.serving.model import request_batches, session_events
from components.sessionize import features
from components.sessionize.examples import FeatureContext
from components.sessionize.kernel import _millis
from schemas.features import ENGINEERED_FEATURES, FEATURE_GROUPS, NONPERSONALIZED_GROUPS
from tests.test_features_kernel import CATALOG, logs, tables
from tests.test_sessionize_kernel import WINDOW_MS


def _column(table: pa.Table, name: str) -> np.ndarray:
    return pc.fill_null(table.column(name), "").to_numpy(zero_copy_only=False).astype(object)


def _all_key_events(events: list[dict], impressions: list[dict]) -> dict[str, np.ndarray]:
    """Every event of each row's user key, unwindowed and in reverse order (the graph must window and
    must not depend on the order), padded with an empty action."""
    def key(row):
        return row.get("user_id") or row.get("browser_id")

    per_row = [[e for e in reversed(events) if key(e) == key(r)] for r in impressions]
    width = max((len(r) for r in per_row), default=0)
    out = {}
    for name in SESSION_INPUTS:
        field = name[len("session_"):]
        fill = 0 if field == "ts" else ""
        matrix = np.full((len(impressions), width), fill, dtype=np.int64 if field == "ts" else object)
        for i, row in enumerate(per_row):
            for j, e in enumerate(row):
                value = e[field]
                matrix[i, j] = _millis(pa.array([value], pa.timestamp("ms")))[0] if field == "ts" else (value or "")
        out[name] = matrix
    return out


def _raw(imp: pa.Table, session: dict) -> dict:
    raw = {name: _column(imp, name) for name in ("request_id", "listing_id", "shop_id", "taxonomy_id", "query")}
    raw["ts"] = _millis(imp.column("ts"))
    raw["price"] = pc.fill_null(imp.column("price"), 0.0).to_numpy().astype(np.float64)
    return {**raw, **session}


@settings(max_examples=60, deadline=None)
@given(logs(), logs(), st.sampled_from([1.0, 20.0]))
def test_the_serving_graph_computes_every_engineered_feature_as_the_examples_hold_it(log, earlier_log, strength):
    events, impressions = log
    ev, imp = tables(events, impressions)
    earlier = tables([], earlier_log[1])[1]
    counts = features.prior_counts(earlier)
    context = FeatureContext(catalog=pa.Table.from_pylist(list(CATALOG.values())), prior_counts=counts,
                             prior_days=2, prior_strength=strength)
    want = {**features.request_context(imp), **features.relevance(imp, context.catalog),
            **features.priors(imp, counts, 2, strength), **features.target_session(ev, imp, WINDOW_MS)}
    graph = ServingFeatures(ENGINEERED_FEATURES, WINDOW_MS, context)
    got = graph({k: tf.constant(v) for k, v in _raw(imp, _all_key_events(events, impressions)).items()})
    assert set(got) == set(ENGINEERED_FEATURES)
    for name in ENGINEERED_FEATURES:
        assert got[name].dtype == tf.float32
        np.testing.assert_array_equal(got[name].numpy(), want[name].to_numpy(), err_msg=name)


@settings(max_examples=30, deadline=None)
@given(logs())
def test_session_inputs_built_from_raw_events_give_the_same_features(log):
    """``session_events`` (what the export's parity check and bless send) windows the key's events."""
    events, impressions = log
    ev, imp = tables(events, impressions)
    names = FEATURE_GROUPS["session"]
    graph = ServingFeatures(names, WINDOW_MS)
    got = graph({k: tf.constant(v) for k, v in _raw(imp, session_events(ev, imp, WINDOW_MS)).items()})
    want = features.target_session(ev, imp, WINDOW_MS)
    for name in names:
        np.testing.assert_array_equal(got[name].numpy(), want[name].to_numpy(), err_msg=name)


def test_without_catalog_or_priors_the_features_are_zero_as_in_the_examples():
    events, impressions = [], [{"impression_id": "i", "request_id": "r", "ts": 7_200_000, "listing_id": "l1",
                                "shop_id": "s", "taxonomy_id": "t", "query": "blue lamp", "price": 3.0,
                                "user_id": "u", "browser_id": "b", "position": 0, "platform": "web",
                                "clicked": False, "click_ts": None}]
    _, imp = tables(events, impressions)
    names = [n for g in NONPERSONALIZED_GROUPS for n in FEATURE_GROUPS[g]]
    got = ServingFeatures(names, WINDOW_MS)({k: tf.constant(v) for k, v in _raw(imp, {}).items()})
    want = {**features.relevance(imp, None), **features.priors(imp, {}, 0, 20.0)}
    for name, values in want.items():
        np.testing.assert_array_equal(got[name].numpy(), values.to_numpy(), err_msg=name)
    assert got["query_tokens"].numpy().tolist() == [2.0]


def test_only_the_groups_read_add_inputs():
    assert inputs_needed(FEATURE_GROUPS["prior"]) == {}
    assert set(inputs_needed(FEATURE_GROUPS["request"])) == {"request_id"}
    assert set(inputs_needed(FEATURE_GROUPS["session"])) == set(SESSION_INPUTS)


def test_request_batches_never_split_a_request():
    requests = np.array(["a", "a", "a", "b", "c", "c", "d"], dtype=object)
    assert list(request_batches(requests, 2)) == [(0, 3), (3, 6), (6, 7)]
    assert list(request_batches(requests, 100)) == [(0, 7)]
    assert list(request_batches(requests[:0], 2)) == []


def test_the_export_freezes_the_counts_of_the_days_before_the_serving_day(tmp_path):
    """``feature_context`` of the serving day D+1 counts D's impressions (and never D+1's); of the test
    day D, those of D-1: what the test day's examples read."""
    import datetime as dt
    import types

    import pyarrow.parquet as pq

    from components.lake import Lake
    from components.lake.commit import mark_success
    from components.sessionize.config import SessionizeConfig
    from components.sessionize.step import feature_context
    from components.validate.step import validated_dir

    lake = Lake(str(tmp_path))
    day = dt.date(2026, 3, 4)
    clicks = {day - dt.timedelta(days=1): [True, False], day: [True, True, False], day + dt.timedelta(days=1): [True]}
    for d, clicked in clicks.items():
        rows = [{"query": "q", "listing_id": "l1", "shop_id": "s1", "clicked": c} for c in clicked]
        directory = validated_dir(lake, "impressions", d)
        os.makedirs(directory)
        pq.write_table(pa.Table.from_pylist(rows), os.path.join(directory, "part-0.parquet"))
        mark_success(directory)
    config = types.SimpleNamespace(sessionize=SessionizeConfig(prior_days=1, prior_strength=20.0))
    for serving_day, (imps, hits) in ((day + dt.timedelta(days=1), (3, 2)), (day, (2, 1))):
        context = feature_context(lake, config, serving_day, catalog_day=day)
        assert context.prior_days == 1 and context.catalog is None  # no validated catalog in this lake
        listing = context.prior_counts["listing"].to_pylist()
        assert listing == [{"listing_id": "l1", "imps": imps, "clicks": hits}]
    assert feature_context(lake, config, day - dt.timedelta(days=1)).prior_days == 0
