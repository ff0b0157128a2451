"""Offline metrics of the next-day evaluation (DESIGN §8; paper 000 §5, A.2-A.4).

Ranking metrics (the paper's ROC-AUC and PR-AUC) come from scikit-learn: on 1M rows
``roc_auc_score`` takes ~0.15-0.2 s and ``average_precision_score`` ~0.12-0.18 s on a 2-core
machine, against ~0.10-0.15 s for a hand-written rank-based AUC, so writing our own would buy
nothing worth its risk. ``log_loss`` is scikit-learn's too. Hand-written (vectorized numpy)
are only what scikit-learn does not offer in this form: normalized cross-entropy, expected
calibration error with sample weights, the reliability table, lifts and headroom.

Every function takes optional ``sample_weight`` where it changes the meaning of the metric;
rows of a split that was itself downsampled carry ``sample_rate`` (the probability the row was
kept), and ``weights_from_sample_rate`` turns it into the inverse-probability weight that makes
the weighted metric an unbiased estimate of the metric on the full traffic.

Inputs are validated once, with messages that say what is wrong and how many rows are bad:
labels must be 0/1 (bool, int or float), probabilities in [0, 1], scores and weights finite.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

#: Equal-width bins of the expected calibration error when the caller passes none; 15 is the
#: choice of Guo et al. 2017 (paper 000 ref. [19]). The evaluate step's config should pass its own.
DEFAULT_ECE_BINS = 15

__all__ = [
    "DEFAULT_ECE_BINS",
    "Reliability",
    "ece",
    "headroom_captured",
    "lift_pct",
    "logloss",
    "nce",
    "pr_auc",
    "reliability",
    "roc_auc",
    "summary",
    "weights_from_sample_rate",
]


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------

def _labels(labels: Any, where: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"{where}: labels must be 1-D, got shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{where}: no rows; evaluate a non-empty split")
    if y.dtype == bool:
        return y.astype(np.int8)
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise ValueError(f"{where}: labels must be 0/1 numbers or booleans, got dtype {y.dtype}")
    bad = ~((y == 0) | (y == 1))
    if bad.any():
        raise ValueError(f"{where}: {int(bad.sum())} of {y.size} labels are not 0 or 1 "
                         f"(first: {y[bad][0]!r}); binarize the label column first")
    return y.astype(np.int8)


def _floats(values: Any, n: int, what: str, where: str) -> np.ndarray:
    x = np.asarray(values)
    if x.ndim != 1 or x.size != n:
        raise ValueError(f"{where}: {what} must be 1-D with one value per label ({n}), got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(f"{where}: {int(bad.sum())} of {n} {what} are NaN or infinite; "
                         f"check the model output for those rows")
    return x


def _probs(probs: Any, n: int, where: str) -> np.ndarray:
    p = _floats(probs, n, "probabilities", where)
    bad = (p < 0) | (p > 1)
    if bad.any():
        raise ValueError(f"{where}: {int(bad.sum())} of {n} probabilities are outside [0, 1] "
                         f"(first: {p[bad][0]!r}); pass sigmoid(logits), not logits")
    return p


def _weights(sample_weight: Any, n: int, where: str) -> np.ndarray | None:
    if sample_weight is None:
        return None
    w = _floats(sample_weight, n, "sample weights", where)
    if (w < 0).any():
        raise ValueError(f"{where}: {int((w < 0).sum())} sample weights are negative")
    if not w.sum() > 0:
        raise ValueError(f"{where}: all sample weights are zero")
    return w.astype(np.float64, copy=False)


def _require_both_classes(y: np.ndarray, w: np.ndarray | None, where: str) -> None:
    if w is None:
        pos = int(y.sum())
        neg = y.size - pos
    else:
        pos = float(w[y == 1].sum())
        neg = float(w[y == 0].sum())
    if pos <= 0 or neg <= 0:
        only = "positive" if neg <= 0 else "negative"
        raise ValueError(f"{where} is undefined when only one class is present: all {y.size} rows "
                         f"(with non-zero weight) are {only}; evaluate on a split with both clicks and non-clicks")


def weights_from_sample_rate(sample_rate: Any) -> np.ndarray:
    """Inverse-probability weights ``1 / sample_rate`` for rows kept with probability ``sample_rate``."""
    r = np.asarray(sample_rate, dtype=np.float64)
    bad = ~((r > 0) & (r <= 1))
    if bad.any():
        raise ValueError(f"weights_from_sample_rate: {int(bad.sum())} sample rates are outside (0, 1] "
                         f"(first: {r[bad][0]!r})")
    return 1.0 / r


# --------------------------------------------------------------------------------------------
# Ranking metrics
# --------------------------------------------------------------------------------------------

def roc_auc(labels: Any, scores: Any, sample_weight: Any = None) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative).

    Ties count one half (the Mann-Whitney U statistic with average ranks); with weights, each
    (positive, negative) pair counts ``w_pos * w_neg``. Computed by
    ``sklearn.metrics.roc_auc_score``. Raises ``ValueError`` when only one class is present
    (scikit-learn would warn and return NaN).
    """
    y, s, w = _ranking_inputs(labels, scores, sample_weight, "roc_auc")
    return float(roc_auc_score(y, s, sample_weight=w))


def _ranking_inputs(labels: Any, scores: Any, sample_weight: Any, name: str):
    """Checked ``(labels, scores, weights)`` of a ranking metric that needs both classes."""
    y = _labels(labels, name)
    s = _floats(scores, y.size, "scores", name)
    w = _weights(sample_weight, y.size, name)
    _require_both_classes(y, w, name)
    return y, s, w


def pr_auc(labels: Any, scores: Any, sample_weight: Any = None) -> float:
    """PR-AUC as average precision: ``AP = sum_k (R_k - R_{k-1}) P_k`` over descending thresholds.

    The step-wise sum (no trapezoidal interpolation, which is optimistic), with tied scores
    forming one threshold — exactly ``sklearn.metrics.average_precision_score``, which computes it.
    A random ranker scores the base rate. Raises ``ValueError`` when only one class is present.
    """
    y, s, w = _ranking_inputs(labels, scores, sample_weight, "pr_auc")
    return float(average_precision_score(y, s, sample_weight=w))


# --------------------------------------------------------------------------------------------
# Probability metrics
# --------------------------------------------------------------------------------------------

def logloss(labels: Any, probs: Any, sample_weight: Any = None) -> float:
    """Mean (weighted) binary cross-entropy ``-[y log p + (1 - y) log(1 - p)]`` in nats.

    Probabilities are clipped to ``[eps, 1 - eps]`` with ``eps`` the machine epsilon of their
    dtype (float32 stays float32, anything else becomes float64) — this is
    ``sklearn.metrics.log_loss(..., labels=[0, 1])``, which computes it.
    """
    y = _labels(labels, "logloss")
    p = _probs(probs, y.size, "logloss")
    w = _weights(sample_weight, y.size, "logloss")
    return float(log_loss(y, p, sample_weight=w, labels=[0, 1]))


def _entropy(rate: float) -> float:
    return -(rate * math.log(rate) + (1.0 - rate) * math.log1p(-rate))


def nce(labels: Any, probs: Any, sample_weight: Any = None) -> float:
    """Normalized cross-entropy (He et al. 2014): ``logloss / H(base rate)``.

    ``H(r) = -(r log r + (1 - r) log(1 - r))`` with ``r`` the (weighted) share of positives, i.e.
    the log loss of always predicting the base rate. 1.0 = no better than the base rate, lower is
    better; unlike raw log loss it is comparable across days with different CTRs. Raises
    ``ValueError`` when only one class is present (the entropy is 0).
    """
    y = _labels(labels, "nce")
    w = _weights(sample_weight, y.size, "nce")
    _require_both_classes(y, w, "nce")
    rate = float(y.mean()) if w is None else float(w[y == 1].sum() / w.sum())
    return logloss(y, probs, w) / _entropy(rate)


@dataclasses.dataclass(frozen=True)
class Reliability:
    """Reliability table over ``bins`` equal-width probability bins ``[k/M, (k+1)/M)`` (the last closed).

    ``count`` rows and ``weight`` total sample weight per bin (equal when unweighted); ``mean_prob``
    and ``mean_label`` are weighted means, NaN for empty bins.
    """

    edges: np.ndarray
    count: np.ndarray
    weight: np.ndarray
    mean_prob: np.ndarray
    mean_label: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: ``sum_k |mean_prob_k - mean_label_k| * weight_k / total weight``."""
        full = self.weight > 0
        gap = np.abs(self.mean_prob[full] - self.mean_label[full])
        return float((gap * self.weight[full]).sum() / self.weight.sum())

    def to_dict(self) -> dict[str, list]:
        """JSON-ready lists (``None`` where a bin is empty), e.g. for the report's reliability diagram."""
        def clean(a: np.ndarray) -> list:
            return [None if math.isnan(v) else float(v) for v in a]
        return {"edges": [float(e) for e in self.edges], "count": [int(c) for c in self.count],
                "weight": [float(v) for v in self.weight], "mean_prob": clean(self.mean_prob),
                "mean_label": clean(self.mean_label)}


def reliability(labels: Any, probs: Any, bins: int = DEFAULT_ECE_BINS, sample_weight: Any = None) -> Reliability:
    """Per-bin counts, mean predicted probability and mean label over ``bins`` equal-width bins.

    Bin ``k`` holds ``k/M <= p < (k+1)/M`` with edges computed as ``k/M`` (exactly representable
    boundaries such as 0.5 land in the upper bin); ``p = 1`` goes to the last bin — the convention
    of ``np.histogram``.
    """
    if not isinstance(bins, (int, np.integer)) or isinstance(bins, bool) or bins < 1:
        raise ValueError(f"reliability: bins must be a positive integer, got {bins!r}")
    y = _labels(labels, "reliability")
    p = _probs(probs, y.size, "reliability").astype(np.float64, copy=False)
    w = _weights(sample_weight, y.size, "reliability")
    edges = np.arange(bins + 1, dtype=np.float64) / bins
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    ww = np.ones(y.size) if w is None else w
    weight = np.bincount(idx, weights=ww, minlength=bins)
    sum_p = np.bincount(idx, weights=ww * p, minlength=bins)
    sum_y = np.bincount(idx, weights=ww * y, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.where(weight > 0, sum_p / weight, np.nan)
        mean_label = np.where(weight > 0, sum_y / weight, np.nan)
    return Reliability(edges, count, weight, mean_prob, mean_label)


def ece(labels: Any, probs: Any, bins: int = DEFAULT_ECE_BINS, sample_weight: Any = None) -> float:
    """Expected calibration error over ``bins`` equal-width bins (empty bins skipped).

    ``ECE = sum_k |mean(p in bin k) - mean(y in bin k)| * n_k / n`` (weighted means and weights
    when ``sample_weight`` is given); bins as in ``reliability``. With a low base rate most rows
    fall in the first bin, so ECE then mostly measures the global bias ``|mean(p) - mean(y)|``;
    use more bins to see within-low-range miscalibration.
    """
    return reliability(labels, probs, bins, sample_weight).ece


# --------------------------------------------------------------------------------------------
# Summaries and comparisons
# --------------------------------------------------------------------------------------------

def summary(labels: Any, probs: Any, scores: Any = None, *, sample_weight: Any = None,
            bins: int = DEFAULT_ECE_BINS) -> dict[str, float | int]:
    """``n``, ``positives`` (row counts) and ``roc_auc``, ``pr_auc``, ``logloss``, ``nce``, ``ece``.

    Ranking metrics use ``scores`` (e.g. raw logits) when given, else ``probs``; probability
    metrics use ``probs``. Values are plain (unrounded) floats.
    """
    y = _labels(labels, "summary")
    p = _probs(probs, y.size, "summary")
    s = p if scores is None else _floats(scores, y.size, "scores", "summary")
    w = _weights(sample_weight, y.size, "summary")
    return {
        "n": int(y.size),
        "positives": int(y.sum()),
        "roc_auc": roc_auc(y, s, w),
        "pr_auc": pr_auc(y, s, w),
        "logloss": logloss(y, p, w),
        "nce": nce(y, p, w),
        "ece": ece(y, p, bins, w),
    }


def lift_pct(model: float, baseline: float) -> float:
    """Relative lift in percent: ``100 * (model / baseline - 1)`` (paper 000 Tables 2-4)."""
    if baseline == 0 or not math.isfinite(baseline) or not math.isfinite(model):
        raise ValueError(f"lift_pct: needs finite values and a non-zero baseline, "
                         f"got model={model}, baseline={baseline}")
    return 100.0 * (model / baseline - 1.0)


def headroom_captured(auc_model: float, auc_baseline: float, auc_oracle: float | None) -> float | None:
    """Share of the oracle's ROC-AUC gap captured: ``(model - baseline) / (oracle - baseline)``.

    ``None`` when there is no oracle or no headroom (``oracle <= baseline``). Negative when the
    model is worse than the baseline, above 1 when it beats the oracle (noise on small days).
    """
    if auc_oracle is None or not auc_oracle > auc_baseline:
        return None
    return (auc_model - auc_baseline) / (auc_oracle - auc_baseline)
