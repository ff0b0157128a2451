"""The serving request format (components/serving/model.py); the exported model itself is checked
end to end against the evaluated predictions in test_pipeline_e2e.py."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import tensorflow as tf

from components.serving.features import SESSION_INPUTS
from components.serving.model import NOT_SERVED, raw_features, serving_input_spec
from schemas.examples import examples_schema
from schemas.features import ENGINEERED_FEATURES, FEATURE_GROUPS
from schemas.raw import EVENTS_SCHEMA
from tests.rawdata import loose

PAIRS = [("listing", "view"), ("query", "search")]


BASE = {"listing_id", "shop_id", "taxonomy_id", "query", "platform", "ts", "position", "logged_in", "price",
        "seq_listing_view", "seq_query_search"}


def test_the_signature_takes_raw_fields_not_labels_ids_or_engineered_features():
    spec = serving_input_spec(PAIRS, ENGINEERED_FEATURES)
    assert not set(NOT_SERVED) & set(spec)
    assert spec["listing_id"] == tf.TensorSpec([None], tf.string, name="listing_id")
    assert spec["ts"].dtype == tf.int64 and spec["price"].dtype == tf.float64
    assert spec["seq_listing_view"] == tf.TensorSpec([None, None], tf.string, name="seq_listing_view")
    assert spec["request_id"] == tf.TensorSpec([None], tf.string, name="request_id")
    assert spec["session_ts"] == tf.TensorSpec([None, None], tf.int64, name="session_ts")
    assert set(spec) == BASE | {"request_id"} | set(SESSION_INPUTS)
    # a model without the session features (the non-personalized inputs) takes no session events
    nonpersonalized = [f for g in ("request", "relevance", "prior") for f in FEATURE_GROUPS[g]]
    assert set(serving_input_spec(PAIRS, nonpersonalized)) == BASE | {"request_id"}


def test_raw_features_pad_lists_and_fill_nulls_like_the_transform_input():
    schema = examples_schema(PAIRS)
    rows = [
        {"impression_id": "i1", "listing_id": "l1", "shop_id": "s1", "taxonomy_id": "t1", "query": None,
         "platform": "web", "ts": 3_600_000, "position": 2, "logged_in": True, "price": 9.5, "clicked": True,
         "purchased": False, "sample_rate": 1.0, "seq_listing_view": ["a", "b", "c"], "seq_query_search": []},
        {"impression_id": "i2", "listing_id": "l2", "shop_id": "s2", "taxonomy_id": "t2", "query": "red lamp",
         "platform": "ios", "ts": 7_200_000, "position": 0, "logged_in": False, "price": 1.0, "clicked": False,
         "purchased": False, "sample_rate": 1.0, "seq_listing_view": ["d"], "seq_query_search": ["red lamp"]},
    ]
    for r in rows:
        r.update(user_key="b", request_id="r", browser_id="b", click_ts=None,
                 **{name: 0.5 for name in ENGINEERED_FEATURES})
    table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)
    events = pa.Table.from_pylist([
        {"event_id": "e1", "user_id": None, "browser_id": "b", "ts": 3_000_000, "action": "view", "listing_id": "l1",
         "shop_id": "s1", "taxonomy_id": "t1", "query": None, "platform": "web"},
        {"event_id": "e2", "user_id": None, "browser_id": "v", "ts": 3_000_000, "action": "view", "listing_id": "l9",
         "shop_id": "s9", "taxonomy_id": "t9", "query": None, "platform": "web"}], schema=loose(EVENTS_SCHEMA))
    out = raw_features(table, PAIRS, events, window_ms=3_600_000)
    assert set(out) == set(serving_input_spec(PAIRS, ENGINEERED_FEATURES)) | set(ENGINEERED_FEATURES)
    assert list(out["query"]) == ["", "red lamp"]
    assert out["ts"].tolist() == [3_600_000, 7_200_000] and out["logged_in"].tolist() == [1, 0]
    assert out["price"].dtype == np.float64 and out["price"].tolist() == [9.5, 1.0]
    assert out["seq_listing_view"].tolist() == [["a", "b", "c"], ["d", "", ""]]
    assert out["seq_query_search"].tolist() == [[""], ["red lamp"]]
    assert out["request_id"].tolist() == ["r", "r"]
    # the key's events of [t - 1 h, t): row 1 sees its view 600 s before, row 2 (t = 2 h) none; another key's never
    assert out["session_listing_id"].tolist() == [["l1"], [""]] and out["session_ts"].tolist() == [[3_000_000], [0]]
    assert out["session_action"].tolist() == [["view"], [""]]
