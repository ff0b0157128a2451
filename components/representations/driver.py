"""The shape every representation step shares (issue 4): skip, train or reuse, infer, check, write.

A representation (skip-gram, text, visual, AIR) implements :class:`Representation`; its
step's ``run`` calls :func:`run_representation`, which

1. skips with a note when the representation is disabled or its modality is missing;
2. reuses the model trained within the retrain cadence (``cadence.reusable_model``) or
   trains a new one into ``runs/D/<step>/model/`` (written atomically);
3. infers vectors for the current catalog and writes ``vectors.parquet`` (finite values only);
4. runs the quality checks (``quality``) and fails the step when the representation is no
   better than random, so a broken trainer cannot pass silently.
"""
from __future__ import annotations

import abc
import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.lake import Lake, atomic_dir, fs, parquet
from components.representations import quality
from components.representations.cadence import reusable_model
from components.representations.store import MODEL_DIR, STEP_OF, Vectors, catalog, write_vectors
from components.step import StepError, StepResult
from components.validate.step import validated_files


class Representation(abc.ABC):
    """One listing representation. ``prepare`` runs first and loads what train/infer need."""

    name: str  # skipgram | text | visual | air
    gap_columns: tuple[str, ...] = ("taxonomy_id",)
    purity_columns: tuple[str, ...] = ("taxonomy_id",)

    @abc.abstractmethod
    def prepare(self, config, date: dt.date, lake: Lake, progress) -> str | None:
        """Load inputs; return why the representation must be skipped (missing modality), or None."""

    @abc.abstractmethod
    def train(self, model_dir: str, progress) -> dict:
        """Train and save the model into ``model_dir`` (a fresh local or remote directory); return metrics."""

    @abc.abstractmethod
    def infer(self, model_dir: str, progress) -> Vectors:
        """Vectors of the current catalog's listings from the model in ``model_dir``."""

    def describe(self) -> dict:
        """Facts for the manifest (inputs used, weights, sizes)."""
        return {}


def run_representation(config, date: dt.date, lake: Lake, rep: Representation, progress=print) -> StepResult:
    cfg = getattr(config.representations, rep.name)
    step = STEP_OF[rep.name]
    result = StepResult()
    if not cfg.enabled:
        return _skipped(result, f"{rep.name} disabled by config (representations.{rep.name}.enabled=false)")
    reason = rep.prepare(config, date, lake, progress)
    if reason:
        return _skipped(result, reason)
    run_dir = lake.run_dir(date, step)
    reuse = reusable_model(lake, date, step, cfg.retrain_every_days)
    metrics: dict = {}
    if reuse:
        origin, model_dir = reuse
        progress(f"  reusing the {rep.name} model trained for {origin} (retrain every {cfg.retrain_every_days} days)")
        result.notes.append(f"model reused from the run of {origin} (cadence {cfg.retrain_every_days} days); "
                            "vectors inferred for the current catalog")
        result.inputs.append(model_dir)
    else:
        origin, model_dir = date, fs.join(run_dir, MODEL_DIR)
        with atomic_dir(model_dir, success=False) as tmp:
            metrics["training"] = rep.train(tmp, progress)
        result.notes.append(f"model trained for {date}")
    vectors = rep.infer(model_dir, progress)
    out = fs.join(run_dir, "vectors.parquet")
    write_vectors(out, vectors)
    result.outputs["vectors"] = out
    result.outputs["model"] = model_dir
    result.row_counts["vectors"] = len(vectors)
    labels = quality_labels(config, date, lake)
    report = quality.evaluate(vectors, labels, _label_columns(rep, labels), config.representations.quality,
                              config.seed) if labels is not None else {"error": "no listing labels to check against"}
    metrics.update({"model_origin": origin.isoformat(), "retrained": not reuse, "dim": vectors.dim,
                    "quality": report, **rep.describe()})
    result.metrics = metrics
    problems = quality.failures(report, [c for c in rep.gap_columns if c in report],
                                [c for c in rep.purity_columns if c in report], config.representations.quality)
    if problems:
        raise StepError(f"{rep.name} vectors are no better than random, so the step fails rather than publish them:\n  "
                        + "\n  ".join(problems) + f"\n(vectors kept for inspection at {out})")
    return result


def _skipped(result: StepResult, reason: str) -> StepResult:
    result.notes.append(f"skipped: {reason}")
    result.metrics["skipped"] = reason
    return result


def _label_columns(rep: Representation, labels: pa.Table) -> list[str]:
    wanted = dict.fromkeys(rep.gap_columns + rep.purity_columns)
    return [c for c in wanted if c in labels.column_names]


def quality_labels(config, date: dt.date, lake: Lake) -> pa.Table | None:
    """Listing labels for the checks: the catalog of ``date``, else taxonomies seen in the last corpus day's events."""
    table = catalog(lake, date)
    if table is not None:
        return table.select(["listing_id", "taxonomy_id", "top_taxonomy", "primary_color"])
    files = validated_files(lake, "events", config.window.corpus_dates(date)[-1])
    if not files:
        return None
    events = pa.concat_tables([parquet.read_file(f, columns=["listing_id", "taxonomy_id"]) for f in files])
    events = events.filter(pc.is_valid(events.column("listing_id")))
    ids, first = np.unique(np.array(events.column("listing_id").to_pylist(), dtype=object), return_index=True)
    return pa.table({"listing_id": pa.array(ids.tolist(), pa.string()),
                     "taxonomy_id": events.column("taxonomy_id").take(pa.array(first))})
