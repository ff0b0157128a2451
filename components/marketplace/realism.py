"""Statistics that compare a generated marketplace with real logs (GENERATIVE_MODEL.md §8).

- ``rank_frequency_slope``: the Zipf exponent of item popularity, the slope of log(count) against
  log(rank) over ranks 10..1000 of the items of a sample of events. Computed on the Taobao page views
  of ``../shared/data`` (``real_item_views``) it sets ``catalog.listing_popularity_zipf``; computed on
  a generated day's views (the same number of them) it checks the generated lake against it.
- ``vocabulary_oov``: the share of a day's impressions whose listing falls outside a top-K listing
  vocabulary counted on training days (target listings of impressions + listings of view events,
  an approximation of the vocabulary tensorflow-transform builds), the figure the issue compares with
  a real sponsored-listing log.
- ``day_figures``: per day events, views, impressions, clicks, distinct impressed listings and the
  share of them impressed once; ``request_price_spread``: how much the candidates of one request differ
  in price; ``revisits``: impressions of a listing the browser engaged with in the hour before.

``python -m components.marketplace.realism ROOT [--train 2026-03-01,2026-03-02]`` prints them all as JSON
for a generated lake (how the figures of GENERATIVE_MODEL.md are measured).
"""
from __future__ import annotations

import argparse
import collections
import csv
import datetime as dt
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.marketplace.headroom import read_partition

RANKS = (10, 1000)
"""Ranks the Zipf slope is fitted over: past the first few (noisy maxima), before counts of 1-3 (ties)."""
TAOBAO = "taobao_userbehavior_sample/UserBehavior_sample.csv"
DIGINETICA = "diginetica_partial/sample_train-item-views.csv"


def rank_frequency_slope(items: np.ndarray, ranks: tuple[int, int] = RANKS) -> float:
    """Zipf exponent ``s`` of ``count(rank) ~ rank ** -s``: minus the least-squares slope of log count on
    log rank over ``ranks`` (inclusive) of the distinct values of ``items``."""
    _, counts = np.unique(np.asarray(items), return_counts=True)
    counts = np.sort(counts)[::-1]
    hi = min(ranks[1], len(counts))
    if hi <= ranks[0]:
        raise ValueError(f"need more than {ranks[0]} distinct items, got {len(counts)}")
    r = np.arange(ranks[0], hi + 1)
    return float(-np.polyfit(np.log(r), np.log(counts[r - 1]), 1)[0])


def seen_once_share(items: np.ndarray) -> float:
    """Share of the distinct values of ``items`` that occur exactly once."""
    _, counts = np.unique(np.asarray(items), return_counts=True)
    return float(np.mean(counts == 1)) if len(counts) else 0.0


def real_item_views(data_dir: str, source: str = "taobao") -> np.ndarray:
    """Item ids of the page views of a real sample in ``data_dir`` (``../shared/data``): ``taobao``
    (UserBehavior ``pv`` rows) or ``diginetica`` (item views)."""
    if source == "taobao":
        with open(os.path.join(data_dir, TAOBAO), newline="") as f:
            return np.array([int(row[1]) for row in csv.reader(f) if row[3] == "pv"], dtype=np.int64)
    if source == "diginetica":
        with open(os.path.join(data_dir, DIGINETICA), newline="") as f:
            return np.array([int(row["item_id"]) for row in csv.DictReader(f, delimiter=";")], dtype=np.int64)
    raise ValueError(f"unknown source {source!r} (taobao, diginetica)")


def view_listings(root: str, day: dt.date | str) -> np.ndarray:
    """Listing ids of the ``view`` events of a generated day (organic views and ad-click views), in ts order."""
    events = read_partition(root, "raw/events", day)
    views = events.filter(pc.equal(events.column("action"), "view"))
    return views.column("listing_id").to_numpy(zero_copy_only=False)


def generated_view_slope(root: str, day: dt.date | str, n_events: int, seed: int = 0) -> float:
    """``rank_frequency_slope`` of ``n_events`` views drawn without replacement from a generated day's views
    (sampled to the real sample's size, so both counts sit at the same levels)."""
    views = view_listings(root, day)
    take = np.random.default_rng(seed).choice(len(views), size=min(n_events, len(views)), replace=False)
    return rank_frequency_slope(views[take])


def vocabulary(root: str, train_days: list[str], k: int) -> set[str]:
    """Top-``k`` listing ids by occurrences on ``train_days``: impressed listings plus viewed listings."""
    counts: collections.Counter = collections.Counter()
    for d in train_days:
        counts.update(read_partition(root, "raw/impressions", d).column("listing_id").to_pylist())
        counts.update(view_listings(root, d).tolist())
    return {listing for listing, _ in counts.most_common(k)}


def vocabulary_oov(root: str, train_days: list[str], days: list[str], k: int = 10_000) -> dict[str, float]:
    """Per day: the share of its impressions whose listing is outside the top-``k`` vocabulary of ``train_days``."""
    vocab = pa.array(sorted(vocabulary(root, train_days, k)))
    out = {}
    for d in days:
        ids = read_partition(root, "raw/impressions", d).column("listing_id")
        out[d] = float(1.0 - pc.mean(pc.is_in(ids, value_set=vocab).cast(pa.float64())).as_py())
    return out


def day_figures(root: str, day: str) -> dict:
    """Events, views, impressions, clicks, catalog size, distinct impressed listings and the share seen once."""
    events = read_partition(root, "raw/events", day)
    imps = read_partition(root, "raw/impressions", day)
    listings = imps.column("listing_id").to_numpy(zero_copy_only=False)
    snap = read_partition(root, "raw/listings", day)
    return {
        "events": events.num_rows,
        "views": int(pc.sum(pc.equal(events.column("action"), "view")).as_py()),
        "impressions": imps.num_rows,
        "clicks": int(pc.sum(imps.column("clicked")).as_py()),
        "listings": snap.num_rows,
        "campaign_listings": int(pc.sum(snap.column("has_active_campaign")).as_py()),
        "impressed_listings": int(len(np.unique(listings))),
        "impressed_once_share": round(seen_once_share(listings), 4),
    }


def request_price_spread(root: str, day: str) -> dict:
    """How the candidates of one request differ in price. Per request with 2+ candidates: the std of log price,
    the max / min price ratio, and the std of the taxonomy-relative log price (log price minus the median log
    price of the listing's taxonomy in the day's catalog, what the click model's ``z_price`` measures); over
    all impressions: the std of log price minus the request's mean (the feature "price relative to the
    request's candidates"), next to the std of log price, and that feature's correlation with the
    taxonomy-relative log price."""
    imps = read_partition(root, "raw/impressions", day).select(["request_id", "price", "taxonomy_id"])
    snap = read_partition(root, "raw/listings", day).select(["taxonomy_id", "price"])
    snap_tax = pc.dictionary_encode(snap.column("taxonomy_id")).combine_chunks()
    tax_names = snap_tax.dictionary
    snap_code = snap_tax.indices.to_numpy()
    snap_log = np.log(snap.column("price").to_numpy())
    median = np.array([np.median(snap_log[snap_code == t]) for t in range(len(tax_names))])
    imp_code = pc.index_in(imps.column("taxonomy_id"), value_set=tax_names).to_numpy()
    request = pc.dictionary_encode(imps.column("request_id")).combine_chunks().indices.to_numpy()
    log_price = np.log(imps.column("price").to_numpy())
    tax_rel = log_price - median[imp_code]
    n = np.bincount(request)
    multi = n >= 2

    def within(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dev = x - (np.bincount(request, x) / n)[request]
        return dev, np.sqrt(np.bincount(request, dev ** 2) / n)

    rel, std = within(log_price)
    _, std_tax = within(tax_rel)
    hi = np.full(len(n), -np.inf)
    lo = np.full(len(n), np.inf)
    np.maximum.at(hi, request, log_price)
    np.minimum.at(lo, request, log_price)
    ratio = np.exp(hi - lo)[multi]
    rows = multi[request]
    return {
        "requests": int(multi.sum()),
        "median_std_log_price": round(float(np.median(std[multi])), 3),
        "median_max_min_ratio": round(float(np.median(ratio)), 2),
        "share_ratio_above_2": round(float(np.mean(ratio > 2)), 3),
        "median_std_taxonomy_relative_log_price": round(float(np.median(std_tax[multi])), 3),
        "std_relative_log_price": round(float(rel[rows].std()), 3),
        "std_log_price": round(float(log_price.std()), 3),
        "corr_relative_vs_taxonomy_relative": round(float(np.corrcoef(rel[rows], tax_rel[rows])[0, 1]), 3),
    }


def revisits(root: str, days: list[str]) -> dict:
    """Impressions whose listing the same browser logged an event of in the hour before: their share, their
    CTR, the CTR of the rest, and their share of the clicks."""
    seen_all, clicked_all = [], []
    for d in days:
        imps, events = read_partition(root, "raw/impressions", d), read_partition(root, "raw/events", d)
        ev = pa.table({"browser_id": events.column("browser_id"), "listing_id": events.column("listing_id"),
                       "ev_ts": events.column("ts").cast(pa.int64())}).filter(pc.is_valid(pc.field("listing_id")))
        im = pa.table({"browser_id": imps.column("browser_id"), "listing_id": imps.column("listing_id"),
                       "ts": imps.column("ts").cast(pa.int64()), "row": pa.array(np.arange(imps.num_rows))})
        pairs = im.join(ev, ["browser_id", "listing_id"], join_type="inner")
        ts, ev_ts = pairs.column("ts").to_numpy(), pairs.column("ev_ts").to_numpy()
        hit = (ev_ts >= ts - 3_600_000) & (ev_ts < ts)
        seen = np.zeros(imps.num_rows, dtype=bool)
        seen[pairs.column("row").to_numpy()[hit]] = True
        seen_all.append(seen)
        clicked_all.append(imps.column("clicked").to_numpy(zero_copy_only=False))
    seen, clicked = np.concatenate(seen_all), np.concatenate(clicked_all)
    return {
        "share": round(float(seen.mean()), 4),
        "ctr_seen": round(float(clicked[seen].mean()), 4),
        "ctr_unseen": round(float(clicked[~seen].mean()), 4),
        "click_share": round(float(clicked[seen].sum() / max(clicked.sum(), 1)), 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="a generated lake (adsformer generate --root ...)")
    parser.add_argument("--train", default="2026-03-01,2026-03-02", help="training days of the vocabulary")
    parser.add_argument("--top-k", type=int, default=10_000, help="listing vocabulary size (transform.top_k.listing)")
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "../../../shared/data"),
                        help="the real samples (../shared/data)")
    args = parser.parse_args(argv)
    days = sorted(p[3:] for p in os.listdir(os.path.join(args.root, "raw/impressions")) if p.startswith("dt="))
    train = args.train.split(",")
    out: dict = {
        "per_day": {d: day_figures(args.root, d) for d in days},
        "oov": vocabulary_oov(args.root, train, days, args.top_k),
        "price_spread": request_price_spread(args.root, days[0]),
        "revisits": revisits(args.root, days),
    }
    if os.path.isdir(args.data):
        real = real_item_views(args.data)
        out["zipf"] = {"taobao": round(rank_frequency_slope(real), 3),
                       "diginetica": round(rank_frequency_slope(real_item_views(args.data, "diginetica")), 3),
                       "generated": round(generated_view_slope(args.root, days[0], len(real)), 3)}
        out["seen_once"] = {"taobao": round(seen_once_share(real), 3)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
