"""``generate``: writes the synthetic marketplace's raw layout for a date range (DESIGN §3, §10).

Day by day: update the catalog (new listings, deactivations) and write its snapshot and the
new listings' images; then simulate the user keys chunk by chunk (one part file per chunk),
carrying events and impressions that fall past midnight into the next day's partition.
Memory is bounded by the chunk size (``output.chunk_user_keys``).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import time
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from components.marketplace.catalog import Catalog, advance_day, build_catalog, snapshot_table
from components.marketplace.config import MarketplaceConfig
from components.marketplace.images import write_images
from components.marketplace.pools import build_pools
from components.marketplace.population import Population, build_population
from components.marketplace.queries import QueryVocab
from components.marketplace.sessions import simulate
from components.marketplace.tables import Lookups, events_table, impressions_table, merge, split_by_time, split_oracle
from components.marketplace.util import Stream, stream
from components.marketplace.writer import PartitionWriter
from schemas.raw import MS_PER_DAY, day_start_ms

EVENTS, IMPRESSIONS, LISTINGS, ORACLE = "raw/events", "raw/impressions", "raw/listings", "oracle/impressions"


class _Timer:
    """Accumulates wall seconds per phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def generate(config: MarketplaceConfig, root: str, start: dt.date, days: int, seed: int,
             progress: Callable[[str], None] | None = None) -> dict:
    """Writes ``days`` days from ``start`` under ``root``; returns a summary (rows per table per day, seconds).

    Deterministic: the same (config, start, seed) gives byte-identical files, and a shorter range
    gives the same files as a longer one for the days they share.
    """
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    say = progress or (lambda _msg: None)
    timer = _Timer()
    t_start = time.perf_counter()
    with timer.phase("world"):
        catalog = build_catalog(config.catalog, seed, start)
        population = build_population(config.population, catalog, seed)
        vocab = QueryVocab.build(catalog)
    say(f"marketplace: {catalog.listings.n} listings, {catalog.shops.n} shops, {catalog.taxonomy.n} taxonomies, "
        f"{population.n} user keys")
    with timer.phase("images"):
        n_images = write_images(config.images, catalog, np.arange(catalog.listings.n), root, seed)
    if n_images:
        say(f"marketplace: wrote {n_images} listing images")

    chunk = config.output.chunk_user_keys
    chunks = [np.arange(lo, min(lo + chunk, population.n)) for lo in range(0, population.n, chunk)]
    carry: dict[int, tuple[pa.Table | None, pa.Table | None]] = {c: (None, None) for c in range(len(chunks))}
    per_day: dict[str, dict] = {}
    for i in range(days):
        day = start + dt.timedelta(days=i)
        t_day = time.perf_counter()
        per_day[day.isoformat()] = _generate_day(config, root, seed, i, day, catalog, population, vocab, chunks,
                                                 carry, timer)
        stats = per_day[day.isoformat()]
        say(f"marketplace: {day} {stats['events']} events, {stats['impressions']} impressions, "
            f"{stats['clicks']} clicks, {stats['listings']} listings ({time.perf_counter() - t_day:.1f}s)")
    return {
        "root": root, "start": start.isoformat(), "days": days, "seed": seed,
        "listings": catalog.listings.n, "user_keys": population.n,
        "images": n_images + sum(d["images"] for d in per_day.values()),
        "per_day": per_day,
        "rows": {t: sum(d[t] for d in per_day.values()) for t in ("events", "impressions", "clicks")},
        "seconds": round(time.perf_counter() - t_start, 3),
        "seconds_by_phase": {k: round(v, 3) for k, v in timer.seconds.items()},
    }


def _generate_day(config: MarketplaceConfig, root: str, seed: int, index: int, day: dt.date, catalog: Catalog,
                  population: Population, vocab: QueryVocab, chunks: list[np.ndarray],
                  carry: dict[int, tuple[pa.Table | None, pa.Table | None]], timer: _Timer) -> dict:
    """One day: catalog update + snapshot + images, then every chunk's simulation and part files."""
    start_ms = day_start_ms(day)
    end_ms = start_ms + MS_PER_DAY
    with timer.phase("catalog"):
        new = advance_day(catalog, seed, index, start_ms)
        pools = build_pools(catalog, start_ms)  # today's new listings become visible tomorrow
        lookups = Lookups.build(catalog)
        writer = PartitionWriter(root, LISTINGS, day, config.output)
        writer.write(snapshot_table(catalog, config.images.enabled))
        writer.commit()
    with timer.phase("images"):
        n_images = write_images(config.images, catalog, new, root, seed)
    writers = {name: PartitionWriter(root, name, day, config.output) for name in (EVENTS, IMPRESSIONS, ORACLE)}
    stats = {"events": 0, "impressions": 0, "clicks": 0, "listings": catalog.listings.n, "new_listings": len(new),
             "images": n_images}
    try:
        for c, keys in enumerate(chunks):
            with timer.phase("simulate"):
                ctx = simulate(config, catalog, pools, vocab, population, keys, start_ms, stream(seed, Stream.DAY_SESSIONS, index, c))
            with timer.phase("tables"):
                events = merge(carry[c][0], events_table(ctx, population, lookups, day, c))
                impressions = merge(carry[c][1], impressions_table(ctx, population, lookups, day, c))
                events, spill_events = split_by_time(events, end_ms)
                impressions, spill_impressions = split_by_time(impressions, end_ms)
                carry[c] = (spill_events, spill_impressions)
                impressions, oracle = split_oracle(impressions)
            with timer.phase("write"):
                writers[EVENTS].write(events)
                writers[IMPRESSIONS].write(impressions)
                writers[ORACLE].write(oracle)
            stats["events"] += events.num_rows
            stats["impressions"] += impressions.num_rows
            stats["clicks"] += int(np.asarray(impressions.column("clicked")).sum())
        with timer.phase("write"):
            for w in writers.values():
                w.commit()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    return stats
