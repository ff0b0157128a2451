"""The report's comparison of the rankers with the reference models (``metrics.json["references"]``)."""
from __future__ import annotations

from components.report import html as H

RANKERS = {"ctr": ("ctr", "ctr_baseline"), "pccvr": ("pccvr", "pccvr_baseline")}


def add_comparison(sec: H.Section, found: dict) -> None:
    """Per task: each ranker against the reference chosen for it on validation, then every reference."""
    references = found.get("references")
    if not isinstance(references, dict):
        sec.text(H.note("No reference models in this run (train_references did not run or is disabled)."))
        return
    for task, models in RANKERS.items():
        refs = references.get(task) or {}
        sec.text(H.heading(f"{task.upper()}: rankers against the reference models (test day)"))
        if "skipped" in refs:
            sec.text(H.note(f"No {task} references: {refs['skipped']}"))
            continue
        rows = []
        for model in models:
            m = found.get(model) or {}
            if "roc_auc" in m:
                rows.append([model, m["roc_auc"], m.get("reference", "-"), m.get("reference_roc_auc"),
                             m.get("roc_auc_margin_over_reference"), m.get("pr_auc_lift_over_reference_pct")])
        if rows:
            sec.add(H.table(["ranker", "ROC-AUC", "reference (chosen on validation)", "its ROC-AUC",
                             "margin (ROC-AUC)", "PR-AUC lift over it %"], rows))
        ref_rows = [[name, r.get("learner"), r.get("features"), "yes" if r.get("position") else "no",
                     r.get("validation_roc_auc"), r.get("roc_auc"), r.get("pr_auc")]
                    for name, r in sorted(refs.items()) if isinstance(r, dict)]
        sec.add(H.table(["reference", "learner", "features", "position", "validation ROC-AUC", "test ROC-AUC",
                         "test PR-AUC"], ref_rows))
    sec.text(H.note("References: logistic regression and gradient-boosted trees on the engineered point-in-time "
                    "features, fit on the rankers' training split. A ranker is compared with the position-free "
                    "reference of its feature set (personalized for the ranker with the ADPM, non-personalized for "
                    "the baseline) that scored best on the validation split; the test day only reports."))
