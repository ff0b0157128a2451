"""The reference models' inputs: the engineered point-in-time features as a numeric matrix.

Two feature sets (``schemas.features`` for the formulas), each with and without the ad position:

- ``nonpersonalized``: what the impression, its request, the catalog and earlier days reveal:
  log price, request context, query-listing relevance, historical priors (when the run has
  them), platform, logged-in flag;
- ``personalized``: the above plus the session: the target-session identity features and the
  lengths of the last hour's listing-view, search and purchase sequences.

Each feature is scaled as the rankers' transform scales it (``schemas.features.scaling``: counts
as log1p, seconds as hours); the trees are indifferent to such monotone maps, the logistic
regression is not.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.features import MIN_RATIO, PRIOR_FEATURES, RELEVANCE_FEATURES, REQUEST_FEATURES, SESSION_FEATURES, scaling
from schemas.raw import PLATFORMS

FEATURE_SETS = ("nonpersonalized", "personalized")
SEQUENCE_LENGTHS = ("seq_listing_view", "seq_query_search", "seq_listing_purchase")
READ_COLUMNS = (("impression_id", "sample_rate", "clicked", "purchased", "price", "platform", "logged_in", "position")
                + REQUEST_FEATURES + RELEVANCE_FEATURES + PRIOR_FEATURES + SESSION_FEATURES)


def read_columns(schema_names) -> list[str]:
    """The columns of an examples file the references read (sequences only for their lengths)."""
    return list(READ_COLUMNS) + [c for c in SEQUENCE_LENGTHS if c in schema_names]


def compact(table: pa.Table) -> pa.Table:
    """Sequences replaced by their lengths (``len_<sequence>``), so a split's rows stay small in memory."""
    for name in SEQUENCE_LENGTHS:
        if name in table.column_names:
            lengths = pc.cast(pc.list_value_length(table.column(name)), pa.float32())
            table = table.drop_columns([name]).append_column(f"len_{name}", lengths)
    return table


def _numeric(table: pa.Table, name: str) -> np.ndarray:
    return pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False)


def _transformed(table: pa.Table, name: str) -> np.ndarray:
    x = _numeric(table, name)
    kind = "log1p" if name.startswith("len_") else scaling(name)
    if kind == "log1p":
        return np.log1p(x)
    if kind == "hours":
        return x / 3600.0
    if kind == "log":
        return np.log(np.maximum(x, MIN_RATIO))
    return x


def feature_names(feature_set: str, priors: bool, available: list[str]) -> list[str]:
    """The columns of a feature set, in matrix order (``priors``: whether the run uses the priors)."""
    names = ["log_price", *REQUEST_FEATURES, *RELEVANCE_FEATURES]
    if priors:
        names += [f for f in PRIOR_FEATURES if f != "prior_days"]
    names += [f"platform_{p}" for p in PLATFORMS] + ["logged_in"]
    if feature_set == "personalized":
        names += list(SESSION_FEATURES) + [f"len_{s}" for s in SEQUENCE_LENGTHS if f"len_{s}" in available]
    return names


def matrix(table: pa.Table, names: list[str]) -> np.ndarray:
    """``(rows, len(names))`` float64 matrix of the named features of a compacted examples table."""
    columns = []
    for name in names:
        if name == "log_price":
            columns.append(np.log1p(np.maximum(_numeric(table, "price"), 0.0)))
        elif name.startswith("platform_"):
            columns.append((table.column("platform").to_numpy(zero_copy_only=False) == name[9:]).astype(np.float64))
        elif name == "logged_in":
            columns.append(_numeric(table, "logged_in"))
        else:
            columns.append(_transformed(table, name))
    return np.column_stack(columns) if columns else np.zeros((table.num_rows, 0))


def positions(table: pa.Table) -> np.ndarray:
    return _numeric(table, "position")
