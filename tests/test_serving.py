"""The serving request format (components/serving/model.py); the exported model itself is checked
end to end against the evaluated predictions in test_pipeline_e2e.py."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import tensorflow as tf

from components.serving.model import NOT_SERVED, raw_features, serving_input_spec
from schemas.examples import examples_schema
from schemas.features import ENGINEERED_FEATURES

PAIRS = [("listing", "view"), ("query", "search")]


def test_the_signature_takes_features_not_labels_or_ids():
    spec = serving_input_spec(PAIRS)
    assert not set(NOT_SERVED) & set(spec)
    assert spec["listing_id"] == tf.TensorSpec([None], tf.string, name="listing_id")
    assert spec["ts"].dtype == tf.int64 and spec["price"].dtype == tf.float32
    assert spec["seq_listing_view"] == tf.TensorSpec([None, None], tf.string, name="seq_listing_view")
    assert set(spec) == {"listing_id", "shop_id", "taxonomy_id", "query", "platform", "ts", "position", "logged_in",
                         "price", "seq_listing_view", "seq_query_search"} | set(ENGINEERED_FEATURES)
    assert {spec[name].dtype for name in ENGINEERED_FEATURES} == {tf.float32}


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
        r.update(user_key="u", request_id="r", browser_id="b", click_ts=None,
                 **{name: 0.5 for name in ENGINEERED_FEATURES})
    table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)
    out = raw_features(table, PAIRS)
    assert set(out) == set(serving_input_spec(PAIRS))
    assert list(out["query"]) == ["", "red lamp"]
    assert out["ts"].tolist() == [3_600_000, 7_200_000] and out["logged_in"].tolist() == [1, 0]
    assert out["price"].dtype == np.float32
    assert out["seq_listing_view"].tolist() == [["a", "b", "c"], ["d", "", ""]]
    assert out["seq_query_search"].tolist() == [[""], ["red lamp"]]
    assert out["req_price_ratio"].tolist() == [0.5, 0.5] and out["req_price_ratio"].dtype == np.float32
