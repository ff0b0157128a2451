"""Turns a simulated chunk's logs into Arrow tables cast to the raw schemas (DESIGN §4).

Rows are sorted by (ts, session, step order) before ids are assigned, so ids increase with
time inside a (day, chunk); ids embed the generation date and chunk, so they are unique across
any date range. Impressions carry their oracle probabilities until the writer splits them off.
"""
from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.marketplace.catalog import Catalog, listing_ids, shop_ids
from components.marketplace.population import Population, browser_ids, user_ids
from components.marketplace.queries import query_text
from components.marketplace.state import EVENT_COLUMNS, IMPRESSION_COLUMNS, SEARCH, SimContext
from components.marketplace.util import format_ids, take_strings
from schemas.raw import ACTIONS, EVENTS_SCHEMA, IMPRESSIONS_SCHEMA, ORACLE_SCHEMA, PLATFORMS, TS

SEQ_WIDTH = 9
ORACLE_EXTRA = [f for f in ORACLE_SCHEMA if f.name != "impression_id"]
IMPRESSIONS_WITH_ORACLE = pa.schema(list(IMPRESSIONS_SCHEMA) + ORACLE_EXTRA)


@dataclasses.dataclass(frozen=True)
class Lookups:
    """Id strings of the catalog for one day (listing number -> listing_id, shop_id, taxonomy_id)."""

    listing_id: pa.Array
    shop_id: pa.Array
    taxonomy_id: pa.Array
    listing_shop: np.ndarray
    listing_fine: np.ndarray
    listing_price: np.ndarray

    @classmethod
    def build(cls, catalog: Catalog) -> "Lookups":
        lst = catalog.listings
        return cls(listing_ids(lst.n), shop_ids(catalog.shops.n), pa.array(catalog.taxonomy.ids.tolist()),
                   lst.shop.astype(np.int64), lst.fine.astype(np.int64), lst.price)


def id_prefix(kind: str, day: dt.date, chunk: int) -> str:
    """``E20260301-003-`` style prefix: entity letter, generation date, chunk."""
    return f"{kind}{day:%Y%m%d}-{chunk:03d}-"


def _key_columns(ctx: SimContext, pop: Population, session: np.ndarray) -> dict[str, pa.Array]:
    """user_id (null when logged out), browser_id and platform of each row's session."""
    s = ctx.sessions
    key = s.key[session]
    logged_in = pa.array(pop.logged_in[key])
    return {
        "user_id": pc.if_else(logged_in, user_ids(key), pa.scalar(None, pa.string())),
        "browser_id": browser_ids(s.browser[session]),
        "platform": pa.array(list(PLATFORMS)).take(pa.array(s.platform[session])),
    }


def _listing_columns(lookups: Lookups, listing: np.ndarray) -> dict[str, pa.Array]:
    """listing_id, shop_id, taxonomy_id (null where listing < 0)."""
    has = listing >= 0
    safe = np.where(has, listing, 0)
    return {
        "listing_id": take_strings(lookups.listing_id, listing),
        "shop_id": take_strings(lookups.shop_id, np.where(has, lookups.listing_shop[safe], -1)),
        "taxonomy_id": take_strings(lookups.taxonomy_id, np.where(has, lookups.listing_fine[safe], -1)),
    }


def events_table(ctx: SimContext, pop: Population, lookups: Lookups, day: dt.date, chunk: int) -> pa.Table:
    """The chunk's events (all of them, including those past midnight), sorted by ts, as EVENTS_SCHEMA."""
    c = ctx.events.columns(EVENT_COLUMNS)
    order = np.lexsort((c["order"], c["session"], c["ts"]))
    c = {k: v[order] for k, v in c.items()}
    n = len(order)
    is_search = c["action"] == SEARCH
    text = query_text(ctx.vocab, c["q_color"], c["q_material"], c["q_noun"])
    columns = {
        "event_id": format_ids(id_prefix("E", day, chunk), np.arange(n), SEQ_WIDTH),
        **_key_columns(ctx, pop, c["session"]),
        "ts": pa.array(c["ts"], TS),
        "action": pa.array(list(ACTIONS)).take(pa.array(c["action"])),
        **_listing_columns(lookups, c["listing"]),
        "query": pc.if_else(pa.array(is_search), text, pa.scalar(None, pa.string())),
    }
    return pa.table({f.name: columns[f.name] for f in EVENTS_SCHEMA}, schema=EVENTS_SCHEMA)


def impressions_table(ctx: SimContext, pop: Population, lookups: Lookups, day: dt.date, chunk: int) -> pa.Table:
    """The chunk's impressions sorted by (ts, request, position), with the oracle columns p_click, p_purchase."""
    c = ctx.impressions.columns(IMPRESSION_COLUMNS)
    order = np.lexsort((c["position"], c["request"], c["ts"]))
    c = {k: v[order] for k, v in c.items()}
    n = len(order)
    clicked = c["clicked"]
    columns = {
        "impression_id": format_ids(id_prefix("I", day, chunk), np.arange(n), SEQ_WIDTH),
        "request_id": format_ids(id_prefix("R", day, chunk), c["request"], SEQ_WIDTH),
        **_key_columns(ctx, pop, c["session"]),
        "ts": pa.array(c["ts"], TS),
        "query": query_text(ctx.vocab, c["q_color"], c["q_material"], c["q_noun"]),
        **_listing_columns(lookups, c["listing"]),
        "position": pa.array(c["position"], pa.int32()),
        "price": pa.array(lookups.listing_price[c["listing"]]),
        "clicked": pa.array(clicked),
        "click_ts": pa.array(c["click_ts"], TS, mask=~clicked),
        "p_click": pa.array(c["p_click"]),
        "p_purchase": pa.array(c["p_purchase"]),
    }
    return pa.table({f.name: columns[f.name] for f in IMPRESSIONS_WITH_ORACLE}, schema=IMPRESSIONS_WITH_ORACLE)


def split_by_time(table: pa.Table, end_ms: int) -> tuple[pa.Table, pa.Table]:
    """(rows with ts < end_ms, the rest) — the rest is carried into the next day's partition."""
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    inside = pa.array(ts < end_ms)
    return table.filter(inside), table.filter(pc.invert(inside))


def merge(carried: pa.Table | None, table: pa.Table) -> pa.Table:
    """Carried rows from earlier days + today's rows, in (ts, id) order.

    Both inputs are already in (ts, id) order and, at equal ts, carried ids (earlier generation
    date in the id) sort before today's, so a numeric sort on (ts, origin, position) is the
    (ts, id) order without comparing strings.
    """
    if carried is None or carried.num_rows == 0:
        return table
    merged = pa.concat_tables([carried, table]).combine_chunks()
    ts = merged.column("ts").cast(pa.int64()).to_numpy()
    origin = np.repeat([0, 1], [carried.num_rows, table.num_rows])
    return merged.take(pa.array(np.lexsort((np.arange(merged.num_rows), origin, ts))))


def split_oracle(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(impressions as IMPRESSIONS_SCHEMA, oracle as ORACLE_SCHEMA), row-aligned."""
    return table.select(IMPRESSIONS_SCHEMA.names).cast(IMPRESSIONS_SCHEMA), table.select(ORACLE_SCHEMA.names).cast(ORACLE_SCHEMA)
