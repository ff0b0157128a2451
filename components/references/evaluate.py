"""Next-day metrics of the reference models and the rankers' margins over them (DESIGN §8 "Reference models").

For every reference of a task: ROC-AUC, PR-AUC and raw log-loss on the test split, with the
validation ROC-AUC the step recorded. The reference a ranker is compared with is chosen on
validation only: among the position-free references of the ranker's feature set (the
personalized set for the ranker with the ADPM, the non-personalized set for its baseline), the
one with the best validation ROC-AUC. The test day then reports the margin; it never picks.
"""
from __future__ import annotations

import json

import numpy as np

from components.evaluate import metrics
from components.lake import Lake, fs, parquet
from components.references.step import REFERENCES, TASK_LABEL, predictions_path, references_path

RANKER_FEATURE_SET = {"ctr": "personalized", "ctr_baseline": "nonpersonalized",
                      "pccvr": "personalized", "pccvr_baseline": "nonpersonalized"}


def read_summary(lake: Lake, date) -> dict | None:
    path = references_path(lake, date)
    return json.loads(fs.read_text(path)) if fs.exists(path) else None


def reference_metrics(lake: Lake, date, task: str, summary: dict) -> dict:
    """``name -> metrics`` of the task's references on the test split (``{"skipped": why}`` for a skipped task)."""
    fitted = summary["tasks"].get(task, {})
    if "skipped" in fitted:
        return {"skipped": fitted["skipped"]}
    out = {}
    label = TASK_LABEL[task]
    for name, learner, feature_set, position in REFERENCES:
        path = predictions_path(lake, date, task, name, "test")
        if name not in fitted or not fs.exists(path):
            continue
        table = parquet.read_file(path)
        y = table.column(label).to_numpy(zero_copy_only=False).astype(np.float64)
        logits = table.column("logit").to_numpy()
        entry = {"learner": learner, "features": feature_set, "position": position, "n": int(len(y)),
                 "positives": int(y.sum()), "validation_roc_auc": fitted[name].get("validation_roc_auc")}
        if 0 < y.sum() < len(y):
            entry.update(roc_auc=metrics.roc_auc(y, logits), pr_auc=metrics.pr_auc(y, logits),
                         logloss_raw=metrics.logloss(y, 1.0 / (1.0 + np.exp(-logits))))
        out[name] = entry
    return out


def chosen_reference(references: dict, feature_set: str) -> str | None:
    """The position-free reference of ``feature_set`` with the best validation ROC-AUC (None when none has one)."""
    candidates = [(r["validation_roc_auc"], name) for name, r in references.items()
                  if isinstance(r, dict) and r.get("features") == feature_set and not r.get("position")
                  and r.get("validation_roc_auc") is not None and "roc_auc" in r]
    return max(candidates)[1] if candidates else None


def margins(model_metrics: dict, references: dict, model: str) -> dict:
    """The ranker's test margin over the reference chosen for it on validation."""
    name = chosen_reference(references, RANKER_FEATURE_SET[model])
    if name is None or "roc_auc" not in model_metrics:
        return {}
    ref = references[name]
    return {"reference": name, "reference_roc_auc": ref["roc_auc"], "reference_pr_auc": ref["pr_auc"],
            "roc_auc_margin_over_reference": model_metrics["roc_auc"] - ref["roc_auc"],
            "roc_auc_lift_over_reference_pct": metrics.lift_pct(model_metrics["roc_auc"], ref["roc_auc"]),
            "pr_auc_lift_over_reference_pct": metrics.lift_pct(model_metrics["pr_auc"], ref["pr_auc"])}
