"""The training steps ``train_ctr``, ``train_ctr_baseline``, ``train_pccvr``, ``train_pccvr_baseline``
(paper 000 §4, §5; DESIGN §8).

Each trains one ranker on ``runs/D/transform/train`` and writes to ``runs/D/train_<model>/``:
``model/score.keras`` (main logit, no debias tower), ``predictions/{validation,test}.parquet``
(main logit per row, with impression id and labels) for calibration and evaluation, and
``tensorboard/``. The personalized models use the ADPM with the run's frozen lookup tables
(``runs/D/export_lookups/<name>``); the baselines are the same rankers without it.

A task whose label the log (almost) does not have is not trained (DESIGN §8; paper 000 §4: CTR
learns clicks on impressions, PCCVR purchases after a click): when the transform's ``stats.json``
counts fewer positives in the training or validation split than ``models.min_positives`` asks,
the step is *skipped* the way every step skips (a ``skipped: <why>`` note and
``metrics.skipped`` in its manifest, :func:`training_skipped`), naming the split, the label, the
count, the minimum and the ``--set`` that changes it. Calibration, evaluation, the serving export,
blessing and the report then say that the task has no model and why.
"""
from __future__ import annotations

import datetime as dt
import json
import os

from components.lake import Lake, atomic_dir, fs, parquet
from components.step import StepError, StepResult

MODELS = {"ctr": ("ctr", True), "ctr_baseline": ("ctr", False), "pccvr": ("pccvr", True),
          "pccvr_baseline": ("pccvr", False)}
"""Model name -> (task, personalized)."""
SCORE_FILE = "score.keras"
POSITIVES = {"ctr": ("clicked", "clicks", "clicks"), "pccvr": ("purchased", "purchases", "purchases after a click")}
"""Task -> (label column, the transform stats' per-split count of its positives, what they are)."""
CHECKED_SPLITS = ("train", "validation")
"""Splits whose positives :func:`skip_reason` checks: the one the model learns from and the one that
early-stops and calibrates it."""


def model_dir(lake: Lake, date, model: str) -> str:
    return fs.join(lake.run_dir(date, f"train_{model}"), "model")


def load_score_model(lake: Lake, date, model: str):
    """The trained ``score`` model (main logit) of ``runs/D/train_<model>/model``."""
    import keras

    import components.models.adpm.adpm  # noqa: F401  (registers the custom layers for deserialization)
    import components.models.cross  # noqa: F401
    import components.models.wide  # noqa: F401

    with fs.local_dir(model_dir(lake, date, model), "r") as local:
        return keras.models.load_model(os.path.join(local, SCORE_FILE), compile=False)


def predictions_path(lake: Lake, date, model: str, split: str) -> str:
    return fs.join(lake.run_dir(date, f"train_{model}"), "predictions", f"{split}.parquet")


def read_predictions(lake: Lake, date, model: str, split: str):
    """``(path, table, logits float64, labels float64)`` of a model's predictions, or None when absent."""
    import numpy as np

    from components.models.train import TASK_LABEL

    path = predictions_path(lake, date, model, split)
    if not fs.exists(path):
        return None
    table = parquet.read_file(path)
    labels = table.column(TASK_LABEL[MODELS[model][0]]).to_numpy(zero_copy_only=False).astype(np.float64)
    return path, table, table.column("logit").to_numpy().astype(np.float64), labels


def transform_dir(lake: Lake, date) -> str:
    return lake.run_dir(date, "transform")


def lookup_paths(wanted: list[str], lake: Lake, date) -> dict[str, str]:
    """Frozen lookup SavedModels the ADPM's component 2 uses: the wanted ones that were exported."""
    from components.representations.export_lookups import lookup_dir

    paths = {name: lookup_dir(lake, date, name) for name in wanted}
    return {name: p for name, p in paths.items() if fs.exists(fs.join(p, "saved_model.pb"))}


def transform_stats(lake: Lake, date) -> dict | None:
    """The transform step's ``runs/D/transform/stats.json`` (rows, clicks, purchases per split), or None."""
    path = fs.join(transform_dir(lake, date), "stats.json")
    try:
        return json.loads(fs.read_text(path)) if fs.exists(path) else None
    except (OSError, ValueError):
        return None


def positives(stats: dict | None, task: str, split: str) -> int | None:
    """Positive labels of ``task`` in ``split`` as the transform counted them; None when not recorded."""
    count = ((stats or {}).get("splits") or {}).get(split, {}).get(POSITIVES[task][1])
    return None if count is None else int(count)


def skip_reason(stats: dict | None, task: str, minimum) -> str | None:
    """Why ``task``'s models must not train on these splits, or None when they may.

    ``minimum`` is ``config.models.min_positives`` (``.train``, ``.validation``). A split with fewer
    positives than its minimum holds too few of the task's label to learn it (train) or to stop and
    calibrate on it (validation); a split whose count was not recorded is not judged (see
    :func:`unchecked_splits`)."""
    label, _, what = POSITIVES[task]
    short = []
    for split in CHECKED_SPLITS:
        count, least = positives(stats, task, split), getattr(minimum, split)
        if count is not None and count < least:
            short.append((split, count, least))
    if not short:
        return None
    parts = [f"the {split} split has {count:,} positives of the {task.upper()} label {label!r} ({what}), fewer "
             f"than models.min_positives.{split} = {least}" for split, count, least in short]
    change = " ".join(f"--set models.min_positives.{split}=N" for split, _, _ in short)
    return ("; ".join(parts) + ". A ranker cannot learn, or be early-stopped and calibrated on, a label the log "
            f"(almost) does not have; change the minimum with {change}")


def unchecked_splits(stats: dict | None, task: str) -> list[str]:
    """The checked splits whose positives of ``task`` ``stats.json`` does not record (written by an
    older transform): their minimum cannot be enforced."""
    return [split for split in CHECKED_SPLITS if positives(stats, task, split) is None]


def training_skipped(lake: Lake, date, model: str) -> str | None:
    """Why ``train_<model>`` of ``date`` was skipped (its manifest's ``metrics.skipped``), or None when it
    trained or has not run."""
    path = fs.join(lake.run_dir(date, f"train_{model}"), "manifest.json")
    try:
        manifest = json.loads(fs.read_text(path)) if fs.exists(path) else None
    except (OSError, ValueError):
        return None
    reason = ((manifest or {}).get("metrics") or {}).get("skipped")
    return str(reason) if reason else None


def train_model(config, date: dt.date, lake: Lake, model: str, progress=print, *, out_dir: str | None = None,
                task_cfg=None, save_model: bool = True, splits: tuple[str, ...] = ("validation", "test"),
                tensorboard: bool = True) -> StepResult:
    """Train ``model`` (a key of :data:`MODELS`: its task and whether it is personalized) on the run's
    transform output and write ``model/score.keras`` (when ``save_model``) and
    ``predictions/<split>.parquet`` for ``splits`` under ``out_dir`` (default ``runs/D/train_<model>``).
    ``task_cfg`` replaces ``config.models.<task>`` (e.g. an ablation variant, components/ablate);
    the seed is ``config.seed``.

    Nothing is trained when the train or validation split holds fewer positives of the task's label
    than ``config.models.min_positives`` asks (:func:`skip_reason`): the result then carries a
    ``skipped: <why>`` note and ``metrics["skipped"]``, and no outputs."""
    task, personalized = MODELS[model]
    tdir = transform_dir(lake, date)
    if not lake.complete(tdir):
        raise StepError(f"train_{model}: the transform output {tdir} is missing; run the transform step first")
    stats = transform_stats(lake, date)
    reason = skip_reason(stats, task, config.models.min_positives)
    if reason:
        progress(f"  {model}: skipped: {reason}")
        return StepResult(inputs=[tdir], notes=[f"skipped: {reason}"],
                          metrics={"skipped": reason, "task": task, "label": POSITIVES[task][0],
                                   "positives": {s: positives(stats, task, s) for s in CHECKED_SPLITS}})
    unchecked = unchecked_splits(stats, task)

    import keras
    import tensorflow as tf

    from components.models import input as model_input
    from components.models.adpm import ADPM
    from components.models.ranker import build_ranker
    from components.models.strategy import is_chief, make_strategy, use_mixed_precision
    from components.models.train import TASK_LABEL, fit, predict_logits, task_batches

    task_cfg = task_cfg if task_cfg is not None else getattr(config.models, task)
    ranker_cfg = task_cfg.ranker.model_copy(update={"personalized": personalized and task_cfg.ranker.personalized})
    train_cfg = task_cfg.training
    rows = model_input.split_rows(tdir, "train", "clicks" if task == "pccvr" else "rows")
    if not rows:
        raise StepError(f"train_{model}: the training split has no {'clicked ' if task == 'pccvr' else ''}rows")
    keras.utils.set_random_seed(config.seed)
    result = StepResult(inputs=[tdir])
    notes = [n for n in [use_mixed_precision(train_cfg.mixed_precision)] if n]
    if unchecked:
        notes.append(f"positives of {POSITIVES[task][0]!r} in the {' and '.join(unchecked)} split(s) are not in "
                     f"{fs.join(tdir, 'stats.json')} (an older transform wrote it): models.min_positives was not "
                     "checked; rerun the transform step (--from-step transform) to check it")
    strategy = make_strategy(train_cfg.strategy)
    vocab = model_input.vocabulary_sizes(tdir)
    lookups = (lookup_paths(task_cfg.pretrained, lake, date)
               if ranker_cfg.personalized and task_cfg.adpm.component2.enabled else {})
    adpm = None
    with strategy.scope():
        if ranker_cfg.personalized:
            adpm_cfg = _adpm_config(task_cfg, lookups, notes)
            adpm = ADPM(adpm_cfg, vocab, model_input.num_oov_buckets(tdir))
        ranker = build_ranker(ranker_cfg, task_cfg.wide or config.models.wide, vocab, adpm, adpm.input_specs if adpm else None,
                              name=model, engineered=engineered_inputs(tdir, ranker_cfg),
                              engineered_buckets=int((stats or {}).get("engineered_buckets", 0)),
                              num_oov=model_input.num_oov_buckets(tdir))
    batch = train_cfg.batch_size
    def data(split, shuffle, epochs, clicked=False, rows_per_batch=batch):
        ds = model_input.make_dataset(tdir, split, rows_per_batch, max_seq_len=config.models.max_seq_len,
                                      max_query_tokens=config.models.max_query_tokens, shuffle=shuffle and not clicked,
                                      seed=config.seed, epochs=1 if clicked else epochs, include_strings=True)
        if clicked:  # PCCVR: its clicked rows, cached; the frozen lookups then run on those rows only
            ds = model_input.clicked_rows(ds, rows_per_batch, config.seed, epochs)
        return ds.map(adpm.add_lookup_rows, num_parallel_calls=tf.data.AUTOTUNE) if adpm else ds

    steps = max(rows // batch, 1)
    progress(f"  {model}: {ranker.train.count_params():,} parameters, {rows:,} training rows, batch {batch}, "
             f"{train_cfg.epochs} epoch(s), strategy {train_cfg.strategy} ({strategy.num_replicas_in_sync} replica(s))"
             + (f", lookups {sorted(lookups)}" if lookups else ""))
    run_dir = out_dir or lake.run_dir(date, f"train_{model}")
    train_ds = task_batches(data("train", True, None, clicked=task == "pccvr"), task, ranker.input_names)
    validation, validation_steps = None, None
    prediction_batch = train_cfg.prediction_batch_size or batch  # inference batches: validation passes, predictions
    if train_cfg.early_stopping_patience is not None and model_input.split_rows(tdir, "validation"):
        # Repeated, with a pass of exactly one split's batches: Keras reuses its validation iterator.
        validation_steps = -(-model_input.split_rows(tdir, "validation", "clicks" if task == "pccvr" else "rows")
                             // prediction_batch)
        validation = task_batches(data("validation", False, 1, clicked=task == "pccvr",
                                       rows_per_batch=prediction_batch), task, ranker.input_names).repeat()
    outcome = fit(ranker, train_ds, steps, train_cfg,
                  fs.join(run_dir, "tensorboard") if tensorboard and fs.is_local(run_dir) and is_chief() else None,
                  progress,
                  validation_ds=validation, validation_steps=validation_steps)
    if not is_chief():
        return result
    out = fs.join(run_dir, "model") if save_model else None
    if out:
        with atomic_dir(out, success=False) as tmp, fs.local_dir(tmp, "w") as local:
            ranker.score.save(os.path.join(local, SCORE_FILE))
    for split in splits:
        if not model_input.split_rows(tdir, split):
            continue
        table = predict_logits(ranker.score, data(split, False, 1, rows_per_batch=prediction_batch), task,
                               ranker.input_names)
        path = fs.join(run_dir, "predictions", f"{split}.parquet")
        parquet.write_table(table, path)
        result.outputs[f"predictions/{split}"] = path
        result.row_counts[f"predictions/{split}"] = table.num_rows
    if out:
        result.outputs["model"] = out
    result.metrics = {"task": task, "label": TASK_LABEL[task], "personalized": ranker_cfg.personalized,
                      "parameters": int(ranker.train.count_params()), "training_rows": rows, "steps": outcome.steps,
                      "seconds": round(outcome.seconds, 2), "history": outcome.history,
                      "examples_per_second": round(outcome.examples_per_second or 0.0, 1),
                      "lookups": sorted(lookups), "strategy": train_cfg.strategy,
                      "replicas": strategy.num_replicas_in_sync,
                      "positives": {s: positives(stats, task, s) for s in CHECKED_SPLITS}}
    result.notes.extend(notes)
    return result


def engineered_inputs(transform_dir: str, ranker_cfg) -> tuple[str, ...]:
    """The engineered features (``eng_<name>`` standardized, ``engb_<name>`` quantile buckets) of the
    transform output that a ranker reads:
    none when ``ranker.engineered`` is off; without the session group for the non-personalized baseline."""
    from components.models import input as model_input
    from schemas.features import ENGINEERED_FEATURES, NONPERSONALIZED_GROUPS, group_of

    if not ranker_cfg.engineered:
        return ()
    names = model_input.feature_names(transform_dir)
    available = set(names.float_scalars) | set(names.int_scalars)
    return tuple(f"{prefix}_{name}" for name in ENGINEERED_FEATURES for prefix in ("eng", "engb")
                 if f"{prefix}_{name}" in available
                 and (ranker_cfg.personalized or group_of(name) in NONPERSONALIZED_GROUPS))


def _adpm_config(task_cfg, lookups: dict[str, str], notes: list[str]):
    """The task's ADPM config with the run's lookups; component 2 reads lookup rows made in tf.data
    (Keras' fit under a distribution strategy cannot take string inputs, and XLA can compile rows)."""
    cfg = task_cfg.adpm
    if not cfg.component2.enabled:
        return cfg
    if not lookups:
        notes.append(f"ADPM component 2 off: none of the representations {task_cfg.pretrained} has a lookup table "
                     "for this run (their steps were skipped)")
        return cfg.model_copy(update={"component2": cfg.component2.model_copy(update={"enabled": False})})
    cfg = cfg.with_lookups(lookups)
    return cfg.model_copy(update={"component2": cfg.component2.model_copy(update={"input_mode": "rows"})})


def run_ctr(config, date, lake, progress=print):
    return train_model(config, date, lake, "ctr", progress)


def run_ctr_baseline(config, date, lake, progress=print):
    return train_model(config, date, lake, "ctr_baseline", progress)


def run_pccvr(config, date, lake, progress=print):
    return train_model(config, date, lake, "pccvr", progress)


def run_pccvr_baseline(config, date, lake, progress=print):
    return train_model(config, date, lake, "pccvr_baseline", progress)
