"""The ``export_serving`` step: one serving SavedModel per task (DESIGN §8 "Serving export").

For ``ctr`` and ``pccvr`` (the personalized models) it wraps the trained ``score`` model, the run's
TFT graph, the frozen lookups the ADPM reads and the task's Platt calibration into
``runs/D/export_serving/<task>/`` (see :mod:`components.serving.model`), loads it back and
checks it: on up to ``models.serving_parity_rows`` test-day examples, fed as raw features, its
probabilities must equal the calibrated predictions evaluation scored (within
``models.serving_tolerance``); otherwise the step fails. A task whose calibration failed is
not exported (its model cannot give a calibrated probability), nor one whose training was skipped
(a label the log lacks, ``models.min_positives``); the notes and ``metrics[<task>]["not_exported"]``
say why, the run goes on, and publishing keeps the previously blessed model.
"""
from __future__ import annotations

import datetime as dt
import os
import time

import numpy as np
import pyarrow.compute as pc

from components.calibrate.step import load_platt
from components.lake import Lake, atomic_dir, fs, parquet
from components.models.step import MODELS, load_score_model, read_predictions, training_skipped, transform_dir
from components.sessionize.step import examples_dir
from components.step import StepError, StepResult

TASKS = tuple(model for model, (_, personalized) in MODELS.items() if personalized)


def serving_dir(lake: Lake, date, task: str) -> str:
    return fs.join(lake.run_dir(date, "export_serving"), task)


def run(config, date: dt.date, lake: Lake, progress=print) -> StepResult:
    from components.serving.model import ServingModel

    result = StepResult(inputs=[transform_dir(lake, date)])
    examples = None  # the test day's examples, read once for every task's parity check
    for task in TASKS:
        skipped = training_skipped(lake, date, task)
        platt = None if skipped else load_platt(lake, date, task)
        if platt is None:
            why = (f"train_{task} was skipped: {skipped}" if skipped
                   else f"its calibration failed (see runs/D/calibrate/{task}.json)")
            note = f"{task}: not exported: {why}"
            result.notes.append(note)
            result.metrics[task] = {"not_exported": why}
            progress(f"  {note}")
            continue
        t0 = time.perf_counter()
        module = ServingModel(transform_dir(lake, date), load_score_model(lake, date, task), platt,
                              config.sessionize.pairs, config.models.max_seq_len, config.models.max_query_tokens)
        out = serving_dir(lake, date, task)
        with atomic_dir(out, success=False) as tmp, fs.local_dir(tmp, "w") as local:
            module.save(local)
        if examples is None:
            examples = parquet.read_partition(examples_dir(lake, config.window.test_date(date)))
        check = _parity(config, date, lake, task, platt, out, examples)
        size = sum(os.path.getsize(p) for p in fs.list_tree(out)) if fs.is_local(out) else None
        result.outputs[task] = out
        result.metrics[task] = {**check, "seconds": round(time.perf_counter() - t0, 2), "bytes": size,
                                "platt": platt.to_dict()}
        progress(f"  {task}: exported to {out}; parity on {check['parity_rows']:,} test-day rows: "
                 f"max |dp| {check['max_abs_diff_probability']:.2e}")
    result.metrics["exported"] = sorted(result.outputs)
    return result


def _parity(config, date, lake: Lake, task: str, platt, path: str, examples) -> dict:
    """Score test-day examples through the saved model and compare with the evaluated predictions."""
    from components.serving.model import load_serving, predict, raw_features

    found = read_predictions(lake, date, task, "test")
    if found is None or found[1].num_rows == 0:
        return {"parity_rows": 0, "max_abs_diff_probability": 0.0, "max_abs_diff_logit": 0.0}
    _, table, logits, _ = found
    wanted = table.column("impression_id").slice(0, config.models.serving_parity_rows)
    examples = examples.filter(pc.is_in(examples.column("impression_id"), value_set=wanted))
    position = {s: i for i, s in enumerate(wanted.to_pylist())}  # wanted is the table's first rows
    rows = np.array([position[s] for s in examples.column("impression_id").to_pylist()], dtype=np.int64)
    with fs.local_dir(path, "r") as local:
        served = predict(load_serving(local), raw_features(examples, config.sessionize.pairs))
    diff_p = float(np.abs(served["probability"] - platt.apply(logits[rows])).max()) if len(rows) else 0.0
    diff_logit = float(np.abs(served["logit"] - logits[rows]).max()) if len(rows) else 0.0
    if len(rows) != len(wanted) or not diff_p <= config.models.serving_tolerance:
        raise StepError(f"export_serving: the {task} serving model disagrees with the evaluated predictions on "
                        f"the test day: {len(rows):,} of {len(wanted):,} rows found in the examples, max "
                        f"|probability difference| {diff_p:.3g} (tolerance {config.models.serving_tolerance:g}), "
                        f"max |logit difference| {diff_logit:.3g}")
    return {"parity_rows": int(len(rows)), "max_abs_diff_probability": diff_p, "max_abs_diff_logit": diff_logit}
