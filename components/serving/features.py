"""The engineered point-in-time features inside the serving graph (formulas: ``schemas.features``;
batch reference: ``components.sessionize.features``; DESIGN §5, §8).

A served request carries raw inputs only; the graph derives every engineered feature the run's
models read from them, so serving cannot drift from what training saw:

- ``request``: over the rows of the batch that share a ``request_id`` (the request's candidates,
  scored together);
- ``relevance``: the query's normalized tokens against the listing's catalog text, frozen at export
  into lookup tables (listing id -> normalized tokens of title, tags and taxonomy path);
- ``prior``: the impression and click counts of the ``prior_days`` days before the serving day,
  frozen at export into lookup tables (the earlier days' click rate and the smoothing are constants);
- ``session``: the user key's raw events before the impression (``session_*`` inputs, any order,
  padded with an empty action), windowed in the graph and compared with the target by raw id, so
  they hold for listings outside every vocabulary.

Each value is computed in float64 and rounded to float32 once, as the batch code does, so both give
the same float32 and the transform's quantile buckets do not flip at a boundary.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf

from components.sessionize.examples import FeatureContext
from components.sessionize.features import TOKEN_SPLIT, normalized_tokens
from components.sessionize.kernel import ENTITY_COLUMNS
from schemas.features import PRIOR_KEYS, TARGET_ENTITIES, group_of
from schemas.raw import LISTING_ACTIONS

SESSION_INPUTS = {"session_ts": tf.int64, "session_action": tf.string,
                  **{f"session_{ENTITY_COLUMNS[e]}": tf.string for e in TARGET_ENTITIES}}
"""The user key's events as serving inputs, ``[B, E]`` each: ms since the epoch, action, ids."""
RELEVANCE_FIELDS = {"rel_title": "title", "rel_tags": "tags", "rel_taxonomy": "taxonomy_path"}
KEY_SEPARATOR = "\x1f"  # joins the parts of a composite prior key (ASCII unit separator)


def inputs_needed(names) -> dict[str, tf.DType]:
    """The raw inputs, beyond the ranker's, that the engineered ``names`` are computed from."""
    groups = {group_of(name) for name in names}
    needed = {}
    if "request" in groups:
        needed["request_id"] = tf.string
    if "session" in groups:
        needed.update(SESSION_INPUTS)
    return needed


def _string_table(keys: np.ndarray, values, default, name: str):
    initializer = tf.lookup.KeyValueTensorInitializer(tf.constant(keys, tf.string), tf.constant(values))
    return tf.lookup.StaticHashTable(initializer, default_value=default, name=name)


def _catalog_text(catalog: pa.Table) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Listing ids (first catalog row of each, as the batch join takes) and each field's
    normalized tokens joined by spaces."""
    ids = catalog.column("listing_id").combine_chunks()
    catalog = catalog.take(pc.index_in(pc.unique(ids), value_set=ids))  # the first row of each id
    catalog = catalog.filter(pc.is_valid(catalog.column("listing_id")))
    ids = catalog.column("listing_id").combine_chunks()
    fields = {}
    for column in RELEVANCE_FIELDS.values():
        tokens = normalized_tokens(catalog.column(column).combine_chunks())
        fields[column] = pc.binary_join(tokens, " ").to_numpy(zero_copy_only=False).astype(object)
    return ids.to_numpy(zero_copy_only=False).astype(object), fields


def _prior_keys(table: pa.Table, keys: tuple[str, ...]) -> tuple[pa.Table, np.ndarray]:
    """The rows of a counts table whose key parts are all present, and their string keys."""
    valid = pc.is_valid(table.column(keys[0]))
    for k in keys[1:]:
        valid = pc.and_(valid, pc.is_valid(table.column(k)))
    table = table.filter(valid)
    joined = pc.binary_join_element_wise(*[table.column(k) for k in keys], KEY_SEPARATOR) if len(keys) > 1 \
        else table.column(keys[0])
    return table, pc.cast(joined, pa.string()).to_numpy(zero_copy_only=False).astype(object)


class ServingFeatures(tf.Module):
    """Raw serving inputs -> the engineered features ``names`` (float32 ``[B]`` each).

    ``window_ms``: the session window; ``context``: the catalog text and earlier days' impression
    counts of the serving day, as ``sessionize`` reads them for an example day
    (``components.sessionize.step.feature_context``).
    """

    def __init__(self, names, window_ms: int, context: FeatureContext = FeatureContext()):
        super().__init__(name="serving_features")
        self.names = tuple(names)
        self.window_ms = int(window_ms)
        groups = {group_of(name) for name in self.names}
        self._text = {}
        catalog = context.catalog
        if "relevance" in groups and catalog is not None and catalog.num_rows:
            ids, fields = _catalog_text(catalog)
            self._text = {column: _string_table(ids, values, "", f"catalog_{column}") for column, values in fields.items()}
        self._prior_days, self._strength, self._p0 = context.prior_days, context.prior_strength, 0.0
        self._priors = {}
        if "prior" in groups and self._prior_days:
            total = context.prior_counts.get("all")
            imps_all = float(total.column("imps")[0].as_py()) if total is not None and total.num_rows else 0.0
            self._p0 = float(total.column("clicks")[0].as_py()) / imps_all if imps_all else 0.0
            for kind, keys in PRIOR_KEYS.items():
                table = context.prior_counts.get(kind)
                if table is None or not table.num_rows:
                    continue
                table, strings = _prior_keys(table, keys)
                self._priors[kind] = tuple(
                    _string_table(strings, table.column(c).to_numpy(zero_copy_only=False).astype(np.float64), 0.0,
                                  f"prior_{kind}_{c}") for c in ("imps", "clicks"))

    def __call__(self, raw: dict) -> dict[str, tf.Tensor]:
        groups = {group_of(name) for name in self.names}
        out = {}
        for group, compute in (("request", self._request), ("relevance", self._relevance),
                               ("prior", self._prior), ("session", self._session)):
            if group in groups:
                out.update(compute(raw))
        return {name: tf.cast(out[name], tf.float32) for name in self.names}

    def _request(self, raw):
        """``req_*`` over the batch's rows of each ``request_id`` (sort-based, O(B log B))."""
        price = tf.cast(raw["price"], tf.float64)
        requests, code = tf.unique(raw["request_id"], out_idx=tf.int64)
        segments = tf.size(requests, out_type=tf.int64)
        count = tf.math.unsorted_segment_sum(tf.ones_like(price), code, segments)
        mean = tf.math.unsorted_segment_sum(price, code, segments) / tf.maximum(count, 1.0)
        n, own_mean = tf.gather(count, code), tf.gather(mean, code)
        ratio = tf.where(own_mean > 0, price / tf.where(own_mean > 0, own_mean, 1.0), 1.0)
        # Strictly lower prices of the same request: order rows by (request, price); a row's count is
        # the index of the first row of its (request, price) run minus that of its request's run.
        by_price = tf.argsort(price, stable=True)
        order = tf.cast(tf.gather(by_price, tf.argsort(tf.gather(code, by_price), stable=True)), tf.int64)
        code_s, price_s = tf.gather(code, order), tf.gather(price, order)
        index = tf.range(tf.size(order, out_type=tf.int64))
        new_request = tf.concat([[True], code_s[1:] != code_s[:-1]], 0)[:tf.size(order)]
        new_price = tf.logical_or(new_request, tf.concat([[True], price_s[1:] != price_s[:-1]], 0)[:tf.size(order)])
        request_start = tf.gather(tf.math.unsorted_segment_min(index, code_s, segments), code_s)
        price_run = tf.cumsum(tf.cast(new_price, tf.int64)) - 1
        price_start = tf.gather(tf.math.unsorted_segment_min(index, price_run, tf.size(order, out_type=tf.int64)),
                                price_run)
        lower = tf.scatter_nd(tf.expand_dims(order, 1), price_start - request_start, tf.shape(order, out_type=tf.int64))
        return {"req_candidates": n, "req_price_ratio": ratio,
                "req_price_rank": tf.cast(lower, tf.float64) / tf.maximum(n - 1.0, 1.0)}

    @staticmethod
    def _tokens(strings):
        """Whitespace-separated tokens of each string as a sparse ``[B, n]`` set."""
        return tf.strings.split(strings).to_sparse()

    def _relevance(self, raw):
        """``rel_*`` and ``query_tokens``: distinct normalized query tokens found in each catalog field."""
        normalized = tf.strings.regex_replace(tf.strings.lower(raw["query"], encoding="utf-8"), TOKEN_SPLIT, " ")
        query = self._tokens(normalized)
        n = tf.cast(tf.sets.size(query), tf.float64)
        out = {"query_tokens": n}
        fields = []
        for name, column in RELEVANCE_FIELDS.items():
            if column in self._text:
                field = self._tokens(self._text[column].lookup(raw["listing_id"]))
                fields.append(field)
                hits = tf.cast(tf.sets.size(tf.sets.intersection(query, field)), tf.float64)
            else:
                hits = tf.zeros_like(n)
            out[name] = tf.where(n > 0, hits / tf.maximum(n, 1.0), 0.0)
        found = tf.zeros_like(n)
        if fields:
            union = fields[0]
            for field in fields[1:]:
                union = tf.sets.union(union, field)
            found = tf.cast(tf.sets.size(tf.sets.intersection(query, union)), tf.float64)
        out["rel_all"] = tf.cast(tf.logical_and(n > 0, found >= n), tf.float64)
        return out

    def _prior(self, raw):
        """``prior_*``: the frozen counts of each key, smoothed toward the earlier days' click rate."""
        batch = tf.shape(raw["listing_id"])
        out = {"prior_days": tf.fill(batch, tf.constant(float(self._prior_days), tf.float64))}
        for kind, keys in PRIOR_KEYS.items():
            imps = clicks = tf.zeros(batch, tf.float64)
            if kind in self._priors:
                parts = [raw[k] for k in keys]
                key = tf.strings.join(parts, separator=KEY_SEPARATOR) if len(parts) > 1 else parts[0]
                imps, clicks = (table.lookup(key) for table in self._priors[kind])
            ctr = ((clicks + self._strength * self._p0) / (imps + self._strength) if self._prior_days
                   else tf.zeros(batch, tf.float64))
            out[f"prior_{kind}_imps"], out[f"prior_{kind}_ctr"] = imps, ctr
        return out

    def _session(self, raw):
        """``tgt_*``: the target's listing, shop and taxonomy among the key's events of ``[t - window, t)``."""
        t = tf.expand_dims(raw["ts"], 1)
        ts, action = raw["session_ts"], raw["session_action"]
        window_s = self.window_ms / 1000.0
        inside = (action != "") & (ts >= t - self.window_ms) & (ts < t)
        out = {}
        for act in LISTING_ACTIONS:
            for entity in TARGET_ENTITIES:
                column = ENTITY_COLUMNS[entity]
                ids = raw[f"session_{column}"]
                match = inside & (action == act) & (ids != "") & (ids == tf.expand_dims(raw[column], 1))
                count = tf.reduce_sum(tf.cast(match, tf.float64), 1)
                latest = tf.reduce_max(tf.where(match, ts, tf.int64.min), 1)
                since = tf.cast(raw["ts"] - tf.where(count > 0, latest, raw["ts"]), tf.float64) / 1000.0
                secs = tf.where(count > 0, since, window_s)
                out[f"tgt_{entity}_{act}_count"], out[f"tgt_{entity}_{act}_secs"] = count, secs
                if (entity, act) == ("listing", "view"):
                    target_view = tf.where(count > 0, latest, -1)
        last_view = tf.reduce_max(tf.where(inside & (action == "view"), ts, -1), 1)
        out["tgt_listing_is_last_view"] = tf.cast((target_view >= 0) & (target_view == last_view), tf.float64)
        return out

