"""Platt scaling of a model's raw logits (DESIGN §8; paper 000 §5.3, refs. [19, 37]).

``p = 1 / (1 + exp(-(a f(x) + b)))`` with ``(a, b)`` fit on the validation day's raw logits
``f(x)`` and labels by maximum likelihood (weighted logistic loss). With ``a > 0`` the map is
strictly increasing, so ranking metrics (ROC-AUC, PR-AUC) are unchanged by calibration.

Negative downsampling
---------------------
CTR training days keep every click and each non-click with probability ``w`` (DESIGN §5,
``sample_rate``; the paper keeps 50%). A model fit on such data estimates odds inflated by
``1/w``, i.e. its logit is ``f = true_logit - log(w)``; the closed-form fix is
``downsampling_correction(f, w) = f + log(w)``, equivalently ``p_true = p / (p + (1 - p) / w)``.
That is the Platt map ``a = 1, b = log(w)`` (``Platt.for_downsampling``).

Validation and test days are sampled at random (representative of traffic), so ``fit_platt``
on them learns this correction by itself (``b`` absorbs ``log(w)``) together with any other
miscalibration of the network — no need to pass the training rate. Applying the closed-form
correction first does no harm: Platt scaling is invariant to a shift of its input (fitting on
``f + c`` returns ``b - a c``), so the calibrated probabilities are the same. Use the closed-form
correction alone only where no representative labeled data exists.

If a validation split was itself downsampled, pass its rows' weights ``1 / sample_rate``
(``sample_weight``) or, for a single rate applied to the negatives, ``negative_sampling_rate``;
the fit is then the one the full split would give.

Optimizer
---------
Two parameters, a convex objective: Newton's method is the right tool. We use
``scipy.optimize.minimize(method="trust-exact")`` with the analytic gradient and Hessian of the
weighted mean loss on standardized logits (a trust region keeps Newton steps safe far from the
optimum; standardizing makes the tolerance independent of the logits' scale). It converges in a
handful of passes over the data (~1 s for 1M rows on 2 cores) to the exact maximum-likelihood fit, where
``LogisticRegression`` would add a penalty by default and an iteration/tolerance policy tuned
for many features. Platt's original target smoothing (``(N+ + 1)/(N+ + 2)``) is not applied: it
regularizes tiny calibration sets, while validation days have 10^4-10^6 rows.

Degenerate fits are refused, not patched: a slope ``a <= 0`` (logits that do not rank
positives above negatives), constant logits, a single class, or perfectly separated classes
(the MLE does not exist) raise ``PlattFitError``. Falling back to a constant base-rate
predictor would silently turn the model's ROC-AUC into 0.5 and break the "AUC unchanged"
contract; an error makes the run say why the model cannot be calibrated (and not be blessed).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

__all__ = ["Platt", "PlattFitError", "downsampling_correction", "fit_platt"]

STATIONARY_GRADIENT = 1e-7
"""Largest |gradient| of the mean log-loss (standardized logits) accepted as converged when the
optimizer stops for lack of a predicted improvement."""


class PlattFitError(ValueError):
    """Platt scaling cannot be fit (or would not be monotone increasing) on the given data."""


@dataclasses.dataclass(frozen=True)
class Platt:
    """A fitted Platt map ``logit -> sigmoid(a * logit + b)`` with ``a > 0``."""

    a: float
    b: float

    def __post_init__(self):
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (self.a, self.b)):
            raise TypeError(f"Platt: a and b must be numbers, got a={self.a!r}, b={self.b!r}")
        if not (math.isfinite(self.a) and math.isfinite(self.b)):
            raise ValueError(f"Platt: a and b must be finite, got a={self.a}, b={self.b}")
        if not self.a > 0:
            raise ValueError(f"Platt: slope a must be > 0 so calibration keeps the ranking, got a={self.a}")

    @classmethod
    def for_downsampling(cls, negative_sampling_rate: float) -> Platt:
        """The closed-form negative-downsampling correction as a Platt map: ``a = 1, b = log(w)``."""
        return cls(1.0, math.log(_rate(negative_sampling_rate)))

    def logits(self, raw_logits: Any) -> np.ndarray:
        """Calibrated logits ``a * f + b`` (what a serving graph adds before its sigmoid)."""
        return self.a * np.asarray(raw_logits, dtype=np.float64) + self.b

    def apply(self, raw_logits: Any) -> np.ndarray:
        """Calibrated probabilities ``sigmoid(a * f + b)``; stable for any finite logit (no overflow)."""
        return expit(self.logits(raw_logits))

    def to_dict(self) -> dict[str, float]:
        return {"a": float(self.a), "b": float(self.b)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Platt:
        try:
            return cls(float(d["a"]), float(d["b"]))
        except KeyError as err:
            raise ValueError(f"Platt.from_dict: missing key {err}; "
                             f"expected {{'a': ..., 'b': ...}}, got {d!r}") from None


def _rate(rate: float) -> float:
    rate = float(rate)
    if not 0 < rate <= 1:
        raise ValueError(f"negative sampling rate must be in (0, 1], got {rate}")
    return rate


def downsampling_correction(logits: Any, negative_sampling_rate: float) -> np.ndarray:
    """Logits of a model trained with negatives kept at rate ``w``, corrected to the full traffic.

    ``f + log(w)``; as probabilities, ``p_true = p / (p + (1 - p) / w)``.
    """
    return np.asarray(logits, dtype=np.float64) + math.log(_rate(negative_sampling_rate))


def fit_platt(logits: Any, labels: Any, sample_weight: Any = None, negative_sampling_rate: float = 1.0,
              *, max_iter: int = 100, gtol: float = 1e-9) -> Platt:
    """Fit ``(a, b)`` minimizing the weighted mean of ``log(1 + exp(z)) - y z``, ``z = a f + b``.

    ``logits``: the model's raw (uncalibrated) validation logits. ``labels``: 0/1.
    ``sample_weight``: per-row weights, e.g. ``1 / sample_rate`` of a downsampled validation split.
    ``negative_sampling_rate``: the rate at which negatives *of these rows* were kept (their
    weights are multiplied by ``1 / rate``); 1.0 for a representative split. It is not the
    training rate, whose correction Platt learns from a representative split (module docstring).
    Raises ``PlattFitError`` on degenerate data (see the module docstring).
    """
    f = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if f.ndim != 1 or y.shape != f.shape:
        raise ValueError(f"fit_platt: logits and labels must be 1-D of equal length, got {f.shape} and {y.shape}")
    if f.size == 0:
        raise PlattFitError("fit_platt: no validation rows")
    if not np.isfinite(f).all():
        raise ValueError(f"fit_platt: {int((~np.isfinite(f)).sum())} of {f.size} logits are NaN or infinite")
    bad = ~((y == 0) | (y == 1))
    if bad.any():
        raise ValueError(f"fit_platt: {int(bad.sum())} of {y.size} labels are not 0 or 1")
    y = y.astype(np.float64)
    w = np.ones_like(f) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if w.shape != f.shape or not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"fit_platt: sample_weight must be finite, non-negative, one per row (shape {f.shape})")
    w = w * np.where(y == 0, 1.0 / _rate(negative_sampling_rate), 1.0)

    keep = w > 0
    f, y, w = f[keep], y[keep], w[keep]
    pos, neg = y == 1, y == 0
    if not pos.any() or not neg.any():
        raise PlattFitError(f"fit_platt: only one class among {f.size} weighted validation rows "
                            f"({int(pos.sum())} positives); a Platt map needs clicks and non-clicks")
    w = w / w.sum()
    mu = float(w @ f)
    sd = math.sqrt(float(w @ (f - mu) ** 2))
    if not sd > 1e-12 * max(1.0, abs(mu)):
        raise PlattFitError(f"fit_platt: all logits are (nearly) equal ({mu:.6g}); the model carries no "
                            "ranking signal, so it cannot be calibrated into a useful predictor")
    if f[neg].max() <= f[pos].min():
        raise PlattFitError("fit_platt: the logits separate the classes perfectly (no positive below any "
                            "negative), so the maximum-likelihood slope is infinite; the validation day is "
                            "too small or leaks the label")
    if f[pos].max() <= f[neg].min():
        raise PlattFitError("fit_platt: every positive has a logit at or below every negative, so the fitted "
                            "slope would be negative and calibration would invert the ranking; check that "
                            "logits and labels are aligned row by row")
    x = (f - mu) / sd

    def loss_grad(theta):
        z = theta[0] * x + theta[1]
        r = w * (expit(z) - y)
        loss = float(w @ (np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z))) - y * z))  # softplus(z) - y z
        return loss, np.array([r @ x, r.sum()])

    def hess(theta):
        s = expit(theta[0] * x + theta[1])
        h = w * s * (1.0 - s)
        hx = float(h @ x)
        return np.array([[float(h @ (x * x)), hx], [hx, float(h.sum())]])

    rate = float(w @ y)
    start = np.array([0.0, math.log(rate / (1.0 - rate))])  # the base-rate predictor
    res = minimize(loss_grad, start, jac=True, hess=hess, method="trust-exact",
                   options={"maxiter": max_iter, "gtol": gtol})
    a_std, b_std = (float(v) for v in res.x)
    # trust-exact also stops "unsuccessfully" when it sits at the optimum and rounding leaves no
    # step that predicts an improvement; a gradient this small is a stationary point of a convex loss.
    stationary = bool(np.all(np.isfinite(res.jac))) and float(np.max(np.abs(res.jac))) <= STATIONARY_GRADIENT
    if not (res.success or stationary) or not (math.isfinite(a_std) and math.isfinite(b_std)):
        raise PlattFitError(f"fit_platt: the optimizer did not converge on {f.size} rows ({res.message}); "
                            f"last a={a_std / sd:.6g}")
    a = a_std / sd
    b = b_std - a_std * mu / sd
    if not a > 0:
        raise PlattFitError(f"fit_platt: fitted slope a={a:.6g} <= 0 on {f.size} validation rows: the logits rank "
                            "negatives at or above positives, so calibration would flatten or invert the ranking. "
                            "Check that logits and labels are aligned row by row and that the model trained; "
                            "do not bless this model")
    return Platt(a, b)
