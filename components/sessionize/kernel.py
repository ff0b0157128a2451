"""The sessionization kernel: one vectorized pass over Arrow tables (paper 000 §2.1, DESIGN §5).

For each impression of user key ``u`` at time ``t`` and each (entity, action) pair, the
entity ids of ``u``'s events with ``t - window <= ts < t``, most recent first, capped at
``max_len``. Events are ordered by ``(ts, event_id)``, so equal timestamps have one
deterministic order. Written by hand on numpy/pyarrow because no library offers an as-of
"last M in a window" join that returns lists; it is one sort per action and two
``searchsorted`` calls per impression batch, so a key with 100k events costs no more
memory than its rows (DESIGN §12: batch kernels beat row-at-a-time DoFns ~10x).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.examples import seq_column
from schemas.raw import user_key

ENTITY_COLUMNS = {"listing": "listing_id", "shop": "shop_id", "taxonomy": "taxonomy_id", "query": "query"}
# The event columns the kernel reads (all but ``platform``), in schema order.
EVENT_COLUMNS = ("event_id", "user_id", "browser_id", "ts", "action", "listing_id", "shop_id", "taxonomy_id", "query")


@dataclasses.dataclass(frozen=True)
class SessionSpec:
    """What to extract: the window, the cap, the pairs and the purchase attribution window."""

    window_ms: int
    max_len: int
    pairs: tuple[tuple[str, str], ...]
    attribution_ms: int


def _millis(column) -> np.ndarray:
    return pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False) if len(column) else np.zeros(0, np.int64)


def sequences(events: pa.Table, impressions: pa.Table, spec: SessionSpec) -> dict[str, pa.ListArray]:
    """``seq_<entity>_<action>`` list arrays aligned with ``impressions``' rows."""
    ev_key, imp_key = user_key(events), user_key(impressions)
    codes = pa.chunked_array([ev_key, imp_key], type=pa.string()).combine_chunks().dictionary_encode().indices
    codes = codes.to_numpy(zero_copy_only=False).astype(np.int64)
    ev_code, imp_code = codes[: len(ev_key)], codes[len(ev_key):]
    ev_ts, imp_ts = _millis(events.column("ts")), _millis(impressions.column("ts"))
    starts = ([int(ev_ts.min())] if len(ev_ts) else []) + ([int(imp_ts.min()) - spec.window_ms] if len(imp_ts) else [])
    t0 = min(starts, default=0)
    span = int(max(ev_ts.max(initial=t0), imp_ts.max(initial=t0)) - t0 + 1)
    if (int(codes.max(initial=0)) + 1) * span >= 2**62:
        raise OverflowError("too many user keys x time span for one batch; split the batch by key bucket")
    upper = imp_code * span + (imp_ts - t0)
    # Impressions in (key, ts) order: sorted needles make ``searchsorted`` walk the events in
    # order (numpy narrows each search by the previous one), several times faster than at random.
    by_key_ts = np.argsort(upper, kind="stable")
    upper_sorted = upper[by_key_ts]
    lower_sorted = upper_sorted - spec.window_ms

    out = {}
    actions = events.column("action").combine_chunks()
    entities = {c: events.column(c).combine_chunks() for c in sorted({ENTITY_COLUMNS[e] for e, _ in spec.pairs})}
    for action in sorted({a for _, a in spec.pairs}):
        rows = np.flatnonzero(pc.fill_null(pc.equal(actions, action), False).to_numpy(zero_copy_only=False))
        order = rows[np.lexsort((rank_strings(events.column("event_id").take(rows)), ev_ts[rows], ev_code[rows]))] \
            if len(rows) else rows
        composite = ev_code[order] * span + (ev_ts[order] - t0)
        lo = np.searchsorted(composite, lower_sorted, side="left")
        hi = np.searchsorted(composite, upper_sorted, side="left")
        last, lengths = np.empty_like(upper), np.empty_like(upper)
        last[by_key_ts] = hi - 1
        lengths[by_key_ts] = np.minimum(hi - lo, spec.max_len)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        # Each list is a run of the action's events in (key, ts, event_id) order, read backwards
        # from ``last``: value k of impression j is at ``last[j] - k``, i.e. at
        # ``(last[j] + offsets[j]) - (offsets[j] + k)`` with ``offsets[j] + k`` its global index.
        n = int(offsets[-1])
        index = np.int32 if len(order) + n < 2**31 else np.int64
        positions = np.repeat((last + offsets[:-1]).astype(index), lengths)
        positions -= np.arange(n, dtype=index)
        positions = pa.array(positions)
        for entity, act in spec.pairs:
            if act != action:
                continue
            # Gather the run-ordered column once, then read runs from it: near-sequential access.
            ordered = entities[ENTITY_COLUMNS[entity]].take(pa.array(order, pa.int64()))
            out[seq_column(entity, action)] = pa.ListArray.from_arrays(pa.array(offsets), ordered.take(positions))
    return {seq_column(e, a): out[seq_column(e, a)] for e, a in spec.pairs}


def rank_strings(strings: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Rank of each string in sorted order (a tie-breaker numpy can sort on)."""
    if len(strings) == 0:
        return np.zeros(0, np.int64)
    idx = pc.sort_indices(strings).to_numpy()
    rank = np.empty(len(idx), dtype=np.int64)
    rank[idx] = np.arange(len(idx))
    return rank


def purchased(events: pa.Table, impressions: pa.Table, spec: SessionSpec) -> np.ndarray:
    """Whether the key bought the impressed listing within ``attribution_ms`` after the click.

    A purchase counts when ``click_ts <= ts < click_ts + attribution``; impressions that were
    not clicked are never purchased (post-click conversion, paper 000 §4).
    """
    n = impressions.num_rows
    clicked = pc.fill_null(impressions.column("clicked"), False).to_numpy(zero_copy_only=False)
    if not clicked.any():
        return np.zeros(n, dtype=bool)
    buys = events.filter(pc.equal(events.column("action"), "purchase"))
    buys = pa.table({"key": user_key(buys), "listing_id": buys.column("listing_id"),
                     "buy_ts": pc.cast(buys.column("ts"), pa.int64())})
    rows = np.flatnonzero(clicked)
    clicks = impressions.take(pa.array(rows))
    click_ts = pc.cast(pc.coalesce(clicks.column("click_ts"), clicks.column("ts")), pa.int64())
    left = pa.table({"row": pa.array(rows, pa.int64()), "key": user_key(clicks),
                     "listing_id": clicks.column("listing_id"), "click_ts": click_ts})
    joined = left.join(buys, keys=["key", "listing_id"], join_type="inner")
    out = np.zeros(n, dtype=bool)
    if joined.num_rows:
        delta = pc.subtract(joined.column("buy_ts"), joined.column("click_ts")).to_numpy()
        hit = (delta >= 0) & (delta < spec.attribution_ms)
        out[joined.column("row").to_numpy()[hit]] = True
    return out
