"""The data contracts: raw specs are consistent and the examples schema follows DESIGN §5."""
from __future__ import annotations

import pyarrow as pa

from schemas.features import ENGINEERED_FEATURES
from schemas.examples import DEFAULT_PAIRS, examples_schema, seq_column
from schemas.raw import ACTIONS, RAW_TABLES


def test_raw_specs_are_consistent():
    for spec in RAW_TABLES.values():
        names = set(spec.schema.names)
        assert spec.key in spec.required
        assert set(spec.enums) <= names and set(spec.day_bound) <= names and set(spec.order_by) <= names
        for rule in spec.required_when:
            assert set(rule.columns) <= names and rule.when_column in spec.enums
            assert set(rule.when_values) <= set(spec.enums[rule.when_column])
    assert set(RAW_TABLES["events"].enums["action"]) == set(ACTIONS)


def test_examples_schema_has_a_sequence_per_pair_and_the_labels():
    schema = examples_schema()
    assert len(DEFAULT_PAIRS) == 13 and ("query", "search") in DEFAULT_PAIRS
    for entity, action in DEFAULT_PAIRS:
        field = schema.field(seq_column(entity, action))
        assert field.type == pa.list_(pa.string()) and not field.nullable
    for name in ("impression_id", "user_key", "ts", "clicked", "purchased", "sample_rate"):
        assert not schema.field(name).nullable
    assert examples_schema([("listing", "view")], engineered=False).names[-1] == "seq_listing_view"
    with_features = examples_schema([("listing", "view")])
    assert with_features.names[-len(ENGINEERED_FEATURES):] == list(ENGINEERED_FEATURES)
    assert {with_features.field(f).type for f in ENGINEERED_FEATURES} == {pa.float32()}
