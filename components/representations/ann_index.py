"""The ``ann_index`` step: FAISS IVF indexes for visually similar ads (paper 000 §3.1, A.5.2; DESIGN §7).

Paper 000 A.5.2: the representations "are also filtered down by active ad campaigns. These
candidate representations are indexed into an Approximate Nearest Neighbor (ANN) inverted
file (IVF) index", which splits the space into N clusters and searches only the K nearest.

For each name in ``representations.ann_index.representations`` with vectors, the listings of
the catalog of D that are active and have an active campaign are indexed:

- vectors are L2-normalized, so inner product = cosine similarity;
- ``faiss.IndexIVFFlat`` (``IndexFlatIP`` coarse quantizer, ``METRIC_INNER_PRODUCT``) with
  ``nlist = cfg.nlist`` or ``round(4 * sqrt(n))``, capped at ``n // 39`` so every centroid has at
  least 39 training points (FAISS's own minimum); k-means is seeded with ``config.seed`` (and
  FAISS subsamples at most 256 points per centroid with the same seed), so a rebuild from the
  same vectors gives a byte-identical index file, whatever the number of OpenMP threads;
- ``recall@k`` = mean over ``cfg.recall_queries`` catalog listings (a seeded sample of those
  with a vector) of ``|IVF top-k ∩ exact top-k| / k`` at ``cfg.nprobe``, exact = ``IndexFlatIP``
  over the same vectors; the step fails below ``cfg.min_recall``.

Outputs ``runs/D/ann_index/<name>.faiss`` (``faiss.serialize_index`` bytes, nprobe included) and
``<name>_ids.txt`` (line ``r`` = listing id of index row ``r``), each written atomically.
:func:`load_index` reads them back.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import math
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.lake import Lake, fs
from components.representations.export_lookups import missing_reason
from components.representations.store import STEP_OF, Vectors, catalog, load_representation, normalize, vectors_path
from components.step import StepError, StepResult
from components.validate.step import validated_dir

STEP = "ann_index"
MIN_POINTS_PER_CENTROID = 39
SINGLE_QUERY_SAMPLE = 200
"""Queries timed one at a time (the serving pattern) on top of the batched recall search."""


def index_path(lake: Lake, date, representation: str) -> str:
    return fs.join(lake.run_dir(date, STEP), f"{representation}.faiss")


def ids_path(lake: Lake, date, representation: str) -> str:
    return fs.join(lake.run_dir(date, STEP), f"{representation}_ids.txt")


def default_nlist(n: int, nlist: int | None = None) -> int:
    """``nlist`` or ``round(4 * sqrt(n))``, capped so each centroid has >= 39 training points (at least 1)."""
    wanted = nlist if nlist is not None else round(4 * math.sqrt(n))
    return max(1, min(wanted, n // MIN_POINTS_PER_CENTROID))


def build_index(matrix: np.ndarray, nlist: int, nprobe: int, seed: int):
    """A trained and filled IVF-Flat inner-product index over the (already normalized) rows of ``matrix``."""
    import faiss

    dim = matrix.shape[1]
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(matrix)
    index.add(matrix)
    index.nprobe = min(nprobe, nlist)
    return index


def recall_at_k(approx: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean ``|approx_i ∩ exact_i| / k`` over query rows (``-1``, FAISS's "no result", never matches)."""
    hits = [len(set(a[a >= 0].tolist()) & set(e[e >= 0].tolist())) for a, e in zip(approx[:, :k], exact[:, :k])]
    return float(np.mean(hits) / k) if hits else float("nan")


def run(config, date: dt.date, lake: Lake, progress=print) -> StepResult:
    """Build, measure and write one IVF index per representation. ``config``: the pipeline config
    (reads ``.representations.ann_index`` and ``.seed``)."""
    cfg = config.representations.ann_index
    result = StepResult()
    result.metrics = {"indexes": {}, "skipped": {}}
    unknown = [n for n in cfg.representations if n not in STEP_OF]
    if unknown:
        raise StepError(f"ann_index: unknown representation(s) {unknown} in representations.ann_index."
                        f"representations; known: {sorted(STEP_OF)}")
    if not cfg.enabled:
        return _skip_all(result, cfg.representations, "disabled by config (representations.ann_index.enabled=false)")
    table = catalog(lake, date)
    if table is None:
        return _skip_all(result, cfg.representations, f"no validated catalog of {date} (events-only logs have none), "
                         "so no listing is known to have an active campaign")
    campaign = pc.and_(table.column("is_active"), table.column("has_active_campaign"))
    ads = table.column("listing_id").filter(campaign)
    listings = table.column("listing_id")
    result.inputs.append(validated_dir(lake, "listings", date))
    failures = []
    for name in cfg.representations:
        vectors = load_representation(lake, date, name)
        if vectors is None:
            _skip(result, name, missing_reason(lake, date, name))
            continue
        result.inputs.append(vectors_path(lake, date, name))
        ids = pa.array(vectors.ids.tolist(), pa.string())
        in_ads = _mask(ids, ads)
        indexed = Vectors(vectors.ids[in_ads], vectors.matrix[in_ads])
        if len(indexed) == 0:
            _skip(result, name, f"none of the {len(ads):,} listings with an active campaign has a {name} vector")
            continue
        in_catalog = _mask(ids, listings)
        queries = Vectors(vectors.ids[in_catalog], vectors.matrix[in_catalog])
        progress(f"  {name}: indexing {len(indexed):,} of {len(vectors):,} listings (active campaigns), "
                 f"dim {vectors.dim}")
        report, index = _build_and_measure(indexed, queries, cfg, config.seed)
        _write(index, indexed.ids, index_path(lake, date, name), ids_path(lake, date, name))
        report.update(path=index_path(lake, date, name), ids_path=ids_path(lake, date, name),
                      sha256=hashlib.sha256(fs.read_bytes(index_path(lake, date, name))).hexdigest())
        result.metrics["indexes"][name] = report
        result.outputs[f"{name}_index"] = report["path"]
        result.outputs[f"{name}_ids"] = report["ids_path"]
        result.row_counts[name] = report["n"]
        progress(f"  {name}: nlist {report['nlist']}, nprobe {report['nprobe']}: recall@{report['k']} "
                 f"{report['recall_at_k']:.4f} over {report['queries']} queries; built in {report['seconds']:.2f} s")
        if report["recall_at_k"] < cfg.min_recall:
            failures.append(
                f"{name}: recall@{report['k']} {report['recall_at_k']:.4f} < representations.ann_index.min_recall "
                f"{cfg.min_recall} at nprobe {report['nprobe']} of nlist {report['nlist']}; raise "
                f"representations.ann_index.nprobe (or lower nlist); index kept for inspection at {report['path']}")
    if failures:
        raise StepError("ann_index: the IVF indexes miss too many exact neighbours:\n  " + "\n  ".join(failures))
    return result


def _mask(ids: pa.Array, members: pa.ChunkedArray) -> np.ndarray:
    return pc.is_in(ids, value_set=members.combine_chunks()).to_numpy(zero_copy_only=False)


def _build_and_measure(indexed: Vectors, queries: Vectors, cfg, seed: int):
    import faiss

    x = normalize(indexed.matrix)
    n, dim = x.shape
    nlist = default_nlist(n, cfg.nlist)
    k = min(cfg.k, n)
    t0 = time.perf_counter()
    index = build_index(x, nlist, cfg.nprobe, seed)
    seconds = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(queries), size=min(cfg.recall_queries, len(queries)), replace=False))
    q = normalize(queries.matrix[sample])
    exact = faiss.IndexFlatIP(dim)
    exact.add(x)
    t0 = time.perf_counter()
    _, approx_rows = index.search(q, k)
    batch_ms = (time.perf_counter() - t0) * 1e3 / max(len(q), 1)
    t0 = time.perf_counter()
    _, exact_rows = exact.search(q, k)
    exact_ms = (time.perf_counter() - t0) * 1e3 / max(len(q), 1)
    single = []
    for row in q[:SINGLE_QUERY_SAMPLE]:
        t0 = time.perf_counter()
        index.search(row[None, :], k)
        single.append((time.perf_counter() - t0) * 1e3)
    report = {
        "n": n, "dim": dim, "nlist": nlist, "nprobe": int(index.nprobe), "k": k,
        "recall_at_k": round(recall_at_k(approx_rows, exact_rows, k), 6),
        "queries": len(q), "query_seed": seed, "seconds": round(seconds, 3),
        "query_ms_batched": round(batch_ms, 4), "query_ms_single_median": round(float(np.median(single)), 4),
        "exact_query_ms_batched": round(exact_ms, 4),
        "zero_vectors": int((np.abs(indexed.matrix).sum(axis=1) == 0).sum()),
        "nlist_config": cfg.nlist, "faiss_threads": faiss.omp_get_max_threads(),
    }
    return report, index


def _write(index, ids: np.ndarray, index_file: str, ids_file: str) -> None:
    import faiss

    bad = [i for i in ids if "\n" in i or "\r" in i]
    if bad:
        raise StepError(f"ann_index: listing id {bad[0]!r} contains a line break; {ids_file} holds one id per line")
    fs.write_bytes_atomic(index_file, faiss.serialize_index(index).tobytes())
    fs.write_bytes_atomic(ids_file, "".join(f"{i}\n" for i in ids).encode("utf-8"))


def _skip(result: StepResult, name: str, reason: str) -> None:
    result.notes.append(f"skipped {name}: {reason}")
    result.metrics["skipped"][name] = reason


def _skip_all(result: StepResult, names, reason: str) -> StepResult:
    for name in names:
        _skip(result, name, reason)
    return result


def load_index(lake: Lake, date, representation: str):
    """``(index, ids)`` written by this step for ``date``: the FAISS index (nprobe as built) and the
    listing id of each index row; search with L2-normalized float32 queries."""
    import faiss

    data = fs.read_bytes(index_path(lake, date, representation))
    index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    ids = np.array(fs.read_text(ids_path(lake, date, representation)).split("\n")[:-1], dtype=object)
    if len(ids) != index.ntotal:
        raise StepError(f"ann_index: {ids_path(lake, date, representation)} has {len(ids)} ids for an index of "
                        f"{index.ntotal} vectors; rerun the ann_index step with --force")
    return index, ids
