"""The engineered point-in-time features of a bucket of impressions (formulas: ``schemas.features``).

Vectorized on pyarrow/numpy like the sessionization kernel: hash joins and group-bys of
Arrow's compute engine (Acero) instead of per-row Python. Every function returns float32
arrays aligned with the rows of ``impressions``. Nothing here reads an event at or after the
impression's time, or an impression of the example's own day (priors come from earlier days).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.sessionize.kernel import ENTITY_COLUMNS, _millis
from schemas.features import PRIOR_KEYS, TARGET_ENTITIES
from schemas.raw import LISTING_ACTIONS, user_key

TOKEN_SPLIT = r"[^\p{L}\p{N}]+"  # RE2: anything but letters and digits separates tokens


def _f32(values) -> pa.Array:
    return pa.array(np.asarray(values, dtype=np.float32), pa.float32())


def request_context(impressions: pa.Table) -> dict[str, pa.Array]:
    """``req_candidates``, ``req_price_ratio``, ``req_price_rank`` over each row's request."""
    n = impressions.num_rows
    if n == 0:
        return {k: _f32([]) for k in ("req_candidates", "req_price_ratio", "req_price_rank")}
    codes = impressions.column("request_id").combine_chunks().dictionary_encode().indices
    codes = codes.to_numpy(zero_copy_only=False).astype(np.int64)
    price = pc.fill_null(impressions.column("price"), 0.0).to_numpy(zero_copy_only=False).astype(np.float64)
    count = np.bincount(codes)
    mean = np.bincount(codes, weights=price) / count
    own_mean = mean[codes]
    ratio = np.divide(price, own_mean, out=np.ones(n), where=own_mean > 0)
    # Strictly lower prices in the same request: search (request, price rank) pairs in sorted order.
    _, price_rank = np.unique(price, return_inverse=True)
    composite = codes * (int(price_rank.max()) + 1) + price_rank
    ordered = np.sort(composite)
    lower = np.searchsorted(ordered, composite, side="left") - np.searchsorted(ordered, codes * (int(price_rank.max()) + 1))
    return {"req_candidates": _f32(count[codes]), "req_price_ratio": _f32(ratio),
            "req_price_rank": _f32(lower / np.maximum(count[codes] - 1, 1))}


def normalized_tokens(texts: pa.Array) -> pa.ListArray:
    """Lower-cased tokens of each string (lists of strings are joined first); null -> no tokens."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if pa.types.is_list(texts.type) or pa.types.is_large_list(texts.type):
        texts = pc.binary_join(texts, " ")
    tokens = pc.split_pattern_regex(pc.fill_null(pc.utf8_lower(texts), ""), TOKEN_SPLIT)
    flat = pc.list_flatten(tokens)
    parents = pc.list_parent_indices(tokens)
    keep = pc.not_equal(flat, "")
    flat, parents = flat.filter(keep), parents.filter(keep)
    counts = np.bincount(parents.to_numpy(zero_copy_only=False), minlength=len(texts))
    offsets = np.zeros(len(texts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), flat)


def _row_tokens(tokens: pa.ListArray) -> pa.Table:
    """Distinct ``(row, token)`` pairs of a list array."""
    table = pa.table({"row": pc.list_parent_indices(tokens), "token": pc.list_flatten(tokens)})
    return table.group_by(["row", "token"]).aggregate([])


def relevance(impressions: pa.Table, catalog: pa.Table | None) -> dict[str, pa.Array]:
    """``rel_title``, ``rel_tags``, ``rel_taxonomy``, ``rel_all`` and ``query_tokens`` of each row.

    ``catalog`` holds ``listing_id``, ``title``, ``tags``, ``taxonomy_path`` (None or missing
    listings: no overlap).
    """
    n = impressions.num_rows
    query = _row_tokens(normalized_tokens(impressions.column("query").combine_chunks()))
    q_rows = query.column("row").to_numpy(zero_copy_only=False)
    n_tokens = np.bincount(q_rows, minlength=n).astype(np.float64)
    out = {"query_tokens": _f32(n_tokens)}
    found_any = []
    for name, column in (("rel_title", "title"), ("rel_tags", "tags"), ("rel_taxonomy", "taxonomy_path")):
        hits = np.zeros(n)
        if catalog is not None and catalog.num_rows and n:
            index = pc.index_in(impressions.column("listing_id"), value_set=catalog.column("listing_id").combine_chunks())
            field = catalog.column(column).combine_chunks().take(index)  # null where the listing is unknown
            joined = query.join(_row_tokens(normalized_tokens(field)), ["row", "token"], join_type="inner")
            found_any.append(joined)
            hits = np.bincount(joined.column("row").to_numpy(zero_copy_only=False), minlength=n).astype(np.float64)
        out[name] = _f32(np.divide(hits, n_tokens, out=np.zeros(n), where=n_tokens > 0))
    found = np.zeros(n)
    if found_any:
        union = pa.concat_tables(found_any).group_by(["row", "token"]).aggregate([])
        found = np.bincount(union.column("row").to_numpy(zero_copy_only=False), minlength=n)
    out["rel_all"] = _f32((n_tokens > 0) & (found >= n_tokens))
    return {k: out[k] for k in ("rel_title", "rel_tags", "rel_taxonomy", "rel_all", "query_tokens")}


def session_tables(events: pa.Table, impressions: pa.Table) -> tuple[pa.Table, pa.Table]:
    """What the session features join on the user key: ``impressions`` as ``(row, key, t)`` (the key is
    an examples table's ``user_key`` column, else computed) and ``events`` as ``(key, ts, action,
    listing_id, shop_id, taxonomy_id)``, times in ms."""
    key = impressions.column("user_key").combine_chunks() if "user_key" in impressions.column_names \
        else user_key(impressions)
    imp = pa.table({"row": pa.array(np.arange(impressions.num_rows, dtype=np.int64)), "key": key,
                    "t": pa.array(_millis(impressions.column("ts")))})
    ev = pa.table({"key": user_key(events), "ts": pa.array(_millis(events.column("ts"))),
                   "action": events.column("action").combine_chunks(),
                   **{ENTITY_COLUMNS[e]: events.column(ENTITY_COLUMNS[e]).combine_chunks() for e in TARGET_ENTITIES}})
    return imp, ev


def in_window(joined: pa.Table, window_ms: int) -> pa.Table:
    """The (impression, event) pairs of a join of :func:`session_tables`' tables with ``t - window <= ts < t``."""
    t, ts = joined.column("t").to_numpy(), joined.column("ts").to_numpy()
    return joined.filter(pa.array((ts >= t - window_ms) & (ts < t)))


def target_session(events: pa.Table, impressions: pa.Table, window_ms: int) -> dict[str, pa.Array]:
    """``tgt_<entity>_<action>_{count,secs}`` and ``tgt_listing_is_last_view`` of each row.

    An inner hash join of the impressions with the key's events on (user key, raw entity id),
    kept when ``t - window <= ts < t``: its size is the number of (impression, matching event)
    pairs, not impressions x events.
    """
    n = impressions.num_rows
    window_s = window_ms / 1000.0
    imp, ev_all = session_tables(events, impressions)
    out = {}
    last_view_ts = np.full(n, -1, dtype=np.int64)
    for action in LISTING_ACTIONS:
        ev = ev_all.filter(pc.equal(ev_all.column("action"), action))
        for entity in TARGET_ENTITIES:
            column = ENTITY_COLUMNS[entity]
            count, secs = np.zeros(n), np.full(n, window_s)
            if ev.num_rows and n:
                left = imp.append_column("id", impressions.column(column).combine_chunks())
                right = ev.select(["key", column, "ts"]).rename_columns(["key", "id", "ts"])
                joined = in_window(left.join(right, ["key", "id"], join_type="inner"), window_ms)
                rows, ts = joined.column("row").to_numpy(), joined.column("ts").to_numpy()
                count = np.bincount(rows, minlength=n).astype(np.float64)
                latest = np.full(n, np.iinfo(np.int64).min)
                np.maximum.at(latest, rows, ts)
                seen = count > 0
                secs[seen] = (imp.column("t").to_numpy()[seen] - latest[seen]) / 1000.0
                if action == "view" and entity == "listing":
                    last_view_ts = np.where(seen, latest, -1)
            out[f"tgt_{entity}_{action}_count"] = _f32(count)
            out[f"tgt_{entity}_{action}_secs"] = _f32(secs)
    out["tgt_listing_is_last_view"] = _f32(_is_last_view(ev_all, imp, last_view_ts, window_ms))
    return out


def _is_last_view(ev_all: pa.Table, imp: pa.Table, target_view_ts: np.ndarray, window_ms: int) -> np.ndarray:
    """Whether the target's latest view in the window is the key's latest view in the window.

    Ties (two views in the same millisecond) count as last: the target is among the most recent.
    """
    n = imp.num_rows
    views = ev_all.filter(pc.equal(ev_all.column("action"), "view"))
    if not n or not views.num_rows or not (target_view_ts >= 0).any():
        return np.zeros(n)
    joined = in_window(imp.join(views.select(["key", "ts"]), ["key"], join_type="inner"), window_ms)
    latest = np.full(n, -1, dtype=np.int64)
    np.maximum.at(latest, joined.column("row").to_numpy(), joined.column("ts").to_numpy())
    return ((target_view_ts >= 0) & (target_view_ts == latest)).astype(np.float64)


def prior_counts(impressions: pa.Table) -> dict[str, pa.Table]:
    """Impressions and clicks per prior key (``PRIOR_KEYS``) and overall (``all``) of a table of impressions."""
    clicks = pc.cast(pc.fill_null(impressions.column("clicked"), False), pa.int64())
    base = pa.table({"query": impressions.column("query"), "listing_id": impressions.column("listing_id"),
                     "shop_id": impressions.column("shop_id"), "clicks": clicks})
    out = {kind: base.group_by(list(keys)).aggregate([("clicks", "count"), ("clicks", "sum")])
           .rename_columns(list(keys) + ["imps", "clicks"]) for kind, keys in PRIOR_KEYS.items()}
    out["all"] = pa.table({"imps": pa.array([base.num_rows], pa.int64()),
                           "clicks": pa.array([int(pc.sum(clicks).as_py() or 0)], pa.int64())})
    return out


def merge_prior_counts(parts: list[pa.Table], kind: str) -> pa.Table:
    """Sum partial counts of one kind (from several files or days) into one table."""
    table = pa.concat_tables(parts)
    if kind == "all":
        return pa.table({"imps": pa.array([int(pc.sum(table.column("imps")).as_py() or 0)], pa.int64()),
                         "clicks": pa.array([int(pc.sum(table.column("clicks")).as_py() or 0)], pa.int64())})
    keys = list(PRIOR_KEYS[kind])
    merged = table.group_by(keys).aggregate([("imps", "sum"), ("clicks", "sum")])
    return merged.rename_columns(keys + ["imps", "clicks"])


def priors(impressions: pa.Table, counts: dict[str, pa.Table], prior_days: int, strength: float) -> dict[str, pa.Array]:
    """``prior_<k>_imps``, ``prior_<k>_ctr`` and ``prior_days`` of each row from earlier days' ``counts``
    (:func:`prior_counts`/:func:`merge_prior_counts`; empty when ``prior_days`` is 0)."""
    n = impressions.num_rows
    out = {}
    total = counts.get("all")
    imps_all = float(total.column("imps")[0].as_py()) if total is not None and total.num_rows else 0.0
    p0 = float(total.column("clicks")[0].as_py()) / imps_all if imps_all else 0.0
    for kind, keys in PRIOR_KEYS.items():
        imps, clicks = np.zeros(n), np.zeros(n)
        table = counts.get(kind)
        if prior_days and table is not None and table.num_rows and n:
            left = pa.table({"row": pa.array(np.arange(n, dtype=np.int64)),
                             **{k: impressions.column(k).combine_chunks() for k in keys}})
            joined = left.join(table, list(keys), join_type="inner")
            rows = joined.column("row").to_numpy()
            imps[rows] = joined.column("imps").to_numpy()
            clicks[rows] = joined.column("clicks").to_numpy()
        ctr = (clicks + strength * p0) / (imps + strength) if prior_days else np.zeros(n)
        out[f"prior_{kind}_imps"] = _f32(imps)
        out[f"prior_{kind}_ctr"] = _f32(ctr)
    out["prior_days"] = _f32(np.full(n, prior_days))
    return out
