"""Schema of the sessionized, labelled examples (DESIGN §5): one row per impression."""
from __future__ import annotations

import pyarrow as pa

from schemas.raw import LISTING_ACTIONS, TS

ENTITIES = ("listing", "shop", "taxonomy", "query")

# The (entity, action) pairs that can occur: listing entities under listing actions,
# queries under search (DESIGN §5).
DEFAULT_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (e, a) for e in ("listing", "shop", "taxonomy") for a in LISTING_ACTIONS
) + (("query", "search"),)


def seq_column(entity: str, action: str) -> str:
    return f"seq_{entity}_{action}"


def examples_schema(pairs=DEFAULT_PAIRS) -> pa.Schema:
    """Arrow schema of derived/examples for the configured (entity, action) pairs."""
    base = [
        pa.field("impression_id", pa.string(), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("user_key", pa.string(), nullable=False),
        pa.field("logged_in", pa.bool_(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("listing_id", pa.string(), nullable=False),
        pa.field("shop_id", pa.string(), nullable=False),
        pa.field("taxonomy_id", pa.string(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("platform", pa.string(), nullable=False),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("clicked", pa.bool_(), nullable=False),
        pa.field("purchased", pa.bool_(), nullable=False),
        pa.field("sample_rate", pa.float64(), nullable=False),
    ]
    seqs = [pa.field(seq_column(e, a), pa.list_(pa.string()), nullable=False) for e, a in pairs]
    return pa.schema(base + seqs)
