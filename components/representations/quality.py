"""Quality checks of a listing representation (paper 000 Figure 13, A.8 "gut check").

- **cosine gap**: mean cosine similarity of listing pairs sharing a label (fine taxonomy)
  minus that of pairs that do not, over all pairs of a seeded sample;
- **neighbour purity**: the share of each sampled listing's k nearest neighbours (exact
  cosine search with faiss over every listing with a vector) that share its label, next to
  the purity expected by chance (sum of squared label shares).

A representation that is no better than random has a gap near 0 and a purity ratio near 1;
:func:`failures` turns the report into the reasons a step must fail.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from components.representations.config import QualityConfig
from components.representations.store import Vectors, normalize


def evaluate(vectors: Vectors, labels: pa.Table, label_columns: list[str], cfg: QualityConfig,
             seed: int) -> dict:
    """Cosine gap and neighbour purity of ``vectors`` for each label column of ``labels`` (keyed by listing_id)."""
    import faiss

    ids = labels.column("listing_id").to_pylist()
    rows = vectors.rows(ids)
    known = rows >= 0
    matrix = vectors.matrix[rows[known]]
    nonzero = np.linalg.norm(matrix, axis=1) > 0  # zero vectors (no signal) are left out
    matrix = normalize(matrix[nonzero])
    report: dict = {"listings_with_vector": int(nonzero.sum()), "catalog_listings": len(ids)}
    if len(matrix) < 3:
        report["error"] = "fewer than 3 catalog listings have a vector"
        return report
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(matrix), size=min(cfg.sample, len(matrix)), replace=False))
    k = min(cfg.neighbours, len(matrix) - 1)
    index = faiss.IndexFlatIP(matrix.shape[1])
    index.add(matrix)
    _, found = index.search(matrix[sample], k + 1)
    neighbours = np.array([[n for n in row if n != q][:k] for q, row in zip(sample, found)])
    cosines = matrix[sample] @ matrix[sample].T
    off_diagonal = ~np.eye(len(sample), dtype=bool)
    for column in label_columns:
        values = np.array(labels.column(column).to_pylist(), dtype=object)[known][nonzero]
        present = np.array([v is not None for v in values])
        codes = np.unique(values[present].astype(str), return_inverse=True)[1]
        label = np.full(len(values), -1)
        label[present] = codes
        s = label[sample]
        same = (s[:, None] == s[None, :]) & (s[:, None] >= 0) & off_diagonal
        diff = (s[:, None] != s[None, :]) & (s[:, None] >= 0) & (s[None, :] >= 0)
        queries = s >= 0
        purity = float((label[neighbours[queries]] == s[queries, None]).mean()) if queries.any() else 0.0
        shares = np.bincount(label[label >= 0]) / max((label >= 0).sum(), 1)
        chance = float((shares ** 2).sum())
        report[column] = {
            "same_cosine": round(float(cosines[same].mean()), 4) if same.any() else None,
            "different_cosine": round(float(cosines[diff].mean()), 4) if diff.any() else None,
            "cosine_gap": round(float(cosines[same].mean() - cosines[diff].mean()), 4)
            if same.any() and diff.any() else None,
            f"purity_at_{k}": round(purity, 4),
            "chance_purity": round(chance, 4),
            "purity_ratio": round(purity / chance, 3) if chance > 0 else None,
            "labels": int(len(shares)),
        }
    return report


def failures(report: dict, gap_columns: list[str], purity_columns: list[str], cfg: QualityConfig) -> list[str]:
    """Why the representation is no better than random (empty when it passes)."""
    if "error" in report:
        return [report["error"]]
    out = []
    for column in gap_columns:
        gap = report[column]["cosine_gap"]
        if gap is None or gap <= cfg.min_cosine_gap:
            out.append(f"{column}: same-vs-different cosine gap {gap} is not above {cfg.min_cosine_gap}")
    for column in purity_columns:
        ratio = report[column]["purity_ratio"]
        if ratio is None or ratio <= cfg.min_purity_ratio:
            out.append(f"{column}: neighbour purity {report[column]} is not above "
                       f"{cfg.min_purity_ratio} x chance")
    return out
