"""A small raw lake shaped like a real sponsored-listing log (the rankers issue's held-out log).

Requests of 4-8 shown items with positions and at most one click; one-hour sessions of item
views (mostly of one category) and searches with timestamps; a long-tail catalog (most listings seen once) with a
category and a price but no titles, tags, images or shops (``shop_id`` is filled with the
category, as an importer would); no purchases. Clicks follow the shape of that log: ads of a
listing the key viewed in the hour before are clicked far more often (0.30 against 0.03 in
the real log), and the top positions more than the bottom ones.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from schemas.raw import EVENTS_SCHEMA, IMPRESSIONS_SCHEMA, LISTINGS_SCHEMA
from tests.rawdata import loose, write_partition

START = dt.date(2026, 3, 1)
UTC = dt.timezone.utc


def _ts(day: dt.date, seconds: np.ndarray) -> pa.Array:
    base = dt.datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000
    return pa.array((base + seconds * 1000).astype(np.int64), pa.int64()).cast(pa.timestamp("ms", tz="UTC"))


def build(root: str, days: int = 3, seed: int = 0, users_per_day: int = 500, n_listings: int = 6000) -> dict:
    """Write ``days`` days from :data:`START` under ``root``; returns counts per day."""
    rng = np.random.default_rng(seed)
    categories = np.array([f"c{k}" for k in range(40)], dtype=object)
    listing_cat = categories[rng.integers(0, len(categories), n_listings)]
    listing_price = np.round(np.exp(rng.normal(3.0, 0.8, n_listings)), 2)
    popularity = 1.0 / np.arange(1, n_listings + 1) ** 0.6  # a long tail: most listings are rarely seen
    popularity /= popularity.sum()
    by_cat = {c: np.flatnonzero(listing_cat == c) for c in categories}
    created = _ts(START - dt.timedelta(days=30), np.zeros(n_listings))
    ids = np.array([f"item{k}" for k in range(n_listings)], dtype=object)
    counts = {}
    for d in range(days):
        day = START + dt.timedelta(days=d)
        ev, imp = {k: [] for k in EVENTS_SCHEMA.names}, {k: [] for k in IMPRESSIONS_SCHEMA.names}
        n_ev = n_imp = 0
        for u in range(users_per_day):
            user = f"u{d}-{u}" if rng.random() < 0.5 else f"u{u}"  # some keys come back on later days
            t = rng.uniform(0, 86_400 - 4_000)
            viewed: list[tuple[float, int]] = []
            members = by_cat[categories[rng.integers(0, len(categories))]]  # the session's intent
            weights = popularity[members] / popularity[members].sum()
            for _ in range(int(rng.integers(1, 12))):
                t += rng.exponential(60)
                if rng.random() < 0.25:  # a search, then a request of shown items
                    query = f"q{int(rng.integers(0, 200))}"
                    for k, v in zip(EVENTS_SCHEMA.names, [f"e{d}-{n_ev}", user, f"b{user}", t, "search", None, None,
                                                          None, query, "web"]):
                        ev[k].append(v)
                    n_ev += 1
                    k_items = int(rng.integers(4, 9))
                    shown = rng.choice(n_listings, size=k_items, replace=False, p=popularity)
                    recent = [i for s, i in viewed if t - s < 3600]
                    if recent and rng.random() < 0.4:
                        shown[rng.integers(0, k_items)] = recent[-1]  # retargeting a listing just viewed
                    p = np.where(np.isin(shown, recent), 0.30, 0.03) / (1 + 0.5 * np.arange(k_items))
                    clicked = rng.random(k_items) < p
                    if clicked.sum() > 1:  # at most one click a request
                        keep = rng.choice(np.flatnonzero(clicked))
                        clicked[:] = False
                        clicked[keep] = True
                    for pos, (item, c) in enumerate(zip(shown, clicked)):
                        row = [f"i{d}-{n_imp}", f"r{d}-{n_ev}", user, f"b{user}", t + 1, query, ids[item],
                               listing_cat[item], listing_cat[item], pos, "web", float(listing_price[item]), bool(c),
                               t + 5 if c else None]
                        for k, v in zip(IMPRESSIONS_SCHEMA.names, row):
                            imp[k].append(v)
                        n_imp += 1
                    t += 6
                item = int(rng.choice(members, p=weights)) if rng.random() < 0.8 else \
                    int(rng.choice(n_listings, p=popularity))
                for k, v in zip(EVENTS_SCHEMA.names, [f"e{d}-{n_ev}", user, f"b{user}", t, "view", ids[item],
                                                      listing_cat[item], listing_cat[item], None, "web"]):
                    ev[k].append(v)
                n_ev += 1
                viewed.append((t, item))
        ev["ts"] = _ts(day, np.array(ev["ts"]))
        imp["ts"] = _ts(day, np.array(imp["ts"]))
        base_ms = dt.datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000
        imp["click_ts"] = pa.array([None if x is None else int(base_ms + x * 1000) for x in imp["click_ts"]],
                                   pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
        write_partition(root, "events", day, [pa.table(ev, schema=loose(EVENTS_SCHEMA))])
        write_partition(root, "impressions", day, [pa.table(imp, schema=loose(IMPRESSIONS_SCHEMA))])
        listings = pa.table({
            "listing_id": ids, "shop_id": listing_cat, "taxonomy_id": listing_cat, "taxonomy_path": listing_cat,
            "title": pa.nulls(n_listings, pa.string()), "tags": pa.nulls(n_listings, pa.list_(pa.string())),
            "price": listing_price, "primary_color": pa.nulls(n_listings, pa.string()),
            "material": pa.nulls(n_listings, pa.string()), "image_uri": pa.nulls(n_listings, pa.string()),
            "created_ts": created, "is_active": np.ones(n_listings, bool),
            "has_active_campaign": np.ones(n_listings, bool)}, schema=loose(LISTINGS_SCHEMA))
        write_partition(root, "listings", day, [listings])
        counts[day.isoformat()] = {"events": n_ev, "impressions": n_imp, "clicks": int(sum(imp["clicked"]))}
    for table in ("events", "impressions", "listings"):
        for d in range(days):
            open(f"{root}/raw/{table}/dt={(START + dt.timedelta(days=d)).isoformat()}/_SUCCESS", "w").close()
    return counts
