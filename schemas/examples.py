"""Schema of the sessionized, labelled examples (DESIGN §5): one row per impression."""
from __future__ import annotations

import pyarrow as pa

from schemas.features import feature_fields
from schemas.raw import IMPRESSIONS_SCHEMA, LISTING_ACTIONS

ENTITIES = ("listing", "shop", "taxonomy", "query")

# The (entity, action) pairs that can occur: listing entities under listing actions,
# queries under search (DESIGN §5).
DEFAULT_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (e, a) for e in ("listing", "shop", "taxonomy") for a in LISTING_ACTIONS
) + (("query", "search"),)


# Impression columns an example keeps as they are.
CARRIED_FROM_IMPRESSIONS = ("impression_id", "request_id", "ts", "query", "listing_id", "shop_id",
                            "taxonomy_id", "position", "platform", "price", "clicked")


def seq_column(entity: str, action: str) -> str:
    return f"seq_{entity}_{action}"


def examples_schema(pairs=DEFAULT_PAIRS, engineered: bool = True) -> pa.Schema:
    """Arrow schema of derived/examples for the configured (entity, action) pairs; without the
    engineered features (``schemas.features``) when ``engineered`` is false."""
    carried = [IMPRESSIONS_SCHEMA.field(name) for name in CARRIED_FROM_IMPRESSIONS]
    base = carried[:2] + [
        pa.field("user_key", pa.string(), nullable=False),  # user_id, else browser_id (DESIGN §4)
        pa.field("logged_in", pa.bool_(), nullable=False),
    ] + carried[2:] + [
        pa.field("purchased", pa.bool_(), nullable=False),
        pa.field("sample_rate", pa.float64(), nullable=False),
    ]
    seqs = [pa.field(seq_column(e, a), pa.list_(pa.string()), nullable=False) for e, a in pairs]
    return pa.schema(base + seqs + (feature_fields() if engineered else []))
