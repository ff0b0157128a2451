"""Next-day evaluation of the CTR/PCCVR models and their baselines (DESIGN §8; paper 000 §5)."""
from components.evaluate.metrics import (
    DEFAULT_ECE_BINS,
    Reliability,
    ece,
    headroom_captured,
    lift_pct,
    logloss,
    nce,
    pr_auc,
    reliability,
    roc_auc,
    summary,
    weights_from_sample_rate,
)

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
