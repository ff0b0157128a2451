"""The ``calibrate`` step: Platt scaling of every trained model on the validation logits
(paper 000 A.3; DESIGN §8: ``p = 1 / (1 + exp(-(A f(x) + B)))``).

The training split is down-sampled (half the non-clicks for CTR), so raw probabilities are
too high; the validation split is representative, so the Platt fit on it also undoes the
down-sampling. Writes ``runs/D/calibrate/<model>.json`` with A, B and the validation
log-loss and ECE before and after; for a model whose training was skipped (a label the log
lacks, ``models.min_positives``) it holds ``{"skipped": <why>}`` instead and no Platt fit.
"""
from __future__ import annotations

import datetime as dt
import json

from scipy.special import expit as sigmoid  # the stable logistic platt.py uses too

from components.calibrate.platt import PlattFitError, fit_platt
from components.evaluate import metrics
from components.lake import Lake, fs
from components.models.step import MODELS, read_predictions, training_skipped
from components.step import StepError, StepResult


def platt_path(lake: Lake, date, model: str) -> str:
    return fs.join(lake.run_dir(date, "calibrate"), f"{model}.json")


def load_platt(lake: Lake, date, model: str):
    """The model's Platt parameters, or None when it could not be calibrated (no ranking signal)."""
    from components.calibrate.platt import Platt

    report = json.loads(fs.read_text(platt_path(lake, date, model)))
    return Platt.from_dict(report["platt"]) if "platt" in report else None


def _not_calibrated(lake: Lake, date, model: str, record: dict, reason: str, result: StepResult, progress) -> None:
    """Write ``record`` as the model's calibration file (no Platt fit) and say ``reason``."""
    fs.write_text(platt_path(lake, date, model), json.dumps(record, indent=2) + "\n")
    result.notes.append(f"{model}: {reason}")
    result.metrics[model] = record
    result.outputs[model] = platt_path(lake, date, model)
    progress(f"  {model}: {reason}")


def run(config, date: dt.date, lake: Lake, progress=print) -> StepResult:
    result = StepResult()
    bins = config.models.ece_bins
    for model in MODELS:
        skipped = training_skipped(lake, date, model)
        if skipped:
            _not_calibrated(lake, date, model, {"skipped": skipped}, f"not calibrated: train_{model} was skipped: "
                            f"{skipped}", result, progress)
            continue
        found = read_predictions(lake, date, model, "validation")
        if found is None:
            result.notes.append(f"no validation predictions of {model}; not calibrated")
            continue
        path, _, logits, labels = found
        try:
            if len(labels) == 0 or labels.min() == labels.max():
                raise PlattFitError(f"the {len(labels):,} validation rows have a single class")
            platt = fit_platt(logits, labels)
        except PlattFitError as err:
            # A model without ranking signal cannot be calibrated; the run goes on, evaluation reports
            # its raw metrics and says why, and blessing will refuse it.
            reason = f"not calibrated: {err}"
            _not_calibrated(lake, date, model, {"error": reason}, reason, result, progress)
            continue
        raw, calibrated = sigmoid(logits), platt.apply(logits)
        report = {"platt": platt.to_dict(), "validation_rows": int(len(labels)), "positives": int(labels.sum()),
                  "logloss_raw": metrics.logloss(labels, raw), "logloss_calibrated": metrics.logloss(labels, calibrated),
                  "ece_raw": metrics.ece(labels, raw, bins), "ece_calibrated": metrics.ece(labels, calibrated, bins)}
        fs.write_text(platt_path(lake, date, model), json.dumps(report, indent=2, sort_keys=True) + "\n")
        result.inputs.append(path)
        result.outputs[model] = platt_path(lake, date, model)
        result.metrics[model] = report
        progress(f"  {model}: A={platt.a:.4f} B={platt.b:.4f}; validation ECE {report['ece_raw']:.4f} -> "
                 f"{report['ece_calibrated']:.4f}")
    if not result.outputs:
        raise StepError("calibrate: no model has validation predictions; run the train_* steps first "
                        "(window.validation=fraction runs have a validation split too)")
    return result
