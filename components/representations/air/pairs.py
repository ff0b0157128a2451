"""Co-clicked listing pairs: the AIR training examples (paper 000 §3.2.2, A.6.1).

The corpora step writes ``runs/D/corpora/corpus/coclick.parquet`` (``listing_a``,
``listing_b``, ``sessions``: how many one-hour sessions viewed both). AIR keeps the
``max_pairs`` pairs seen in the most sessions (ties broken by a stable hash of the pair: the
selection depends neither on file order nor favours small listing ids), drops pairs with a
listing missing from the day's catalog (no features to encode) and uses each kept pair in
both directions.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.lake import Lake, fs, parquet
from components.step import StepError
from schemas.validation import stable_bucket

COLUMNS = ("listing_a", "listing_b", "sessions")


def coclick_path(lake: Lake, date) -> str:
    return fs.join(lake.run_dir(date, "corpora"), "corpus", "coclick.parquet")


@dataclasses.dataclass
class PairRows:
    """Kept pairs as catalog row indices (one direction, a -> b) and what was dropped."""

    a: np.ndarray  # int32 rows
    b: np.ndarray  # int32 rows
    counts: dict


def read_pairs(path: str) -> pa.Table:
    if not fs.exists(path):
        raise StepError(f"air: the co-click corpus {path} is missing; run the corpora step first")
    table = parquet.read_file(path)
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise StepError(f"air: {path} has no column(s) {missing} (columns: {table.column_names}); "
                        "rerun the corpora step with this code version (--force)")
    return table.select(list(COLUMNS))


def top_pairs(table: pa.Table, max_pairs: int) -> pa.Table:
    """The ``max_pairs`` rows with the most sessions. Ties (most pairs are seen in one session)
    go by a stable hash of the pair, then by the ids: deterministic, yet a cut inside a tie
    does not favour listings with small ids the way an id order would."""
    if table.num_rows <= max_pairs:
        return table.sort_by([("listing_a", "ascending"), ("listing_b", "ascending")])
    key = pc.binary_join_element_wise(table.column("listing_a"), table.column("listing_b"), "|")
    ranked = table.append_column("_tie", pa.array(stable_bucket(key, 2 ** 62)))
    ordered = ranked.sort_by([("sessions", "descending"), ("_tie", "ascending"), ("listing_a", "ascending"),
                              ("listing_b", "ascending")])
    return ordered.slice(0, max_pairs).drop_columns(["_tie"])


def to_rows(table: pa.Table, catalog_ids: pa.Array | pa.ChunkedArray) -> PairRows:
    """Catalog rows of each pair's listings; pairs with an unknown listing or a listing paired
    with itself are dropped and counted."""
    ids = catalog_ids.combine_chunks() if isinstance(catalog_ids, pa.ChunkedArray) else catalog_ids
    a, b = (pc.fill_null(pc.index_in(table.column(c), value_set=ids), -1).to_numpy(zero_copy_only=False)
            .astype(np.int64) for c in ("listing_a", "listing_b"))  # -1: not in the catalog
    known = (a >= 0) & (b >= 0)
    distinct = a != b
    keep = known & distinct
    counts = {"selected": int(table.num_rows), "dropped_not_in_catalog": int((~known).sum()),
              "dropped_self_pairs": int((known & ~distinct).sum()), "kept": int(keep.sum())}
    return PairRows(a[keep].astype(np.int32), b[keep].astype(np.int32), counts)


def split_heldout(rows: PairRows, fraction: float, seed: int) -> tuple[tuple[np.ndarray, np.ndarray],
                                                                         tuple[np.ndarray, np.ndarray]]:
    """(train a, b), (held-out a, b): a seeded ``fraction`` of the pairs is held out for recall
    (none when that would leave fewer than 2 held-out pairs or no training pair)."""
    n = len(rows.a)
    held = int(round(n * fraction))
    if held < 2 or n - held < 1:
        held = 0
    order = np.random.default_rng(seed).permutation(n)
    test, train = np.sort(order[:held]), np.sort(order[held:])
    return (rows.a[train], rows.b[train]), (rows.a[test], rows.b[test])


def both_directions(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source and candidate rows with every pair as a -> b and b -> a."""
    return np.concatenate([a, b]), np.concatenate([b, a])
