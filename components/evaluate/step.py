"""The ``evaluate`` step: next-day evaluation of every model on the test day (paper 000 §5; DESIGN §8).

For ``ctr``, ``ctr_baseline``, ``pccvr``, ``pccvr_baseline``: ROC-AUC, PR-AUC, log-loss, NCE
and ECE of the raw and Platt-calibrated probabilities on the test split, ``n`` and
``positives``, lifts of each personalized model over its baseline in percent and, on
synthetic lakes (``oracle/``), the oracle's ROC-AUC on the same rows and
``headroom_captured = (auc_model - auc_baseline) / (auc_oracle - auc_baseline)``; with the
reference models of the run (``train_references``), each ranker's margin over the reference
chosen for it on validation, and the headroom measured from the chosen non-personalized
reference against the position-free oracle (:func:`_add_references`).
A model whose training was skipped (its task's label is too rare in the log,
``models.min_positives``) gets ``{"skipped": <why>}`` in place of its metrics.
Writes ``runs/D/evaluate/metrics.json``.
"""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.calibrate.step import load_platt, sigmoid
from components.evaluate import metrics
from components.lake import Lake, fs, parquet
from components.models.step import MODELS, read_predictions, training_skipped
from components.step import StepError, StepResult

ORACLE_COLUMN = {"ctr": "p_click", "pccvr": "p_purchase"}


def metrics_path(lake: Lake, date) -> str:
    return fs.join(lake.run_dir(date, "evaluate"), "metrics.json")


def read_oracle(lake: Lake, day) -> pa.Table | None:
    """The oracle's true probabilities of ``day``'s impressions (synthetic lakes only), or None."""
    directory = lake.oracle("impressions", day)
    return parquet.read_partition(directory) if lake.complete(directory) else None


def oracle_probabilities(oracle: pa.Table, table: pa.Table, task: str) -> np.ndarray:
    """The oracle's true probability of each row of ``table`` (by impression_id; NaN where it has none)."""
    column = ORACLE_COLUMN[task]
    joined = table.select(["impression_id"]).join(
        oracle.select(["impression_id", column]), "impression_id", join_type="left outer")
    order = pc.index_in(table.column("impression_id"), joined.column("impression_id"))
    return joined.column(column).take(order).to_numpy(zero_copy_only=False).astype(np.float64)


def position_free_oracle(lake: Lake, day, table: pa.Table, truth: np.ndarray, w_position: float) -> np.ndarray:
    """The oracle's click logit without its position term (``+ w_position log(1 + position)``): what a
    model that does not see the position could know at best (the marketplace's click model, §6 of
    components/marketplace/GENERATIVE_MODEL.md)."""
    from components.sessionize.step import examples_dir

    examples = parquet.read_partition(examples_dir(lake, day), columns=["impression_id", "position"])
    index = pc.index_in(table.column("impression_id"), value_set=examples.column("impression_id").combine_chunks())
    position = examples.column("position").take(index).to_numpy(zero_copy_only=False).astype(np.float64)
    p = np.clip(truth, 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p)) + w_position * np.log1p(position)


def _add_references(lake: Lake, date, out: dict, progress) -> None:
    """``out["references"]`` (each reference's test metrics) and, for each ranker, its margin over the
    reference chosen for it on validation; ``headroom_captured`` of the personalized rankers is measured
    from the chosen non-personalized reference, against the position-free oracle (both sides position-free)."""
    from components.references import evaluate as ref_eval

    summary = ref_eval.read_summary(lake, date)
    if summary is None:
        return
    out["references"] = {task: ref_eval.reference_metrics(lake, date, task, summary) for task in ("ctr", "pccvr")}
    for model, (task, _) in MODELS.items():
        m, refs = out.get(model), out["references"][task]
        if not m or "roc_auc" not in m or "skipped" in refs:
            continue
        m.update(ref_eval.margins(m, refs, model))
        if "reference" in m:
            progress(f"  {model}: {m['roc_auc_margin_over_reference']:+.4f} ROC-AUC over {m['reference']} "
                     f"({m['reference_roc_auc']:.4f}, chosen on validation)")
        base_name = ref_eval.chosen_reference(refs, "nonpersonalized")
        oracle = m.get("oracle_roc_auc_position_free", m.get("oracle_roc_auc"))
        if model == task and base_name and oracle is not None:
            m["headroom_captured"] = metrics.headroom_captured(m["roc_auc"], refs[base_name]["roc_auc"], oracle)
            m["headroom_from"] = base_name


def run(config, date: dt.date, lake: Lake, progress=print) -> StepResult:
    test_day = config.window.test_date(date)
    oracle = read_oracle(lake, test_day)
    out: dict = {"test_day": test_day.isoformat()}
    result = StepResult()
    for model, (task, _) in MODELS.items():
        skipped = training_skipped(lake, date, model)
        if skipped:
            out[model] = {"skipped": skipped}
            result.notes.append(f"{model}: not evaluated: train_{model} was skipped: {skipped}")
            progress(f"  {model}: not evaluated: its training was skipped")
            continue
        found = read_predictions(lake, date, model, "test")
        if found is None:
            result.notes.append(f"no test predictions of {model}; not evaluated")
            continue
        path, table, logits, labels = found
        if len(labels) == 0 or labels.min() == labels.max():
            out[model] = {"n": int(len(labels)), "positives": int(labels.sum()),
                          "error": "the test split has a single class for this task: no ranking metric exists"}
            result.notes.append(f"{model}: {out[model]['error']}")
            continue
        platt = load_platt(lake, date, model)
        raw = sigmoid(logits)
        bins = config.models.ece_bins
        m = {"n": int(len(labels)), "positives": int(labels.sum()),
             "roc_auc": metrics.roc_auc(labels, logits), "pr_auc": metrics.pr_auc(labels, logits),
             "logloss_raw": metrics.logloss(labels, raw), "nce_raw": metrics.nce(labels, raw),
             "ece_raw": metrics.ece(labels, raw, bins)}
        if platt is None:
            m["calibration"] = "none: the Platt fit failed on the validation split (see runs/D/calibrate)"
            m["logloss_calibrated"] = m["nce_calibrated"] = m["ece_calibrated"] = None
        else:
            calibrated = platt.apply(logits)
            m.update({"logloss_calibrated": metrics.logloss(labels, calibrated),
                      "nce_calibrated": metrics.nce(labels, calibrated),
                      "ece_calibrated": metrics.ece(labels, calibrated, bins),
                      "roc_auc_calibrated": metrics.roc_auc(labels, calibrated), "platt": platt.to_dict()})
        if oracle is not None:
            truth = oracle_probabilities(oracle, table, task)
            if np.isnan(truth).any():
                raise StepError(f"evaluate: {int(np.isnan(truth).sum())} test impressions of {model} have "
                                f"no oracle row in {lake.oracle('impressions', test_day)}")
            m["oracle_roc_auc"] = metrics.roc_auc(labels, truth)
            if task == "ctr":
                m["oracle_roc_auc_position_free"] = metrics.roc_auc(
                    labels, position_free_oracle(lake, test_day, table, truth, config.marketplace.click_model.w_position))
        out[model] = m
        result.inputs.append(path)
        progress(f"  {model}: ROC-AUC {m['roc_auc']:.4f}, PR-AUC {m['pr_auc']:.4f}, "
                 f"ECE {m['ece_raw']:.4f} -> {m['ece_calibrated'] if m['ece_calibrated'] is None else round(m['ece_calibrated'], 4)} (n {m['n']:,}, positives {m['positives']:,})")
    for task in ("ctr", "pccvr"):
        model, base = out.get(task), out.get(f"{task}_baseline")
        if model and base and "roc_auc" in model and "roc_auc" in base:
            model["roc_auc_lift_pct"] = metrics.lift_pct(model["roc_auc"], base["roc_auc"])
            model["pr_auc_lift_pct"] = metrics.lift_pct(model["pr_auc"], base["pr_auc"])
            if "oracle_roc_auc" in model:
                model["headroom_captured"] = metrics.headroom_captured(
                    model["roc_auc"], base["roc_auc"], model["oracle_roc_auc"])
    _add_references(lake, date, out, progress)
    if len(out) == 1:
        raise StepError("evaluate: no model has test predictions; run the train_* and calibrate steps first")
    fs.write_text(metrics_path(lake, date), json.dumps(out, indent=2, sort_keys=True) + "\n")
    result.outputs["metrics"] = metrics_path(lake, date)
    result.metrics = out
    return result
