"""Personalization headroom of a generated marketplace: oracle ROC-AUC vs a non-personalized baseline.

The baseline is a logistic regression trained on ``train_day``'s impressions with honest,
non-personalized features only — what the impression row, the listing catalog and the query
text reveal, nothing from the user's events:

- query-listing relevance: share of query tokens found in the title, the tags, the taxonomy
  path; all tokens found; number of query tokens;
- position (one-hot), platform (one-hot), top-level taxonomy (one-hot);
- log price and log price relative to the taxonomy's median in the catalog;
- listing quality proxy: the listing's smoothed CTR on the training day (leave-one-out on
  the training rows) and its log impression count.

Both the baseline and the oracle ``p_click`` are scored by ROC-AUC on ``test_day``'s clicks;
``gap`` = oracle - baseline is the headroom a personalized model can capture.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from components.lake import fs, is_complete, parquet

CTR_PRIOR_WEIGHT = 20.0  # pseudo-impressions of the smoothed listing CTR


def read_partition(root: str, dataset: str, day: dt.date | str) -> pa.Table:
    """All part files of ``<root>/<dataset>/dt=<day>`` as one table (fails clearly when absent)."""
    path = fs.join(root, dataset, f"dt={_iso(day)}")
    if not is_complete(path):
        raise FileNotFoundError(f"partition {path} is missing or incomplete (no _SUCCESS); generate that day first")
    return parquet.read_partition(path)


def _iso(day: dt.date | str) -> str:
    return day.isoformat() if isinstance(day, dt.date) else str(day)


def _token_matrix(texts: pa.Array, vocab: pa.Array, pattern: str) -> sparse.csr_matrix:
    """Binary (rows × vocab) matrix of the tokens of ``texts`` (lists of strings are joined first)."""
    if pa.types.is_list(texts.type):
        texts = pc.binary_join(texts, " ")
    texts = pc.fill_null(pc.utf8_lower(texts), "")
    tokens = pc.split_pattern_regex(texts, pattern)
    flat = pc.list_flatten(tokens)
    rows = pc.list_parent_indices(tokens).to_numpy()
    index = pc.index_in(flat, value_set=vocab)
    keep = index.is_valid().to_numpy(zero_copy_only=False)
    rows, cols = rows[keep], index.fill_null(0).to_numpy()[keep].astype(np.int64)
    m = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(texts), len(vocab)))
    m.data[:] = 1.0  # duplicates summed -> binary
    return m


def _vocab(*texts: pa.Array) -> pa.Array:
    """All distinct lower-case tokens of the given text arrays."""
    parts = []
    for t in texts:
        if pa.types.is_list(t.type):
            t = pc.binary_join(t, " ")
        parts.append(pc.list_flatten(pc.split_pattern_regex(pc.fill_null(pc.utf8_lower(t), ""), r"[ ._]+")))
    return pc.unique(pa.concat_arrays(parts))


def _one_hot(values: np.ndarray, categories: np.ndarray) -> np.ndarray:
    return (values[:, None] == categories[None, :]).astype(np.float64)


class BaselineFeatures:
    """Builds the non-personalized feature matrix for impressions of any day, given the catalog."""

    def __init__(self, listings: pa.Table, train: pa.Table):
        self.listing_ids = listings.column("listing_id").combine_chunks()
        paths = listings.column("taxonomy_path").combine_chunks()
        titles = listings.column("title").combine_chunks()
        tags = listings.column("tags").combine_chunks()
        self.vocab = _vocab(titles, tags, paths, train.column("query").combine_chunks())
        self.title = _token_matrix(titles, self.vocab, r"[ ]+")
        self.tags = _token_matrix(tags, self.vocab, r"[ ]+")
        self.path = _token_matrix(paths, self.vocab, r"[._]+")
        tops = pc.list_element(pc.split_pattern(paths, "."), 0).to_numpy(zero_copy_only=False)
        self.top = tops
        self.top_categories = np.unique(tops)
        log_price = np.log(listings.column("price").to_numpy())
        tax = listings.column("taxonomy_id").to_numpy(zero_copy_only=False)
        _, tax_index = np.unique(tax, return_inverse=True)
        medians = np.array([np.median(log_price[tax_index == k]) for k in range(tax_index.max() + 1)])
        self.rel_price = log_price - medians[tax_index]
        self.positions = np.arange(int(pc.max(train.column("position")).as_py()) + 1)
        self.platforms = np.array(["web", "ios", "android"], dtype=object)
        self.train_listing = self._listing_index(train)
        clicks = train.column("clicked").to_numpy(zero_copy_only=False).astype(np.float64)
        n = len(self.listing_ids)
        self.clicks = np.bincount(self.train_listing, weights=clicks, minlength=n)
        self.imps = np.bincount(self.train_listing, minlength=n).astype(np.float64)
        self.base_ctr = clicks.mean() if len(clicks) else 0.0

    def _listing_index(self, table: pa.Table) -> np.ndarray:
        idx = pc.index_in(table.column("listing_id"), value_set=self.listing_ids)
        if idx.null_count:
            raise ValueError(f"{idx.null_count} impressions reference listings missing from the catalog snapshot")
        return idx.to_numpy().astype(np.int64)

    def matrix(self, table: pa.Table, is_train: bool) -> np.ndarray:
        """Feature matrix (rows = impressions of ``table``)."""
        li = self.train_listing if is_train else self._listing_index(table)
        q = _token_matrix(table.column("query").combine_chunks(), self.vocab, r"[ ]+")
        n_tokens = np.maximum(np.asarray(q.sum(axis=1)).ravel(), 1.0)
        overlaps = [np.asarray(q.multiply(m[li]).sum(axis=1)).ravel() / n_tokens for m in (self.title, self.tags, self.path)]
        union = (self.title + self.tags + self.path).sign()
        all_found = (np.asarray(q.multiply(union[li]).sum(axis=1)).ravel() >= n_tokens).astype(np.float64)
        clicks, imps = self.clicks[li], self.imps[li]
        if is_train:  # leave-one-out: a row never sees its own label
            own = table.column("clicked").to_numpy(zero_copy_only=False).astype(np.float64)
            clicks, imps = clicks - own, imps - 1.0
        ctr = (clicks + CTR_PRIOR_WEIGHT * self.base_ctr) / (imps + CTR_PRIOR_WEIGHT)
        price = table.column("price").to_numpy()
        columns = [
            *overlaps, all_found, n_tokens,
            np.log(price), self.rel_price[li], np.log(ctr), np.log1p(imps),
            _one_hot(table.column("position").to_numpy(), self.positions),
            _one_hot(table.column("platform").to_numpy(zero_copy_only=False), self.platforms),
            _one_hot(self.top[li], self.top_categories),
        ]
        return np.column_stack(columns)


def headroom(root: str, train_day: dt.date | str, test_day: dt.date | str) -> dict:
    """Oracle vs non-personalized logistic-regression ROC-AUC on ``test_day`` (baseline trained on ``train_day``)."""
    train = read_partition(root, "raw/impressions", train_day)
    test = read_partition(root, "raw/impressions", test_day)
    oracle = read_partition(root, "oracle/impressions", test_day)
    listings = read_partition(root, "raw/listings", max(_iso(train_day), _iso(test_day)))
    if not test.column("impression_id").equals(oracle.column("impression_id")):
        oracle = _align(oracle, test)
    features = BaselineFeatures(listings, train)
    y_train = train.column("clicked").to_numpy(zero_copy_only=False)
    y_test = test.column("clicked").to_numpy(zero_copy_only=False)
    scaler = StandardScaler().fit(features.matrix(train, is_train=True))
    model = LogisticRegression(max_iter=2000, C=1.0)
    model.fit(scaler.transform(features.matrix(train, is_train=True)), y_train)
    baseline = model.predict_proba(scaler.transform(features.matrix(test, is_train=False)))[:, 1]
    oracle_auc = float(roc_auc_score(y_test, oracle.column("p_click").to_numpy()))
    baseline_auc = float(roc_auc_score(y_test, baseline))
    return {
        "train_day": _iso(train_day), "test_day": _iso(test_day),
        "oracle_roc_auc": round(oracle_auc, 4), "baseline_roc_auc": round(baseline_auc, 4),
        "gap": round(oracle_auc - baseline_auc, 4),
        "n_train": train.num_rows, "n_test": test.num_rows,
        "test_ctr": round(float(y_test.mean()), 4),
    }


def _align(oracle: pa.Table, impressions: pa.Table) -> pa.Table:
    """Oracle rows in the order of ``impressions`` (fails when some impression has no oracle row)."""
    idx = pc.index_in(impressions.column("impression_id"), value_set=oracle.column("impression_id").combine_chunks())
    if idx.null_count:
        raise ValueError(f"{idx.null_count} impressions have no oracle row")
    return oracle.take(idx)
