"""The ``train_references`` step: the simple models an ads team ships today, fit in every run (DESIGN §8).

For each task (CTR on the training split, PCCVR on its clicked rows) and each of
:data:`REFERENCES`: a logistic regression and gradient-boosted trees (scikit-learn's
``HistGradientBoostingClassifier``: in the pinned stack already, multi-threaded, and with early
stopping on a held-out share of the training rows, so nothing is chosen on the validation or
test day) on the engineered features (``components.references.features``), non-personalized and
personalized, each without and with the ad position. The rows are the transform step's splits
(``components.transform.splits``), so the references and the rankers see the same examples.

Writes ``runs/D/train_references/predictions/<task>/<reference>/{validation,test}.parquet``
(impression id, label, logit) for ``evaluate``, and ``references.json`` (features, validation
ROC-AUC, training time per reference).
"""
from __future__ import annotations

import datetime as dt
import json
import time

import numpy as np
import pyarrow as pa

from components.lake import Lake, fs, parquet
from components.references import features as ref_features
from components.step import StepError, StepResult
from components.transform.splits import split_masks

TASK_LABEL = {"ctr": "clicked", "pccvr": "purchased"}
REFERENCES = tuple((f"{learner}_{feature_set}{'_position' if position else ''}", learner, feature_set, position)
                   for feature_set in ref_features.FEATURE_SETS for position in (False, True)
                   for learner in ("logreg", "gbdt"))
"""(name, learner, feature set, with position)."""
EVAL_SPLITS = ("validation", "test")


def step_dir(lake: Lake, date) -> str:
    return lake.run_dir(date, "train_references")


def predictions_path(lake: Lake, date, task: str, reference: str, split: str) -> str:
    return fs.join(step_dir(lake, date), "predictions", task, reference, f"{split}.parquet")


def references_path(lake: Lake, date) -> str:
    return fs.join(step_dir(lake, date), "references.json")


def read_splits(config, date: dt.date, lake: Lake) -> dict[str, pa.Table]:
    """The run window's examples, split and sampled as the transform step does, sequences compacted."""
    from components.transform.step import plan

    parts: dict[str, list[pa.Table]] = {"train": [], "validation": [], "test": []}
    for source in plan(config, date, lake):
        table = parquet.read_file(source.path, columns=ref_features.read_columns(_schema_names(source.path)))
        masks = split_masks(table, source.role, source.validation_fraction, config.seed,
                            config.transform.eval_sample_rate)
        for split, mask in masks.items():
            if mask.any():
                parts[split].append(ref_features.compact(table.filter(pa.array(mask))))
    return {split: pa.concat_tables(tables) if tables else None for split, tables in parts.items()}


def _schema_names(path: str) -> list[str]:
    import pyarrow.parquet as pq

    handle = path if fs.is_local(path) else pa.BufferReader(fs.read_bytes(path))
    return pq.ParquetFile(handle).schema_arrow.names


def _fit(learner: str, x: np.ndarray, y: np.ndarray, cfg, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if learner == "logreg":
        model = make_pipeline(StandardScaler(), LogisticRegression(C=cfg.logreg_c, max_iter=2000))
    else:
        model = HistGradientBoostingClassifier(
            max_iter=cfg.gbdt_max_iter, learning_rate=cfg.gbdt_learning_rate, max_leaf_nodes=cfg.gbdt_max_leaf_nodes,
            min_samples_leaf=cfg.gbdt_min_samples_leaf, l2_regularization=cfg.gbdt_l2, early_stopping=True,
            validation_fraction=cfg.gbdt_validation_fraction, n_iter_no_change=20, random_state=seed)
    return model.fit(x, y)


def _design(table: pa.Table, names: list[str], learner: str, position: bool, max_position: int) -> np.ndarray:
    x = ref_features.matrix(table, names)
    if not position:
        return x
    pos = ref_features.positions(table)
    if learner == "gbdt":
        return np.column_stack([x, pos])
    one_hot = np.clip(pos, 0, max_position - 1).astype(np.int64)[:, None] == np.arange(max_position)[None, :]
    return np.column_stack([x, one_hot.astype(np.float64)])


def _task_rows(splits: dict, task: str) -> dict[str, pa.Table | None]:
    if task == "ctr":
        return splits
    return {s: (t.filter(t.column("clicked")) if t is not None else None) for s, t in splits.items()}


def run(config, date: dt.date, lake: Lake, progress=print) -> StepResult:
    """Fit and score every reference of every task; ``config``: the pipeline config (reads
    ``.references``, ``.window``, ``.transform``, ``.seed``)."""
    from sklearn.metrics import roc_auc_score

    cfg = config.references
    result = StepResult()
    if not cfg.enabled:
        reason = "references.enabled is false"
        result.notes.append(f"skipped: {reason}")
        result.metrics["skipped"] = reason
        return result
    splits = read_splits(config, date, lake)
    if splits["train"] is None:
        raise StepError("train_references: the training split is empty; see the transform step")
    _check_rows(lake, date, splits)
    from components.transform.step import engineered_features

    _, prior_use = engineered_features(config, date, lake)  # the rankers' rule, so both see the same inputs
    priors = prior_use["used"]
    if not priors:
        result.notes.append(f"historical priors off for this run: {prior_use['why']}")
    summary: dict = {"priors": priors, "tasks": {}}
    for task, label in TASK_LABEL.items():
        rows = _task_rows(splits, task)
        train = rows["train"]
        y = train.column(label).to_numpy(zero_copy_only=False).astype(np.int64) if train is not None else np.zeros(0)
        if len(np.unique(y)) < 2:
            reason = f"the training split has {int(y.sum())} positive(s) of {label!r} in {len(y)} rows"
            summary["tasks"][task] = {"skipped": reason}
            result.notes.append(f"{task}: skipped: {reason}")
            continue
        summary["tasks"][task] = {}
        for name, learner, feature_set, position in REFERENCES:
            names = ref_features.feature_names(feature_set, priors, train.column_names)
            t0 = time.perf_counter()
            model = _fit(learner, _design(train, names, learner, position, cfg.max_position), y, cfg, config.seed)
            seconds = time.perf_counter() - t0
            entry = {"learner": learner, "features": feature_set, "position": position, "n_train": len(y),
                     "positives_train": int(y.sum()), "train_seconds": round(seconds, 2),
                     "inputs": names + (["position"] if position else [])}
            for split in EVAL_SPLITS:
                table = rows[split]
                if table is None or table.num_rows == 0:
                    continue
                logits = model.decision_function(_design(table, names, learner, position, cfg.max_position))
                labels = table.column(label).to_numpy(zero_copy_only=False)
                path = predictions_path(lake, date, task, name, split)
                parquet.write_table(pa.table({"impression_id": table.column("impression_id"), label: labels,
                                              "logit": pa.array(logits.astype(np.float64))}), path)
                result.row_counts[f"{task}/{split}"] = table.num_rows
                if split == "validation" and 0 < labels.sum() < len(labels):
                    entry["validation_roc_auc"] = round(float(roc_auc_score(labels, logits)), 4)
            summary["tasks"][task][name] = entry
            progress(f"  {task} {name}: {len(y):,} rows, {seconds:.1f} s, validation ROC-AUC "
                     f"{entry.get('validation_roc_auc', float('nan')):.4f}")
    fs.write_text(references_path(lake, date), json.dumps(summary, indent=2, sort_keys=True) + "\n")
    result.outputs["references"] = references_path(lake, date)
    result.outputs["predictions"] = fs.join(step_dir(lake, date), "predictions")
    result.metrics = summary
    return result


def _check_rows(lake: Lake, date, splits: dict) -> None:
    """The references' splits have the rows the transform step wrote (same selection, same sampling)."""
    path = fs.join(lake.run_dir(date, "transform"), "stats.json")
    if not fs.exists(path):
        return
    stats = json.loads(fs.read_text(path))["splits"]
    for split, table in splits.items():
        rows = table.num_rows if table is not None else 0
        if split in stats and stats[split]["rows"] != rows:
            raise StepError(f"train_references: the {split} split has {rows} rows here but {stats[split]['rows']} in "
                            f"the transform step's output ({path}); both select rows with components.transform.splits, "
                            "so this is a bug: please report it")
