"""The ``export_serving`` step: one serving SavedModel per task (DESIGN §8 "Serving export").

For ``ctr`` and ``pccvr`` (the personalized models) it wraps the trained ``score`` model, the run's
TFT graph, the frozen lookups the ADPM reads and the task's Platt calibration into
``runs/D/export_serving/<task>/`` (see :mod:`components.serving.model`), loads it back and
checks it: on the requests of up to ``models.serving_parity_rows`` test-day examples, fed as raw
features (the rows' raw fields, their sessions' raw events, no engineered feature), its
probabilities must equal the calibrated predictions evaluation scored (within
``models.serving_tolerance``); otherwise the step fails.

The exported graph computes the engineered features itself (``components.serving.features``),
with the latest catalog (the test day's) and the priors of the serving day D+1 frozen in: the
impression counts of the ``sessionize.prior_days`` days up to D. The test day's examples read
the priors of the days before it, so when the models read priors the check runs on the same
graph with the test day's counts frozen in instead. A task whose calibration failed is
not exported (its model cannot give a calibrated probability), nor one whose training was skipped
(a label the log lacks, ``models.min_positives``); the notes and ``metrics[<task>]["not_exported"]``
say why, the run goes on, and publishing keeps the previously blessed model.
"""
from __future__ import annotations

import datetime as dt
import os
import time

import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.calibrate.step import load_platt
from components.lake import Lake, atomic_dir, fs, parquet
from components.models.input import transform_stats
from components.models.step import MODELS, load_score_model, read_predictions, training_skipped, transform_dir
from components.sessionize.kernel import EVENT_COLUMNS
from components.sessionize.step import examples_dir, feature_context, session_spec
from components.step import StepError, StepResult
from components.validate.step import validated_dir
from schemas.features import group_of
from schemas.raw import user_key

TASKS = tuple(model for model, (_, personalized) in MODELS.items() if personalized)


def serving_dir(lake: Lake, date, task: str) -> str:
    return fs.join(lake.run_dir(date, "export_serving"), task)


def serving_features(config, date: dt.date, lake: Lake, day: dt.date):
    """The in-graph engineered features of the run of ``date`` (those its transform reads) for serving
    on ``day``: the test day's catalog and the priors of the days before ``day``."""
    from components.serving.features import ServingFeatures

    names = (transform_stats(transform_dir(lake, date)) or {}).get("engineered_features", ())
    return ServingFeatures(names, session_spec(config.sessionize).window_ms,
                           feature_context(lake, config, day, catalog_day=config.window.test_date(date)))


def run(config, date: dt.date, lake: Lake, progress=print) -> StepResult:
    from components.serving.model import ServingModel

    result = StepResult(inputs=[transform_dir(lake, date)])
    test_day, serving_day = config.window.test_date(date), date + dt.timedelta(days=1)
    features = {serving_day: serving_features(config, date, lake, serving_day)}
    names = features[serving_day].names
    priors = any(group_of(n) == "prior" for n in names)
    if priors:
        features[test_day] = serving_features(config, date, lake, test_day)
    examples = events = None  # the test day's examples and their sessions' events, read once
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
        score_model = load_score_model(lake, date, task)

        def module(day):
            return ServingModel(transform_dir(lake, date), score_model, platt, config.sessionize.pairs,
                                config.models.max_seq_len, config.models.max_query_tokens, features[day])

        out = serving_dir(lake, date, task)
        with atomic_dir(out, success=False) as tmp, fs.local_dir(tmp, "w") as local:
            module(serving_day).save(local)
        if examples is None:
            examples = parquet.read_partition(examples_dir(lake, test_day))
            events = session_events_of(lake, test_day, examples) if any(group_of(n) == "session" for n in names) \
                else None
        if priors:
            with tempfile.TemporaryDirectory() as checked:
                module(test_day).save(checked)
                check = _parity(config, date, lake, task, platt, checked, examples, events)
            check["checked"] = f"the exported graph with the priors of the test day {test_day}"
        else:
            check = _parity(config, date, lake, task, platt, out, examples, events)
            check["checked"] = "the exported model"
        size = sum(os.path.getsize(p) for p in fs.list_tree(out)) if fs.is_local(out) else None
        result.outputs[task] = out
        result.metrics[task] = {**check, "seconds": round(time.perf_counter() - t0, 2), "bytes": size,
                                "platt": platt.to_dict()}
        progress(f"  {task}: exported to {out}; parity on {check['parity_rows']:,} test-day rows: "
                 f"max |dp| {check['max_abs_diff_probability']:.2e}")
    result.metrics["exported"] = sorted(result.outputs)
    return result


def session_events_of(lake: Lake, day: dt.date, examples: pa.Table) -> pa.Table | None:
    """The validated events of ``day`` and the day before of the user keys of ``examples`` (an examples
    table of ``day``): what a serving caller holds as those keys' sessions."""
    keys = pc.unique(examples.column("user_key"))
    parts = []
    for d in (day - dt.timedelta(days=1), day):
        if lake.complete(validated_dir(lake, "events", d)):
            table = parquet.read_partition(validated_dir(lake, "events", d), columns=list(EVENT_COLUMNS))
            parts.append(table.filter(pc.is_in(user_key(table), value_set=keys)))
    return pa.concat_tables(parts) if parts else None


def _parity(config, date, lake: Lake, task: str, platt, path: str, examples, events) -> dict:
    """Score the first test-day predictions through the saved model as a caller would (each with its
    request's candidates and its session's raw events) and compare with the evaluated predictions."""
    from components.serving.model import load_serving, score_examples

    found = read_predictions(lake, date, task, "test")
    if found is None or found[1].num_rows == 0:
        return {"parity_rows": 0, "max_abs_diff_probability": 0.0, "max_abs_diff_logit": 0.0}
    _, table, logits, _ = found
    n = min(config.models.serving_parity_rows, table.num_rows)
    try:
        with fs.local_dir(path, "r") as local:
            served = score_examples(load_serving(local), examples, table.column("impression_id").slice(0, n),
                                    config.sessionize.pairs, events, session_spec(config.sessionize).window_ms)
    except ValueError as e:
        raise StepError(f"export_serving: the {task} test-day predictions are not all in the test day's examples "
                        f"({e}); the examples changed after evaluation: rerun with --from-step sessionize") from e
    diff_p = float(np.abs(served["probability"] - platt.apply(logits[:n])).max()) if n else 0.0
    diff_logit = float(np.abs(served["logit"] - logits[:n]).max()) if n else 0.0
    if not diff_p <= config.models.serving_tolerance:
        raise StepError(f"export_serving: the {task} serving model disagrees with the evaluated predictions on "
                        f"{n:,} test-day rows: max |probability difference| {diff_p:.3g} (tolerance "
                        f"{config.models.serving_tolerance:g}), max |logit difference| {diff_logit:.3g}")
    return {"parity_rows": n, "max_abs_diff_probability": diff_p, "max_abs_diff_logit": diff_logit}
