"""The ``bless`` step: publish a task's serving model only when it is no worse than the blessed one
(DESIGN §3 ``models/<task>/blessed.json``, §8 "Bless"; paper 000 §5: models are compared on the
next day's traffic).

For ``ctr`` and ``pccvr`` the candidate is this run's serving SavedModel. A task whose training
was skipped (its label too rare in the log, ``models.min_positives``; evaluation's
``{"skipped": <why>}``) has no candidate: nothing is published for it, and the decision carries
``skipped`` and a reason that says so. Otherwise the candidate is published when
- it was exported (its calibration succeeded) and its evaluation has a finite calibrated log-loss,
- its test-day ROC-AUC is above ``bless.min_roc_auc`` and its calibrated ECE at most
  ``bless.max_ece[task]``,
- and the currently blessed model, **scored on the same test-day rows** through its own serving
  SavedModel (raw features in, so a model trained on other days with other vocabularies is
  judged fairly), does not beat it by more than ``bless.auc_tolerance`` ROC-AUC.
A model blessed by a later run is never replaced by an earlier one (a backfill of old dates keeps
the newest). Otherwise the run still succeeds: the old model stays, and ``runs/D/bless/decision.json``
and the run summary say why. ``blessed.json`` is replaced atomically; ``history.jsonl`` lists every
model published for the task.
"""
from __future__ import annotations

import datetime as dt
import json
import math

from components.evaluate import metrics as offline
from components.evaluate.step import metrics_path
from components.lake import Lake, fs
from components.serving.step import TASKS, serving_dir
from components.step import StepError, StepResult


def blessed_path(lake: Lake, task: str) -> str:
    return fs.join(lake.model(task), "blessed.json")


def history_path(lake: Lake, task: str) -> str:
    return fs.join(lake.model(task), "history.jsonl")


def decision_path(lake: Lake, date) -> str:
    return fs.join(lake.run_dir(date, "bless"), "decision.json")


def load_blessed(lake: Lake, task: str) -> dict | None:
    """The pointer to the task's blessed model, or None when nothing was published yet."""
    path = blessed_path(lake, task)
    return json.loads(fs.read_text(path)) if fs.exists(path) else None


def run(config, date: dt.date, lake: Lake, progress=print) -> StepResult:
    evaluation = json.loads(fs.read_text(metrics_path(lake, date)))
    result = StepResult(inputs=[metrics_path(lake, date)])
    decisions = {}
    for task in TASKS:
        decision = _decide(config, date, lake, task, evaluation.get(task) or {}, progress)
        if decision["published"] and not decision.get("unchanged"):
            _publish(lake, task, decision, date, evaluation["test_day"])
        current = load_blessed(lake, task)
        decision["blessed_after"] = ({"run": current["run"], "serving_path": current["serving_path"]}
                                     if current else None)
        decisions[task] = decision
        verdict = "published" if decision["published"] else "kept the blessed model" if current else "not published"
        line = f"{task}: {verdict}: {decision['reason']}"
        result.notes.append(line)
        progress(f"  {line}")
        if decision["published"]:
            result.outputs[task] = blessed_path(lake, task)
    fs.write_text(decision_path(lake, date), json.dumps(decisions, indent=2, sort_keys=True) + "\n")
    result.outputs["decision"] = decision_path(lake, date)
    result.metrics = decisions
    return result


def _decide(config, date: dt.date, lake: Lake, task: str, m: dict, progress) -> dict:
    cfg = config.bless
    candidate = {"run": date.isoformat(), "serving_path": serving_dir(lake, date, task),
                 "roc_auc": m.get("roc_auc"), "ece_calibrated": m.get("ece_calibrated"),
                 "logloss_calibrated": m.get("logloss_calibrated")}
    out = {"published": False, "candidate": candidate, "incumbent": None}

    def refuse(reason: str) -> dict:
        return {**out, "reason": reason}

    if m.get("skipped"):
        return {**refuse(f"its training was skipped: {m['skipped']}"), "skipped": m["skipped"]}
    if not lake.complete(lake.run_dir(date, "export_serving")) or not fs.exists(
            fs.join(candidate["serving_path"], "saved_model.pb")):
        return refuse("no serving model was exported for it (see export_serving's notes)")
    if "roc_auc" not in m:
        return refuse(f"it has no test-day ranking metrics ({m.get('error', 'not evaluated')})")
    loss = m.get("logloss_calibrated")
    if loss is None or not math.isfinite(loss):
        return refuse(f"its calibrated test-day log-loss is not finite ({loss})")
    if not m["roc_auc"] > cfg.min_roc_auc:
        return refuse(f"its test-day ROC-AUC {m['roc_auc']:.4f} is not above {cfg.min_roc_auc}")
    limit = cfg.max_ece.get(task)
    if limit is not None and not m["ece_calibrated"] <= limit:
        return refuse(f"its calibrated test-day ECE {m['ece_calibrated']:.4f} is above {limit} (bless.max_ece.{task})")
    current = load_blessed(lake, task)
    if current is None:
        return {**out, "published": True, "reason": f"first model of the task (ROC-AUC {m['roc_auc']:.4f}, "
                                                    f"ECE {m['ece_calibrated']:.4f})"}
    incumbent_run = dt.date.fromisoformat(current["run"])
    out["incumbent"] = {"run": current["run"], "serving_path": current["serving_path"], "roc_auc": None}
    if incumbent_run == date:
        return {**out, "published": True, "unchanged": True, "reason": "this run's model is already the blessed one"}
    if incumbent_run > date:
        return refuse(f"the model of a later run ({current['run']}) is blessed; an earlier run does not replace it")
    incumbent_dir = serving_dir(lake, incumbent_run, task)
    if not fs.exists(fs.join(incumbent_dir, "saved_model.pb")):
        return {**out, "published": True, "reason": f"the blessed model's serving directory {incumbent_dir} is gone; "
                                                    f"this one (ROC-AUC {m['roc_auc']:.4f}) replaces it"}
    progress(f"  {task}: scoring the blessed model of {current['run']} on this run's test day")
    auc = _score_incumbent(config, date, lake, task, incumbent_dir)
    out["incumbent"]["roc_auc"] = auc
    margin = m["roc_auc"] - auc
    versus = (f"test-day ROC-AUC {m['roc_auc']:.4f} vs {auc:.4f} for the blessed model of {current['run']} "
              f"on the same rows (tolerance {cfg.auc_tolerance})")
    if margin < -cfg.auc_tolerance:
        return refuse(f"it is worse: {versus}")
    return {**out, "published": True, "reason": f"no worse: {versus}"}


def _score_incumbent(config, date: dt.date, lake: Lake, task: str, incumbent_dir: str) -> float:
    """ROC-AUC of the blessed serving model on exactly the rows this run's model was evaluated on, served
    as a caller would (each row with its request's candidates and its session's raw events)."""
    import numpy as np

    from components.lake import parquet
    from components.models.step import read_predictions
    from components.serving.model import load_serving, score_examples
    from components.serving.step import session_events_of
    from components.sessionize.step import examples_dir, session_spec

    found = read_predictions(lake, date, task, "test")
    if found is None:
        raise StepError(f"bless: no test predictions of {task} for {date}; run evaluate first")
    _, table, _, labels = found
    test_day = config.window.test_date(date)
    examples = parquet.read_partition(examples_dir(lake, test_day))
    with fs.local_dir(incumbent_dir, "r") as local:
        try:
            logits = score_examples(load_serving(local), examples, table.column("impression_id"),
                                    config.sessionize.pairs, session_events_of(lake, test_day, examples),
                                    session_spec(config.sessionize).window_ms, config.bless.score_batch_rows)["logit"]
        except ValueError as e:
            raise StepError(f"bless: the evaluated {task} rows are not all in the test day's examples ({e}); the "
                            "examples changed after evaluation: rerun with --from-step sessionize") from e
    return offline.roc_auc(labels, logits.astype(np.float64))


def _publish(lake: Lake, task: str, decision: dict, date: dt.date, test_day: str) -> None:
    c = decision["candidate"]
    pointer = {"task": task, "run": date.isoformat(), "serving_path": c["serving_path"], "test_day": test_day,
               "metrics": {k: c[k] for k in ("roc_auc", "ece_calibrated", "logloss_calibrated")},
               "reason": decision["reason"],
               "blessed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    history = fs.read_text(history_path(lake, task)) if fs.exists(history_path(lake, task)) else ""
    fs.write_bytes_atomic(history_path(lake, task), (history + json.dumps(pointer, sort_keys=True) + "\n").encode())
    fs.write_bytes_atomic(blessed_path(lake, task), (json.dumps(pointer, indent=2, sort_keys=True) + "\n").encode())
