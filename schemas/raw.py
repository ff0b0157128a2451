"""Arrow schemas and validation rules of the raw logs (DESIGN §4).

Each raw table is described once, as a :class:`TableSpec`: its Arrow schema plus the
rules a row must satisfy (enums, conditional requirements, the partition-day bound
and the unique key). ``schemas.validation`` applies a spec to any Arrow table.
"""
from __future__ import annotations

import dataclasses
import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc

TS = pa.timestamp("ms", tz="UTC")

ACTIONS = ("view", "favorite", "cart_add", "purchase", "search")
LISTING_ACTIONS = ("view", "favorite", "cart_add", "purchase")
PLATFORMS = ("web", "ios", "android")


@dataclasses.dataclass(frozen=True)
class Rule:
    """A condition on a row: ``columns`` must be non-null where ``when_column`` is in ``when_values``."""

    columns: tuple[str, ...]
    when_column: str
    when_values: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """A raw table's contract: schema + row rules."""

    name: str
    schema: pa.Schema
    key: str  # unique id; duplicates after the first go to the dead letters
    enums: dict[str, tuple[str, ...]]
    required_when: tuple[Rule, ...] = ()
    day_bound: tuple[str, ...] = ()  # timestamp columns that must fall inside the partition's day
    not_after_day: tuple[str, ...] = ()  # timestamp columns that must not be after the partition's day
    order_by: tuple[str, ...] = ()  # deterministic order of the validated output

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.schema if not f.nullable)


EVENTS_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string()),  # logged-out users have none
        pa.field("browser_id", pa.string(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("listing_id", pa.string()),
        pa.field("shop_id", pa.string()),
        pa.field("taxonomy_id", pa.string()),
        pa.field("query", pa.string()),
        pa.field("platform", pa.string(), nullable=False),
    ]
)

IMPRESSIONS_SCHEMA = pa.schema(
    [
        pa.field("impression_id", pa.string(), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string()),
        pa.field("browser_id", pa.string(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("listing_id", pa.string(), nullable=False),
        pa.field("shop_id", pa.string(), nullable=False),
        pa.field("taxonomy_id", pa.string(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("platform", pa.string(), nullable=False),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("clicked", pa.bool_(), nullable=False),
        pa.field("click_ts", TS),
    ]
)

LISTINGS_SCHEMA = pa.schema(
    [
        pa.field("listing_id", pa.string(), nullable=False),
        pa.field("shop_id", pa.string(), nullable=False),
        pa.field("taxonomy_id", pa.string(), nullable=False),
        pa.field("taxonomy_path", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("primary_color", pa.string()),
        pa.field("material", pa.string()),
        pa.field("image_uri", pa.string()),
        pa.field("created_ts", TS, nullable=False),
        pa.field("is_active", pa.bool_(), nullable=False),
        pa.field("has_active_campaign", pa.bool_(), nullable=False),
    ]
)

ORACLE_SCHEMA = pa.schema(
    [
        pa.field("impression_id", pa.string(), nullable=False),
        pa.field("p_click", pa.float64(), nullable=False),
        pa.field("p_purchase", pa.float64(), nullable=False),
    ]
)

EVENTS = TableSpec(
    name="events",
    schema=EVENTS_SCHEMA,
    key="event_id",
    enums={"action": ACTIONS, "platform": PLATFORMS},
    required_when=(
        Rule(("listing_id", "shop_id", "taxonomy_id"), "action", LISTING_ACTIONS),
        Rule(("query",), "action", ("search",)),
    ),
    day_bound=("ts",),
    order_by=("ts", "event_id"),
)

IMPRESSIONS = TableSpec(
    name="impressions",
    schema=IMPRESSIONS_SCHEMA,
    key="impression_id",
    enums={"platform": PLATFORMS},
    day_bound=("ts",),
    order_by=("ts", "impression_id"),
)

LISTINGS = TableSpec(
    name="listings",
    schema=LISTINGS_SCHEMA,
    key="listing_id",
    enums={},
    not_after_day=("created_ts",),
    order_by=("listing_id",),
)

RAW_TABLES: dict[str, TableSpec] = {s.name: s for s in (EVENTS, IMPRESSIONS, LISTINGS)}


MS_PER_DAY = 86_400_000


def day_start_ms(day: dt.date) -> int:
    """Milliseconds since the epoch of the UTC midnight that starts partition day ``day``."""
    return (day - dt.date(1970, 1, 1)).days * MS_PER_DAY


def user_key(table: pa.Table) -> pa.Array:
    """The user key of DESIGN §4: ``user_id`` when present, else ``browser_id``."""
    return pc.coalesce(table.column("user_id"), table.column("browser_id")).combine_chunks()
