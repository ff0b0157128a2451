"""Hand-made raw partitions for tests: small, valid by default, easy to break on purpose."""
from __future__ import annotations

import datetime as dt
import os
import types

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.raw import EVENTS_SCHEMA, IMPRESSIONS_SCHEMA, LISTINGS_SCHEMA

DAY = dt.date(2026, 3, 1)
UTC = dt.timezone.utc


def at(hour: int, minute: int = 0, day: dt.date = DAY) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def events(n: int, day: dt.date = DAY, prefix: str = "e") -> list[dict]:
    rows = []
    for i in range(n):
        search = i % 5 == 0
        rows.append({
            "event_id": f"{prefix}{day:%m%d}-{i}", "user_id": None if i % 3 == 0 else f"u{i % 7}",
            "browser_id": f"b{i % 11}", "ts": at(i % 24, i % 60, day),
            "action": "search" if search else ("view", "favorite", "cart_add", "purchase")[i % 4],
            "listing_id": None if search else f"l{i % 13}", "shop_id": None if search else f"s{i % 5}",
            "taxonomy_id": None if search else f"t{i % 3}", "query": f"blue lamp {i}" if search else None,
            "platform": ("web", "ios", "android")[i % 3],
        })
    return rows


def impressions(n: int, day: dt.date = DAY) -> list[dict]:
    return [{
        "impression_id": f"i{day:%m%d}-{i}", "request_id": f"r{i // 4}", "user_id": f"u{i % 7}",
        "browser_id": f"b{i % 11}", "ts": at(i % 24, i % 60, day), "query": "blue lamp", "listing_id": f"l{i % 13}",
        "shop_id": f"s{i % 5}", "taxonomy_id": f"t{i % 3}", "position": i % 4, "platform": "web",
        "price": 10.0 + i, "clicked": i % 9 == 0, "click_ts": at(i % 24, i % 60, day) if i % 9 == 0 else None,
    } for i in range(n)]


def listings(n: int, day: dt.date = DAY) -> list[dict]:
    return [{
        "listing_id": f"l{i}", "shop_id": f"s{i % 5}", "taxonomy_id": f"t{i % 3}",
        "taxonomy_path": f"home.lighting.t{i % 3}", "title": f"lamp {i}", "tags": ["lamp", "blue"],
        "price": 12.5, "primary_color": "blue", "material": "glass", "image_uri": f"raw/images/l{i}.png",
        "created_ts": at(0, 0, day - dt.timedelta(days=30)), "is_active": True, "has_active_campaign": i % 2 == 0,
    } for i in range(n)]


SCHEMAS = {"events": EVENTS_SCHEMA, "impressions": IMPRESSIONS_SCHEMA, "listings": LISTINGS_SCHEMA}


def loose(schema: pa.Schema) -> pa.Schema:
    """The schema with every field nullable: what an upstream producer's files usually declare."""
    return pa.schema([f.with_nullable(True) for f in schema])


def write_partition(root: str, table: str, day: dt.date, parts: list, schema: pa.Schema | None = None) -> str:
    """Write each element of ``parts`` (a list of row dicts, or an Arrow table) as one file."""
    directory = os.path.join(root, "raw", table, f"dt={day.isoformat()}")
    os.makedirs(directory, exist_ok=True)
    for k, part in enumerate(parts):
        t = part if isinstance(part, pa.Table) else pa.Table.from_pylist(part, schema=loose(schema or SCHEMAS[table]))
        pq.write_table(t, os.path.join(directory, f"part-{k:05d}.parquet"))
    return directory


def validate_config(**beam) -> types.SimpleNamespace:
    """The slice of the pipeline config the validate step reads."""
    from components.beam_options import BeamConfig
    from components.validate.step import ValidateConfig
    from components.window import WindowConfig

    return types.SimpleNamespace(
        validate=ValidateConfig(max_bad_fraction=1.0, num_buckets=3, batch_rows=7),
        window=WindowConfig(train_days=1, session_lookback_days=0, label_lookahead_days=0),
        beam=BeamConfig(**beam), runtime=types.SimpleNamespace(force=False))
