"""One-hour browsing sessions and co-clicked listing pairs (paper 000 A.2, §3.3; DESIGN §7).

A session is a user key's events from its first event up to (not including) one hour
later; the next event after that opens a new session. Sessions are cut at UTC midnight
because the corpora are built per day partition, so a day's sessions never depend on
another day. Events are ordered by ``(ts, event_id)`` like the sessionize kernel, so
equal timestamps have one deterministic order.

Hand-written on numpy/pyarrow: splitting anchored (not gap-based) windows is a chain of
"first event >= start + 1 h" jumps that no Arrow or Beam primitive expresses; the jumps
cost one binary search per *session*, everything else is vectorized.
"""
from __future__ import annotations

import bisect

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.sessionize.kernel import rank_strings
from schemas.raw import user_key

SESSIONS_SCHEMA = pa.schema([
    ("user_key", pa.string()),
    ("start_ts", pa.timestamp("ms", tz="UTC")),
    ("listings", pa.list_(pa.string())),  # viewed listing ids, chronological, repeats kept
    ("purchased", pa.bool_()),  # the session holds a purchase
])

PAIRS_SCHEMA = pa.schema([("listing_a", pa.string()), ("listing_b", pa.string()), ("sessions", pa.int64())])

SESSION_ACTIONS = ("view", "purchase")


def _codes(array) -> np.ndarray:
    encoded = pc.dictionary_encode(array)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def session_starts(composite: np.ndarray, session_ms: int) -> np.ndarray:
    """Indices where sessions start in ``composite`` (sorted ``key * span + ts``)."""
    starts, pos, n = [], 0, len(composite)
    values = composite.tolist()  # bisect on a list is ~5x faster than np.searchsorted per scalar
    while pos < n:
        starts.append(pos)
        pos = bisect.bisect_left(values, values[pos] + session_ms, pos + 1)
    return np.asarray(starts, dtype=np.int64)


def split_sessions(events: pa.Table, session_ms: int) -> pa.Table:
    """Sessions (``SESSIONS_SCHEMA``) of one day's events; only sessions with a listing view."""
    events = events.filter(pc.is_in(events.column("action"), pa.array(SESSION_ACTIONS)))
    if events.num_rows == 0:
        return SESSIONS_SCHEMA.empty_table()
    keys = user_key(events)
    code = _codes(keys)
    ts = pc.cast(events.column("ts"), pa.int64()).to_numpy(zero_copy_only=False)
    order = np.lexsort((rank_strings(events.column("event_id")), ts, code))
    t0 = int(ts.min())
    span = int(ts.max()) - t0 + session_ms + 1  # > any in-key jump, so jumps stop at key boundaries
    composite = code[order] * span + (ts[order] - t0)
    starts = session_starts(composite, session_ms)
    session_of = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(order))))

    actions = events.column("action").take(pa.array(order))
    is_view = pc.equal(actions, "view").to_numpy(zero_copy_only=False)
    bought = np.zeros(len(starts), dtype=bool)
    bought[session_of[~is_view]] = True
    views_per_session = np.bincount(session_of[is_view], minlength=len(starts))
    offsets = np.zeros(len(starts) + 1, dtype=np.int32)
    np.cumsum(views_per_session, out=offsets[1:])
    listings = events.column("listing_id").take(pa.array(order[is_view])).combine_chunks()
    first = order[starts]
    table = pa.table({
        "user_key": keys.take(pa.array(first)),
        "start_ts": events.column("ts").take(pa.array(first)),
        "listings": pa.ListArray.from_arrays(pa.array(offsets), listings),
        "purchased": pa.array(bought),
    }, schema=SESSIONS_SCHEMA)
    return table.filter(pa.array(views_per_session > 0))


def coclick_pairs(sessions: pa.Table, max_listings: int) -> pa.Table:
    """Pairs of distinct listings viewed in the same session, with the number of sessions.

    Each session contributes every pair among its first ``max_listings`` distinct listings
    once (a bot session cannot add more than ``max_listings**2 / 2`` pairs); a pair is
    stored once as ``listing_a < listing_b``.
    """
    flat = pc.list_flatten(sessions.column("listings"))
    if len(flat) == 0:
        return PAIRS_SCHEMA.empty_table()
    parent = pc.list_parent_indices(sessions.column("listings")).to_numpy(zero_copy_only=False).astype(np.int64)
    listing = _codes(flat)
    position = np.arange(len(flat))
    # First occurrence of each (session, listing), in view order.
    order = np.lexsort((position, listing, parent))
    first = np.ones(len(order), dtype=bool)
    first[1:] = (parent[order][1:] != parent[order][:-1]) | (listing[order][1:] != listing[order][:-1])
    keep = np.sort(order[first])
    parent, listing = parent[keep], listing[keep]
    starts = np.flatnonzero(np.r_[True, parent[1:] != parent[:-1]])
    rank = np.arange(len(parent)) - np.repeat(starts, np.diff(np.append(starts, len(parent))))
    capped = rank < max_listings
    parent, listing = parent[capped], listing[capped]
    left, right = [], []
    for gap in range(1, max_listings):
        same = parent[gap:] == parent[:-gap]
        left.append(listing[:-gap][same])
        right.append(listing[gap:][same])
    a, b = np.concatenate(left), np.concatenate(right)
    if len(a) == 0:
        return PAIRS_SCHEMA.empty_table()
    names = pc.dictionary_encode(flat)
    names = (names.combine_chunks() if isinstance(names, pa.ChunkedArray) else names).dictionary
    rank_of = rank_strings(names)  # order codes by string so the stored pair is (smaller, larger)
    swap = rank_of[a] > rank_of[b]
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    pairs = pa.table({"listing_a": names.take(pa.array(a)), "listing_b": names.take(pa.array(b))})
    return count_pairs(pairs.append_column("sessions", pa.array(np.ones(len(a), np.int64))))


def count_pairs(pairs: pa.Table) -> pa.Table:
    """Sum ``sessions`` per pair, sorted by pair (deterministic)."""
    if pairs.num_rows == 0:
        return PAIRS_SCHEMA.empty_table()
    out = pairs.group_by(["listing_a", "listing_b"], use_threads=False).aggregate([("sessions", "sum")])
    out = pa.table({"listing_a": out.column("listing_a"), "listing_b": out.column("listing_b"),
                    "sessions": out.column("sessions_sum")})
    return out.sort_by([("listing_a", "ascending"), ("listing_b", "ascending")]).cast(PAIRS_SCHEMA)
